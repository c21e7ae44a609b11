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
//
// The back-end is whatever listens on $VHOST_USER_BLK_SOCKET (our
// vhost-user-device, qemu-storage-daemon, ...); scripts/bench-vhost-user-
// blk.sh starts each in turn and prints the ratios. A back-end that does
// not offer packed rings skips the packed:1 cases. Each benchmark connects
// once and reuses the connection (same layout) across repetitions.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdint>
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

struct Cached {
  std::unique_ptr<BlkClient> client;
  bool packed = false;
  std::vector<uint8_t*> bufs;
};

Cached& Cache() {
  static Cached c;
  return c;
}

// The client for `packed`, connecting (again) if needed; nullptr with
// `*why` set if it cannot.
BlkClient* GetClient(bool packed, std::string* why) {
  Cached& c = Cache();
  if (c.client && c.packed == packed) return c.client.get();
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
  o.queue_size = 256;
  o.buffer_memory = 64 * kBlock + (1 << 20);
  auto client = BlkClient::Connect(o);
  // A back-end just started may not listen yet.
  for (int i = 0; i < 100 && absl::IsUnavailable(client.status()); ++i) {
    usleep(20000);
    client = BlkClient::Connect(o);
  }
  if (!client.ok()) {
    *why = std::string(client.status().message());
    return nullptr;
  }
  c.client = *std::move(client);
  c.packed = packed;
  for (int i = 0; i < 64; ++i) {
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

void BM_RandRead(benchmark::State& state) {
  const auto depth = static_cast<uint32_t>(state.range(0));
  const bool packed = state.range(1) != 0;
  const bool poll = state.range(2) != 0;
  std::string why;
  BlkClient* c = GetClient(packed, &why);
  if (c == nullptr) {
    state.SkipWithError(why.c_str());
    return;
  }
  const uint64_t blocks = c->capacity_sectors() / (kBlock / 512);
  if (blocks == 0 || depth > 64) {
    state.SkipWithError("disk smaller than 4 KiB or depth above 64");
    return;
  }
  std::vector<uint8_t*>& bufs = Cache().bufs;
  Rng rng;
  auto submit = [&](uint64_t i) {
    const uint64_t sector = rng.Next() % blocks * (kBlock / 512);
    return c->Read(0, sector, bufs[i], kBlock, i);
  };
  for (uint32_t i = 0; i < depth; ++i) {
    if (!submit(i).ok()) {
      state.SkipWithError("submission failed");
      return;
    }
  }
  BlkCompletion done[64];
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
    }
    if (failed) break;
    const BlkCompletion& d = done[next++];
    if (d.result != BlkResult::kOk || !submit(d.user_data).ok()) {
      failed = true;
      break;
    }
  }
  // Reap what is still in flight so the next run starts empty.
  while (!failed && c->inflight(0) > 0) {
    auto n = c->Wait(0, absl::MakeSpan(done, 64), 1, 5000);
    if (!n.ok() || *n == 0) failed = true;
  }
  if (failed) {
    Cache().client.reset();
    state.SkipWithError("request failed or timed out");
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"qd", "packed", "poll"});
  for (int poll : {0, 1}) {
    for (int packed : {0, 1}) {
      for (int qd : {1, 32}) b->Args({qd, packed, poll});
    }
  }
  b->UseRealTime();
}
BENCHMARK(BM_RandRead)->Name("randread")->Apply(Args);

}  // namespace

BENCHMARK_MAIN();
