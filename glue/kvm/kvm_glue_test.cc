// Unit tests for the KVM glue's host-only parts (no /dev/kvm needed):
// --device parsing, placement, the PCI host bridge, and the guest driver's
// register constants against the library's.
#include <gtest/gtest.h>

#include "boot_info.h"
#include "device_spec.h"
#include "guest/virtio_regs.h"
#include "pci_bus.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_transport.h"

namespace kvmglue {
namespace {

// The freestanding guest repeats the transports' register offsets; they must
// match the library's exactly.
#define SAME(ns, name) \
  static_assert(guest::ns::name == virtio::ns::name, #ns "::" #name)
SAME(mmio, kMagicValue);
SAME(mmio, kVersion);
SAME(mmio, kDeviceId);
SAME(mmio, kVendorId);
SAME(mmio, kDeviceFeatures);
SAME(mmio, kDeviceFeaturesSel);
SAME(mmio, kDriverFeatures);
SAME(mmio, kDriverFeaturesSel);
SAME(mmio, kQueueSel);
SAME(mmio, kQueueNumMax);
SAME(mmio, kQueueNum);
SAME(mmio, kQueueReady);
SAME(mmio, kQueueNotify);
SAME(mmio, kInterruptStatus);
SAME(mmio, kInterruptAck);
SAME(mmio, kStatus);
SAME(mmio, kQueueDescLow);
SAME(mmio, kQueueDescHigh);
SAME(mmio, kQueueDriverLow);
SAME(mmio, kQueueDriverHigh);
SAME(mmio, kQueueDeviceLow);
SAME(mmio, kQueueDeviceHigh);
SAME(mmio, kConfigGeneration);
SAME(mmio, kConfig);
SAME(mmio, kMagic);
SAME(mmio, kVersion2);
SAME(pci, kVendorId);
SAME(pci, kDeviceIdBase);
SAME(pci, kCfgVendorId);
SAME(pci, kCfgDeviceId);
SAME(pci, kCfgCommand);
SAME(pci, kCfgStatus);
SAME(pci, kCfgBar0);
SAME(pci, kCfgBar1);
SAME(pci, kCfgCapabilityPointer);
SAME(pci, kCfgInterruptLine);
SAME(pci, kCommandMemorySpace);
SAME(pci, kCommandBusMaster);
SAME(pci, kCommandIntxDisable);
SAME(pci, kStatusCapabilityList);
SAME(pci, kCapIdVendor);
SAME(pci, kCapIdMsix);
SAME(pci, kCapCommonCfg);
SAME(pci, kCapNotifyCfg);
SAME(pci, kCapIsrCfg);
SAME(pci, kCapDeviceCfg);
SAME(pci, kCapNext);
SAME(pci, kCapCfgType);
SAME(pci, kCapBar);
SAME(pci, kCapOffset);
SAME(pci, kCapNotifyMultiplier);
SAME(pci, kMsixControl);
SAME(pci, kMsixTable);
SAME(pci, kMsixControlEnable);
SAME(pci, kMsixControlFunctionMask);
SAME(pci, kMsixControlTableSizeMask);
SAME(pci, kMsixEntrySize);
SAME(pci, kMsixEntryMaskBit);
SAME(pci, kNoVector);
SAME(pci, kIsrQueue);
SAME(pci, kIsrConfig);
SAME(pci, kCommonDeviceFeatureSelect);
SAME(pci, kCommonDeviceFeature);
SAME(pci, kCommonDriverFeatureSelect);
SAME(pci, kCommonDriverFeature);
SAME(pci, kCommonConfigMsixVector);
SAME(pci, kCommonNumQueues);
SAME(pci, kCommonDeviceStatus);
SAME(pci, kCommonConfigGeneration);
SAME(pci, kCommonQueueSelect);
SAME(pci, kCommonQueueSize);
SAME(pci, kCommonQueueMsixVector);
SAME(pci, kCommonQueueEnable);
SAME(pci, kCommonQueueNotifyOff);
SAME(pci, kCommonQueueDesc);
SAME(pci, kCommonQueueDriver);
SAME(pci, kCommonQueueDevice);
#undef SAME
static_assert(PciBus::kAddressPort == kPciConfigAddressPort);
static_assert(PciBus::kDataPort == kPciConfigDataPort);

TEST(DeviceSpec, ParsesRngAndBlk) {
  absl::StatusOr<DeviceSpec> rng = ParseDeviceSpec("rng");
  ASSERT_TRUE(rng.ok()) << rng.status();
  EXPECT_EQ(rng->type, "rng");
  EXPECT_FALSE(rng->transport.has_value());

  absl::StatusOr<DeviceSpec> blk =
      ParseDeviceSpec("blk,id=disk0,path=/tmp/x.img,readonly=on,irq=7");
  ASSERT_TRUE(blk.ok()) << blk.status();
  EXPECT_EQ(blk->id, "disk0");
  EXPECT_EQ(blk->device.blk.path, "/tmp/x.img");
  EXPECT_TRUE(blk->device.blk.readonly);
  EXPECT_EQ(blk->irq, 7u);
}

TEST(DeviceSpec, ParsesNetAndConsole) {
  absl::StatusOr<DeviceSpec> net = ParseDeviceSpec("net");
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ(net->device.net.backend,
            virtio::catalog::NetBackendKind::kLoopback);
  net = ParseDeviceSpec("net,backend=tap,ifname=vm0,transport=pci");
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ(net->device.net.backend, virtio::catalog::NetBackendKind::kTap);
  EXPECT_EQ(net->device.net.ifname, "vm0");

  absl::StatusOr<DeviceSpec> con = ParseDeviceSpec("console");
  ASSERT_TRUE(con.ok()) << con.status();
  EXPECT_EQ(con->device.console.backend,
            virtio::catalog::ConsoleBackendKind::kStdio);
  con = ParseDeviceSpec("console,backend=pty");
  ASSERT_TRUE(con.ok()) << con.status();
  EXPECT_EQ(con->device.console.backend,
            virtio::catalog::ConsoleBackendKind::kPty);
  con = ParseDeviceSpec("console,backend=socket=/tmp/c.sock,id=con0");
  ASSERT_TRUE(con.ok()) << con.status();
  EXPECT_EQ(con->device.console.backend,
            virtio::catalog::ConsoleBackendKind::kSocket);
  EXPECT_EQ(con->device.console.path, "/tmp/c.sock");
  EXPECT_EQ(con->id, "con0");
  con = ParseDeviceSpec("console,file=/tmp/out.txt");
  ASSERT_TRUE(con.ok()) << con.status();
  EXPECT_EQ(con->device.console.backend,
            virtio::catalog::ConsoleBackendKind::kFile);
  EXPECT_EQ(con->device.console.path, "/tmp/out.txt");

  absl::StatusOr<DeviceSpec> blk = ParseDeviceSpec("blk,path=x.img,queues=4");
  ASSERT_TRUE(blk.ok()) << blk.status();
  EXPECT_EQ(blk->device.blk.num_queues, 4);

  // --print-placement round-trips the backend.
  std::vector<DeviceSpec> specs = {
      *ParseDeviceSpec("console,backend=file=/tmp/o")};
  absl::StatusOr<std::vector<Placement>> p =
      ResolvePlacement(specs, {.ram_size = 32u << 20});
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string line = FormatPlacement((*p)[0], specs[0]);
  EXPECT_NE(line.find("console,id=console0,backend=file=/tmp/o,"),
            std::string::npos)
      << line;
  EXPECT_TRUE(ParseDeviceSpec(line.substr(sizeof("--device ") - 1)).ok())
      << line;
}

TEST(DeviceSpec, AddressSelectsTransport) {
  absl::StatusOr<DeviceSpec> m = ParseDeviceSpec("rng,addr=0xd0002000");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->transport, TransportKind::kMmio);
  EXPECT_EQ(m->mmio_addr, 0xd0002000u);

  absl::StatusOr<DeviceSpec> p = ParseDeviceSpec("rng,addr=00:03.0");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->transport, TransportKind::kPci);
  EXPECT_EQ(p->pci_addr->slot, 3);
}

TEST(DeviceSpec, RejectsBadInput) {
  for (const char* bad : {"gpu",
                          "rng,bogus=1",
                          "rng,irq=2",
                          "rng,irq=24",
                          "blk",
                          "blk,path=x,readonly=maybe",
                          "rng,transport=ccw",
                          "rng,addr=00:00.0",
                          "rng,addr=01:02.0",
                          "rng,addr=00:02.1",
                          "rng,transport=mmio,addr=00:02.0",
                          "rng,noequals",
                          "rng,addr=0xzz",
                          "net,backend=vde",
                          "net,path=x",
                          "console,backend=tty",
                          "console,socket=",
                          "rng,queues=2",
                          "blk,path=x,queues=0",
                          "blk,path=x,queues=17",
                          "console,ifname=x"}) {
    EXPECT_FALSE(ParseDeviceSpec(bad).ok()) << bad;
  }
}

std::vector<DeviceSpec> Specs(std::initializer_list<const char*> args) {
  std::vector<DeviceSpec> out;
  for (const char* a : args) {
    absl::StatusOr<DeviceSpec> s = ParseDeviceSpec(a);
    EXPECT_TRUE(s.ok()) << a << ": " << s.status();
    if (s.ok()) out.push_back(*s);
  }
  return out;
}

TEST(Placement, AutomaticAvoidsPinned) {
  std::vector<DeviceSpec> specs =
      Specs({"rng", "rng,addr=0xd0000000,irq=5", "blk,path=x,transport=pci",
             "blk,path=y,addr=00:01.0"});
  absl::StatusOr<std::vector<Placement>> p =
      ResolvePlacement(specs, {.ram_size = 32 << 20});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 4u);
  EXPECT_EQ((*p)[0].id, "rng0");
  EXPECT_EQ((*p)[0].mmio_addr, 0xd0001000u);  // 0xd0000000 is pinned
  EXPECT_EQ((*p)[0].irq, 6u);                 // 5 is pinned
  EXPECT_EQ((*p)[1].id, "rng1");
  EXPECT_EQ((*p)[1].mmio_addr, 0xd0000000u);
  EXPECT_EQ((*p)[2].transport, TransportKind::kPci);
  EXPECT_EQ((*p)[2].pci.slot, 2);  // slot 1 is pinned
  EXPECT_EQ((*p)[3].pci.slot, 1);
  // Automatic lines: 6, 7, then 9 — 8 is the RTC's.
  EXPECT_EQ((*p)[2].irq, 7u);
  EXPECT_EQ((*p)[3].irq, 9u);

  ASSERT_TRUE(PlaceBars(*p, {0, 0, 0x8000, 0x10000}).ok());
  EXPECT_EQ((*p)[2].bar_addr, kPciWindowBase);
  EXPECT_EQ((*p)[3].bar_addr, kPciWindowBase + 0x10000);  // aligned up
  EXPECT_NE(FormatPlacement((*p)[3], specs[3]).find("addr=00:01.0"),
            std::string::npos);
}

TEST(Placement, RejectsConflicts) {
  {
    std::vector<DeviceSpec> s = Specs({"rng,irq=9", "rng,irq=9"});
    EXPECT_FALSE(ResolvePlacement(s, {.ram_size = 1 << 20}).ok());
  }
  {
    std::vector<DeviceSpec> s =
        Specs({"rng,addr=0xd0000000", "rng,addr=0xd0000100"});
    EXPECT_FALSE(ResolvePlacement(s, {.ram_size = 1 << 20}).ok());
  }
  {
    std::vector<DeviceSpec> s = Specs({"rng,id=a", "rng,id=a"});
    EXPECT_FALSE(ResolvePlacement(s, {.ram_size = 1 << 20}).ok());
  }
  {
    std::vector<DeviceSpec> s = Specs({"rng,addr=0x1000"});  // inside RAM
    EXPECT_FALSE(ResolvePlacement(s, {.ram_size = 1 << 20}).ok());
  }
  {
    std::vector<DeviceSpec> s = Specs({"rng,addr=00:04.0", "rng,addr=00:04.0"});
    EXPECT_FALSE(ResolvePlacement(s, {.ram_size = 1 << 20}).ok());
  }
}

TEST(PciBus, ConfigMechanismOne) {
  PciBus bus;
  uint32_t last_write = 0;
  bus.Attach(3, {.read =
                     [](uint32_t off, uint32_t size) {
                       return off == 0 && size == 4 ? 0x10441af4u
                                                    : off * 0x100 + size;
                     },
                 .write =
                     [&](uint32_t off, uint32_t size, uint32_t v) {
                       last_write = off << 16 | size << 8 | (v & 0xff);
                     }});
  auto select = [&](uint32_t slot, uint32_t reg) {
    bus.PortWrite(PciBus::kAddressPort, 4, 0x80000000u | slot << 11 | reg);
  };
  select(0, 0);
  EXPECT_EQ(bus.PortRead(PciBus::kDataPort, 4), 0x00081b36u);  // host bridge
  select(3, 0);
  EXPECT_EQ(bus.PortRead(PciBus::kDataPort, 4), 0x10441af4u);
  select(3, 0x3c);
  EXPECT_EQ(bus.PortRead(PciBus::kDataPort + 2, 2),
            0x3e02u);  // offset 0x3e, 2 bytes
  bus.PortWrite(PciBus::kDataPort + 1, 1, 0x7f);
  EXPECT_EQ(last_write, 0x3d017fu);
  select(4, 0);  // empty slot
  EXPECT_EQ(bus.PortRead(PciBus::kDataPort, 4), 0xffffffffu);
  EXPECT_EQ(bus.PortRead(PciBus::kDataPort + 1, 2), 0xffffu);  // misaligned
  bus.PortWrite(PciBus::kAddressPort, 2, 0);  // wrong width: ignored
  EXPECT_EQ(bus.address() & 0x80000000u, 0x80000000u);
  bus.PortWrite(PciBus::kAddressPort, 4, 3u << 11);  // enable bit clear
  EXPECT_EQ(bus.PortRead(PciBus::kDataPort, 4), 0xffffffffu);
}

TEST(BootInfo, BlkPatternIsNotTrivial) {
  EXPECT_NE(BlkPattern(8, 0), BlkPattern(9, 0));
  EXPECT_NE(BlkPattern(8, 0), BlkPattern(8, 1));
  EXPECT_NE(BlkPattern(8, 0), 0xaa);
}

}  // namespace
}  // namespace kvmglue
