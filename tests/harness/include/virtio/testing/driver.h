// virtio/testing/driver.h — driver-side virtqueues for testing devices.
//
// SplitDriver and PackedDriver play the guest driver's half of a virtqueue on
// a TestGuestMemory: they lay out the rings, add descriptor chains (direct or
// through an indirect table), publish them, decide whether to kick the way a
// Linux driver does (honouring the device's event suppression), reap used
// buffers, and check that the device returned each buffer exactly once with
// a plausible length. They also expose the raw ring so a test can corrupt it
// on purpose.
//
// Both drivers have the same API, so tests are written once for both layouts
// (see Layouts below):
//
//   virtio::testing::TestGuestMemory mem;
//   virtio::testing::SplitDriver driver(mem, 256, {.event_idx = true});
//   auto queue = virtio::SplitQueue<virtio::GuestMemoryMap>::Create(
//       mem.map(), driver.config());
//   uint64_t buf = mem.Alloc(512);
//   std::optional<uint16_t> id = driver.Add({{buf, 512, /*writable=*/true}});
//   if (driver.Kick()) { /* notify the device */ }
//   ... device pops, pushes, publishes ...
//   std::optional<virtio::testing::UsedBuffer> used = driver.Reap();
//   EXPECT_EQ(driver.device_error(), "");
#ifndef VIRTIO_TESTING_DRIVER_H_
#define VIRTIO_TESTING_DRIVER_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "virtio/packed_queue.h"
#include "virtio/queue.h"
#include "virtio/spec.h"
#include "virtio/split_queue.h"
#include "virtio/testing/test_memory.h"

namespace virtio::testing {

// One buffer of a chain, as the driver describes it.
struct Buffer {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool writable = false;
};

// A buffer the device handed back.
struct UsedBuffer {
  uint16_t id = 0;
  uint32_t len = 0;
};

struct DriverOptions {
  // VIRTIO_F_EVENT_IDX negotiated (split: used_event/avail_event; packed:
  // DESC-mode event suppression).
  bool event_idx = false;
  // VIRTIO_F_INDIRECT_DESC negotiated; Add(..., indirect=true) needs it.
  bool indirect = false;
  // Largest chain Add() accepts through an indirect table.
  uint32_t max_indirect = 64;
  // VIRTIO_F_IN_ORDER negotiated. PackedDriver then accepts a used
  // descriptor that stands for a run of buffers (the last one's ID at the
  // first one's position; VIRTIO 1.2 §2.8, "In-order use of descriptors"):
  // the buffers before the last of the run are reaped with length 0.
  // SplitDriver ignores it.
  bool in_order = false;
};

class SplitDriver {
 public:
  // Allocates the three ring parts (and indirect tables) in `mem`.
  SplitDriver(TestGuestMemory& mem, uint32_t size, DriverOptions options = {});

  // What the device needs to create its side of the queue.
  QueueConfig config() const;
  uint32_t size() const { return size_; }
  // Chains added and not yet reaped.
  uint32_t outstanding() const { return outstanding_; }

  // Adds a chain (readable buffers must come before writable ones for a
  // well-formed chain, but the harness does not enforce it). Not visible to
  // the device until Kick(). Returns the ID the device will report, or
  // nullopt if the ring has no room.
  std::optional<uint16_t> Add(absl::Span<const Buffer> buffers,
                              bool indirect = false);
  // Publishes added chains. Returns true if the device asked to be notified.
  bool Kick();
  // Takes the next used buffer, if any. A bogus element from the device
  // (unknown ID, ID not outstanding, length above the chain's writable
  // bytes) is recorded in device_error() and skipped.
  std::optional<UsedBuffer> Reap();
  // Asks for interrupts (clears NO_INTERRUPT, or with EVENT_IDX sets
  // used_event to the next used index). Returns true if used buffers are
  // already pending.
  bool EnableInterrupts();
  // Asks not to be interrupted.
  void DisableInterrupts();
  // True if what the device published since the previous call should
  // interrupt us, judged from the driver side: an independent check of the
  // device's Publish() decision. Call once after each device Publish(),
  // before or after reaping.
  bool InterruptExpected();

  // Description of the first protocol violation by the device, or "".
  const std::string& device_error() const { return device_error_; }

  // --- Raw access for corrupting the ring. ---
  uint64_t desc_gpa(uint16_t index) const { return desc_ + 16ull * index; }
  uint64_t avail_gpa() const { return avail_; }
  uint64_t used_gpa() const { return used_; }
  void WriteDesc(uint16_t index, const spec::SplitDesc& d);
  // Puts `head` in the next avail slot and bumps avail->idx (release).
  void PostHead(uint16_t head);
  // Overwrites avail->idx.
  void SetAvailIdx(uint16_t idx);
  TestGuestMemory& memory() { return mem_; }

 private:
  TestGuestMemory& mem_;
  uint32_t size_;
  DriverOptions options_;
  uint64_t desc_, avail_, used_;
  uint64_t indirect_tables_;  // size_ tables of max_indirect entries
  std::vector<uint16_t> free_;          // free descriptor indices (stack)
  std::vector<uint16_t> chain_next_;    // private copy of next links
  std::vector<uint16_t> chain_len_;     // descriptors per head, 0 = free
  std::vector<uint64_t> chain_writable_;
  uint16_t avail_idx_ = 0;       // shadow of avail->idx
  uint16_t avail_kicked_ = 0;    // avail->idx at the last Kick()
  uint16_t last_used_ = 0;
  uint16_t used_checked_ = 0;  // used->idx at the last InterruptExpected()
  uint32_t outstanding_ = 0;
  std::string device_error_;
};

class PackedDriver {
 public:
  PackedDriver(TestGuestMemory& mem, uint32_t size, DriverOptions options = {});

  QueueConfig config() const;
  uint32_t size() const { return size_; }
  uint32_t outstanding() const { return outstanding_; }

  // As SplitDriver::Add. The chain becomes visible at once (its head flags
  // are written last); Kick() only decides whether to notify.
  std::optional<uint16_t> Add(absl::Span<const Buffer> buffers,
                              bool indirect = false);
  bool Kick();
  std::optional<UsedBuffer> Reap();
  bool EnableInterrupts();
  void DisableInterrupts();
  bool InterruptExpected();
  const std::string& device_error() const { return device_error_; }

  // --- Raw access for corrupting the ring. ---
  uint64_t desc_gpa(uint16_t offset) const { return ring_ + 16ull * offset; }
  uint64_t driver_event_gpa() const { return driver_event_; }
  uint64_t device_event_gpa() const { return device_event_; }
  // Ring offset and wrap counter where the next chain goes.
  uint16_t next_avail() const { return next_avail_; }
  bool avail_wrap() const { return avail_wrap_; }
  // Writes `descs` at the next avail slots, setting AVAIL/USED in each to
  // mark it available (head last, with release), and advances. Bypasses ID
  // and slot bookkeeping: for malformed-ring tests only.
  void PlaceRaw(absl::Span<const spec::PackedDesc> descs);
  TestGuestMemory& memory() { return mem_; }

 private:
  uint16_t AvailFlags(bool wrap) const;
  // Moves the reap position past buffer `id`'s slots; returns them.
  uint16_t PassUsed(uint16_t id);
  // Hands buffer `b.id`'s ID and slots back for reuse; returns `b`.
  UsedBuffer Free(UsedBuffer b);
  // Whether the device owed an interrupt for moving its used position from
  // (start, start_wrap) to (pos, wrap), by the driver event suppression.
  bool UsedInterruptDue(uint16_t start, bool start_wrap, uint16_t pos,
                        bool wrap) const;

  TestGuestMemory& mem_;
  uint32_t size_;
  DriverOptions options_;
  uint64_t ring_, driver_event_, device_event_;
  uint64_t indirect_tables_;
  std::vector<uint16_t> free_ids_;
  std::vector<uint16_t> slots_of_id_;  // 0 = free
  std::vector<uint64_t> writable_of_id_;
  uint32_t free_slots_;
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t kicked_avail_ = 0;  // position at the last Kick()
  bool kicked_wrap_ = true;
  // Slots made available since the last Kick(); positions alone cannot tell
  // "nothing added" from "a multiple of 2*size added".
  uint64_t added_since_kick_ = 0;
  // Ring slots of the used descriptor reaped at each position, so
  // InterruptExpected() can step over buffers already reaped.
  std::vector<uint16_t> reaped_slots_at_;
  // Slots passed by Reap() and by InterruptExpected() since the start;
  // unbounded counters, because ring positions cannot tell "a full ring
  // ahead" from "a full ring behind".
  uint64_t reaped_total_ = 0;
  uint64_t checked_total_ = 0;
  uint16_t next_used_ = 0;
  bool used_wrap_ = true;
  // Device used position at the last InterruptExpected(), found by walking
  // used descriptors the driver has not necessarily reaped yet.
  uint16_t used_checked_ = 0;
  bool used_checked_wrap_ = true;
  uint32_t outstanding_ = 0;
  std::string device_error_;
  // IN_ORDER: IDs added and not yet reaped, in ring order, and the buffers
  // of a run already read from the ring that Reap() has not returned yet.
  std::deque<uint16_t> avail_order_;
  std::deque<UsedBuffer> ready_;
};

// Type bundles for typed tests that cover both layouts:
//   using Layouts = ::testing::Types<SplitLayout, PackedLayout>;
struct SplitLayout {
  using Driver = SplitDriver;
  using Queue = SplitQueue<GuestMemoryMap>;
  static constexpr const char* kName = "split";
};
struct PackedLayout {
  using Driver = PackedDriver;
  using Queue = PackedQueue<GuestMemoryMap>;
  static constexpr const char* kName = "packed";
};

// Names typed-test instances "split" / "packed":
//   TYPED_TEST_SUITE(MyTest, Layouts, virtio::testing::LayoutNames);
struct LayoutNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_DRIVER_H_
