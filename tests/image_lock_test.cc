// Image locking as QEMU does it (virtio/backends/image_lock.h): between our
// own disks, byte by byte, and against the real qemu-img and qemu-io.
#include "virtio/backends/image_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "blk_test_util.h"
#include "gtest/gtest.h"
#include "virtio/backends/uring_disk.h"

extern char** environ;

namespace virtio {
namespace {

using blktest::TempImage;

// An open image file (one open file description).
class Fd {
 public:
  Fd(const std::string& path, bool writable)
      : fd_(open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Whether another open file description holds a lock on `offset`.
bool ByteLockedElsewhere(int fd, int64_t offset) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = offset;
  fl.l_len = 1;
  return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

TEST(ImageLock, TakesQemusBytes) {
  TempImage img(1 << 20);
  Fd writer(img.path(), true);
  ASSERT_TRUE(LockImageLikeQemu(writer.get(), img.path(), true).ok());
  Fd probe(img.path(), false);
  // Held: consistent read (100) and write (101); not shared: write (201).
  EXPECT_TRUE(ByteLockedElsewhere(probe.get(), kImageLockPermBase + 0));
  EXPECT_TRUE(ByteLockedElsewhere(probe.get(), kImageLockPermBase + 1));
  EXPECT_FALSE(ByteLockedElsewhere(probe.get(), kImageLockPermBase + 2));
  EXPECT_FALSE(ByteLockedElsewhere(probe.get(), kImageLockPermBase + 3));
  EXPECT_FALSE(ByteLockedElsewhere(probe.get(), kImageLockSharedBase + 0));
  EXPECT_TRUE(ByteLockedElsewhere(probe.get(), kImageLockSharedBase + 1));
  EXPECT_FALSE(ByteLockedElsewhere(probe.get(), kImageLockSharedBase + 2));
  EXPECT_FALSE(ByteLockedElsewhere(probe.get(), kImageLockSharedBase + 3));
  EXPECT_TRUE(
      ImagePermissionHeldElsewhere(probe.get(), ImagePermission::kWrite));
  // A reader holds consistent read only.
  writer.Close();
  Fd reader(img.path(), false);
  ASSERT_TRUE(LockImageLikeQemu(reader.get(), img.path(), false).ok());
  EXPECT_TRUE(ByteLockedElsewhere(probe.get(), kImageLockPermBase + 0));
  EXPECT_FALSE(ByteLockedElsewhere(probe.get(), kImageLockPermBase + 1));
  EXPECT_TRUE(ByteLockedElsewhere(probe.get(), kImageLockSharedBase + 1));
}

TEST(ImageLock, WritersExcludeEachOtherUntilClosed) {
  TempImage img(1 << 20);
  Fd a(img.path(), true);
  Fd b(img.path(), true);
  ASSERT_TRUE(LockImageLikeQemu(a.get(), img.path(), true).ok());
  absl::Status s = LockImageLikeQemu(b.get(), img.path(), true);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find(img.path()), std::string::npos) << s;
  EXPECT_NE(s.message().find("\"write\""), std::string::npos) << s;
  // The refused one left nothing behind, and closing frees the image.
  a.Close();
  EXPECT_TRUE(LockImageLikeQemu(b.get(), img.path(), true).ok());
}

TEST(ImageLock, ReadersShareAndExcludeWriters) {
  TempImage img(1 << 20);
  Fd r1(img.path(), false);
  Fd r2(img.path(), false);
  Fd w(img.path(), true);
  ASSERT_TRUE(LockImageLikeQemu(r1.get(), img.path(), false).ok());
  ASSERT_TRUE(LockImageLikeQemu(r2.get(), img.path(), false).ok());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(LockImageLikeQemu(w.get(), img.path(), true)));
  r1.Close();
  r2.Close();
  ASSERT_TRUE(LockImageLikeQemu(w.get(), img.path(), true).ok());
  Fd r3(img.path(), false);
  EXPECT_TRUE(absl::IsFailedPrecondition(
      LockImageLikeQemu(r3.get(), img.path(), false)));
}

TEST(ImageLock, UringDiskLocksAndUnlocks) {
  TempImage img(1 << 20);
  auto first = UringDisk::Open({.path = img.path()});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = UringDisk::Open({.path = img.path(), .read_only = true});
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  auto unlocked = UringDisk::Open({.path = img.path(), .lock = false});
  EXPECT_TRUE(unlocked.ok()) << unlocked.status();
  first->reset();
  auto third = UringDisk::Open({.path = img.path()});
  EXPECT_TRUE(third.ok()) << third.status();
}

// --- the real QEMU tools
// ------------------------------------------------------

bool HaveTool(const char* name) {
  const std::string cmd =
      std::string("command -v ") + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// Runs a shell command; its exit status and combined output.
std::pair<int, std::string> RunShell(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::array<char, 512> buf{};
  while (fgets(buf.data(), buf.size(), p) != nullptr) out += buf.data();
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(ImageLockWithQemu, QemuToolsSeeADiskWeServe) {
  if (!HaveTool("qemu-img") || !HaveTool("qemu-io")) {
    GTEST_SKIP()
        << "qemu-img/qemu-io not installed (apt-get install qemu-utils)";
  }
  TempImage img(1 << 20);
  // What needs the write permission is refused while we serve the image
  // (read-write or read-only: either way we do not share "write").
  const std::string resize = "qemu-img resize -f raw " + img.path() + " 2M";
  const std::string write = "qemu-io -f raw -c 'write 0 512' " + img.path();
  for (bool read_only : {false, true}) {
    SCOPED_TRACE(read_only ? "read-only disk" : "read-write disk");
    auto disk = UringDisk::Open({.path = img.path(), .read_only = read_only});
    ASSERT_TRUE(disk.ok()) << disk.status();
    for (const std::string& cmd : {resize, write}) {
      auto [rc, out] = RunShell(cmd);
      EXPECT_NE(out.find("Failed to get \"write\" lock"), std::string::npos)
          << cmd << ": rc " << rc << ": " << out;
    }
    // Readers that share everything (qemu-img info, qemu-io -r) still may,
    // as with the image of a running QEMU guest.
    auto [rc_info, out_info] = RunShell("qemu-img info -f raw " + img.path());
    EXPECT_EQ(rc_info, 0) << out_info;
    auto [rc_r, out_r] =
        RunShell("qemu-io -r -f raw -c 'read 0 512' " + img.path());
    EXPECT_EQ(rc_r, 0) << out_r;
  }
  // Closed: the image is free again.
  auto [rc, out] = RunShell(resize);
  EXPECT_EQ(rc, 0) << out;
  auto [rc_w, out_w] = RunShell(write);
  EXPECT_EQ(rc_w, 0) << out_w;
}

TEST(ImageLockWithQemu, ADiskQemuWritesIsRefused) {
  if (!HaveTool("qemu-io"))
    GTEST_SKIP() << "qemu-io not installed (apt-get install qemu-utils)";
  TempImage img(1 << 20);
  // qemu-io keeps the image open read-write while it sleeps.
  const std::string& path = img.path();
  const char* argv[] = {"qemu-io",     "-f",         "raw",  "-c",
                        "sleep 20000", path.c_str(), nullptr};
  pid_t pid = -1;
  ASSERT_EQ(posix_spawnp(&pid, "qemu-io", nullptr, nullptr,
                         const_cast<char**>(argv), environ),
            0);
  Fd probe(img.path(), false);
  bool held = false;
  for (int i = 0; i < 1000 && !held; ++i) {
    held = ImagePermissionHeldElsewhere(probe.get(), ImagePermission::kWrite);
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (held) {
    auto rw = UringDisk::Open({.path = img.path()});
    EXPECT_TRUE(absl::IsFailedPrecondition(rw.status())) << rw.status();
    auto ro = UringDisk::Open({.path = img.path(), .read_only = true});
    EXPECT_TRUE(absl::IsFailedPrecondition(ro.status())) << ro.status();
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_TRUE(held) << "qemu-io never took the write lock byte (101)";
  auto after = UringDisk::Open({.path = img.path()});
  EXPECT_TRUE(after.ok()) << after.status();
}

}  // namespace
}  // namespace virtio
