// BlkClient against real vhost-user-blk back-ends: our vhost-user-device
// (split and packed rings, RAM and file backing, multi-queue, read-only)
// and qemu-storage-daemon when installed; and against a hostile in-process
// back-end that corrupts its replies.
#include "vhost_user/frontend/blk_client.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "vhost_user/connection.h"
#include "virtio/blk_spec.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

namespace blk = virtio::blk;
namespace spec = virtio::spec;

constexpr uint64_t kDiskBytes = 64ull << 20;

std::string TempDir() {
  char tmpl[] = "/tmp/vu-frontend-XXXXXX";
  const char* d = mkdtemp(tmpl);
  return d ? d : "/tmp";
}

// A back-end process serving a socket; killed (SIGTERM, then SIGKILL) when
// destroyed.
class Process {
 public:
  Process() = default;
  ~Process() { Stop(); }
  bool Start(const std::vector<std::string>& argv, const std::string& socket) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // Not posix_spawn: the child must die with the test (PDEATHSIG), or a
    // test killed by a timeout or a sanitizer leaves the back-end running
    // and holding ctest's output pipe.
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      execvp(args[0], args.data());
      _exit(127);
    }
    // Ready once the socket accepts connections (it exists a moment
    // before the back-end listens).
    for (int i = 0; i < 500; ++i) {
      struct stat st;
      if (stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
          Connect(socket).ok()) {
        return true;  // the back-end sees this probe hang up and goes on
      }
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      usleep(10000);
    }
    return false;
  }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      usleep(10000);
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// Our daemon with --device blk,<spec>.
struct Daemon {
  std::string dir = TempDir();
  std::string socket = dir + "/blk.sock";
  Process proc;
  bool Start(const std::string& device) {
    return proc.Start({VHOST_USER_DEVICE_PATH, "--socket", socket, "--device",
                       "blk," + device},
                      socket);
  }
  ~Daemon() {
    proc.Stop();
    std::string cmd = "rm -rf '" + dir + "'";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
  }
};

std::string MakeImage(const std::string& dir, uint64_t bytes) {
  const std::string path = dir + "/disk.img";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return "";
  const bool ok = ftruncate(fileno(f), static_cast<off_t>(bytes)) == 0;
  std::fclose(f);
  return ok ? path : "";
}

uint8_t Pattern(uint64_t sector, uint32_t i) {
  return static_cast<uint8_t>((sector * 131 + i * 7 + (i >> 9)) & 0xff);
}

void Fill(uint8_t* p, uint64_t sector, uint32_t len) {
  for (uint32_t i = 0; i < len; ++i) p[i] = Pattern(sector, i);
}

bool Check(const uint8_t* p, uint64_t sector, uint32_t len) {
  for (uint32_t i = 0; i < len; ++i) {
    if (p[i] != Pattern(sector, i)) return false;
  }
  return true;
}

// Waits for exactly `count` completions on `q`; returns them by user_data.
std::map<uint64_t, BlkCompletion> Drain(BlkClient& c, uint16_t q,
                                        size_t count) {
  std::map<uint64_t, BlkCompletion> done;
  BlkCompletion out[64];
  while (done.size() < count) {
    auto n = c.Wait(q, out, 1, 5000);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || *n == 0) break;
    for (size_t i = 0; i < *n; ++i) {
      EXPECT_EQ(done.count(out[i].user_data), 0u) << "completed twice";
      done[out[i].user_data] = out[i];
    }
  }
  return done;
}

// Writes `count` 4 KiB blocks of pattern at spread-out sectors on queue q
// with up to `depth` in flight, reads them back and compares.
void WriteReadVerify(BlkClient& c, uint16_t q, uint32_t count, uint32_t depth,
                     uint64_t first_sector) {
  constexpr uint32_t kLen = 4096;
  std::vector<uint8_t*> bufs(depth);
  for (auto& b : bufs) {
    b = static_cast<uint8_t*>(c.AllocBuffer(kLen));
    ASSERT_NE(b, nullptr);
  }
  auto sector_of = [&](uint32_t i) {
    return first_sector + (uint64_t{i} * 40503 % 2048) * 8;
  };
  for (int pass = 0; pass < 2; ++pass) {
    const bool write = pass == 0;
    for (uint32_t start = 0; start < count; start += depth) {
      const uint32_t n = std::min(depth, count - start);
      for (uint32_t k = 0; k < n; ++k) {
        const uint64_t s = sector_of(start + k);
        if (write) {
          Fill(bufs[k], s, kLen);
          ASSERT_TRUE(c.Write(q, s, bufs[k], kLen, start + k).ok());
        } else {
          std::memset(bufs[k], 0, kLen);
          ASSERT_TRUE(c.Read(q, s, bufs[k], kLen, start + k).ok());
        }
      }
      EXPECT_EQ(c.inflight(q), n);
      auto done = Drain(c, q, n);
      ASSERT_EQ(done.size(), n);
      for (uint32_t k = 0; k < n; ++k) {
        auto it = done.find(start + k);
        ASSERT_NE(it, done.end());
        EXPECT_EQ(it->second.result, BlkResult::kOk);
        if (!write) {
          EXPECT_EQ(it->second.len, kLen + 1);
          EXPECT_TRUE(Check(bufs[k], sector_of(start + k), kLen))
              << "sector " << sector_of(start + k);
        }
      }
    }
  }
  for (auto* b : bufs) c.FreeBuffer(b);
}

BlkResult One(BlkClient& c, uint16_t q, absl::Status submitted) {
  EXPECT_TRUE(submitted.ok()) << submitted;
  if (!submitted.ok()) return BlkResult::kBadReply;
  auto done = Drain(c, q, 1);
  if (done.size() != 1) return BlkResult::kBadReply;
  return done.begin()->second.result;
}

// --- Against vhost-user-device ----------------------------------------------

struct Case {
  bool packed;
  bool file;
};

class OurDaemonTest : public ::testing::TestWithParam<Case> {
 protected:
  std::string Spec(const std::string& extra) {
    std::string s = GetParam().file
                        ? "path=" + MakeImage(daemon_.dir, kDiskBytes)
                        : "backend=ram,size=" + std::to_string(kDiskBytes);
    return s + (extra.empty() ? "" : "," + extra);
  }
  std::unique_ptr<BlkClient> Connect(
      uint16_t queues = 1, uint16_t queue_size = 256,
      BlkClientOptions::Indirect indirect =
          BlkClientOptions::Indirect::kWhenFull) {
    BlkClientOptions o;
    o.indirect = indirect;
    o.socket_path = daemon_.socket;
    o.packed = GetParam().packed;
    o.num_queues = queues;
    o.queue_size = queue_size;
    auto c = BlkClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  Daemon daemon_;
};

TEST_P(OurDaemonTest, NegotiatesAndReadsConfig) {
  ASSERT_TRUE(daemon_.Start(Spec("num-queues=2")));
  auto c = Connect(0);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->capacity_sectors(), kDiskBytes / 512);
  EXPECT_EQ(c->num_queues(), 2);
  EXPECT_EQ(c->packed(), GetParam().packed);
  EXPECT_TRUE(c->has_feature(blk::kFeatureFlush));
  EXPECT_TRUE(c->has_feature(blk::kFeatureMq));
  EXPECT_FALSE(c->read_only());
  EXPECT_GT(c->max_segments(), 0u);
  EXPECT_TRUE(c->protocol_features() & Bit(kProtocolReplyAck));
  EXPECT_TRUE(c->protocol_features() & Bit(kProtocolConfig));
}

TEST_P(OurDaemonTest, WriteReadBackQueueDepth32) {
  ASSERT_TRUE(daemon_.Start(Spec("")));
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  WriteReadVerify(*c, 0, 256, 32, 0);
  EXPECT_EQ(One(*c, 0, c->Flush(0, 7)), BlkResult::kOk);
}

TEST_P(OurDaemonTest, DataSurvivesReconnect) {
  ASSERT_TRUE(daemon_.Start(Spec("")));
  constexpr uint64_t kSector = 1000;
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    auto* b = static_cast<uint8_t*>(c->AllocBuffer(8192));
    ASSERT_NE(b, nullptr);
    Fill(b, kSector, 8192);
    EXPECT_EQ(One(*c, 0, c->Write(0, kSector, b, 8192, 1)), BlkResult::kOk);
    EXPECT_EQ(One(*c, 0, c->Flush(0, 2)), BlkResult::kOk);
  }
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(8192));
  ASSERT_NE(b, nullptr);
  // Two segments: 512 + 7680 bytes.
  iovec v[2] = {{b, 512}, {b + 512, 8192 - 512}};
  EXPECT_EQ(One(*c, 0, c->Readv(0, kSector, v, 2, 3)), BlkResult::kOk);
  EXPECT_TRUE(Check(b, kSector, 8192));
}

TEST_P(OurDaemonTest, MultiQueue) {
  ASSERT_TRUE(daemon_.Start(Spec("num-queues=4")));
  auto c = Connect(4);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->num_queues(), 4);
  std::vector<std::thread> threads;
  for (uint16_t q = 0; q < 4; ++q) {
    threads.emplace_back(
        [&, q] { WriteReadVerify(*c, q, 64, 16, uint64_t{q} * 16384); });
  }
  for (auto& t : threads) t.join();
}

TEST_P(OurDaemonTest, DiscardAndWriteZeroes) {
  ASSERT_TRUE(daemon_.Start(Spec("")));
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(4096));
  ASSERT_NE(b, nullptr);
  Fill(b, 64, 4096);
  EXPECT_EQ(One(*c, 0, c->Write(0, 64, b, 4096, 1)), BlkResult::kOk);
  if (c->has_feature(blk::kFeatureWriteZeroes)) {
    EXPECT_EQ(One(*c, 0, c->WriteZeroes(0, 64, 8, false, 2)), BlkResult::kOk);
    EXPECT_EQ(One(*c, 0, c->Read(0, 64, b, 4096, 3)), BlkResult::kOk);
    for (int i = 0; i < 4096; ++i) ASSERT_EQ(b[i], 0) << i;
  } else {
    ADD_FAILURE() << "our daemon offers WRITE_ZEROES";
  }
  if (c->has_feature(blk::kFeatureDiscard)) {
    EXPECT_EQ(One(*c, 0, c->Discard(0, 64, 8, 4)), BlkResult::kOk);
  } else {
    ADD_FAILURE() << "our daemon offers DISCARD";
  }
}

// Fills a 64-entry ring with 512-byte reads; returns how many fit.
uint32_t FillRing(BlkClient& c, uint8_t* b) {
  uint32_t queued = 0;
  absl::Status s;
  while ((s = c.Read(0, queued, b + 512 * (queued % 64), 512, queued)).ok()) {
    if (++queued > 64) break;
  }
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_EQ(Drain(c, 0, queued).size(), queued);
  EXPECT_EQ(c.inflight(0), 0u);
  return queued;
}

TEST_P(OurDaemonTest, FillsTheRing) {
  ASSERT_TRUE(daemon_.Start(Spec("queue-size=64")));
  {
    auto c = Connect(1, 64, BlkClientOptions::Indirect::kNever);
    ASSERT_NE(c, nullptr);
    auto* b = static_cast<uint8_t*>(c->AllocBuffer(512 * 64));
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(FillRing(*c, b), 21u);  // 3 descriptors each
  }
  {
    // Direct while they fit (21), then one indirect in the last slot.
    auto c = Connect(1, 64, BlkClientOptions::Indirect::kWhenFull);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->has_feature(spec::kFeatureIndirectDesc));
    auto* b = static_cast<uint8_t*>(c->AllocBuffer(512 * 64));
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(FillRing(*c, b), 22u);
  }
  auto c = Connect(1, 64, BlkClientOptions::Indirect::kAlways);
  ASSERT_NE(c, nullptr);
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(512 * 64));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(FillRing(*c, b), 64u);
  // Again and again, across ring wraps, at full depth.
  WriteReadVerify(*c, 0, 512, 64, 0);
}

TEST_P(OurDaemonTest, BadRequestsFailAlone) {
  ASSERT_TRUE(daemon_.Start(Spec("")));
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(4096));
  ASSERT_NE(b, nullptr);
  // Past the end of the disk.
  EXPECT_EQ(One(*c, 0, c->Read(0, kDiskBytes / 512, b, 4096, 1)),
            BlkResult::kIoError);
  // Not a multiple of 512.
  EXPECT_EQ(One(*c, 0, c->Read(0, 0, b, 100, 2)), BlkResult::kIoError);
  // Buffers the back-end cannot see are refused before submission.
  std::vector<uint8_t> private_buf(4096);
  EXPECT_TRUE(
      absl::IsInvalidArgument(c->Read(0, 0, private_buf.data(), 4096, 3)));
  EXPECT_TRUE(absl::IsInvalidArgument(c->Read(5, 0, b, 4096, 3)));
  // The queue still works.
  EXPECT_EQ(One(*c, 0, c->Read(0, 0, b, 4096, 4)), BlkResult::kOk);
}

TEST_P(OurDaemonTest, ReadOnlyRejectsWrites) {
  ASSERT_TRUE(daemon_.Start(Spec("readonly=on")));
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->read_only());
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(4096));
  ASSERT_NE(b, nullptr);
  const BlkResult r = One(*c, 0, c->Write(0, 0, b, 4096, 1));
  EXPECT_TRUE(r == BlkResult::kIoError || r == BlkResult::kUnsupported)
      << static_cast<int>(r);
  EXPECT_EQ(One(*c, 0, c->Read(0, 0, b, 4096, 2)), BlkResult::kOk);
}

TEST_P(OurDaemonTest, PollingWithoutInterrupts) {
  ASSERT_TRUE(daemon_.Start(Spec("")));
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(4096 * 8));
  ASSERT_NE(b, nullptr);
  for (int round = 0; round < 1000; ++round) {
    for (uint32_t k = 0; k < 8; ++k) {
      ASSERT_TRUE(c->Read(0, k * 8, b + 4096 * k, 4096, k).ok());
    }
    size_t got = 0;
    BlkCompletion out[8];
    for (int spin = 0; got < 8 && spin < 100000000; ++spin) {
      auto n = c->Poll(0, absl::Span<BlkCompletion>(out + got, 8 - got));
      ASSERT_TRUE(n.ok()) << n.status();
      got += *n;
    }
    ASSERT_EQ(got, 8u);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, OurDaemonTest,
                         ::testing::Values(Case{false, false},
                                           Case{true, false}, Case{false, true},
                                           Case{true, true}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.packed ? "packed"
                                                             : "split") +
                                  (i.param.file ? "_file" : "_ram");
                         });

TEST(BlkClientTest, ConnectFailsWithoutBackend) {
  BlkClientOptions o;
  o.socket_path = "/nonexistent/vhost.sock";
  auto c = BlkClient::Connect(o);
  EXPECT_FALSE(c.ok());
}

TEST(BlkClientTest, PackedRefusedWhenNotOffered) {
  Daemon d;
  ASSERT_TRUE(d.Start("backend=ram,size=1M,packed=off"));
  BlkClientOptions o;
  o.socket_path = d.socket;
  o.packed = true;
  auto c = BlkClient::Connect(o);
  EXPECT_TRUE(absl::IsFailedPrecondition(c.status())) << c.status();
}

// --- Against qemu-storage-daemon ---------------------------------------------

std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string all = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find(':', start);
    if (end == std::string::npos) end = all.size();
    const std::string p = all.substr(start, end - start) + "/" + name;
    if (access(p.c_str(), X_OK) == 0) return p;
    start = end + 1;
  }
  return "";
}

class QemuStorageDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    qsd_ = FindInPath("qemu-storage-daemon");
    if (qsd_.empty()) {
      GTEST_SKIP() << "qemu-storage-daemon not installed (Debian package "
                      "qemu-system-common)";
    }
  }
  bool Start(bool writable, int queues) {
    const std::string img = MakeImage(dir_.dir, kDiskBytes);
    return proc_.Start(
        {qsd_, "--blockdev", "driver=file,node-name=f0,filename=" + img,
         "--export",
         "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" +
             dir_.socket + ",writable=" + (writable ? "on" : "off") +
             ",num-queues=" + std::to_string(queues)},
        dir_.socket);
  }
  std::unique_ptr<BlkClient> Connect(uint16_t queues) {
    BlkClientOptions o;
    o.socket_path = dir_.socket;
    o.num_queues = queues;
    auto c = BlkClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  std::string qsd_;
  Daemon dir_;  // only its temp dir and socket path; not started
  Process proc_;
};

TEST_F(QemuStorageDaemonTest, WriteReadBackFlushMultiQueue) {
  ASSERT_TRUE(Start(true, 2));
  auto c = Connect(2);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->capacity_sectors(), kDiskBytes / 512);
  EXPECT_EQ(c->num_queues(), 2);
  EXPECT_FALSE(c->packed());
  WriteReadVerify(*c, 0, 128, 32, 0);
  WriteReadVerify(*c, 1, 64, 16, 16384);
  EXPECT_EQ(One(*c, 0, c->Flush(0, 1)), BlkResult::kOk);
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(4096));
  ASSERT_NE(b, nullptr);
  if (c->has_feature(blk::kFeatureWriteZeroes)) {
    Fill(b, 8, 4096);
    EXPECT_EQ(One(*c, 0, c->Write(0, 8, b, 4096, 2)), BlkResult::kOk);
    EXPECT_EQ(One(*c, 0, c->WriteZeroes(0, 8, 8, false, 3)), BlkResult::kOk);
    EXPECT_EQ(One(*c, 0, c->Read(0, 8, b, 4096, 4)), BlkResult::kOk);
    for (int i = 0; i < 4096; ++i) ASSERT_EQ(b[i], 0) << i;
  }
  if (c->has_feature(blk::kFeatureDiscard)) {
    EXPECT_EQ(One(*c, 0, c->Discard(0, 8, 8, 5)), BlkResult::kOk);
  }
  EXPECT_EQ(One(*c, 0, c->Read(0, kDiskBytes / 512, b, 4096, 6)),
            BlkResult::kIoError);
}

TEST_F(QemuStorageDaemonTest, ReadOnlyRejectsWrites) {
  ASSERT_TRUE(Start(false, 1));
  auto c = Connect(1);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->read_only());
  auto* b = static_cast<uint8_t*>(c->AllocBuffer(4096));
  ASSERT_NE(b, nullptr);
  const BlkResult r = One(*c, 0, c->Write(0, 0, b, 4096, 1));
  EXPECT_TRUE(r == BlkResult::kIoError || r == BlkResult::kUnsupported)
      << static_cast<int>(r);
  EXPECT_EQ(One(*c, 0, c->Read(0, 0, b, 4096, 2)), BlkResult::kOk);
}

// --- Against a hostile back-end
// ------------------------------------------------

enum class Hostility {
  kBadId,          // used element names an ID never submitted
  kReplayId,       // the same ID completed twice
  kNoStatus,       // completes without writing the status byte
  kHugeLen,        // used length beyond the request's writable bytes
  kIndexJump,      // used->idx far ahead of what was submitted
  kShortFeatures,  // GET_FEATURES reply of the wrong size
  kCloseAtConfig,  // hangs up instead of answering GET_CONFIG
};

// Speaks just enough vhost-user to get a split ring going (no REPLY_ACK,
// CONFIG only), then answers the first request the way `Hostility` says.
// Runs in this process: the front-end's memory is identity-mapped, so the
// ring addresses it sends are usable pointers here.
class HostileBackend {
 public:
  explicit HostileBackend(Hostility h) : h_(h) {
    auto l = Listen(socket_);
    if (l.ok()) listen_ = *std::move(l);
    thread_ = std::thread([this] { Serve(); });
  }
  ~HostileBackend() {
    thread_.join();
    if (data_.joinable()) data_.join();
    unlink(socket_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& socket() const { return socket_; }

 private:
  void Reply(Connection& c, uint32_t request, const void* p, size_t n) {
    Message m;
    m.header = {request, kVersion | kFlagReply, 0};
    m.payload.assign(static_cast<const uint8_t*>(p),
                     static_cast<const uint8_t*>(p) + n);
    (void)c.Send(m);
  }

  void Serve() {
    if (!listen_) return;
    auto fd = Accept(listen_.get());
    if (!fd.ok()) return;
    Connection c(*std::move(fd), 5000);
    for (;;) {
      auto m = c.Receive();
      if (!m.ok()) return;
      switch (m->request()) {
        case kGetFeatures: {
          const uint64_t f =
              spec::Bit(spec::kFeatureVersion1) | Bit(kFeatureProtocolFeatures);
          Reply(c, kGetFeatures, &f, h_ == Hostility::kShortFeatures ? 4 : 8);
          break;
        }
        case kGetProtocolFeatures: {
          const uint64_t f = Bit(kProtocolConfig);
          Reply(c, kGetProtocolFeatures, &f, 8);
          break;
        }
        case kGetConfig: {
          if (h_ == Hostility::kCloseAtConfig) return;
          const auto h = m->As<ConfigHeader>();
          std::vector<uint8_t> r(sizeof h + h.size, 0);
          std::memcpy(r.data(), &h, sizeof h);
          const uint64_t capacity = 2048;
          if (h.offset == 0 && h.size >= 8) {
            std::memcpy(r.data() + sizeof h, &capacity, 8);
          }
          Reply(c, kGetConfig, r.data(), r.size());
          break;
        }
        case kSetVringAddr:
          addr_ = m->As<VringAddr>();
          break;
        case kSetVringNum:
          num_ = m->As<VringState>().num;
          break;
        case kSetVringCall:
          if (!m->fds.empty()) call_ = std::move(m->fds[0]);
          break;
        case kSetVringKick:
          if (!m->fds.empty()) kick_ = std::move(m->fds[0]);
          data_ = std::thread([this] { Misbehave(); });
          break;
        default:
          break;  // SET_OWNER, SET_FEATURES, SET_MEM_TABLE, ... accepted
      }
    }
  }

  void Misbehave() {
    pollfd p{kick_.get(), POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) return;
    auto* avail = reinterpret_cast<uint16_t*>(addr_.avail_user_addr);
    auto* desc = reinterpret_cast<spec::SplitDesc*>(addr_.desc_user_addr);
    auto* used = reinterpret_cast<uint8_t*>(addr_.used_user_addr);
    const uint16_t head = avail[2];
    // The status byte: the chain's last descriptor.
    uint16_t i = head;
    for (int n = 0; n < 16 && (desc[i].flags & spec::kDescFlagNext); ++n) {
      i = desc[i].next;
    }
    auto* status = reinterpret_cast<uint8_t*>(desc[i].addr);
    auto* elems = reinterpret_cast<spec::SplitUsedElem*>(used + 4);
    uint16_t idx = 1;
    switch (h_) {
      case Hostility::kBadId:
        elems[0] = {999, 1};
        break;
      case Hostility::kReplayId:
        *status = 0;
        elems[0] = {head, 1};
        elems[1] = {head, 1};
        idx = 2;
        break;
      case Hostility::kNoStatus:
        elems[0] = {head, 1};
        break;
      case Hostility::kHugeLen:
        *status = 0;
        elems[0] = {head, 1u << 30};
        break;
      case Hostility::kIndexJump:
        *status = 0;
        elems[0] = {head, 1};
        idx = 100;
        break;
      default:
        return;
    }
    __atomic_store_n(reinterpret_cast<uint16_t*>(used + 2), idx,
                     __ATOMIC_RELEASE);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(call_.get(), &one, sizeof one);
  }

  Hostility h_;
  std::string dir_ = TempDir();
  std::string socket_ = dir_ + "/hostile.sock";
  UniqueFd listen_;
  std::thread thread_, data_;
  VringAddr addr_{};
  uint32_t num_ = 0;
  UniqueFd kick_, call_;
};

std::unique_ptr<BlkClient> ConnectHostile(const HostileBackend& b,
                                          absl::Status* error = nullptr) {
  BlkClientOptions o;
  o.socket_path = b.socket();
  o.timeout_ms = 2000;
  auto c = BlkClient::Connect(o);
  if (error != nullptr) *error = c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

// Submits one 4 KiB read and waits for what comes back.
absl::StatusOr<size_t> ReadOnce(BlkClient& c, BlkCompletion* out, size_t max) {
  void* b = c.AllocBuffer(4096);
  if (b == nullptr) return absl::InternalError("no buffer");
  if (absl::Status s = c.Read(0, 0, b, 4096, 42); !s.ok()) return s;
  return c.Wait(0, absl::Span<BlkCompletion>(out, max), 1, 5000);
}

TEST(HostileBackendTest, UnknownIdStopsTheQueue) {
  HostileBackend b(Hostility::kBadId);
  auto c = ConnectHostile(b);
  ASSERT_NE(c, nullptr);
  BlkCompletion out[4];
  auto n = ReadOnce(*c, out, 4);
  EXPECT_TRUE(absl::IsDataLoss(n.status())) << n.status();
  void* buf = c->AllocBuffer(4096);
  EXPECT_TRUE(absl::IsFailedPrecondition(c->Read(0, 0, buf, 4096, 1)));
}

TEST(HostileBackendTest, ReplayedIdCompletesOnce) {
  HostileBackend b(Hostility::kReplayId);
  auto c = ConnectHostile(b);
  ASSERT_NE(c, nullptr);
  // Two requests out; the back-end completes the first one twice.
  void* buf = c->AllocBuffer(8192);
  ASSERT_NE(buf, nullptr);
  ASSERT_TRUE(c->Read(0, 0, buf, 4096, 42).ok());
  ASSERT_TRUE(c->Read(0, 8, static_cast<uint8_t*>(buf) + 4096, 4096, 43).ok());
  BlkCompletion out[4];
  auto n = c->Wait(0, absl::Span<BlkCompletion>(out, 4), 1, 5000);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].user_data, 42u);
  EXPECT_EQ(out[0].result, BlkResult::kOk);
  auto again = c->Poll(0, absl::Span<BlkCompletion>(out, 4));
  EXPECT_TRUE(absl::IsDataLoss(again.status())) << again.status();
}

TEST(HostileBackendTest, MissingStatusIsABadReply) {
  HostileBackend b(Hostility::kNoStatus);
  auto c = ConnectHostile(b);
  ASSERT_NE(c, nullptr);
  BlkCompletion out[4];
  auto n = ReadOnce(*c, out, 4);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].result, BlkResult::kBadReply);
}

TEST(HostileBackendTest, OversizedLengthIsABadReply) {
  HostileBackend b(Hostility::kHugeLen);
  auto c = ConnectHostile(b);
  ASSERT_NE(c, nullptr);
  BlkCompletion out[4];
  auto n = ReadOnce(*c, out, 4);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].result, BlkResult::kBadReply);
}

TEST(HostileBackendTest, UsedIndexJumpStopsTheQueue) {
  HostileBackend b(Hostility::kIndexJump);
  auto c = ConnectHostile(b);
  ASSERT_NE(c, nullptr);
  BlkCompletion out[4];
  auto n = ReadOnce(*c, out, 4);
  EXPECT_TRUE(absl::IsDataLoss(n.status())) << n.status();
}

TEST(HostileBackendTest, MalformedReplyFailsConnect) {
  HostileBackend b(Hostility::kShortFeatures);
  absl::Status s;
  EXPECT_EQ(ConnectHostile(b, &s), nullptr);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
}

TEST(HostileBackendTest, HangUpFailsConnect) {
  HostileBackend b(Hostility::kCloseAtConfig);
  absl::Status s;
  EXPECT_EQ(ConnectHostile(b, &s), nullptr);
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
}

}  // namespace
}  // namespace vhost_user
