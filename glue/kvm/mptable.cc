#include "mptable.h"

#include <cstring>
#include <string_view>

#include "absl/strings/str_format.h"
#include "boot_info.h"
#include "firmware_tables.h"

namespace kvmglue {
namespace {

// Entry sizes and types from the MP specification 1.4, chapter 4.
constexpr uint64_t kFloatingPointerSize = 16;
constexpr uint64_t kHeaderSize = 44;
constexpr uint64_t kProcessorEntrySize = 20;
constexpr uint64_t kSmallEntrySize = 8;  // bus, IOAPIC, interrupt entries

constexpr uint8_t kEntryProcessor = 0;
constexpr uint8_t kEntryBus = 1;
constexpr uint8_t kEntryIoapic = 2;
constexpr uint8_t kEntryIoInterrupt = 3;
constexpr uint8_t kEntryLocalInterrupt = 4;

constexpr uint8_t kIntTypeInt = 0;
constexpr uint8_t kIntTypeNmi = 1;
constexpr uint8_t kIntTypeExtInt = 3;

constexpr uint8_t kPciBus = 0;
constexpr uint8_t kIsaBus = 1;

// Interrupt entry flags (firmware_tables.h): as the bus says.
constexpr uint16_t kConformsToBus = 0;

constexpr uint8_t kLapicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;

// Appends little-endian fields to a byte buffer.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) {
    U8(static_cast<uint8_t>(v));
    U8(static_cast<uint8_t>(v >> 8));
  }
  void U32(uint32_t v) {
    U16(static_cast<uint16_t>(v));
    U16(static_cast<uint16_t>(v >> 16));
  }
  void Text(std::string_view s, size_t width) {
    for (size_t i = 0; i < width; ++i) U8(i < s.size() ? s[i] : ' ');
  }
  void Zeros(size_t n) { out_.insert(out_.end(), n, 0); }

 private:
  std::vector<uint8_t>& out_;
};

void IoInterrupt(Writer& w, uint16_t flags, uint8_t bus, uint8_t bus_irq,
                 uint8_t ioapic_id, uint8_t pin) {
  w.U8(kEntryIoInterrupt);
  w.U8(kIntTypeInt);
  w.U16(flags);
  w.U8(bus);
  w.U8(bus_irq);
  w.U8(ioapic_id);
  w.U8(pin);
}

}  // namespace

uint64_t MpTableSize(int vcpus, size_t num_pci) {
  const uint64_t entries = static_cast<uint64_t>(vcpus) * kProcessorEntrySize +
                           2 * kSmallEntrySize /* buses */ +
                           kSmallEntrySize /* IOAPIC */ +
                           (15 + num_pci) * kSmallEntrySize /* interrupts */ +
                           2 * kSmallEntrySize /* local interrupts */;
  return kFloatingPointerSize + kHeaderSize + entries;
}

absl::Status WriteMpTable(absl::Span<uint8_t> ram, uint64_t addr,
                          uint64_t limit, int vcpus,
                          const std::vector<PciIntxRoute>& pci_intx) {
  if (addr % 16 != 0) return absl::InvalidArgumentError("MP table: unaligned");
  if (vcpus < 1 || vcpus > 254) {
    return absl::InvalidArgumentError("MP table: 1..254 vCPUs");
  }
  const uint8_t ioapic_id = static_cast<uint8_t>(vcpus);
  uint32_t pci_gsis = 0;  // bitmap of IOAPIC pins given to PCI functions
  for (const PciIntxRoute& r : pci_intx) {
    if (r.gsi >= kIoapicPins || r.slot >= 32) {
      return absl::InvalidArgumentError(
          absl::StrFormat("MP table: PCI slot %u on pin %u", r.slot, r.gsi));
    }
    pci_gsis |= 1u << r.gsi;
  }

  std::vector<uint8_t> entries;
  uint16_t count = 0;
  Writer w(entries);
  for (int cpu = 0; cpu < vcpus; ++cpu, ++count) {
    w.U8(kEntryProcessor);
    w.U8(static_cast<uint8_t>(cpu));  // LAPIC ID
    w.U8(kLapicVersion);
    w.U8(cpu == 0 ? 0x3 : 0x1);  // enabled, BSP
    w.U32(0x600);                // CPU signature: family 6, as KVM's are
    w.U32(0x201);                // features: FPU, APIC
    w.Zeros(8);
  }
  w.U8(kEntryBus);
  w.U8(kPciBus);
  w.Text("PCI", 6);
  w.U8(kEntryBus);
  w.U8(kIsaBus);
  w.Text("ISA", 6);
  count += 2;
  w.U8(kEntryIoapic);
  w.U8(ioapic_id);
  w.U8(kIoapicVersion);
  w.U8(1);  // enabled
  w.U32(kIoapicBase);
  ++count;
  for (uint8_t irq = 0; irq < 16; ++irq) {
    if (irq == 2 || (pci_gsis & (1u << irq))) continue;
    IoInterrupt(w, kConformsToBus, kIsaBus, irq, ioapic_id, irq);
    ++count;
  }
  for (const PciIntxRoute& r : pci_intx) {
    // Source bus IRQ for PCI: device number in bits 2..6, INTx pin
    // (0 = INTA#) in bits 0..1.
    IoInterrupt(w, kIntiLevelActiveHigh, kPciBus,
                static_cast<uint8_t>(r.slot << 2), ioapic_id,
                static_cast<uint8_t>(r.gsi));
    ++count;
  }
  for (const auto& [type, lint] : {std::pair{kIntTypeExtInt, uint8_t{0}},
                                   std::pair{kIntTypeNmi, uint8_t{1}}}) {
    w.U8(kEntryLocalInterrupt);
    w.U8(type);
    w.U16(kConformsToBus);
    w.U8(kIsaBus);
    w.U8(0);
    w.U8(0xff);  // every LAPIC
    w.U8(lint);
    ++count;
  }

  const uint64_t table_addr = addr + kFloatingPointerSize;
  const uint64_t table_size = kHeaderSize + entries.size();
  if (kFloatingPointerSize + table_size > limit ||
      addr + kFloatingPointerSize + table_size > ram.size()) {
    return absl::InvalidArgumentError("MP table: does not fit");
  }

  std::vector<uint8_t> header;
  Writer h(header);
  h.Text("PCMP", 4);
  h.U16(static_cast<uint16_t>(table_size));
  h.U8(4);  // specification revision 1.4
  h.U8(0);  // checksum, below
  h.Text("LIBVIRTI", 8);
  h.Text("VIRTIO-KVM", 12);
  h.U32(0);  // no OEM table
  h.U16(0);
  h.U16(count);
  h.U32(kLapicBase);
  h.U16(0);  // no extended entries
  h.U8(0);
  h.U8(0);
  uint8_t* table = ram.data() + table_addr;
  std::memcpy(table, header.data(), header.size());
  std::memcpy(table + header.size(), entries.data(), entries.size());
  table[7] = TableChecksum(table, table_size);

  std::vector<uint8_t> fp;
  Writer f(fp);
  f.Text("_MP_", 4);
  f.U32(static_cast<uint32_t>(table_addr));
  f.U8(1);     // length in 16-byte units
  f.U8(4);     // revision 1.4
  f.U8(0);     // checksum, below
  f.Zeros(5);  // feature bytes: 0 = the configuration table is present
  uint8_t* pointer = ram.data() + addr;
  std::memcpy(pointer, fp.data(), fp.size());
  pointer[10] = TableChecksum(pointer, kFloatingPointerSize);
  return absl::OkStatus();
}

}  // namespace kvmglue
