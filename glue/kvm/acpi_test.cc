// Tests of virtio-kvm's ACPI pieces: the AML encoder, the tables Linux
// reads, the PM1 registers it powers off through, and (when ACPICA's iasl
// is installed, as scripts/install-deps.sh does) a disassembly of the DSDT
// by the same interpreter family Linux uses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "acpi_pm.h"
#include "acpi_tables.h"
#include "aml.h"

namespace kvmglue {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kAt = 0xe0000;
constexpr uint64_t kLimit = 0x10000;

template <typename T>
T Load(const std::vector<uint8_t>& b, uint64_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

uint8_t Sum(const std::vector<uint8_t>& b, uint64_t off, uint64_t n) {
  uint8_t s = 0;
  for (uint64_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + b[off + i]);
  return s;
}

std::string Signature(const std::vector<uint8_t>& b, uint64_t off) {
  return std::string(reinterpret_cast<const char*>(b.data() + off), 4);
}

AcpiPlatform TwoCpusThreeDevices() {
  return {.vcpus = 2,
          .pci_intx = {{.slot = 1, .gsi = 5}, {.slot = 2, .gsi = 9}},
          .mmio = {{.base = 0xd0000000, .size = 0x200, .gsi = 6}},
          .pci_mmio_min = 0xe0000000,
          .pci_mmio_max = 0xfebfffff};
}

TEST(Aml, PkgLengthEncodings) {
  EXPECT_THAT(aml::PkgLength(0), ElementsAre(1));
  EXPECT_THAT(aml::PkgLength(62), ElementsAre(63));
  // 63 content bytes + 2 length bytes = 65 = 0x41: low nibble in the lead
  // byte with "one more byte" in bits 6..7, then 0x41 >> 4.
  EXPECT_THAT(aml::PkgLength(63), ElementsAre(0x41, 0x04));
  EXPECT_THAT(aml::PkgLength(4093), ElementsAre(0x4f, 0xff));        // 4095
  EXPECT_THAT(aml::PkgLength(4094), ElementsAre(0x81, 0x00, 0x01));  // 4097
}

TEST(Aml, NamesIntegersAndIds) {
  EXPECT_THAT(aml::NameString("_S5"), ElementsAre('_', 'S', '5', '_'));
  EXPECT_THAT(aml::NameString("\\_SB.PCI0"),
              ElementsAre('\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'));
  EXPECT_THAT(aml::NameString("\\A.B.C"),
              ElementsAre('\\', 0x2f, 3, 'A', '_', '_', '_', 'B', '_', '_', '_',
                          'C', '_', '_', '_'));
  EXPECT_THAT(aml::Integer(0), ElementsAre(0x00));
  EXPECT_THAT(aml::Integer(1), ElementsAre(0x01));
  EXPECT_THAT(aml::Integer(0xff), ElementsAre(0x0a, 0xff));
  EXPECT_THAT(aml::Integer(0x100), ElementsAre(0x0b, 0x00, 0x01));
  EXPECT_THAT(aml::Integer(0x10000), ElementsAre(0x0c, 0, 0, 1, 0));
  EXPECT_EQ(aml::Integer(uint64_t{1} << 32).size(), 9u);
  // EISAID("PNP0A03") is 0x030AD041, as every PC BIOS spells it.
  EXPECT_THAT(aml::EisaId("PNP0A03"),
              ElementsAre(0x0c, 0x41, 0xd0, 0x0a, 0x03));
  EXPECT_THAT(aml::String("AB"), ElementsAre(0x0d, 'A', 'B', 0));
}

TEST(AcpiTables, RsdpXsdtAndChecksums) {
  std::vector<uint8_t> ram(2 << 20);
  absl::StatusOr<AcpiLayout> l =
      WriteAcpiTables(absl::MakeSpan(ram), kAt, kLimit, TwoCpusThreeDevices());
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->rsdp, kAt);
  ASSERT_EQ(std::string(reinterpret_cast<char*>(ram.data() + kAt), 8),
            "RSD PTR ");
  EXPECT_EQ(Sum(ram, kAt, 20), 0);
  EXPECT_EQ(Sum(ram, kAt, 36), 0);
  EXPECT_EQ(ram[kAt + 15], 2);  // revision
  const uint64_t xsdt = Load<uint64_t>(ram, kAt + 24);
  ASSERT_EQ(Signature(ram, xsdt), "XSDT");
  const uint32_t xsdt_len = Load<uint32_t>(ram, xsdt + 4);
  EXPECT_EQ(Sum(ram, xsdt, xsdt_len), 0);
  ASSERT_EQ(xsdt_len, 36u + 16u);
  const uint64_t fadt = Load<uint64_t>(ram, xsdt + 36);
  const uint64_t madt = Load<uint64_t>(ram, xsdt + 44);
  ASSERT_EQ(Signature(ram, fadt), "FACP");
  ASSERT_EQ(Signature(ram, madt), "APIC");
  for (uint64_t t : {fadt, madt}) {
    EXPECT_EQ(Sum(ram, t, Load<uint32_t>(ram, t + 4)), 0) << Signature(ram, t);
    EXPECT_LE(t + Load<uint32_t>(ram, t + 4), l->end);
  }
  const uint64_t facs = Load<uint32_t>(ram, fadt + 36);
  const uint64_t dsdt = Load<uint32_t>(ram, fadt + 40);
  EXPECT_EQ(Load<uint64_t>(ram, fadt + 140), dsdt);  // X_DSDT agrees
  EXPECT_EQ(Signature(ram, facs), "FACS");
  EXPECT_EQ(facs % 64, 0u);
  ASSERT_EQ(Signature(ram, dsdt), "DSDT");
  EXPECT_EQ(Sum(ram, dsdt, Load<uint32_t>(ram, dsdt + 4)), 0);
  EXPECT_EQ(dsdt + Load<uint32_t>(ram, dsdt + 4), l->end);
}

TEST(AcpiTables, FadtPointsAtThePmRegistersAndAFreeSci) {
  std::vector<uint8_t> ram(2 << 20);
  absl::StatusOr<AcpiLayout> l =
      WriteAcpiTables(absl::MakeSpan(ram), kAt, kLimit, TwoCpusThreeDevices());
  ASSERT_TRUE(l.ok()) << l.status();
  const uint64_t fadt = Load<uint64_t>(ram, Load<uint64_t>(ram, kAt + 24) + 36);
  EXPECT_EQ(Load<uint32_t>(ram, fadt + 4), 276u);
  EXPECT_EQ(Load<uint32_t>(ram, fadt + 48), 0u);  // no SMI_CMD: ACPI mode
  EXPECT_EQ(Load<uint32_t>(ram, fadt + 56), kPm1EventPort);
  EXPECT_EQ(Load<uint32_t>(ram, fadt + 64), kPm1ControlPort);
  EXPECT_EQ(ram[fadt + 88], 4);
  EXPECT_EQ(ram[fadt + 89], 2);
  EXPECT_EQ(Load<uint32_t>(ram, fadt + 76), 0u);  // no PM timer
  // The device on IRQ 9 pushes the SCI to the next candidate.
  EXPECT_EQ(l->sci_irq, 10);
  EXPECT_EQ(Load<uint16_t>(ram, fadt + 46), 10);
  EXPECT_EQ(ram[fadt + 116], 1);  // reset register in I/O space...
  EXPECT_EQ(Load<uint64_t>(ram, fadt + 120), 0xcf9u);  // ...at 0xcf9
  EXPECT_EQ(ram[fadt + 128], 0x06);
}

TEST(AcpiTables, MadtNamesEveryCpuTheIoapicAndLevelOverrides) {
  std::vector<uint8_t> ram(2 << 20);
  AcpiPlatform p = TwoCpusThreeDevices();
  p.vcpus = 3;
  ASSERT_TRUE(WriteAcpiTables(absl::MakeSpan(ram), kAt, kLimit, p).ok());
  const uint64_t madt = Load<uint64_t>(ram, Load<uint64_t>(ram, kAt + 24) + 44);
  const uint32_t len = Load<uint32_t>(ram, madt + 4);
  EXPECT_EQ(Load<uint32_t>(ram, madt + 36), 0xfee00000u);
  std::vector<int> apic_ids, overrides;
  int ioapics = 0;
  for (uint64_t at = madt + 44; at < madt + len; at += ram[at + 1]) {
    ASSERT_GE(ram[at + 1], 2) << "zero-length MADT entry";
    switch (ram[at]) {
      case 0:
        apic_ids.push_back(ram[at + 3]);
        EXPECT_EQ(Load<uint32_t>(ram, at + 4), 1u);
        break;
      case 1:
        ++ioapics;
        EXPECT_EQ(ram[at + 2], 3);  // ID after the LAPICs
        EXPECT_EQ(Load<uint32_t>(ram, at + 4), 0xfec00000u);
        break;
      case 2:
        overrides.push_back(ram[at + 3]);
        EXPECT_EQ(Load<uint32_t>(ram, at + 4), ram[at + 3]);
        EXPECT_EQ(Load<uint16_t>(ram, at + 8), 0x000d);  // level, high
        break;
    }
  }
  EXPECT_THAT(apic_ids, ElementsAre(0, 1, 2));
  EXPECT_EQ(ioapics, 1);
  EXPECT_THAT(overrides, ElementsAre(5, 6, 9, 10));  // devices + the SCI
}

TEST(AcpiTables, RefusesWhatCannotBeDescribed) {
  std::vector<uint8_t> ram(2 << 20);
  AcpiPlatform p = TwoCpusThreeDevices();
  p.pci_intx.push_back({.slot = 3, .gsi = 24});
  absl::Status s =
      WriteAcpiTables(absl::MakeSpan(ram), kAt, kLimit, p).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("GSI 24"));

  p = TwoCpusThreeDevices();
  p.pci_intx.clear();
  for (uint32_t irq : {9, 10, 11, 12, 14, 15, 3, 5, 6, 7}) {
    p.mmio.push_back(
        {.base = 0xd0000000 + irq * 0x1000, .size = 0x200, .gsi = irq});
  }
  s = WriteAcpiTables(absl::MakeSpan(ram), kAt, kLimit, p).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("SCI"));

  s = WriteAcpiTables(absl::MakeSpan(ram), kAt, 64, TwoCpusThreeDevices())
          .status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("do not fit"));
}

TEST(AcpiPm, PowersOffOnSlpEnWithS5) {
  AcpiPm pm;
  EXPECT_EQ(pm.Read(kPm1ControlPort, 2) & 1, 1u);  // SCI_EN: ACPI mode
  const uint32_t s5 = uint32_t{kS5SleepType} << 10;
  // ACPICA writes the sleep type first, then adds SLP_EN.
  EXPECT_EQ(pm.Write(kPm1ControlPort, 2, s5), AcpiPm::Event::kNone);
  EXPECT_EQ(pm.Write(kPm1ControlPort, 2, s5 | 1u << 13),
            AcpiPm::Event::kPowerOff);
}

TEST(AcpiPm, ByteWritesAndOtherSleepTypes) {
  AcpiPm pm;
  const uint32_t s5 = uint32_t{kS5SleepType} << 10 | 1u << 13;
  EXPECT_EQ(pm.Write(kPm1ControlPort, 1, s5 & 0xff), AcpiPm::Event::kNone);
  EXPECT_EQ(pm.Write(kPm1ControlPort + 1, 1, s5 >> 8),
            AcpiPm::Event::kPowerOff);
  // SLP_EN is write-only: it reads back as 0.
  EXPECT_EQ(pm.Read(kPm1ControlPort, 2) & (1u << 13), 0u);
  EXPECT_EQ(pm.Write(kPm1ControlPort, 2, 3u << 10 | 1u << 13),
            AcpiPm::Event::kBadSleepType);
  // Status is write-one-to-clear and nothing sets it; enable is storage.
  EXPECT_EQ(pm.Write(kPm1EventPort, 4, 0x01000001), AcpiPm::Event::kNone);
  EXPECT_EQ(pm.Read(kPm1EventPort, 4), 0x01000000u);
  EXPECT_TRUE(AcpiPm::Claims(kPm1EventPort));
  EXPECT_TRUE(AcpiPm::Claims(kPm1ControlPort + 1));
  EXPECT_FALSE(AcpiPm::Claims(kPm1ControlPort + 2));
}

// The DSDT through ACPICA's disassembler: what Linux's interpreter parses.
TEST(AcpiTables, IaslDisassemblesTheDsdt) {
  if (std::system("command -v iasl >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "iasl (Debian package acpica-tools) is not installed";
  }
  const std::vector<uint8_t> dsdt = BuildDsdt(TwoCpusThreeDevices());
  char dir[] = "/tmp/acpi_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string aml = std::string(dir) + "/dsdt.aml";
  {
    std::ofstream f(aml, std::ios::binary);
    f.write(reinterpret_cast<const char*>(dsdt.data()),
            static_cast<std::streamsize>(dsdt.size()));
  }
  const std::string cmd =
      "cd " + std::string(dir) + " && iasl -d dsdt.aml >iasl.log 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log(std::string(dir) + "/iasl.log");
  std::stringstream log_text;
  log_text << log.rdbuf();
  ASSERT_EQ(rc, 0) << log_text.str();
  std::ifstream dsl(std::string(dir) + "/dsdt.dsl");
  std::stringstream text;
  text << dsl.rdbuf();
  const std::string s = text.str();
  EXPECT_THAT(s, HasSubstr("Device (PCI0)"));
  EXPECT_THAT(s, HasSubstr("Name (_HID, EisaId (\"PNP0A03\")"));
  EXPECT_THAT(s, HasSubstr("WordBusNumber (ResourceProducer"));
  EXPECT_THAT(s, HasSubstr("IO (Decode16,"));
  EXPECT_THAT(s, HasSubstr("DWordMemory (ResourceProducer"));
  EXPECT_THAT(s, HasSubstr("0xFEBFFFFF"));
  EXPECT_THAT(s, HasSubstr("Name (_PRT, Package (0x02)"));
  EXPECT_THAT(s, HasSubstr("0x0002FFFF"));
  EXPECT_THAT(s, HasSubstr("Name (_HID, \"LNRO0005\")"));
  EXPECT_THAT(s, HasSubstr("Memory32Fixed (ReadWrite,"));
  EXPECT_THAT(s, HasSubstr("Interrupt (ResourceConsumer, Level, ActiveHigh, "
                           "Exclusive"));
  EXPECT_THAT(s, HasSubstr("Name (\\_S5, Package (0x04)"));
  EXPECT_THAT(log_text.str(), Not(HasSubstr("rror")));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvmglue
