#include "virtio/log.h"

#include <cstdio>

namespace virtio {
namespace {

void StderrSink(LogLevel level, std::string_view message) {
  static constexpr const char* kNames[] = {"I", "W", "E"};
  std::fprintf(stderr, "libvirtio %s: %.*s\n",
               kNames[static_cast<int>(level)],
               static_cast<int>(message.size()), message.data());
}

std::atomic<LogSink> g_sink{&StderrSink};

}  // namespace

void SetLogSink(LogSink sink) {
  g_sink.store(sink != nullptr ? sink : &StderrSink, std::memory_order_release);
}

void Log(LogLevel level, std::string_view message) {
  g_sink.load(std::memory_order_acquire)(level, message);
}

}  // namespace virtio
