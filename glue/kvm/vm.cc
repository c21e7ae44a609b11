#include "vm.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "boot_info.h"
#include "virtio/log.h"

namespace kvmglue {
namespace {

absl::Status Errno(const char* what) {
  return absl::ErrnoToStatus(errno, what);
}

kvm_segment FlatSegment(uint16_t selector, uint8_t type) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = 0;
  s.db = 1;
  s.s = 1;
  s.l = 0;
  s.g = 1;
  return s;
}

// The host's supported CPUID, as KVM_SET_CPUID2 takes it (grown until
// KVM_GET_SUPPORTED_CPUID stops answering E2BIG).
absl::StatusOr<std::vector<uint8_t>> SupportedCpuid(int kvm_fd) {
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
    c->nent = n;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
      buf.resize(sizeof(kvm_cpuid2) + c->nent * sizeof(kvm_cpuid_entry2));
      return buf;
    }
    if (errno != E2BIG) break;
  }
  return Errno("KVM_GET_SUPPORTED_CPUID");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const VmOptions& options) {
  const uint64_t ram_bytes = options.ram_bytes;
  if (options.vcpus < 1 || options.vcpus > kMaxVcpus) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vCPUs: 1..%d", kMaxVcpus));
  }
  std::unique_ptr<Vm> vm(new Vm());
  vm->kvm_fd_ = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (vm->kvm_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot open /dev/kvm: %s", strerror(errno)));
  }
  if (ioctl(vm->kvm_fd_, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
    return absl::UnavailableError("unexpected KVM API version");
  }
  vm->vm_fd_ = ioctl(vm->kvm_fd_, KVM_CREATE_VM, 0);
  if (vm->vm_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrFormat("KVM_CREATE_VM: %s", strerror(errno)));
  }
  // Harmless where not needed (VMX real-mode emulation wants it).
  (void)ioctl(vm->vm_fd_, KVM_SET_TSS_ADDR, 0xfffbd000);

  // Guest RAM: a memfd, so another process (a vhost-user backend) could map
  // the same pages.
  vm->ram_size_ = ram_bytes;
  vm->mem_fd_ = memfd_create("virtio-kvm-ram", MFD_CLOEXEC);
  if (vm->mem_fd_ < 0) return Errno("memfd_create");
  if (ftruncate(vm->mem_fd_, static_cast<off_t>(ram_bytes)) != 0) {
    return Errno("ftruncate(guest RAM)");
  }
  void* p = mmap(nullptr, ram_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                 vm->mem_fd_, 0);
  if (p == MAP_FAILED) return Errno("mmap(guest RAM)");
  vm->ram_ = static_cast<uint8_t*>(p);
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = ram_bytes;
  region.userspace_addr = reinterpret_cast<uint64_t>(vm->ram_);
  if (ioctl(vm->vm_fd_, KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return Errno("KVM_SET_USER_MEMORY_REGION");
  }
  const virtio::GuestRegion regions[] = {
      {.gpa = 0, .size = ram_bytes, .host = vm->ram_}};
  absl::StatusOr<virtio::GuestMemoryMap> map =
      virtio::GuestMemoryMap::Create(regions);
  if (!map.ok()) return map.status();
  vm->memory_ = *std::move(map);

  // In-kernel PIC + IOAPIC + LAPIC; must precede vCPU creation.
  if (ioctl(vm->vm_fd_, KVM_CREATE_IRQCHIP, 0) != 0) {
    return Errno("KVM_CREATE_IRQCHIP");
  }
  if (options.pit) {
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    if (ioctl(vm->vm_fd_, KVM_CREATE_PIT2, &pit) != 0) {
      return Errno("KVM_CREATE_PIT2");
    }
  }
  vm->has_resample_ =
      ioctl(vm->kvm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD_RESAMPLE) > 0;

  const int run_size = ioctl(vm->kvm_fd_, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return Errno("KVM_GET_VCPU_MMAP_SIZE");
  vm->run_size_ = static_cast<size_t>(run_size);
  absl::StatusOr<std::vector<uint8_t>> cpuid = SupportedCpuid(vm->kvm_fd_);
  if (!cpuid.ok()) return cpuid.status();
  for (int i = 0; i < options.vcpus; ++i) {
    if (absl::Status s = vm->AddVcpu(i, options.vcpus, *cpuid); !s.ok()) {
      return s;
    }
  }
  return vm;
}

absl::Status Vm::AddVcpu(int apic_id, int count,
                         const std::vector<uint8_t>& cpuid) {
  Vcpu v;
  v.fd = ioctl(vm_fd_, KVM_CREATE_VCPU, apic_id);
  if (v.fd < 0) return Errno("KVM_CREATE_VCPU");
  void* r = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, v.fd,
                 0);
  if (r == MAP_FAILED) {
    close(v.fd);
    return Errno("mmap(kvm_run)");
  }
  v.run = static_cast<kvm_run*>(r);
  vcpus_.push_back(v);
  // The host's CPUID (some KVMs refuse KVM_RUN without one), with this
  // vCPU's APIC ID where CPUID reports it: Linux matches the IDs against
  // the MP table and would otherwise see every vCPU as CPU 0.
  std::vector<uint8_t> mine = cpuid;
  auto* c = reinterpret_cast<kvm_cpuid2*>(mine.data());
  const uint32_t ncpus = static_cast<uint32_t>(count);
  for (uint32_t i = 0; i < c->nent; ++i) {
    kvm_cpuid_entry2& e = c->entries[i];
    const uint32_t id = static_cast<uint32_t>(apic_id);
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffff) | (id << 24) | ((ncpus & 0xff) << 16);
    } else if (e.function == 0xb || e.function == 0x1f) {
      e.edx = id;
    }
  }
  if (ioctl(v.fd, KVM_SET_CPUID2, c) != 0) return Errno("KVM_SET_CPUID2");
  return absl::OkStatus();
}

Vm::~Vm() {
  for (const Vcpu& v : vcpus_) {
    if (v.run != nullptr) munmap(v.run, run_size_);
    if (v.fd >= 0) close(v.fd);
  }
  if (vm_fd_ >= 0) close(vm_fd_);
  if (ram_ != nullptr) munmap(ram_, ram_size_);
  if (mem_fd_ >= 0) close(mem_fd_);
  if (kvm_fd_ >= 0) close(kvm_fd_);
}

absl::Status Vm::EnterProtectedMode(uint32_t entry, uint32_t esp) {
  // GDT: null, flat code (0x08), flat data (0x10). The guest's IDT gates
  // name selector 0x08, so the CPU reads this table on every interrupt.
  const uint64_t gdt[3] = {0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull};
  std::memcpy(ram_ + kGdtAddr, gdt, sizeof gdt);

  const int vcpu_fd = vcpus_[0].fd;
  kvm_sregs sregs{};
  if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) != 0) return Errno("KVM_GET_SREGS");
  sregs.cs = FlatSegment(kCodeSelector, 0xb);  // execute/read, accessed
  const kvm_segment data = FlatSegment(kDataSelector, 0x3);  // read/write, accessed
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.gdt.base = kGdtAddr;
  sregs.gdt.limit = sizeof gdt - 1;
  sregs.cr0 |= 0x1;           // PE
  sregs.cr0 &= ~0x80000000u;  // PG off
  sregs.cr4 = 0;
  sregs.efer = 0;
  if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) != 0) return Errno("KVM_SET_SREGS");

  kvm_regs regs{};
  regs.rip = entry;
  regs.rsp = esp;
  regs.rflags = 0x2;  // reserved bit; interrupts off until the guest is ready
  if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) != 0) return Errno("KVM_SET_REGS");
  return absl::OkStatus();
}

absl::Status Vm::EnterLongMode(uint64_t entry, uint64_t rsi, uint64_t gdt,
                               uint64_t page_tables) {
  constexpr uint64_t kPage = 4096;
  constexpr uint64_t kTablesSize = 6 * kPage;  // PML4, PDPT, 4 PDs
  if (page_tables % kPage != 0 || page_tables + kTablesSize > ram_size_ ||
      gdt + 4 * sizeof(uint64_t) > ram_size_) {
    return absl::InvalidArgumentError("boot structures outside RAM");
  }
  // Identity map of the first 4 GiB in 2 MiB pages: what the kernel, its
  // boot_params, command line and initrd need until it builds its own.
  constexpr uint64_t kPresentWritable = 0x3;
  constexpr uint64_t kLargePage = 0x80;
  auto* pml4 = reinterpret_cast<uint64_t*>(ram_ + page_tables);
  auto* pdpt = reinterpret_cast<uint64_t*>(ram_ + page_tables + kPage);
  std::memset(ram_ + page_tables, 0, kTablesSize);
  pml4[0] = (page_tables + kPage) | kPresentWritable;
  for (uint64_t i = 0; i < 4; ++i) {
    const uint64_t pd_addr = page_tables + (2 + i) * kPage;
    pdpt[i] = pd_addr | kPresentWritable;
    auto* pd = reinterpret_cast<uint64_t*>(ram_ + pd_addr);
    for (uint64_t j = 0; j < 512; ++j) {
      pd[j] = ((i << 30) | (j << 21)) | kPresentWritable | kLargePage;
    }
  }
  // GDT: null, null, 64-bit code (0x10 = __BOOT_CS), data (0x18 = __BOOT_DS).
  const uint64_t table[4] = {0, 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull};
  std::memcpy(ram_ + gdt, table, sizeof table);

  const int vcpu_fd = vcpus_[0].fd;
  kvm_sregs sregs{};
  if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) != 0) return Errno("KVM_GET_SREGS");
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 0x10;
  code.type = 0xb;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x18;
  data.type = 0x3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.gdt.base = gdt;
  sregs.gdt.limit = sizeof table - 1;
  sregs.cr3 = page_tables;
  sregs.cr4 = 0x20;                    // PAE
  sregs.cr0 = 0x80000000u | 0x10 | 0x1;  // PG, ET, PE
  sregs.efer = 0x500;                  // LME | LMA
  if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) != 0) return Errno("KVM_SET_SREGS");

  kvm_regs regs{};
  regs.rip = entry;
  regs.rsi = rsi;
  regs.rflags = 0x2;  // interrupts off, as the boot protocol requires
  if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) != 0) return Errno("KVM_SET_REGS");
  return absl::OkStatus();
}

absl::Status Vm::SetIoEventFd(int fd, uint64_t addr, uint32_t len,
                              std::optional<uint64_t> datamatch, bool assign,
                              bool pio) {
  kvm_ioeventfd io{};
  io.addr = addr;
  io.len = len;
  io.fd = fd;
  if (datamatch) {
    io.datamatch = *datamatch;
    io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
  }
  if (pio) io.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (!assign) io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (ioctl(vm_fd_, KVM_IOEVENTFD, &io) != 0) return Errno("KVM_IOEVENTFD");
  return absl::OkStatus();
}

absl::Status Vm::SetIrqFd(int fd, uint32_t gsi, int resample_fd, bool assign) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(fd);
  irqfd.gsi = gsi;
  if (resample_fd >= 0) {
    irqfd.flags |= KVM_IRQFD_FLAG_RESAMPLE;
    irqfd.resamplefd = static_cast<uint32_t>(resample_fd);
  }
  if (!assign) irqfd.flags |= KVM_IRQFD_FLAG_DEASSIGN;
  if (ioctl(vm_fd_, KVM_IRQFD, &irqfd) != 0) return Errno("KVM_IRQFD");
  return absl::OkStatus();
}

void Vm::SetIrqLineLevel(uint32_t gsi, bool level) {
  kvm_irq_level irq{};
  irq.irq = gsi;
  irq.level = level ? 1 : 0;
  stats_.irq_line_ioctls.fetch_add(1, std::memory_order_relaxed);
  if (ioctl(vm_fd_, KVM_IRQ_LINE, &irq) != 0) {
    virtio::Logf(virtio::LogLevel::kError, "vmm: KVM_IRQ_LINE(%u, %d): %s",
                 gsi, level, strerror(errno));
  }
}

absl::Status Vm::SetMsiRoutes(const std::vector<MsiRoute>& msi) {
  // The default x86 routing (what KVM_CREATE_IRQCHIP installs): GSIs 0..15
  // to the PICs and the IOAPIC, 16..23 to the IOAPIC only. Setting a table
  // replaces it, so it is repeated here.
  std::vector<kvm_irq_routing_entry> entries;
  for (uint32_t gsi = 0; gsi < kIoapicPins; ++gsi) {
    if (gsi < 16) {
      kvm_irq_routing_entry pic{};
      pic.gsi = gsi;
      pic.type = KVM_IRQ_ROUTING_IRQCHIP;
      pic.u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER
                                      : KVM_IRQCHIP_PIC_SLAVE;
      pic.u.irqchip.pin = gsi % 8;
      entries.push_back(pic);
    }
    kvm_irq_routing_entry io{};
    io.gsi = gsi;
    io.type = KVM_IRQ_ROUTING_IRQCHIP;
    io.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
    io.u.irqchip.pin = gsi;
    entries.push_back(io);
  }
  for (const MsiRoute& r : msi) {
    kvm_irq_routing_entry e{};
    e.gsi = r.gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(r.address);
    e.u.msi.address_hi = static_cast<uint32_t>(r.address >> 32);
    e.u.msi.data = r.data;
    entries.push_back(e);
  }
  std::vector<uint8_t> buf(sizeof(kvm_irq_routing) +
                           entries.size() * sizeof(kvm_irq_routing_entry));
  auto* table = reinterpret_cast<kvm_irq_routing*>(buf.data());
  table->nr = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.data() + sizeof(kvm_irq_routing), entries.data(),
              entries.size() * sizeof(kvm_irq_routing_entry));
  if (ioctl(vm_fd_, KVM_SET_GSI_ROUTING, table) != 0) {
    return Errno("KVM_SET_GSI_ROUTING");
  }
  return absl::OkStatus();
}

absl::Status Vm::SignalMsi(uint64_t address, uint32_t data) {
  kvm_msi msi{};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  stats_.msi_signal.fetch_add(1, std::memory_order_relaxed);
  if (ioctl(vm_fd_, KVM_SIGNAL_MSI, &msi) < 0) return Errno("KVM_SIGNAL_MSI");
  return absl::OkStatus();
}

std::string Vm::DumpRegisters(int i) {
  kvm_regs r{};
  kvm_sregs s{};
  if (i < 0 || i >= num_vcpus() ||
      ioctl(vcpus_[i].fd, KVM_GET_REGS, &r) != 0 ||
      ioctl(vcpus_[i].fd, KVM_GET_SREGS, &s) != 0) {
    return "(registers unavailable)";
  }
  return absl::StrFormat(
      "vcpu%d rip=%x rsp=%x rflags=%x rax=%x rbx=%x rcx=%x rdx=%x rsi=%x "
      "cr0=%x cr2=%x cr3=%x cr4=%x efer=%x cs=%04x",
      i, r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, s.cr0,
      s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector);
}

// --- IrqLine -------------------------------------------------------------------

void IrqLine::Set(bool asserted) {
  if (vm_ == nullptr) return;
  if (irqfd_ >= 0) {
    // Lowering is KVM's job (at EOI); see Resample().
    if (asserted) {
      vm_->stats().irqfd_line_raises.fetch_add(1, std::memory_order_relaxed);
      (void)eventfd_write(irqfd_, 1);
    }
    return;
  }
  vm_->SetIrqLineLevel(gsi_, asserted);
}

void IrqLine::Resample(bool still_pending) {
  if (vm_ == nullptr || irqfd_ < 0) return;
  vm_->stats().resamples.fetch_add(1, std::memory_order_relaxed);
  if (still_pending) {
    vm_->stats().irqfd_line_raises.fetch_add(1, std::memory_order_relaxed);
    (void)eventfd_write(irqfd_, 1);
  }
}

// --- MsiRouter -------------------------------------------------------------------

MsiRouter::~MsiRouter() {
  for (const Route& r : routes_) {
    (void)vm_->SetIrqFd(r.fd, r.gsi, -1, /*assign=*/false);
    close(r.fd);
  }
}

const char* MsiRouter::routing_state() const {
  if (!routing_ok_) return "no (KVM_SIGNAL_MSI fallback)";
  return vm_->stats().msi_irqfd.load() != 0 ? "yes" : "unused";
}

void MsiRouter::Send(uint64_t address, uint32_t data) {
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Route& r : routes_) {
      if (r.address == address && r.data == data) {
        fd = r.fd;
        break;
      }
    }
    if (fd < 0 && routing_ok_ && routes_.size() < kMaxRoutes) {
      const Route route{address, data,
                        kFirstMsiGsi + static_cast<uint32_t>(routes_.size()),
                        eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
      std::vector<Vm::MsiRoute> table;
      for (const Route& r : routes_) table.push_back({r.gsi, r.address, r.data});
      table.push_back({route.gsi, route.address, route.data});
      absl::Status s = route.fd < 0 ? absl::InternalError("eventfd")
                                    : vm_->SetMsiRoutes(table);
      if (s.ok()) s = vm_->SetIrqFd(route.fd, route.gsi, -1, true);
      if (s.ok()) {
        routes_.push_back(route);
        fd = route.fd;
      } else {
        virtio::Logf(virtio::LogLevel::kWarning,
                     "vmm: MSI routing unavailable (%s); using KVM_SIGNAL_MSI",
                     s.ToString());
        if (route.fd >= 0) close(route.fd);
        routing_ok_ = false;
      }
    }
  }
  if (fd >= 0) {
    vm_->stats().msi_irqfd.fetch_add(1, std::memory_order_relaxed);
    (void)eventfd_write(fd, 1);
    return;
  }
  absl::Status s = vm_->SignalMsi(address, data);
  if (!s.ok()) {
    virtio::Logf(virtio::LogLevel::kError, "vmm: MSI 0x%x/0x%x lost: %s",
                 address, data, s.ToString());
  }
}

}  // namespace kvmglue
