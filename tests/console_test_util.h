// Shared helpers for the virtio-console tests: an in-memory backend with a
// limited capacity (for pacing), and a guest-side console driver that keeps
// one harness ring per queue and speaks the control protocol the way Linux's
// drivers/char/virtio_console.c does.
#ifndef VIRTIO_TESTS_CONSOLE_TEST_UTIL_H_
#define VIRTIO_TESTS_CONSOLE_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "virtio/console_backend.h"
#include "virtio/console_spec.h"
#include "virtio/spec.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio::testing {

// A ConsoleBackend in memory. Write() accepts at most `capacity` bytes until
// the test calls Drain() (a slow consumer); Read() hands out `input`.
class MemoryConsoleBackend {
 public:
  size_t Write(absl::Span<const iovec> iov) {
    ++write_calls;
    size_t took = 0;
    for (const iovec& v : iov) {
      const size_t room = capacity - buffered;
      const size_t n = std::min(room, v.iov_len);
      output.append(static_cast<const char*>(v.iov_base), n);
      buffered += n;
      took += n;
      if (n < v.iov_len) break;
    }
    return took;
  }
  size_t Read(absl::Span<const iovec> iov) {
    size_t done = 0;
    for (const iovec& v : iov) {
      const size_t n = std::min(v.iov_len, input.size());
      std::memcpy(v.iov_base, input.data(), n);
      input.erase(0, n);
      done += n;
      if (input.empty()) break;
    }
    return done;
  }
  ConsolePollSet Poll(bool want_input, bool want_output) {
    last_want_input = want_input;
    last_want_output = want_output;
    return {};
  }
  void Service() { ++service_calls; }
  bool connected() const { return is_connected; }
  void SetGuestOpen(bool open) { guest_open_events.push_back(open); }
  std::optional<ConsoleSize> size() { return term_size; }

  // The consumer catches up: `capacity` more bytes fit.
  void Drain() { buffered = 0; }

  size_t capacity = SIZE_MAX;
  size_t buffered = 0;
  std::string output;
  std::string input;
  bool is_connected = true;
  std::optional<ConsoleSize> term_size;
  std::vector<bool> guest_open_events;
  bool last_want_input = false;
  bool last_want_output = false;
  int service_calls = 0;
  int write_calls = 0;
};
static_assert(ConsoleBackend<MemoryConsoleBackend>);

struct ControlMsg {
  uint32_t id = 0;
  uint16_t event = 0;
  uint16_t value = 0;
  std::string extra;
  bool operator==(const ControlMsg&) const = default;
};

// The guest: one harness ring per queue, buffers it posted, and the control
// protocol of Linux's virtio_console.
template <typename Driver>
class GuestConsole {
 public:
  using Kick = std::function<void(uint16_t)>;

  GuestConsole(TestGuestMemory& mem, uint16_t num_queues, uint32_t queue_size,
               DriverOptions options)
      : mem_(mem), bufs_(num_queues) {
    for (uint16_t q = 0; q < num_queues; ++q) {
      rings_.push_back(std::make_unique<Driver>(mem, queue_size, options));
    }
  }
  void set_kick(Kick kick) { kick_ = std::move(kick); }

  uint16_t num_queues() const { return static_cast<uint16_t>(rings_.size()); }
  Driver& ring(uint16_t q) { return *rings_[q]; }
  QueueConfig config(uint16_t q) const { return rings_[q]->config(); }

  void KickQueue(uint16_t q) {
    if (rings_[q]->Kick()) kick_(q);
  }

  // Posts `n` writable buffers of `len` bytes on queue `q` and kicks.
  void AddRx(uint16_t q, int n, uint32_t len) {
    for (int i = 0; i < n; ++i) {
      const uint64_t gpa = mem_.Alloc(len);
      std::optional<uint16_t> id = rings_[q]->Add({{gpa, len, true}});
      if (!id) break;
      bufs_[q][*id] = {gpa, len};
    }
    KickQueue(q);
  }

  // Reaps used buffers of receive queue `q`, returns their bytes in order,
  // and (if `refill`) posts each buffer again.
  std::string Receive(uint16_t q, bool refill = true) {
    std::string out;
    bool readded = false;
    while (std::optional<UsedBuffer> u = rings_[q]->Reap()) {
      auto it = bufs_[q].find(u->id);
      if (it == bufs_[q].end()) continue;
      const auto [gpa, len] = it->second;
      bufs_[q].erase(it);
      std::string part(u->len, '\0');
      mem_.Read(gpa, part.data(), u->len);
      out += part;
      if (refill) {
        std::optional<uint16_t> id = rings_[q]->Add({{gpa, len, true}});
        if (id) bufs_[q][*id] = {gpa, len};
        readded = true;
      }
    }
    if (readded) KickQueue(q);
    return out;
  }

  // Reaps transmit completions of queue `q`; returns how many.
  int ReapTx(uint16_t q) {
    int n = 0;
    while (std::optional<UsedBuffer> u = rings_[q]->Reap()) {
      EXPECT_EQ(u->len, 0u) << "transmit buffers are device-readable only";
      ++n;
    }
    return n;
  }

  // Queues `data` on transmit queue `q` in chains of at most `chunk` bytes
  // (as many as fit in the ring); returns the bytes queued.
  size_t Transmit(uint16_t q, const std::string& data, size_t chunk = 4096,
                  bool kick = true) {
    ReapTx(q);
    size_t off = 0;
    while (off < data.size()) {
      const size_t n = std::min(chunk, data.size() - off);
      const uint64_t gpa = mem_.Alloc(n);
      mem_.Write(gpa, data.data() + off, n);
      if (!rings_[q]->Add({{gpa, static_cast<uint32_t>(n), false}})) break;
      off += n;
    }
    if (kick) KickQueue(q);
    return off;
  }

  // Sends one control message on the control transmitq.
  void SendControl(uint32_t id, uint16_t event, uint16_t value) {
    ReapTx(console::kControlTxQueue);
    const console::Control c{id, event, value};
    const uint64_t gpa = mem_.Alloc(sizeof c);
    mem_.Write(gpa, &c, sizeof c);
    rings_[console::kControlTxQueue]->Add({{gpa, sizeof c, false}});
    KickQueue(console::kControlTxQueue);
  }
  // Sends raw bytes as a control message (malformed-message tests).
  void SendControlRaw(absl::Span<const Buffer> buffers) {
    ReapTx(console::kControlTxQueue);
    rings_[console::kControlTxQueue]->Add(buffers);
    KickQueue(console::kControlTxQueue);
  }

  // Reaps the control receiveq (refilling it) and parses the messages.
  std::vector<ControlMsg> ReapControl() {
    std::vector<ControlMsg> msgs;
    const uint16_t q = console::kControlRxQueue;
    bool readded = false;
    while (std::optional<UsedBuffer> u = rings_[q]->Reap()) {
      auto it = bufs_[q].find(u->id);
      if (it == bufs_[q].end()) continue;
      const auto [gpa, len] = it->second;
      bufs_[q].erase(it);
      EXPECT_GE(u->len, sizeof(console::Control));
      if (u->len >= sizeof(console::Control)) {
        console::Control c;
        mem_.Read(gpa, &c, sizeof c);
        ControlMsg m{c.id, c.event, c.value, {}};
        m.extra.resize(u->len - sizeof c);
        mem_.Read(gpa + sizeof c, m.extra.data(), m.extra.size());
        msgs.push_back(m);
      }
      std::optional<uint16_t> id = rings_[q]->Add({{gpa, len, true}});
      if (id) bufs_[q][*id] = {gpa, len};
      readded = true;
    }
    if (readded) KickQueue(q);
    return msgs;
  }

  // --- Linux's virtio_console, multiport ---------------------------------------
  // virtcons_probe(): fill the control receiveq, DEVICE_READY(BAD_ID, 1),
  // then handle_control_message() for everything that arrives:
  //   DEVICE_ADD   -> add_port(): fill the port's receiveq, PORT_READY(1)
  //   CONSOLE_PORT -> init_port_console(): PORT_OPEN(1)
  //   PORT_NAME    -> remember the name (without the trailing NUL)
  //   PORT_OPEN    -> host_connected = value
  //   RESIZE       -> console size (cols, rows)
  // Returns every message the device sent, in order.
  std::vector<ControlMsg> LinuxProbe(uint32_t rx_buffers_per_port = 4,
                                     uint32_t rx_len = 256) {
    AddRx(console::kControlRxQueue, 8, 4096);
    SendControl(console::kBadId, console::kEventDeviceReady, 1);
    std::vector<ControlMsg> all;
    for (int round = 0; round < 64; ++round) {
      std::vector<ControlMsg> msgs = ReapControl();
      if (msgs.empty()) break;
      for (const ControlMsg& m : msgs) {
        all.push_back(m);
        HandleLinux(m, rx_buffers_per_port, rx_len);
      }
    }
    return all;
  }
  void HandleLinux(const ControlMsg& m, uint32_t rx_buffers, uint32_t rx_len) {
    switch (m.event) {
      case console::kEventDeviceAdd:
        ports_.insert(m.id);
        AddRx(console::RxQueue(m.id), static_cast<int>(rx_buffers), rx_len);
        SendControl(m.id, console::kEventPortReady, 1);
        break;
      case console::kEventConsolePort:
        console_port = m.id;
        SendControl(m.id, console::kEventPortOpen, 1);
        break;
      case console::kEventPortName:
        names[m.id] = std::string(m.extra.c_str());
        break;
      case console::kEventPortOpen:
        host_connected[m.id] = m.value != 0;
        break;
      case console::kEventResize:
        if (m.extra.size() >= sizeof(console::Resize)) {
          // Decoded as Linux does: rows first, then cols (the device's
          // default, resize_rows_first).
          struct {
            uint16_t rows;
            uint16_t cols;
          } linux_order;
          std::memcpy(&linux_order, m.extra.data(), sizeof linux_order);
          size = ConsoleSize{linux_order.cols, linux_order.rows};
        }
        break;
      default:
        break;
    }
  }
  // Handles whatever arrived since (as the control work queue would).
  std::vector<ControlMsg> PollControl() {
    std::vector<ControlMsg> msgs = ReapControl();
    for (const ControlMsg& m : msgs) HandleLinux(m, 4, 256);
    return msgs;
  }

  std::optional<uint32_t> console_port;
  std::map<uint32_t, std::string> names;
  std::map<uint32_t, bool> host_connected;
  std::optional<ConsoleSize> size;

 private:
  TestGuestMemory& mem_;
  std::vector<std::unique_ptr<Driver>> rings_;
  std::vector<std::map<uint16_t, std::pair<uint64_t, uint32_t>>> bufs_;
  std::set<uint32_t> ports_;
  Kick kick_ = [](uint16_t) {};
};

// Brings `dev` up directly through DeviceCore (no transport) with split
// rings, every queue set up from `guest`, kicks wired to Notify.
template <typename Dev, typename Guest>
void BringUpDirect(Dev& dev, Guest& guest, uint64_t device_features) {
  dev.SetStatus(0);
  dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
  ASSERT_TRUE(dev.SetDriverFeatures(spec::Bit(spec::kFeatureVersion1) |
                                    (device_features & dev.device_features())));
  dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                spec::kStatusFeaturesOk);
  ASSERT_TRUE(dev.status() & spec::kStatusFeaturesOk);
  for (uint16_t q = 0; q < guest.num_queues(); ++q) {
    QueueConfig* cfg = dev.queue_config(q);
    ASSERT_NE(cfg, nullptr);
    const QueueConfig want = guest.config(q);
    cfg->size = want.size;
    cfg->desc_addr = want.desc_addr;
    cfg->driver_addr = want.driver_addr;
    cfg->device_addr = want.device_addr;
    ASSERT_TRUE(dev.EnableQueue(q));
  }
  guest.set_kick([&dev](uint16_t q) { dev.Notify(q); });
  dev.SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  ASSERT_FALSE(dev.needs_reset());
}

}  // namespace virtio::testing

#endif  // VIRTIO_TESTS_CONSOLE_TEST_UTIL_H_
