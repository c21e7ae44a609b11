// vhost-user-device's worker poll window (--poll-us) and --busy-poll, end to
// end: the daemon binary serves a blk device to BlkClient, which issues
// requests separated by idle gaps chosen around the window (shorter, about
// equal, longer, much longer), waiting for each on the call eventfd. A
// wake-up lost when a worker stops spinning and goes back to sleep shows up
// as a request that never completes (Wait() times out).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "vhost_user/connection.h"
#include "vhost_user/frontend/blk_client.h"

namespace vhost_user {
namespace {

constexpr uint64_t kDiskBytes = 16ull << 20;
constexpr uint32_t kLen = 4096;

// The daemon, killed (SIGTERM, then SIGKILL) when destroyed.
class Daemon {
 public:
  Daemon() {
    char tmpl[] = "/tmp/vu-pollwin-XXXXXX";
    const char* d = mkdtemp(tmpl);
    dir_ = d != nullptr ? d : "";
    socket_ = dir_ + "/blk.sock";
  }
  ~Daemon() {
    Stop();
    if (!dir_.empty()) {
      std::string cmd = "rm -rf '" + dir_ + "'";
      [[maybe_unused]] int rc = std::system(cmd.c_str());
    }
  }
  const std::string& dir() const { return dir_; }
  const std::string& socket() const { return socket_; }

  bool Start(const std::string& device, const std::vector<std::string>& flags) {
    if (dir_.empty()) return false;
    std::vector<std::string> argv = {VHOST_USER_DEVICE_PATH, "--socket",
                                     socket_, "--device", device};
    argv.insert(argv.end(), flags.begin(), flags.end());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      // Dies with the test, even one killed by a timeout.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      execv(args[0], args.data());
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      struct stat st;
      if (stat(socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
          Connect(socket_).ok()) {
        return true;
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
  // False if the daemon had already died.
  bool Alive() {
    int status;
    return pid_ > 0 && waitpid(pid_, &status, WNOHANG) == 0;
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
  std::string dir_, socket_;
  pid_t pid_ = -1;
};

uint8_t Pattern(uint64_t sector, uint32_t i) {
  return static_cast<uint8_t>((sector * 131 + i * 7 + (i >> 9)) & 0xff);
}

struct Case {
  const char* name;
  std::vector<std::string> flags;
  bool packed;
  bool file;  // a /dev/shm (or /tmp) image through UringDisk, else RAM
  // Poll window in microseconds, for choosing the gaps (0: none).
  uint32_t window_us;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name << (c.packed ? " packed" : " split")
      << (c.file ? " file" : " ram");
}

class PollWindowTest : public testing::TestWithParam<Case> {};

// Sleeps `us` microseconds without spinning (the client must really go
// idle, or the daemon's worker never sees a quiet ring).
void Idle(uint32_t us) {
  if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

TEST_P(PollWindowTest, ServesRequestsAfterIdleGaps) {
  const Case& c = GetParam();
  Daemon d;
  std::string device = "blk,";
  if (c.file) {
    const std::string path = d.dir() + "/disk.img";
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(ftruncate(fileno(f), kDiskBytes), 0);
    std::fclose(f);
    device += "path=" + path;
  } else {
    device += "backend=ram,size=" + std::to_string(kDiskBytes);
  }
  ASSERT_TRUE(d.Start(device, c.flags)) << "daemon did not start: " << device;

  BlkClientOptions o;
  o.socket_path = d.socket();
  o.packed = c.packed;
  o.queue_size = 64;
  o.buffer_memory = 16 * kLen + (1 << 20);
  auto client = BlkClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  BlkClient& bc = **client;
  std::vector<uint8_t*> bufs(8);
  for (auto& b : bufs) {
    b = static_cast<uint8_t*>(bc.AllocBuffer(kLen));
    ASSERT_NE(b, nullptr);
  }

  // Gaps around the window: well inside, just inside, just past, several
  // windows, and long enough for any worker to be asleep for sure.
  const uint32_t w = c.window_us != 0 ? c.window_us : 50;
  const std::vector<uint32_t> gaps = {0,     w / 4,       w * 9 / 10, w,
                                      w + 5, w * 11 / 10, w * 3,      20000};
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  uint32_t requests = 0;
  for (int iter = 0; iter < 120; ++iter) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    const uint32_t gap =
        gaps[(rng * 0x2545f4914f6cdd1dull >> 33) % gaps.size()];
    Idle(gap);
    // One request, or a burst of 8, alternating writes and read-backs.
    const uint32_t n = iter % 3 == 2 ? 8 : 1;
    const uint64_t base = (uint64_t(iter) * 977 % 2048) * 8;
    for (int pass = 0; pass < 2; ++pass) {
      const bool write = pass == 0;
      for (uint32_t k = 0; k < n; ++k) {
        const uint64_t sector = base + k * 8;
        if (write) {
          for (uint32_t i = 0; i < kLen; ++i) bufs[k][i] = Pattern(sector, i);
          ASSERT_TRUE(bc.Write(0, sector, bufs[k], kLen, k).ok());
        } else {
          std::memset(bufs[k], 0, kLen);
          ASSERT_TRUE(bc.Read(0, sector, bufs[k], kLen, k).ok());
        }
      }
      size_t got = 0;
      BlkCompletion out[8];
      const auto t0 = std::chrono::steady_clock::now();
      while (got < n) {
        auto m = bc.Wait(0, absl::MakeSpan(out, n - got), 1, 3000);
        ASSERT_TRUE(m.ok()) << m.status();
        ASSERT_GT(*m, 0u) << "no completion within 3 s after a " << gap
                          << " us idle gap (iteration " << iter
                          << "): lost wake-up";
        for (size_t i = 0; i < *m; ++i) {
          EXPECT_EQ(out[i].result, BlkResult::kOk);
        }
        got += *m;
      }
      // Generous: a sleeping worker wakes in microseconds; this only
      // catches a worker that needed some unrelated event to notice.
      EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1))
          << "after a " << gap << " us gap";
      requests += n;
      if (!write) {
        for (uint32_t k = 0; k < n; ++k) {
          for (uint32_t i = 0; i < kLen; ++i) {
            ASSERT_EQ(bufs[k][i], Pattern(base + k * 8, i))
                << "iteration " << iter << " request " << k << " byte " << i;
          }
        }
      }
    }
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(requests, 240u);
  EXPECT_TRUE(d.Alive());
}

std::vector<Case> Cases() {
  std::vector<Case> v;
  for (bool packed : {false, true}) {
    for (bool file : {false, true}) {
      v.push_back({"default", {}, packed, file, 50});
      v.push_back({"p0", {"--poll-us=0"}, packed, file, 0});
      v.push_back({"p200", {"--poll-us=200"}, packed, file, 200});
    }
    v.push_back({"busy", {"--busy-poll"}, packed, false, 0});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Daemon, PollWindowTest, testing::ValuesIn(Cases()),
                         [](const testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.name) +
                                  (i.param.packed ? "_packed" : "_split") +
                                  (i.param.file ? "_file" : "_ram");
                         });

}  // namespace
}  // namespace vhost_user
