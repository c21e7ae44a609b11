#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "virtio/ring_access.h"
#include "virtio/testing/driver.h"

namespace virtio::testing {
namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "SplitDriver: %s\n", what);
  std::abort();
}

}  // namespace

SplitDriver::SplitDriver(TestGuestMemory& mem, uint32_t size,
                         DriverOptions options)
    : mem_(mem),
      size_(size),
      options_(options),
      chain_next_(size),
      chain_len_(size),
      chain_writable_(size) {
  if (size == 0 || size > spec::kMaxQueueSize || (size & (size - 1)) != 0) {
    Die("queue size must be a power of two in 1..32768");
  }
  desc_ = mem.Alloc(spec::SplitDescTableSize(size), spec::kSplitDescAlign);
  avail_ = mem.Alloc(spec::SplitAvailRingSize(size), spec::kSplitAvailAlign);
  used_ = mem.Alloc(spec::SplitUsedRingSize(size), spec::kSplitUsedAlign);
  indirect_tables_ =
      options.indirect
          ? mem.Alloc(uint64_t{size} * options.max_indirect * 16, 16)
          : 0;
  free_.reserve(size);
  for (uint32_t i = size; i > 0; --i) free_.push_back(static_cast<uint16_t>(i - 1));
}

QueueConfig SplitDriver::config() const {
  return {.size = size_,
          .desc_addr = desc_,
          .driver_addr = avail_,
          .device_addr = used_,
          .event_idx = options_.event_idx,
          .indirect = options_.indirect};
}

std::optional<uint16_t> SplitDriver::Add(absl::Span<const Buffer> buffers,
                                         bool indirect) {
  if (buffers.empty()) Die("empty chain");
  uint64_t writable = 0;
  for (const Buffer& b : buffers) writable += b.writable ? b.len : 0;

  if (indirect) {
    if (!options_.indirect) Die("indirect chain without the feature");
    if (buffers.size() > options_.max_indirect) Die("indirect chain too long");
    if (free_.empty()) return std::nullopt;
    const uint16_t head = free_.back();
    free_.pop_back();
    const uint64_t table =
        indirect_tables_ + uint64_t{head} * options_.max_indirect * 16;
    for (size_t i = 0; i < buffers.size(); ++i) {
      const bool last = i + 1 == buffers.size();
      spec::SplitDesc d{
          .addr = buffers[i].gpa,
          .len = buffers[i].len,
          .flags = static_cast<uint16_t>(
              (buffers[i].writable ? spec::kDescFlagWrite : 0) |
              (last ? 0 : spec::kDescFlagNext)),
          .next = static_cast<uint16_t>(last ? 0 : i + 1)};
      mem_.Store(table + 16 * i, d);
    }
    WriteDesc(head, {.addr = table,
                     .len = static_cast<uint32_t>(16 * buffers.size()),
                     .flags = spec::kDescFlagIndirect,
                     .next = 0});
    chain_len_[head] = 1;
    chain_writable_[head] = writable;
    mem_.Store<uint16_t>(avail_ + 4 + 2 * (avail_idx_ & (size_ - 1)), head);
    ++avail_idx_;
    ++outstanding_;
    return head;
  }

  if (free_.size() < buffers.size()) return std::nullopt;
  // Take descriptors from the free stack; link them in order.
  std::vector<uint16_t> idx(buffers.size());
  for (auto& i : idx) {
    i = free_.back();
    free_.pop_back();
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    WriteDesc(idx[i], {.addr = buffers[i].gpa,
                       .len = buffers[i].len,
                       .flags = static_cast<uint16_t>(
                           (buffers[i].writable ? spec::kDescFlagWrite : 0) |
                           (last ? 0 : spec::kDescFlagNext)),
                       .next = last ? uint16_t{0} : idx[i + 1]});
    if (!last) chain_next_[idx[i]] = idx[i + 1];
  }
  const uint16_t head = idx[0];
  chain_len_[head] = static_cast<uint16_t>(buffers.size());
  chain_writable_[head] = writable;
  mem_.Store<uint16_t>(avail_ + 4 + 2 * (avail_idx_ & (size_ - 1)), head);
  ++avail_idx_;
  ++outstanding_;
  return head;
}

bool SplitDriver::Kick() {
  const uint16_t old_idx = avail_kicked_;
  avail_kicked_ = avail_idx_;
  StoreRelease(reinterpret_cast<uint16_t*>(mem_.Host(avail_ + 2, 2)),
               avail_idx_);
  FullFence();
  if (old_idx == avail_idx_) return false;
  if (options_.event_idx) {
    const uint16_t avail_event = LoadRelaxed(reinterpret_cast<uint16_t*>(
        mem_.Host(used_ + spec::SplitAvailEventOffset(size_), 2)));
    return spec::NeedEvent(avail_event, avail_idx_, old_idx);
  }
  const uint16_t flags =
      LoadRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(used_, 2)));
  return (flags & spec::kUsedFlagNoNotify) == 0;
}

std::optional<UsedBuffer> SplitDriver::Reap() {
  for (;;) {
    const uint16_t used_idx =
        LoadAcquire(reinterpret_cast<uint16_t*>(mem_.Host(used_ + 2, 2)));
    if (used_idx == last_used_) return std::nullopt;
    if (static_cast<uint16_t>(used_idx - last_used_) > outstanding_ &&
        device_error_.empty()) {
      device_error_ = absl::StrFormat(
          "used->idx %u is %u ahead of the driver with only %u outstanding",
          used_idx, static_cast<uint16_t>(used_idx - last_used_), outstanding_);
    }
    const auto e = mem_.Load<spec::SplitUsedElem>(
        used_ + 4 + 8 * (last_used_ & (size_ - 1)));
    ++last_used_;
    if (e.id >= size_ || chain_len_[e.id] == 0) {
      if (device_error_.empty()) {
        device_error_ =
            absl::StrFormat("used element with id %u not outstanding", e.id);
      }
      continue;
    }
    if (e.len > chain_writable_[e.id] && device_error_.empty()) {
      device_error_ = absl::StrFormat(
          "used length %u for id %u exceeds its %u writable bytes", e.len, e.id,
          chain_writable_[e.id]);
    }
    // Return the chain's descriptors to the free stack.
    uint16_t d = static_cast<uint16_t>(e.id);
    for (uint16_t n = chain_len_[e.id]; n > 0; --n) {
      free_.push_back(d);
      d = chain_next_[d];
    }
    chain_len_[e.id] = 0;
    --outstanding_;
    return UsedBuffer{static_cast<uint16_t>(e.id), e.len};
  }
}

bool SplitDriver::EnableInterrupts() {
  if (options_.event_idx) {
    StoreRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(
                     avail_ + spec::SplitUsedEventOffset(size_), 2)),
                 last_used_);
  } else {
    StoreRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(avail_, 2)),
                 uint16_t{0});
  }
  FullFence();
  return LoadAcquire(reinterpret_cast<uint16_t*>(mem_.Host(used_ + 2, 2))) !=
         last_used_;
}

void SplitDriver::DisableInterrupts() {
  StoreRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(avail_, 2)),
               spec::kAvailFlagNoInterrupt);
}

bool SplitDriver::InterruptExpected() {
  const uint16_t used_idx =
      LoadAcquire(reinterpret_cast<uint16_t*>(mem_.Host(used_ + 2, 2)));
  const uint16_t old_idx = used_checked_;
  used_checked_ = used_idx;
  if (used_idx == old_idx) return false;
  if (options_.event_idx) {
    const uint16_t used_event = mem_.Load<uint16_t>(
        avail_ + spec::SplitUsedEventOffset(size_));
    return spec::NeedEvent(used_event, used_idx, old_idx);
  }
  return (mem_.Load<uint16_t>(avail_) & spec::kAvailFlagNoInterrupt) == 0;
}

void SplitDriver::WriteDesc(uint16_t index, const spec::SplitDesc& d) {
  mem_.Store(desc_gpa(index), d);
}

void SplitDriver::PostHead(uint16_t head) {
  mem_.Store<uint16_t>(avail_ + 4 + 2 * (avail_idx_ & (size_ - 1)), head);
  ++avail_idx_;
  avail_kicked_ = avail_idx_;
  StoreRelease(reinterpret_cast<uint16_t*>(mem_.Host(avail_ + 2, 2)),
               avail_idx_);
}

void SplitDriver::SetAvailIdx(uint16_t idx) {
  avail_idx_ = idx;
  avail_kicked_ = idx;
  StoreRelease(reinterpret_cast<uint16_t*>(mem_.Host(avail_ + 2, 2)), idx);
}

}  // namespace virtio::testing
