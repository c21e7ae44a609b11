// virtio/log.h — where the library's diagnostics go.
//
// The library never writes to stderr on its own initiative except through
// this sink. Glue binaries install their own (syslog, journald, a file);
// the default prints to stderr. Guest-triggered messages (a malformed ring,
// a bad register access) are rate limited per GuestErrorLimiter so a hostile
// guest cannot flood the host's logs.
//
// Example:
//   virtio::SetLogSink([](virtio::LogLevel level, std::string_view msg) {
//     syslog(level == virtio::LogLevel::kError ? LOG_ERR : LOG_INFO, "%.*s",
//            static_cast<int>(msg.size()), msg.data());
//   });
#ifndef VIRTIO_LOG_H_
#define VIRTIO_LOG_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace virtio {

// In increasing severity (a threshold keeps its level and the ones above).
enum class LogLevel : uint8_t { kDebug, kInfo, kWarning, kError };

using LogSink = void (*)(LogLevel level, std::string_view message);

// Installs `sink` (nullptr restores the stderr default). Not thread-safe
// with concurrent logging: call at startup.
void SetLogSink(LogSink sink);

// Messages below `threshold` are dropped before they are formatted (the
// default, kInfo, drops debug messages). Thread-safe.
void SetLogThreshold(LogLevel threshold);
// Whether a message at `level` would reach the sink.
bool LogEnabled(LogLevel level);

// Sends one message to the current sink (if LogEnabled(level)).
void Log(LogLevel level, std::string_view message);

template <typename... Args>
void Logf(LogLevel level, const absl::FormatSpec<Args...>& format,
          const Args&... args) {
  if (LogEnabled(level)) Log(level, absl::StrFormat(format, args...));
}

// Rate limit for guest-triggered messages: at most `burst` per `period`,
// counted afresh in every period, so that whichever guest misbehaves next
// is still heard (a lifetime budget fell silent for good after one noisy
// guest). The first message let through after some were suppressed says
// how many. Reset() gives a new budget (a new vhost-user connection is a
// new guest). Thread-safe, lock-free; not for the data path's good cases.
//
// Example:
//   if (auto v = limiter.Allow()) {
//     Logf(LogLevel::kWarning, "%s: guest error: %s%s", name, what,
//          v.Suffix());
//   }
class GuestErrorLimiter {
 public:
  struct Verdict {
    bool allowed = false;
    // Messages suppressed since the last one let through (when allowed).
    uint64_t suppressed = 0;
    explicit operator bool() const { return allowed; }
    // " (N more suppressed)", or "" when none were.
    std::string Suffix() const {
      return suppressed == 0
                 ? std::string()
                 : absl::StrFormat(" (%u more suppressed)", suppressed);
    }
  };

  explicit GuestErrorLimiter(
      uint32_t burst = 20,
      std::chrono::nanoseconds period = std::chrono::seconds(10))
      : burst_(burst), period_ns_(period.count()) {}

  // Whether to log this message.
  Verdict Allow() {
    count_.fetch_add(1, std::memory_order_relaxed);
    const int64_t now = NowNs();
    int64_t start = window_start_.load(std::memory_order_relaxed);
    if (now - start >= period_ns_ &&
        window_start_.compare_exchange_strong(start, now,
                                              std::memory_order_relaxed)) {
      in_window_.store(0, std::memory_order_relaxed);
    }
    if (in_window_.fetch_add(1, std::memory_order_relaxed) < burst_) {
      return {true, suppressed_.exchange(0, std::memory_order_relaxed)};
    }
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  // A fresh budget; messages suppressed so far are forgotten.
  void Reset() {
    in_window_.store(0, std::memory_order_relaxed);
    suppressed_.store(0, std::memory_order_relaxed);
    window_start_.store(NowNs(), std::memory_order_relaxed);
  }
  // Messages seen (logged or suppressed) over the limiter's lifetime.
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  static int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  const uint32_t burst_;
  const int64_t period_ns_;
  std::atomic<uint64_t> count_{0};
  std::atomic<int64_t> window_start_{NowNs()};
  std::atomic<uint64_t> in_window_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace virtio

#endif  // VIRTIO_LOG_H_
