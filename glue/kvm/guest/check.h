// glue/kvm/guest/check.h — how the test guest reports: one line per check
// on the UART ("PASS <device>: <what>" / "FAIL ..."), notes for values
// worth seeing in the log, and the counts guest_main() sends to the exit
// port. kvm_guest_test reads those lines.
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_CHECK_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_CHECK_H_

#include <cstdint>

#include "boot_info.h"

namespace guest {

extern uint32_t g_checks;
extern uint32_t g_failures;
// The device being checked, named on every line.
extern const char* g_dev_name;
// BootInfo flags: how the VMM asked this run to go (kvmglue::kFlag*).
extern uint32_t g_flags;

// Reports a check; returns `ok`.
bool Check(bool ok, const char* what);
// Logs `what` and a value, not counted as a check.
void Note(const char* what, uint32_t v);

// Polling mode: no interrupts are set up, the guest polls the used rings.
inline bool Poll() { return g_flags & kvmglue::kFlagPoll; }

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_CHECK_H_
