// glue/kvm/guest/runtime.cc — the test guest's runtime (runtime.h): the C
// library functions, the entry point, the interrupt stubs and dispatch, the
// timer tick and the DMA allocator.
#include "guest/runtime.h"

#include <cstdint>

#include "boot_info.h"
#include "guest/hw.h"
#include "guest/virtio_guest.h"

// Byte loops through volatile pointers, so the compiler cannot turn them
// back into calls to themselves.
extern "C" {
void* memcpy(void* d, const void* s, size_t n) {
  volatile uint8_t* dp = static_cast<uint8_t*>(d);
  const volatile uint8_t* sp = static_cast<const uint8_t*>(s);
  while (n--) *dp++ = *sp++;
  return d;
}
void* memset(void* d, int c, size_t n) {
  volatile uint8_t* dp = static_cast<uint8_t*>(d);
  while (n--) *dp++ = static_cast<uint8_t>(c);
  return d;
}
int memcmp(const void* a, const void* b, size_t n) {
  const volatile uint8_t* x = static_cast<const uint8_t*>(a);
  const volatile uint8_t* y = static_cast<const uint8_t*>(b);
  for (; n; --n, ++x, ++y) {
    if (*x != *y) return *x < *y ? -1 : 1;
  }
  return 0;
}
extern char _end[];
void guest_main();
void isr_dispatch(uint32_t vector, uint32_t word1, uint32_t word2);
}

// --- Entry, stack and interrupt stubs ----------------------------------------
asm(R"(
  .section .text.start, "ax"
  .globl _start
_start:
  cli
  movl $guest_stack_top, %esp
  call guest_main
1: cli
  hlt
  jmp 1b

  .text
  .align 16
  .globl isr_stubs
isr_stubs:
  .set vec, 0
  .rept 256
  .align 16
  pushl $vec
  jmp isr_common
  .set vec, vec + 1
  .endr

isr_common:
  pushal
  cld
  pushl 40(%esp)          /* the word above: eip, or an error code */
  pushl 40(%esp)          /* again: after the vector */
  pushl 40(%esp)          /* the vector */
  call isr_dispatch
  addl $12, %esp
  popal
  addl $4, %esp           /* the vector; now eip, cs, eflags */
  iret

  .bss
  .align 16
  .space 16384
guest_stack_top:
  .text
)");

namespace guest {

volatile uint32_t g_ticks = 0;
Dev g_devs[kvmglue::kMaxBootDevices];
uint32_t g_num_devs = 0;

namespace {

// --- Allocation --------------------------------------------------------------
uint32_t g_heap = 0;
uint32_t g_heap_end = 0;

// --- IDT ---------------------------------------------------------------------
struct IdtGate {
  uint16_t offset_lo;
  uint16_t selector;
  uint8_t zero;
  uint8_t type;
  uint16_t offset_hi;
} __attribute__((packed));
IdtGate g_idt[256];

struct __attribute__((packed)) IdtPointer {
  uint16_t limit;
  uint32_t base;
};

extern "C" char isr_stubs[];

constexpr uint32_t kTickCount = 10000000;

const char* const kExceptionNames[] = {"#DE", "#DB", "NMI", "#BP", "#OF", "#BR",
                                       "#UD", "#NM", "#DF", "?",   "#TS", "#NP",
                                       "#SS", "#GP", "#PF", "?"};

}  // namespace

void SetUpIdt() {
  for (uint32_t v = 0; v < 256; ++v) {
    const uint32_t at = Phys(isr_stubs) + 16 * v;
    g_idt[v] = {static_cast<uint16_t>(at), kvmglue::kCodeSelector, 0, 0x8e,
                static_cast<uint16_t>(at >> 16)};
  }
  const IdtPointer p = {sizeof g_idt - 1, Phys(g_idt)};
  asm volatile("lidt %0" ::"m"(p));
  // The 8259s are not used: mask them (the LAPIC/IOAPIC deliver everything).
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  // LAPIC on (spurious vector 0xff), a tick for timeouts: the KVM
  // LAPIC timer counts at 1 GHz, so 10,000,000 at divide-by-1 is 10 ms.
  lapic_write(kLapicSvr, 0x100 | kVectorSpurious);
  lapic_write(kLapicTimerDiv, 0xb);
  lapic_write(kLapicLvtTimer, kLapicTimerPeriodic | kVectorTimer);
  lapic_write(kLapicTimerInit, kTickCount);
}

void InitHeap(uint32_t ram_end) {
  g_heap = Phys(_end);
  g_heap_end = ram_end;
}

// --- DMA allocation ----------------------------------------------------------
void* Alloc(uint32_t bytes, uint32_t align) {
  g_heap = (g_heap + align - 1) & ~(align - 1);
  const uint32_t at = g_heap;
  g_heap += bytes;
  if (g_heap > g_heap_end) {
    puts("FATAL out of guest memory\n");
    exit_vm(0xdead);
  }
  // Never reused, and the VMM's memfd RAM starts zeroed: no memset needed.
  return reinterpret_cast<void*>(at);
}

}  // namespace guest

extern "C" void isr_dispatch(uint32_t vector, uint32_t word1, uint32_t word2) {
  using namespace guest;
  if (vector < 32) {
    puts("FATAL exception ");
    puts(vector < 16 ? kExceptionNames[vector] : "?");
    puts(" vector ");
    puthex(vector);
    puts(" error/eip ");
    puthex(word1);
    puts(" ");
    puthex(word2);
    putc('\n');
    exit_vm(0xdead0000u | vector);
  }
  if (vector == kVectorTimer) {
    g_ticks = g_ticks + 1;
    lapic_eoi();
    return;
  }
  if (vector == kVectorSpurious) return;  // no EOI for spurious
  const uint32_t rel = vector - kVectorDeviceBase;
  if (vector >= kVectorDeviceBase && rel / kVectorsPerDevice < g_num_devs) {
    g_devs[rel / kVectorsPerDevice].HandleInterrupt(rel % kVectorsPerDevice);
  }
  lapic_eoi();
}
