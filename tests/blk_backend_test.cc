// The block backends on their own, through the BlockBackend API: RamDisk,
// NullDisk and UringDisk (io_uring on a temporary image file).
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "blk_test_util.h"
#include "gtest/gtest.h"
#include "virtio/backends/null_disk.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/backends/uring_disk.h"

namespace virtio::blktest {
namespace {

// Reaps until `n` completions arrived (polling the fd if there is one).
template <typename Q>
std::map<uint64_t, int32_t> ReapN(Q& q, size_t n) {
  std::map<uint64_t, int32_t> done;
  for (int spins = 0; done.size() < n && spins < 1000; ++spins) {
    q.Reap([&](uint64_t c, int32_t r) { done[c] = r; });
    if (done.size() < n && q.completion_fd() >= 0) {
      pollfd p{q.completion_fd(), POLLIN, 0};
      poll(&p, 1, 50);
      uint64_t v;
      [[maybe_unused]] ssize_t k = read(q.completion_fd(), &v, sizeof v);
    }
  }
  return done;
}

template <typename Disk>
void WriteReadRoundTrip(Disk& disk) {
  auto& q = disk.queue(0);
  std::vector<uint8_t> a = Pattern(4096, 1), b(4096, 0);
  iovec wv[2] = {{a.data(), 1024}, {a.data() + 1024, 3072}};
  iovec rv[3] = {
      {b.data(), 512}, {b.data() + 512, 512}, {b.data() + 1024, 3072}};
  ASSERT_TRUE(q.Write(8192, wv, 2, 1));
  q.Submit();
  auto d1 = ReapN(q, 1);
  ASSERT_EQ(d1.size(), 1u);
  EXPECT_EQ(d1[1], 0);
  ASSERT_TRUE(q.Read(8192, rv, 3, 2));
  ASSERT_TRUE(q.Flush(3));
  q.Submit();
  auto d2 = ReapN(q, 2);
  EXPECT_EQ(d2[2], 0);
  EXPECT_EQ(d2[3], 0);
  EXPECT_EQ(a, b);
  // Write zeroes (allocated and unmapped) and discard.
  ASSERT_TRUE(q.WriteZeroes(8192, 1024, false, 4));
  ASSERT_TRUE(q.WriteZeroes(9216, 1024, true, 5));
  q.Submit();
  auto d3 = ReapN(q, 2);
  EXPECT_EQ(d3[4], 0);
  EXPECT_EQ(d3[5], 0);
  ASSERT_TRUE(q.Read(8192, rv, 3, 6));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[6], 0);
  for (int i = 0; i < 2048; ++i) ASSERT_EQ(b[i], 0) << i;
  EXPECT_EQ(0, std::memcmp(b.data() + 2048, a.data() + 2048, 2048));
  ASSERT_TRUE(q.Discard(0, 4096, 7));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[7], 0);
}

TEST(RamDiskTest, RoundTrip) {
  auto disk = RamDisk::Create({.capacity = 1 << 20});
  ASSERT_TRUE(disk.ok());
  static_assert(BlockBackend<RamDisk>);
  EXPECT_EQ((*disk)->queue(0).completion_fd(), -1);
  WriteReadRoundTrip(**disk);
}

TEST(RamDiskTest, RejectsBadGeometry) {
  EXPECT_FALSE(RamDisk::Create({.capacity = 0}).ok());
  EXPECT_FALSE(RamDisk::Create({.capacity = 1000}).ok());
  EXPECT_FALSE(RamDisk::Create({.capacity = 4096, .block_size = 1000}).ok());
  EXPECT_FALSE(RamDisk::Create({.capacity = 4096, .num_queues = 0}).ok());
  EXPECT_FALSE(RamDisk::Create({.capacity = 4096, .queue_depth = 0}).ok());
}

TEST(RamDiskTest, FullQueueRefusesAndDrainDiscards) {
  auto disk = RamDisk::Create({.capacity = 1 << 20, .queue_depth = 2});
  ASSERT_TRUE(disk.ok());
  auto& q = (*disk)->queue(0);
  EXPECT_TRUE(q.Flush(1));
  EXPECT_TRUE(q.Flush(2));
  EXPECT_FALSE(q.Flush(3));  // depth reached until reaped
  q.Drain();
  EXPECT_EQ(q.Reap([](uint64_t, int32_t) { FAIL(); }), 0u);
  EXPECT_TRUE(q.Flush(4));
}

TEST(RamDiskTest, ReadOnlyRefusesWrites) {
  auto disk = RamDisk::Create({.capacity = 1 << 20, .read_only = true});
  ASSERT_TRUE(disk.ok());
  auto& q = (*disk)->queue(0);
  uint8_t buf[512] = {1};
  iovec v{buf, 512};
  ASSERT_TRUE(q.Write(0, &v, 1, 9));
  EXPECT_EQ(ReapN(q, 1)[9], -EIO);
  EXPECT_EQ((*disk)->data()[0], 0);
}

TEST(NullDiskTest, ReadsZerosAndAcceptsEverything) {
  auto disk = NullDisk::Create({.capacity = uint64_t{1} << 50});
  ASSERT_TRUE(disk.ok());
  auto& q = (*disk)->queue(0);
  std::vector<uint8_t> b(4096, 0xaa), a = Pattern(4096, 3);
  iovec wv{a.data(), 4096}, rv{b.data(), 4096};
  ASSERT_TRUE(q.Write(1 << 30, &wv, 1, 1));
  ASSERT_TRUE(q.Read(1 << 30, &rv, 1, 2));
  ASSERT_TRUE(q.Discard(0, 1 << 20, 3));
  ASSERT_TRUE(q.WriteZeroes(0, 1 << 20, true, 4));
  ASSERT_TRUE(q.Flush(5));
  q.Submit();
  auto done = ReapN(q, 5);
  EXPECT_EQ(done.size(), 5u);
  for (auto& [c, r] : done) EXPECT_EQ(r, 0) << c;
  EXPECT_EQ(b, std::vector<uint8_t>(4096, 0));
}

TEST(UringDiskTest, RoundTripAndFileContents) {
  TempImage img(1 << 20);
  {
    auto disk = UringDisk::Open({.path = img.path()});
    ASSERT_TRUE(disk.ok()) << disk.status();
    EXPECT_EQ((*disk)->capacity(), 1u << 20);
    EXPECT_EQ((*disk)->block_size(), 512u);
    EXPECT_FALSE((*disk)->is_block_device());
    EXPECT_GE((*disk)->queue(0).completion_fd(), 0);
    WriteReadRoundTrip(**disk);
  }
  auto c = img.Contents();
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(c[i], 0);  // discarded
  for (int i = 8192; i < 8192 + 2048; ++i) ASSERT_EQ(c[i], 0);
  const auto a = Pattern(4096, 1);
  EXPECT_EQ(0, std::memcmp(c.data() + 8192 + 2048, a.data() + 2048, 2048));
}

TEST(UringDiskTest, OpenErrorsAreClear) {
  auto missing = UringDisk::Open({.path = "/nonexistent/libvirtio.img"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/libvirtio.img"),
            std::string::npos);
  auto dir = UringDisk::Open(
      {.path = std::filesystem::temp_directory_path().string()});
  EXPECT_FALSE(dir.ok());
  TempImage tiny(100);
  auto small = UringDisk::Open({.path = tiny.path()});
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  TempImage img(4096);
  auto first = UringDisk::Open({.path = img.path()});
  ASSERT_TRUE(first.ok());
  auto second = UringDisk::Open({.path = img.path()});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition)
      << second.status();
  EXPECT_FALSE(UringDisk::Open({.path = img.path(), .queue_depth = 0}).ok());
}

TEST(UringDiskTest, ManyInFlightThenDrain) {
  const int fds = CountOpenFds();
  {
    TempImage img(32 << 20, /*pattern=*/true);
    auto disk = UringDisk::Open({.path = img.path(), .queue_depth = 64});
    ASSERT_TRUE(disk.ok());
    auto& q = (*disk)->queue(0);
    std::vector<std::vector<uint8_t>> bufs(64, std::vector<uint8_t>(256 << 10));
    std::vector<iovec> iov(64);
    for (int i = 0; i < 64; ++i) {
      iov[i] = {bufs[i].data(), bufs[i].size()};
      ASSERT_TRUE(
          q.Read(uint64_t(i) * (256 << 10) % (32 << 20), &iov[i], 1, i));
    }
    uint8_t x[512];
    iovec xv{x, 512};
    EXPECT_FALSE(q.Read(0, &xv, 1, 99));  // depth reached
    q.Submit();
    EXPECT_EQ(q.outstanding(), 64u);
    // Not reaped: Drain waits for every one and discards the completions.
    q.Drain();
    EXPECT_EQ(q.in_kernel(), 0u);
    EXPECT_EQ(q.outstanding(), 0u);
    EXPECT_EQ(q.Reap([](uint64_t, int32_t) { FAIL(); }), 0u);
    // Usable afterwards; all 64 again, reaped this time.
    for (int i = 0; i < 64; ++i) {
      ASSERT_TRUE(q.Read(uint64_t(i) * (256 << 10), &iov[i], 1, i));
    }
    q.Submit();
    auto done = ReapN(q, 64);
    EXPECT_EQ(done.size(), 64u);
    for (auto& [c, r] : done) EXPECT_EQ(r, 0) << c;
    EXPECT_EQ(bufs[1][0], static_cast<uint8_t>(3 + (256 << 10) * 7));
    // Drained again with requests queued but never submitted.
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(q.Read(0, &iov[i], 1, i));
  }  // destructor drains
  EXPECT_EQ(CountOpenFds(), fds);
}

TEST(UringDiskTest, ReadPastEndOfFileFails) {
  TempImage img(8192, /*pattern=*/true);
  auto disk = UringDisk::Open({.path = img.path()});
  ASSERT_TRUE(disk.ok());
  auto& q = (*disk)->queue(0);
  std::vector<uint8_t> b(4096);
  iovec v{b.data(), 4096};
  ASSERT_TRUE(q.Read(6144, &v, 1, 1));  // 2 KiB short, then end of file
  ASSERT_TRUE(q.Read(1 << 20, &v, 1, 2));
  q.Submit();
  auto done = ReapN(q, 2);
  EXPECT_EQ(done[1], -EIO);
  EXPECT_EQ(done[2], -EIO);
  EXPECT_EQ(b[0], static_cast<uint8_t>(3 + 6144 * 7));
}

TEST(UringDiskTest, ReadOnlyOpen) {
  TempImage img(8192);
  auto disk = UringDisk::Open({.path = img.path(), .read_only = true});
  ASSERT_TRUE(disk.ok());
  EXPECT_TRUE((*disk)->read_only());
  auto& q = (*disk)->queue(0);
  uint8_t b[512] = {1};
  iovec v{b, 512};
  ASSERT_TRUE(q.Write(0, &v, 1, 1));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[1], -EROFS);
  EXPECT_EQ(img.Contents()[0], 0);
}

using Inline = UringDiskOptions::Inline;

// True if `path` is on tmpfs / ramfs.
bool OnMemoryFs(const std::string& path) {
  struct statfs sf;
  return statfs(path.c_str(), &sf) == 0 &&
         (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
}

// A `size`-byte pattern image on /dev/shm (tmpfs), or "" if there is none.
class ShmImage {
 public:
  explicit ShmImage(uint64_t size) {
    if (!OnMemoryFs("/dev/shm")) return;
    std::string tmpl = "/dev/shm/libvirtio-blk-XXXXXX";
    const int fd = mkstemp(tmpl.data());
    if (fd < 0) return;
    std::vector<uint8_t> buf(size);
    for (uint64_t i = 0; i < size; ++i)
      buf[i] = static_cast<uint8_t>(3 + i * 7);
    const bool ok = write(fd, buf.data(), size) == static_cast<ssize_t>(size);
    close(fd);
    if (ok) path_ = tmpl;
  }
  ~ShmImage() {
    if (!path_.empty()) std::filesystem::remove(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(UringDiskInlineTest, AutoPicksSyncOnTmpfsAndCompletesWithoutTheRing) {
  ShmImage img(64 << 10);
  if (img.path().empty()) GTEST_SKIP() << "no writable tmpfs at /dev/shm";
  auto disk = UringDisk::Open({.path = img.path()});
  ASSERT_TRUE(disk.ok()) << disk.status();
  EXPECT_EQ((*disk)->inline_io(), Inline::kSync);
  auto& q = (*disk)->queue(0);
  std::vector<uint8_t> b(8192), w = Pattern(4096, 9);
  iovec rv[2] = {{b.data(), 4096}, {b.data() + 4096, 4096}};
  iovec wv{w.data(), w.size()};
  ASSERT_TRUE(q.Read(4096, rv, 2, 1));
  ASSERT_TRUE(q.Write(32768, &wv, 1, 2));
  // Finished inside Read() / Write(): nothing went to the kernel and the
  // completion fd stays quiet; the Reap() after Submit() reports them.
  EXPECT_EQ(q.in_kernel(), 0u);
  EXPECT_EQ(q.outstanding(), 2u);
  q.Submit();
  pollfd p{q.completion_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  std::map<uint64_t, int32_t> done;
  EXPECT_EQ(q.Reap([&](uint64_t c, int32_t r) { done[c] = r; }), 2u);
  EXPECT_EQ(done[1], 0);
  EXPECT_EQ(done[2], 0);
  EXPECT_EQ(q.outstanding(), 0u);
  EXPECT_EQ(q.inline_done(), 2u);
  EXPECT_EQ(q.inline_fallbacks(), 0u);
  for (int i = 0; i < 8192; ++i) {
    ASSERT_EQ(b[i], static_cast<uint8_t>(3 + (4096 + i) * 7)) << i;
  }
  std::vector<uint8_t> back(4096);
  iovec bv{back.data(), back.size()};
  ASSERT_TRUE(q.Read(32768, &bv, 1, 3));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[3], 0);
  EXPECT_EQ(back, w);
}

TEST(UringDiskInlineTest, TmpfsShortAndEndOfFileFallBackToTheRing) {
  ShmImage img(8192);
  if (img.path().empty()) GTEST_SKIP() << "no writable tmpfs at /dev/shm";
  auto disk = UringDisk::Open({.path = img.path()});
  ASSERT_TRUE(disk.ok()) << disk.status();
  auto& q = (*disk)->queue(0);
  // Shrink the image under the disk: capacity still says 8 KiB.
  ASSERT_EQ(truncate(img.path().c_str(), 6144), 0);
  std::vector<uint8_t> b(4096);
  iovec v{b.data(), 4096};
  ASSERT_TRUE(q.Read(4096, &v, 1, 1));  // 2 KiB inline, then end of file
  EXPECT_EQ(q.inline_fallbacks(), 1u);
  EXPECT_EQ(q.in_kernel(), 1u);  // the remainder went to io_uring
  q.Submit();
  auto done = ReapN(q, 1);
  EXPECT_EQ(done[1], -EIO);
  EXPECT_EQ(b[0], static_cast<uint8_t>(3 + 4096 * 7));
  EXPECT_EQ(b[2047], static_cast<uint8_t>(3 + 6143 * 7));
  // Entirely past the end: nothing inline, the ring says EOF.
  ASSERT_TRUE(q.Read(6144, &v, 1, 2));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[2], -EIO);
  EXPECT_EQ(q.inline_done(), 0u);
  EXPECT_EQ(q.inline_fallbacks(), 2u);
}

TEST(UringDiskInlineTest, BadBufferFailsTheRequestOnly) {
  ShmImage img(8192);
  if (img.path().empty()) GTEST_SKIP() << "no writable tmpfs at /dev/shm";
  auto disk = UringDisk::Open({.path = img.path()});
  ASSERT_TRUE(disk.ok()) << disk.status();
  auto& q = (*disk)->queue(0);
  // An unmapped buffer: EFAULT inline, and again from io_uring.
  iovec bad{reinterpret_cast<void*>(uintptr_t{4096}), 4096};
  std::vector<uint8_t> b(4096);
  iovec good{b.data(), 4096};
  ASSERT_TRUE(q.Read(0, &bad, 1, 1));
  ASSERT_TRUE(q.Write(0, &bad, 1, 2));
  ASSERT_TRUE(q.Read(4096, &good, 1, 3));
  q.Submit();
  auto done = ReapN(q, 3);
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[1], -EFAULT);
  EXPECT_EQ(done[2], -EFAULT);
  EXPECT_EQ(done[3], 0);
  EXPECT_EQ(b[0], static_cast<uint8_t>(3 + 4096 * 7));
}

TEST(UringDiskInlineTest, NoWaitHitsThePageCacheAndFallsBackOnAMiss) {
  // A file on a disk file system (the build tree), so RWF_NOWAIT reads hit
  // or miss the page cache.
  std::string dir = std::filesystem::current_path().string();
  if (OnMemoryFs(dir)) GTEST_SKIP() << dir << " is memory-backed";
  std::string tmpl = dir + "/libvirtio-nowait-XXXXXX";
  const int fd = mkstemp(tmpl.data());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  std::vector<uint8_t> data = Pattern(1 << 20, 5);
  ASSERT_EQ(write(fd, data.data(), data.size()),
            static_cast<ssize_t>(data.size()));
  fsync(fd);
  close(fd);
  struct Cleanup {
    std::string p;
    ~Cleanup() { std::filesystem::remove(p); }
  } cleanup{tmpl};
  auto disk = UringDisk::Open({.path = tmpl, .inline_io = Inline::kAuto});
  ASSERT_TRUE(disk.ok()) << disk.status();
  if ((*disk)->inline_io() == Inline::kOff) {
    GTEST_SKIP() << "no RWF_NOWAIT on " << dir;
  }
  EXPECT_EQ((*disk)->inline_io(), Inline::kNoWait);
  auto& q = (*disk)->queue(0);
  std::vector<uint8_t> b(4096);
  iovec v{b.data(), 4096};
  // Cached (just written): inline.
  ASSERT_TRUE(q.Read(8192, &v, 1, 1));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[1], 0);
  EXPECT_EQ(0, std::memcmp(b.data(), data.data() + 8192, 4096));
  EXPECT_EQ(q.inline_done(), 1u);
  // Evicted: EAGAIN inline, served by io_uring. Eviction is advisory, so
  // only check the data and that each read went one way or the other.
  const int efd = open(tmpl.c_str(), O_RDONLY);
  ASSERT_GE(efd, 0);
  posix_fadvise(efd, 0, 0, POSIX_FADV_DONTNEED);
  close(efd);
  ASSERT_TRUE(q.Read(65536, &v, 1, 2));
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[2], 0);
  EXPECT_EQ(0, std::memcmp(b.data(), data.data() + 65536, 4096));
  EXPECT_EQ(q.inline_done() + q.inline_fallbacks(), 2u);
  // Writes never go inline in kNoWait mode.
  ASSERT_TRUE(q.Write(0, &v, 1, 3));
  EXPECT_EQ(q.in_kernel(), 1u);
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[3], 0);
  EXPECT_EQ(q.inline_done() + q.inline_fallbacks(), 2u);
}

TEST(UringDiskInlineTest, OffAndDirectUseTheRing) {
  ShmImage img(8192);
  if (img.path().empty()) GTEST_SKIP() << "no writable tmpfs at /dev/shm";
  auto disk = UringDisk::Open({.path = img.path(), .inline_io = Inline::kOff});
  ASSERT_TRUE(disk.ok()) << disk.status();
  EXPECT_EQ((*disk)->inline_io(), Inline::kOff);
  auto& q = (*disk)->queue(0);
  std::vector<uint8_t> b(4096);
  iovec v{b.data(), 4096};
  ASSERT_TRUE(q.Read(0, &v, 1, 1));
  EXPECT_EQ(q.in_kernel(), 1u);
  q.Submit();
  EXPECT_EQ(ReapN(q, 1)[1], 0);
  EXPECT_EQ(q.inline_done() + q.inline_fallbacks(), 0u);
  EXPECT_EQ(b[1], static_cast<uint8_t>(3 + 7));
  disk->reset();
  // O_DIRECT: tmpfs refuses it on some kernels; only check when it opens.
  TempImage direct_img(8192);
  auto direct = UringDisk::Open({.path = direct_img.path(), .direct = true});
  if (direct.ok()) {
    EXPECT_EQ((*direct)->inline_io(), Inline::kOff);
  }
}

TEST(UringDiskInlineTest, NoWaitUnsupportedFallsBackAndStopsTrying) {
  ShmImage img(8192);
  if (img.path().empty()) GTEST_SKIP() << "no writable tmpfs at /dev/shm";
  auto disk =
      UringDisk::Open({.path = img.path(), .inline_io = Inline::kNoWait});
  ASSERT_TRUE(disk.ok()) << disk.status();
  EXPECT_EQ((*disk)->inline_io(), Inline::kNoWait);  // as asked
  auto& q = (*disk)->queue(0);
  std::vector<uint8_t> b(4096);
  iovec v{b.data(), 4096};
  for (uint64_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(q.Read(4096, &v, 1, i));
    q.Submit();
    EXPECT_EQ(ReapN(q, 1)[i], 0);
    EXPECT_EQ(b[0], static_cast<uint8_t>(3 + 4096 * 7));
    b[0] = 0;
  }
  // Either tmpfs serves RWF_NOWAIT here (all three inline), or it said
  // EOPNOTSUPP once and the queue stopped trying.
  if (q.inline_done() == 0) {
    EXPECT_EQ(q.inline_fallbacks(), 1u);
  } else {
    EXPECT_EQ(q.inline_done(), 3u);
  }
}

TEST(UringDiskTest, CompletionFdSignals) {
  TempImage img(8192);
  auto disk = UringDisk::Open({.path = img.path(), .num_queues = 2});
  ASSERT_TRUE(disk.ok());
  auto& q = (*disk)->queue(1);
  EXPECT_NE(q.completion_fd(), (*disk)->queue(0).completion_fd());
  ASSERT_TRUE(q.Flush(42));
  q.Submit();
  pollfd p{q.completion_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 5000), 1);
  EXPECT_EQ(ReapN(q, 1)[42], 0);
}

}  // namespace
}  // namespace virtio::blktest
