// GuestErrorLimiter: a time-based budget of guest-triggered log lines.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "virtio/log.h"

namespace virtio {
namespace {

using std::chrono::milliseconds;

TEST(GuestErrorLimiter, BurstPerPeriodThenSaysHowManyWereSuppressed) {
  GuestErrorLimiter l(3, milliseconds(100));
  int allowed = 0;
  for (int i = 0; i < 10; ++i) {
    const auto v = l.Allow();
    if (v) {
      ++allowed;
      EXPECT_EQ(v.suppressed, 0u);
      EXPECT_EQ(v.Suffix(), "");
    }
  }
  EXPECT_EQ(allowed, 3);
  EXPECT_EQ(l.count(), 10u);
  // Not silent for good: the next period has a new budget, and its first
  // line says what was left out.
  std::this_thread::sleep_for(milliseconds(150));
  const auto v = l.Allow();
  ASSERT_TRUE(v);
  EXPECT_EQ(v.suppressed, 7u);
  EXPECT_EQ(v.Suffix(), " (7 more suppressed)");
  EXPECT_TRUE(l.Allow());
  EXPECT_EQ(l.Allow().suppressed, 0u);
}

TEST(GuestErrorLimiter, ResetGivesAFreshBudget) {
  GuestErrorLimiter l(2, std::chrono::hours(1));
  EXPECT_TRUE(l.Allow());
  EXPECT_TRUE(l.Allow());
  EXPECT_FALSE(l.Allow());
  EXPECT_FALSE(l.Allow());
  l.Reset();
  const auto v = l.Allow();
  EXPECT_TRUE(v);
  EXPECT_EQ(v.suppressed, 0u);  // the previous guest's count is not ours
  EXPECT_EQ(l.count(), 5u);
}

TEST(GuestErrorLimiter, ConcurrentCallersNeverExceedTheBurst) {
  GuestErrorLimiter l(20, std::chrono::hours(1));
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (l.Allow()) allowed.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 20);
  EXPECT_EQ(l.count(), 4000u);
}

}  // namespace
}  // namespace virtio
