// virtio-kvm — a minimal KVM VMM that embeds libvirtio.
//
// Runs either an unmodified x86-64 Linux kernel (a bzImage or a vmlinux,
// booted through the 64-bit boot protocol: linux_boot.h) or the project's
// flat 32-bit protected-mode test guest (an ELF32 or a raw binary), with
// virtio-mmio and/or virtio-pci devices served by the library:
//
//   virtio-kvm --kernel bzImage --initrd initrd.img --cmdline '...'
//       --cpus 2 --mem 512 --device blk,path=disk.img,transport=pci ...
//   virtio-kvm --kernel guest.elf --mem 32
//       --device rng --device blk,path=disk.img,transport=pci
//       [--transport mmio|pci] [--guest-flags packed,hostile,intx,poll,
//       no-event-idx] [--timeout 60] [--print-placement]
//
// The platform: a 16550A UART at 0x3f8 (IRQ 4; output to stdout), the CMOS
// RTC, the in-kernel PIC/IOAPIC/LAPIC (and PIT for Linux), PCI through
// configuration mechanism #1, ACPI tables and an MP table for Linux, and the
// ACPI PM1 registers (acpi_pm.h). A guest reports its result through the
// exit port 0xf4 (boot_info.h); an ACPI power-off or a guest reset (port
// 0xcf9 or the keyboard controller's reset command) ends the run. Exit
// status:
//   0 the guest reported success, powered off or reset itself
//   1 the guest reported failures
//   2 timeout                         3 the guest crashed (triple fault, ...)
//   4 usage or setup error            77 KVM unavailable (tests skip)
#include <elf.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "acpi_pm.h"
#include "boot_info.h"
#include "cmos_rtc.h"
#include "device_spec.h"
#include "devices.h"
#include "io_thread.h"
#include "linux_boot.h"
#include "pci_bus.h"
#include "uart16550.h"
#include "virtio/log.h"
#include "vm.h"

namespace kvmglue {
namespace {

enum ExitCode : int {
  kExitPass = 0,
  kExitGuestFail = 1,
  kExitTimeout = 2,
  kExitCrash = 3,
  kExitSetup = 4,
  kExitSkip = 77,
};

struct Options {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  bool cmdline_given = false;
  bool acpi = true;
  int cpus = 1;
  uint64_t mem_mib = 0;  // 0: 32 for the test guest, 512 for Linux
  std::vector<DeviceSpec> devices;
  TransportKind default_transport = TransportKind::kMmio;
  uint32_t guest_flags = 0;
  int timeout_s = 60;
  bool print_placement = false;
  bool irq_line_ioctl = false;
};

// What Linux needs on this platform: the serial console and a panic that
// ends the run (a reset) instead of hanging until the timeout. Power-off
// and reset go through ACPI (or, with --no-acpi, the keyboard controller).
constexpr char kDefaultCmdline[] = "console=ttyS0 panic=-1";

// A virtio-mmio device's register window (MmioTransport::kRegionSize).
constexpr uint32_t kMmioRegionBytes = 0x200;

void Usage(FILE* f) {
  std::fprintf(
      f,
      "usage: virtio-kvm --kernel IMAGE [--initrd FILE] [--cmdline TEXT]\n"
      "         [--cpus N] [--mem MiB] [--device SPEC]...\n"
      "         [--transport mmio|pci] [--guest-flags FLAG,...] [--timeout S]\n"
      "         [--print-placement] [--irq-mode irqfd|line] [--no-acpi]\n"
      "  IMAGE: an x86-64 Linux kernel (bzImage, e.g. /boot/vmlinuz-*, or an\n"
      "         uncompressed ELF vmlinux), booted through the 64-bit boot\n"
      "         protocol; or the 32-bit test guest (ELF32 or raw binary).\n"
      "  --initrd FILE    Linux: the initramfs, placed at the top of RAM\n"
      "  --cmdline TEXT   Linux: the kernel command line (default: \"%s\";\n"
      "                   give console=ttyS0 for a console, panic=-1 so that\n"
      "                   a panic ends the run). Alias: --append\n"
      "  --cpus N         vCPUs, 1..%d (default 1)\n"
      "  --no-acpi        Linux: no ACPI tables, only the MP table (the guest\n"
      "                   cannot power off then, and sees no virtio-mmio)\n"
      "  --mem MiB        guest RAM, 4..3072 (default 32; 512 for Linux)\n"
      "  Linux finds virtio-pci devices on the PCI bus and virtio-mmio "
      "devices\n"
      "  in the ACPI DSDT (driver virtio_mmio). A Linux guest ends the run\n"
      "  with 'poweroff -f' or 'reboot -f' (exit 0), or by writing its\n"
      "  failure count to port 0xf4 through /dev/port.\n"
      "  SPEC: the shared device syntax (docs/devices.md):\n%s\n"
      "  and virtio-kvm's own keys, on every type:\n"
      "      [,transport=mmio|pci][,addr=BASE|BB:SS.F][,irq=N]\n"
      "  (net: backend=loopback|tap, one queue pair; blk: up to 16 queues)\n"
      "  FLAG: packed no-event-idx hostile poll intx (passed to the test\n"
      "        guest)\n"
      "Exit status: 0 pass (or the guest powered off or reset), 1 "
      "guest-reported\n"
      "failures, 2 timeout, 3 guest crash, 4 usage/setup error, 77 no KVM.\n",
      kDefaultCmdline, Vm::kMaxVcpus, virtio::catalog::DeviceSpecHelp());
}

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s needs a value", a));
      }
      return std::string(argv[++i]);
    };
    if (a == "--print-placement") {
      o.print_placement = true;
      continue;
    }
    if (a == "--no-acpi") {
      o.acpi = false;
      continue;
    }
    if (a == "--help" || a == "-h") {
      Usage(stdout);
      std::exit(0);
    }
    absl::StatusOr<std::string> v = value();
    if (!v.ok()) return v.status();
    if (a == "--kernel") {
      o.kernel = *v;
    } else if (a == "--initrd") {
      o.initrd = *v;
    } else if (a == "--cmdline" || a == "--append") {
      o.cmdline = *v;
      o.cmdline_given = true;
    } else if (a == "--cpus") {
      if (!absl::SimpleAtoi(*v, &o.cpus) || o.cpus < 1 ||
          o.cpus > Vm::kMaxVcpus) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--cpus: 1..%d", Vm::kMaxVcpus));
      }
    } else if (a == "--mem") {
      if (!absl::SimpleAtoi(*v, &o.mem_mib) || o.mem_mib < 4 ||
          o.mem_mib > 3072) {
        return absl::InvalidArgumentError("--mem: MiB in 4..3072");
      }
    } else if (a == "--device") {
      absl::StatusOr<DeviceSpec> d = ParseDeviceSpec(*v);
      if (!d.ok()) return d.status();
      o.devices.push_back(*d);
    } else if (a == "--transport") {
      if (*v == "mmio") {
        o.default_transport = TransportKind::kMmio;
      } else if (*v == "pci") {
        o.default_transport = TransportKind::kPci;
      } else {
        return absl::InvalidArgumentError("--transport: mmio or pci");
      }
    } else if (a == "--guest-flags") {
      for (absl::string_view f : absl::StrSplit(*v, ',', absl::SkipEmpty())) {
        if (f == "packed") {
          o.guest_flags |= kFlagPacked;
        } else if (f == "no-event-idx") {
          o.guest_flags |= kFlagNoEventIdx;
        } else if (f == "hostile") {
          o.guest_flags |= kFlagHostile;
        } else if (f == "poll") {
          o.guest_flags |= kFlagPoll;
        } else if (f == "intx") {
          o.guest_flags |= kFlagIntx;
        } else {
          return absl::InvalidArgumentError(
              absl::StrFormat("--guest-flags: unknown flag '%s'", f));
        }
      }
    } else if (a == "--irq-mode") {
      if (*v == "irqfd") {
        o.irq_line_ioctl = false;
      } else if (*v == "line") {
        o.irq_line_ioctl = true;
      } else {
        return absl::InvalidArgumentError("--irq-mode: irqfd or line");
      }
    } else if (a == "--timeout") {
      if (!absl::SimpleAtoi(*v, &o.timeout_s) || o.timeout_s <= 0) {
        return absl::InvalidArgumentError("--timeout: seconds > 0");
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown option %s", a));
    }
  }
  if (o.kernel.empty() && !o.print_placement) {
    return absl::InvalidArgumentError("--kernel is required");
  }
  return o;
}

// Loads an ELF32 (PT_LOAD segments at their physical addresses) or a raw
// binary (at kGuestLoadAddr). Returns the entry point.
absl::StatusOr<uint32_t> LoadGuest(const std::string& path, Vm& vm) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot open %s", path));
  const std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  uint8_t* ram = vm.ram();
  const uint64_t ram_size = vm.ram_size();
  if (image.size() >= sizeof(Elf32_Ehdr) &&
      std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) {
    Elf32_Ehdr eh;
    std::memcpy(&eh, image.data(), sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS32 || eh.e_machine != EM_386) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: not an i386 ELF32 image", path));
    }
    for (uint32_t i = 0; i < eh.e_phnum; ++i) {
      const uint64_t at = uint64_t{eh.e_phoff} + uint64_t{i} * eh.e_phentsize;
      if (at + sizeof(Elf32_Phdr) > image.size()) {
        return absl::InvalidArgumentError("truncated program headers");
      }
      Elf32_Phdr ph;
      std::memcpy(&ph, image.data() + at, sizeof ph);
      if (ph.p_type != PT_LOAD) continue;
      if (ph.p_filesz > ph.p_memsz ||
          uint64_t{ph.p_offset} + ph.p_filesz > image.size() ||
          uint64_t{ph.p_paddr} + ph.p_memsz > ram_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: segment at 0x%x (+0x%x) does not fit in RAM",
                            path, ph.p_paddr, ph.p_memsz));
      }
      std::memcpy(ram + ph.p_paddr, image.data() + ph.p_offset, ph.p_filesz);
      std::memset(ram + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
    }
    return eh.e_entry;
  }
  if (kGuestLoadAddr + image.size() > ram_size) {
    return absl::InvalidArgumentError("raw image does not fit in RAM");
  }
  std::memcpy(ram + kGuestLoadAddr, image.data(), image.size());
  return kGuestLoadAddr;
}

// Writes guest console output to stdout. write(2), not stdio: a console
// backend on stdout makes fd 1 O_NONBLOCK, so EAGAIN is waited out here
// instead of losing output.
void WriteStdout(std::string_view text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(1, text.data() + done, text.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{1, POLLOUT, 0};
      (void)poll(&p, 1, 100);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
}

// Legacy ports Linux probes on a PC and that this platform leaves empty:
// reads return all ones ("nothing here") without a guest-error line.
bool IsAbsentLegacyPort(uint16_t port) {
  return (port >= 0x60 && port <= 0x64) ||    // i8042 keyboard controller
         (port >= 0x2f8 && port <= 0x2ff) ||  // COM2
         (port >= 0x3e8 && port <= 0x3ef) ||  // COM3
         (port >= 0x2e8 && port <= 0x2ef) ||  // COM4
         (port >= 0x378 && port <= 0x37f) ||  // LPT1
         (port >= 0x3b0 && port <= 0x3df) ||  // VGA
         (port >= 0x1f0 && port <= 0x1f7) ||  // IDE
         (port >= 0x170 && port <= 0x177) || port == 0x3f6 || port == 0x376 ||
         (port >= 0x510 && port <= 0x51b) ||  // QEMU fw_cfg
         port == 0x87 || port == 0x80 ||      // DMA page, POST
         (port >= 0x40 && port <= 0x43) ||    // PIT (when not in the kernel)
         port == 0x61 ||                      // speaker gate (idem)
         port == 0x20 || port == 0x21 || port == 0xa0 || port == 0xa1 ||
         port == 0x4d0 || port == 0x4d1 ||  // ELCR
         port == 0x2e || port == 0x2f ||    // Super I/O configuration
         port == 0x4e || port == 0x4f || port == 0x92;
}

class Machine {
 public:
  Machine(Vm& vm, std::vector<std::unique_ptr<VmmDevice>>& devices, PciBus& bus)
      : vm_(vm),
        devices_(devices),
        bus_(bus),
        uart_(
            Uart16550::kCom1,
            [&vm](bool level) {
              vm.SetIrqLineLevel(Uart16550::kCom1Irq, level);
            },
            [this](std::string_view line) {
              // A panicking Linux resets the machine (panic=-1): that
              // reset must not read as a clean power-off.
              if (line.find("Kernel panic") != std::string_view::npos) {
                panic_seen_.store(true);
              }
              WriteStdout(line);
            }) {}

  // The loop of vCPU `cpu`. Returns the exit code; the first vCPU to end
  // the run stops the others.
  int Run(int cpu) {
    const int code = Loop(cpu);
    Finish(code);
    return code;
  }

  // Ends the run from outside (timeout): every vCPU leaves KVM_RUN.
  void RequestStop() { Finish(kExitTimeout); }
  bool stopped() const { return stop_.load(); }
  int result() const { return result_.load(); }
  void FlushUart() {
    std::lock_guard<std::mutex> lock(pio_mu_);
    uart_.Flush();
  }

 private:
  void Finish(int code) {
    int expected = -1;
    result_.compare_exchange_strong(expected, code);
    stop_.store(true);
    for (int i = 0; i < vm_.num_vcpus(); ++i) vm_.run(i)->immediate_exit = 1;
  }

  int Loop(int cpu) {
    kvm_run* run = vm_.run(cpu);
    const int fd = vm_.vcpu_fd(cpu);
    for (;;) {
      if (stop_.load()) return kExitTimeout;
      if (ioctl(fd, KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        virtio::Logf(virtio::LogLevel::kError, "vmm: vcpu%d: KVM_RUN: %s", cpu,
                     strerror(errno));
        return kExitCrash;
      }
      switch (run->exit_reason) {
        case KVM_EXIT_IO:
          vm_.stats().pio_exits.fetch_add(1, std::memory_order_relaxed);
          if (std::optional<int> end = HandleIo(run)) return *end;
          break;
        case KVM_EXIT_MMIO:
          vm_.stats().mmio_exits.fetch_add(1, std::memory_order_relaxed);
          HandleMmio(run);
          break;
        case KVM_EXIT_INTR:
          break;
        case KVM_EXIT_HLT:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: vcpu%d halted with interrupts off", cpu);
          return kExitCrash;
        case KVM_EXIT_SHUTDOWN:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: guest shut down (triple fault): %s",
                       vm_.DumpRegisters(cpu));
          return kExitCrash;
        case KVM_EXIT_FAIL_ENTRY:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: vcpu%d: KVM entry failed, reason 0x%x", cpu,
                       run->fail_entry.hardware_entry_failure_reason);
          return kExitCrash;
        case KVM_EXIT_INTERNAL_ERROR:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: KVM internal error, suberror %u: %s",
                       run->internal.suberror, vm_.DumpRegisters(cpu));
          return kExitCrash;
        case KVM_EXIT_SYSTEM_EVENT:
          virtio::Logf(virtio::LogLevel::kInfo,
                       "vmm: guest system event %u: ending the run",
                       run->system_event.type);
          return run->system_event.type == KVM_SYSTEM_EVENT_CRASH ? kExitCrash
                                                                  : kExitPass;
        default:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: unexpected exit reason %u: %s", run->exit_reason,
                       vm_.DumpRegisters(cpu));
          return kExitCrash;
      }
    }
  }

  template <typename... Args>
  void GuestError(const absl::FormatSpec<Args...>& f, const Args&... args) {
    if (errors_.Allow()) {
      virtio::Logf(virtio::LogLevel::kWarning, "vmm: guest error: %s",
                   absl::StrFormat(f, args...));
    }
  }

  // A value when the guest ended the run (its exit code).
  std::optional<int> HandleIo(kvm_run* run) {
    uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
    const uint16_t port = run->io.port;
    const uint32_t size = run->io.size;
    std::lock_guard<std::mutex> lock(pio_mu_);
    for (uint32_t i = 0; i < run->io.count; ++i, data += size) {
      uint32_t value = 0;
      if (run->io.direction == KVM_EXIT_IO_OUT) {
        std::memcpy(&value, data, size);
        if (port == kExitPort) {
          uart_.Flush();
          virtio::Logf(virtio::LogLevel::kInfo, "vmm: guest reported %s (0x%x)",
                       value == 0 ? "success" : "failure", value);
          return value == 0 ? kExitPass : kExitGuestFail;
        }
        if (IsResetRequest(port, size, value)) {
          uart_.Flush();
          if (panic_seen_.load()) {
            virtio::Log(virtio::LogLevel::kError,
                        "vmm: the guest kernel panicked and reset the machine");
            return kExitCrash;
          }
          virtio::Log(virtio::LogLevel::kInfo,
                      "vmm: the guest reset the machine: ending the run");
          return kExitPass;
        }
        if (AcpiPm::Claims(port)) {
          switch (acpi_pm_.Write(port, size, value)) {
            case AcpiPm::Event::kPowerOff:
              uart_.Flush();
              if (panic_seen_.load()) {
                virtio::Log(virtio::LogLevel::kError,
                            "vmm: the guest kernel panicked and powered off");
                return kExitCrash;
              }
              virtio::Log(virtio::LogLevel::kInfo,
                          "vmm: the guest powered off: ending the run");
              return kExitPass;
            case AcpiPm::Event::kBadSleepType:
              GuestError(
                  "PM1a_CNT: SLP_EN with a sleep type other than S5 "
                  "(0x%x)",
                  value);
              break;
            case AcpiPm::Event::kNone:
              break;
          }
        } else if (uart_.Claims(port)) {
          uart_.Write(port, static_cast<uint8_t>(value));
        } else if (port == kResetControlPort && size == 1) {
          // Reset control: only the reset bit matters (above).
        } else if (CmosRtc::Claims(port)) {
          rtc_.Write(port, static_cast<uint8_t>(value));
        } else if (PciBus::Claims(port)) {
          bus_.PortWrite(port, size, value);
        } else if (!IsAbsentLegacyPort(port)) {
          GuestError("write of 0x%x (%u bytes) to unhandled port 0x%x", value,
                     size, port);
        }
      } else {
        if (AcpiPm::Claims(port)) {
          value = acpi_pm_.Read(port, size);
        } else if (uart_.Claims(port)) {
          value = uart_.Read(port);
        } else if (port == kResetControlPort && size == 1) {
          value = 0;
        } else if (CmosRtc::Claims(port)) {
          value = rtc_.Read(port);
        } else if (PciBus::Claims(port)) {
          value = bus_.PortRead(port, size);
        } else {
          value = 0xffffffff;
          if (!IsAbsentLegacyPort(port)) {
            GuestError("read (%u bytes) of unhandled port 0x%x", size, port);
          }
        }
        std::memcpy(data, &value, size);
      }
    }
    return std::nullopt;
  }

  // The PC's two ways to reset: the reset control register (a byte at
  // 0xcf9, inside the PCI CONFIG_ADDRESS dword: bit 2) and the keyboard
  // controller's pulse-reset command (0xfe to 0x64).
  static constexpr uint16_t kResetControlPort = 0xcf9;
  static bool IsResetRequest(uint16_t port, uint32_t size, uint32_t value) {
    return (port == kResetControlPort && size == 1 && (value & 0x4)) ||
           (port == 0x64 && size == 1 && value == 0xfe);
  }

  void HandleMmio(kvm_run* run) {
    const uint64_t gpa = run->mmio.phys_addr;
    const uint32_t len = run->mmio.len;
    if (run->mmio.is_write) {
      uint64_t value = 0;
      std::memcpy(&value, run->mmio.data, len <= 8 ? len : 8);
      for (auto& d : devices_) {
        if (d->MmioWrite(gpa, len, value)) return;
      }
      GuestError("write of 0x%x (%u bytes) to unassigned address 0x%x", value,
                 len, gpa);
      return;
    }
    uint64_t value = ~uint64_t{0};
    bool claimed = false;
    for (auto& d : devices_) {
      if (d->MmioRead(gpa, len, &value)) {
        claimed = true;
        break;
      }
    }
    if (!claimed) {
      GuestError("read (%u bytes) of unassigned address 0x%x", len, gpa);
    }
    std::memcpy(run->mmio.data, &value, len <= 8 ? len : 8);
  }

  Vm& vm_;
  std::vector<std::unique_ptr<VmmDevice>>& devices_;
  // Port I/O from any vCPU: the UART, the RTC and the PCI configuration
  // address register are shared state.
  std::mutex pio_mu_;
  PciBus& bus_;
  Uart16550 uart_;
  CmosRtc rtc_;
  AcpiPm acpi_pm_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> panic_seen_{false};
  std::atomic<int> result_{-1};
  virtio::GuestErrorLimiter errors_;
};

void LogToStderr(virtio::LogLevel level, std::string_view msg) {
  const char* tag = level == virtio::LogLevel::kError     ? "E"
                    : level == virtio::LogLevel::kWarning ? "W"
                    : level == virtio::LogLevel::kInfo    ? "I"
                                                          : "D";
  std::fprintf(stderr, "[virtio-kvm %s] %.*s\n", tag,
               static_cast<int>(msg.size()), msg.data());
}

void NoopSignal(int) {}

int SetupError(const absl::Status& s) {
  std::fprintf(stderr, "virtio-kvm: %s\n", absl::StrCat(s.message()).c_str());
  return kExitSetup;
}

int Main(int argc, char** argv) {
  virtio::SetLogSink(LogToStderr);
  // A console backend on a closed stdout pipe must not kill the VMM.
  signal(SIGPIPE, SIG_IGN);
  absl::StatusOr<Options> opts = ParseArgs(argc, argv);
  if (!opts.ok()) {
    std::fprintf(stderr, "virtio-kvm: %s\n",
                 absl::StrCat(opts.status().message()).c_str());
    Usage(stderr);
    return kExitSetup;
  }

  // Which kind of guest: decides the RAM default and the platform.
  std::vector<uint8_t> kernel_image;
  bool linux_guest = false;
  if (!opts->kernel.empty()) {
    absl::StatusOr<std::vector<uint8_t>> k =
        ReadBootFile(opts->kernel, "kernel", uint64_t{1} << 30);
    if (!k.ok()) return SetupError(k.status());
    kernel_image = *std::move(k);
    linux_guest = LooksLikeLinux(kernel_image);
  }
  if (!linux_guest && (!opts->initrd.empty() || opts->cmdline_given)) {
    return SetupError(absl::InvalidArgumentError(
        "--initrd and --cmdline are for a Linux kernel; --kernel is not one "
        "(expected a bzImage or an x86-64 ELF vmlinux)"));
  }
  if (!linux_guest && !opts->acpi) {
    return SetupError(absl::InvalidArgumentError(
        "--no-acpi is for a Linux kernel; the test guest reads no ACPI"));
  }
  if (linux_guest && opts->guest_flags != 0) {
    return SetupError(absl::InvalidArgumentError(
        "--guest-flags is for the test guest, not for a Linux kernel"));
  }
  if (opts->mem_mib == 0) opts->mem_mib = linux_guest ? 512 : 32;
  const uint64_t ram_size = opts->mem_mib << 20;
  std::vector<uint8_t> initrd;
  if (!opts->initrd.empty()) {
    absl::StatusOr<std::vector<uint8_t>> r =
        ReadBootFile(opts->initrd, "initramfs", ram_size);
    if (!r.ok()) return SetupError(r.status());
    initrd = *std::move(r);
  }

  absl::StatusOr<std::vector<Placement>> placements = ResolvePlacement(
      opts->devices,
      {.ram_size = ram_size, .default_transport = opts->default_transport});
  if (!placements.ok()) return SetupError(placements.status());
  // Disk images are checked before KVM is touched, so a wrong path reads as
  // such (exit 4) on any machine, not as "KVM unavailable".
  for (const DeviceSpec& d : opts->devices) {
    if (d.device.type != virtio::catalog::DeviceType::kBlk ||
        d.device.blk.backend != virtio::catalog::BlockBackendKind::kFile) {
      continue;
    }
    const virtio::catalog::BlockSpec& blk = d.device.blk;
    const int fd =
        open(blk.path.c_str(), (blk.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
      return SetupError(absl::ErrnoToStatus(
          errno, absl::StrFormat("%s: disk image %s", d.id, blk.path)));
    }
    close(fd);
  }

  absl::StatusOr<std::unique_ptr<Vm>> vm_or = Vm::Create(
      {.ram_bytes = ram_size, .vcpus = opts->cpus, .pit = linux_guest});
  if (!vm_or.ok()) {
    std::fprintf(stderr, "virtio-kvm: KVM unavailable: %s\n",
                 absl::StrCat(vm_or.status().message()).c_str());
    return absl::IsUnavailable(vm_or.status()) ? kExitSkip : kExitSetup;
  }
  Vm& vm = **vm_or;
  MsiRouter router(&vm);
  UseIrqLineIoctl(opts->irq_line_ioctl);

  // Devices first (BAR sizes come from the transports), then BAR placement.
  std::vector<std::unique_ptr<VmmDevice>> devices;
  std::vector<uint64_t> bar_sizes;
  for (size_t i = 0; i < opts->devices.size(); ++i) {
    absl::StatusOr<std::unique_ptr<VmmDevice>> d =
        CreateDevice(opts->devices[i], (*placements)[i], vm, router);
    if (!d.ok()) {
      std::fprintf(stderr, "virtio-kvm: %s: %s\n", opts->devices[i].id.c_str(),
                   absl::StrCat(d.status().message()).c_str());
      return kExitSetup;
    }
    bar_sizes.push_back((*d)->bar_size());
    devices.push_back(*std::move(d));
  }
  if (absl::Status s = PlaceBars(*placements, bar_sizes); !s.ok()) {
    return SetupError(s);
  }
  PciBus bus;
  std::vector<PciIntxRoute> pci_intx;
  for (size_t i = 0; i < devices.size(); ++i) {
    VmmDevice& d = *devices[i];
    if ((*placements)[i].transport != TransportKind::kPci) continue;
    d.SetBarAddress((*placements)[i].bar_addr);
    bus.Attach(
        d.placement().pci.slot,
        {.read = [&d](uint32_t off,
                      uint32_t size) { return d.PciConfigRead(off, size); },
         .write = [&d](uint32_t off, uint32_t size,
                       uint32_t v) { d.PciConfigWrite(off, size, v); }});
    pci_intx.push_back(
        {.slot = d.placement().pci.slot, .gsi = d.placement().irq});
  }
  if (opts->print_placement) {
    for (size_t i = 0; i < devices.size(); ++i) {
      std::printf(
          "%s\n",
          FormatPlacement(devices[i]->placement(), opts->devices[i]).c_str());
    }
    std::fflush(stdout);
    if (opts->kernel.empty()) return kExitPass;
  }

  if (linux_guest) {
    std::vector<AcpiMmioDevice> mmio;
    for (const auto& d : devices) {
      const Placement& p = d->placement();
      if (p.transport != TransportKind::kMmio) continue;
      mmio.push_back({.base = static_cast<uint32_t>(p.mmio_addr),
                      .size = kMmioRegionBytes,
                      .gsi = p.irq});
    }
    if (!mmio.empty() && !opts->acpi) {
      virtio::Log(virtio::LogLevel::kWarning,
                  "vmm: without ACPI a Linux guest cannot discover virtio-mmio "
                  "devices (no device tree either): use transport=pci");
    }
    absl::StatusOr<LinuxEntry> entry = LoadLinux(
        {.kernel = std::move(kernel_image),
         .initrd = std::move(initrd),
         .cmdline = opts->cmdline_given ? opts->cmdline : kDefaultCmdline,
         .vcpus = opts->cpus,
         .pci_intx = pci_intx,
         .acpi = opts->acpi,
         .mmio = mmio,
         .pci_mmio_min = kPciWindowBase,
         .pci_mmio_max = kPciWindowEnd - 1},
        absl::Span<uint8_t>(vm.ram(), vm.ram_size()));
    if (!entry.ok()) return SetupError(entry.status());
    if (entry->acpi) {
      virtio::Logf(virtio::LogLevel::kInfo,
                   "vmm: ACPI tables at 0x%x..0x%x (SCI on IRQ %u)",
                   entry->acpi->rsdp, entry->acpi->end, entry->acpi->sci_irq);
    }
    virtio::Logf(virtio::LogLevel::kInfo,
                 "vmm: Linux (%s) at 0x%x..0x%x, initramfs %u KiB at 0x%x, "
                 "%d vCPU(s), %u MiB",
                 entry->compressed ? "bzImage" : "vmlinux", entry->kernel_start,
                 entry->kernel_end, entry->initrd_size >> 10,
                 entry->initrd_start, opts->cpus, opts->mem_mib);
    if (absl::Status s = vm.EnterLongMode(entry->entry, entry->boot_params,
                                          kLinuxGdtAddr, kLinuxPageTablesAddr);
        !s.ok()) {
      return SetupError(s);
    }
  } else {
    absl::StatusOr<uint32_t> entry = LoadGuest(opts->kernel, vm);
    if (!entry.ok()) return SetupError(entry.status());
    BootInfo info{};
    info.magic = kBootInfoMagic;
    info.version = kBootInfoVersion;
    info.flags = opts->guest_flags;
    info.ram_size = static_cast<uint32_t>(ram_size);
    info.num_devices = static_cast<uint32_t>(devices.size());
    for (size_t i = 0; i < devices.size(); ++i) {
      const Placement& p = devices[i]->placement();
      BootDevice& b = info.devices[i];
      b.transport = p.transport == TransportKind::kMmio ? kBootMmio : kBootPci;
      b.device_id = devices[i]->device_id();
      b.addr = static_cast<uint32_t>(
          p.transport == TransportKind::kMmio ? p.mmio_addr : p.bar_addr);
      b.pci_bdf = p.transport == TransportKind::kPci ? p.pci.bdf() : 0;
      b.irq = p.irq;
      b.flags = opts->devices[i].device.blk.readonly ? kDeviceReadOnly : 0;
    }
    std::memcpy(vm.ram() + kBootInfoAddr, &info, sizeof info);
    if (absl::Status s = vm.EnterProtectedMode(*entry, kGuestLoadAddr);
        !s.ok()) {
      return SetupError(s);
    }
  }

  IoThread io;
  for (auto& d : devices) {
    if (absl::Status s = d->Start(io); !s.ok()) {
      std::fprintf(stderr, "virtio-kvm: %s: %s\n", d->placement().id.c_str(),
                   s.ToString().c_str());
      return kExitSetup;
    }
  }
  io.Start();

  // SIGUSR1 (no SA_RESTART) knocks a vCPU out of KVM_RUN when the run ends.
  struct sigaction sa {};
  sa.sa_handler = NoopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);

  Machine machine(vm, devices, bus);
  std::vector<std::thread> vcpus;
  vcpus.reserve(static_cast<size_t>(opts->cpus));
  std::atomic<int> running{opts->cpus};
  for (int cpu = 0; cpu < opts->cpus; ++cpu) {
    vcpus.emplace_back([&, cpu] {
      (void)machine.Run(cpu);
      running.fetch_sub(1);
    });
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(opts->timeout_s);
  bool timed_out = false;
  while (!machine.stopped()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      timed_out = true;
      machine.RequestStop();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Every vCPU leaves KVM_RUN: immediate_exit is set, the signal interrupts
  // one blocked in the kernel (an AP waiting for SIPI, a halted vCPU).
  // The teardown that follows must not hang either: past this deadline the
  // default SIGALRM action ends the process (a non-zero status).
  alarm(60);
  for (int tries = 0; running.load() > 0; ++tries) {
    for (std::thread& t : vcpus) pthread_kill(t.native_handle(), SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (tries == 1000) {
      virtio::Logf(virtio::LogLevel::kError,
                   "vmm: %d vCPU thread(s) still running 10 s after the end "
                   "of the run: %s",
                   running.load(), vm.DumpRegisters(0));
    }
  }
  for (std::thread& t : vcpus) t.join();
  int code = machine.result();
  if (timed_out) {
    code = kExitTimeout;
    virtio::Logf(virtio::LogLevel::kError,
                 "vmm: timeout: the guest did not finish within %d s: %s",
                 opts->timeout_s, vm.DumpRegisters(0));
  }
  machine.FlushUart();
  io.Stop();

  for (auto& d : devices) {
    virtio::Logf(virtio::LogLevel::kInfo, "vmm: %s", d->Summary());
  }
  const VmStats& st = vm.stats();
  virtio::Logf(virtio::LogLevel::kInfo,
               "vmm: stats: mmio_exits=%u pio_exits=%u ioeventfd_kicks=%u "
               "irqfd_line_raises=%u irq_line_ioctls=%u resamples=%u "
               "msi_irqfd=%u msi_signal=%u backend_completions=%u "
               "msi_routing=%s",
               st.mmio_exits.load(), st.pio_exits.load(),
               st.ioeventfd_kicks.load(), st.irqfd_line_raises.load(),
               st.irq_line_ioctls.load(), st.resamples.load(),
               st.msi_irqfd.load(), st.msi_signal.load(),
               st.backend_completions.load(), router.routing_state());
  devices.clear();  // drains backends before the VM (and guest RAM) goes
  return code;
}

}  // namespace
}  // namespace kvmglue

int main(int argc, char** argv) { return kvmglue::Main(argc, argv); }
