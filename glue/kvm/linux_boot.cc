#include "linux_boot.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace kvmglue {
namespace {

// boot_params offsets (arch/x86/include/uapi/asm/bootparam.h). The setup
// header starts at 0x1f1 in both the bzImage file and boot_params.
constexpr uint64_t kAcpiRsdpAddr = 0x070;
constexpr uint64_t kExtRamdiskImage = 0x0c0;
constexpr uint64_t kExtRamdiskSize = 0x0c4;
constexpr uint64_t kExtCmdLinePtr = 0x0c8;
constexpr uint64_t kE820Entries = 0x1e8;
constexpr uint64_t kSetupHeader = 0x1f1;
constexpr uint64_t kSetupSects = 0x1f1;
constexpr uint64_t kBootFlag = 0x1fe;
constexpr uint64_t kHeaderLengthByte = 0x201;  // jump's displacement
constexpr uint64_t kHeaderMagic = 0x202;
constexpr uint64_t kVersion = 0x206;
constexpr uint64_t kTypeOfLoader = 0x210;
constexpr uint64_t kLoadFlags = 0x211;
constexpr uint64_t kRamdiskImage = 0x218;
constexpr uint64_t kRamdiskSize = 0x21c;
constexpr uint64_t kCmdLinePtr = 0x228;
constexpr uint64_t kInitrdAddrMax = 0x22c;
constexpr uint64_t kKernelAlignment = 0x230;
constexpr uint64_t kXLoadFlags = 0x236;
constexpr uint64_t kCmdlineSize = 0x238;
constexpr uint64_t kPrefAddress = 0x258;
constexpr uint64_t kInitSize = 0x260;
constexpr uint64_t kE820Table = 0x2d0;
constexpr uint64_t kE820MaxEntries = 128;
constexpr uint64_t kBootParamsSize = 4096;

constexpr uint16_t kBootFlagMagic = 0xaa55;
constexpr uint32_t kHdrS = 0x53726448;  // "HdrS"
constexpr uint16_t kMinVersion = 0x020c;  // 2.12: xloadflags
constexpr uint16_t kXlfKernel64 = 1u << 0;
constexpr uint8_t kLoadedHigh = 1u << 0;
constexpr uint8_t kUndefinedLoader = 0xff;
constexpr uint64_t kEntry64Offset = 0x200;
// Linux's COMMAND_LINE_SIZE on x86, for a vmlinux (which has no header).
constexpr uint64_t kVmlinuxCmdlineSize = 2048;

constexpr uint32_t kE820Ram = 1;
constexpr uint32_t kE820Reserved = 2;

constexpr uint64_t kPage = 4096;

template <typename T>
T Get(absl::Span<const uint8_t> b, uint64_t off) {
  T v{};
  if (off + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

template <typename T>
void Put(uint8_t* base, uint64_t off, T v) {
  std::memcpy(base + off, &v, sizeof(T));
}

absl::Status Invalid(const std::string& why) {
  return absl::InvalidArgumentError(why);
}

uint64_t MiB(uint64_t bytes) { return (bytes + (1 << 20) - 1) >> 20; }

bool IsElf64(absl::Span<const uint8_t> image) {
  return image.size() >= sizeof(Elf64_Ehdr) &&
         std::memcmp(image.data(), ELFMAG, SELFMAG) == 0 &&
         image[EI_CLASS] == ELFCLASS64;
}

bool IsBzImage(absl::Span<const uint8_t> image) {
  return Get<uint32_t>(image, kHeaderMagic) == kHdrS;
}

struct Loaded {
  uint64_t entry = 0;
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t initrd_addr_max = 0;
  uint64_t cmdline_size = 0;
};

absl::StatusOr<Loaded> LoadBzImage(absl::Span<const uint8_t> image,
                                   absl::Span<uint8_t> ram, uint8_t* params) {
  if (image.size() < kInitSize + 4) return Invalid("bzImage: truncated header");
  if (Get<uint16_t>(image, kBootFlag) != kBootFlagMagic) {
    return Invalid("bzImage: no 0xaa55 boot flag");
  }
  const uint16_t version = Get<uint16_t>(image, kVersion);
  if (version < kMinVersion) {
    return Invalid(absl::StrFormat(
        "bzImage: boot protocol %u.%02u is older than 2.12", version >> 8,
        version & 0xff));
  }
  if (!(Get<uint16_t>(image, kXLoadFlags) & kXlfKernel64)) {
    return Invalid("bzImage: no 64-bit entry point (XLF_KERNEL_64 unset)");
  }
  uint64_t setup_sects = Get<uint8_t>(image, kSetupSects);
  if (setup_sects == 0) setup_sects = 4;
  const uint64_t pm_offset = (setup_sects + 1) * 512;
  if (pm_offset >= image.size()) return Invalid("bzImage: no kernel after setup");
  const uint64_t pm_size = image.size() - pm_offset;
  const uint64_t load = Get<uint64_t>(image, kPrefAddress);
  const uint64_t init_size = Get<uint32_t>(image, kInitSize);
  const uint64_t alignment = Get<uint32_t>(image, kKernelAlignment);
  if (load < kLinuxHighRamStart || (alignment != 0 && load % alignment != 0)) {
    return Invalid(absl::StrFormat("bzImage: unusable load address 0x%x", load));
  }
  const uint64_t end = load + std::max(pm_size, init_size);
  if (end > ram.size()) {
    return Invalid(absl::StrFormat(
        "the kernel needs %u MiB of RAM from 0x%x (--mem is %u MiB)",
        MiB(end - load), load, MiB(ram.size())));
  }
  std::memcpy(ram.data() + load, image.data() + pm_offset, pm_size);

  // The setup header as the kernel built it; its length is the jump at
  // 0x200's displacement.
  const uint64_t header_end = kHeaderMagic + Get<uint8_t>(image, kHeaderLengthByte);
  if (header_end > image.size() || header_end > kE820Table) {
    return Invalid("bzImage: setup header length out of range");
  }
  std::memcpy(params + kSetupHeader, image.data() + kSetupHeader,
              header_end - kSetupHeader);
  return Loaded{.entry = load + kEntry64Offset,
                .start = load,
                .end = end,
                .initrd_addr_max = Get<uint32_t>(image, kInitrdAddrMax),
                .cmdline_size = Get<uint32_t>(image, kCmdlineSize)};
}

absl::StatusOr<Loaded> LoadVmlinux(absl::Span<const uint8_t> image,
                                   absl::Span<uint8_t> ram, uint8_t* params) {
  Elf64_Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof eh);
  if (eh.e_machine != EM_X86_64) return Invalid("ELF64 image is not x86-64");
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return Invalid("ELF64: unexpected program header size");
  }
  Loaded l{.entry = eh.e_entry,
           .start = ~uint64_t{0},
           .end = 0,
           .initrd_addr_max = 0x7fffffff,
           .cmdline_size = kVmlinuxCmdlineSize};
  bool entry_loaded = false;
  for (uint32_t i = 0; i < eh.e_phnum; ++i) {
    const uint64_t at = eh.e_phoff + uint64_t{i} * sizeof(Elf64_Phdr);
    if (at < eh.e_phoff || at + sizeof(Elf64_Phdr) > image.size()) {
      return Invalid("ELF64: truncated program headers");
    }
    Elf64_Phdr ph;
    std::memcpy(&ph, image.data() + at, sizeof ph);
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz || ph.p_offset > image.size() ||
        ph.p_filesz > image.size() - ph.p_offset) {
      return Invalid("ELF64: segment outside the file");
    }
    if (ph.p_paddr < kLinuxHighRamStart || ph.p_memsz > ram.size() ||
        ph.p_paddr > ram.size() - ph.p_memsz) {
      return Invalid(absl::StrFormat(
          "the kernel's segment at 0x%x (%u MiB) does not fit in %u MiB of RAM",
          ph.p_paddr, MiB(ph.p_memsz), MiB(ram.size())));
    }
    std::memcpy(ram.data() + ph.p_paddr, image.data() + ph.p_offset,
                ph.p_filesz);
    std::memset(ram.data() + ph.p_paddr + ph.p_filesz, 0,
                ph.p_memsz - ph.p_filesz);
    l.start = std::min<uint64_t>(l.start, ph.p_paddr);
    l.end = std::max<uint64_t>(l.end, ph.p_paddr + ph.p_memsz);
    if (eh.e_entry >= ph.p_paddr && eh.e_entry < ph.p_paddr + ph.p_memsz) {
      entry_loaded = true;
    }
  }
  if (l.end == 0) return Invalid("ELF64: no loadable segment");
  if (!entry_loaded) {
    return Invalid(absl::StrFormat(
        "ELF64: entry 0x%x is not a physical address inside the kernel "
        "(not a vmlinux?)",
        eh.e_entry));
  }
  // No setup header in a vmlinux: the fields the kernel reads are made up.
  Put<uint16_t>(params, kBootFlag, kBootFlagMagic);
  Put<uint32_t>(params, kHeaderMagic, kHdrS);
  Put<uint16_t>(params, kVersion, 0x020f);
  Put<uint8_t>(params, kLoadFlags, kLoadedHigh);
  Put<uint32_t>(params, kKernelAlignment, 0x200000);
  return l;
}

}  // namespace

bool LooksLikeLinux(absl::Span<const uint8_t> image) {
  if (IsBzImage(image)) return true;
  return IsElf64(image) && Get<uint16_t>(image, 18) == EM_X86_64;
}

absl::StatusOr<LinuxEntry> LoadLinux(const LinuxBootConfig& config,
                                     absl::Span<uint8_t> ram) {
  if (ram.size() < 2 * kLinuxHighRamStart) {
    return Invalid("Linux needs more than 2 MiB of RAM");
  }
  uint8_t* params = ram.data() + kLinuxBootParamsAddr;
  std::memset(params, 0, kBootParamsSize);

  absl::Span<const uint8_t> image(config.kernel);
  absl::StatusOr<Loaded> loaded =
      IsBzImage(image)  ? LoadBzImage(image, ram, params)
      : IsElf64(image) ? LoadVmlinux(image, ram, params)
                        : Invalid("the kernel is neither a bzImage nor an "
                                  "ELF64 vmlinux");
  if (!loaded.ok()) return loaded.status();
  LinuxEntry out{.entry = loaded->entry,
                 .boot_params = kLinuxBootParamsAddr,
                 .kernel_start = loaded->start,
                 .kernel_end = loaded->end,
                 .compressed = IsBzImage(image)};

  Put<uint8_t>(params, kTypeOfLoader, kUndefinedLoader);

  // Command line: the kernel reads at most cmdline_size bytes, NUL included.
  const uint64_t cmdline_max =
      std::min<uint64_t>(loaded->cmdline_size ? loaded->cmdline_size : 256,
                         kLinuxCmdlineMax);
  if (config.cmdline.size() + 1 > cmdline_max) {
    return Invalid(absl::StrFormat(
        "the command line is %u bytes; this kernel takes at most %u",
        config.cmdline.size(), cmdline_max - 1));
  }
  std::memcpy(ram.data() + kLinuxCmdlineAddr, config.cmdline.data(),
              config.cmdline.size());
  ram[kLinuxCmdlineAddr + config.cmdline.size()] = 0;
  Put<uint32_t>(params, kCmdLinePtr, static_cast<uint32_t>(kLinuxCmdlineAddr));
  Put<uint32_t>(params, kExtCmdLinePtr, 0);

  // The initramfs as high as the kernel allows: out of the way of the
  // kernel's own decompression and early allocations.
  if (!config.initrd.empty()) {
    const uint64_t size = config.initrd.size();
    const uint64_t top =
        std::min<uint64_t>(ram.size(), loaded->initrd_addr_max + 1);
    const uint64_t start = size < top ? ((top - size) & ~(kPage - 1)) : 0;
    if (size >= top || start < out.kernel_end) {
      return Invalid(absl::StrFormat(
          "the initramfs (%u MiB) does not fit between the kernel's end "
          "(%u MiB) and the top of RAM (%u MiB): raise --mem",
          MiB(size), MiB(out.kernel_end), MiB(top)));
    }
    std::memcpy(ram.data() + start, config.initrd.data(), size);
    Put<uint32_t>(params, kRamdiskImage, static_cast<uint32_t>(start));
    Put<uint32_t>(params, kRamdiskSize, static_cast<uint32_t>(size));
    Put<uint32_t>(params, kExtRamdiskImage, static_cast<uint32_t>(start >> 32));
    Put<uint32_t>(params, kExtRamdiskSize, static_cast<uint32_t>(size >> 32));
    out.initrd_start = start;
    out.initrd_size = size;
  }

  // e820: conventional memory below the EBDA, the BIOS area (where the ACPI
  // and MP tables live) reserved, everything from 1 MiB up as RAM.
  struct E820 {
    uint64_t addr, size;
    uint32_t type;
  };
  const E820 map[] = {
      {0, kLinuxLowRamEnd, kE820Ram},
      {kLinuxLowRamEnd, 0xa0000 - kLinuxLowRamEnd, kE820Reserved},
      {kLinuxAcpiAddr, kLinuxHighRamStart - kLinuxAcpiAddr, kE820Reserved},
      {kLinuxHighRamStart, ram.size() - kLinuxHighRamStart, kE820Ram},
  };
  static_assert(std::size(map) <= kE820MaxEntries);
  for (size_t i = 0; i < std::size(map); ++i) {
    uint8_t* e = params + kE820Table + i * 20;
    Put<uint64_t>(e, 0, map[i].addr);
    Put<uint64_t>(e, 8, map[i].size);
    Put<uint32_t>(e, 16, map[i].type);
  }
  Put<uint8_t>(params, kE820Entries, static_cast<uint8_t>(std::size(map)));

  if (absl::Status s = WriteMpTable(ram, kLinuxMpTableAddr,
                                    kLinuxHighRamStart - kLinuxMpTableAddr,
                                    config.vcpus, config.pci_intx);
      !s.ok()) {
    return s;
  }
  if (config.acpi) {
    absl::StatusOr<AcpiLayout> acpi = WriteAcpiTables(
        ram, kLinuxAcpiAddr, kLinuxMpTableAddr - kLinuxAcpiAddr,
        {.vcpus = config.vcpus,
         .pci_intx = config.pci_intx,
         .mmio = config.mmio,
         .pci_mmio_min = config.pci_mmio_min,
         .pci_mmio_max = config.pci_mmio_max});
    if (!acpi.ok()) return acpi.status();
    Put<uint64_t>(params, kAcpiRsdpAddr, acpi->rsdp);
    out.acpi = *acpi;
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> ReadBootFile(const std::string& path,
                                                  const char* what,
                                                  uint64_t max_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrFormat("%s %s: %s", what, path, strerror(errno)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrFormat("%s %s: not a regular file", what, path));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s %s: %u MiB is larger than guest RAM allows", what, path,
        MiB(static_cast<uint64_t>(st.st_size))));
  }
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = read(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s %s: read failed: %s", what, path, n < 0 ? strerror(errno) : "EOF"));
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  if (data.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s %s: empty file", what, path));
  }
  return data;
}

}  // namespace kvmglue
