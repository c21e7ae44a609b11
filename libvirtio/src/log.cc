#include "virtio/log.h"

#include <cstdio>

namespace virtio {
namespace {

void StderrSink(LogLevel level, std::string_view message) {
  static constexpr const char* kNames[] = {"D", "I", "W", "E"};
  std::fprintf(stderr, "libvirtio %s: %.*s\n", kNames[static_cast<int>(level)],
               static_cast<int>(message.size()), message.data());
}

std::atomic<LogSink> g_sink{&StderrSink};
std::atomic<LogLevel> g_threshold{LogLevel::kInfo};

}  // namespace

void SetLogSink(LogSink sink) {
  g_sink.store(sink != nullptr ? sink : &StderrSink, std::memory_order_release);
}

void SetLogThreshold(LogLevel threshold) {
  g_threshold.store(threshold, std::memory_order_relaxed);
}

bool LogEnabled(LogLevel level) {
  return level >= g_threshold.load(std::memory_order_relaxed);
}

void Log(LogLevel level, std::string_view message) {
  if (!LogEnabled(level)) return;
  g_sink.load(std::memory_order_acquire)(level, message);
}

}  // namespace virtio
