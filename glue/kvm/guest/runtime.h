// glue/kvm/guest/runtime.h — what the test guest has instead of an OS: the
// C library functions the compiler may call, the entry point and stack, an
// IDT with a stub per vector, the LAPIC timer tick (g_ticks, hw.h), the
// routing of device interrupts, and a bump allocator for DMA memory
// (Alloc, virtio_guest.h).
//
// Freestanding and single-threaded: interrupts are the only concurrency,
// and they touch only g_ticks and the devices' interrupt state.
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_RUNTIME_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_RUNTIME_H_

#include <cstdint>

#include "boot_info.h"
#include "guest/virtio_guest.h"

namespace guest {

// The devices found, in BootInfo order; interrupts on device i's vectors go
// to g_devs[i] once i < g_num_devs.
extern Dev g_devs[kvmglue::kMaxBootDevices];
extern uint32_t g_num_devs;

// DMA memory: from the end of the image up to `ram_end` (guest-physical).
void InitHeap(uint32_t ram_end);
// The IDT, the 8259s masked, the LAPIC and its periodic 10 ms tick.
void SetUpIdt();

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_RUNTIME_H_
