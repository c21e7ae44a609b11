#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "virtio/ring_access.h"
#include "virtio/testing/driver.h"

namespace virtio::testing {
namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "PackedDriver: %s\n", what);
  std::abort();
}

uint32_t Linear(uint16_t offset, bool wrap, uint32_t size) {
  return offset + (wrap ? 0 : size);
}
uint32_t Distance(uint32_t from, uint32_t to, uint32_t size) {
  return to >= from ? to - from : to + 2 * size - from;
}

// Moves a ring position `by` slots on, flipping `wrap` when it passes the
// end of a ring of `size`.
void Step(uint16_t& pos, bool& wrap, uint32_t by, uint32_t size) {
  uint32_t next = uint32_t{pos} + by;
  if (next >= size) {
    next -= size;
    wrap = !wrap;
  }
  pos = static_cast<uint16_t>(next);
}

}  // namespace

PackedDriver::PackedDriver(TestGuestMemory& mem, uint32_t size,
                           DriverOptions options)
    : mem_(mem),
      size_(size),
      options_(options),
      slots_of_id_(size),
      writable_of_id_(size),
      free_slots_(size),
      reaped_slots_at_(size, 1) {
  if (size == 0 || size > spec::kMaxQueueSize) {
    Die("queue size must be in 1..32768");
  }
  ring_ = mem.Alloc(spec::PackedDescRingSize(size), spec::kPackedDescAlign);
  driver_event_ = mem.Alloc(4, spec::kPackedEventAlign);
  device_event_ = mem.Alloc(4, spec::kPackedEventAlign);
  indirect_tables_ =
      options.indirect
          ? mem.Alloc(uint64_t{size} * options.max_indirect * 16, 16)
          : 0;
  free_ids_.reserve(size);
  for (uint32_t i = size; i > 0; --i) {
    free_ids_.push_back(static_cast<uint16_t>(i - 1));
  }
}

QueueConfig PackedDriver::config() const {
  return {.size = size_,
          .desc_addr = ring_,
          .driver_addr = driver_event_,
          .device_addr = device_event_,
          .event_idx = options_.event_idx,
          .indirect = options_.indirect,
          .in_order = options_.in_order};
}

uint16_t PackedDriver::AvailFlags(bool wrap) const {
  return wrap ? spec::kDescFlagAvail : spec::kDescFlagUsed;
}

std::optional<uint16_t> PackedDriver::Add(absl::Span<const Buffer> buffers,
                                          bool indirect) {
  if (buffers.empty()) Die("empty chain");
  const uint32_t slots = indirect ? 1 : static_cast<uint32_t>(buffers.size());
  if (indirect && !options_.indirect) Die("indirect chain without the feature");
  if (indirect && buffers.size() > options_.max_indirect) {
    Die("indirect chain too long");
  }
  if (free_ids_.empty() || free_slots_ < slots) return std::nullopt;
  const uint16_t id = free_ids_.back();
  free_ids_.pop_back();
  uint64_t writable = 0;
  for (const Buffer& b : buffers) writable += b.writable ? b.len : 0;

  std::vector<spec::PackedDesc> descs;
  if (indirect) {
    const uint64_t table =
        indirect_tables_ + uint64_t{id} * options_.max_indirect * 16;
    for (size_t i = 0; i < buffers.size(); ++i) {
      mem_.Store(table + 16 * i,
                 spec::PackedDesc{.addr = buffers[i].gpa,
                                  .len = buffers[i].len,
                                  .id = 0,
                                  .flags = buffers[i].writable
                                               ? spec::kDescFlagWrite
                                               : uint16_t{0}});
    }
    descs.push_back({.addr = table,
                     .len = static_cast<uint32_t>(16 * buffers.size()),
                     .id = id,
                     .flags = spec::kDescFlagIndirect});
  } else {
    for (size_t i = 0; i < buffers.size(); ++i) {
      const bool last = i + 1 == buffers.size();
      descs.push_back(
          {.addr = buffers[i].gpa,
           .len = buffers[i].len,
           .id = id,
           .flags = static_cast<uint16_t>(
               (buffers[i].writable ? spec::kDescFlagWrite : 0) |
               (last ? 0 : spec::kDescFlagNext))});
    }
  }
  PlaceRaw(descs);
  slots_of_id_[id] = static_cast<uint16_t>(slots);
  writable_of_id_[id] = writable;
  free_slots_ -= slots;
  ++outstanding_;
  if (options_.in_order) avail_order_.push_back(id);
  return id;
}

void PackedDriver::PlaceRaw(absl::Span<const spec::PackedDesc> descs) {
  const uint16_t head = next_avail_;
  uint16_t head_flags = 0;
  for (size_t i = 0; i < descs.size(); ++i) {
    spec::PackedDesc d = descs[i];
    d.flags = static_cast<uint16_t>(
        (d.flags & ~(spec::kDescFlagAvail | spec::kDescFlagUsed)) |
        AvailFlags(avail_wrap_));
    if (i == 0) {
      // The head stays unavailable (AVAIL == USED == !wrap) until the rest
      // of the chain is written; its real flags are stored last.
      head_flags = d.flags;
      d.flags = static_cast<uint16_t>(
          (d.flags & ~(spec::kDescFlagAvail | spec::kDescFlagUsed)) |
          (avail_wrap_ ? 0 : spec::kDescFlagAvail | spec::kDescFlagUsed));
    }
    mem_.Store(desc_gpa(next_avail_), d);
    if (++next_avail_ == size_) {
      next_avail_ = 0;
      avail_wrap_ = !avail_wrap_;
    }
  }
  StoreRelease(
      reinterpret_cast<uint16_t*>(mem_.Host(desc_gpa(head) + 14, 2)),
      head_flags);
  added_since_kick_ += descs.size();
}

bool PackedDriver::Kick() {
  const uint32_t old_lin = Linear(kicked_avail_, kicked_wrap_, size_);
  const uint64_t added = added_since_kick_;
  kicked_avail_ = next_avail_;
  kicked_wrap_ = avail_wrap_;
  added_since_kick_ = 0;
  FullFence();
  if (added == 0) return false;
  const uint16_t flags =
      mem_.Load<uint16_t>(device_event_ + 2) & spec::kRingEventFlagsMask;
  if (flags == spec::kRingEventFlagsDisable) return false;
  if (flags != spec::kRingEventFlagsDesc || !options_.event_idx) return true;
  const uint16_t off_wrap = mem_.Load<uint16_t>(device_event_);
  const uint32_t ev_lin =
      Linear(off_wrap & ~spec::kEventWrapBit,
             (off_wrap & spec::kEventWrapBit) != 0, size_);
  return added >= 2 * size_ || Distance(old_lin, ev_lin, size_) < added;
}

uint16_t PackedDriver::PassUsed(uint16_t id) {
  const uint16_t slots = slots_of_id_[id];
  Step(next_used_, used_wrap_, slots, size_);
  return slots;
}

UsedBuffer PackedDriver::Free(UsedBuffer b) {
  free_slots_ += slots_of_id_[b.id];
  slots_of_id_[b.id] = 0;
  free_ids_.push_back(b.id);
  --outstanding_;
  return b;
}

std::optional<UsedBuffer> PackedDriver::Reap() {
  if (!ready_.empty()) {
    const UsedBuffer b = ready_.front();
    ready_.pop_front();
    return Free(b);
  }
  for (;;) {
    const uint16_t flags = LoadAcquire(reinterpret_cast<uint16_t*>(
        mem_.Host(desc_gpa(next_used_) + 14, 2)));
    const bool avail = (flags & spec::kDescFlagAvail) != 0;
    const bool used = (flags & spec::kDescFlagUsed) != 0;
    if (avail != used || used != used_wrap_) return std::nullopt;
    const auto d = mem_.Load<spec::PackedDesc>(desc_gpa(next_used_));
    if (d.id >= size_ || slots_of_id_[d.id] == 0 ||
        (options_.in_order &&
         std::find(avail_order_.begin(), avail_order_.end(), d.id) ==
             avail_order_.end())) {
      if (device_error_.empty()) {
        device_error_ = absl::StrFormat(
            "used descriptor at %u has id %u, not outstanding", next_used_,
            d.id);
      }
      // Cannot know how far to skip; step one slot to make progress.
      if (++next_used_ == size_) {
        next_used_ = 0;
        used_wrap_ = !used_wrap_;
      }
      continue;
    }
    if (d.len > writable_of_id_[d.id] && device_error_.empty()) {
      device_error_ = absl::StrFormat(
          "used length %u for id %u exceeds its %u writable bytes", d.len,
          d.id, writable_of_id_[d.id]);
    }
    const uint16_t at = next_used_;
    if (!options_.in_order) {
      const uint16_t slots = PassUsed(d.id);
      reaped_slots_at_[at] = slots;
      reaped_total_ += slots;
      return Free({d.id, d.len});
    }
    // IN_ORDER: this descriptor stands for every buffer from the oldest
    // outstanding one up to d.id (outstanding, so in avail_order_).
    uint32_t run_slots = 0;
    for (;;) {
      const uint16_t id = avail_order_.front();
      avail_order_.pop_front();
      run_slots += PassUsed(id);
      ready_.push_back({id, id == d.id ? d.len : 0});
      if (id == d.id) break;
    }
    reaped_slots_at_[at] = static_cast<uint16_t>(run_slots);
    reaped_total_ += run_slots;
    const UsedBuffer b = ready_.front();
    ready_.pop_front();
    return Free(b);
  }
}

bool PackedDriver::EnableInterrupts() {
  if (options_.event_idx) {
    mem_.Store<uint16_t>(
        driver_event_,
        static_cast<uint16_t>(next_used_ | (used_wrap_ ? spec::kEventWrapBit : 0)));
    StoreRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(driver_event_ + 2, 2)),
                 spec::kRingEventFlagsDesc);
  } else {
    StoreRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(driver_event_ + 2, 2)),
                 spec::kRingEventFlagsEnable);
  }
  FullFence();
  if (!ready_.empty()) return true;  // a run read, not all of it reaped
  const uint16_t flags = LoadAcquire(reinterpret_cast<uint16_t*>(
      mem_.Host(desc_gpa(next_used_) + 14, 2)));
  const bool avail = (flags & spec::kDescFlagAvail) != 0;
  const bool used = (flags & spec::kDescFlagUsed) != 0;
  return avail == used && used == used_wrap_;
}

void PackedDriver::DisableInterrupts() {
  StoreRelaxed(reinterpret_cast<uint16_t*>(mem_.Host(driver_event_ + 2, 2)),
               spec::kRingEventFlagsDisable);
}

bool PackedDriver::InterruptExpected() {
  // Walk the used descriptors the device wrote since the last check.
  const uint16_t start = used_checked_;
  const bool start_wrap = used_checked_wrap_;
  uint16_t pos = start;
  bool wrap = start_wrap;
  uint64_t walked = 0;
  if (options_.in_order) {
    // Runs need the avail order, known only for unreaped buffers: walk
    // from the reap position (everything before it is used).
    pos = next_used_;
    wrap = used_wrap_;
    size_t i = 0;
    while (i < avail_order_.size()) {
      const uint16_t flags = mem_.Load<uint16_t>(desc_gpa(pos) + 14);
      const bool avail = (flags & spec::kDescFlagAvail) != 0;
      const bool used = (flags & spec::kDescFlagUsed) != 0;
      if (avail != used || used != wrap) break;
      const uint16_t id = mem_.Load<uint16_t>(desc_gpa(pos) + 12);
      size_t last = i;
      while (last < avail_order_.size() && avail_order_[last] != id) ++last;
      if (last == avail_order_.size()) break;  // Reap() reports it
      for (; i <= last; ++i)
        Step(pos, wrap, slots_of_id_[avail_order_[i]], size_);
    }
    used_checked_ = pos;
    used_checked_wrap_ = wrap;
    return UsedInterruptDue(start, start_wrap, pos, wrap);
  }
  // At most a ring of reaped positions plus a ring of new used ones.
  for (uint32_t guard = 0; guard < 2 * size_; ++guard) {
    // Positions the driver already reaped: their IDs may be reused, so
    // step by what Reap() recorded.
    if (checked_total_ + walked < reaped_total_) {
      walked += reaped_slots_at_[pos];
      Step(pos, wrap, reaped_slots_at_[pos], size_);
      continue;
    }
    const uint16_t flags = mem_.Load<uint16_t>(desc_gpa(pos) + 14);
    const bool avail = (flags & spec::kDescFlagAvail) != 0;
    const bool used = (flags & spec::kDescFlagUsed) != 0;
    if (avail != used || used != wrap) break;
    const uint16_t id = mem_.Load<uint16_t>(desc_gpa(pos) + 12);
    const uint16_t slots = id < size_ && slots_of_id_[id] ? slots_of_id_[id] : 1;
    walked += slots;
    Step(pos, wrap, slots, size_);
  }
  used_checked_ = pos;
  used_checked_wrap_ = wrap;
  checked_total_ += walked;
  return UsedInterruptDue(start, start_wrap, pos, wrap);
}

bool PackedDriver::UsedInterruptDue(uint16_t start, bool start_wrap,
                                    uint16_t pos, bool wrap) const {
  const uint32_t old_lin = Linear(start, start_wrap, size_);
  const uint32_t new_lin = Linear(pos, wrap, size_);
  if (old_lin == new_lin) return false;
  const uint16_t mode =
      mem_.Load<uint16_t>(driver_event_ + 2) & spec::kRingEventFlagsMask;
  if (mode == spec::kRingEventFlagsDisable) return false;
  if (mode != spec::kRingEventFlagsDesc || !options_.event_idx) return true;
  const uint16_t off_wrap = mem_.Load<uint16_t>(driver_event_);
  const uint32_t ev_lin = Linear(off_wrap & ~spec::kEventWrapBit,
                                 (off_wrap & spec::kEventWrapBit) != 0, size_);
  return Distance(old_lin, ev_lin, size_) < Distance(old_lin, new_lin, size_);
}

}  // namespace virtio::testing
