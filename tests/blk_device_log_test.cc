// What BlkDevice logs for an operator: a disk error names the operation,
// queue, sector, size and errno, and is rate limited; a request whose
// buffer lies outside guest memory is logged as the guest's error.
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "blk_test_util.h"
#include "gtest/gtest.h"
#include "virtio/log.h"

namespace virtio::blktest {
namespace {

constexpr uint64_t kDiskBytes = 1 << 20;

std::mutex g_lines_mu;
std::vector<std::string> g_lines;

void CaptureSink(LogLevel, std::string_view message) {
  std::lock_guard<std::mutex> l(g_lines_mu);
  g_lines.emplace_back(message);
}

std::vector<std::string> Lines(const std::string& containing) {
  std::lock_guard<std::mutex> l(g_lines_mu);
  std::vector<std::string> out;
  for (const std::string& line : g_lines) {
    if (line.find(containing) != std::string::npos) out.push_back(line);
  }
  return out;
}

class BlkDeviceLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    {
      std::lock_guard<std::mutex> l(g_lines_mu);
      g_lines.clear();
    }
    SetLogSink(&CaptureSink);
  }
  void TearDown() override { SetLogSink(nullptr); }
};

TEST_F(BlkDeviceLogTest, DiskErrorNamesOperationQueueSectorAndErrno) {
  ScriptedDisk disk(kDiskBytes);
  disk.fail = [](const ScriptedDisk::Request& r) {
    return r.op != ScriptedDisk::Op::kFlush;
  };
  Rig<testing::SplitLayout, ScriptedDisk> rig(disk, {.name = "disk0"});
  rig.BringUp();
  EXPECT_EQ(rig.Write(0, 8, Pattern(1024, 1)).status, blk::kStatusIoErr);
  EXPECT_EQ(rig.Read(0, 24, 512, nullptr).status, blk::kStatusIoErr);
  const std::vector<std::string> lines = Lines("disk error");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "disk0: queue 0: disk error: write of 1024 bytes at sector 8: "
            "Input/output error (errno 5); the guest gets IOERR");
  EXPECT_EQ(lines[1],
            "disk0: queue 0: disk error: read of 512 bytes at sector 24: "
            "Input/output error (errno 5); the guest gets IOERR");
}

TEST_F(BlkDeviceLogTest, DiskErrorsAreRateLimited) {
  ScriptedDisk disk(kDiskBytes);
  disk.fail = [](const ScriptedDisk::Request&) { return true; };
  Rig<testing::SplitLayout, ScriptedDisk> rig(disk);
  rig.BringUp();
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(rig.Read(0, 0, 512, nullptr).status, blk::kStatusIoErr);
  }
  EXPECT_EQ(rig.dev().queue_stats(0).backend_errors, 50u);
  // 20 per 10 s (GuestErrorLimiter's default): a dying disk cannot flood
  // the log.
  EXPECT_EQ(Lines("disk error").size(), 20u);
}

TEST_F(BlkDeviceLogTest, RequestOutsideGuestMemoryIsLogged) {
  ScriptedDisk disk(kDiskBytes);
  Rig<testing::SplitLayout, ScriptedDisk> rig(disk, {.name = "disk0"});
  rig.BringUp();
  const uint64_t h = rig.Header(blk::kTypeIn, 0);
  const uint64_t d = rig.mem().Alloc(512, 16);
  const uint64_t s = rig.StatusBuf();
  // The data buffer is in memory, the status byte is not.
  rig.Do(0, {{h, 16, false}, {d, 512, true}, {0x7000'0000, 1, true}}, s);
  const std::vector<std::string> lines = Lines("guest error");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(
      lines[0], "disk0: guest error: queue 0: request failed with IOERR: "))
      << lines[0];
  EXPECT_EQ(rig.dev().queue_stats(0).malformed, 1u);
}

}  // namespace
}  // namespace virtio::blktest
