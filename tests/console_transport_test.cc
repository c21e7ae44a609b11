// virtio-console brought up by register-level guest drivers: single-port
// (hvc0) over virtio-mmio and MULTIPORT over virtio-pci (MSI-X), on both
// ring layouts — config reads through the generation loop, bytes both ways,
// emergency write through the config window, resize as a config interrupt
// (mmio) and as a RESIZE message (pci), port open/close.
#include <cstring>
#include <string>
#include <vector>

#include "console_test_util.h"
#include "gtest/gtest.h"
#include "virtio/console_device.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_interrupt.h"
#include "virtio/pci_transport.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/mmio_driver.h"
#include "virtio/testing/pci_driver.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::ControlMsg;
using testing::MemoryConsoleBackend;
using testing::TestGuestMemory;

struct MmioTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = MmioInterrupt<testing::RecordingIrqLine>;
};
struct PciTraits {
  using Memory = GuestMemoryMap;
  using Interrupt = PciInterrupt<testing::MsiRecorder>;
};

uint64_t Wanted(bool packed) {
  return spec::Bit(spec::kFeatureVersion1) | spec::Bit(spec::kFeatureEventIdx) |
         spec::Bit(spec::kFeatureIndirectDesc) |
         (packed ? spec::Bit(spec::kFeatureRingPacked) : 0) |
         spec::Bit(console::kFeatureSize) | spec::Bit(console::kFeatureMultiport) |
         spec::Bit(console::kFeatureEmergWrite);
}

template <typename Layout>
class ConsoleTransportTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Layout, testing::PackedLayout>;
  using Guest = testing::GuestConsole<typename Layout::Driver>;
};
using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
class LayoutNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};
TYPED_TEST_SUITE(ConsoleTransportTest, Layouts, LayoutNames);

TYPED_TEST(ConsoleTransportTest, MmioSinglePortHvc0) {
  TestGuestMemory mem;
  MmioTraits::Interrupt irq;
  MemoryConsoleBackend be;
  std::vector<MemoryConsoleBackend*> ports = {&be};
  using Dev = ConsoleDevice<MmioTraits, MemoryConsoleBackend>;
  auto dev = Dev::Create(mem.map(), irq, ports, {.size = {80, 25}});
  ASSERT_TRUE(dev.ok()) << dev.status();
  MmioTransport<Dev> mmio(**dev);
  testing::MmioDriver driver(mmio);
  ASSERT_TRUE(driver.Probe().ok());
  EXPECT_EQ(driver.device_id(), spec::kDeviceIdConsole);
  ASSERT_TRUE(driver.Reset().ok());
  // Emergency write works before any negotiation (§5.3.5).
  driver.WriteConfig(8, 4, 'e');
  EXPECT_EQ(be.output, "e");
  auto features = driver.Negotiate(Wanted(TestFixture::kPacked));
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_FALSE(*features & spec::Bit(console::kFeatureMultiport)) << "not offered";
  EXPECT_TRUE(*features & spec::Bit(console::kFeatureSize));
  EXPECT_TRUE(*features & spec::Bit(console::kFeatureEmergWrite));
  auto cols = driver.template ReadConfigField<uint16_t>(0);
  auto rows = driver.template ReadConfigField<uint16_t>(2);
  ASSERT_TRUE(cols.ok() && rows.ok());
  EXPECT_EQ(*cols, 80);
  EXPECT_EQ(*rows, 25);
  typename TestFixture::Guest guest(mem, 2, 64, {.event_idx = true, .indirect = true});
  ASSERT_TRUE(driver.SetUpQueue(0, guest.config(0)).ok());
  ASSERT_TRUE(driver.SetUpQueue(1, guest.config(1)).ok());
  ASSERT_TRUE(driver.DriverOk().ok());
  guest.set_kick([&](uint16_t q) { driver.Kick(q); });

  guest.AddRx(0, 8, 64);
  guest.Transmit(1, "Linux version 6.1 ...\n");
  EXPECT_EQ(be.output, "eLinux version 6.1 ...\n");
  be.input = "root\n";
  (*dev)->ServiceBackend(0);
  EXPECT_EQ(guest.Receive(0), "root\n");
  EXPECT_EQ(driver.HandleInterrupt(), kMmioInterruptUsedBuffer);
  // Emergency write with the byte access Linux's virtio_cwrite8 would use.
  driver.WriteConfig(8, 1, '!');
  EXPECT_EQ(be.output.back(), '!');
  // Resize: a configuration change interrupt and new values.
  (*dev)->Resize(120, 50);
  EXPECT_EQ(driver.HandleInterrupt(), kMmioInterruptConfigChange);
  cols = driver.template ReadConfigField<uint16_t>(0);
  rows = driver.template ReadConfigField<uint16_t>(2);
  EXPECT_EQ(*cols, 120);
  EXPECT_EQ(*rows, 50);
  // Paced output over the transport.
  be.capacity = be.buffered + 10;
  const std::string big(500, 'x');
  guest.Transmit(1, big, 100);
  EXPECT_TRUE((*dev)->tx_paced(0));
  for (int i = 0; i < 100 && (*dev)->tx_paced(0); ++i) {
    be.Drain();
    (*dev)->ServiceBackend(0);
  }
  EXPECT_EQ(be.output.substr(be.output.size() - 500), big);
  EXPECT_EQ(guest.ring(0).device_error(), "");
  EXPECT_EQ(guest.ring(1).device_error(), "");
  EXPECT_FALSE((*dev)->needs_reset());
  ASSERT_TRUE(driver.Reset().ok());
  EXPECT_FALSE((*dev)->queue_enabled(0));
}

TYPED_TEST(ConsoleTransportTest, PciMultiport) {
  TestGuestMemory mem;
  testing::MsiRecorder sink;
  constexpr uint32_t kPorts = 3;
  PciTraits::Interrupt irq(sink, console::NumQueues(kPorts, true));
  std::vector<MemoryConsoleBackend> backends(kPorts);
  std::vector<MemoryConsoleBackend*> ports;
  for (auto& b : backends) ports.push_back(&b);
  using Dev = ConsoleDevice<PciTraits, MemoryConsoleBackend>;
  auto dev = Dev::Create(mem.map(), irq, ports,
                         {.multiport = true,
                          .port_names = {"", "org.qemu.guest_agent.0"}});
  ASSERT_TRUE(dev.ok()) << dev.status();
  PciTransport<Dev> pci(**dev);
  testing::PciDriver driver(pci);
  ASSERT_TRUE(driver.Probe()) << driver.error();
  ASSERT_TRUE(driver.Negotiate(Wanted(TestFixture::kPacked))) << driver.error();
  EXPECT_TRUE(driver.features() & spec::Bit(console::kFeatureMultiport));
  EXPECT_EQ(driver.num_queues(), 8);
  uint32_t max_ports = 0;
  ASSERT_TRUE(driver.ReadDeviceConfig(4, &max_ports, 4));
  EXPECT_EQ(max_ports, kPorts);
  typename TestFixture::Guest guest(mem, 8, 64, {.event_idx = true, .indirect = true});
  for (uint16_t q = 0; q < 8; ++q) {
    ASSERT_TRUE(driver.SetUpQueue(q, guest.config(q)) && driver.EnableQueue(q))
        << driver.error();
  }
  ASSERT_TRUE(driver.DriverOk()) << driver.error();
  guest.set_kick([&](uint16_t q) { driver.Kick(q); });

  const std::vector<ControlMsg> msgs = guest.LinuxProbe();
  ASSERT_GE(msgs.size(), 3u);
  for (uint32_t p = 0; p < kPorts; ++p) {
    EXPECT_EQ(msgs[p], (ControlMsg{p, console::kEventDeviceAdd, 1, ""}));
  }
  EXPECT_EQ(guest.console_port, 0u);
  EXPECT_EQ(guest.names[1], "org.qemu.guest_agent.0");
  EXPECT_TRUE(guest.host_connected[2]);
  // Control receiveq interrupts on its own vector (queue 2 -> vector 3).
  EXPECT_GE(sink.Count(testing::MsiAddress(3), testing::MsiData(3)), 1u);

  // The agent opens its port; bytes both ways on port 1 only.
  guest.SendControl(1, console::kEventPortOpen, 1);
  guest.Transmit(console::TxQueue(1), "{\"execute\":\"guest-ping\"}");
  EXPECT_EQ(backends[1].output, "{\"execute\":\"guest-ping\"}");
  EXPECT_EQ(backends[0].output, "");
  backends[1].input = "{\"return\":{}}";
  (*dev)->ServiceBackend(1);
  EXPECT_EQ(guest.Receive(console::RxQueue(1)), "{\"return\":{}}");
  EXPECT_GE(sink.Count(testing::MsiAddress(5), testing::MsiData(5)), 1u);  // rx1 = queue 4
  // Port 2 is not open on the guest side: its input waits.
  backends[2].input = "later";
  (*dev)->ServiceBackend(2);
  EXPECT_EQ(guest.Receive(console::RxQueue(2)), "");
  // Resize goes to the console port as a RESIZE message.
  (*dev)->Resize(200, 60);
  guest.PollControl();
  ASSERT_TRUE(guest.size.has_value());
  EXPECT_EQ(*guest.size, (ConsoleSize{200, 60}));
  // Emergency write through the device config window.
  const uint8_t bang = '!';
  driver.WriteDeviceConfig(8, &bang, 1);
  EXPECT_EQ(backends[0].output, "!");
  // Host side of port 1 goes away.
  backends[1].is_connected = false;
  (*dev)->ServiceBackend(1);
  guest.PollControl();
  EXPECT_FALSE(guest.host_connected[1]);
  for (uint16_t q = 0; q < 8; ++q) {
    EXPECT_EQ(guest.ring(q).device_error(), "") << q;
  }
  EXPECT_FALSE((*dev)->needs_reset());
}

}  // namespace
}  // namespace virtio
