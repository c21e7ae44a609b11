// glue/kvm/guest/hw.h — the bare-metal pieces of the test guest: port and
// MMIO access, the UART, the IDT and its stubs, LAPIC/IOAPIC, a tick timer.
// 32-bit protected mode, paging off, interrupts through the in-kernel LAPIC.
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_HW_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_HW_H_

#include <cstddef>
#include <cstdint>

#include "boot_info.h"

extern "C" {
// The compiler may emit calls to these for struct copies and zeroing.
void* memcpy(void* d, const void* s, size_t n);
void* memset(void* d, int c, size_t n);
int memcmp(const void* a, const void* b, size_t n);
}

namespace guest {

// --- CPU --------------------------------------------------------------------
inline void outb(uint16_t port, uint8_t v) {
  asm volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}
inline void outw(uint16_t port, uint16_t v) {
  asm volatile("outw %0, %1" ::"a"(v), "Nd"(port));
}
inline void outl(uint16_t port, uint32_t v) {
  asm volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}
inline uint8_t inb(uint16_t port) {
  uint8_t v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint16_t inw(uint16_t port) {
  uint16_t v;
  asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint32_t inl(uint16_t port) {
  uint32_t v;
  asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline void cli() { asm volatile("cli" ::: "memory"); }
inline void sti() { asm volatile("sti" ::: "memory"); }
// sti's one-instruction shadow makes "sti; hlt" atomic: an interrupt that
// became pending while we checked our condition wakes the hlt.
inline void sti_hlt() { asm volatile("sti; hlt" ::: "memory"); }
inline void barrier() { asm volatile("" ::: "memory"); }
// Full barrier (store -> load ordering), as Linux's virtio_mb on x86.
inline void mb() { asm volatile("lock; addl $0, (%%esp)" ::: "memory", "cc"); }

// MMIO with exactly the access width asked for.
inline uint8_t mmio_read8(uint32_t a) { return *reinterpret_cast<volatile uint8_t*>(a); }
inline uint16_t mmio_read16(uint32_t a) { return *reinterpret_cast<volatile uint16_t*>(a); }
inline uint32_t mmio_read32(uint32_t a) { return *reinterpret_cast<volatile uint32_t*>(a); }
inline void mmio_write8(uint32_t a, uint8_t v) { *reinterpret_cast<volatile uint8_t*>(a) = v; }
inline void mmio_write16(uint32_t a, uint16_t v) { *reinterpret_cast<volatile uint16_t*>(a) = v; }
inline void mmio_write32(uint32_t a, uint32_t v) { *reinterpret_cast<volatile uint32_t*>(a) = v; }

// --- UART (8250 at 0x3f8, output only) ----------------------------------------
inline void putc(char c) { outb(kvmglue::kUartPort, static_cast<uint8_t>(c)); }
inline void puts(const char* s) {
  while (*s) putc(*s++);
}
inline void puthex(uint32_t v) {
  puts("0x");
  bool started = false;
  for (int shift = 28; shift >= 0; shift -= 4) {
    const uint32_t d = (v >> shift) & 0xf;
    if (d || started || shift == 0) {
      putc(static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10));
      started = true;
    }
  }
}
inline void putdec(uint32_t v) {
  char buf[11];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) putc(buf[--n]);
}

[[noreturn]] inline void exit_vm(uint32_t failures) {
  outl(kvmglue::kExitPort, failures);
  for (;;) asm volatile("cli; hlt");
}

// --- LAPIC / IOAPIC ------------------------------------------------------------
inline constexpr uint32_t kLapicEoi = 0xb0;
inline constexpr uint32_t kLapicSvr = 0xf0;
inline constexpr uint32_t kLapicLvtTimer = 0x320;
inline constexpr uint32_t kLapicTimerPeriodic = 1u << 17;  // LVT timer mode
inline constexpr uint32_t kLapicTimerInit = 0x380;
inline constexpr uint32_t kLapicTimerDiv = 0x3e0;

inline void lapic_write(uint32_t reg, uint32_t v) {
  mmio_write32(kvmglue::kLapicBase + reg, v);
}
inline void lapic_eoi() { lapic_write(kLapicEoi, 0); }

inline void ioapic_write(uint32_t reg, uint32_t v) {
  mmio_write32(kvmglue::kIoapicBase, reg);
  mmio_write32(kvmglue::kIoapicBase + 0x10, v);
}
// Routes IOAPIC pin `pin` to `vector` on CPU 0: level-triggered, active
// high (how the VMM drives virtio lines), unmasked.
inline void ioapic_route_level(uint32_t pin, uint8_t vector) {
  ioapic_write(0x10 + 2 * pin + 1, 0);                    // destination APIC 0
  ioapic_write(0x10 + 2 * pin, vector | (1u << 15));      // level, fixed
}

// --- Interrupts ------------------------------------------------------------------
inline constexpr uint8_t kVectorTimer = 0xf0;
inline constexpr uint8_t kVectorSpurious = 0xff;
inline constexpr uint8_t kVectorDeviceBase = 0x40;  // 4 per device
inline constexpr uint32_t kVectorsPerDevice = 4;

// Set by the tick handler; ~100 Hz once the timer runs.
extern volatile uint32_t g_ticks;

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_HW_H_
