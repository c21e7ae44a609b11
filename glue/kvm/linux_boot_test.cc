// Unit tests of the Linux boot pieces of virtio-kvm that need no KVM: the
// boot-protocol loader, the MP table, the 16550A and the CMOS RTC.
#include <elf.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cmos_rtc.h"
#include "linux_boot.h"
#include "mptable.h"
#include "uart16550.h"

namespace kvmglue {
namespace {

constexpr uint64_t kRam = 64 << 20;

template <typename T>
T Load(const std::vector<uint8_t>& b, uint64_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <typename T>
void Store(std::vector<uint8_t>& b, uint64_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

// A bzImage as far as the loader cares: the setup header with the fields
// a 2.15 kernel has, 4 setup sectors, and a recognisable payload.
std::vector<uint8_t> FakeBzImage(uint32_t payload_bytes = 8192) {
  std::vector<uint8_t> img(5 * 512 + payload_bytes, 0);
  img[0x1f1] = 4;                       // setup_sects
  Store<uint16_t>(img, 0x1fe, 0xaa55);  // boot_flag
  img[0x201] = 0x6a;                    // header length: up to 0x26c
  Store<uint32_t>(img, 0x202, 0x53726448);
  Store<uint16_t>(img, 0x206, 0x020f);
  Store<uint32_t>(img, 0x22c, 0x7fffffff);  // initrd_addr_max
  Store<uint32_t>(img, 0x230, 0x200000);    // kernel_alignment
  Store<uint16_t>(img, 0x236, 0x1);         // XLF_KERNEL_64
  Store<uint32_t>(img, 0x238, 2047);        // cmdline_size
  Store<uint64_t>(img, 0x258, 0x1000000);   // pref_address
  Store<uint32_t>(img, 0x260, 0x400000);    // init_size
  for (uint32_t i = 0; i < payload_bytes; ++i) {
    img[5 * 512 + i] = static_cast<uint8_t>(i * 7 + 1);
  }
  return img;
}

TEST(LinuxBoot, LoadsBzImage) {
  std::vector<uint8_t> ram(kRam);
  const std::vector<uint8_t> initrd(100000, 0x5a);
  absl::StatusOr<LinuxEntry> e = LoadLinux(
      {.kernel = FakeBzImage(), .initrd = initrd, .cmdline = "console=ttyS0",
       .vcpus = 2},
      absl::MakeSpan(ram));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->compressed);
  EXPECT_EQ(e->entry, 0x1000000u + 0x200);
  EXPECT_EQ(e->boot_params, kLinuxBootParamsAddr);
  EXPECT_EQ(ram[0x1000000], 1);  // the protected-mode part, after setup
  EXPECT_EQ(ram[0x1000001], 8);
  // boot_params: the kernel's header copied, the loader's fields filled in.
  const uint64_t bp = kLinuxBootParamsAddr;
  std::vector<uint8_t> params(ram.begin() + bp, ram.begin() + bp + 4096);
  EXPECT_EQ(Load<uint32_t>(params, 0x202), 0x53726448u);
  EXPECT_EQ(params[0x210], 0xff);  // type_of_loader
  EXPECT_EQ(Load<uint32_t>(params, 0x228), kLinuxCmdlineAddr);
  EXPECT_STREQ(reinterpret_cast<const char*>(ram.data() + kLinuxCmdlineAddr),
               "console=ttyS0");
  const uint32_t initrd_at = Load<uint32_t>(params, 0x218);
  EXPECT_EQ(Load<uint32_t>(params, 0x21c), initrd.size());
  EXPECT_EQ(initrd_at % 4096, 0u);
  EXPECT_LE(initrd_at + initrd.size(), kRam);
  EXPECT_GE(initrd_at, e->kernel_end);
  EXPECT_EQ(ram[initrd_at], 0x5a);
  // e820: low RAM, two reserved holes, RAM from 1 MiB to the end.
  ASSERT_EQ(params[0x1e8], 4);
  EXPECT_EQ(Load<uint64_t>(params, 0x2d0 + 3 * 20), 0x100000u);
  EXPECT_EQ(Load<uint64_t>(params, 0x2d0 + 3 * 20 + 8), kRam - 0x100000);
  EXPECT_EQ(Load<uint32_t>(params, 0x2d0 + 3 * 20 + 16), 1u);
  EXPECT_EQ(Load<uint32_t>(params, 0x2d0 + 1 * 20 + 16), 2u);
  // The MP table's floating pointer is where Linux looks.
  EXPECT_EQ(std::memcmp(ram.data() + kLinuxMpTableAddr, "_MP_", 4), 0);
  // ACPI: the RSDP at the start of the reserved BIOS area, and its address
  // in boot_params.acpi_rsdp_addr; the reserved range covers the tables.
  ASSERT_TRUE(e->acpi.has_value());
  EXPECT_EQ(e->acpi->rsdp, kLinuxAcpiAddr);
  EXPECT_EQ(Load<uint64_t>(params, 0x070), kLinuxAcpiAddr);
  EXPECT_EQ(std::memcmp(ram.data() + kLinuxAcpiAddr, "RSD PTR ", 8), 0);
  EXPECT_EQ(Load<uint64_t>(params, 0x2d0 + 2 * 20), kLinuxAcpiAddr);
  EXPECT_LE(e->acpi->end, kLinuxMpTableAddr);
}

TEST(LinuxBoot, NoAcpiLeavesOnlyTheMpTable) {
  std::vector<uint8_t> ram(kRam);
  absl::StatusOr<LinuxEntry> e = LoadLinux(
      {.kernel = FakeBzImage(), .cmdline = "console=ttyS0", .acpi = false},
      absl::MakeSpan(ram));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_FALSE(e->acpi.has_value());
  std::vector<uint8_t> params(ram.begin() + kLinuxBootParamsAddr,
                              ram.begin() + kLinuxBootParamsAddr + 4096);
  EXPECT_EQ(Load<uint64_t>(params, 0x070), 0u);
  EXPECT_NE(std::memcmp(ram.data() + kLinuxAcpiAddr, "RSD PTR ", 8), 0);
  EXPECT_EQ(std::memcmp(ram.data() + kLinuxMpTableAddr, "_MP_", 4), 0);
}

TEST(LinuxBoot, RejectsBadImagesAndConfigs) {
  std::vector<uint8_t> ram(kRam);
  auto load = [&](std::vector<uint8_t> kernel, std::string cmdline = "",
                  std::vector<uint8_t> initrd = {}) {
    return LoadLinux({.kernel = std::move(kernel),
                      .initrd = std::move(initrd),
                      .cmdline = std::move(cmdline)},
                     absl::MakeSpan(ram));
  };
  EXPECT_FALSE(load(std::vector<uint8_t>(4096, 0)).ok());  // not a kernel
  std::vector<uint8_t> img = FakeBzImage();
  EXPECT_FALSE(load(std::vector<uint8_t>(img.begin(), img.begin() + 0x210)).ok());
  std::vector<uint8_t> old = img;
  Store<uint16_t>(old, 0x206, 0x0204);  // protocol 2.04: no 64-bit entry
  EXPECT_FALSE(load(old).ok());
  std::vector<uint8_t> no64 = img;
  Store<uint16_t>(no64, 0x236, 0);
  EXPECT_FALSE(load(no64).ok());
  std::vector<uint8_t> huge = img;
  Store<uint32_t>(huge, 0x260, 0x8000000);  // init_size beyond RAM
  EXPECT_FALSE(load(huge).ok());
  EXPECT_FALSE(load(img, std::string(2047, 'x')).ok());  // NUL does not fit
  EXPECT_TRUE(load(img, std::string(2046, 'x')).ok());
  EXPECT_FALSE(load(img, "", std::vector<uint8_t>(60 << 20, 1)).ok());
  std::vector<uint8_t> tiny(1 << 20);
  EXPECT_FALSE(
      LoadLinux({.kernel = img}, absl::MakeSpan(tiny)).ok());
}

TEST(LinuxBoot, LoadsVmlinuxSegments) {
  std::vector<uint8_t> elf(0x3000, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_machine = EM_X86_64;
  eh.e_entry = 0x1000000;
  eh.e_phoff = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  std::memcpy(elf.data(), &eh, sizeof eh);
  Elf64_Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_offset = 0x1000;
  ph.p_paddr = 0x1000000;
  ph.p_filesz = 0x1000;
  ph.p_memsz = 0x3000;
  std::memcpy(elf.data() + sizeof eh, &ph, sizeof ph);
  elf[0x1000] = 0xe9;
  std::vector<uint8_t> ram(kRam, 0xcc);
  absl::StatusOr<LinuxEntry> e = LoadLinux({.kernel = elf}, absl::MakeSpan(ram));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_FALSE(e->compressed);
  EXPECT_EQ(e->entry, 0x1000000u);
  EXPECT_EQ(ram[0x1000000], 0xe9);
  EXPECT_EQ(ram[0x1001000], 0);  // bss cleared
  EXPECT_EQ(e->kernel_end, 0x1003000u);

  ph.p_paddr = kRam - 0x1000;  // runs past the end of RAM
  std::memcpy(elf.data() + sizeof eh, &ph, sizeof ph);
  EXPECT_FALSE(LoadLinux({.kernel = elf}, absl::MakeSpan(ram)).ok());
  ph.p_paddr = 0x1000000;
  ph.p_offset = 0x2800;  // file data past the end of the file
  std::memcpy(elf.data() + sizeof eh, &ph, sizeof ph);
  EXPECT_FALSE(LoadLinux({.kernel = elf}, absl::MakeSpan(ram)).ok());
  ph.p_offset = 0x1000;
  std::memcpy(elf.data() + sizeof eh, &ph, sizeof ph);
  eh.e_entry = 0xffffffff81000000;  // a virtual entry: not a vmlinux for us
  std::memcpy(elf.data(), &eh, sizeof eh);
  EXPECT_FALSE(LoadLinux({.kernel = elf}, absl::MakeSpan(ram)).ok());
}

uint8_t Sum(const uint8_t* p, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + p[i]);
  return s;
}

TEST(MpTable, ChecksumsCountsAndRoutes) {
  std::vector<uint8_t> ram(2 << 20);
  ASSERT_TRUE(WriteMpTable(absl::MakeSpan(ram), 0xf0000, 0x10000, 2,
                           {{.slot = 3, .gsi = 10}})
                  .ok());
  const uint8_t* fp = ram.data() + 0xf0000;
  ASSERT_EQ(std::memcmp(fp, "_MP_", 4), 0);
  EXPECT_EQ(Sum(fp, 16), 0);
  uint32_t table_at;
  std::memcpy(&table_at, fp + 4, 4);
  const uint8_t* t = ram.data() + table_at;
  ASSERT_EQ(std::memcmp(t, "PCMP", 4), 0);
  uint16_t len, count;
  std::memcpy(&len, t + 4, 2);
  std::memcpy(&count, t + 34, 2);
  EXPECT_EQ(Sum(t, len), 0);
  EXPECT_LE(len + 16u, MpTableSize(2, 1));
  // Walk the entries: 2 CPUs (the first the BSP), the PCI INTx route, and
  // no ISA route for the pin the PCI function took.
  const uint8_t* e = t + 44;
  int cpus = 0, bsp = 0, pci_routes = 0, isa_on_10 = 0;
  for (uint16_t i = 0; i < count; ++i) {
    if (e[0] == 0) {
      ++cpus;
      bsp += (e[3] & 2) ? 1 : 0;
      e += 20;
      continue;
    }
    if (e[0] == 3 && e[4] == 0 && e[5] == (3 << 2) && e[7] == 10) ++pci_routes;
    if (e[0] == 3 && e[4] == 1 && e[7] == 10) ++isa_on_10;
    e += 8;
  }
  EXPECT_EQ(cpus, 2);
  EXPECT_EQ(bsp, 1);
  EXPECT_EQ(pci_routes, 1);
  EXPECT_EQ(isa_on_10, 0);
  EXPECT_EQ(e, t + len);

  EXPECT_FALSE(WriteMpTable(absl::MakeSpan(ram), 0xf0008, 0x10000, 1, {}).ok());
  EXPECT_FALSE(WriteMpTable(absl::MakeSpan(ram), 0xf0000, 64, 8, {}).ok());
  EXPECT_FALSE(
      WriteMpTable(absl::MakeSpan(ram), 0xf0000, 0x10000, 1, {{.gsi = 24}}).ok());
}

TEST(Uart16550, DetectedAsFifoUartAndInterruptsPerByte) {
  std::vector<bool> levels;
  std::string out;
  Uart16550 uart(
      0x3f8, [&](bool l) { levels.push_back(l); },
      [&](std::string_view s) { out += s; });
  // What Linux's autoconfig checks: scratch register, FIFO bits in IIR.
  uart.Write(0x3ff, 0xa5);
  EXPECT_EQ(uart.Read(0x3ff), 0xa5);
  uart.Write(0x3fa, 0x01);                 // FCR: enable FIFOs
  EXPECT_EQ(uart.Read(0x3fa) & 0xc0, 0xc0);
  EXPECT_EQ(uart.Read(0x3fd) & 0x60, 0x60);  // THR empty
  // Divisor latch does not transmit.
  uart.Write(0x3fb, 0x80);
  uart.Write(0x3f8, 0x01);
  EXPECT_EQ(uart.Read(0x3f8), 0x01);
  uart.Write(0x3fb, 0x03);
  // THRE interrupt: needs IER.THRI and OUT2; reading IIR acknowledges it.
  uart.Write(0x3fc, 0x08);  // OUT2
  uart.Write(0x3f9, 0x02);  // IER: THRI
  ASSERT_EQ(levels, (std::vector<bool>{true}));
  EXPECT_EQ(uart.Read(0x3fa) & 0x0f, 0x02);
  EXPECT_EQ(levels.back(), false);
  EXPECT_EQ(uart.Read(0x3fa) & 0x0f, 0x01);  // nothing pending now
  // Each byte: the line drops and rises again (a new edge).
  levels.clear();
  for (char c : std::string("hi\n")) uart.Write(0x3f8, static_cast<uint8_t>(c));
  EXPECT_EQ(out, "hi\n");
  EXPECT_EQ(levels.size(), 5u);  // (up), down, up, down, up
  EXPECT_TRUE(levels.back());
  uart.Write(0x3f8, 'x');
  uart.Flush();
  EXPECT_EQ(out, "hi\nx");
}

TEST(CmosRtc, TimeInBcdAndNoUpdateInProgress) {
  CmosRtc rtc;
  // 2026-12-06 13:45:59 UTC, a Sunday.
  const std::time_t t = 1796564759;
  EXPECT_EQ(rtc.ReadRegister(0x00, t), 0x59);
  EXPECT_EQ(rtc.ReadRegister(0x02, t), 0x45);
  EXPECT_EQ(rtc.ReadRegister(0x04, t), 0x13);
  EXPECT_EQ(rtc.ReadRegister(0x07, t), 0x06);
  EXPECT_EQ(rtc.ReadRegister(0x08, t), 0x12);
  EXPECT_EQ(rtc.ReadRegister(0x09, t), 0x26);
  EXPECT_EQ(rtc.ReadRegister(0x32, t), 0x20);
  EXPECT_EQ(rtc.ReadRegister(0x0a, t) & 0x80, 0);  // UIP clear
  EXPECT_EQ(rtc.ReadRegister(0x0d, t), 0x80);
  // CMOS RAM through the ports; bit 7 of the index is the NMI mask.
  rtc.Write(CmosRtc::kIndexPort, 0x80 | 0x40);
  rtc.Write(CmosRtc::kDataPort, 0x77);
  rtc.Write(CmosRtc::kIndexPort, 0x40);
  EXPECT_EQ(rtc.Read(CmosRtc::kDataPort), 0x77);
  rtc.Write(CmosRtc::kIndexPort, 0x00);
  rtc.Write(CmosRtc::kDataPort, 0x99);  // time writes are ignored
  EXPECT_NE(rtc.ReadRegister(0x00, t), 0x99);
}

}  // namespace
}  // namespace kvmglue
