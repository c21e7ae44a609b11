// kvm_mini_vmm — the smallest real KVM VMM that embeds a libvirtio device.
//
// Creates a KVM virtual machine with 2 MiB of RAM, puts a virtio-rng device
// behind a virtio-mmio register block at 0xd0000000 (interrupt line 5 on the
// in-kernel IOAPIC), and runs a guest of 24 instructions in flat 32-bit
// protected mode that drives the device the way a virtio driver does: reset,
// ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK, one split virtqueue,
// DRIVER_OK, one 32-byte receive buffer, a kick, a wait for the used ring.
// It then reports the used length through an I/O port and the VMM checks
// the entropy landed in guest memory.
//
// Everything virtio — register semantics, feature negotiation, ring
// parsing, address translation, interrupt status — is the library's. The
// VMM's part is what you see in main(): map RAM, build a GuestMemoryMap,
// give the device an interrupt line, forward MMIO exits to the transport.
// (glue/kvm/ is the full version: ioeventfd kicks on an I/O thread, irqfd
// interrupts, virtio-pci with MSI-X, blk/net/console, a test guest.)
//
//   $ build/examples/kvm_mini_vmm
//   guest got 32 bytes of entropy: 9c1f...; device status 0x0f, 1 interrupt
//
// Exit status: 0 on success, 1 on failure, 77 when /dev/kvm is unusable.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "virtio/guest_memory.h"
#include "virtio/mmio_interrupt.h"
#include "virtio/mmio_transport.h"
#include "virtio/rng_device.h"
#include "virtio/spec.h"

namespace {

constexpr uint64_t kRamSize = 2 << 20;
constexpr uint32_t kMmioBase = 0xd000'0000;  // virtio-mmio register block
constexpr uint32_t kIrq = 5;                 // IOAPIC pin
constexpr uint32_t kCodeAddr = 0x1000;
constexpr uint32_t kDesc = 0x2000, kAvail = 0x2080, kUsed = 0x2100;  // ring
constexpr uint32_t kBuffer = 0x3000, kBufferLen = 32;
constexpr uint16_t kExitPort = 0xf4;

int g_vm = -1;  // the VM fd, for the interrupt line

// --- The two things libvirtio asks of a VMM -----------------------------------
// 1. An interrupt line. MmioInterrupt keeps the virtio-mmio InterruptStatus
//    register and calls Set() when the line level changes; here that is a
//    KVM_IRQ_LINE on the in-kernel IOAPIC (glue/kvm uses an irqfd instead).
struct KvmIrqLine {
  void Set(bool level) {
    kvm_irq_level irq{};
    irq.irq = kIrq;
    irq.level = level ? 1 : 0;
    ioctl(g_vm, KVM_IRQ_LINE, &irq);
    raised += level ? 1 : 0;
  }
  int raised = 0;
};

// 2. Hypervisor traits: how guest memory is reached and interrupts sent.
struct Traits {
  using Memory = virtio::GuestMemoryMap;
  using Interrupt = virtio::MmioInterrupt<KvmIrqLine>;
};
using Rng = virtio::RngDevice<Traits>;

// --- The guest, assembled by hand (three instruction forms suffice) ---------------
struct Guest {
  std::vector<uint8_t> code;
  void Bytes(std::initializer_list<uint8_t> b) { code.insert(code.end(), b); }
  void Le(uint32_t v, int n) {
    for (int i = 0; i < n; ++i) code.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  // movl $value, (addr)
  void Store32(uint32_t addr, uint32_t value) {
    Bytes({0xc7, 0x05});
    Le(addr, 4);
    Le(value, 4);
  }
  // movw $value, (addr)
  void Store16(uint32_t addr, uint16_t value) {
    Bytes({0x66, 0xc7, 0x05});
    Le(addr, 4);
    Le(value, 2);
  }
  // 1: cmpw $0, (addr); je 1b
  void WaitNonZero16(uint32_t addr) {
    Bytes({0x66, 0x83, 0x3d});
    Le(addr, 4);
    Bytes({0x00, 0x74, 0xf6});
  }
  // movl (addr), %eax; outl %eax, $port
  void Report(uint32_t addr) {
    Bytes({0xa1});
    Le(addr, 4);
    Bytes({0xe7, static_cast<uint8_t>(kExitPort)});
  }
  void Reg(uint64_t reg, uint32_t value) {
    Store32(kMmioBase + static_cast<uint32_t>(reg), value);
  }
};

std::vector<uint8_t> GuestProgram() {
  namespace mmio = virtio::mmio;
  namespace spec = virtio::spec;
  Guest g;
  g.Reg(mmio::kStatus, 0);  // reset
  g.Reg(mmio::kStatus, spec::kStatusAcknowledge);
  g.Reg(mmio::kStatus, spec::kStatusAcknowledge | spec::kStatusDriver);
  g.Reg(mmio::kDriverFeaturesSel, 1);  // features 32..63:
  g.Reg(mmio::kDriverFeatures, 1);     //   VIRTIO_F_VERSION_1 (bit 32)
  g.Reg(mmio::kStatus, spec::kStatusAcknowledge | spec::kStatusDriver |
                           spec::kStatusFeaturesOk);
  g.Reg(mmio::kQueueSel, 0);
  g.Reg(mmio::kQueueNum, 8);
  g.Reg(mmio::kQueueDescLow, kDesc);
  g.Reg(mmio::kQueueDriverLow, kAvail);
  g.Reg(mmio::kQueueDeviceLow, kUsed);
  g.Reg(mmio::kQueueReady, 1);
  g.Reg(mmio::kStatus, spec::kStatusAcknowledge | spec::kStatusDriver |
                           spec::kStatusFeaturesOk | spec::kStatusDriverOk);
  // Descriptor 0 = {addr kBuffer, len 32, flags WRITE}; avail ring[0] = 0,
  // avail idx = 1; kick queue 0; wait for used idx; report used len.
  g.Store32(kDesc + 0, kBuffer);
  g.Store32(kDesc + 8, kBufferLen);
  g.Store32(kDesc + 12, spec::kDescFlagWrite);
  g.Store16(kAvail + 4, 0);
  g.Store16(kAvail + 2, 1);
  g.Reg(mmio::kQueueNotify, 0);
  g.WaitNonZero16(kUsed + 2);
  g.Report(kUsed + 8);
  return g.code;
}

int Fail(const char* what) {
  std::fprintf(stderr, "kvm_mini_vmm: %s: %s\n", what, std::strerror(errno));
  return 1;
}

}  // namespace

int main() {
  // --- KVM: a VM, RAM, an in-kernel irqchip, one vCPU -------------------------------
  const int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0 || (g_vm = ioctl(kvm, KVM_CREATE_VM, 0)) < 0) {
    std::printf("SKIP: KVM unavailable: %s\n", std::strerror(errno));
    return 77;
  }
  auto* ram = static_cast<uint8_t*>(mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (ram == MAP_FAILED) return Fail("mmap");
  kvm_userspace_memory_region slot{.slot = 0,
                                   .flags = 0,
                                   .guest_phys_addr = 0,
                                   .memory_size = kRamSize,
                                   .userspace_addr = reinterpret_cast<uint64_t>(ram)};
  if (ioctl(g_vm, KVM_SET_USER_MEMORY_REGION, &slot) != 0) return Fail("memslot");
  if (ioctl(g_vm, KVM_CREATE_IRQCHIP, 0) != 0) return Fail("KVM_CREATE_IRQCHIP");
  const int vcpu = ioctl(g_vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return Fail("KVM_CREATE_VCPU");
  const int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  auto* run = static_cast<kvm_run*>(
      mmap(nullptr, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0));
  if (run == MAP_FAILED) return Fail("mmap(kvm_run)");

  // --- libvirtio: guest memory, the device, its transport ---------------------------
  const virtio::GuestRegion regions[] = {{.gpa = 0, .size = kRamSize, .host = ram}};
  absl::StatusOr<virtio::GuestMemoryMap> memory = virtio::GuestMemoryMap::Create(regions);
  if (!memory.ok()) return Fail("GuestMemoryMap");
  Traits::Interrupt irq;
  Rng rng(*memory, irq, {.name = "rng0"});
  virtio::MmioTransport<Rng> transport(rng);

  // --- The guest: code at kCodeAddr, flat 32-bit protected mode ---------------------
  const std::vector<uint8_t> code = GuestProgram();
  std::memcpy(ram + kCodeAddr, code.data(), code.size());
  kvm_sregs sregs{};
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) != 0) return Fail("KVM_GET_SREGS");
  kvm_segment flat{.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 3,
                   .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
                   .avl = 0, .unusable = 0, .padding = 0};
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat;
  flat.selector = 0x08;
  flat.type = 0xb;  // code: execute/read
  sregs.cs = flat;
  sregs.cr0 |= 1;  // protected mode, no paging
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) != 0) return Fail("KVM_SET_SREGS");
  kvm_regs regs{};
  regs.rip = kCodeAddr;
  regs.rflags = 2;
  if (ioctl(vcpu, KVM_SET_REGS, &regs) != 0) return Fail("KVM_SET_REGS");

  // --- The vCPU loop: MMIO exits in the window go to the transport -------------------
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) != 0) {
      if (errno == EINTR) continue;
      return Fail("KVM_RUN");
    }
    if (run->exit_reason == KVM_EXIT_MMIO) {
      const uint64_t gpa = run->mmio.phys_addr;
      const uint32_t len = run->mmio.len;
      const bool ours = gpa >= kMmioBase && gpa < kMmioBase + transport.kRegionSize;
      uint32_t value = 0;
      if (run->mmio.is_write) {
        std::memcpy(&value, run->mmio.data, len < 4 ? len : 4);
        if (ours) transport.Write(gpa - kMmioBase, len, value);
      } else {
        value = ours ? transport.Read(gpa - kMmioBase, len) : 0xffffffff;
        std::memcpy(run->mmio.data, &value, len < 4 ? len : 4);
      }
      continue;
    }
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == kExitPort) break;
    std::fprintf(stderr, "kvm_mini_vmm: unexpected exit %u\n", run->exit_reason);
    return 1;
  }

  // --- Check what the guest saw --------------------------------------------------
  uint32_t used_len = 0;
  std::memcpy(&used_len, reinterpret_cast<uint8_t*>(run) + run->io.data_offset, 4);
  bool nonzero = false;
  std::printf("guest got %u bytes of entropy: ", used_len);
  for (uint32_t i = 0; i < kBufferLen; ++i) {
    nonzero |= ram[kBuffer + i] != 0;
    std::printf("%02x", ram[kBuffer + i]);
  }
  std::printf("; device status 0x%02x, %d interrupt(s)\n", rng.status(),
              irq.line().raised);
  const bool ok = used_len == kBufferLen && nonzero &&
                  rng.status() == (virtio::spec::kStatusAcknowledge |
                                   virtio::spec::kStatusDriver |
                                   virtio::spec::kStatusFeaturesOk |
                                   virtio::spec::kStatusDriverOk) &&
                  irq.line().raised > 0;
  munmap(run, run_size);
  close(vcpu);
  close(g_vm);
  close(kvm);
  munmap(ram, kRamSize);
  return ok ? 0 : 1;
}
