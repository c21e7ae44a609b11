#include "vhost_user/server.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "vhost_user/connection.h"
#include "vhost_user/interrupt.h"
#include "virtio/log.h"

namespace vhost_user {
namespace {

// The connection this thread serves (RunDaemon's thread and the workers it
// starts): one daemon may run several RunDaemon()s, one per device.
thread_local int t_current_connection = 0;

constexpr uint64_t kTagCtl = uint64_t{1} << 32;
constexpr uint64_t kTagKick = uint64_t{3} << 32;
constexpr uint64_t kTagDone = uint64_t{4} << 32;
constexpr uint64_t kTagBackend = uint64_t{5} << 32;
constexpr uint64_t kTagMask = ~uint64_t{0xffffffff};

bool Watch(int ep, int fd, uint64_t tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag;
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void Drain(int fd) {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
}

// The backend fds of one queue group (BackendWatches), registered with the
// group worker's epoll as kTagBackend | index. Re-registered when the set
// changes, and after servicing an fd that may have been closed and
// reopened meanwhile (BackendWatch::stable false).
class BackendFds {
 public:
  BackendFds(VhostDevice& dev, uint16_t group, int ep)
      : dev_(dev), group_(group), ep_(ep) {}
  ~BackendFds() { Unregister(); }

  // Asks the device again; returns its timeout.
  int Refresh() {
    next_.clear();
    const int timeout = dev_.BackendWatches(group_, next_);
    if (dirty_ || next_ != now_) {
      Unregister();
      now_.swap(next_);
      for (size_t i = 0; i < now_.size(); ++i) {
        epoll_event ev{};
        ev.events = now_[i].events;
        ev.data.u64 = kTagBackend | i;
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, now_[i].fd, &ev) != 0 &&
            errno == EEXIST) {
          epoll_ctl(ep_, EPOLL_CTL_MOD, now_[i].fd, &ev);
        }
      }
      dirty_ = false;
    }
    return timeout;
  }
  void Service(uint32_t index) {
    if (index >= now_.size()) return;
    dev_.ServiceBackend(group_, now_[index].token);
    dirty_ |= !now_[index].stable;
  }
  // Every token once (a timeout passed).
  void ServiceAll() {
    std::vector<uint32_t> tokens;
    for (const BackendWatch& w : now_) {
      if (std::find(tokens.begin(), tokens.end(), w.token) == tokens.end()) {
        tokens.push_back(w.token);
      }
      dirty_ |= !w.stable;
    }
    for (uint32_t t : tokens) dev_.ServiceBackend(group_, t);
  }

 private:
  void Unregister() {
    for (const BackendWatch& w : now_) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, w.fd, nullptr);
    }
    now_.clear();
  }

  VhostDevice& dev_;
  uint16_t group_;
  int ep_;
  std::vector<BackendWatch> now_, next_;
  bool dirty_ = false;
};

// How long a worker keeps polling after work, adapted to what spinning
// costs the others. Spinning only pays when the worker has a core to
// itself: on shared cores it delays the very front-end thread it waits for
// (measured at qd 1 on a 2-core machine busy with other work: a fixed 50 us
// window halved IOPS, --busy-poll likewise, while with idle cores
// busy-polling tripled them). So while spinning the worker compares the CPU
// time it got with the wall-clock time that passed, every kCheck and when a
// window closes: below kFairSharePercent someone else wanted this CPU; the
// window halves, down to nothing (then it is probed again after kReprobe);
// otherwise it grows back to the maximum. One clock_gettime(thread CPU
// time) per check, none per spin.
class PollWindow {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kMin = std::chrono::microseconds(2);
  static constexpr auto kReprobe = std::chrono::milliseconds(100);
  static constexpr auto kCheck = std::chrono::milliseconds(1);
  static constexpr int kFairSharePercent = 80;

  explicit PollWindow(std::chrono::nanoseconds max) : max_(max), cur_(max) {}
  bool enabled() const { return max_.count() > 0; }

  // Called after each epoll round in which there was work or that ran
  // while polling; returns whether to poll (spin) on.
  bool Update(bool work, Clock::time_point now) {
    if (open_ && (now >= until_ || now >= check_at_)) {
      const int64_t cpu = ThreadCpuNs();
      const int64_t wall = (now - wall_mark_).count();
      const bool starved =
          wall > 0 && (cpu - cpu_mark_) * 100 < wall * kFairSharePercent;
      cpu_mark_ = cpu;
      wall_mark_ = now;
      check_at_ = now + kCheck;
      if (starved) {
        cur_ /= 2;
        if (cur_ < kMin) {
          cur_ = std::chrono::nanoseconds(0);
          reprobe_at_ = now + kReprobe;
          open_ = false;
          return false;
        }
      } else {
        cur_ = std::min(cur_ * 2, max_);
      }
    }
    if (work) {
      if (cur_.count() == 0) {
        if (now < reprobe_at_) return false;
        cur_ = std::max<std::chrono::nanoseconds>(max_ / 8, kMin);
      }
      if (!open_) {
        open_ = true;
        cpu_mark_ = ThreadCpuNs();
        wall_mark_ = now;
        check_at_ = now + kCheck;
      }
      until_ = now + cur_;
      return true;
    }
    if (!open_ || now < until_) return open_;
    open_ = false;
    return false;
  }

 private:
  static int64_t ThreadCpuNs() {
    timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
  }

  const std::chrono::nanoseconds max_;
  std::chrono::nanoseconds cur_;
  bool open_ = false;
  int64_t cpu_mark_ = 0;  // thread CPU time at the last check
  Clock::time_point wall_mark_{};
  Clock::time_point until_{};
  Clock::time_point check_at_{};
  Clock::time_point reprobe_at_{};
};

// One queue group's data path thread.
class Worker {
 public:
  struct QueueFds {
    uint16_t q;
    int kick;     // -1: none
    int done;     // completion fd, -1: none
    bool polled;  // running without a kick fd
    QueueActivity* activity;
    QueueCounters* counters;  // the device's statistics, null if none
  };

  Worker(VhostDevice& dev, uint16_t group, bool busy_poll, uint32_t poll_us,
         std::string name)
      : dev_(dev),
        group_(group),
        busy_(busy_poll),
        poll_window_(std::chrono::microseconds(busy_poll ? 0 : poll_us)),
        name_(std::move(name)) {}
  ~Worker() {
    if (thread_.joinable()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        quit_ = true;
        pause_flag_.store(true, std::memory_order_release);
      }
      SignalFd(ctl_.get());
      cv_.notify_all();
      thread_.join();
    }
    Unregister();
  }

  absl::Status Start() {
    ep_.reset(epoll_create1(EPOLL_CLOEXEC));
    ctl_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ep_ || !ctl_ || !Watch(ep_.get(), ctl_.get(), kTagCtl)) {
      return absl::InternalError("worker: epoll / eventfd setup failed");
    }
    // Log lines from the worker carry its connection's number too.
    thread_ = std::thread([this, connection = CurrentConnection()] {
      t_current_connection = connection;
      Run();
    });
    return absl::OkStatus();
  }

  // Control thread: parks the worker between two events and waits for it.
  void Pause() {
    std::unique_lock<std::mutex> l(mu_);
    pause_ = true;
    pause_flag_.store(true, std::memory_order_release);
    SignalFd(ctl_.get());
    cv_.wait(l, [&] { return parked_; });
  }
  void Resume() {
    {
      std::lock_guard<std::mutex> l(mu_);
      pause_ = false;
      pause_flag_.store(false, std::memory_order_release);
    }
    cv_.notify_all();
  }

  // Control thread, worker parked: drops the queue fds (while they are
  // still open: epoll keys registrations by open file) ...
  void Unregister() {
    for (const QueueFds& f : queues_) {
      if (f.kick >= 0) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, f.kick, nullptr);
      if (f.done >= 0) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, f.done, nullptr);
    }
    queues_.clear();
  }
  // ... and installs the new set.
  absl::Status SetQueues(std::vector<QueueFds> queues) {
    Unregister();
    queues_ = std::move(queues);
    for (QueueFds& f : queues_) {
      if (f.kick >= 0 && !Watch(ep_.get(), f.kick, kTagKick | f.q)) {
        const int e = errno;
        f.kick = -1;
        return absl::InvalidArgumentError(
            absl::StrFormat("the kick fd of queue %u cannot be polled: %s", f.q,
                            std::strerror(e)));
      }
      if (f.done >= 0 && !Watch(ep_.get(), f.done, kTagDone | f.q)) {
        f.done = -1;
      }
    }
    return absl::OkStatus();
  }

 private:
  void Park() {
    std::unique_lock<std::mutex> l(mu_);
    parked_ = true;
    cv_.notify_all();
    cv_.wait(l, [&] { return !pause_ || quit_; });
    parked_ = false;
  }

  void Run() {
    BackendFds backend(dev_, group_, ep_.get());
    auto last_service = std::chrono::steady_clock::now();
    uint32_t busy_round = 0;
    // Poll window: spinning (as with busy_) while window.Update() says so;
    // each event that meant work (a kick, a backend completion, a backend
    // fd) extends. Then back to sleeping in epoll_wait. No wake-up can be
    // lost on the way: the devices leave notifications enabled after every
    // pass over a ring (re-checking it after enabling), so a request that
    // arrives once the spinning stopped comes with a kick, and every fd
    // stays level-triggered readable until drained.
    PollWindow window(poll_window_);
    bool polling = busy_;
    for (;;) {
      if (pause_flag_.load(std::memory_order_acquire)) {
        {
          std::lock_guard<std::mutex> l(mu_);
          if (quit_) return;
        }
        Park();
        polling = busy_;  // the queues may have changed meanwhile
        continue;
      }
      // Polling: every round polls the rings, the fds (control, kicks,
      // backend) and the poll window's clock only every 64th: an
      // epoll_wait per round cost more than the rings themselves (half the
      // worker's time at 64-byte packets).
      if (polling && (++busy_round & 63) != 0) {
        for (const QueueFds& f : queues_) Kick(f.q);
        continue;
      }
      const int backend_timeout = backend.Refresh();
      int timeout = backend_timeout;
      bool any_polled = false;
      for (const QueueFds& f : queues_) any_polled |= f.polled;
      if (any_polled) timeout = timeout < 0 ? 1 : std::min(timeout, 1);
      const auto retry = dev_.RetryAfter();
      if (retry) {
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*retry);
        const int t =
            static_cast<int>(std::clamp<int64_t>(ms.count(), 0, 1000));
        timeout = timeout < 0 ? t : std::min(timeout, t);
      }
      if (polling) timeout = 0;
      epoll_event events[64];
      const int n = epoll_wait(ep_.get(), events, 64, timeout);
      if (n < 0) {
        if (errno == EINTR) continue;
        virtio::Logf(virtio::LogLevel::kError, "%s: worker %u: epoll_wait: %s",
                     name_, group_, std::strerror(errno));
        Park();  // until the connection ends
        continue;
      }
      bool work = false;
      for (int i = 0; i < n; ++i) {
        const uint64_t tag = events[i].data.u64 & kTagMask;
        const auto q = static_cast<uint16_t>(events[i].data.u64);
        work |= tag != kTagCtl;
        if (tag == kTagKick) {
          for (const QueueFds& f : queues_) {
            if (f.q == q && f.kick >= 0) {
              Drain(f.kick);
              QueueActivity::Bump(f.activity->kicks);
              if (f.counters != nullptr) QueueCounters::Bump(f.counters->kicks);
            }
          }
          Kick(q);
        } else if (tag == kTagDone) {
          dev_.Complete(q);
        } else if (tag == kTagBackend) {
          backend.Service(static_cast<uint32_t>(events[i].data.u64));
        } else if (tag == kTagCtl) {
          Drain(ctl_.get());
        }
      }
      if (n == 0 || polling) {
        // Rings without a kick fd, rate-limited devices and (polling)
        // every running ring are processed on their own.
        for (const QueueFds& f : queues_) {
          if (polling || f.polled || (retry && dev_.queue_running(f.q))) {
            Kick(f.q);
          }
        }
      }
      if (!busy_ && window.enabled() && (work || polling)) {
        polling = window.Update(work, std::chrono::steady_clock::now());
      }
      if (backend_timeout >= 0) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_service >= std::chrono::milliseconds(backend_timeout)) {
          backend.ServiceAll();
          last_service = now;
        }
      }
    }
  }

  // Inflight tracking, where enabled, happens inside the device's ring
  // calls (the queue's observer, backend.h): nothing to do around them.
  void Kick(uint16_t q) { dev_.Kick(q); }

  VhostDevice& dev_;
  const uint16_t group_;
  const bool busy_;
  const std::chrono::nanoseconds poll_window_;
  const std::string name_;
  UniqueFd ep_, ctl_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pause_ = false, parked_ = false, quit_ = false;
  std::atomic<bool> pause_flag_{false};
  // Written by the control thread only while the worker is parked.
  std::vector<QueueFds> queues_;
};

}  // namespace

int CurrentConnection() { return t_current_connection; }

ConnectionStatus ConnectionState::Read() const {
  ConnectionStatus s;
  s.connected = connected_.load(std::memory_order_relaxed);
  s.number = number_.load(std::memory_order_relaxed);
  s.accepted = accepted_.load(std::memory_order_relaxed);
  if (s.connected) {
    s.features = features_.load(std::memory_order_relaxed);
    s.protocol_features = protocol_features_.load(std::memory_order_relaxed);
    s.backend_channel = backend_channel_.load(std::memory_order_relaxed);
  }
  return s;
}

void ConnectionState::Publish(const Backend& backend) {
  features_.store(backend.acked_features(), std::memory_order_relaxed);
  protocol_features_.store(backend.protocol_features(),
                           std::memory_order_relaxed);
  backend_channel_.store(backend.has_backend_channel(),
                         std::memory_order_relaxed);
}

absl::Status ServeConnection(VhostDevice& dev, UniqueFd connection,
                             const ServeOptions& o) {
  Connection conn(std::move(connection), o.message_timeout_ms);
  dev.NewConnection();
  Backend backend(dev, o.backend);
  ConnectionState* const state = o.state;
  if (state != nullptr) {
    state->Publish(backend);
    state->connected_.store(true, std::memory_order_relaxed);
  }
  const uint16_t nq = dev.num_queues();
  const uint16_t ngroups = std::max<uint16_t>(dev.num_groups(), 1);
  absl::Status result;
  std::vector<std::unique_ptr<Worker>> workers;
  // Busy-polled queues need no kicks: keep the front-end from sending them.
  if (o.busy_poll) {
    for (uint16_t q = 0; q < nq; ++q) dev.SetQueuePolled(q, true);
  }
  for (uint16_t g = 0; g < ngroups && result.ok(); ++g) {
    workers.push_back(
        std::make_unique<Worker>(dev, g, o.busy_poll, o.poll_us, o.name));
    result = workers.back()->Start();
  }
  auto pause_all = [&] {
    for (auto& w : workers) w->Pause();
    for (auto& w : workers) w->Unregister();
  };
  auto resume_all = [&]() -> absl::Status {
    std::vector<std::vector<Worker::QueueFds>> sets(workers.size());
    for (uint16_t q = 0; q < nq; ++q) {
      if (!dev.queue_running(q)) continue;
      const uint16_t g = dev.queue_group(q);
      sets[g < sets.size() ? g : 0].push_back(
          {q, backend.kick_fd(q), dev.completion_fd(q), backend.polled(q),
           backend.activity(q), dev.queue_counters(q)});
    }
    absl::Status s;
    for (size_t g = 0; g < workers.size(); ++g) {
      absl::Status r = workers[g]->SetQueues(std::move(sets[g]));
      if (s.ok()) s = r;
    }
    for (auto& w : workers) w->Resume();
    return s;
  };
  auto next_watch = std::chrono::steady_clock::now();
  while (result.ok()) {
    // A stalled queue is found by looking, once a second (atomics only; the
    // workers are parked only to log one).
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_watch) {
      next_watch = now + std::chrono::seconds(1);
      if (backend.WatchStalls(now)) {
        pause_all();
        backend.LogQueues(
            "a queue has requests in flight and no completion for 5 s", now);
        result = resume_all();
        if (!result.ok()) break;
      }
    }
    pollfd p[4] = {{conn.fd(), POLLIN, 0},
                   {backend.fault_fd(), POLLIN, 0},
                   {o.dump_fd, POLLIN, 0},
                   {o.stop_fd, POLLIN, 0}};
    const int rc = poll(p, o.stop_fd >= 0 ? 4 : 3, 1000);
    if (rc < 0) {
      if (errno == EINTR) continue;
      result = absl::InternalError(
          absl::StrFormat("poll: %s", std::strerror(errno)));
      break;
    }
    if (p[2].revents & POLLIN) {
      Drain(o.dump_fd);
      pause_all();
      backend.LogQueues("queue state dump requested",
                        std::chrono::steady_clock::now());
      result = resume_all();
      if (!result.ok()) break;
      continue;
    }
    if (o.stop_fd >= 0 && (p[3].revents & POLLIN)) {
      result = absl::CancelledError("stopped");
      break;
    }
    if (p[1].revents & POLLIN) {
      // The front-end shrank memory it shared with us: the mapping is
      // zeroes now (sigbus_guard.h), and nothing it says can be trusted.
      const std::string what = backend.TakeFault();
      if (!what.empty()) {
        result = absl::DataLossError(absl::StrFormat(
            "the front-end shrank shared memory under the back-end (SIGBUS "
            "in %s)",
            what));
        virtio::Logf(virtio::LogLevel::kError, "%s: %s; closing the connection",
                     o.name, result.message());
        break;
      }
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    absl::StatusOr<Message> m = conn.Receive();
    if (!m.ok()) {
      if (IsPeerClosed(m.status())) {
        virtio::Logf(virtio::LogLevel::kInfo, "%s: front-end disconnected",
                     o.name);
      } else {
        result = m.status();
        virtio::Logf(virtio::LogLevel::kError,
                     "%s: protocol error, closing the connection: %s", o.name,
                     result.message());
      }
      break;
    }
    pause_all();
    std::optional<Message> reply;
    const uint32_t request = m->request();
    absl::Status s = backend.Handle(*std::move(m), &reply);
    if (state != nullptr) state->Publish(backend);
    if (reply) {
      std::vector<int> fds;
      for (const UniqueFd& fd : reply->fds) fds.push_back(fd.get());
      absl::Status sent = conn.Send(*reply, fds);
      if (!sent.ok() && s.ok()) {
        s = absl::UnavailableError(
            absl::StrFormat("sending the reply to %s: %s", RequestName(request),
                            sent.message()));
      }
    }
    absl::Status r = resume_all();
    if (s.ok()) s = r;
    if (!s.ok()) {
      result = s;
      virtio::Logf(virtio::LogLevel::kError,
                   "%s: protocol error, closing the connection: %s", o.name,
                   s.message());
      break;
    }
  }
  workers.clear();  // joined; their fds unregistered
  if (state != nullptr) {
    state->connected_.store(false, std::memory_order_relaxed);
  }
  backend.Disconnect();
  if (state != nullptr) state->Publish(backend);
  return result;
}

absl::Status RunDaemon(VhostDevice& device, const DaemonOptions& o) {
  UniqueFd listener;
  const bool owns_socket = !o.client && o.listen_fd < 0;
  if (owns_socket) {
    auto l = Listen(o.socket_path);
    if (!l.ok()) return l.status();
    listener = *std::move(l);
    virtio::Logf(virtio::LogLevel::kInfo, "%s: listening on %s", o.serve.name,
                 o.socket_path);
  }
  absl::Status result;
  int connections = 0;
  bool warned = false;
  for (;;) {
    if (o.max_connections > 0 && connections >= o.max_connections) break;
    // Wait for a connection (server) or retry (client), watching stop_fd.
    const int listen_fd = o.listen_fd >= 0 ? o.listen_fd : listener.get();
    pollfd p[3] = {{o.client ? -1 : listen_fd, POLLIN, 0},
                   {o.serve.stop_fd, POLLIN, 0},
                   {o.serve.dump_fd, POLLIN, 0}};
    const int rc = poll(p, 3, o.client ? (warned ? 1000 : 0) : -1);
    if (rc < 0 && errno != EINTR) {
      result = absl::InternalError(
          absl::StrFormat("poll: %s", std::strerror(errno)));
      break;
    }
    if (p[1].revents & POLLIN) break;
    if (p[2].revents & POLLIN) {
      Drain(o.serve.dump_fd);
      virtio::Logf(virtio::LogLevel::kWarning,
                   "%s: queue state dump requested: no front-end connected",
                   o.serve.name);
      continue;
    }
    UniqueFd fd;
    if (o.client) {
      auto c = Connect(o.socket_path);
      if (!c.ok()) {
        if (!warned) {
          virtio::Logf(virtio::LogLevel::kInfo, "%s: %s; retrying every second",
                       o.serve.name, c.status().message());
          warned = true;
        }
        continue;
      }
      warned = false;
      fd = *std::move(c);
    } else {
      if (!(p[0].revents & POLLIN)) continue;
      auto a = Accept(listen_fd);
      if (!a.ok()) {
        virtio::Logf(virtio::LogLevel::kError, "%s: %s", o.serve.name,
                     a.status().message());
        continue;
      }
      fd = *std::move(a);
    }
    ++connections;
    t_current_connection = connections;
    if (o.serve.state != nullptr) {
      o.serve.state->number_.store(connections, std::memory_order_relaxed);
      o.serve.state->accepted_.store(connections, std::memory_order_relaxed);
    }
    virtio::Logf(virtio::LogLevel::kInfo, "%s: front-end connected (#%d)",
                 o.serve.name, connections);
    absl::Status s = ServeConnection(device, std::move(fd), o.serve);
    t_current_connection = 0;
    if (o.serve.state != nullptr) {
      o.serve.state->number_.store(0, std::memory_order_relaxed);
    }
    if (absl::IsCancelled(s)) break;
    virtio::Logf(virtio::LogLevel::kInfo,
                 "%s: connection #%d closed%s; waiting for the next one",
                 o.serve.name, connections, s.ok() ? "" : " after an error");
  }
  if (owns_socket) unlink(o.socket_path.c_str());
  return result;
}

}  // namespace vhost_user
