// Shared helpers for the virtio-blk tests: a driver-side rig that brings a
// BlkDevice up on either ring layout and issues requests, temp image files,
// and a scriptable test backend (held completions, injected errors).
#ifndef LIBVIRTIO_TESTS_BLK_TEST_UTIL_H_
#define LIBVIRTIO_TESTS_BLK_TEST_UTIL_H_

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "virtio/backends/completion_ring.h"
#include "virtio/blk_device.h"
#include "virtio/block_backend.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace virtio::blktest {

using testing::Buffer;
using testing::RecordingInterrupt;
using testing::TestGuestMemory;
using testing::TestTraits;

inline int CountOpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

// A temporary image file, removed on destruction.
class TempImage {
 public:
  // A `size`-byte file, zeros or (with `pattern`) a byte pattern.
  explicit TempImage(uint64_t size, bool pattern = false) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "libvirtio-blk-XXXXXX")
            .string();
    int fd = mkstemp(tmpl.data());
    EXPECT_GE(fd, 0) << std::strerror(errno);
    path_ = tmpl;
    std::vector<uint8_t> buf(size, 0);
    if (pattern) {
      for (uint64_t i = 0; i < size; ++i) buf[i] = static_cast<uint8_t>(3 + i * 7);
    }
    EXPECT_EQ(write(fd, buf.data(), size), static_cast<ssize_t>(size));
    fsync(fd);  // no dirty pages: O_DIRECT I/O then really goes to the disk
    close(fd);
  }
  ~TempImage() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }
  std::vector<uint8_t> Contents() const {
    std::ifstream f(path_, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
  }
  uint64_t Checksum() const {
    uint64_t h = 1469598103934665603ull;
    for (uint8_t b : Contents()) h = (h ^ b) * 1099511628211ull;
    return h;
  }

 private:
  std::string path_;
};

// A test backend implementing BlockBackend over an in-memory image, with
// knobs: `hold` keeps requests in flight until Release(); `fail` decides per
// request whether it fails with -EIO (the image is then untouched).
class ScriptedDisk {
 public:
  enum class Op { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };
  struct Request {
    Op op;
    uint64_t offset;
    uint64_t length;
    const iovec* iov;
    uint32_t iovcnt;
    bool unmap;
    uint64_t cookie;
  };

  class Queue {
   public:
    Queue(ScriptedDisk* disk, uint32_t depth) : disk_(disk), done_(depth) {}
    bool Read(uint64_t off, const iovec* iov, uint32_t n, uint64_t c) {
      return Add({Op::kRead, off, Total(iov, n), iov, n, false, c});
    }
    bool Write(uint64_t off, const iovec* iov, uint32_t n, uint64_t c) {
      return Add({Op::kWrite, off, Total(iov, n), iov, n, false, c});
    }
    bool Flush(uint64_t c) { return Add({Op::kFlush, 0, 0, nullptr, 0, false, c}); }
    bool Discard(uint64_t off, uint64_t len, uint64_t c) {
      return Add({Op::kDiscard, off, len, nullptr, 0, false, c});
    }
    bool WriteZeroes(uint64_t off, uint64_t len, bool unmap, uint64_t c) {
      return Add({Op::kWriteZeroes, off, len, nullptr, 0, unmap, c});
    }
    void Submit() {
      ++submits;
      if (!disk_->hold) Release();
    }
    template <typename F>
    uint32_t Reap(F&& fn) {
      return done_.PopAll(fn);
    }
    void Drain() {
      ++drains;
      held_.clear();
      done_.Clear();
    }
    int completion_fd() const { return -1; }

    // Executes every held request.
    void Release() {
      while (!held_.empty()) {
        Request r = held_.front();
        held_.pop_front();
        done_.Push(r.cookie, disk_->Execute(r));
      }
    }
    size_t held() const { return held_.size(); }
    uint32_t outstanding() const {
      return static_cast<uint32_t>(held_.size()) + done_.size();
    }

    int submits = 0;
    int drains = 0;

   private:
    static uint64_t Total(const iovec* iov, uint32_t n) {
      uint64_t t = 0;
      for (uint32_t i = 0; i < n; ++i) t += iov[i].iov_len;
      return t;
    }
    bool Add(const Request& r) {
      if (outstanding() >= done_.capacity()) return false;
      disk_->log.push_back(r);
      held_.push_back(r);
      return true;
    }
    ScriptedDisk* disk_;
    std::deque<Request> held_;
    CompletionRing done_;
  };

  ScriptedDisk(uint64_t capacity, uint16_t queues = 1, uint32_t depth = 64)
      : image(capacity, 0), depth_(depth) {
    for (uint16_t i = 0; i < queues; ++i) queues_.emplace_back(this, depth);
  }

  uint64_t capacity() const { return image.size(); }
  uint32_t block_size() const { return 512; }
  bool read_only() const { return ro; }
  bool supports_discard() const { return true; }
  bool supports_write_zeroes() const { return true; }
  uint16_t num_queues() const { return static_cast<uint16_t>(queues_.size()); }
  uint32_t queue_depth() const { return depth_; }
  Queue& queue(uint16_t i) { return queues_[i]; }

  int32_t Execute(const Request& r) {
    if (fail && fail(r)) return -EIO;
    switch (r.op) {
      case Op::kRead: {
        uint64_t off = r.offset;
        for (uint32_t i = 0; i < r.iovcnt; ++i) {
          std::memcpy(r.iov[i].iov_base, image.data() + off, r.iov[i].iov_len);
          off += r.iov[i].iov_len;
        }
        return 0;
      }
      case Op::kWrite: {
        uint64_t off = r.offset;
        for (uint32_t i = 0; i < r.iovcnt; ++i) {
          std::memcpy(image.data() + off, r.iov[i].iov_base, r.iov[i].iov_len);
          off += r.iov[i].iov_len;
        }
        return 0;
      }
      case Op::kFlush:
        ++flushes;
        return 0;
      case Op::kDiscard:
      case Op::kWriteZeroes:
        std::memset(image.data() + r.offset, 0, r.length);
        return 0;
    }
    return -EINVAL;
  }

  std::vector<uint8_t> image;
  bool hold = false;
  bool ro = false;
  std::function<bool(const Request&)> fail;
  std::vector<Request> log;
  int flushes = 0;

 private:
  uint32_t depth_;
  std::deque<Queue> queues_;
};
static_assert(BlockBackend<ScriptedDisk>);

// Result of one request: the used length and the status byte (0xff if the
// device did not write it).
struct Result {
  uint32_t used_len = 0;
  uint8_t status = 0xff;
};

// Drives a BlkDevice like a guest driver, on layout `Layout`.
template <typename Layout, typename Backend>
class Rig {
 public:
  using Device = BlkDevice<TestTraits, Backend>;
  static constexpr bool kPacked =
      std::is_same_v<Layout, testing::PackedLayout>;

  Rig(Backend& backend, BlkDeviceOptions options = {},
      std::initializer_list<testing::RegionSpec> regions = {
          {.gpa = 0x10000, .size = 8 << 20}})
      : mem_(regions), backend_(&backend) {
    if (options.queue_size == 256) options.queue_size = 64;
    auto dev = Device::Create(mem_.map(), irq_, backend, options);
    EXPECT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
  }

  Device& dev() { return *dev_; }
  TestGuestMemory& mem() { return mem_; }
  RecordingInterrupt& irq() { return irq_; }
  typename Layout::Driver& driver(uint16_t q = 0) { return *drivers_[q]; }

  // Negotiates `features` (default: everything offered, minus the other ring
  // layout) and brings up every queue.
  void BringUp(std::optional<uint64_t> features = std::nullopt,
               uint32_t queue_size = 16) {
    uint64_t f = features.value_or(dev_->device_features());
    if (!kPacked) f &= ~spec::Bit(spec::kFeatureRingPacked);
    dev_->SetStatus(0);
    dev_->SetStatus(spec::kStatusAcknowledge);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver);
    dev_->SetDriverFeatures(f);
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk);
    ASSERT_TRUE(dev_->status() & spec::kStatusFeaturesOk);
    drivers_.clear();
    const testing::DriverOptions dopt{
        .event_idx = (f & spec::Bit(spec::kFeatureEventIdx)) != 0,
        .indirect = (f & spec::Bit(spec::kFeatureIndirectDesc)) != 0,
        .max_indirect = 64};
    for (uint16_t q = 0; q < dev_->num_queues(); ++q) {
      drivers_.push_back(
          std::make_unique<typename Layout::Driver>(mem_, queue_size, dopt));
      QueueConfig* cfg = dev_->queue_config(q);
      ASSERT_NE(cfg, nullptr);
      const QueueConfig want = drivers_.back()->config();
      cfg->size = want.size;
      cfg->desc_addr = want.desc_addr;
      cfg->driver_addr = want.driver_addr;
      cfg->device_addr = want.device_addr;
      ASSERT_TRUE(dev_->EnableQueue(q));
    }
    dev_->SetStatus(spec::kStatusAcknowledge | spec::kStatusDriver |
                    spec::kStatusFeaturesOk | spec::kStatusDriverOk);
    ASSERT_FALSE(dev_->needs_reset());
  }

  uint64_t Header(uint32_t type, uint64_t sector, uint32_t reserved = 0) {
    const uint64_t gpa = mem_.Alloc(16, 16);
    const blk::RequestHeader h{type, reserved, sector};
    mem_.Write(gpa, &h, sizeof h);
    return gpa;
  }
  uint64_t StatusBuf() {
    const uint64_t gpa = mem_.Alloc(1, 1);
    mem_.Fill(gpa, 0xff, 1);
    return gpa;
  }
  // Splits [gpa, gpa+len) into `n` buffers.
  static void Split(std::vector<Buffer>& out, uint64_t gpa, uint32_t len,
                    uint32_t n, bool writable) {
    uint32_t done = 0;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t take = i + 1 == n ? len - done : len / n;
      out.push_back({gpa + done, take, writable});
      done += take;
    }
  }

  // Adds a chain, kicks, notifies, and waits for its completion.
  Result Do(uint16_t q, const std::vector<Buffer>& bufs,
            std::optional<uint64_t> status_gpa, bool indirect = false) {
    auto id = driver(q).Add(bufs, indirect);
    EXPECT_TRUE(id.has_value());
    if (!id) return {};
    driver(q).Kick();
    dev_->Notify(q);
    auto used = WaitUsed(q);
    EXPECT_TRUE(used.has_value()) << "request never completed";
    EXPECT_EQ(driver(q).device_error(), "");
    Result r;
    if (!used) return r;
    EXPECT_EQ(used->id, *id);
    r.used_len = used->len;
    if (status_gpa) r.status = mem_.template Load<uint8_t>(*status_gpa);
    return r;
  }

  // Reaps the next used buffer, servicing the backend's completion fd.
  std::optional<testing::UsedBuffer> WaitUsed(uint16_t q) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      if (auto u = driver(q).Reap()) return u;
      const int fd = backend_->queue(q).completion_fd();
      if (fd < 0 || std::chrono::steady_clock::now() > deadline) {
        return std::nullopt;
      }
      pollfd p{fd, POLLIN, 0};
      poll(&p, 1, 100);
      uint64_t v;
      [[maybe_unused]] ssize_t n = read(fd, &v, sizeof v);
      dev_->CompleteRequests(q);
    }
  }

  // Writes `data` at `sector` in `nseg` data buffers.
  Result Write(uint16_t q, uint64_t sector, const std::vector<uint8_t>& data,
               uint32_t nseg = 1, bool indirect = false) {
    const uint64_t h = Header(blk::kTypeOut, sector);
    const uint64_t d = mem_.Alloc(data.size() + 1, 512);
    if (!data.empty()) mem_.Write(d, data.data(), data.size());
    const uint64_t s = StatusBuf();
    std::vector<Buffer> bufs{{h, 16, false}};
    Split(bufs, d, static_cast<uint32_t>(data.size()), nseg, false);
    bufs.push_back({s, 1, true});
    return Do(q, bufs, s, indirect);
  }
  Result Read(uint16_t q, uint64_t sector, uint32_t len,
              std::vector<uint8_t>* out, uint32_t nseg = 1,
              bool indirect = false) {
    const uint64_t h = Header(blk::kTypeIn, sector);
    const uint64_t d = mem_.Alloc(len + 1, 512);
    mem_.Fill(d, 0xee, len);
    const uint64_t s = StatusBuf();
    std::vector<Buffer> bufs{{h, 16, false}};
    Split(bufs, d, len, nseg, true);
    bufs.push_back({s, 1, true});
    Result r = Do(q, bufs, s, indirect);
    if (out != nullptr) {
      out->resize(len);
      if (len) mem_.Read(d, out->data(), len);
    }
    return r;
  }
  Result Simple(uint16_t q, uint32_t type, uint64_t sector = 0) {
    const uint64_t h = Header(type, sector);
    const uint64_t s = StatusBuf();
    return Do(q, {{h, 16, false}, {s, 1, true}}, s);
  }
  Result Ranges(uint16_t q, uint32_t type,
                const std::vector<blk::DiscardWriteZeroes>& segs) {
    const uint64_t h = Header(type, 0);
    const uint64_t d = mem_.Alloc(16 * segs.size() + 1, 16);
    if (!segs.empty()) mem_.Write(d, segs.data(), 16 * segs.size());
    const uint64_t s = StatusBuf();
    std::vector<Buffer> bufs{{h, 16, false}};
    if (!segs.empty()) {
      bufs.push_back({d, static_cast<uint32_t>(16 * segs.size()), false});
    }
    bufs.push_back({s, 1, true});
    return Do(q, bufs, s);
  }

 private:
  TestGuestMemory mem_;
  RecordingInterrupt irq_;
  Backend* backend_;
  std::unique_ptr<Device> dev_;
  std::vector<std::unique_ptr<typename Layout::Driver>> drivers_;
};

inline std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 9));
  }
  return v;
}

using Layouts = ::testing::Types<testing::SplitLayout, testing::PackedLayout>;
class LayoutNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

}  // namespace virtio::blktest

#endif  // LIBVIRTIO_TESTS_BLK_TEST_UTIL_H_
