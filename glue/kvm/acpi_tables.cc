#include "acpi_tables.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string_view>

#include "absl/strings/str_format.h"
#include "aml.h"
#include "firmware_tables.h"

namespace kvmglue {
namespace {

using aml::Bytes;

constexpr uint32_t kLapicBase = 0xfee00000;
constexpr uint32_t kIoapicBase = 0xfec00000;
constexpr uint32_t kIoapicPins = 24;  // KVM's in-kernel IOAPIC
constexpr uint16_t kResetPort = 0xcf9;
constexpr uint8_t kResetValue = 0x06;  // full reset | reset CPU

constexpr size_t kHeaderSize = 36;
constexpr size_t kRsdpSize = 36;
constexpr size_t kFadtSize = 276;  // FADT revision 6
constexpr size_t kFacsSize = 64;

// FADT flags (ACPI 6.5 table 5.10) and IA-PC boot architecture flags
// (table 5.11).
constexpr uint32_t kFadtWbinvd = 1u << 0;
constexpr uint32_t kFadtProcC1 = 1u << 2;
constexpr uint32_t kFadtPowerButtonAbsent = 1u << 4;  // "control method"
constexpr uint32_t kFadtSleepButtonAbsent = 1u << 5;
constexpr uint32_t kFadtResetRegister = 1u << 10;
constexpr uint16_t kBootLegacyDevices = 1u << 0;
constexpr uint16_t kBootNoVga = 1u << 2;
constexpr uint16_t kBootNoAspm = 1u << 4;

// MADT structure types.
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoapic = 1;
constexpr uint8_t kMadtOverride = 2;
constexpr uint8_t kMadtLocalApicNmi = 4;

// ISA IRQs the SCI may take, in order of preference (9 is what PC chipsets
// use; 0, 2, 4 and 8 are the PIT, the cascade, the UART and the RTC).
constexpr uint8_t kSciCandidates[] = {9, 10, 11, 12, 14, 15, 3, 5, 6, 7};

template <typename T>
void Put(Bytes& b, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    b[off + i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
  }
}

template <typename T>
void Add(Bytes& b, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
  }
}

void AddText(Bytes& b, std::string_view s, size_t width) {
  for (size_t i = 0; i < width; ++i) {
    b.push_back(static_cast<uint8_t>(i < s.size() ? s[i] : ' '));
  }
}

// The common System Description Table header; length and checksum are
// filled in by Finish().
Bytes Header(std::string_view signature, uint8_t revision) {
  Bytes b;
  AddText(b, signature, 4);
  Add<uint32_t>(b, 0);  // length
  b.push_back(revision);
  b.push_back(0);  // checksum
  AddText(b, "LIBVRT", 6);
  AddText(b, "VIRTKVM", 8);
  Add<uint32_t>(b, 1);  // OEM revision
  AddText(b, "LVRT", 4);
  Add<uint32_t>(b, 1);  // creator revision
  return b;
}

Bytes Finish(Bytes b) {
  Put<uint32_t>(b, 4, static_cast<uint32_t>(b.size()));
  b[9] = 0;
  b[9] = TableChecksum(b.data(), b.size());
  return b;
}

// Generic Address Structure for an I/O port register.
void AddIoGas(Bytes& b, uint16_t port, uint8_t bits, uint8_t access_size) {
  b.push_back(1);  // system I/O
  b.push_back(bits);
  b.push_back(0);  // bit offset
  b.push_back(access_size);
  Add<uint64_t>(b, port);
}

Bytes BuildFadt(uint64_t facs, uint64_t dsdt, uint8_t sci_irq) {
  Bytes b = Header("FACP", 6);
  b.resize(kFadtSize, 0);
  Put<uint32_t>(b, 36, static_cast<uint32_t>(facs));  // FIRMWARE_CTRL
  Put<uint32_t>(b, 40, static_cast<uint32_t>(dsdt));  // DSDT
  Put<uint16_t>(b, 46, sci_irq);                      // SCI_INT
  // SMI_CMD (48) stays 0: the platform is always in ACPI mode.
  Put<uint32_t>(b, 56, kPm1EventPort);    // PM1a_EVT_BLK
  Put<uint32_t>(b, 64, kPm1ControlPort);  // PM1a_CNT_BLK
  b[88] = 4;                              // PM1_EVT_LEN
  b[89] = 2;                              // PM1_CNT_LEN
  // No PM timer, no GPE blocks, no C2/C3.
  Put<uint16_t>(b, 96, 101);   // P_LVL2_LAT > 100: C2 not supported
  Put<uint16_t>(b, 98, 1001);  // P_LVL3_LAT > 1000: C3 not supported
  // CENTURY (108) stays 0: the RTC has no century register.
  Put<uint16_t>(b, 109, kBootLegacyDevices | kBootNoVga | kBootNoAspm);
  Put<uint32_t>(b, 112,
                kFadtWbinvd | kFadtProcC1 | kFadtPowerButtonAbsent |
                    kFadtSleepButtonAbsent | kFadtResetRegister);
  Bytes reset;
  AddIoGas(reset, kResetPort, 8, 1);
  std::copy(reset.begin(), reset.end(), b.begin() + 116);  // RESET_REG
  b[128] = kResetValue;
  b[131] = 0;                   // FADT minor version
  Put<uint64_t>(b, 140, dsdt);  // X_DSDT (same as DSDT)
  return Finish(std::move(b));
}

Bytes BuildFacs() {
  Bytes b;
  AddText(b, "FACS", 4);
  Add<uint32_t>(b, kFacsSize);
  b.resize(kFacsSize, 0);
  b[32] = 2;  // version
  return b;
}

Bytes BuildMadt(const AcpiPlatform& p, uint8_t sci_irq,
                const std::set<uint32_t>& level_isa_irqs) {
  Bytes b = Header("APIC", 5);
  Add<uint32_t>(b, kLapicBase);
  Add<uint32_t>(b, 1);  // PCAT_COMPAT: the in-kernel 8259s exist
  for (int i = 0; i < p.vcpus; ++i) {
    b.push_back(kMadtLocalApic);
    b.push_back(8);
    b.push_back(static_cast<uint8_t>(i));  // ACPI processor UID
    b.push_back(static_cast<uint8_t>(i));  // APIC ID
    Add<uint32_t>(b, 1);                   // enabled
  }
  b.push_back(kMadtIoapic);
  b.push_back(12);
  b.push_back(static_cast<uint8_t>(p.vcpus));  // IOAPIC ID, as in the MP table
  b.push_back(0);
  Add<uint32_t>(b, kIoapicBase);
  Add<uint32_t>(b, 0);  // GSI base
  std::set<uint32_t> overrides = level_isa_irqs;
  overrides.insert(sci_irq);
  for (uint32_t irq : overrides) {
    b.push_back(kMadtOverride);
    b.push_back(10);
    b.push_back(0);  // ISA
    b.push_back(static_cast<uint8_t>(irq));
    Add<uint32_t>(b, irq);  // same GSI: only the trigger mode changes
    Add<uint16_t>(b, kIntiLevelActiveHigh);
  }
  b.push_back(kMadtLocalApicNmi);
  b.push_back(6);
  b.push_back(0xff);    // every processor
  Add<uint16_t>(b, 0);  // conforms to the bus
  b.push_back(1);       // LINT1
  return Finish(std::move(b));
}

Bytes BuildXsdt(std::initializer_list<uint64_t> tables) {
  Bytes b = Header("XSDT", 1);
  for (uint64_t t : tables) Add<uint64_t>(b, t);
  return Finish(std::move(b));
}

Bytes BuildRsdp(uint64_t xsdt) {
  Bytes b;
  AddText(b, "RSD PTR ", 8);
  b.push_back(0);  // checksum of the first 20 bytes
  AddText(b, "LIBVRT", 6);
  b.push_back(2);       // revision: ACPI 2.0+, XSDT
  Add<uint32_t>(b, 0);  // no RSDT
  Add<uint32_t>(b, kRsdpSize);
  Add<uint64_t>(b, xsdt);
  b.push_back(0);  // extended checksum
  b.resize(kRsdpSize, 0);
  b[8] = TableChecksum(b.data(), 20);
  b[32] = TableChecksum(b.data(), kRsdpSize);
  return b;
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace

std::vector<uint8_t> BuildDsdt(const AcpiPlatform& p) {
  namespace r = aml::resource;
  std::vector<Bytes> prt;
  for (const PciIntxRoute& route : p.pci_intx) {
    // Every function's INTA# (pin 0) on its GSI; source 0 = a GSI, not a
    // link device.
    prt.push_back(aml::Package(
        {aml::Integer((uint64_t{route.slot} << 16) | 0xffff), aml::Integer(0),
         aml::Integer(0), aml::Integer(route.gsi)}));
  }
  Bytes pci0 = aml::Join({
      aml::Name("_HID", aml::EisaId("PNP0A03")),
      aml::Name("_UID", aml::Integer(0)),
      aml::Name("_SEG", aml::Integer(0)),
      aml::Name("_BBN", aml::Integer(0)),
      aml::Name("_CRS", aml::ResourceTemplate({
                            r::BusNumbers(0, 0),
                            r::IoPorts(0xcf8, 8),
                            r::IoWindow(0x0000, 0x0cf7),
                            r::IoWindow(0x0d00, 0xffff),
                            r::MemoryWindow(p.pci_mmio_min, p.pci_mmio_max),
                        })),
      aml::Name("_PRT", aml::Package(prt)),
  });
  Bytes sb = aml::Device("PCI0", pci0);
  for (size_t i = 0; i < p.mmio.size(); ++i) {
    const AcpiMmioDevice& m = p.mmio[i];
    Bytes body = aml::Join({
        aml::Name("_HID", aml::String("LNRO0005")),
        aml::Name("_UID", aml::Integer(i)),
        aml::Name("_CRS", aml::ResourceTemplate({
                              r::FixedMemory(m.base, m.size),
                              r::Interrupt(m.gsi, /*level_triggered=*/true),
                          })),
    });
    const Bytes dev = aml::Device(absl::StrFormat("VR%02X", i), body);
    sb.insert(sb.end(), dev.begin(), dev.end());
  }
  Bytes dsdt = Header("DSDT", 2);
  const Bytes body = aml::Join({
      aml::Scope("\\_SB", sb),
      aml::Name("\\_S5", aml::Package({aml::Integer(kS5SleepType),
                                       aml::Integer(kS5SleepType),
                                       aml::Integer(0), aml::Integer(0)})),
  });
  dsdt.insert(dsdt.end(), body.begin(), body.end());
  return Finish(std::move(dsdt));
}

absl::StatusOr<AcpiLayout> WriteAcpiTables(absl::Span<uint8_t> ram,
                                           uint64_t addr, uint64_t limit,
                                           const AcpiPlatform& p) {
  if (addr % 16 != 0) {
    return absl::InvalidArgumentError(
        "ACPI tables: RSDP must be 16-byte aligned");
  }
  if (p.vcpus < 1 || p.vcpus > 254) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ACPI tables: %d vCPUs", p.vcpus));
  }
  std::set<uint32_t> used, level_isa;
  auto use = [&](uint32_t gsi, const char* what) -> absl::Status {
    if (gsi >= kIoapicPins) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ACPI tables: %s on GSI %u, beyond the IOAPIC's %u pins", what, gsi,
          kIoapicPins));
    }
    used.insert(gsi);
    if (gsi < 16) level_isa.insert(gsi);
    return absl::OkStatus();
  };
  for (const PciIntxRoute& r : p.pci_intx) {
    if (absl::Status s = use(r.gsi, "a PCI INTx line"); !s.ok()) return s;
  }
  for (const AcpiMmioDevice& m : p.mmio) {
    if (absl::Status s = use(m.gsi, "a virtio-mmio interrupt"); !s.ok())
      return s;
  }
  uint8_t sci = 0;
  for (uint8_t c : kSciCandidates) {
    if (!used.count(c)) {
      sci = c;
      break;
    }
  }
  if (sci == 0) {
    return absl::InvalidArgumentError(
        "ACPI tables: every ISA IRQ the SCI could use is taken by a device");
  }

  // Layout: RSDP, XSDT, FADT, FACS (64-byte aligned), MADT, DSDT.
  const uint64_t rsdp_at = addr;
  const uint64_t xsdt_at = AlignUp(rsdp_at + kRsdpSize, 16);
  const uint64_t xsdt_size = kHeaderSize + uint64_t{2} * 8;  // two entries
  const uint64_t fadt_at = AlignUp(xsdt_at + xsdt_size, 16);
  const uint64_t facs_at = AlignUp(fadt_at + kFadtSize, 64);
  const uint64_t madt_at = AlignUp(facs_at + kFacsSize, 16);
  const Bytes madt = BuildMadt(p, sci, level_isa);
  const uint64_t dsdt_at = AlignUp(madt_at + madt.size(), 16);
  const Bytes dsdt = BuildDsdt(p);
  const uint64_t end = dsdt_at + dsdt.size();
  if (end > addr + limit || end > ram.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ACPI tables: %u bytes do not fit in %u", end - addr, limit));
  }
  std::memset(ram.data() + addr, 0, end - addr);
  auto place = [&](uint64_t at, const Bytes& b) {
    std::memcpy(ram.data() + at, b.data(), b.size());
  };
  place(rsdp_at, BuildRsdp(xsdt_at));
  place(xsdt_at, BuildXsdt({fadt_at, madt_at}));
  place(fadt_at, BuildFadt(facs_at, dsdt_at, sci));
  place(facs_at, BuildFacs());
  place(madt_at, madt);
  place(dsdt_at, dsdt);
  return AcpiLayout{.rsdp = rsdp_at, .end = end, .sci_irq = sci};
}

}  // namespace kvmglue
