// virtio/backends/image_lock.h — disk image locking that QEMU understands.
//
// QEMU, qemu-img and qemu-storage-daemon lock raw images and block devices
// with open-file-description (OFD) byte-range locks, one byte per block
// permission (QEMU's file-posix driver): a shared lock on byte 100 + p
// says "I hold permission p", one on byte 200 + p says "I do not let
// others have p". Before it takes a permission, a process checks that
// nobody else holds a lock on the bytes that forbid it. Taking the same
// locks makes our disks visible to those tools: `qemu-img info` on an
// image a daemon serves read-write fails with `Failed to get shared
// "write" lock`, QEMU refuses to start a guest on it, and our daemon
// refuses an image a QEMU guest is writing.
//
// Permissions (QEMU's BLK_PERM_*, the bit index is the byte offset):
// consistent read (0), write (1), write-unchanged (2), resize (3). Like a
// QEMU virtio-blk device without share-rw, a disk holds consistent read,
// and write when writable, and shares everything but write. So two
// writers, or a writer and a reader, exclude each other; readers coexist.
//
// OFD locks belong to the open file description: they are released when
// the descriptor (all its duplicates) is closed, and two open() calls in
// one process conflict just like two processes.
#ifndef VIRTIO_BACKENDS_IMAGE_LOCK_H_
#define VIRTIO_BACKENDS_IMAGE_LOCK_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace virtio {

// QEMU's block permission bits (include/block/block-common.h).
enum class ImagePermission : uint8_t {
  kConsistentRead = 0,
  kWrite = 1,
  kWriteUnchanged = 2,
  kResize = 3,
};

// QEMU's lock byte offsets (block/file-posix.c).
inline constexpr int64_t kImageLockPermBase = 100;
inline constexpr int64_t kImageLockSharedBase = 200;

// Locks the open image `fd` (named `path` in messages) for a device that
// reads, and writes if `writable`. FailedPrecondition naming the
// permission and the conflicting process when another holder conflicts
// (the locks taken so far are dropped again); Unimplemented when the file
// system has no OFD locks (e.g. some network file systems: the caller
// decides whether to go on unlocked, as QEMU's locking=auto does).
absl::Status LockImageLikeQemu(int fd, std::string_view path, bool writable);

// Whether another open file description holds a lock on QEMU's byte for
// holding `p` (a test and diagnostics helper; no lock is taken).
bool ImagePermissionHeldElsewhere(int fd, ImagePermission p);

}  // namespace virtio

#endif  // VIRTIO_BACKENDS_IMAGE_LOCK_H_
