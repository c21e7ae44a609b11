// virtio-kvm — a minimal KVM VMM that embeds libvirtio.
//
// Runs a flat 32-bit protected-mode guest (an ELF32 or a raw binary) with
// virtio-mmio and/or virtio-pci devices served by the library:
//
//   virtio-kvm --kernel guest.elf --mem 32
//       --device rng --device blk,path=disk.img,transport=pci
//       [--transport mmio|pci] [--guest-flags packed,hostile,intx,poll,
//       no-event-idx] [--timeout 60] [--print-placement]
//
// The guest writes to the 8250 UART at 0x3f8 (copied to stdout) and reports
// its result through the exit port 0xf4 (boot_info.h). Exit status:
//   0 the guest reported success      1 the guest reported failures
//   2 timeout                         3 the guest crashed (triple fault, ...)
//   4 usage or setup error            77 KVM unavailable (tests skip)
#include <elf.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "boot_info.h"
#include "device_spec.h"
#include "devices.h"
#include "io_thread.h"
#include "pci_bus.h"
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
  uint64_t mem_mib = 32;
  std::vector<DeviceSpec> devices;
  TransportKind default_transport = TransportKind::kMmio;
  uint32_t guest_flags = 0;
  int timeout_s = 60;
  bool print_placement = false;
  bool irq_line_ioctl = false;
};

void Usage() {
  std::fprintf(
      stderr,
      "usage: virtio-kvm --kernel GUEST [--mem MiB] [--device SPEC]...\n"
      "         [--transport mmio|pci] [--guest-flags FLAG,...] [--timeout S]\n"
      "         [--print-placement] [--irq-mode irqfd|line]\n"
      "  SPEC: rng[,id=ID][,transport=mmio|pci][,addr=BASE|BB:SS.F][,irq=N]\n"
      "        blk,path=FILE[,readonly=on][,queues=N][,id=...][,transport=...]"
      "[,addr=...][,irq=N]\n"
      "        net[,backend=loopback|tap][,ifname=NAME][,id=...]...\n"
      "        console[,backend=stdio|pty|socket=PATH|file=PATH][,id=...]...\n"
      "  FLAG: packed no-event-idx hostile poll intx (passed to the guest)\n");
}

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrFormat("%s needs a value", a));
      }
      return std::string(argv[++i]);
    };
    if (a == "--print-placement") {
      o.print_placement = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      Usage();
      std::exit(0);
    }
    absl::StatusOr<std::string> v = value();
    if (!v.ok()) return v.status();
    if (a == "--kernel") {
      o.kernel = *v;
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
      return absl::InvalidArgumentError(absl::StrFormat("unknown option %s", a));
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
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: segment at 0x%x (+0x%x) does not fit in RAM", path, ph.p_paddr,
            ph.p_memsz));
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

// Output-only 8250: THR writes go to stdout a line at a time; LSR says the
// transmitter is always empty; everything else reads 0.
class Uart {
 public:
  static bool Claims(uint16_t port) { return port >= kUartPort && port < kUartPort + 8; }
  uint32_t Read(uint16_t port) { return port == kUartPort + 5 ? 0x60 : 0; }
  void Write(uint16_t port, uint8_t value) {
    if (port != kUartPort) return;  // IER, LCR, MCR, divisor: accepted
    line_.push_back(static_cast<char>(value));
    if (value == '\n' || line_.size() >= 4096) Flush();
  }
  // write(2), not stdio: a console backend on stdout makes fd 1
  // O_NONBLOCK, so EAGAIN is waited out here instead of losing output.
  void Flush() {
    size_t done = 0;
    while (done < line_.size()) {
      const ssize_t n = write(1, line_.data() + done, line_.size() - done);
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
    line_.clear();
  }

 private:
  std::string line_;
};

class Machine {
 public:
  Machine(Vm& vm, std::vector<std::unique_ptr<VmmDevice>>& devices, PciBus& bus)
      : vm_(vm), devices_(devices), bus_(bus) {}

  // The vCPU loop. Returns the exit code.
  int Run() {
    kvm_run* run = vm_.run();
    for (;;) {
      if (stop_.load()) return kExitTimeout;
      if (ioctl(vm_.vcpu_fd(), KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        virtio::Logf(virtio::LogLevel::kError, "vmm: KVM_RUN: %s",
                     strerror(errno));
        return kExitCrash;
      }
      switch (run->exit_reason) {
        case KVM_EXIT_IO:
          vm_.stats().pio_exits.fetch_add(1, std::memory_order_relaxed);
          if (HandleIo(run)) return result_;
          break;
        case KVM_EXIT_MMIO:
          vm_.stats().mmio_exits.fetch_add(1, std::memory_order_relaxed);
          HandleMmio(run);
          break;
        case KVM_EXIT_INTR:
          break;
        case KVM_EXIT_HLT:
          virtio::Log(virtio::LogLevel::kError,
                      "vmm: guest halted with interrupts off");
          return kExitCrash;
        case KVM_EXIT_SHUTDOWN:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: guest shut down (triple fault): %s",
                       vm_.DumpRegisters());
          return kExitCrash;
        case KVM_EXIT_FAIL_ENTRY:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: KVM entry failed, reason 0x%x",
                       run->fail_entry.hardware_entry_failure_reason);
          return kExitCrash;
        case KVM_EXIT_INTERNAL_ERROR:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: KVM internal error, suberror %u: %s",
                       run->internal.suberror, vm_.DumpRegisters());
          return kExitCrash;
        default:
          virtio::Logf(virtio::LogLevel::kError,
                       "vmm: unexpected exit reason %u: %s", run->exit_reason,
                       vm_.DumpRegisters());
          return kExitCrash;
      }
    }
  }

  void RequestStop() { stop_.store(true); }
  void FlushUart() { uart_.Flush(); }

 private:
  template <typename... Args>
  void GuestError(const absl::FormatSpec<Args...>& f, const Args&... args) {
    if (errors_.Allow()) {
      virtio::Logf(virtio::LogLevel::kWarning, "vmm: guest error: %s",
                   absl::StrFormat(f, args...));
    }
  }

  // True when the guest reported its result.
  bool HandleIo(kvm_run* run) {
    uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
    const uint16_t port = run->io.port;
    const uint32_t size = run->io.size;
    for (uint32_t i = 0; i < run->io.count; ++i, data += size) {
      uint32_t value = 0;
      if (run->io.direction == KVM_EXIT_IO_OUT) {
        std::memcpy(&value, data, size);
        if (port == kExitPort) {
          uart_.Flush();
          result_ = value == 0 ? kExitPass : kExitGuestFail;
          virtio::Logf(virtio::LogLevel::kInfo,
                       "vmm: guest reported %s (0x%x)",
                       value == 0 ? "success" : "failure", value);
          return true;
        }
        if (Uart::Claims(port)) {
          uart_.Write(port, static_cast<uint8_t>(value));
        } else if (PciBus::Claims(port)) {
          bus_.PortWrite(port, size, value);
        } else if (port != 0x80 && port != 0x20 && port != 0x21 &&
                   port != 0xa0 && port != 0xa1) {
          // 0x80 is the POST/delay port; the PICs are in the kernel but a
          // write can still land here if the irqchip is absent.
          GuestError("write of 0x%x (%u bytes) to unhandled port 0x%x", value,
                     size, port);
        }
      } else {
        if (Uart::Claims(port)) {
          value = uart_.Read(port);
        } else if (PciBus::Claims(port)) {
          value = bus_.PortRead(port, size);
        } else {
          value = 0xffffffff;
          GuestError("read (%u bytes) of unhandled port 0x%x", size, port);
        }
        std::memcpy(data, &value, size);
      }
    }
    return false;
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
  PciBus& bus_;
  Uart uart_;
  std::atomic<bool> stop_{false};
  int result_ = kExitCrash;
  virtio::GuestErrorLimiter errors_;
};

void LogToStderr(virtio::LogLevel level, std::string_view msg) {
  const char* tag = level == virtio::LogLevel::kError     ? "E"
                    : level == virtio::LogLevel::kWarning ? "W"
                                                          : "I";
  std::fprintf(stderr, "[virtio-kvm %s] %.*s\n", tag,
               static_cast<int>(msg.size()), msg.data());
}

void NoopSignal(int) {}

int Main(int argc, char** argv) {
  virtio::SetLogSink(LogToStderr);
  // A console backend on a closed stdout pipe must not kill the VMM.
  signal(SIGPIPE, SIG_IGN);
  absl::StatusOr<Options> opts = ParseArgs(argc, argv);
  if (!opts.ok()) {
    std::fprintf(stderr, "virtio-kvm: %s\n", std::string(opts.status().message()).c_str());
    Usage();
    return kExitSetup;
  }
  const uint64_t ram_size = opts->mem_mib << 20;
  absl::StatusOr<std::vector<Placement>> placements = ResolvePlacement(
      opts->devices, {.ram_size = ram_size,
                      .default_transport = opts->default_transport});
  if (!placements.ok()) {
    std::fprintf(stderr, "virtio-kvm: %s\n",
                 std::string(placements.status().message()).c_str());
    return kExitSetup;
  }

  absl::StatusOr<std::unique_ptr<Vm>> vm_or = Vm::Create(ram_size);
  if (!vm_or.ok()) {
    std::fprintf(stderr, "virtio-kvm: KVM unavailable: %s\n",
                 std::string(vm_or.status().message()).c_str());
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
      std::fprintf(stderr, "virtio-kvm: %s: %s\n",
                   opts->devices[i].id.c_str(),
                   std::string(d.status().message()).c_str());
      return kExitSetup;
    }
    bar_sizes.push_back((*d)->bar_size());
    devices.push_back(*std::move(d));
  }
  if (absl::Status s = PlaceBars(*placements, bar_sizes); !s.ok()) {
    std::fprintf(stderr, "virtio-kvm: %s\n", std::string(s.message()).c_str());
    return kExitSetup;
  }
  PciBus bus;
  for (size_t i = 0; i < devices.size(); ++i) {
    VmmDevice& d = *devices[i];
    if ((*placements)[i].transport != TransportKind::kPci) continue;
    d.SetBarAddress((*placements)[i].bar_addr);
    bus.Attach(d.placement().pci.slot,
               {.read = [&d](uint32_t off, uint32_t size) {
                  return d.PciConfigRead(off, size);
                },
                .write = [&d](uint32_t off, uint32_t size, uint32_t v) {
                  d.PciConfigWrite(off, size, v);
                }});
  }
  if (opts->print_placement) {
    for (size_t i = 0; i < devices.size(); ++i) {
      std::printf("%s\n",
                  FormatPlacement(devices[i]->placement(), opts->devices[i]).c_str());
    }
    std::fflush(stdout);
    if (opts->kernel.empty()) return kExitPass;
  }

  absl::StatusOr<uint32_t> entry = LoadGuest(opts->kernel, vm);
  if (!entry.ok()) {
    std::fprintf(stderr, "virtio-kvm: %s\n",
                 std::string(entry.status().message()).c_str());
    return kExitSetup;
  }
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
    b.addr = static_cast<uint32_t>(p.transport == TransportKind::kMmio
                                       ? p.mmio_addr
                                       : p.bar_addr);
    b.pci_bdf = p.transport == TransportKind::kPci ? p.pci.bdf() : 0;
    b.irq = p.irq;
    b.flags = opts->devices[i].readonly ? kDeviceReadOnly : 0;
  }
  std::memcpy(vm.ram() + kBootInfoAddr, &info, sizeof info);
  if (absl::Status s = vm.EnterProtectedMode(*entry, kGuestLoadAddr); !s.ok()) {
    std::fprintf(stderr, "virtio-kvm: %s\n", s.ToString().c_str());
    return kExitSetup;
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

  // SIGUSR1 (no SA_RESTART) knocks the vCPU out of KVM_RUN on timeout.
  struct sigaction sa {};
  sa.sa_handler = NoopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);

  Machine machine(vm, devices, bus);
  std::promise<int> done;
  std::future<int> result = done.get_future();
  std::thread vcpu([&] { done.set_value(machine.Run()); });
  int code;
  if (result.wait_for(std::chrono::seconds(opts->timeout_s)) ==
      std::future_status::ready) {
    code = result.get();
  } else {
    machine.RequestStop();
    vm.run()->immediate_exit = 1;
    while (result.wait_for(std::chrono::milliseconds(10)) !=
           std::future_status::ready) {
      pthread_kill(vcpu.native_handle(), SIGUSR1);
    }
    (void)result.get();
    code = kExitTimeout;
    virtio::Logf(virtio::LogLevel::kError,
                 "vmm: timeout: the guest did not report within %d s: %s",
                 opts->timeout_s, vm.DumpRegisters());
  }
  vcpu.join();
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
               st.backend_completions.load(),
               router.routing_state());
  devices.clear();  // drains backends before the VM (and guest RAM) goes
  return code;
}

}  // namespace
}  // namespace kvmglue

int main(int argc, char** argv) { return kvmglue::Main(argc, argv); }
