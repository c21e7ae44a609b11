// vhost_user_blk_bench — IOPS of a vhost-user-blk back-end, driven from this
// process by libvirtio::vhost_user_frontend (no VM in the way).
//
// WHAT IS MEASURED
//   randread/qd:<D>/packed:<0|1>/poll:<0|1>
//     4 KiB random reads, sectors uniform over the whole disk, 4 KiB
//     aligned, D requests kept in flight on queue 0: each completion is
//     checked (status OK) and immediately replaced by a new read; the kick
//     goes out when the client next looks for completions (one per batch
//     unless the back-end suppresses it). items_per_second = completed
//     requests per second (IOPS), wall clock.
//     poll:1 — the client spins on the used ring with interrupts
//     suppressed (the back-end never signals the call eventfd).
//     poll:0 — the client sleeps on the call eventfd (as a guest waits for
//     an interrupt), EVENT_IDX negotiated.
//     D is 1 or 32 for every layout and poll mode, and 1..128 (powers of
//     two) with poll:0 for the queue-depth sweep. The ring has 256 entries,
//     512 when D requests of 3 descriptors (header, data, status) do not fit
//     in 256 (qd 128), so no depth needs indirect tables.
//
// EXTRA COUNTERS (per measured run, no allocation in the timed loop)
//   p50_us, p99_us — request latency percentiles: from the moment the
//     client, having reaped a batch of completions, resubmits, to the
//     moment it reaps that request's completion (one clock read per batch;
//     at qd 1 a batch is one request, so this is the round trip). Kept in
//     a fixed log-linear histogram (32 buckets per power of two, ~3%).
//   client_ns — this thread's CPU time per request, in ns.
//   backend_ns — the back-end's CPU time per request, in ns (all its
//     threads, from /proc/PID/task/*/schedstat), when
//     $VHOST_USER_BLK_BACKEND_PID names it; CPU-seconds per million
//     requests = backend_ns / 1000.
//
// WARM-UP
//   Before its first case, the process reads the whole disk once,
//   sequentially (64 KiB reads, 8 in flight; about a second for the 1 GiB
//   disk of the script), untimed. Every case then measures a warm back-end:
//   a RAM disk's pages are mapped and a file's are in the page cache.
//   Without it the first case alone paid the first touch of every page its
//   random reads hit (measured: 40k instead of 110k IOPS at qd 1 on our
//   RAM disk, whose untouched pages fault on first read).
//
// The back-end is whatever listens on $VHOST_USER_BLK_SOCKET (our
// vhost-user-device, qemu-storage-daemon, ...); scripts/bench-vhost-user-
// blk.sh starts each in turn and prints the ratios. A back-end that does
// not offer packed rings skips the packed:1 cases. Each benchmark connects
// once and reuses the connection (same layout) across repetitions.
#include <benchmark/benchmark.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "vhost_user/frontend/blk_client.h"

namespace {

using vhost_user::BlkClient;
using vhost_user::BlkCompletion;
using vhost_user::BlkResult;

constexpr uint32_t kBlock = 4096;
constexpr uint32_t kMaxDepth = 128;

struct Cached {
  std::unique_ptr<BlkClient> client;
  bool packed = false;
  uint16_t queue_size = 0;
  std::vector<uint8_t*> bufs;
};

Cached& Cache() {
  static Cached c;
  return c;
}

// The untimed warm-up (see the top of this file). Returns false, with a
// message on stderr, if a read failed: the cases still run, cold.
bool ReadWholeDisk(BlkClient& c) {
  constexpr uint32_t kChunk = 64 << 10;
  constexpr uint32_t kInFlight = 8;
  const uint64_t sectors = c.capacity_sectors();
  std::array<void*, kInFlight> bufs{};
  bool ok = true;
  for (void*& b : bufs) {
    b = c.AllocBuffer(kChunk);
    ok = ok && b != nullptr;
  }
  uint64_t next = 0;  // next sector to read
  uint32_t busy = 0;
  BlkCompletion done[kInFlight];
  std::array<bool, kInFlight> in_use{};
  while (ok && (next < sectors || busy > 0)) {
    for (uint32_t i = 0; i < kInFlight && next < sectors; ++i) {
      if (in_use[i]) continue;
      const uint64_t len = std::min<uint64_t>(kChunk, (sectors - next) * 512);
      if (!c.Read(0, next, bufs[i], static_cast<uint32_t>(len), i).ok()) {
        ok = false;
        break;
      }
      in_use[i] = true;
      ++busy;
      next += len / 512;
    }
    if (!ok || busy == 0) break;
    auto n = c.Wait(0, absl::MakeSpan(done, kInFlight), 1, 5000);
    if (!n.ok() || *n == 0) {
      ok = false;
      break;
    }
    for (size_t j = 0; j < *n; ++j) {
      ok = ok && done[j].result == BlkResult::kOk;
      in_use[done[j].user_data] = false;
      --busy;
    }
  }
  for (void* b : bufs) {
    if (b != nullptr) c.FreeBuffer(b);
  }
  if (!ok) {
    std::fprintf(stderr,
                 "vhost_user_blk_bench: warm-up read of the disk failed; the "
                 "cases run on a cold back-end\n");
  }
  return ok;
}

// The client for `packed` and `queue_size`, connecting (again) if needed;
// nullptr with `*why` set if it cannot.
BlkClient* GetClient(bool packed, uint16_t queue_size, std::string* why) {
  Cached& c = Cache();
  if (c.client && c.packed == packed && c.queue_size == queue_size) {
    return c.client.get();
  }
  c.bufs.clear();
  c.client.reset();
  const char* sock = std::getenv("VHOST_USER_BLK_SOCKET");
  if (sock == nullptr || *sock == '\0') {
    *why = "set VHOST_USER_BLK_SOCKET to a vhost-user-blk back-end's socket";
    return nullptr;
  }
  vhost_user::BlkClientOptions o;
  o.socket_path = sock;
  o.packed = packed;
  o.queue_size = queue_size;
  o.buffer_memory = kMaxDepth * kBlock + (1 << 20);
  auto client = BlkClient::Connect(o);
  // A back-end just started may not listen yet.
  for (int i = 0; i < 100 && absl::IsUnavailable(client.status()); ++i) {
    usleep(20000);
    client = BlkClient::Connect(o);
  }
  if (!client.ok()) {
    const absl::string_view msg = client.status().message();
    why->assign(msg.data(), msg.size());
    return nullptr;
  }
  c.client = *std::move(client);
  c.packed = packed;
  c.queue_size = queue_size;
  static bool warmed = false;
  if (!warmed) {
    warmed = true;
    if (!ReadWholeDisk(*c.client)) {
      // Reads may still be in flight: start again on a new connection.
      c.client.reset();
      return GetClient(packed, queue_size, why);
    }
  }
  for (uint32_t i = 0; i < kMaxDepth; ++i) {
    auto* b = static_cast<uint8_t*>(c.client->AllocBuffer(kBlock));
    if (b == nullptr) {
      *why = "buffer arena too small";
      c.client.reset();
      return nullptr;
    }
    c.bufs.push_back(b);
  }
  return c.client.get();
}

// xorshift64*: cheap and good enough to spread sectors.
struct Rng {
  uint64_t s = 0x9e3779b97f4a7c15ull;
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
};

uint64_t NowNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<uint64_t>(ts.tv_nsec);
}

// CPU time of process `pid` so far in ns, summed over its live threads
// (schedstat has ns resolution; /proc/PID/stat only clock ticks). Threads
// that exit during a run are missed: the daemon's workers live as long as
// the connection, which outlives the run. 0 if unreadable.
uint64_t ProcessCpuNs(long pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  uint64_t total = 0;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = dir + "/" + e->d_name + "/schedstat";
    FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) continue;
    unsigned long long ns = 0;
    if (std::fscanf(f, "%llu", &ns) == 1) total += ns;
    std::fclose(f);
  }
  closedir(d);
  return total;
}

long BackendPid() {
  const char* s = std::getenv("VHOST_USER_BLK_BACKEND_PID");
  return s != nullptr ? std::strtol(s, nullptr, 10) : 0;
}

// Latency histogram: values below 32 ns exact, then 32 buckets per power
// of two (bucket width 1/32 of its lower bound).
class Histogram {
 public:
  void Add(uint64_t ns) {
    size_t i = Index(ns);
    if (i >= counts_.size()) i = counts_.size() - 1;
    ++counts_[i];
    ++total_;
  }
  // The value below which a fraction `p` of the samples lie (bucket
  // midpoint), in ns; 0 without samples.
  double Percentile(double p) const {
    if (total_ == 0) return 0;
    const auto want = static_cast<uint64_t>(p * static_cast<double>(total_));
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > want) return Midpoint(i);
    }
    return Midpoint(counts_.size() - 1);
  }

 private:
  static constexpr unsigned kSubBits = 5;
  static size_t Index(uint64_t v) {
    if (v < (1u << kSubBits)) return v;
    const auto msb = static_cast<unsigned>(std::bit_width(v)) - 1;
    return (static_cast<size_t>(msb - kSubBits + 1) << kSubBits) +
           ((v >> (msb - kSubBits)) & ((1u << kSubBits) - 1));
  }
  static double Midpoint(size_t i) {
    if (i < (1u << kSubBits)) return static_cast<double>(i);
    const size_t e = i >> kSubBits;
    const size_t m = i & ((1u << kSubBits) - 1);
    const double lo = static_cast<double>(((1u << kSubBits) + m) << (e - 1));
    return lo + static_cast<double>(1ull << (e - 1)) / 2;
  }
  std::array<uint64_t, 64 << kSubBits> counts_{};
  uint64_t total_ = 0;
};

void BM_RandRead(benchmark::State& state) {
  const auto depth = static_cast<uint32_t>(state.range(0));
  const bool packed = state.range(1) != 0;
  const bool poll = state.range(2) != 0;
  std::string why;
  const uint16_t queue_size = depth * 3 <= 256 ? 256 : 512;
  BlkClient* c = GetClient(packed, queue_size, &why);
  if (c == nullptr) {
    state.SkipWithError(why.c_str());
    return;
  }
  const uint64_t blocks = c->capacity_sectors() / (kBlock / 512);
  if (blocks == 0 || depth > kMaxDepth) {
    state.SkipWithError("disk smaller than 4 KiB or depth above 128");
    return;
  }
  std::vector<uint8_t*>& bufs = Cache().bufs;
  Rng rng;
  // Submission time of each slot (user_data): the clock read after the
  // batch that freed it was reaped.
  std::array<uint64_t, kMaxDepth> sent{};
  uint64_t now = NowNs(CLOCK_MONOTONIC);
  auto submit = [&](uint64_t i) {
    const uint64_t sector = rng.Next() % blocks * (kBlock / 512);
    sent[i] = now;
    return c->Read(0, sector, bufs[i], kBlock, i);
  };
  auto hist = std::make_unique<Histogram>();
  const long be_pid = BackendPid();
  const uint64_t be_cpu0 = be_pid > 0 ? ProcessCpuNs(be_pid) : 0;
  const uint64_t cl_cpu0 = NowNs(CLOCK_THREAD_CPUTIME_ID);
  for (uint32_t i = 0; i < depth; ++i) {
    if (!submit(i).ok()) {
      state.SkipWithError("submission failed");
      return;
    }
  }
  BlkCompletion done[kMaxDepth];
  size_t have = 0, next = 0;
  bool failed = false;
  for (auto _ : state) {
    while (next == have) {
      auto n = poll ? c->Poll(0, absl::MakeSpan(done, depth))
                    : c->Wait(0, absl::MakeSpan(done, depth), 1, 5000);
      if (!n.ok() || (!poll && *n == 0)) {
        failed = true;
        break;
      }
      have = *n;
      next = 0;
      now = NowNs(CLOCK_MONOTONIC);
    }
    if (failed) break;
    const BlkCompletion& d = done[next++];
    hist->Add(now - sent[d.user_data]);
    if (d.result != BlkResult::kOk || !submit(d.user_data).ok()) {
      failed = true;
      break;
    }
  }
  const uint64_t cl_cpu1 = NowNs(CLOCK_THREAD_CPUTIME_ID);
  const uint64_t be_cpu1 = be_pid > 0 ? ProcessCpuNs(be_pid) : 0;
  // Reap what is still in flight so the next run starts empty.
  while (!failed && c->inflight(0) > 0) {
    auto n = c->Wait(0, absl::MakeSpan(done, kMaxDepth), 1, 5000);
    if (!n.ok() || *n == 0) failed = true;
  }
  if (failed) {
    Cache().client.reset();
    state.SkipWithError("request failed or timed out");
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  const auto reqs = static_cast<double>(state.iterations());
  if (reqs > 0) {
    state.counters["p50_us"] = hist->Percentile(0.50) / 1000;
    state.counters["p99_us"] = hist->Percentile(0.99) / 1000;
    state.counters["client_ns"] = static_cast<double>(cl_cpu1 - cl_cpu0) / reqs;
    if (be_pid > 0 && be_cpu0 > 0) {
      state.counters["backend_ns"] =
          static_cast<double>(be_cpu1 - be_cpu0) / reqs;
    }
  }
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"qd", "packed", "poll"});
  for (int poll : {0, 1}) {
    for (int packed : {0, 1}) {
      for (int qd : {1, 32}) b->Args({qd, packed, poll});
    }
  }
  // Queue-depth sweep (poll:0; qd 1 and 32 are above).
  for (int packed : {0, 1}) {
    for (int qd : {2, 4, 8, 16, 64, 128}) b->Args({qd, packed, 0});
  }
  b->UseRealTime();
}
BENCHMARK(BM_RandRead)->Name("randread")->Apply(Args);

}  // namespace

BENCHMARK_MAIN();
