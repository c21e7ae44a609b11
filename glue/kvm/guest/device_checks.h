// glue/kvm/guest/device_checks.h — one check per device type, each in its
// own file (check_<type>.cc), run by guest_main() on every device found.
//
// Adding a device type: write a Test<Name>(Dev&) in check_<name>.cc, declare
// it here, add it to the switch in RunDevice() (main.cc) and the file to
// the guest's sources in glue/kvm/CMakeLists.txt.
#ifndef LIBVIRTIO_GLUE_KVM_GUEST_DEVICE_CHECKS_H_
#define LIBVIRTIO_GLUE_KVM_GUEST_DEVICE_CHECKS_H_

#include "guest/virtio_guest.h"

namespace guest {

// Entropy: reads, distinct buffers, notifications.
void TestRng(Dev& dev);
// Block: identity, reads and writes, flush, discard, write zeroes, queues.
void TestBlk(Dev& dev);
// Net: frames looped back through the VMM's loopback backend.
void TestNet(Dev& dev);
// Console: output, and input echoed back.
void TestConsole(Dev& dev);
// A misbehaving driver (rng and blk, with the hostile flag): the device
// must refuse what is wrong and stay usable.
void TestHostile(Dev& dev);

}  // namespace guest

#endif  // LIBVIRTIO_GLUE_KVM_GUEST_DEVICE_CHECKS_H_
