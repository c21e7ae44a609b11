// Command line, placement and claims of xen-virtio-backend.
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "xen_glue/device_spec.h"
#include "xen_glue/placement.h"

namespace virtio::xg {
namespace {

using ::testing::HasSubstr;

TEST(DeviceSpec, ParsesBlkAndRngWithPlacement) {
  auto d = ParseDeviceSpec("blk,id=disk0,path=/tmp/x.img,readonly=on,addr=0x2000400,irq=35");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->type, DeviceType::kBlk);
  EXPECT_EQ(d->id, "disk0");
  EXPECT_EQ(d->path, "/tmp/x.img");
  EXPECT_TRUE(d->readonly);
  EXPECT_EQ(d->mmio_base, 0x2000400u);
  EXPECT_EQ(d->irq, 35u);
  auto p = ParseDeviceSpec("rng,addr=0000:00:05.0");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->pci);
  EXPECT_EQ(p->pci_addr, (PciAddr{0, 0, 5, 0}));
}

TEST(DeviceSpec, RingLayoutAndInterruptKind) {
  auto d = ParseDeviceSpec("rng,addr=00:05.0,msix=off,packed=off");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->msix);
  EXPECT_FALSE(d->packed);
  auto e = ParseDeviceSpec("blk,path=/x,addr=00:06.0");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->msix);
  EXPECT_TRUE(e->packed);
  EXPECT_THAT(ParseDeviceSpec("rng,msix=off").status().message(),
              HasSubstr("msix=off is for virtio-pci"));
  EXPECT_THAT(ParseDeviceSpec("rng,packed=maybe").status().message(),
              HasSubstr("'packed=maybe' is not on/off"));
}

TEST(DeviceSpec, RejectsNonsenseClearly) {
  EXPECT_THAT(ParseDeviceSpec("gpu").status().message(), HasSubstr("unknown type 'gpu'"));
  EXPECT_THAT(ParseDeviceSpec("blk").status().message(), HasSubstr("blk: needs path="));
  EXPECT_THAT(ParseDeviceSpec("rng,foo=1").status().message(), HasSubstr("unknown key 'foo'"));
  EXPECT_THAT(ParseDeviceSpec("rng,addr=00:20.0").status().message(), HasSubstr("slot"));
  EXPECT_THAT(ParseDeviceSpec("rng,addr=00:05.0,irq=5").status().message(),
              HasSubstr("MSI-X"));
  EXPECT_THAT(ParseDeviceSpec("rng,addr=zz").status().message(), HasSubstr("'addr=zz' is not a number"));
}

TEST(Args, RequiredAndHelp) {
  const char* help[] = {"b", "--help"};
  auto a = ParseArgs(2, help);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->help);
  EXPECT_THAT(Usage(), HasSubstr("--domid N --device"));
  const char* nodom[] = {"b", "--device", "rng"};
  EXPECT_THAT(ParseArgs(3, nodom).status().message(), HasSubstr("--domid N is required"));
  const char* nodev[] = {"b", "--domid", "3"};
  EXPECT_THAT(ParseArgs(3, nodev).status().message(), HasSubstr("no --device"));
  const char* ok[] = {"b", "--domid", "3", "--arch", "arm", "--device", "rng",
                      "--ram", "0x40000000:256M", "--print-placement"};
  auto b = ParseArgs(10, ok);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->domid, 3);
  EXPECT_EQ(b->arch, GuestArch::kArm);
  ASSERT_EQ(b->ram.size(), 1u);
  EXPECT_EQ(b->ram[0].size, 256u << 20);
  EXPECT_TRUE(b->print_placement);
}

TEST(Placement, AssignsLibxlStyleSlotsAndChecksPins) {
  std::vector<DeviceSpec> devs(3);
  devs[0].type = DeviceType::kBlk;
  devs[1].mmio_base = 0x2000000;  // pinned: the first dynamic one moves on
  devs[1].irq = 33;
  ASSERT_TRUE(ResolvePlacement(GuestArch::kArm, devs).ok());
  EXPECT_EQ(PlacementString(devs),
            "blk0 virtio-mmio addr=0x2000200 irq=34\n"
            "rng0 virtio-mmio addr=0x2000000 irq=33\n"
            "rng1 virtio-mmio addr=0x2000400 irq=35\n");
  std::vector<DeviceSpec> bad(1);
  bad[0].irq = 5;
  EXPECT_THAT(ResolvePlacement(GuestArch::kArm, bad).message(), HasSubstr("not an SPI"));
  std::vector<DeviceSpec> pci(1);
  pci[0].pci = true;
  EXPECT_THAT(ResolvePlacement(GuestArch::kArm, pci).message(), HasSubstr("x86"));
  ASSERT_TRUE(ResolvePlacement(GuestArch::kX86, pci).ok());
  EXPECT_EQ(PlacementString(pci), "rng0 virtio-pci 0000:00:10.0\n");
}

TEST(Placement, DeadProcessClaimsAreDropped) {
  const std::string dir = ::testing::TempDir() + "/xen_claims_dead_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {  // a backend that crashed without releasing: pid that does not exist
    FILE* f = std::fopen((dir + "/dom9.claims").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f, "999999999 999999999:0 mmio 2000000 20001ff blk0\n");
    std::fclose(f);
  }
  DeviceSpec d;
  d.id = "blk0";
  d.mmio_base = 0x2000000;
  d.irq = 33;
  ClaimRegistry reg(dir, 9);
  EXPECT_TRUE(reg.Acquire(ClaimsFor(GuestArch::kArm, {d})).ok());
  EXPECT_EQ(reg.List().size(), 2u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace virtio::xg
