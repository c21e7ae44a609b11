// src/image_lock.cc — see virtio/backends/image_lock.h.
#include "virtio/backends/image_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"

namespace virtio {

namespace {

constexpr uint8_t kAllPermissions = 0x0f;
constexpr uint8_t kConsistentRead =
    1u << static_cast<int>(ImagePermission::kConsistentRead);
constexpr uint8_t kWrite = 1u << static_cast<int>(ImagePermission::kWrite);
constexpr uint8_t kWriteUnchanged =
    1u << static_cast<int>(ImagePermission::kWriteUnchanged);
constexpr uint8_t kResize = 1u << static_cast<int>(ImagePermission::kResize);

const char* PermissionName(int bit) {
  switch (bit) {
    case 0:
      return "consistent read";
    case 1:
      return "write";
    case 2:
      return "write unchanged";
    case 3:
      return "resize";
    default:
      return "?";
  }
}

// One-byte OFD lock (type F_RDLCK or F_UNLCK) at `offset`.
int SetLock(int fd, int64_t offset, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = offset;
  fl.l_len = 1;
  return fcntl(fd, F_OFD_SETLK, &fl);
}

// Whether another open file description holds any lock on `offset`; its
// pid when known (OFD locks report -1).
bool HeldElsewhere(int fd, int64_t offset, pid_t* pid) {
  struct flock fl {};
  fl.l_type = F_WRLCK;  // conflicts with every lock another holder has
  fl.l_whence = SEEK_SET;
  fl.l_start = offset;
  fl.l_len = 1;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;
  if (pid != nullptr) *pid = fl.l_pid;
  return fl.l_type != F_UNLCK;
}

void UnlockAll(int fd) {
  for (int bit = 0; bit < 4; ++bit) {
    SetLock(fd, kImageLockPermBase + bit, F_UNLCK);
    SetLock(fd, kImageLockSharedBase + bit, F_UNLCK);
  }
}

std::string Holder(pid_t pid) {
  return pid > 0 ? absl::StrFormat("process %d", pid)
                 : std::string("another process");
}

}  // namespace

absl::Status LockImageLikeQemu(int fd, std::string_view path, bool writable) {
  const uint8_t held = kConsistentRead | (writable ? kWrite : 0);
  const uint8_t shared = kConsistentRead | kWriteUnchanged | kResize;
  const uint8_t unshared = kAllPermissions & ~shared;
  // Take ours first, then look for conflicts: our own locks never conflict
  // with us, and whoever comes second sees the first.
  for (int bit = 0; bit < 4; ++bit) {
    const uint8_t p = 1u << bit;
    for (auto [wanted, base] :
         {std::pair{(held & p) != 0, kImageLockPermBase},
          std::pair{(unshared & p) != 0, kImageLockSharedBase}}) {
      if (!wanted || SetLock(fd, base + bit, F_RDLCK) == 0) continue;
      const int err = errno;
      UnlockAll(fd);
      if (err == EAGAIN || err == EACCES) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s is in use: another process (QEMU, qemu-img, "
            "qemu-storage-daemon "
            "or a second daemon) locks it against the \"%s\" permission",
            path, PermissionName(bit)));
      }
      if (err == EINVAL || err == ENOLCK || err == EOPNOTSUPP) {
        return absl::UnimplementedError(absl::StrFormat(
            "%s: the file system does not support OFD locks: %s", path,
            std::strerror(err)));
      }
      return absl::UnavailableError(absl::StrFormat(
          "%s: fcntl(F_OFD_SETLK): %s", path, std::strerror(err)));
    }
  }
  for (int bit = 0; bit < 4; ++bit) {
    const uint8_t p = 1u << bit;
    pid_t pid = 0;
    if ((held & p) != 0 &&
        HeldElsewhere(fd, kImageLockSharedBase + bit, &pid)) {
      UnlockAll(fd);
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is in use: %s does not let others have the \"%s\" permission "
          "(QEMU-style image lock; QEMU, qemu-img or another daemon has it "
          "open%s)",
          path, Holder(pid), PermissionName(bit),
          writable ? ", or open it read-only if that process only reads" : ""));
    }
    if ((unshared & p) != 0 &&
        HeldElsewhere(fd, kImageLockPermBase + bit, &pid)) {
      UnlockAll(fd);
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is in use: %s holds the \"%s\" permission (QEMU-style image "
          "lock; "
          "QEMU, qemu-img or another daemon has it open for writing)",
          path, Holder(pid), PermissionName(bit)));
    }
  }
  return absl::OkStatus();
}

bool ImagePermissionHeldElsewhere(int fd, ImagePermission p) {
  return HeldElsewhere(fd, kImageLockPermBase + static_cast<int>(p), nullptr);
}

}  // namespace virtio
