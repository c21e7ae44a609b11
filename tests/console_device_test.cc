// virtio-console: bytes in both directions on a single port (hvc0) and on
// multiport devices brought up the way Linux's virtio_console does it, port
// open/close from both sides, pacing against a slow backend (nothing lost,
// one chain in flight), resize, emergency write, malformed control messages
// and chains — on both ring layouts. Transports and real backends are in
// console_transport_test.cc and console_backend_test.cc.
#include "virtio/console_device.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "console_test_util.h"
#include "gtest/gtest.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::Buffer;
using testing::ControlMsg;
using testing::MemoryConsoleBackend;
using testing::RecordingInterrupt;
using testing::TestGuestMemory;
using testing::TestTraits;
using Dev = ConsoleDevice<TestTraits, MemoryConsoleBackend>;

constexpr uint64_t kAllConsoleFeatures = spec::Bit(console::kFeatureSize) |
                                         spec::Bit(console::kFeatureMultiport) |
                                         spec::Bit(console::kFeatureEmergWrite);

std::string Pattern(size_t n, int seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return s;
}

template <typename Layout>
class ConsoleDeviceTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;
  using Guest = testing::GuestConsole<typename Layout::Driver>;

  // Creates the device with `ports` backends and brings it up with
  // `wanted` device features (intersected with the offer).
  void Start(uint32_t ports, ConsoleOptions options = {},
             uint64_t wanted = kAllConsoleFeatures) {
    for (uint32_t i = 0; i < ports; ++i) {
      backends_.push_back(std::make_unique<MemoryConsoleBackend>());
    }
    std::vector<MemoryConsoleBackend*> ptrs;
    for (auto& b : backends_) ptrs.push_back(b.get());
    auto dev = Dev::Create(mem_.map(), irq_, ptrs, options);
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
    BringUp(wanted);
  }

  void BringUp(uint64_t wanted) {
    dev_->SetStatus(0);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    const uint64_t f = spec::Bit(spec::kFeatureVersion1) |
                       spec::Bit(spec::kFeatureEventIdx) |
                       spec::Bit(spec::kFeatureIndirectDesc) |
                       (kPacked ? spec::Bit(spec::kFeatureRingPacked) : 0) |
                       (wanted & dev_->device_features());
    ASSERT_TRUE(dev_->SetDriverFeatures(f));
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk);
    ASSERT_TRUE(dev_->status() & spec::kStatusFeaturesOk);
    const bool mp = f & spec::Bit(console::kFeatureMultiport);
    const uint16_t nq = mp ? dev_->num_queues() : 2;
    guest_.emplace(mem_, nq, 64,
                   testing::DriverOptions{.event_idx = true, .indirect = true});
    for (uint16_t q = 0; q < nq; ++q) {
      QueueConfig* cfg = dev_->queue_config(q);
      ASSERT_NE(cfg, nullptr);
      const QueueConfig want = guest_->config(q);
      cfg->size = want.size;
      cfg->desc_addr = want.desc_addr;
      cfg->driver_addr = want.driver_addr;
      cfg->device_addr = want.device_addr;
      ASSERT_TRUE(dev_->EnableQueue(q));
    }
    guest_->set_kick([this](uint16_t q) { dev_->Notify(q); });
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    ASSERT_FALSE(dev_->needs_reset());
  }

  void ExpectHealthy() {
    EXPECT_FALSE(dev_->needs_reset());
    for (uint16_t q = 0; q < guest_->num_queues(); ++q) {
      EXPECT_EQ(guest_->ring(q).device_error(), "") << "queue " << q;
    }
  }

  MemoryConsoleBackend& backend(uint32_t i) { return *backends_[i]; }
  // Runs a full Linux multiport probe and returns what the device sent.
  std::vector<ControlMsg> Probe() { return guest_->LinuxProbe(); }

  TestGuestMemory mem_;
  RecordingInterrupt irq_;
  std::vector<std::unique_ptr<MemoryConsoleBackend>> backends_;
  std::unique_ptr<Dev> dev_;
  std::optional<Guest> guest_;
};

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
class LayoutNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};
TYPED_TEST_SUITE(ConsoleDeviceTest, Layouts, LayoutNames);

TEST(ConsoleDeviceCreate, RejectsBadOptions) {
  TestGuestMemory mem;
  RecordingInterrupt irq;
  MemoryConsoleBackend a, b;
  std::vector<MemoryConsoleBackend*> two = {&a, &b};
  EXPECT_FALSE(Dev::Create(mem.map(), irq, {}, {}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, two, {}).ok()) << "2 ports need multiport";
  EXPECT_FALSE(Dev::Create(mem.map(), irq, two, {.multiport = true, .console_port = 2}).ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, two,
                           {.multiport = true, .port_names = {"a", "b", "c"}})
                   .ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, two,
                           {.multiport = true, .port_names = {std::string(256, 'x')}})
                   .ok());
  EXPECT_FALSE(Dev::Create(mem.map(), irq, two, {.multiport = true, .queue_size = 100}).ok());
  std::vector<MemoryConsoleBackend*> null = {nullptr};
  EXPECT_FALSE(Dev::Create(mem.map(), irq, null, {}).ok());
  EXPECT_TRUE(Dev::Create(mem.map(), irq, two, {.multiport = true}).ok());
}

TYPED_TEST(ConsoleDeviceTest, IdentityFeaturesAndConfig) {
  this->Start(3, {.multiport = true, .size = {80, 25}});
  Dev& dev = *this->dev_;
  EXPECT_EQ(dev.device_id(), 3u);
  EXPECT_EQ(dev.num_queues(), 8);  // rx0 tx0 crx ctx rx1 tx1 rx2 tx2
  EXPECT_EQ(dev.device_features() & kAllConsoleFeatures, kAllConsoleFeatures);
  EXPECT_EQ(dev.config_size(), 12u);
  console::Config c;
  ASSERT_TRUE(dev.ReadConfig(0, &c, sizeof c));
  EXPECT_EQ(c.cols, 80);
  EXPECT_EQ(c.rows, 25);
  EXPECT_EQ(c.max_nr_ports, 3u);
  EXPECT_EQ(c.emerg_wr, 0u);
  // Read-only fields ignore writes.
  const uint16_t big = 999;
  EXPECT_TRUE(dev.WriteConfig(0, &big, 2));
  ASSERT_TRUE(dev.ReadConfig(0, &c, sizeof c));
  EXPECT_EQ(c.cols, 80);
  EXPECT_FALSE(dev.ReadConfig(10, &c, 4));  // beyond the 12 bytes
}

TYPED_TEST(ConsoleDeviceTest, SinglePortOffersNoMultiport) {
  this->Start(1);
  EXPECT_EQ(this->dev_->num_queues(), 2);
  EXPECT_FALSE(this->dev_->device_features() & spec::Bit(console::kFeatureMultiport));
  EXPECT_FALSE(this->dev_->multiport_negotiated());
  EXPECT_TRUE(this->dev_->guest_open(0)) << "port 0 is open without MULTIPORT";
}

TYPED_TEST(ConsoleDeviceTest, SinglePortBytesBothWays) {
  this->Start(1);
  auto& g = *this->guest_;
  auto& be = this->backend(0);
  // Guest → host, in several chains.
  const std::string out = Pattern(10000);
  EXPECT_EQ(g.Transmit(1, out, 3000), out.size());
  EXPECT_EQ(be.output, out);
  EXPECT_EQ(g.ReapTx(1), 4);
  // Host → guest: input before any receive buffer waits in the backend.
  be.input = "hello, guest";
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(be.input, "hello, guest");
  g.AddRx(0, 4, 5);  // the kick delivers it, 5 bytes per buffer
  EXPECT_EQ(g.Receive(0), "hello, guest");
  EXPECT_TRUE(be.input.empty());
  // More input later: the device holds a buffer, asks to poll for input.
  this->dev_->BackendPoll(0);
  EXPECT_TRUE(be.last_want_input);
  EXPECT_FALSE(be.last_want_output);
  be.input = "more";
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(g.Receive(0), "more");
  EXPECT_EQ(this->dev_->stats().rx_bytes, 16u);
  EXPECT_EQ(this->dev_->stats().tx_bytes, 10000u);
  EXPECT_GE(this->irq_.queue_signals(0), 1u);
  EXPECT_GE(this->irq_.queue_signals(1), 1u);
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, WakeupFdSignalsInterestChanges) {
  this->Start(1);
  uint64_t v;
  while (read(this->dev_->wakeup_fd(), &v, sizeof v) > 0) {
  }
  this->guest_->AddRx(0, 1, 16);  // a receive buffer is now waiting for input
  EXPECT_EQ(read(this->dev_->wakeup_fd(), &v, sizeof v), 8);
}

// A guest that writes faster than the backend drains: the backend takes 100
// bytes at a time; every byte arrives, in order, and the device never holds
// more than one chain.
TYPED_TEST(ConsoleDeviceTest, PacingLosesNothingAndBoundsInFlight) {
  this->Start(1);
  auto& g = *this->guest_;
  auto& be = this->backend(0);
  be.capacity = 100;
  const std::string out = Pattern(64 * 40, 3);  // 40 chains of 64 bytes
  ASSERT_EQ(g.Transmit(1, out, 64), out.size());
  EXPECT_EQ(be.output, out.substr(0, 100));
  EXPECT_TRUE(this->dev_->tx_paced(0));
  EXPECT_EQ(g.ReapTx(1), 1) << "only the fully written chain is returned";
  this->dev_->BackendPoll(0);
  EXPECT_TRUE(be.last_want_output);
  int completed = 1, rounds = 0;
  while (be.output.size() < out.size() && rounds++ < 100) {
    this->dev_->WithQueue(1, [](uint16_t, auto& ring) {
      EXPECT_LE(ring.in_flight(), 1u);
    });
    // The guest keeps kicking: nothing more is taken while paced.
    g.KickQueue(1);
    this->dev_->Notify(1);
    EXPECT_EQ(be.buffered, be.capacity);
    be.Drain();
    this->dev_->ServiceBackend(0);
    completed += g.ReapTx(1);
    // No chain comes back before all its bytes are written.
    EXPECT_EQ(static_cast<size_t>(completed), be.output.size() / 64);
  }
  EXPECT_EQ(be.output, out);
  EXPECT_EQ(completed, 40);
  EXPECT_FALSE(this->dev_->tx_paced(0));
  this->dev_->BackendPoll(0);
  EXPECT_FALSE(be.last_want_output);
  EXPECT_GT(this->dev_->stats().tx_stalls, 0u);
  // Once drained, the queue works unpaced again.
  be.capacity = SIZE_MAX;
  g.Transmit(1, "tail");
  EXPECT_EQ(be.output, out + "tail");
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, PacedChainSurvivesPartialMultiSegmentWrites) {
  this->Start(1);
  auto& g = *this->guest_;
  auto& be = this->backend(0);
  be.capacity = 7;
  // One chain of three segments, crossing them mid-write.
  const std::string data = Pattern(50, 1);
  const uint64_t a = this->mem_.Alloc(20), b = this->mem_.Alloc(13), c = this->mem_.Alloc(17);
  this->mem_.Write(a, data.data(), 20);
  this->mem_.Write(b, data.data() + 20, 13);
  this->mem_.Write(c, data.data() + 33, 17);
  g.ring(1).Add({Buffer{a, 20, false}, Buffer{b, 13, false}, Buffer{c, 17, false}});
  g.KickQueue(1);
  for (int i = 0; i < 20 && be.output.size() < 50; ++i) {
    be.Drain();
    this->dev_->ServiceBackend(0);
  }
  EXPECT_EQ(be.output, data);
  EXPECT_EQ(g.ReapTx(1), 1);
}

TYPED_TEST(ConsoleDeviceTest, MultiportBringUpLikeLinux) {
  this->Start(3, {.multiport = true,
                  .console_port = 0,
                  .port_names = {"", "org.test.port1"},
                  .size = {132, 43}});
  this->backend(2).is_connected = false;
  auto& g = *this->guest_;
  const std::vector<ControlMsg> msgs = this->Probe();
  using namespace console;
  // Rows first, as Linux reads it (ConsoleOptions::resize_rows_first).
  const std::string resize = [] {
    const uint16_t rows_cols[2] = {43, 132};
    return std::string(reinterpret_cast<const char*>(rows_cols), sizeof rows_cols);
  }();
  const std::vector<ControlMsg> want = {
      {0, kEventDeviceAdd, 1, ""},
      {1, kEventDeviceAdd, 1, ""},
      {2, kEventDeviceAdd, 1, ""},
      {0, kEventConsolePort, 1, ""},
      {0, kEventPortOpen, 1, ""},
      {0, kEventResize, 0, resize},
      {1, kEventPortName, 1, std::string("org.test.port1") + '\0'},
      {1, kEventPortOpen, 1, ""},
      // port 2: backend not connected, so no PORT_OPEN
  };
  EXPECT_EQ(msgs, want);
  EXPECT_EQ(g.console_port, 0u);
  EXPECT_EQ(g.names[1], "org.test.port1");
  EXPECT_TRUE(g.host_connected[1]);
  EXPECT_FALSE(g.host_connected.count(2));
  ASSERT_TRUE(g.size.has_value());
  EXPECT_EQ(*g.size, (ConsoleSize{132, 43}));
  EXPECT_TRUE(this->dev_->multiport_negotiated());
  for (uint32_t p = 0; p < 3; ++p) EXPECT_TRUE(this->dev_->guest_ready(p));
  // Linux opened the console port (init_port_console), nothing else yet.
  EXPECT_TRUE(this->dev_->guest_open(0));
  EXPECT_FALSE(this->dev_->guest_open(1));
  EXPECT_EQ(this->backend(0).guest_open_events, std::vector<bool>{true});
  // Console data flows both ways on port 0.
  g.Transmit(TxQueue(0), "console out");
  EXPECT_EQ(this->backend(0).output, "console out");
  this->backend(0).input = "console in";
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(g.Receive(RxQueue(0)), "console in");
  EXPECT_EQ(this->dev_->stats().bad_control, 0u);
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, MultiportOpenCloseBothSides) {
  this->Start(2, {.multiport = true});
  auto& g = *this->guest_;
  auto& be = this->backend(1);
  this->Probe();
  using namespace console;
  // Guest has not opened port 1: host input waits (Linux would discard it).
  be.input = "early";
  this->dev_->ServiceBackend(1);
  EXPECT_EQ(g.Receive(RxQueue(1)), "");
  EXPECT_EQ(be.input, "early");
  // The guest opens /dev/vport0p1: the waiting input arrives.
  g.SendControl(1, kEventPortOpen, 1);
  EXPECT_TRUE(this->dev_->guest_open(1));
  EXPECT_EQ(g.Receive(RxQueue(1)), "early");
  g.Transmit(TxQueue(1), "to host");
  EXPECT_EQ(be.output, "to host");
  EXPECT_EQ(this->backend(0).output, "") << "ports are separate";
  // The guest closes it: input waits again.
  g.SendControl(1, kEventPortOpen, 0);
  EXPECT_FALSE(this->dev_->guest_open(1));
  be.input = "while closed";
  this->dev_->ServiceBackend(1);
  EXPECT_EQ(g.Receive(RxQueue(1)), "");
  EXPECT_EQ(be.guest_open_events, (std::vector<bool>{true, false}));
  // Host side disconnects and reconnects: PORT_OPEN 0 then 1.
  be.is_connected = false;
  this->dev_->ServiceBackend(1);
  EXPECT_EQ(g.PollControl(), (std::vector<ControlMsg>{{1, kEventPortOpen, 0, ""}}));
  EXPECT_FALSE(g.host_connected[1]);
  this->dev_->ServiceBackend(1);  // no change: no message
  EXPECT_TRUE(g.PollControl().empty());
  be.is_connected = true;
  this->dev_->ServiceBackend(1);
  EXPECT_EQ(g.PollControl(), (std::vector<ControlMsg>{{1, kEventPortOpen, 1, ""}}));
  // Reopened by the guest: the input kept while closed arrives.
  g.SendControl(1, kEventPortOpen, 1);
  EXPECT_EQ(g.Receive(RxQueue(1)), "while closed");
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, MultiportNotNegotiatedFallsBackToOnePort) {
  this->Start(2, {.multiport = true}, spec::Bit(console::kFeatureSize));
  EXPECT_FALSE(this->dev_->multiport_negotiated());
  EXPECT_TRUE(this->dev_->guest_open(0));
  this->guest_->Transmit(1, "single");
  EXPECT_EQ(this->backend(0).output, "single");
  this->dev_->Notify(console::kControlTxQueue);  // not enabled: ignored
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, ResizeSinglePortSignalsConfigChange) {
  this->Start(1, {.size = {80, 24}});
  const uint64_t signals = this->irq_.config_signals();
  const uint32_t gen = this->dev_->config_generation();
  this->dev_->Resize(100, 30);
  EXPECT_EQ(this->irq_.config_signals(), signals + 1);
  EXPECT_NE(this->dev_->config_generation(), gen);
  console::Config c;
  ASSERT_TRUE(this->dev_->ReadConfig(0, &c, sizeof c));
  EXPECT_EQ(c.cols, 100);
  EXPECT_EQ(c.rows, 30);
  this->dev_->Resize(100, 30);  // unchanged: no interrupt
  EXPECT_EQ(this->irq_.config_signals(), signals + 1);
  // A backend that knows its terminal size is followed on service.
  this->backend(0).term_size = ConsoleSize{200, 50};
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(this->dev_->size(), (ConsoleSize{200, 50}));
  EXPECT_EQ(this->irq_.config_signals(), signals + 2);
}

TYPED_TEST(ConsoleDeviceTest, ResizeMultiportSendsResizeToConsolePort) {
  this->Start(2, {.multiport = true, .console_port = 1});
  auto& g = *this->guest_;
  this->Probe();
  EXPECT_EQ(g.console_port, 1u);
  EXPECT_FALSE(g.size.has_value()) << "no size known yet";
  this->dev_->Resize(120, 40);
  const std::vector<ControlMsg> msgs = g.PollControl();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].id, 1u);
  EXPECT_EQ(msgs[0].event, console::kEventResize);
  ASSERT_TRUE(g.size.has_value());
  EXPECT_EQ(*g.size, (ConsoleSize{120, 40}));
  console::Config c;
  ASSERT_TRUE(this->dev_->ReadConfig(0, &c, 4));
  EXPECT_EQ(c.cols, 120);
}

TYPED_TEST(ConsoleDeviceTest, EmergencyWrite) {
  this->Start(1);
  auto& be = this->backend(0);
  const uint32_t word = 'E' | 0xabcd00;  // only the low byte counts
  EXPECT_TRUE(this->dev_->WriteConfig(8, &word, 4));
  const uint8_t byte = '!';
  EXPECT_TRUE(this->dev_->WriteConfig(8, &byte, 1));
  EXPECT_EQ(be.output, "E!");
  // Writes not starting at emerg_wr are ignored.
  EXPECT_TRUE(this->dev_->WriteConfig(9, &byte, 1));
  EXPECT_EQ(be.output, "E!");
  // A full backend: the byte waits, then goes out ahead of queued data.
  be.capacity = be.buffered = 2;
  const uint8_t late = 'L';
  this->dev_->WriteConfig(8, &late, 1);
  EXPECT_EQ(be.output, "E!");
  this->dev_->BackendPoll(0);
  EXPECT_TRUE(be.last_want_output);
  be.capacity = SIZE_MAX;
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(be.output, "E!L");
  EXPECT_EQ(this->dev_->stats().emerg_bytes, 3u);
  this->ExpectHealthy();
}

TEST(ConsoleEmergency, WorksBeforeNegotiationAndIsBounded) {
  TestGuestMemory mem;
  RecordingInterrupt irq;
  MemoryConsoleBackend be;
  std::vector<MemoryConsoleBackend*> ports = {&be};
  auto dev = Dev::Create(mem.map(), irq, ports, {.emerg_buffer = 4});
  ASSERT_TRUE(dev.ok());
  const uint8_t c = 'x';
  (*dev)->WriteConfig(8, &c, 1);  // status 0: no driver at all yet
  EXPECT_EQ(be.output, "x");
  be.capacity = 1;
  for (int i = 0; i < 10; ++i) (*dev)->WriteConfig(8, &c, 1);
  EXPECT_EQ((*dev)->stats().emerg_dropped, 6u) << "4 buffered, 6 counted as dropped";
  be.capacity = SIZE_MAX;
  (*dev)->ServiceBackend(0);
  EXPECT_EQ(be.output, "xxxxx");
}

TYPED_TEST(ConsoleDeviceTest, MalformedControlMessagesAreIgnored) {
  this->Start(2, {.multiport = true});
  auto& g = *this->guest_;
  auto& mem = this->mem_;
  using namespace console;
  // Before DEVICE_READY, port events are ignored.
  g.SendControl(1, kEventPortOpen, 1);
  EXPECT_FALSE(this->dev_->guest_open(1));
  this->Probe();
  const uint64_t before = this->dev_->stats().bad_control;
  // Short: 4 bytes, and a zero-length chain.
  const uint64_t s = mem.Alloc(4);
  g.SendControlRaw({Buffer{s, 4, false}});
  g.SendControlRaw({Buffer{s, 0, false}});
  // Header split over two buffers is fine (framing is free).
  const Control split{1, kEventPortOpen, 1};
  const uint64_t h = mem.Alloc(8);
  mem.Write(h, &split, 8);
  g.SendControlRaw({Buffer{h, 3, false}, Buffer{h + 3, 5, false}});
  EXPECT_TRUE(this->dev_->guest_open(1));
  // Out-of-range ids, including the DEVICE_READY id on a port event.
  g.SendControl(2, kEventPortOpen, 0);
  g.SendControl(kBadId, kEventPortReady, 1);
  g.SendControl(0x8000'0000u, kEventPortOpen, 0);
  // Unknown and device-only events.
  g.SendControl(0, 8, 1);
  g.SendControl(0, 0xffff, 1);
  g.SendControl(0, kEventResize, 1);
  g.SendControl(0, kEventPortName, 1);
  g.SendControl(0, kEventDeviceAdd, 1);
  g.SendControl(0, kEventConsolePort, 1);
  // Duplicates, and failures reported by the driver.
  g.SendControl(kBadId, kEventDeviceReady, 1);
  g.SendControl(1, kEventPortReady, 1);
  g.SendControl(kBadId, kEventDeviceReady, 0);
  g.SendControl(0, kEventPortReady, 0);
  // A control chain outside guest memory.
  g.SendControlRaw({Buffer{0x7000'0000, 8, false}});
  EXPECT_EQ(this->dev_->stats().bad_control - before, 16u);
  EXPECT_TRUE(g.PollControl().empty()) << "nothing answered";
  EXPECT_TRUE(this->dev_->guest_open(1)) << "bad-id close did not apply";
  // Still working.
  g.Transmit(TxQueue(1), "still");
  EXPECT_EQ(this->backend(1).output, "still");
  this->backend(1).input = "alive";
  this->dev_->ServiceBackend(1);
  EXPECT_EQ(g.Receive(RxQueue(1)), "alive");
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, MalformedDataChainsFailOnlyThemselves) {
  this->Start(1);
  auto& g = *this->guest_;
  auto& be = this->backend(0);
  // Transmit: outside guest memory, then a good one.
  g.ring(1).Add({Buffer{0x7000'0000, 16, false}});
  const uint64_t good = this->mem_.Alloc(2);
  this->mem_.Write(good, "ok", 2);
  g.ring(1).Add({Buffer{good, 2, false}});
  g.KickQueue(1);
  EXPECT_EQ(be.output, "ok");
  EXPECT_EQ(g.ReapTx(1), 2);
  // Receive: a readable-only buffer and one outside memory are returned
  // empty; input goes to the next good buffer.
  g.ring(0).Add({Buffer{this->mem_.Alloc(8), 8, false}});
  g.ring(0).Add({Buffer{0x7000'0000, 8, true}});
  g.KickQueue(0);
  int returned = 0;
  while (auto u = g.ring(0).Reap()) {
    EXPECT_EQ(u->len, 0u);
    ++returned;
  }
  EXPECT_EQ(returned, 2);
  g.AddRx(0, 1, 8);
  be.input = "data";
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(g.Receive(0), "data");
  EXPECT_EQ(this->dev_->stats().bad_chains, 3u);
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, MalformedRingNeedsReset) {
  this->Start(1);
  auto& ring = this->guest_->ring(1);
  if constexpr (TestFixture::kPacked) {
    // A chain of NEXT descriptors that never ends.
    const uint64_t b = this->mem_.Alloc(8);
    std::vector<spec::PackedDesc> endless(
        ring.size(), spec::PackedDesc{b, 8, 0, spec::kDescFlagNext});
    ring.PlaceRaw(endless);
  } else {
    ring.SetAvailIdx(1000);  // far beyond the ring size
  }
  this->dev_->Notify(1);
  EXPECT_TRUE(this->dev_->needs_reset());
  // Host-side calls on a broken device do nothing harmful.
  this->backend(0).input = "x";
  this->dev_->ServiceBackend(0);
  this->dev_->Resize(1, 1);
}

TYPED_TEST(ConsoleDeviceTest, ControlQueueToGuestIsBounded) {
  this->Start(2, {.multiport = true});
  auto& g = *this->guest_;
  this->Probe();
  // The guest stops posting control buffers: fill what it posted.
  for (int i = 0; i < 8; ++i) {
    this->dev_->Resize(static_cast<uint16_t>(10 + i), 10);
    this->backend(1).is_connected = !this->backend(1).is_connected;
    this->dev_->ServiceBackend(1);
  }
  // Now nothing can be delivered; many more events coalesce.
  for (int i = 0; i < 1000; ++i) {
    this->dev_->Resize(static_cast<uint16_t>(100 + i % 50), 10);
    this->backend(1).is_connected = !this->backend(1).is_connected;
    this->dev_->ServiceBackend(1);
  }
  EXPECT_LE(this->dev_->pending_control(), 2u);
  EXPECT_EQ(this->dev_->stats().control_dropped, 0u);
  // The guest catches up and sees the final state.
  for (int i = 0; i < 10; ++i) g.PollControl();
  EXPECT_EQ(this->dev_->pending_control(), 0u);
  EXPECT_EQ(*g.size, (ConsoleSize{static_cast<uint16_t>(100 + 999 % 50), 10}));
  EXPECT_EQ(g.host_connected[1], this->backend(1).is_connected);
}

// vhost-user stops a ring (GET_VRING_BASE, a memory table change) while the
// device holds chains: they come back unused, and the resumed ring works.
TYPED_TEST(ConsoleDeviceTest, DisablingQueuesReturnsHeldChainsAndResumes) {
  this->Start(1);
  auto& g = *this->guest_;
  auto& be = this->backend(0);
  be.capacity = 10;
  g.Transmit(1, Pattern(100));
  ASSERT_TRUE(this->dev_->tx_paced(0));
  g.AddRx(0, 1, 16);  // held, waiting for input
  auto tx_state = this->dev_->DisableQueue(1);
  auto rx_state = this->dev_->DisableQueue(0);
  ASSERT_TRUE(tx_state.has_value());
  ASSERT_TRUE(rx_state.has_value());
  EXPECT_FALSE(this->dev_->tx_paced(0));
  EXPECT_EQ(g.ReapTx(1), 1);
  EXPECT_EQ(g.Receive(0), "");
  ASSERT_TRUE(this->dev_->EnableQueue(0, *rx_state));
  ASSERT_TRUE(this->dev_->EnableQueue(1, *tx_state));
  be.capacity = SIZE_MAX;
  be.output.clear();
  be.Drain();
  be.output.clear();
  g.Transmit(1, "again");
  EXPECT_EQ(be.output, "again");
  be.input = "hi";
  g.AddRx(0, 1, 16);
  this->dev_->ServiceBackend(0);
  EXPECT_EQ(g.Receive(0), "hi");
  this->ExpectHealthy();
}

TYPED_TEST(ConsoleDeviceTest, ResetWhilePacedThenWorksAgain) {
  this->Start(2, {.multiport = true});
  this->Probe();
  auto& be = this->backend(0);
  be.capacity = 10;
  this->guest_->Transmit(console::TxQueue(0), Pattern(100));
  EXPECT_TRUE(this->dev_->tx_paced(0));
  this->dev_->SetStatus(0);
  EXPECT_FALSE(this->dev_->tx_paced(0));
  EXPECT_FALSE(this->dev_->guest_open(0));
  EXPECT_EQ(be.guest_open_events, (std::vector<bool>{true, false}));
  be.capacity = SIZE_MAX;
  be.output.clear();
  this->dev_->ServiceBackend(0);  // not live: nothing happens
  EXPECT_EQ(be.output, "");
  this->BringUp(kAllConsoleFeatures);
  this->Probe();
  this->guest_->Transmit(console::TxQueue(0), "again");
  EXPECT_EQ(be.output, "again");
  this->ExpectHealthy();
}

}  // namespace
}  // namespace virtio
