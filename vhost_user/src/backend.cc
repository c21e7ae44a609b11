#include "vhost_user/backend.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "sigbus_guard.h"
#include "vhost_user/connection.h"
#include "vhost_user/interrupt.h"
#include "virtio/log.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

namespace spec = virtio::spec;

absl::Status Protocol(const Message& m, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: %s", RequestName(m.request()), what));
}

void SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK))
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

constexpr uint64_t kDescSize = 16;

// `features` for a log line: "0x...: VERSION_1 RING_PACKED ..." naming the
// device-independent virtio bits and vhost's own; the device type's bits
// are left in the number.
std::string DescribeFeatures(uint64_t features) {
  static constexpr struct {
    unsigned bit;
    const char* name;
  } kNames[] = {
      {kFeatureLogAll, "LOG_ALL"},
      {virtio::spec::kFeatureIndirectDesc, "INDIRECT_DESC"},
      {virtio::spec::kFeatureEventIdx, "EVENT_IDX"},
      {kFeatureProtocolFeatures, "PROTOCOL_FEATURES"},
      {virtio::spec::kFeatureVersion1, "VERSION_1"},
      {virtio::spec::kFeatureAccessPlatform, "ACCESS_PLATFORM"},
      {virtio::spec::kFeatureRingPacked, "RING_PACKED"},
      {virtio::spec::kFeatureInOrder, "IN_ORDER"},
      {virtio::spec::kFeatureNotificationData, "NOTIFICATION_DATA"},
      {virtio::spec::kFeatureRingReset, "RING_RESET"},
  };
  std::string out = absl::StrFormat("0x%x", features);
  const char* separator = " (";
  for (const auto& n : kNames) {
    if (features & (uint64_t{1} << n.bit)) {
      absl::StrAppend(&out, separator, n.name);
      separator = " ";
    }
  }
  if (separator[0] == ' ' && separator[1] == '\0') out += ")";
  return out;
}

}  // namespace

Backend::Backend(VhostDevice& device, BackendOptions options)
    : dev_(device),
      options_(std::move(options)),
      vrings_(device.num_queues()),
      observers_(device.num_queues()),
      inflight_warned_(device.num_queues()),
      watch_(device.num_queues()) {
  options_.protocol_features &= kImplementedProtocolFeatures;
  fault_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  dev_.memory().SetFaultFd(fault_fd_.get());
  for (uint16_t q = 0; q < device.num_queues(); ++q) {
    observers_[q].counters = dev_.queue_counters(q);
  }
}

Backend::~Backend() {
  Disconnect();
  dev_.memory().SetFaultFd(-1);
}

std::string Backend::TakeFault() {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fault_fd_.get(), &v, sizeof v);
  std::string out;
  for (const SharedMemoryFault& f : SigbusGuard::TakeFaults(fault_fd_.get())) {
    absl::StrAppendFormat(&out, "%s%s (%u bytes mapped at 0x%x) at +0x%x",
                          out.empty() ? "" : "; ", f.what, f.length, f.base,
                          f.address - f.base);
  }
  return out;
}

int Backend::kick_fd(uint16_t q) const {
  if (q >= vrings_.size() || !dev_.queue_running(q)) return -1;
  return vrings_[q].kick.get();
}

bool Backend::polled(uint16_t q) const {
  return q < vrings_.size() && dev_.queue_running(q) && !vrings_[q].kick;
}

bool Backend::packed() const {
  return (acked_features_ & spec::Bit(spec::kFeatureRingPacked)) != 0;
}

bool Backend::ShouldRun(const Vring& v) const {
  const bool enabled =
      (acked_features_ & Bit(kFeatureProtocolFeatures)) ? v.enabled : true;
  return v.started && enabled;
}

absl::Status Backend::NeedProtocol(unsigned bit, const Message& m) const {
  if (protocol_features_ & Bit(bit)) return absl::OkStatus();
  return Protocol(m,
                  absl::StrFormat("protocol feature %u not negotiated", bit));
}

absl::StatusOr<uint16_t> Backend::QueueIndex(uint64_t index,
                                             const Message& m) const {
  if (index >= vrings_.size()) {
    return Protocol(m, absl::StrFormat("queue %u does not exist (%u queues)",
                                       index, vrings_.size()));
  }
  return static_cast<uint16_t>(index);
}

uint32_t Backend::EncodeBase(const virtio::QueueState& s) const {
  if (!packed()) return s.next_avail;
  return uint32_t{s.next_avail} | (uint32_t{s.avail_wrap} << 15) |
         (uint32_t{s.next_used} << 16) | (uint32_t{s.used_wrap} << 31);
}

void Backend::Stop(uint16_t q) {
  if (!dev_.queue_running(q)) return;
  std::optional<virtio::QueueState> s = dev_.StopQueue(q);
  if (s) vrings_[q].base = EncodeBase(*s);
  // A migration takes its final copy after the rings stop: whatever the
  // device wrote to them last (notification fields included) is marked.
  if (observers_[q].dirty_log != nullptr) {
    observers_[q].dirty_log->MarkRing();
    observers_[q].dirty_log = nullptr;
  }
  // The requests StopQueue finished were published through the observer,
  // so the region is up to date; detach it.
  observers_[q].inflight = nullptr;
  ++generation_;
}

void Backend::UnmapInflight() {
  if (inflight_map_ != nullptr) {
    SigbusGuard::Unregister(inflight_map_);
    munmap(inflight_map_, inflight_len_);
  }
  inflight_map_ = nullptr;
  inflight_len_ = 0;
  inflight_queues_ = 0;
  inflight_stride_ = 0;
}

absl::Status Backend::GetInflightFd(const Message& m,
                                    std::optional<Message>* reply) {
  const auto info = m.As<InflightInfo>();
  if (info.num_queues == 0 || info.num_queues > vrings_.size() ||
      info.queue_size == 0 || info.queue_size > spec::kMaxQueueSize) {
    return Protocol(m, absl::StrFormat("%u queues of size %u (%u queues, "
                                       "sizes 1..%u)",
                                       info.num_queues, info.queue_size,
                                       vrings_.size(), spec::kMaxQueueSize));
  }
  // The front-end sizes the region for the rings it was configured with,
  // but the guest may set larger ones (QEMU's vhost-user-blk asks for its
  // queue-size=128 while microvm's virtio-mmio lets the guest use 1024):
  // room for the largest ring accepted, so that every ring is tracked.
  // Pages never touched cost nothing (memfd).
  uint32_t entries = info.queue_size;
  for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
    entries = std::max(entries, dev_.queue_max_size(q));
  }
  entries = std::min(entries, spec::kMaxQueueSize);
  const uint64_t size = uint64_t{info.num_queues} *
                        InflightQueueRegionSize(static_cast<uint16_t>(entries));
  UniqueFd fd(memfd_create("vhost-user-inflight", MFD_CLOEXEC));
  if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return absl::InternalError(
        absl::StrFormat("GET_INFLIGHT_FD: memfd: %s", std::strerror(errno)));
  }
  InflightInfo out = info;
  out.mmap_size = size;
  out.mmap_offset = 0;
  Message r = MakeReply(m.request(), out);
  r.fds.push_back(std::move(fd));
  *reply = std::move(r);
  return absl::OkStatus();
}

absl::Status Backend::SetInflightFd(Message& m) {
  const auto info = m.As<InflightInfo>();
  UniqueFd fd = std::move(m.fds[0]);
  m.fds.clear();
  if (info.num_queues == 0 || info.queue_size == 0 ||
      info.queue_size > spec::kMaxQueueSize) {
    return Protocol(m, absl::StrFormat("%u queues of size %u", info.num_queues,
                                       info.queue_size));
  }
  const uint64_t need =
      uint64_t{info.num_queues} * InflightQueueRegionSize(info.queue_size);
  struct stat st;
  if (info.mmap_size < need || info.mmap_size > (uint64_t{1} << 32) ||
      info.mmap_offset % 4096 != 0 || fstat(fd.get(), &st) != 0 ||
      info.mmap_offset > static_cast<uint64_t>(st.st_size) ||
      info.mmap_size > static_cast<uint64_t>(st.st_size) - info.mmap_offset) {
    return Protocol(
        m, absl::StrFormat("region of %u bytes at offset %u (%u needed) does "
                           "not fit the fd",
                           info.mmap_size, info.mmap_offset, need));
  }
  void* p = mmap(nullptr, info.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd.get(), static_cast<off_t>(info.mmap_offset));
  if (p == MAP_FAILED) {
    return Protocol(m, absl::StrFormat("mmap: %s", std::strerror(errno)));
  }
  // Rings track into the region from their next start.
  StopAll();
  UnmapInflight();
  SigbusGuard::Register(p, info.mmap_size, fault_fd_.get(), "inflight region");
  inflight_map_ = static_cast<uint8_t*>(p);
  inflight_len_ = info.mmap_size;
  inflight_queues_ = info.num_queues;
  // Each queue's part is an equal share of the region, not the size
  // queue_size implies: the front-end sends back its own queue_size, while
  // GET_INFLIGHT_FD made the parts larger (above). The same region thus
  // splits the same way for every back-end instance it is handed to.
  inflight_stride_ = (info.mmap_size / info.num_queues) & ~uint64_t{63};
  return SyncAll();
}

absl::Status Backend::StartInflight(
    uint16_t q, const virtio::QueueConfig& cfg, virtio::QueueState& state,
    std::vector<virtio::ResubmitChain>& resubmit) {
  Vring& v = vrings_[q];
  observers_[q].inflight = nullptr;
  if (inflight_map_ == nullptr ||
      !(protocol_features_ & Bit(kProtocolInflightShmfd))) {
    return absl::OkStatus();
  }
  if (q >= inflight_queues_ || InflightQueueRegionSize(static_cast<uint16_t>(
                                   v.num)) > inflight_stride_) {
    // Refusing the queue would leave the guest without its disk: serve it,
    // untracked. What that costs is said once per connection and queue.
    if (!inflight_warned_[q]) {
      inflight_warned_[q] = true;
      virtio::Logf(
          virtio::LogLevel::kWarning,
          "%s: queue %u (size %u) does not fit the inflight region (%u "
          "queues of %u bytes, %u needed): served without inflight tracking; "
          "requests in flight if this back-end dies are not resubmitted on "
          "reconnect",
          options_.name, q, v.num, inflight_queues_, inflight_stride_,
          InflightQueueRegionSize(static_cast<uint16_t>(v.num)));
    }
    return absl::OkStatus();
  }
  const uint32_t n = v.num;
  InflightRing ring{
      .packed = packed(),
      .size = static_cast<uint16_t>(n),
      .in_order = (acked_features_ & spec::Bit(spec::kFeatureInOrder)) != 0};
  // Split: recovery reads the used ring. Packed: pops save descriptors
  // from the descriptor ring.
  ring.ring =
      packed() ? dev_.memory().TranslateContiguous(cfg.desc_addr, kDescSize * n)
               : dev_.memory().TranslateContiguous(cfg.device_addr,
                                                   spec::SplitUsedRingSize(n));
  if (ring.ring == nullptr || reinterpret_cast<uintptr_t>(ring.ring) % 4 != 0) {
    return absl::InvalidArgumentError("inflight: rings not mapped");
  }
  const uint64_t per_queue = inflight_stride_;
  InflightRecovery r;
  absl::Status s = v.inflight.Start(inflight_map_ + uint64_t{q} * per_queue,
                                    per_queue, ring, state, &r);
  if (!s.ok()) return s;
  if (!r.fresh) {
    virtio::Logf(virtio::LogLevel::kInfo,
                 "%s: queue %u resumes from the inflight region at avail %u "
                 "used %u, resubmitting %u requests",
                 options_.name, q, r.state.next_avail, r.state.next_used,
                 r.resubmit.size());
  }
  state = r.state;
  resubmit = std::move(r.resubmit);
  observers_[q].inflight = &v.inflight;
  return absl::OkStatus();
}

void Backend::StopAll() {
  for (uint16_t q = 0; q < dev_.num_queues(); ++q) Stop(q);
}

absl::Status Backend::Sync(uint16_t q) {
  Vring& v = vrings_[q];
  const bool want = ShouldRun(v);
  if (want == dev_.queue_running(q)) return absl::OkStatus();
  if (!want) {
    Stop(q);
    return absl::OkStatus();
  }
  auto fail = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue %u cannot start: %s", q, what));
  };
  if (!features_set_) return fail("SET_FEATURES was not sent");
  if (v.num == 0) return fail("SET_VRING_NUM was not sent");
  if (!v.addr) return fail("SET_VRING_ADDR was not sent");
  if (!dev_.Negotiate()) {
    return fail(
        absl::StrFormat("the device refused features 0x%x", acked_features_));
  }
  const uint64_t n = v.num;
  uint64_t desc_len, avail_len, used_len;
  if (packed()) {
    desc_len = kDescSize * n;
    avail_len = used_len = sizeof(spec::PackedEventSuppress);
  } else {
    desc_len = spec::SplitDescTableSize(static_cast<uint32_t>(n));
    avail_len = spec::SplitAvailRingSize(static_cast<uint32_t>(n));
    used_len = spec::SplitUsedRingSize(static_cast<uint32_t>(n));
  }
  const MemoryTable& mem = dev_.memory();
  auto desc = mem.UserToGuest(v.addr->desc_user_addr, desc_len);
  auto avail = mem.UserToGuest(v.addr->avail_user_addr, avail_len);
  auto used = mem.UserToGuest(v.addr->used_user_addr, used_len);
  if (!desc || !avail || !used) {
    return fail(absl::StrFormat(
        "ring addresses desc 0x%x avail 0x%x used 0x%x (front-end virtual) "
        "are not inside the memory table",
        v.addr->desc_user_addr, v.addr->avail_user_addr,
        v.addr->used_user_addr));
  }
  virtio::QueueConfig cfg{.size = v.num,
                          .desc_addr = *desc,
                          .driver_addr = *avail,
                          .device_addr = *used};
  virtio::QueueState state;
  if (packed()) {
    state.next_avail = static_cast<uint16_t>(v.base & 0x7fff);
    state.avail_wrap = (v.base >> 15) & 1;
    state.next_used = static_cast<uint16_t>((v.base >> 16) & 0x7fff);
    state.used_wrap = (v.base >> 31) & 1;
    if ((v.base >> 16) == 0) {
      // Front-ends following the older spec (DPDK 22.11 virtio-user) send
      // only the avail half: nothing in flight, used == avail.
      state.next_used = state.next_avail;
      state.used_wrap = state.avail_wrap;
    }
  } else {
    state.next_avail = static_cast<uint16_t>(v.base);
    // The used index lives in the ring; resume from it.
    const uint8_t* p = mem.TranslateContiguous(*used + 2, 2);
    if (p == nullptr || reinterpret_cast<uintptr_t>(p) % 2 != 0) {
      return fail("used ring not mapped or misaligned");
    }
    state.next_used = virtio::LoadAcquire(reinterpret_cast<const uint16_t*>(p));
  }
  if (absl::Status st = StartDirtyLog(q, cfg); !st.ok()) {
    return fail(st.message());
  }
  std::vector<virtio::ResubmitChain> resubmit;
  if (absl::Status st = StartInflight(q, cfg, state, resubmit); !st.ok()) {
    observers_[q].dirty_log = nullptr;
    return fail(st.message());
  }
  if (!packed() && observers_[q].inflight == nullptr) {
    const uint16_t lost =
        static_cast<uint16_t>(state.next_avail - state.next_used);
    if (lost != 0 && lost <= n) {
      virtio::Logf(
          virtio::LogLevel::kWarning,
          "%s: queue %u resumes with %u requests the previous back-end "
          "took but never completed",
          options_.name, q, lost);
    }
  }
  // In flight = popped - pushed since this start (workers are parked).
  observers_[q].activity.pops.store(0, std::memory_order_relaxed);
  observers_[q].activity.pushes.store(0, std::memory_order_relaxed);
  if (observers_[q].counters != nullptr) {
    observers_[q].counters->in_flight.store(0, std::memory_order_relaxed);
  }
  watch_[q].pushes = 0;
  absl::Status s = dev_.StartQueue(q, cfg, state, &observers_[q], resubmit);
  if (!s.ok()) {
    observers_[q].inflight = nullptr;
    observers_[q].dirty_log = nullptr;
    return fail(s.message());
  }
  ++generation_;
  return absl::OkStatus();
}

absl::Status Backend::SyncAll() {
  for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
    absl::Status s = Sync(q);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

// A 16-bit field of the ring the driver shares, read as it is now (-1: not
// mapped).
int ReadU16(const MemoryTable& mem, uint64_t gpa) {
  const uint8_t* p = mem.TranslateContiguous(gpa, 2);
  if (p == nullptr || reinterpret_cast<uintptr_t>(p) % 2 != 0) return -1;
  return virtio::LoadAcquire(reinterpret_cast<const uint16_t*>(p));
}

std::string Ago(std::chrono::steady_clock::time_point t,
                std::chrono::steady_clock::time_point now) {
  if (t == std::chrono::steady_clock::time_point{}) return "never";
  return absl::StrFormat("%.1fs ago",
                         std::chrono::duration<double>(now - t).count());
}

}  // namespace

bool Backend::WatchStalls(std::chrono::steady_clock::time_point now) {
  bool report = false;
  for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
    Watch& w = watch_[q];
    const QueueActivity& a = observers_[q].activity;
    const uint64_t kicks = a.kicks.load(std::memory_order_relaxed);
    const uint64_t pops = a.pops.load(std::memory_order_relaxed);
    const uint64_t pushes = a.pushes.load(std::memory_order_relaxed);
    const uint64_t irqs = dev_.queue_interrupts(q);
    if (kicks != w.kicks) w.kick_at = now;
    if (irqs != w.interrupts) w.interrupt_at = now;
    if (pushes != w.pushes || pops == pushes) w.progress_at = now;
    w.kicks = kicks;
    w.interrupts = irqs;
    w.pushes = pushes;
    const bool stalled = dev_.queue_running(q) && dev_.WatchForStalls(q) &&
                         pops > pushes && now - w.progress_at >= kStallAfter;
    if (stalled && (!w.stalled || now - w.reported_at >= kStallRepeat)) {
      w.reported_at = now;
      report = true;
    }
    if (!stalled && w.stalled) {
      virtio::Logf(virtio::LogLevel::kInfo, "%s: queue %u makes progress again",
                   options_.name, q);
    }
    w.stalled = stalled;
  }
  return report;
}

std::string Backend::DescribeQueue(uint16_t q,
                                   std::chrono::steady_clock::time_point now) {
  const Vring& v = vrings_[q];
  const QueueDebugInfo d = dev_.QueueDebug(q);
  const QueueActivity& a = observers_[q].activity;
  const Watch& w = watch_[q];
  std::string out = absl::StrFormat("queue %u: %s, size %u, %s", q,
                                    d.running ? "running" : "stopped", v.num,
                                    packed() ? "packed" : "split");
  if (!d.running) return out;
  absl::StrAppendFormat(&out, "; device next_avail %u next_used %u",
                        d.position.next_avail, d.position.next_used);
  if (packed()) {
    absl::StrAppendFormat(&out, " (wraps %d/%d)", d.position.avail_wrap,
                          d.position.used_wrap);
  }
  const MemoryTable& mem = dev_.memory();
  const bool event_idx =
      (acked_features_ & spec::Bit(spec::kFeatureEventIdx)) != 0;
  if (v.addr) {
    const auto avail = mem.UserToGuest(v.addr->avail_user_addr, 4);
    const auto used = mem.UserToGuest(v.addr->used_user_addr, 4);
    if (avail && used && !packed()) {
      absl::StrAppendFormat(
          &out,
          "; driver avail.idx %d avail.flags 0x%x used.idx %d "
          "used.flags 0x%x",
          ReadU16(mem, *avail + 2), ReadU16(mem, *avail),
          ReadU16(mem, *used + 2), ReadU16(mem, *used));
      if (event_idx) {
        absl::StrAppendFormat(&out, " used_event %d avail_event %d",
                              ReadU16(mem, *avail + 4 + 2ull * v.num),
                              ReadU16(mem, *used + 4 + 8ull * v.num));
      }
    } else if (avail && used) {
      // Packed: driver and device event suppression areas.
      absl::StrAppendFormat(
          &out,
          "; driver event off_wrap 0x%x flags 0x%x, device event "
          "off_wrap 0x%x flags 0x%x",
          ReadU16(mem, *avail), ReadU16(mem, *avail + 2), ReadU16(mem, *used),
          ReadU16(mem, *used + 2));
    }
  }
  absl::StrAppendFormat(
      &out,
      "; in flight: %u chains popped and not used (%u popped, %u used "
      "since start)",
      d.ring_in_flight, a.pops.load(std::memory_order_relaxed),
      a.pushes.load(std::memory_order_relaxed));
  if (d.backend_in_flight >= 0) {
    absl::StrAppendFormat(&out, ", %d in the backend", d.backend_in_flight);
  }
  absl::StrAppendFormat(
      &out,
      "; kicks %u (last %s%s), interrupts %u (last %s)%s, last "
      "completion %s",
      a.kicks.load(std::memory_order_relaxed), Ago(w.kick_at, now),
      vrings_[q].kick ? "" : ", no kick fd: polled", d.interrupts,
      Ago(w.interrupt_at, now),
      d.interrupts_lost != 0
          ? absl::StrFormat(", %u LOST (no call fd)", d.interrupts_lost)
          : std::string(),
      Ago(w.progress_at, now));
  return out;
}

void Backend::LogQueues(const char* why,
                        std::chrono::steady_clock::time_point now) {
  virtio::Logf(virtio::LogLevel::kWarning,
               "%s: %s: device status 0x%x, features 0x%x", options_.name, why,
               dev_.status(), acked_features_);
  for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
    if (vrings_[q].num == 0 && !dev_.queue_running(q)) continue;
    virtio::Logf(virtio::LogLevel::kWarning, "%s:   %s", options_.name,
                 DescribeQueue(q, now));
  }
}

bool Backend::logging() const {
  return log_.mapped() && (acked_features_ & Bit(kFeatureLogAll)) != 0;
}

absl::Status Backend::SetLogBase(Message& m, std::optional<Message>* reply) {
  if (auto s = NeedProtocol(kProtocolLogShmfd, m); !s.ok()) return s;
  if (m.fds.empty()) return Protocol(m, "no fd (LOG_SHMFD needs one)");
  const auto d = m.As<LogDescription>();
  UniqueFd fd = std::move(m.fds[0]);
  m.fds.clear();
  absl::StatusOr<DirtyLog> log =
      DirtyLog::Map(fd.get(), d.mmap_size, d.mmap_offset, fault_fd_.get());
  if (!log.ok()) return Protocol(m, log.status().message());
  // Every write to guest memory must have its bit (spec: the log covers
  // address 0 to the end of the highest region).
  const uint64_t end = dev_.memory().guest_end();
  if (!log->Covers(0, end)) {
    return Protocol(
        m, absl::StrFormat("a log of %u bytes covers guest-physical memory "
                           "below 0x%x, the memory table reaches 0x%x",
                           log->size(), log->covered_end(), end));
  }
  // Rings log into the old mapping until they stop; the front-end frees
  // it once we answer.
  StopAll();
  log_ = *std::move(log);
  virtio::Logf(virtio::LogLevel::kInfo,
               "%s: dirty log of %u bytes (guest-physical below 0x%x)",
               options_.name, log_.size(), log_.covered_end());
  absl::Status s = SyncAll();
  if (!s.ok()) return s;
  // Answered whether or not REPLY_ACK is on: QEMU waits for it.
  *reply = MakeReply(m.request(), uint64_t{0});
  return absl::OkStatus();
}

absl::Status Backend::StartDirtyLog(uint16_t q,
                                    const virtio::QueueConfig& cfg) {
  Vring& v = vrings_[q];
  observers_[q].dirty_log = nullptr;
  if (!logging()) return absl::OkStatus();
  DirtyLogRing ring{.packed = packed(),
                    .size = v.num,
                    .desc_gpa = cfg.desc_addr,
                    .log_used = (v.addr->flags & kVringFlagLog) != 0,
                    .used_log_gpa = v.addr->log_guest_addr};
  if (ring.log_used) {
    const uint64_t len = packed() ? sizeof(spec::PackedEventSuppress)
                                  : spec::SplitUsedRingSize(v.num);
    if (!log_.Covers(ring.used_log_gpa, len)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "log_guest_addr 0x%x (+%u) lies beyond the dirty log (0x%x)",
          ring.used_log_gpa, len, log_.covered_end()));
    }
  }
  v.dirty_log.Start(log_, dev_.memory(), ring, log_call_.get());
  observers_[q].dirty_log = &v.dirty_log;
  return absl::OkStatus();
}

absl::Status Backend::SendBackendRequest(const Message& m,
                                         absl::Span<const int> fds) {
  if (!backend_req_) {
    return absl::FailedPreconditionError(
        "no back-end request channel (SET_BACKEND_REQ_FD)");
  }
  if (!fds.empty() && !(protocol_features_ & Bit(kProtocolBackendSendFd))) {
    return absl::FailedPreconditionError(
        "sending fds needs BACKEND_SEND_FD, not negotiated");
  }
  if (fds.size() > kMaxFds) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%u fds, at most %u per message", fds.size(), kMaxFds));
  }
  return SendMessage(backend_req_.get(), m, fds);
}

void Backend::ResetRings() {
  for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
    dev_.SetCallFd(q, -1);
    dev_.SetErrFd(q, -1);
    vrings_[q] = Vring{};
  }
  ++generation_;
}

void Backend::Disconnect() {
  StopAll();
  dev_.Reset();
  ResetRings();
  dev_.SetConfigChannel(-1);
  backend_req_.reset();
  dev_.memory().Clear();
  UnmapInflight();
  inflight_warned_.assign(inflight_warned_.size(), false);
  log_ = DirtyLog();
  log_call_.reset();
  owner_ = false;
  features_set_ = false;
  acked_features_ = 0;
  protocol_features_ = 0;
  frontend_status_ = 0;
}

absl::Status Backend::ChangeMemory(Message& m) {
  // Rings point into the old mappings: stop them, swap, restart where they
  // were.
  StopAll();
  absl::Status s;
  if (m.request() == kSetMemTable) {
    const uint32_t n = m.As<uint32_t>();
    std::vector<MemoryRegion> regions(n);
    if (n > 0) {
      std::memcpy(regions.data(), m.payload.data() + kMemTableHeaderSize,
                  n * sizeof(MemoryRegion));
    }
    s = dev_.memory().Replace(regions, std::move(m.fds));
  } else {
    const auto r = m.As<SingleMemoryRegion>();
    if (m.request() == kAddMemReg) {
      s = dev_.memory().Add(r.region, std::move(m.fds[0]));
    } else {
      s = dev_.memory().Remove(r.region);
    }
  }
  m.fds.clear();
  if (!s.ok()) return Protocol(m, s.message());
  return SyncAll();
}

absl::Status Backend::Handle(Message m, std::optional<Message>* reply) {
  reply->reset();
  const uint32_t request = m.request();
  const bool ack =
      m.need_reply() && (protocol_features_ & Bit(kProtocolReplyAck));
  uint64_t ack_value = 0;
  absl::Status s;
  std::string bad = ValidateShape(m);
  if (!bad.empty()) {
    s = absl::InvalidArgumentError(bad);
  } else {
    s = Dispatch(m, reply);
    if (absl::IsFailedPrecondition(s)) {
      // Refused but harmless: answer failure and keep the connection.
      virtio::Logf(virtio::LogLevel::kWarning, "%s: %s: %s", options_.name,
                   RequestName(request), s.message());
      ack_value = 1;
      s = absl::OkStatus();
    }
  }
  if (!s.ok()) {
    if (ack) *reply = MakeReply(request, uint64_t{1});
    return s;
  }
  // SET_PROTOCOL_FEATURES that enables REPLY_ACK is acknowledged already
  // (User-mode Linux sets NEED_REPLY on it and waits).
  const bool ack_now =
      ack || (request == kSetProtocolFeatures && m.need_reply() &&
              (protocol_features_ & Bit(kProtocolReplyAck)));
  if (ack_now && !reply->has_value()) *reply = MakeReply(request, ack_value);
  return absl::OkStatus();
}

absl::Status Backend::Dispatch(Message& m, std::optional<Message>* reply) {
  const uint64_t offered_features =
      dev_.features() |
      (options_.protocol_features ? Bit(kFeatureProtocolFeatures) : 0) |
      // Without a shared-memory log QEMU refuses to migrate anyway.
      ((options_.protocol_features & Bit(kProtocolLogShmfd))
           ? Bit(kFeatureLogAll)
           : 0);
  switch (m.request()) {
    case kGetFeatures:
      *reply = MakeReply(m.request(), offered_features);
      return absl::OkStatus();
    case kSetFeatures: {
      const uint64_t f = m.As<uint64_t>();
      if (f & ~offered_features) {
        return Protocol(m, absl::StrFormat("features 0x%x were not offered",
                                           f & ~offered_features));
      }
      // LOG_ALL is vhost's, not the device's; it may flip while rings
      // run (migration start and end).
      const uint64_t vhost_bits =
          Bit(kFeatureProtocolFeatures) | Bit(kFeatureLogAll);
      const uint64_t virtio_bits = f & ~vhost_bits;
      bool running = false;
      for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
        running |= dev_.queue_running(q);
      }
      const uint64_t old_bits = acked_features_ & ~vhost_bits;
      if (running && features_set_ && virtio_bits != old_bits) {
        return Protocol(m, "features changed while rings are running");
      }
      if (!running && dev_.status() != 0 &&
          (!features_set_ || virtio_bits != old_bits)) {
        dev_.Reset();  // renegotiation
      }
      const bool log_flip = ((acked_features_ ^ f) & Bit(kFeatureLogAll)) != 0;
      // Chains in flight when logging starts were popped unobserved: the
      // rings restart around the change, finishing them first.
      if (log_flip) {
        StopAll();
        virtio::Logf(virtio::LogLevel::kInfo, "%s: dirty logging %s",
                     options_.name, (f & Bit(kFeatureLogAll)) ? "on" : "off");
      }
      // Once per negotiation (QEMU repeats SET_FEATURES, e.g. around
      // LOG_ALL): what the operator needs to know what the guest uses.
      if (!features_set_ || virtio_bits != old_bits) {
        virtio::Logf(virtio::LogLevel::kInfo,
                     "%s: features negotiated: %s; protocol features 0x%x",
                     options_.name, DescribeFeatures(f), protocol_features_);
      }
      acked_features_ = f;
      features_set_ = true;
      dev_.SetDriverFeatures(virtio_bits);
      return log_flip ? SyncAll() : absl::OkStatus();
    }
    case kSetOwner:
      owner_ = true;
      return absl::OkStatus();
    case kResetOwner:
      StopAll();
      dev_.Reset();
      ResetRings();
      features_set_ = false;
      acked_features_ = 0;
      owner_ = false;
      return absl::OkStatus();
    case kSetMemTable:
      return ChangeMemory(m);
    case kGetMaxMemSlots:
      if (auto s = NeedProtocol(kProtocolConfigureMemSlots, m); !s.ok())
        return s;
      *reply = MakeReply(m.request(), uint64_t{MemoryTable::kMaxRegions});
      return absl::OkStatus();
    case kAddMemReg:
    case kRemMemReg:
      if (auto s = NeedProtocol(kProtocolConfigureMemSlots, m); !s.ok())
        return s;
      return ChangeMemory(m);
    case kGetProtocolFeatures:
      *reply = MakeReply(m.request(), options_.protocol_features);
      return absl::OkStatus();
    case kSetProtocolFeatures: {
      const uint64_t f = m.As<uint64_t>();
      if (f & ~options_.protocol_features) {
        return Protocol(
            m, absl::StrFormat("protocol features 0x%x were not offered",
                               f & ~options_.protocol_features));
      }
      protocol_features_ = f;
      return absl::OkStatus();
    }
    case kGetQueueNum:
      *reply = MakeReply(m.request(), uint64_t{dev_.num_queues()});
      return absl::OkStatus();
    case kSetVringNum: {
      const auto st = m.As<VringState>();
      auto q = QueueIndex(st.index, m);
      if (!q.ok()) return q.status();
      if (dev_.queue_running(*q)) return Protocol(m, "queue is running");
      const uint32_t max = dev_.queue_max_size(*q);
      if (st.num == 0 || st.num > max) {
        return Protocol(m,
                        absl::StrFormat("size %u not in 1..%u", st.num, max));
      }
      if (!packed() && (st.num & (st.num - 1)) != 0) {
        return Protocol(
            m, absl::StrFormat("split ring size %u is not a power of two",
                               st.num));
      }
      vrings_[*q].num = st.num;
      return absl::OkStatus();
    }
    case kSetVringAddr: {
      const auto a = m.As<VringAddr>();
      auto q = QueueIndex(a.index, m);
      if (!q.ok()) return q.status();
      if (a.flags & ~kVringFlagLog) {
        return Protocol(m, absl::StrFormat("unknown flags 0x%x", a.flags));
      }
      if (dev_.queue_running(*q)) {
        // Migration turns used-ring logging on and off on running rings
        // (QEMU resends the same addresses with VHOST_VRING_F_LOG).
        const VringAddr& now = *vrings_[*q].addr;
        if (a.desc_user_addr != now.desc_user_addr ||
            a.avail_user_addr != now.avail_user_addr ||
            a.used_user_addr != now.used_user_addr) {
          return Protocol(m, "queue is running");
        }
        if (a.flags == now.flags && a.log_guest_addr == now.log_guest_addr) {
          return absl::OkStatus();
        }
        Stop(*q);
        vrings_[*q].addr = a;
        return Sync(*q);
      }
      vrings_[*q].addr = a;
      return absl::OkStatus();
    }
    case kSetVringBase: {
      const auto st = m.As<VringState>();
      auto q = QueueIndex(st.index, m);
      if (!q.ok()) return q.status();
      if (dev_.queue_running(*q)) return Protocol(m, "queue is running");
      if (!packed() && st.num > 0xffff) {
        return Protocol(
            m, absl::StrFormat("split ring base 0x%x above 0xffff", st.num));
      }
      vrings_[*q].base = st.num;
      return absl::OkStatus();
    }
    case kGetVringBase: {
      const auto st = m.As<VringState>();
      auto q = QueueIndex(st.index, m);
      if (!q.ok()) return q.status();
      Stop(*q);
      Vring& v = vrings_[*q];
      v.started = false;
      v.kick.reset();
      ++generation_;
      *reply = MakeReply(m.request(), VringState{st.index, v.base});
      return absl::OkStatus();
    }
    case kSetVringKick:
    case kSetVringCall:
    case kSetVringErr: {
      const uint64_t v = m.As<uint64_t>();
      if (v & ~(kVringIndexMask | kVringNoFdMask)) {
        return Protocol(m, absl::StrFormat("unknown bits in 0x%x", v));
      }
      auto q = QueueIndex(v & kVringIndexMask, m);
      if (!q.ok()) return q.status();
      UniqueFd fd;
      if (!(v & kVringNoFdMask)) {
        fd = std::move(m.fds[0]);
        SetNonBlocking(fd.get());
      }
      Vring& ring = vrings_[*q];
      if (m.request() == kSetVringKick) {
        Stop(*q);  // the loop must not watch the old fd any more
        ring.kick = std::move(fd);
        ring.started = true;
        ++generation_;
        return Sync(*q);
      }
      if (m.request() == kSetVringCall) {
        dev_.SetCallFd(*q, fd.get());
        // A front-end swaps call fds on a running ring (QEMU, when the
        // guest masks and unmasks the queue's MSI-X vector) without
        // waiting for us: it looks at the old fd for a pending interrupt
        // before this message is handled, and one the device sends to the
        // old fd in between is lost; the guest then waits forever for a
        // request that completed. One spurious interrupt on the new fd
        // covers that window (the driver finds nothing new, at worst).
        if (dev_.queue_running(*q)) SignalFd(fd.get());
        ring.call = std::move(fd);
      } else {
        dev_.SetErrFd(*q, fd.get());
        ring.err = std::move(fd);
      }
      return absl::OkStatus();
    }
    case kSetVringEnable: {
      const auto st = m.As<VringState>();
      auto q = QueueIndex(st.index, m);
      if (!q.ok()) return q.status();
      if (st.num > 1) {
        return Protocol(m,
                        absl::StrFormat("enable value %u not 0 or 1", st.num));
      }
      vrings_[*q].enabled = st.num == 1;
      return Sync(*q);
    }
    case kSetLogBase:
      return SetLogBase(m, reply);
    case kSetLogFd:
      if (auto s = NeedProtocol(kProtocolLogShmfd, m); !s.ok()) return s;
      // Queues pick the fd up at their next start.
      StopAll();
      log_call_ = std::move(m.fds[0]);
      SetNonBlocking(log_call_.get());
      return SyncAll();
    case kSetBackendReqFd:
      if (auto s = NeedProtocol(kProtocolBackendReq, m); !s.ok()) return s;
      backend_req_ = std::move(m.fds[0]);
      dev_.SetConfigChannel(backend_req_.get());
      return absl::OkStatus();
    case kGetConfig: {
      if (auto s = NeedProtocol(kProtocolConfig, m); !s.ok()) return s;
      const auto h = m.As<ConfigHeader>();
      Message r;
      r.header = {m.request(), kVersion | kFlagReply, 0};
      r.payload.assign(sizeof h + h.size, 0);
      std::memcpy(r.payload.data(), &h, sizeof h);
      const uint32_t size = dev_.config_size();
      if (h.offset <= size) {
        // Bytes past the device's config space read as zero (front-ends
        // may ask for their own, larger, struct).
        const uint32_t n = std::min(h.size, size - h.offset);
        if (n > 0) dev_.ReadConfig(h.offset, r.payload.data() + sizeof h, n);
        *reply = std::move(r);
        return absl::OkStatus();
      }
      // An empty reply says "failed" (spec).
      r.payload.clear();
      *reply = std::move(r);
      return absl::OkStatus();
    }
    case kSetConfig: {
      if (auto s = NeedProtocol(kProtocolConfig, m); !s.ok()) return s;
      const auto h = m.As<ConfigHeader>();
      if (h.flags > 1) {
        return Protocol(m, absl::StrFormat("unknown flags 0x%x", h.flags));
      }
      if (!dev_.WriteConfig(h.offset, m.payload.data() + sizeof h, h.size)) {
        // Refused, not fatal: a failure REPLY_ACK (if asked for).
        return absl::FailedPreconditionError("config write refused");
      }
      return absl::OkStatus();
    }
    case kGetInflightFd:
      if (auto s = NeedProtocol(kProtocolInflightShmfd, m); !s.ok()) return s;
      return GetInflightFd(m, reply);
    case kSetInflightFd:
      if (auto s = NeedProtocol(kProtocolInflightShmfd, m); !s.ok()) return s;
      return SetInflightFd(m);
    case kResetDevice:
      if (auto s = NeedProtocol(kProtocolResetDevice, m); !s.ok()) return s;
      StopAll();
      dev_.Reset();
      for (uint16_t q = 0; q < dev_.num_queues(); ++q) {
        Vring& v = vrings_[q];
        v.started = v.enabled = false;
        v.kick.reset();
        v.num = 0;
        v.addr.reset();
        v.base = 0;
      }
      ++generation_;
      features_set_ = false;
      acked_features_ = 0;
      frontend_status_ = 0;
      return absl::OkStatus();
    case kSetStatus: {
      if (auto s = NeedProtocol(kProtocolStatus, m); !s.ok()) return s;
      const uint64_t v = m.As<uint64_t>();
      if (v > 0xff) return Protocol(m, absl::StrFormat("status 0x%x", v));
      frontend_status_ = static_cast<uint8_t>(v);
      if ((v & spec::kStatusFeaturesOk) && features_set_) dev_.Negotiate();
      return absl::OkStatus();
    }
    case kGetStatus: {
      if (auto s = NeedProtocol(kProtocolStatus, m); !s.ok()) return s;
      uint8_t v = frontend_status_;
      const uint8_t d = dev_.status();
      if ((v & spec::kStatusFeaturesOk) && !(d & spec::kStatusFeaturesOk)) {
        v &= static_cast<uint8_t>(~spec::kStatusFeaturesOk);
      }
      v |= d & spec::kStatusDeviceNeedsReset;
      *reply = MakeReply(m.request(), uint64_t{v});
      return absl::OkStatus();
    }
    default:
      return Protocol(m, "unsupported request");
  }
}

}  // namespace vhost_user
