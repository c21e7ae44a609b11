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
#include <cstdint>
#include <string_view>

#include "absl/strings/str_format.h"

namespace virtio {

enum class LogLevel : uint8_t { kInfo, kWarning, kError };

using LogSink = void (*)(LogLevel level, std::string_view message);

// Installs `sink` (nullptr restores the stderr default). Not thread-safe
// with concurrent logging: call at startup.
void SetLogSink(LogSink sink);

// Sends one message to the current sink.
void Log(LogLevel level, std::string_view message);

template <typename... Args>
void Logf(LogLevel level, const absl::FormatSpec<Args...>& format,
          const Args&... args) {
  Log(level, absl::StrFormat(format, args...));
}

// Lets through the first `burst` messages, then one in every `every`, and
// says how many were suppressed. One per device instance.
class GuestErrorLimiter {
 public:
  explicit GuestErrorLimiter(uint32_t burst = 20, uint32_t every = 1000)
      : burst_(burst), every_(every) {}

  // True if this message should be logged.
  bool Allow() {
    const uint64_t n = count_.fetch_add(1, std::memory_order_relaxed);
    return n < burst_ || (n - burst_) % every_ == every_ - 1;
  }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  uint32_t burst_;
  uint32_t every_;
  std::atomic<uint64_t> count_{0};
};

}  // namespace virtio

#endif  // VIRTIO_LOG_H_
