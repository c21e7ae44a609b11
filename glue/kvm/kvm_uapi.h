// <linux/kvm.h> for C++, with the variable-length KVM structs laid out as
// the kernel expects.
//
// Debian 12's uapi headers (linux-libc-dev 6.1.x) declare the trailing
// arrays of kvm_irq_routing, kvm_cpuid2, kvm_msrs, kvm_reg_list, ... with
// __DECLARE_FLEX_ARRAY, which wraps them in a struct holding an empty
// struct. An empty struct has size 0 in C but 1 in C++, so in C++ the array
// moves (kvm_irq_routing: entries at offset 16 instead of 8; kvm_cpuid2: 12
// instead of 8), sizeof() grows, and so do the ioctl numbers, which encode
// the size: KVM_SET_GSI_ROUTING and KVM_GET_SUPPORTED_CPUID/KVM_SET_CPUID2
// fail with ENOTTY on every kernel. Linux fixed the macro for C++ later
// (a plain zero-length array, as defined here); until the distribution's
// headers have that fix, include this instead of <linux/kvm.h>, before any
// other header that includes it. The static_asserts below catch a
// translation unit that got <linux/kvm.h> first.
#ifndef LIBVIRTIO_GLUE_KVM_KVM_UAPI_H_
#define LIBVIRTIO_GLUE_KVM_KVM_UAPI_H_

#include <linux/stddef.h>

#ifdef __cplusplus
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]
#endif

#include <linux/kvm.h>

#ifdef __cplusplus
#include <cstddef>

static_assert(offsetof(kvm_irq_routing, entries) == 8 &&
                  sizeof(kvm_irq_routing) == 8,
              "kvm_irq_routing has the C++ flexible-array bug: include "
              "kvm_uapi.h before anything that includes <linux/kvm.h>");
static_assert(offsetof(kvm_cpuid2, entries) == 8 && sizeof(kvm_cpuid2) == 8,
              "kvm_cpuid2 has the C++ flexible-array bug: include "
              "kvm_uapi.h before anything that includes <linux/kvm.h>");
static_assert(offsetof(kvm_msrs, entries) == 8 && sizeof(kvm_msrs) == 8,
              "kvm_msrs has the C++ flexible-array bug: include "
              "kvm_uapi.h before anything that includes <linux/kvm.h>");
#endif

#endif  // LIBVIRTIO_GLUE_KVM_KVM_UAPI_H_
