// core_round_trip_bench — the cache-line round trip between two CPUs.
//
// Two threads pinned to CPUs A and B hand one cache line back and forth;
// the time per round trip is what every virtqueue handoff between a
// front-end on A and a back-end on B pays at least once. On a VM it
// depends on where the host placed the two vCPUs (siblings of one core, or
// two cores), which can change from one run to the next: the net and blk
// benchmark scripts run this next to each measurement so that the
// ratios they print compare runs made under the same placement.
//
// usage: core_round_trip_bench [--benchmark_filter=...] (CPUs 0 and 1)
//        CORE_RT_CPUS="2,3" core_round_trip_bench   (other CPUs)
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "benchmark/benchmark.h"

namespace {

bool Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

void BM_CoreRoundTrip(benchmark::State& state) {
  int a = 0, b = 1;
  if (const char* env = std::getenv("CORE_RT_CPUS")) {
    if (std::sscanf(env, "%d,%d", &a, &b) != 2) {
      state.SkipWithError("CORE_RT_CPUS must be \"A,B\"");
      return;
    }
  }
  alignas(64) std::atomic<uint64_t> line{0};
  std::atomic<bool> stop{false};
  std::thread peer([&] {
    if (!Pin(b)) return;
    uint64_t seen = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t v = line.load(std::memory_order_acquire);
      if (v != seen && (v & 1) != 0) {
        seen = v + 1;
        line.store(seen, std::memory_order_release);
      }
    }
  });
  if (!Pin(a)) {
    stop = true;
    peer.join();
    state.SkipWithError("cannot pin to the CPUs");
    return;
  }
  uint64_t v = 0;
  for (auto _ : state) {
    line.store(v + 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != v + 2) {
    }
    v += 2;
  }
  stop = true;
  peer.join();
}
BENCHMARK(BM_CoreRoundTrip)->MinTime(0.2);

}  // namespace

BENCHMARK_MAIN();
