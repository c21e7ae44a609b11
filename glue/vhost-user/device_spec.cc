#include "device_spec.h"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <set>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "device_adapter.h"
#include "interrupt.h"
#include "virtio/backends/console_backends.h"
#include "virtio/backends/generator_net.h"
#include "virtio/backends/loopback_net.h"
#include "virtio/backends/null_disk.h"
#include "virtio/backends/null_net.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/backends/tap_net.h"
#include "virtio/backends/uring_disk.h"
#include "virtio/blk_device.h"
#include "virtio/console_device.h"
#include "virtio/net_device.h"
#include "virtio/rng_device.h"

namespace vhost_user {
namespace {

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

// queue-size= is a limit, not a size: vhost-user front-ends pick their own
// ring sizes (QEMU's microvm and DPDK 1024, UML 256, QEMU PCI 128) and have
// no way to ask for ours. By default every size the specification allows.
constexpr uint64_t kAnyQueueSize = virtio::spec::kMaxQueueSize;

class Props {
 public:
  explicit Props(const DeviceSpec& s) : s_(s) {}

  absl::StatusOr<std::string> Str(const std::string& key,
                                  const std::string& def) {
    used_.insert(key);
    auto it = s_.props.find(key);
    return it == s_.props.end() ? def : it->second;
  }
  absl::StatusOr<bool> Bool(const std::string& key, bool def) {
    used_.insert(key);
    auto it = s_.props.find(key);
    if (it == s_.props.end()) return def;
    const std::string& v = it->second;
    if (v == "on" || v == "true" || v == "yes" || v == "1") return true;
    if (v == "off" || v == "false" || v == "no" || v == "0") return false;
    return Bad(absl::StrFormat("%s: '%s=%s' is not on/off", s_.type, key, v));
  }
  // A size with an optional K/M/G/T suffix (powers of 1024).
  absl::StatusOr<uint64_t> Size(const std::string& key, uint64_t def,
                                uint64_t max) {
    used_.insert(key);
    auto it = s_.props.find(key);
    if (it == s_.props.end()) return def;
    std::string v = it->second;
    uint64_t mult = 1;
    if (!v.empty()) {
      switch (v.back()) {
        case 'k':
        case 'K':
          mult = 1ull << 10;
          break;
        case 'm':
        case 'M':
          mult = 1ull << 20;
          break;
        case 'g':
        case 'G':
          mult = 1ull << 30;
          break;
        case 't':
        case 'T':
          mult = 1ull << 40;
          break;
        default:
          break;
      }
      if (mult != 1) v.pop_back();
    }
    uint64_t n;
    if (!absl::SimpleAtoi(v, &n) || n > max / mult) {
      return Bad(absl::StrFormat("%s: '%s=%s' is not a number in 0..%u",
                                 s_.type, key, it->second, max));
    }
    return n * mult;
  }
  absl::Status CheckAllUsed() const {
    for (const auto& [k, v] : s_.props) {
      if (!used_.count(k)) {
        return Bad(absl::StrFormat("%s: unknown property '%s'", s_.type, k));
      }
    }
    return absl::OkStatus();
  }

 private:
  const DeviceSpec& s_;
  std::set<std::string> used_;
};

#define ASSIGN_OR_RETURN_IMPL(var, expr, tmp) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  var = *std::move(tmp)
#define VU_CAT2(a, b) a##b
#define VU_CAT(a, b) VU_CAT2(a, b)
#define ASSIGN_OR_RETURN(var, expr) \
  ASSIGN_OR_RETURN_IMPL(var, expr, VU_CAT(_status_or_, __LINE__))

template <typename Disk>
absl::StatusOr<std::unique_ptr<VhostDevice>> MakeBlk(
    std::shared_ptr<Disk> disk, const virtio::BlkDeviceOptions& opts) {
  using Dev = virtio::BlkDevice<VhostTraits, Disk>;
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        return Dev::Create(m, i, *disk, opts);
      });
  if (!a.ok()) return a.status();
  (*a)->KeepAlive(disk);
  return std::unique_ptr<VhostDevice>(*std::move(a));
}

absl::StatusOr<std::unique_ptr<VhostDevice>> Blk(const DeviceSpec& s) {
  Props p(s);
  ASSIGN_OR_RETURN(std::string backend, p.Str("backend", ""));
  ASSIGN_OR_RETURN(std::string path, p.Str("path", ""));
  ASSIGN_OR_RETURN(bool ro, p.Bool("readonly", false));
  ASSIGN_OR_RETURN(bool direct, p.Bool("direct", false));
  ASSIGN_OR_RETURN(bool packed, p.Bool("packed", true));
  ASSIGN_OR_RETURN(uint64_t queues, p.Size("num-queues", 1, 64));
  ASSIGN_OR_RETURN(uint64_t qsize,
                   p.Size("queue-size", kAnyQueueSize, kAnyQueueSize));
  ASSIGN_OR_RETURN(uint64_t size, p.Size("size", 0, uint64_t{1} << 62));
  ASSIGN_OR_RETURN(std::string serial, p.Str("serial", ""));
  ASSIGN_OR_RETURN(std::string name, p.Str("id", "blk"));
  if (absl::Status st = p.CheckAllUsed(); !st.ok()) return st;
  if (backend.empty()) backend = path.empty() ? "" : "file";
  if (queues == 0) return Bad("blk: num-queues must be at least 1");
  // seg_max (the guest's largest request) as for a 256-entry ring unless
  // the limit is lower: the per-request iovec arrays stay as they were
  // before the limit became 32768.
  virtio::BlkDeviceOptions opts{
      .name = name,
      .num_queues = static_cast<uint16_t>(queues),
      .queue_size = static_cast<uint32_t>(qsize),
      .seg_max = static_cast<uint32_t>(std::clamp<uint64_t>(qsize, 3, 256) - 2),
      .serial = serial};
  opts.ring.packed = packed;
  const auto nq = static_cast<uint16_t>(queues);
  if (backend == "file") {
    if (path.empty()) return Bad("blk: backend=file needs path=");
    if (size != 0) return Bad("blk: size= is for backend=ram or null");
    auto d = virtio::UringDisk::Open(
        {.path = path, .read_only = ro, .direct = direct, .num_queues = nq});
    if (!d.ok()) return d.status();
    return MakeBlk(std::shared_ptr<virtio::UringDisk>(*std::move(d)), opts);
  }
  if (!path.empty()) return Bad("blk: path= is for backend=file");
  if (backend == "ram") {
    if (size == 0) return Bad("blk: backend=ram needs size=");
    auto d = virtio::RamDisk::Create(
        {.capacity = size, .read_only = ro, .num_queues = nq});
    if (!d.ok()) return d.status();
    return MakeBlk(std::shared_ptr<virtio::RamDisk>(*std::move(d)), opts);
  }
  if (backend == "null") {
    if (size == 0) return Bad("blk: backend=null needs size=");
    auto d = virtio::NullDisk::Create(
        {.capacity = size, .read_only = ro, .num_queues = nq});
    if (!d.ok()) return d.status();
    return MakeBlk(std::shared_ptr<virtio::NullDisk>(*std::move(d)), opts);
  }
  return Bad(backend.empty()
                 ? "blk: needs path=FILE or backend=ram|null,size=BYTES"
                 : absl::StrFormat(
                       "blk: unknown backend '%s' (file, ram, null)", backend));
}

absl::StatusOr<std::unique_ptr<VhostDevice>> Rng(const DeviceSpec& s) {
  Props p(s);
  ASSIGN_OR_RETURN(uint64_t rate, p.Size("rate", 0, uint64_t{1} << 40));
  ASSIGN_OR_RETURN(uint64_t qsize,
                   p.Size("queue-size", kAnyQueueSize, kAnyQueueSize));
  ASSIGN_OR_RETURN(bool packed, p.Bool("packed", true));
  ASSIGN_OR_RETURN(std::string name, p.Str("id", "rng"));
  if (absl::Status st = p.CheckAllUsed(); !st.ok()) return st;
  if (qsize == 0) return Bad("rng: queue-size must be at least 1");
  virtio::RngOptions opts;
  opts.max_bytes_per_period = rate;
  opts.queue_size = static_cast<uint32_t>(qsize);
  opts.ring.packed = packed;
  opts.name = name;
  using Dev = virtio::RngDevice<VhostTraits>;
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        return std::make_unique<Dev>(m, i, opts);
      });
  if (!a.ok()) return a.status();
  return std::unique_ptr<VhostDevice>(*std::move(a));
}

// --- net -------------------------------------------------------------------

bool ParseMac(const std::string& text, std::array<uint8_t, 6>& mac) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() != 6) return false;
  for (size_t i = 0; i < 6; ++i) {
    if (parts[i].size() != 2) return false;
    int v;
    if (!absl::SimpleHexAtoi(parts[i], &v)) return false;
    mac[i] = static_cast<uint8_t>(v);
  }
  return true;
}

void DrainEventFd(int fd) {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
}

// TAP fds carry packets: watched edge-triggered (a stalled receive waits
// for the guest's rx kick, not for the fd), plus EPOLLOUT while transmit
// waits for room. The loopback fd is an eventfd bumped by Flush(): level,
// drained before servicing; a transmit held because the loopback ring was
// full is retried every millisecond (receive makes room without an event).
// The generator's fd is an eventfd that stays readable (level, never
// drained): its pair is serviced on every round of the worker. The null
// backend has no fd (transmit never blocks, nothing to receive).
template <typename Backend>
absl::StatusOr<std::unique_ptr<VhostDevice>> MakeNet(
    std::shared_ptr<Backend> backend, const virtio::NetDeviceOptions& opts) {
  using Dev = virtio::NetDevice<VhostTraits, Backend>;
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        return Dev::Create(m, i, *backend, opts);
      });
  if (!a.ok()) return a.status();
  constexpr bool kTap = std::is_same_v<Backend, virtio::TapNet>;
  constexpr bool kGenerator = std::is_same_v<Backend, virtio::GeneratorNet>;
  Backend* b = backend.get();
  // One group per queue pair (its rx, tx and backend fd); the control
  // queue goes with pair 0.
  const uint16_t pairs = opts.max_pairs;
  std::vector<uint16_t> group_of((*a)->num_queues());
  for (uint16_t q = 0; q < group_of.size(); ++q) {
    group_of[q] = q / 2 < pairs ? static_cast<uint16_t>(q / 2) : 0;
  }
  (*a)->SetGroups(pairs, std::move(group_of));
  (*a)->SetBackendHooks(
      [b](Dev& d, uint16_t p, std::vector<BackendWatch>& out) {
        if (p >= d.max_pairs()) return -1;
        const int fd = b->pair(p).fd();
        if (fd < 0) return -1;
        int timeout = -1;
        uint32_t ev = EPOLLIN;
        if constexpr (kTap) {
          ev |= EPOLLET | (d.tx_blocked(p) ? EPOLLOUT : 0u);
        } else {
          if (d.tx_blocked(p)) timeout = 1;
        }
        out.push_back({.fd = fd, .events = ev, .token = p, .stable = true});
        return timeout;
      },
      [b](Dev& d, uint16_t p, uint32_t) {
        if (p >= d.max_pairs()) return;
        if constexpr (!kTap && !kGenerator) {
          DrainEventFd(b->pair(p).fd());
        } else {
          (void)b;
        }
        d.ServiceBackend(p);
      });
  (*a)->KeepAlive(backend);
  return std::unique_ptr<VhostDevice>(*std::move(a));
}

absl::StatusOr<std::unique_ptr<VhostDevice>> Net(const DeviceSpec& s) {
  Props p(s);
  ASSIGN_OR_RETURN(std::string backend, p.Str("backend", ""));
  ASSIGN_OR_RETURN(std::string ifname, p.Str("ifname", ""));
  ASSIGN_OR_RETURN(std::string mac_text, p.Str("mac", ""));
  ASSIGN_OR_RETURN(uint64_t pairs, p.Size("queue-pairs", 1, 256));
  ASSIGN_OR_RETURN(uint64_t qsize,
                   p.Size("queue-size", kAnyQueueSize, kAnyQueueSize));
  ASSIGN_OR_RETURN(uint64_t mtu, p.Size("mtu", 0, 65535));
  ASSIGN_OR_RETURN(bool ctrl, p.Bool("ctrl-vq", true));
  ASSIGN_OR_RETURN(bool packed, p.Bool("packed", true));
  ASSIGN_OR_RETURN(std::string name, p.Str("id", "net"));
  ASSIGN_OR_RETURN(uint64_t frame_len,
                   p.Size("frame-len", 0, virtio::net::kMaxFrameSize));
  if (absl::Status st = p.CheckAllUsed(); !st.ok()) return st;
  if (pairs == 0) return Bad("net: queue-pairs must be at least 1");
  if (pairs > 1 && !ctrl) return Bad("net: queue-pairs > 1 needs ctrl-vq=on");
  virtio::NetDeviceOptions opts;
  opts.name = name;
  opts.max_pairs = static_cast<uint16_t>(pairs);
  opts.queue_size = static_cast<uint32_t>(qsize);
  // vhost-user has no way to tell a front-end the largest ring it may use:
  // each picks its own control queue size (QEMU 64, UML 256 as for every
  // ring). The limit only bounds what a hostile front-end can ask for.
  opts.ctrl_queue_size = std::max<uint32_t>(opts.queue_size, 1024);
  opts.mtu = static_cast<uint16_t>(mtu);
  opts.ctrl_vq = ctrl;
  opts.ring.packed = packed;
  // QEMU keeps the control queue and passes on GUEST_ANNOUNCE / MQ without
  // CTRL_VQ; UML and DPDK hand the control queue over.
  opts.relaxed_ctrl_dependencies = true;
  if (!mac_text.empty() && !ParseMac(mac_text, opts.mac)) {
    return Bad(
        absl::StrFormat("net: mac=%s is not xx:xx:xx:xx:xx:xx", mac_text));
  }
  const auto np = static_cast<uint16_t>(pairs);
  if (backend == "tap") {
    auto t = virtio::TapNet::Open({.name = ifname, .num_pairs = np});
    if (!t.ok()) return t.status();
    virtio::Logf(virtio::LogLevel::kInfo, "%s: TAP interface %s", name,
                 (*t)->name());
    return MakeNet(std::shared_ptr<virtio::TapNet>(*std::move(t)), opts);
  }
  if (!ifname.empty()) return Bad("net: ifname= is for backend=tap");
  if (backend == "generator" || backend == "gen") {
    const uint32_t len = frame_len == 0 ? 64 : static_cast<uint32_t>(frame_len);
    auto g = virtio::GeneratorNet::Create({.num_pairs = np, .frame_len = len});
    if (!g.ok()) return g.status();
    virtio::Logf(virtio::LogLevel::kInfo,
                 "%s: generator backend, %u-byte frames", name, len);
    return MakeNet(std::shared_ptr<virtio::GeneratorNet>(*std::move(g)), opts);
  }
  if (frame_len != 0) return Bad("net: frame-len= is for backend=generator");
  if (backend == "null") {
    auto n = virtio::NullNet::Create({.num_pairs = np});
    if (!n.ok()) return n.status();
    return MakeNet(std::shared_ptr<virtio::NullNet>(*std::move(n)), opts);
  }
  if (backend == "loopback") {
    auto l = virtio::LoopbackNet::Create({.num_pairs = np});
    if (!l.ok()) return l.status();
    return MakeNet(std::shared_ptr<virtio::LoopbackNet>(*std::move(l)), opts);
  }
  return Bad(backend.empty()
                 ? "net: needs backend=tap[,ifname=NAME], backend=loopback, "
                   "backend=null or backend=generator[,frame-len=N]"
                 : absl::StrFormat("net: unknown backend '%s' (tap, loopback, "
                                   "null, generator)",
                                   backend));
}

// --- console ---------------------------------------------------------------

constexpr uint32_t kConsoleWakeToken = 0xffffffff;

template <typename Backend>
absl::StatusOr<std::unique_ptr<VhostDevice>> MakeConsole(
    absl::StatusOr<std::unique_ptr<Backend>> made,
    const virtio::ConsoleOptions& opts) {
  if (!made.ok()) return made.status();
  std::shared_ptr<Backend> backend(*std::move(made));
  using Dev = virtio::ConsoleDevice<VhostTraits, Backend>;
  Backend* b = backend.get();
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        Backend* const ports[] = {b};
        return Dev::Create(m, i, ports, opts);
      });
  if (!a.ok()) return a.status();
  // The console serialises on one mutex anyway: one group.
  (*a)->SetGroups(1, std::vector<uint16_t>((*a)->num_queues(), 0));
  (*a)->SetBackendHooks(
      [](Dev& d, uint16_t, std::vector<BackendWatch>& out) {
        out.push_back({.fd = d.wakeup_fd(),
                       .events = EPOLLIN,
                       .token = kConsoleWakeToken,
                       .stable = true});
        int timeout = -1;
        for (uint32_t port = 0; port < d.num_ports(); ++port) {
          const virtio::ConsolePollSet set = d.BackendPoll(port);
          for (const virtio::ConsolePoll& cp : set.fds) {
            if (cp.fd < 0 || cp.events == 0) continue;
            uint32_t ev = 0;
            if (cp.events & POLLIN) ev |= EPOLLIN;
            if (cp.events & POLLOUT) ev |= EPOLLOUT;
            auto same = std::find_if(
                out.begin(), out.end(),
                [&](const BackendWatch& w) { return w.fd == cp.fd; });
            if (same != out.end()) {
              same->events |= ev;
            } else {
              out.push_back({.fd = cp.fd, .events = ev, .token = port});
            }
          }
          if (set.timeout_ms >= 0) {
            timeout = timeout < 0 ? set.timeout_ms
                                  : std::min(timeout, set.timeout_ms);
          }
        }
        return timeout;
      },
      [](Dev& d, uint16_t, uint32_t token) {
        if (token == kConsoleWakeToken) {
          DrainEventFd(d.wakeup_fd());
          // A port waiting on its timeout alone (a pty whose terminal was
          // closed, a socket peer gone with input unread) has no watch, so
          // the loop's timeout, which services every watch, reaches it only
          // through this one. Without this a closed pty stayed closed for
          // good: reopening the terminal was never noticed.
          for (uint32_t port = 0; port < d.num_ports(); ++port) {
            if (d.BackendPoll(port).timeout_ms >= 0) d.ServiceBackend(port);
          }
          return;  // the loop asks BackendPoll() again
        }
        d.ServiceBackend(token);
      });
  (*a)->KeepAlive(backend);
  return std::unique_ptr<VhostDevice>(*std::move(a));
}

absl::StatusOr<std::unique_ptr<VhostDevice>> Console(const DeviceSpec& s) {
  Props p(s);
  ASSIGN_OR_RETURN(std::string backend, p.Str("backend", ""));
  ASSIGN_OR_RETURN(std::string path, p.Str("path", ""));
  ASSIGN_OR_RETURN(uint64_t qsize,
                   p.Size("queue-size", kAnyQueueSize, kAnyQueueSize));
  ASSIGN_OR_RETURN(bool packed, p.Bool("packed", true));
  ASSIGN_OR_RETURN(std::string name, p.Str("id", "console"));
  if (absl::Status st = p.CheckAllUsed(); !st.ok()) return st;
  // backend=socket=PATH and backend=file=PATH carry the path inline.
  if (const size_t eq = backend.find('='); eq != std::string::npos) {
    if (!path.empty()) {
      return Bad("console: give the path once (backend=TYPE=PATH or path=)");
    }
    path = backend.substr(eq + 1);
    backend = backend.substr(0, eq);
  }
  virtio::ConsoleOptions opts;
  opts.queue_size = static_cast<uint32_t>(qsize);
  opts.ring.packed = packed;
  opts.name = name;
  const bool needs_path = backend == "socket" || backend == "file";
  if (needs_path && path.empty()) {
    return Bad(
        absl::StrFormat("console: backend=%s needs a path "
                        "(backend=%s=PATH)",
                        backend, backend));
  }
  if (!needs_path && !path.empty()) {
    return Bad("console: a path is for backend=socket or backend=file");
  }
  if (backend == "stdio") {
    return MakeConsole(virtio::StdioConsoleBackend::Create({}), opts);
  }
  if (backend == "pty") {
    return MakeConsole(virtio::PtyConsoleBackend::Create({}), opts);
  }
  if (backend == "socket") {
    return MakeConsole(virtio::SocketConsoleBackend::Create({.path = path}),
                       opts);
  }
  if (backend == "file") {
    return MakeConsole(virtio::FileConsoleBackend::Create({.path = path}),
                       opts);
  }
  return Bad(backend.empty()
                 ? "console: needs backend=stdio|pty|socket=PATH|file=PATH"
                 : absl::StrFormat("console: unknown backend '%s' "
                                   "(stdio, pty, socket, file)",
                                   backend));
}

}  // namespace

absl::StatusOr<DeviceSpec> ParseDeviceSpec(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  DeviceSpec s;
  s.type = parts.empty() ? "" : parts[0];
  if (s.type.empty()) return Bad("--device: empty device type");
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    if (eq == std::string::npos || eq == 0) {
      return Bad(absl::StrFormat("--device %s: '%s' is not key=value", s.type,
                                 parts[i]));
    }
    std::string key = parts[i].substr(0, eq);
    if (!s.props.emplace(key, parts[i].substr(eq + 1)).second) {
      return Bad(absl::StrFormat("--device %s: '%s' given twice", s.type, key));
    }
  }
  return s;
}

absl::StatusOr<std::unique_ptr<VhostDevice>> MakeDevice(const DeviceSpec& s) {
  if (s.type == "blk") return Blk(s);
  if (s.type == "rng") return Rng(s);
  if (s.type == "net") return Net(s);
  if (s.type == "console") return Console(s);
  return Bad(absl::StrFormat(
      "--device: unknown type '%s' (blk, net, console, rng)", s.type));
}

const char* DeviceSpecHelp() {
  return "  blk,path=FILE[,readonly=on][,direct=on][,num-queues=N]"
         "[,queue-size=N][,serial=S][,packed=off][,id=NAME]\n"
         "  blk,backend=ram|null,size=BYTES[K|M|G|T][,...as above]\n"
         "  net,backend=tap[,ifname=NAME]|backend=loopback|backend=null"
         "|backend=generator[,frame-len=N]\n"
         "      [,mac=XX:XX:XX:XX:XX:XX][,queue-pairs=N][,queue-size=N][,mtu=N]"
         "[,ctrl-vq=off][,packed=off][,id=NAME]\n"
         "      (null drops what the guest sends and receives nothing; "
         "generator"
         " fills every rx\n"
         "      buffer with a fixed frame, 64 bytes by default: for "
         "benchmarks)\n"
         "  console,backend=stdio|pty|socket=PATH|file=PATH[,queue-size=N]"
         "[,packed=off][,id=NAME]\n"
         "  rng[,rate=BYTES_PER_SECOND][,queue-size=N][,packed=off][,id=NAME]";
}

}  // namespace vhost_user
