#include "vhost_user/frontend/blk_client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "virtio/ring_access.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

namespace spec = virtio::spec;
namespace blk = virtio::blk;

// Status byte value before the back-end writes one: not a valid status.
constexpr uint8_t kNoStatus = 0xff;
// Upper bound of max_segments (keeps the descriptor array on the stack).
constexpr uint32_t kMaxSegmentsLimit = 256;

constexpr uint64_t kWantedFeatures =
    spec::Bit(spec::kFeatureVersion1) | spec::Bit(blk::kFeatureSizeMax) |
    spec::Bit(blk::kFeatureSegMax) | spec::Bit(blk::kFeatureRo) |
    spec::Bit(blk::kFeatureBlkSize) | spec::Bit(blk::kFeatureFlush) |
    spec::Bit(blk::kFeatureTopology) | spec::Bit(blk::kFeatureMq) |
    spec::Bit(blk::kFeatureDiscard) | spec::Bit(blk::kFeatureWriteZeroes);

constexpr uint64_t kWantedProtocol =
    Bit(kProtocolMq) | Bit(kProtocolReplyAck) | Bit(kProtocolConfig);

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlkClient>> BlkClient::Connect(
    const BlkClientOptions& options) {
  std::unique_ptr<BlkClient> c(new BlkClient());
  if (absl::Status s = c->Setup(options); !s.ok()) return s;
  return c;
}

BlkClient::~BlkClient() {
  // Hang up first (the back-end resets its device on disconnect), then let
  // the eventfds and our mapping of the memory go.
  client_.reset();
}

absl::Status BlkClient::Setup(const BlkClientOptions& o) {
  if (o.queue_size == 0 || o.queue_size > spec::kMaxQueueSize ||
      (!o.packed && (o.queue_size & (o.queue_size - 1)) != 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue size %u (1..32768, split: a power of two)", o.queue_size));
  }
  if (o.max_segments == 0 || o.max_segments > kMaxSegmentsLimit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_segments %u not in 1..%u", o.max_segments, kMaxSegmentsLimit));
  }
  auto client = VhostUserClient::Connect(o.socket_path, o.timeout_ms);
  if (!client.ok()) return client.status();
  client_ = *std::move(client);

  // --- Features ---
  auto offered = client_->GetFeatures();
  if (!offered.ok()) return offered.status();
  if (!(*offered & spec::Bit(spec::kFeatureVersion1))) {
    return absl::FailedPreconditionError(
        "back-end does not offer VIRTIO_F_VERSION_1");
  }
  uint64_t want = kWantedFeatures;
  if (o.packed) {
    if (!(*offered & spec::Bit(spec::kFeatureRingPacked))) {
      return absl::FailedPreconditionError(
          "back-end does not offer packed rings");
    }
    want |= spec::Bit(spec::kFeatureRingPacked);
  }
  if (o.event_idx) want |= spec::Bit(spec::kFeatureEventIdx);
  if (o.indirect != BlkClientOptions::Indirect::kNever) {
    want |= spec::Bit(spec::kFeatureIndirectDesc);
  }
  const bool protocol = (*offered & Bit(kFeatureProtocolFeatures)) != 0;
  if (!protocol) {
    return absl::FailedPreconditionError(
        "back-end does not offer PROTOCOL_FEATURES (needed for GET_CONFIG)");
  }
  want |= Bit(kFeatureProtocolFeatures);
  features_ = *offered & want;
  packed_ = o.packed;
  event_idx_ = (features_ & spec::Bit(spec::kFeatureEventIdx)) != 0;
  indirect_ = (features_ & spec::Bit(spec::kFeatureIndirectDesc)) != 0;
  indirect_always_ =
      indirect_ && o.indirect == BlkClientOptions::Indirect::kAlways;

  auto proto = client_->GetProtocolFeatures();
  if (!proto.ok()) return proto.status();
  if (!(*proto & Bit(kProtocolConfig))) {
    return absl::FailedPreconditionError(
        "back-end does not offer the CONFIG protocol feature");
  }
  if (absl::Status s = client_->SetProtocolFeatures(*proto & kWantedProtocol);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = client_->SetOwner(); !s.ok()) return s;

  uint64_t max_queues = 1;
  if (client_->has_protocol(kProtocolMq)) {
    auto n = client_->GetQueueNum();
    if (!n.ok()) return n.status();
    if (*n == 0 || *n > 0xffff) {
      return absl::DataLossError(
          absl::StrFormat("GET_QUEUE_NUM: back-end has %u queues", *n));
    }
    max_queues = *n;
  }

  // --- Config space ---
  if (absl::Status s = client_->GetConfig(
          0, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&config_),
                                 sizeof config_));
      !s.ok()) {
    return s;
  }
  // Fields of features we did not take mean nothing: zero them so
  // config() reads consistently.
  if (!has_feature(blk::kFeatureMq)) config_.num_queues = 1;
  if (!has_feature(blk::kFeatureSegMax)) config_.seg_max = 0;
  if (!has_feature(blk::kFeatureSizeMax)) config_.size_max = 0;
  if (!has_feature(blk::kFeatureBlkSize)) config_.blk_size = 0;
  if (has_feature(blk::kFeatureMq)) {
    if (config_.num_queues == 0) {
      return absl::DataLossError(
          "config: num_queues is 0 with VIRTIO_BLK_F_MQ");
    }
    max_queues = std::min<uint64_t>(max_queues, config_.num_queues);
  } else {
    max_queues = 1;
  }
  const uint64_t nq = o.num_queues == 0 ? max_queues : o.num_queues;
  if (nq > max_queues) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%u queues asked, the back-end has %u", nq, max_queues));
  }
  num_queues_ = static_cast<uint16_t>(nq);
  queue_size_ = o.queue_size;
  max_segments_ = o.max_segments;
  if (has_feature(blk::kFeatureSegMax)) {
    if (config_.seg_max == 0) {
      return absl::DataLossError(
          "config: seg_max is 0 with VIRTIO_BLK_F_SEG_MAX");
    }
    const uint32_t seg_max = config_.seg_max;  // packed struct: copy out
    max_segments_ = std::min(max_segments_, seg_max);
  }
  if (!indirect_ && max_segments_ + 2 > queue_size_) {
    if (queue_size_ < 3) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "queue size %u cannot hold a request without indirect descriptors",
          queue_size_));
    }
    max_segments_ = queue_size_ - 2u;
  }

  // --- Shared memory: rings, per-request areas, buffer arena ---
  const uint64_t ring_bytes =
      AlignUp(packed_ ? PackedDriverRing::MemorySize(queue_size_)
                      : SplitDriverRing::MemorySize(queue_size_),
              4096);
  slot_stride_ = AlignUp(
      sizeof(SlotMem) + (indirect_ ? 16ull * (max_segments_ + 2) : 0), 64);
  const uint64_t slots_bytes = AlignUp(slot_stride_ * queue_size_, 4096);
  const uint64_t total =
      nq * (ring_bytes + slots_bytes) + AlignUp(o.buffer_memory, 4096);
  auto mem = SharedMemory::Create(total);
  if (!mem.ok()) return mem.status();
  mem_ = *std::move(mem);
  queues_ = std::make_unique<Queue[]>(nq);
  for (uint16_t q = 0; q < nq; ++q) {
    Queue& qu = queues_[q];
    uint8_t* ring = mem_->Reserve(ring_bytes, 4096);
    qu.slot_mem = mem_->Reserve(slots_bytes, 4096);
    if (ring == nullptr || qu.slot_mem == nullptr) {
      return absl::InternalError("shared memory layout does not fit");
    }
    if (packed_) {
      qu.packed.Init(ring, queue_size_, event_idx_);
    } else {
      qu.split.Init(ring, queue_size_, event_idx_);
    }
    qu.slots = std::make_unique<Slot[]>(queue_size_);
    qu.kick.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    qu.call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!qu.kick || !qu.call) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("eventfd: %s", std::strerror(errno)));
    }
  }
  mem_->InitArena();

  if (absl::Status s = client_->SetFeatures(features_); !s.ok()) return s;
  if (absl::Status s = client_->SetMemTable(mem_->region(), mem_->fd());
      !s.ok()) {
    return s;
  }
  for (uint16_t q = 0; q < nq; ++q) {
    if (absl::Status s = StartQueue(q); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BlkClient::StartQueue(uint16_t q) {
  Queue& qu = queues_[q];
  VringAddr addr{};
  addr.index = q;
  if (packed_) {
    addr.desc_user_addr = qu.packed.desc_addr();
    addr.avail_user_addr = qu.packed.driver_event_addr();
    addr.used_user_addr = qu.packed.device_event_addr();
  } else {
    addr.desc_user_addr = qu.split.desc_addr();
    addr.avail_user_addr = qu.split.avail_addr();
    addr.used_user_addr = qu.split.used_addr();
  }
  // Packed: avail and used offsets 0, both wrap counters 1.
  const uint32_t base = packed_ ? 0x80008000u : 0;
  absl::Status s = client_->SetVringNum(q, queue_size_);
  if (s.ok()) s = client_->SetVringBase(q, base);
  if (s.ok()) s = client_->SetVringAddr(addr);
  if (s.ok()) s = client_->SetVringCall(q, qu.call.get());
  if (s.ok()) s = client_->SetVringKick(q, qu.kick.get());
  if (s.ok()) s = client_->SetVringEnable(q, true);
  return s;
}

void* BlkClient::AllocBuffer(uint64_t len, uint64_t align) {
  return mem_->Alloc(len, align);
}

void BlkClient::FreeBuffer(void* p) { mem_->Free(p); }

absl::Status BlkClient::BrokenStatus(const Queue& qu) const {
  return absl::DataLossError(
      absl::StrFormat("back-end broke the ring: %s",
                      packed_ ? qu.packed.error() : qu.split.error()));
}

absl::Status BlkClient::Submit(uint16_t q, uint32_t type, uint64_t sector,
                               const iovec* iov, int iovcnt, bool data_in,
                               const blk::DiscardWriteZeroes* segment,
                               uint64_t user_data) {
  if (q >= num_queues_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue %u of %u", q, num_queues_));
  }
  Queue& qu = queues_[q];
  if ((packed_ ? qu.packed.error() : qu.split.error()) != nullptr) {
    return absl::FailedPreconditionError("queue stopped: back-end broke it");
  }
  if (iovcnt < 0 || static_cast<uint32_t>(iovcnt) > max_segments_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d data buffers, at most %u", iovcnt, max_segments_));
  }
  RingBuf bufs[kMaxSegmentsLimit + 2];
  uint16_t n = 0;
  const uint16_t free = packed_ ? qu.packed.num_free() : qu.split.num_free();
  const uint16_t direct = static_cast<uint16_t>(iovcnt + 2 + (segment ? 1 : 0));
  const bool indirect = indirect_ && (indirect_always_ || direct > free);
  if (free < (indirect ? 1 : direct)) return absl::ResourceExhaustedError("");
  const uint16_t id = packed_ ? qu.packed.peek_id() : qu.split.peek_id();
  SlotMem* sm = slot_mem(qu, id);
  uint32_t writable = 1;
  bufs[n++] = {reinterpret_cast<uint64_t>(&sm->header),
               sizeof(blk::RequestHeader), 0};
  if (segment != nullptr) {
    bufs[n++] = {reinterpret_cast<uint64_t>(&sm->segment),
                 sizeof(blk::DiscardWriteZeroes), 0};
  }
  for (int i = 0; i < iovcnt; ++i) {
    if (iov[i].iov_len == 0 || iov[i].iov_len > UINT32_MAX ||
        !mem_->Contains(iov[i].iov_base, iov[i].iov_len)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "buffer %d (%u bytes) is empty, too large or not in shared memory", i,
          iov[i].iov_len));
    }
    const auto len = static_cast<uint32_t>(iov[i].iov_len);
    bufs[n++] = {reinterpret_cast<uint64_t>(iov[i].iov_base), len,
                 data_in ? spec::kDescFlagWrite : uint16_t{0}};
    if (data_in) writable += len;
  }
  bufs[n++] = {reinterpret_cast<uint64_t>(&sm->status), 1,
               spec::kDescFlagWrite};
  sm->header = {type, 0, sector};
  if (segment != nullptr) sm->segment = *segment;
  sm->status = kNoStatus;
  qu.slots[id] = {user_data, writable};
  if (indirect) {
    // The table follows the slot's fixed part; both layouts' descriptors
    // are 16 bytes: split {addr, len, flags, next}, packed {addr, len, id,
    // flags}.
    auto* table = reinterpret_cast<uint8_t*>(sm) + sizeof(SlotMem);
    for (uint16_t i = 0; i < n; ++i) {
      if (packed_) {
        spec::PackedDesc d{bufs[i].addr, bufs[i].len, 0, bufs[i].flags};
        std::memcpy(table + 16 * i, &d, sizeof d);
      } else {
        spec::SplitDesc d{
            bufs[i].addr, bufs[i].len,
            static_cast<uint16_t>(bufs[i].flags |
                                  (i + 1 < n ? spec::kDescFlagNext : 0)),
            static_cast<uint16_t>(i + 1)};
        std::memcpy(table + 16 * i, &d, sizeof d);
      }
    }
    bufs[0] = {reinterpret_cast<uint64_t>(table), 16u * n,
               spec::kDescFlagIndirect};
    n = 1;
  }
  if (packed_) {
    qu.packed.Add(bufs, n);
  } else {
    qu.split.Add(bufs, n);
  }
  ++qu.inflight;
  qu.pending = true;
  return absl::OkStatus();
}

absl::Status BlkClient::Read(uint16_t q, uint64_t sector, void* buf,
                             uint32_t len, uint64_t user_data) {
  const iovec v{buf, len};
  return Submit(q, blk::kTypeIn, sector, &v, 1, true, nullptr, user_data);
}

absl::Status BlkClient::Write(uint16_t q, uint64_t sector, const void* buf,
                              uint32_t len, uint64_t user_data) {
  const iovec v{const_cast<void*>(buf), len};
  return Submit(q, blk::kTypeOut, sector, &v, 1, false, nullptr, user_data);
}

absl::Status BlkClient::Readv(uint16_t q, uint64_t sector, const iovec* iov,
                              int iovcnt, uint64_t user_data) {
  return Submit(q, blk::kTypeIn, sector, iov, iovcnt, true, nullptr, user_data);
}

absl::Status BlkClient::Writev(uint16_t q, uint64_t sector, const iovec* iov,
                               int iovcnt, uint64_t user_data) {
  return Submit(q, blk::kTypeOut, sector, iov, iovcnt, false, nullptr,
                user_data);
}

absl::Status BlkClient::Flush(uint16_t q, uint64_t user_data) {
  return Submit(q, blk::kTypeFlush, 0, nullptr, 0, false, nullptr, user_data);
}

absl::Status BlkClient::Discard(uint16_t q, uint64_t sector,
                                uint32_t num_sectors, uint64_t user_data) {
  const blk::DiscardWriteZeroes seg{sector, num_sectors, 0};
  return Submit(q, blk::kTypeDiscard, 0, nullptr, 0, false, &seg, user_data);
}

absl::Status BlkClient::WriteZeroes(uint16_t q, uint64_t sector,
                                    uint32_t num_sectors, bool unmap,
                                    uint64_t user_data) {
  const blk::DiscardWriteZeroes seg{sector, num_sectors,
                                    unmap ? blk::kWriteZeroesFlagUnmap : 0u};
  return Submit(q, blk::kTypeWriteZeroes, 0, nullptr, 0, false, &seg,
                user_data);
}

absl::Status BlkClient::Kick(uint16_t q) {
  if (q >= num_queues_) return absl::InvalidArgumentError("no such queue");
  Queue& qu = queues_[q];
  if (!qu.pending) return absl::OkStatus();
  qu.pending = false;
  if (packed_ ? qu.packed.Publish() : qu.split.Publish()) {
    const uint64_t one = 1;
    if (write(qu.kick.get(), &one, sizeof one) != sizeof one &&
        errno != EAGAIN) {
      return absl::InternalError(
          absl::StrFormat("kick: %s", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> BlkClient::Poll(uint16_t q,
                                       absl::Span<BlkCompletion> out) {
  if (absl::Status s = Kick(q); !s.ok()) return s;
  Queue& qu = queues_[q];
  size_t n = 0;
  while (n < out.size()) {
    uint16_t id;
    uint32_t len;
    const ReapStatus r =
        packed_ ? qu.packed.Reap(&id, &len) : qu.split.Reap(&id, &len);
    if (r == ReapStatus::kEmpty) break;
    if (r == ReapStatus::kBroken) {
      if (n > 0) break;  // report the error on the next call
      return BrokenStatus(qu);
    }
    const Slot& slot = qu.slots[id];
    const uint8_t status = virtio::LoadRelaxed(&slot_mem(qu, id)->status);
    BlkResult result = BlkResult::kBadReply;
    if (len <= slot.writable && status <= blk::kStatusUnsupp) {
      result = static_cast<BlkResult>(status);
    }
    out[n++] = {slot.user_data, len, result};
    --qu.inflight;
  }
  return n;
}

absl::StatusOr<size_t> BlkClient::Wait(uint16_t q,
                                       absl::Span<BlkCompletion> out,
                                       size_t min, int timeout_ms) {
  min = std::min(min, out.size());
  auto first = Poll(q, out);
  if (!first.ok()) return first;
  size_t n = *first;
  if (n >= min) return n;
  Queue& qu = queues_[q];
  const int64_t deadline = timeout_ms < 0 ? -1 : NowMs() + timeout_ms;
  while (n < min) {
    const bool pending =
        packed_ ? qu.packed.EnableInterrupts() : qu.split.EnableInterrupts();
    if (!pending) {
      int wait = -1;
      if (deadline >= 0) {
        wait = static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
      }
      pollfd p{qu.call.get(), POLLIN, 0};
      const int rc = poll(&p, 1, wait);
      if (rc < 0 && errno != EINTR) {
        return absl::InternalError(
            absl::StrFormat("poll: %s", std::strerror(errno)));
      }
      if (rc > 0) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = read(qu.call.get(), &v, sizeof v);
      }
    }
    if (packed_) {
      qu.packed.DisableInterrupts();
    } else {
      qu.split.DisableInterrupts();
    }
    auto more = Poll(q, out.subspan(n));
    if (!more.ok()) {
      if (n > 0) return n;
      return more;
    }
    n += *more;
    if (n < min && deadline >= 0 && NowMs() >= deadline) break;
  }
  return n;
}

}  // namespace vhost_user
