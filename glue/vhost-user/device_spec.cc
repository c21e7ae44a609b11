#include "device_spec.h"

#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>
#include <type_traits>
#include <variant>

#include "absl/strings/str_format.h"
#include "vhost_user/device_adapter.h"
#include "vhost_user/interrupt.h"
#include "virtio/blk_device.h"
#include "virtio/catalog/backend_opener.h"
#include "virtio/catalog/net_wakeup.h"
#include "virtio/console_device.h"
#include "virtio/net_device.h"
#include "virtio/rng_device.h"

namespace vhost_user {
namespace {

using virtio::catalog::DeviceSpec;
using virtio::catalog::DeviceType;

// queue-size= is a limit, not a size: vhost-user front-ends pick their own
// ring sizes (QEMU's microvm and DPDK 1024, UML 256, QEMU PCI 128) and have
// no way to ask for ours. By default every size the specification allows.
constexpr uint32_t kAnyQueueSize = virtio::spec::kMaxQueueSize;

uint32_t QueueSizeLimit(const DeviceSpec& s) {
  return s.queue_size.value_or(kAnyQueueSize);
}

std::string NameOf(const DeviceSpec& s) {
  return s.id.empty() ? std::string(virtio::catalog::DeviceTypeName(s.type))
                      : s.id;
}

// A blk device's control: its BlkQueueStats (StatCounters: readable while
// the queues run), its capacity, and online resize for disks with a
// backing file or block device (UringDisk).
template <typename Dev, typename Disk>
class BlkControl final : public DeviceControl {
 public:
  BlkControl(Dev& dev, Disk& disk) : dev_(dev), disk_(disk) {}

  void WriteDeviceFields(JsonWriter& json) const override {
    json.FieldUint("capacity_sectors", dev_.capacity_sectors());
    json.FieldBool("read_only", disk_.read_only());
    json.FieldBool("resizable", kResizable);
  }

  DeviceQueueErrors queue_errors(uint16_t q) const override {
    if (q >= dev_.num_queues()) return {};
    const virtio::BlkQueueStats& st = dev_.queue_stats(q);
    return {.malformed_requests = st.malformed,
            .backend_errors = st.backend_errors};
  }

  void WriteQueueFields(uint16_t q, JsonWriter& json) const override {
    if (q >= dev_.num_queues()) return;
    const virtio::BlkQueueStats& st = dev_.queue_stats(q);
    json.Key("blk");
    json.BeginObject();
    json.FieldUint("requests", st.requests);
    json.FieldUint("completed", st.completed);
    json.FieldUint("ok", st.ok);
    json.FieldUint("ioerr", st.ioerr);
    json.FieldUint("unsupp", st.unsupp);
    json.FieldUint("malformed", st.malformed);
    json.FieldUint("no_status", st.no_status);
    json.FieldUint("backend_errors", st.backend_errors);
    json.FieldUint("slot_stalls", st.stalls);
    json.EndObject();
  }

  absl::StatusOr<ResizeOutcome> Resize() override {
    if constexpr (kResizable) {
      absl::StatusOr<uint64_t> size = disk_.RereadSize();
      if (!size.ok()) return size.status();
      absl::StatusOr<uint64_t> old_sectors = dev_.Grow(*size);
      if (!old_sectors.ok()) return old_sectors.status();
      return ResizeOutcome{.old_sectors = *old_sectors,
                           .new_sectors = dev_.capacity_sectors()};
    } else {
      return absl::UnimplementedError(
          "this disk has no backing file (a ram or null disk): not "
          "resizable");
    }
  }

 private:
  static constexpr bool kResizable = std::is_same_v<Disk, virtio::UringDisk>;
  Dev& dev_;
  Disk& disk_;
};

template <typename Disk>
absl::StatusOr<ServedDevice> MakeBlk(std::shared_ptr<Disk> disk,
                                     const virtio::BlkDeviceOptions& opts) {
  using Dev = virtio::BlkDevice<VhostTraits, Disk>;
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        return Dev::Create(m, i, *disk, opts);
      });
  if (!a.ok()) return a.status();
  ServedDevice served;
  served.control =
      std::make_unique<BlkControl<Dev, Disk>>((*a)->device(), *disk);
  (*a)->KeepAlive(disk);
  served.device = *std::move(a);
  return served;
}

// A device with no type-specific statistics and no resize.
template <typename Adapter>
ServedDevice Plain(std::unique_ptr<Adapter> adapter) {
  ServedDevice served;
  served.device = std::move(adapter);
  served.control = std::make_unique<DeviceControl>();
  return served;
}

absl::StatusOr<ServedDevice> Blk(const DeviceSpec& s) {
  const uint32_t qsize = QueueSizeLimit(s);
  // seg_max (the guest's largest request) as for a 256-entry ring unless
  // the limit is lower: the per-request iovec arrays stay as they were
  // before the limit became 32768.
  virtio::BlkDeviceOptions opts{
      .name = NameOf(s),
      .num_queues = s.blk.num_queues,
      .queue_size = qsize,
      .seg_max = static_cast<uint32_t>(std::clamp<uint32_t>(qsize, 3, 256) - 2),
      .serial = s.blk.serial};
  opts.ring.packed = s.packed;
  absl::StatusOr<virtio::catalog::BlockBackend> disk =
      virtio::catalog::OpenBlockBackend(s.blk, {});
  if (!disk.ok()) return disk.status();
  return std::visit([&](auto& d) { return MakeBlk(d, opts); }, *disk);
}

absl::StatusOr<ServedDevice> Rng(const DeviceSpec& s) {
  virtio::RngOptions opts;
  opts.max_bytes_per_period = s.rng.rate;
  opts.queue_size = QueueSizeLimit(s);
  opts.ring.packed = s.packed;
  opts.name = NameOf(s);
  using Dev = virtio::RngDevice<VhostTraits>;
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        return std::make_unique<Dev>(m, i, opts);
      });
  if (!a.ok()) return a.status();
  return Plain(*std::move(a));
}

// --- net -------------------------------------------------------------------

// Each pair's backend fd is watched as the backend's wake-up rule says
// (virtio/catalog/net_wakeup.h): TAP edge-triggered plus EPOLLOUT while
// transmit waits for room; the loopback eventfd level-triggered and drained
// before servicing; the generator's eventfd level and never drained. A
// transmit held for a reason no fd signals is retried on the rule's timer.
template <typename Backend>
absl::StatusOr<ServedDevice> MakeNet(std::shared_ptr<Backend> backend,
                                     const virtio::NetDeviceOptions& opts) {
  using Dev = virtio::NetDevice<VhostTraits, Backend>;
  auto a =
      DeviceAdapter<Dev>::Create([&](const MemoryTable& m, CallInterrupt& i) {
        return Dev::Create(m, i, *backend, opts);
      });
  if (!a.ok()) return a.status();
  static constexpr virtio::catalog::NetWakeup kWakeup =
      virtio::catalog::NetWakeupOf<Backend>();
  Backend* b = backend.get();
  // One group per queue pair (its rx, tx and backend fd); the control
  // queue goes with pair 0.
  const uint16_t pairs = opts.max_pairs;
  const uint16_t num_queues = (*a)->num_queues();
  std::vector<uint16_t> group_of(num_queues);
  for (uint16_t q = 0; q < num_queues; ++q) {
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
        if constexpr (kWakeup.edge_triggered) ev |= EPOLLET;
        if (d.tx_blocked(p)) {
          if constexpr (kWakeup.writable_unblocks_tx) ev |= EPOLLOUT;
          timeout = kWakeup.blocked_tx_retry_ms;
        }
        out.push_back({.fd = fd, .events = ev, .token = p, .stable = true});
        return timeout;
      },
      [b](Dev& d, uint16_t p, uint32_t) {
        if (p >= d.max_pairs()) return;
        if constexpr (kWakeup.drain_eventfd) {
          virtio::catalog::DrainEventFd(b->pair(p).fd());
        } else {
          (void)b;
        }
        d.ServiceBackend(p);
      });
  (*a)->KeepAlive(backend);
  return Plain(*std::move(a));
}

absl::StatusOr<ServedDevice> Net(const DeviceSpec& s) {
  virtio::NetDeviceOptions opts;
  opts.name = NameOf(s);
  opts.max_pairs = s.net.queue_pairs;
  opts.queue_size = QueueSizeLimit(s);
  // vhost-user has no way to tell a front-end the largest ring it may use:
  // each picks its own control queue size (QEMU 64, UML 256 as for every
  // ring). The limit only bounds what a hostile front-end can ask for.
  opts.ctrl_queue_size = std::max<uint32_t>(opts.queue_size, 1024);
  opts.mtu = s.net.mtu;
  opts.ctrl_vq = s.net.ctrl_vq;
  opts.ring.packed = s.packed;
  // QEMU keeps the control queue and passes on GUEST_ANNOUNCE / MQ without
  // CTRL_VQ; UML and DPDK hand the control queue over.
  opts.relaxed_ctrl_dependencies = true;
  if (s.net.mac) opts.mac = *s.net.mac;
  absl::StatusOr<virtio::catalog::NetBackend> backend =
      virtio::catalog::OpenNetBackend(s.net, opts.name);
  if (!backend.ok()) return backend.status();
  return std::visit([&](auto& b) { return MakeNet(b, opts); }, *backend);
}

// --- console ---------------------------------------------------------------

constexpr uint32_t kConsoleWakeToken = 0xffffffff;

absl::StatusOr<ServedDevice> Console(const DeviceSpec& s) {
  using Backend = virtio::catalog::AnyConsoleBackend;
  absl::StatusOr<std::unique_ptr<Backend>> made =
      virtio::catalog::OpenConsoleBackend(s.console);
  if (!made.ok()) return made.status();
  std::shared_ptr<Backend> backend(*std::move(made));
  virtio::ConsoleOptions opts;
  opts.queue_size = QueueSizeLimit(s);
  opts.ring.packed = s.packed;
  opts.name = NameOf(s);
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
          virtio::catalog::DrainEventFd(d.wakeup_fd());
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
  return Plain(*std::move(a));
}

}  // namespace

absl::StatusOr<DaemonDeviceSpec> ParseDaemonDeviceSpec(std::string_view text) {
  // Where the device sits and how it interrupts is the front-end's
  // business; the daemon's only key is where the front-end connects.
  std::string socket_path;
  absl::StatusOr<DeviceSpec> spec = virtio::catalog::ParseDeviceSpec(
      text,
      [&](virtio::catalog::SpecReader& reader,
          const DeviceSpec& shared) -> absl::Status {
        if (shared.type != DeviceType::kConsole &&
            reader.Has({.name = "socket"})) {
          return reader.Error(
              "socket= names a console's backend; the device's vhost-user "
              "socket is socket-path=PATH");
        }
        absl::StatusOr<std::optional<std::string>> path =
            reader.Text({.name = "socket-path"});
        if (!path.ok()) return path.status();
        if (*path) {
          if ((*path)->empty()) return reader.Error("socket-path= is empty");
          socket_path = **path;
        }
        return absl::OkStatus();
      });
  if (!spec.ok()) return spec.status();
  return DaemonDeviceSpec{.device = *std::move(spec),
                          .socket_path = std::move(socket_path)};
}

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view text) {
  absl::StatusOr<DaemonDeviceSpec> spec = ParseDaemonDeviceSpec(text);
  if (!spec.ok()) return spec.status();
  return std::move(spec->device);
}

absl::StatusOr<std::unique_ptr<VhostDevice>> MakeDevice(const DeviceSpec& s) {
  absl::StatusOr<ServedDevice> served = MakeServedDevice(s);
  if (!served.ok()) return served.status();
  return std::move(served->device);
}

absl::StatusOr<ServedDevice> MakeServedDevice(const DeviceSpec& s) {
  switch (s.type) {
    case DeviceType::kBlk:
      return Blk(s);
    case DeviceType::kRng:
      return Rng(s);
    case DeviceType::kNet:
      return Net(s);
    case DeviceType::kConsole:
      return Console(s);
  }
  return absl::InternalError("unknown device type");
}

const char* DeviceSpecHelp() { return virtio::catalog::DeviceSpecHelp(); }

}  // namespace vhost_user
