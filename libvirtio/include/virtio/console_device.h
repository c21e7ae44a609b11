// virtio/console_device.h — virtio-console (VIRTIO 1.2 §5.3) on any
// ConsoleBackend.
//
// ConsoleDevice<T, Backend> is a DeviceCore device (CRTP) with one backend
// per port (console_backend.h). Two shapes:
//
//   * Single port (options.multiport = false, one backend): receiveq0 and
//     transmitq0 only. A Linux guest binds port 0 to hvc0.
//   * MULTIPORT (options.multiport = true, 1..N backends): queues in the
//     spec's order — receiveq0, transmitq0, control receiveq, control
//     transmitq, then receiveq/transmitq for ports 1..N-1. If the driver
//     does not negotiate MULTIPORT the device behaves as single-port (port
//     0 only). Bring-up follows the protocol as Linux's virtio_console and
//     QEMU's virtio-serial speak it: driver DEVICE_READY(1) → device
//     DEVICE_ADD for every port → driver PORT_READY(id, 1) → device
//     CONSOLE_PORT(1) for the console port, PORT_NAME (name + NUL) for named
//     ports, PORT_OPEN(1) if the backend is connected, RESIZE if a size is
//     known → driver PORT_OPEN(id, 0/1) as the port is opened and closed.
//
// Features: SIZE, MULTIPORT (if options.multiport) and EMERG_WRITE are
// offered. Config space: cols/rows of the console port, max_nr_ports and
// emerg_wr. A write to emerg_wr (starting at its first byte) outputs its low
// byte on the console port's backend, even before feature negotiation, as
// §5.3.5 allows; bytes the backend cannot take at once wait in a bounded
// buffer (options.emerg_buffer bytes; beyond that they are counted in
// stats().emerg_dropped and logged, never dropped silently).
//
// Host side, for the glue (all thread-safe):
//   * Resize(cols, rows): updates config space and signals a configuration
//     change (what a single-port Linux guest reads), and with MULTIPORT sends
//     RESIZE for the console port. A backend that reports a size (a pty, a
//     terminal) is re-read on every ServiceBackend() of the console port.
//   * BackendPoll(port): what to poll for the port (asks the backend with
//     "want input" = a receive buffer is waiting for bytes, "want output" =
//     transmit data is held back by pacing); ServiceBackend(port) when any of
//     it fires or its timeout passes. wakeup_fd() becomes readable whenever
//     the answer of BackendPoll() may have changed because of the guest
//     (read it, then ask again).
//   * Host open/close: backend.connected() is checked on every service; a
//     change is sent to a MULTIPORT guest as PORT_OPEN.
//
// Pacing: transmitted bytes go straight from guest memory to
// backend.Write(). When the backend takes fewer bytes than offered, the
// device keeps that one chain in flight (with its offset), stops popping the
// transmit queue and leaves its notifications off; the rest of the ring stays
// with the guest. ServiceBackend() resumes once the backend is writable.
// Nothing is copied and nothing is dropped, so a guest that writes faster
// than the backend drains costs one chain per port, not memory. Receive is
// the mirror image: the device holds at most one receive chain per port
// and reads host input into it only when there is some; with MULTIPORT,
// only while the guest has the port open (Linux discards data for closed
// ports, so holding it back avoids losing it).
//
// Control messages from the guest are validated: shorter than 8 bytes, a
// port id out of range, an event the guest must not send, or an unknown
// event are logged (rate limited), counted in stats().bad_control, and
// ignored; the device keeps working. Duplicate DEVICE_READY / PORT_READY are
// ignored as well. Messages to the guest wait in a queue bounded by the
// number of ports (RESIZE and PORT_OPEN for a port are coalesced), so a
// guest that posts no control buffers cannot make the device grow.
//
// Threads: every entry point (ProcessQueue via Notify, ServiceBackend,
// Resize, config accesses, reset) serialises on one internal mutex; the
// console is not a fast path. Enable all queues before DRIVER_OK (Linux
// does), since host-side calls may touch any enabled queue afterwards.
//
// Example:
//   virtio::StdioConsoleBackend stdio({});
//   auto dev = virtio::ConsoleDevice<Traits, virtio::StdioConsoleBackend>::
//       Create(memory, irq, {&stdio}, {});
//   virtio::MmioTransport<...> mmio(**dev);
//   // poll loop: (*dev)->BackendPoll(0) fds + (*dev)->wakeup_fd();
//   //            on events: (*dev)->ServiceBackend(0);
#ifndef VIRTIO_CONSOLE_DEVICE_H_
#define VIRTIO_CONSOLE_DEVICE_H_

#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "virtio/console_backend.h"
#include "virtio/console_spec.h"
#include "virtio/descriptor_chain.h"
#include "virtio/device_core.h"
#include "virtio/hypervisor.h"
#include "virtio/log.h"
#include "virtio/queue.h"
#include "virtio/spec.h"

namespace virtio {

struct ConsoleOptions {
  // Offer MULTIPORT (control queues). Required for more than one port.
  bool multiport = false;
  // The port announced with CONSOLE_PORT, sized by Resize() and receiving
  // emergency writes.
  uint32_t console_port = 0;
  // Optional names (PORT_NAME, e.g. "org.qemu.guest_agent.0"), by port.
  // Each at most kMaxNameLength bytes, no NUL.
  std::vector<std::string> port_names = {};
  // Initial console size; {0, 0}: ask the console port's backend.
  ConsoleSize size = {};
  uint32_t queue_size = 128;
  // Emergency-write bytes kept while the backend cannot take them.
  uint32_t emerg_buffer = 4096;
  // Field order of the RESIZE control message. The spec says cols, rows;
  // Linux's virtio_console has always read rows first, so the default
  // follows the driver that exists. Set false for a spec-order guest.
  bool resize_rows_first = true;
  RingFeatureOptions ring = {};
  std::string name = "virtio-console";
};

struct ConsoleStats {
  uint64_t tx_bytes = 0;         // guest → backends
  uint64_t rx_bytes = 0;         // backends → guest
  uint64_t tx_stalls = 0;        // times a backend took less than offered
  uint64_t bad_chains = 0;       // chains returned unused (untranslatable...)
  uint64_t bad_control = 0;      // control messages ignored
  uint64_t control_sent = 0;     // control messages delivered to the guest
  uint64_t control_dropped = 0;  // control messages over the queue bound
  uint64_t emerg_bytes = 0;      // emergency bytes written to the backend
  uint64_t emerg_dropped = 0;    // emergency bytes over the buffer bound
};

template <HypervisorTraits T, ConsoleBackend Backend>
class ConsoleDevice : public DeviceCore<T, ConsoleDevice<T, Backend>> {
  using Core = DeviceCore<T, ConsoleDevice<T, Backend>>;
  friend Core;

 public:
  static constexpr uint32_t kDeviceId = spec::kDeviceIdConsole;
  static constexpr uint32_t kMaxPorts = 512;
  static constexpr size_t kMaxNameLength = 255;
  // Segments per data chain; longer chains are returned unused.
  static constexpr uint32_t kMaxSegments = 64;

  // `backends[i]` serves port i; all must outlive the device.
  static absl::StatusOr<std::unique_ptr<ConsoleDevice>> Create(
      const typename T::Memory& memory, typename T::Interrupt& interrupt,
      absl::Span<Backend* const> backends, ConsoleOptions options) {
    const size_t n = backends.size();
    if (n == 0 || n > kMaxPorts) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%u ports: need 1..%u", n, kMaxPorts));
    }
    if (n > 1 && !options.multiport) {
      return absl::InvalidArgumentError("more than one port needs multiport");
    }
    for (Backend* b : backends) {
      if (b == nullptr) return absl::InvalidArgumentError("null backend");
    }
    if (options.console_port >= n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "console port %u of %u ports", options.console_port, n));
    }
    if (options.port_names.size() > n) {
      return absl::InvalidArgumentError("more port names than ports");
    }
    for (const std::string& name : options.port_names) {
      if (name.size() > kMaxNameLength ||
          name.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrFormat("bad port name \"%s\"", name));
      }
    }
    const uint32_t qs = options.queue_size;
    if (qs == 0 || qs > spec::kMaxQueueSize || (qs & (qs - 1)) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "queue size %u is not a power of two in 1..32768", qs));
    }
    const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
      return absl::ErrnoToStatus(errno, "eventfd");
    }
    return std::unique_ptr<ConsoleDevice>(new ConsoleDevice(
        memory, interrupt, backends, std::move(options), efd));
  }

  ~ConsoleDevice() { close(wakeup_fd_); }

  uint32_t num_ports() const { return static_cast<uint32_t>(ports_.size()); }

  // --- Host side
  // ---------------------------------------------------------------
  void Resize(uint16_t cols, uint16_t rows) {
    std::lock_guard<std::mutex> lock(mu_);
    ResizeLocked({cols, rows});
  }

  ConsolePollSet BackendPoll(uint32_t port) {
    std::lock_guard<std::mutex> lock(mu_);
    if (port >= ports_.size()) return {};
    Port& p = ports_[port];
    const bool want_in = Live() && Active(port) && p.rx_held && RxOpen(port);
    const bool want_out =
        p.tx_held || (port == options_.console_port && !emerg_.empty());
    return p.backend->Poll(want_in, want_out);
  }

  void ServiceBackend(uint32_t port) {
    std::lock_guard<std::mutex> lock(mu_);
    if (port >= ports_.size()) return;
    Port& p = ports_[port];
    p.backend->Service();
    if (port == options_.console_port) {
      FlushEmerg();
      if (std::optional<ConsoleSize> s = p.backend->size();
          s && *s != backend_size_) {
        backend_size_ = *s;
        ResizeLocked(*s);
      }
    }
    if (!Live() || !Active(port)) return;
    CheckHostOpen(port);
    PumpTxFor(port);
    PumpRxFor(port);
    CheckHostOpen(port);  // a read or write may have found the peer gone
  }

  // Readable when BackendPoll() may have changed; reading it resets it.
  int wakeup_fd() const { return wakeup_fd_; }

  ConsoleStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  ConsoleSize size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {config_.cols, config_.rows};
  }
  // Guest-side state of a port as the device tracks it.
  bool guest_open(uint32_t port) const {
    std::lock_guard<std::mutex> lock(mu_);
    return port < ports_.size() && ports_[port].guest_open;
  }
  bool guest_ready(uint32_t port) const {
    std::lock_guard<std::mutex> lock(mu_);
    return port < ports_.size() && ports_[port].guest_ready;
  }
  // True while transmit data of `port` is held back by pacing.
  bool tx_paced(uint32_t port) const {
    std::lock_guard<std::mutex> lock(mu_);
    return port < ports_.size() && ports_[port].tx_held;
  }
  size_t pending_control() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_.size();
  }
  bool multiport_negotiated() const {
    std::lock_guard<std::mutex> lock(mu_);
    return multiport_;
  }

 private:
  struct Port {
    Backend* backend = nullptr;
    std::string name;
    DescriptorChain rx{kMaxSegments};
    DescriptorChain tx{kMaxSegments};
    std::unique_ptr<iovec[]> scratch{new iovec[kMaxSegments]};
    uint64_t tx_offset = 0;
    bool rx_held = false;
    bool tx_held = false;
    bool guest_ready = false;
    bool guest_open = false;
    bool host_connected = false;  // as last reported to the guest
  };

  struct PendingControl {
    console::Control header;
    std::string extra;
  };

  ConsoleDevice(const typename T::Memory& memory,
                typename T::Interrupt& interrupt,
                absl::Span<Backend* const> backends, ConsoleOptions options,
                int wakeup_fd)
      : Core(
            memory, interrupt, options.name,
            spec::Bit(console::kFeatureSize) |
                spec::Bit(console::kFeatureEmergWrite) |
                (options.multiport ? spec::Bit(console::kFeatureMultiport) : 0),
            std::vector<uint32_t>(
                console::NumQueues(static_cast<uint32_t>(backends.size()),
                                   options.multiport),
                options.queue_size),
            options.ring),
        options_(std::move(options)),
        ports_(backends.size()),
        ctrl_rx_chain_(16),
        ctrl_tx_chain_(16),
        wakeup_fd_(wakeup_fd) {
    for (size_t i = 0; i < backends.size(); ++i) {
      ports_[i].backend = backends[i];
      if (i < options_.port_names.size())
        ports_[i].name = options_.port_names[i];
    }
    max_pending_ = 8 * ports_.size() + 16;
    config_.max_nr_ports = static_cast<uint32_t>(ports_.size());
    ConsoleSize s = options_.size;
    if (s == ConsoleSize{}) {
      if (auto b = ports_[options_.console_port].backend->size()) {
        s = *b;
        backend_size_ = *b;
      }
    }
    config_.cols = s.cols;
    config_.rows = s.rows;
  }

  // --- DeviceCore hooks
  // ----------------------------------------------------------
  uint32_t ConfigSize() const { return sizeof(console::Config); }

  void ReadConfigBytes(uint32_t offset, void* data, uint32_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    console::Config c = config_;
    c.emerg_wr = 0;
    std::memcpy(data, reinterpret_cast<const uint8_t*>(&c) + offset, len);
  }

  void WriteConfigBytes(uint32_t offset, const void* data, uint32_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    if (offset != offsetof(console::Config, emerg_wr) || len == 0) {
      this->GuestError(absl::StrFormat(
          "config write of %u bytes at %u: only emerg_wr is writable", len,
          offset));
      return;
    }
    uint8_t byte;
    std::memcpy(&byte, data, 1);
    if (emerg_.size() >= options_.emerg_buffer) {
      if (stats_.emerg_dropped++ == 0 || emerg_log_.Allow()) {
        Logf(LogLevel::kWarning,
             "%s: emergency write buffer full (%u bytes); dropping (%u so far)",
             this->name(), options_.emerg_buffer, stats_.emerg_dropped);
      }
      return;
    }
    const bool was_empty = emerg_.empty();
    emerg_.push_back(byte);
    FlushEmerg();
    if (was_empty && !emerg_.empty()) Wake();
  }

  bool AcceptFeatures(uint64_t) { return true; }

  void OnDriverOk() {
    std::lock_guard<std::mutex> lock(mu_);
    multiport_ = this->Negotiated(console::kFeatureMultiport);
    live_ = true;
    for (uint32_t i = 0; i < ports_.size(); ++i) {
      ports_[i].host_connected = ports_[i].backend->connected();
    }
    if (!multiport_) {
      ports_[0].guest_open = true;
      ports_[0].backend->SetGuestOpen(true);
    }
  }

  void OnReset() {
    std::lock_guard<std::mutex> lock(mu_);
    for (Port& p : ports_) {
      if (p.guest_open) p.backend->SetGuestOpen(false);
      p.rx_held = p.tx_held = false;
      p.tx_offset = 0;
      p.guest_ready = p.guest_open = false;
    }
    pending_.clear();
    live_ = multiport_ = device_ready_ = false;
  }

  // DisableQueue(): the ring is about to go away. A held receive chain is
  // returned empty; a paced transmit chain is returned with the bytes the
  // backend has not taken yet dropped.
  void OnQueueDisabled(uint16_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (index == console::kControlRxQueue ||
        index == console::kControlTxQueue) {
      return;
    }
    const uint32_t port = index < 2 ? 0 : (index - 2) / 2;
    if (port >= ports_.size()) return;
    Port& p = ports_[port];
    this->WithQueue(index, [&](uint16_t q, auto& ring) {
      if (index % 2 == 0) {
        if (!p.rx_held) return;
        p.rx_held = false;
        ring.Push(p.rx.token(), 0);
      } else {
        if (!p.tx_held) return;
        p.tx_held = false;
        p.tx_offset = 0;
        ring.Push(p.tx.token(), 0);
      }
      if (ring.Publish()) this->interrupt().SignalQueue(q);
      // Stalled, the queue left its notifications off: whoever resumes the
      // ring must hear the driver's next kick.
      ring.EnableNotification();
    });
    Wake();  // BackendPoll() changed
  }

  template <VirtQueue Q>
  void ProcessQueue(uint16_t index, Q& ring) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!live_) return;
    if (index == console::kControlRxQueue ||
        index == console::kControlTxQueue) {
      if (!multiport_) {
        this->GuestError(absl::StrFormat(
            "kick on control queue %u without MULTIPORT", index));
        return;
      }
      if (index == console::kControlRxQueue) {
        FlushControl(ring);
      } else {
        HandleControlQueue(ring);
      }
      return;
    }
    const uint32_t port = index < 2 ? 0 : (index - 2) / 2;
    if (!Active(port)) {
      this->GuestError(absl::StrFormat(
          "kick on queue %u of port %u without MULTIPORT", index, port));
      return;
    }
    if (index % 2 == 0) {
      PumpRx(port, ring);
    } else {
      PumpTx(port, ring);
    }
    CheckHostOpen(port);
  }

  // --- Helpers (mu_ held)
  // -----------------------------------------------------------
  bool Live() const {
    const uint8_t s = this->status();
    return live_ && (s & spec::kStatusDriverOk) &&
           !(s & (spec::kStatusDeviceNeedsReset | spec::kStatusFailed));
  }
  bool Active(uint32_t port) const { return port == 0 || multiport_; }
  bool RxOpen(uint32_t port) const { return ports_[port].guest_open; }

  void Wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(wakeup_fd_, &one, sizeof one);
  }

  // Runs fn on queue q's ring (if enabled) and turns a ring error into
  // NEEDS_RESET, as DeviceCore::Notify does for the kicked queue.
  template <typename Fn>
  void OnQueue(uint16_t q, Fn&& fn) {
    this->WithQueue(q, [&](uint16_t index, auto& ring) {
      fn(ring);
      if (ring.error() != RingError::kNone) {
        this->SetNeedsReset(absl::StrFormat("queue %u: %s", index,
                                            RingErrorName(ring.error())));
      }
    });
  }
  void PumpTxFor(uint32_t port) {
    OnQueue(console::TxQueue(port), [&](auto& ring) { PumpTx(port, ring); });
  }
  void PumpRxFor(uint32_t port) {
    OnQueue(console::RxQueue(port), [&](auto& ring) { PumpRx(port, ring); });
  }

  // Writes emergency bytes to the console backend. False if some remain.
  bool FlushEmerg() {
    if (emerg_.empty()) return true;
    const iovec iov{emerg_.data(), emerg_.size()};
    size_t n = ports_[options_.console_port].backend->Write({&iov, 1});
    n = std::min(n, emerg_.size());
    emerg_.erase(emerg_.begin(), emerg_.begin() + static_cast<ptrdiff_t>(n));
    stats_.emerg_bytes += n;
    return emerg_.empty();
  }

  // Offers the rest of port.tx to the backend. True once it is all taken.
  bool WriteHeld(Port& port) {
    const uint64_t total = port.tx.readable_bytes();
    while (port.tx_offset < total) {
      // The readable segments from tx_offset on.
      uint64_t skip = port.tx_offset;
      uint32_t n = 0;
      for (const iovec& seg : port.tx.readable()) {
        if (skip >= seg.iov_len) {
          skip -= seg.iov_len;
          continue;
        }
        port.scratch[n].iov_base = static_cast<uint8_t*>(seg.iov_base) + skip;
        port.scratch[n].iov_len = seg.iov_len - skip;
        skip = 0;
        ++n;
      }
      size_t took = port.backend->Write({port.scratch.get(), n});
      took =
          static_cast<size_t>(std::min<uint64_t>(took, total - port.tx_offset));
      if (took == 0) return false;
      port.tx_offset += took;
      stats_.tx_bytes += took;
    }
    return true;
  }

  template <VirtQueue Q>
  void PumpTx(uint32_t index, Q& ring) {
    Port& port = ports_[index];
    if (index == options_.console_port && !FlushEmerg()) return;
    bool stalled = false;
    do {
      ring.DisableNotification();
      for (;;) {
        if (!port.tx_held) {
          if (ring.Pop(port.tx) != PopStatus::kChain) break;
          if (!port.tx.ok()) {
            ++stats_.bad_chains;
            this->GuestError(absl::StrFormat("port %u transmit chain: %s",
                                             index,
                                             RingErrorName(port.tx.error())));
            ring.Push(port.tx.token(), 0);
            continue;
          }
          port.tx_held = true;
          port.tx_offset = 0;
        }
        if (!WriteHeld(port)) {
          stalled = true;
          ++stats_.tx_stalls;
          Wake();
          break;
        }
        port.tx_held = false;
        ring.Push(port.tx.token(), 0);
      }
      if (ring.Publish())
        this->interrupt().SignalQueue(console::TxQueue(index));
      // Paced: leave notifications off and the rest of the ring with the
      // guest until the backend is writable again.
    } while (!stalled && ring.error() == RingError::kNone &&
             ring.EnableNotification());
  }

  template <VirtQueue Q>
  void PumpRx(uint32_t index, Q& ring) {
    Port& port = ports_[index];
    if (!RxOpen(index)) return;
    bool waiting = false;
    do {
      ring.DisableNotification();
      for (;;) {
        if (!port.rx_held) {
          if (ring.Pop(port.rx) != PopStatus::kChain) break;
          if (!port.rx.ok() || port.rx.writable_bytes() == 0) {
            ++stats_.bad_chains;
            this->GuestError(
                absl::StrFormat("port %u receive chain: %s", index,
                                port.rx.ok() ? "no writable buffer"
                                             : RingErrorName(port.rx.error())));
            ring.Push(port.rx.token(), 0);
            continue;
          }
          port.rx_held = true;
          Wake();
        }
        size_t n = port.backend->Read(port.rx.writable());
        n = static_cast<size_t>(
            std::min<uint64_t>(n, port.rx.writable_bytes()));
        if (n == 0) {
          waiting = true;
          break;
        }
        stats_.rx_bytes += n;
        port.rx_held = false;
        ring.Push(port.rx.token(), static_cast<uint32_t>(n));
      }
      if (ring.Publish())
        this->interrupt().SignalQueue(console::RxQueue(index));
    } while (!waiting && ring.error() == RingError::kNone &&
             ring.EnableNotification());
  }

  // --- Control queues
  // ------------------------------------------------------------------
  void ResizeLocked(ConsoleSize s) {
    if (s == ConsoleSize{config_.cols, config_.rows}) return;
    config_.cols = s.cols;
    config_.rows = s.rows;
    this->ConfigChanged();
    if (Live() && multiport_ && device_ready_ &&
        ports_[options_.console_port].guest_ready) {
      SendResize();
    }
  }

  void SendResize() {
    console::Resize r{config_.cols, config_.rows};
    if (options_.resize_rows_first) std::swap(r.cols, r.rows);
    std::string extra(sizeof r, '\0');
    std::memcpy(extra.data(), &r, sizeof r);
    Send(options_.console_port, console::kEventResize, 0, std::move(extra));
  }

  void CheckHostOpen(uint32_t port) {
    Port& p = ports_[port];
    const bool c = p.backend->connected();
    if (c == p.host_connected) return;
    p.host_connected = c;
    if (multiport_ && device_ready_ && p.guest_ready) {
      Send(port, console::kEventPortOpen, c ? 1 : 0);
    }
  }

  // Queues a message for the guest and delivers what it can.
  void Send(uint32_t id, uint16_t event, uint16_t value,
            std::string extra = {}) {
    PendingControl* waiting = nullptr;
    if (event == console::kEventResize || event == console::kEventPortOpen) {
      // Only the latest state matters: update a message still waiting.
      for (PendingControl& m : pending_) {
        if (m.header.id == id && m.header.event == event) {
          waiting = &m;
          break;
        }
      }
    }
    if (waiting != nullptr) {
      waiting->header.value = value;
      waiting->extra = std::move(extra);
    } else {
      if (pending_.size() >= max_pending_) {
        ++stats_.control_dropped;
        Logf(LogLevel::kWarning,
             "%s: %u control messages wait for the guest; dropping event %u "
             "for port %u",
             this->name(), pending_.size(), event, id);
        return;
      }
      pending_.push_back({{id, event, value}, std::move(extra)});
    }
    if (!Live()) return;  // delivered after the next kick of the queue
    OnQueue(console::kControlRxQueue, [&](auto& ring) { FlushControl(ring); });
  }

  template <VirtQueue Q>
  void FlushControl(Q& ring) {
    if (pending_.empty()) return;
    for (;;) {
      ring.DisableNotification();
      while (!pending_.empty()) {
        if (ring.Pop(ctrl_rx_chain_) != PopStatus::kChain) break;
        if (!ctrl_rx_chain_.ok() ||
            ctrl_rx_chain_.writable_bytes() < sizeof(console::Control)) {
          ++stats_.bad_chains;
          this->GuestError("control receive chain unusable or under 8 bytes");
          ring.Push(ctrl_rx_chain_.token(), 0);
          continue;
        }
        const PendingControl& m = pending_.front();
        uint8_t buf[sizeof(console::Control) + kMaxNameLength + 1];
        std::memcpy(buf, &m.header, sizeof m.header);
        std::copy(m.extra.begin(), m.extra.end(), buf + sizeof m.header);
        // A name that does not fit is truncated (Linux takes what is there).
        const size_t len = std::min<uint64_t>(sizeof m.header + m.extra.size(),
                                              ctrl_rx_chain_.writable_bytes());
        const size_t n = ctrl_rx_chain_.CopyToWritable(0, buf, len);
        ring.Push(ctrl_rx_chain_.token(), static_cast<uint32_t>(n));
        pending_.pop_front();
        ++stats_.control_sent;
      }
      if (ring.Publish()) {
        this->interrupt().SignalQueue(console::kControlRxQueue);
      }
      if (ring.error() != RingError::kNone) return;
      if (pending_.empty()) {
        ring.EnableNotification();
        return;
      }
      if (!ring.EnableNotification()) return;  // wait for buffers
    }
  }

  template <VirtQueue Q>
  void HandleControlQueue(Q& ring) {
    do {
      ring.DisableNotification();
      while (ring.Pop(ctrl_tx_chain_) == PopStatus::kChain) {
        console::Control c{};
        if (!ctrl_tx_chain_.ok()) {
          BadControl(absl::StrFormat("control chain: %s",
                                     RingErrorName(ctrl_tx_chain_.error())));
        } else if (ctrl_tx_chain_.CopyFromReadable(0, &c, sizeof c) !=
                   sizeof c) {
          BadControl(absl::StrFormat("control message of %u bytes",
                                     ctrl_tx_chain_.readable_bytes()));
        } else {
          ring.Push(ctrl_tx_chain_.token(), 0);
          HandleControl(c);  // may send messages on the control receiveq
          continue;
        }
        ring.Push(ctrl_tx_chain_.token(), 0);
      }
      if (ring.Publish())
        this->interrupt().SignalQueue(console::kControlTxQueue);
    } while (ring.error() == RingError::kNone && ring.EnableNotification());
  }

  void BadControl(std::string_view why) {
    ++stats_.bad_control;
    this->GuestError(why);
  }

  void HandleControl(const console::Control& c) {
    if (c.event == console::kEventDeviceReady) {
      if (c.value != 1) {
        BadControl("driver reported DEVICE_READY failure");
        return;
      }
      if (device_ready_) {
        BadControl("duplicate DEVICE_READY ignored");
        return;
      }
      device_ready_ = true;
      for (uint32_t i = 0; i < ports_.size(); ++i) {
        Send(i, console::kEventDeviceAdd, 1);
      }
      return;
    }
    switch (c.event) {
      case console::kEventPortReady:
      case console::kEventPortOpen:
        break;
      case console::kEventDeviceAdd:
      case console::kEventDeviceRemove:
      case console::kEventConsolePort:
      case console::kEventResize:
      case console::kEventPortName:
        BadControl(absl::StrFormat("device-only control event %u from driver",
                                   c.event));
        return;
      default:
        BadControl(absl::StrFormat("unknown control event %u", c.event));
        return;
    }
    if (c.id >= ports_.size()) {
      BadControl(absl::StrFormat("control event %u for port %u of %u", c.event,
                                 c.id, ports_.size()));
      return;
    }
    if (!device_ready_) {
      BadControl(
          absl::StrFormat("control event %u before DEVICE_READY", c.event));
      return;
    }
    Port& p = ports_[c.id];
    if (c.event == console::kEventPortReady) {
      if (c.value != 1) {
        BadControl(absl::StrFormat("driver failed to set up port %u", c.id));
        return;
      }
      if (p.guest_ready) {
        BadControl(absl::StrFormat("duplicate PORT_READY for port %u", c.id));
        return;
      }
      p.guest_ready = true;
      if (c.id == options_.console_port) {
        Send(c.id, console::kEventConsolePort, 1);
      }
      if (!p.name.empty()) {
        std::string name = p.name;
        name.push_back('\0');  // as QEMU sends it
        Send(c.id, console::kEventPortName, 1, std::move(name));
      }
      p.host_connected = p.backend->connected();
      if (p.host_connected) Send(c.id, console::kEventPortOpen, 1);
      if (c.id == options_.console_port && (config_.cols || config_.rows)) {
        SendResize();
      }
      return;
    }
    // PORT_OPEN.
    const bool open = c.value != 0;
    if (open == p.guest_open) return;
    p.guest_open = open;
    p.backend->SetGuestOpen(open);
    if (open) PumpRxFor(c.id);
  }

  ConsoleOptions options_;
  mutable std::mutex mu_;
  std::vector<Port> ports_;
  DescriptorChain ctrl_rx_chain_;
  DescriptorChain ctrl_tx_chain_;
  std::deque<PendingControl> pending_;
  size_t max_pending_ = 0;
  std::vector<uint8_t> emerg_;
  console::Config config_{};
  ConsoleSize backend_size_{};
  ConsoleStats stats_;
  GuestErrorLimiter emerg_log_;
  int wakeup_fd_;
  bool live_ = false;
  bool multiport_ = false;
  bool device_ready_ = false;
};

}  // namespace virtio

#endif  // VIRTIO_CONSOLE_DEVICE_H_
