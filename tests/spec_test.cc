// Checks of virtio/spec.h and virtio/ring_error.h against the VIRTIO 1.2
// specification: event-index arithmetic, reserved feature bit numbers, ring
// part sizes, and the ring error helpers.
#include "virtio/spec.h"

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "virtio/ring_error.h"

namespace virtio {
namespace {

// Reference for vring_need_event(): with VIRTIO_F_EVENT_IDX the peer asks to
// be notified once the entry with index `event` has been published, i.e. when
// the published index moves from `old_idx` past `event`. Written as an
// explicit walk over the published indices, independent of the modular
// one-liner in spec.h.
bool ReferenceNeedEvent(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  for (uint16_t i = old_idx; i != new_idx; ++i) {
    if (i == event) return true;
  }
  return false;
}

TEST(NeedEventTest, TruthTable) {
  struct Case {
    uint16_t event, new_idx, old_idx;
    bool want;
  };
  const Case cases[] = {
      // Nothing published: never notify.
      {0, 0, 0, false},
      {5, 5, 5, false},
      {4, 5, 5, false},
      // One entry (index 0) published: notify iff event == 0.
      {0, 1, 0, true},
      {1, 1, 0, false},
      {65535, 1, 0, false},
      // Entries 10..14 published (old 10, new 15).
      {9, 15, 10, false},
      {10, 15, 10, true},
      {12, 15, 10, true},
      {14, 15, 10, true},
      {15, 15, 10, false},
      {100, 15, 10, false},
      // Wrap-around: entry 65535 published (old 65535, new 0).
      {65535, 0, 65535, true},
      {0, 0, 65535, false},
      {65534, 0, 65535, false},
      // Entries 65534, 65535, 0 published (old 65534, new 1).
      {65533, 1, 65534, false},
      {65534, 1, 65534, true},
      {65535, 1, 65534, true},
      {0, 1, 65534, true},
      {1, 1, 65534, false},
      // The whole 16-bit space but one entry published.
      {7, 6, 7, true},
      {5, 6, 7, true},
      {6, 6, 7, false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(spec::NeedEvent(c.event, c.new_idx, c.old_idx), c.want)
        << "event=" << c.event << " new=" << c.new_idx << " old=" << c.old_idx;
    EXPECT_EQ(ReferenceNeedEvent(c.event, c.new_idx, c.old_idx), c.want)
        << "reference disagrees with the table: event=" << c.event;
  }
}

TEST(NeedEventTest, MatchesReferenceAroundWrap) {
  // Every (old, new) pair with a window of 0..40 entries and old near the
  // 65535 -> 0 wrap, against every event index in a band around it.
  for (uint32_t old_base = 65500; old_base < 65500 + 72; ++old_base) {
    const auto old_idx = static_cast<uint16_t>(old_base);
    for (uint16_t window = 0; window <= 40; ++window) {
      const auto new_idx = static_cast<uint16_t>(old_idx + window);
      for (int delta = -50; delta <= 90; ++delta) {
        const auto event = static_cast<uint16_t>(old_idx + delta);
        ASSERT_EQ(spec::NeedEvent(event, new_idx, old_idx),
                  ReferenceNeedEvent(event, new_idx, old_idx))
            << "event=" << event << " new=" << new_idx << " old=" << old_idx;
      }
    }
  }
}

TEST(SpecTest, FeatureBitsMatchSpecNumbers) {
  EXPECT_EQ(spec::kFeatureIndirectDesc, 28u);
  EXPECT_EQ(spec::kFeatureEventIdx, 29u);
  EXPECT_EQ(spec::kFeatureVersion1, 32u);
  EXPECT_EQ(spec::kFeatureAccessPlatform, 33u);
  EXPECT_EQ(spec::kFeatureRingPacked, 34u);
  EXPECT_EQ(spec::kFeatureInOrder, 35u);
  EXPECT_EQ(spec::kFeatureOrderPlatform, 36u);
  EXPECT_EQ(spec::kFeatureSrIov, 37u);
  EXPECT_EQ(spec::kFeatureNotificationData, 38u);
  EXPECT_EQ(spec::kFeatureNotifConfigData, 39u);
  EXPECT_EQ(spec::kFeatureRingReset, 40u);

  EXPECT_EQ(spec::Bit(spec::kFeatureVersion1), uint64_t{1} << 32);
  EXPECT_EQ(spec::Bit(spec::kFeatureRingPacked), 0x400000000ull);
  EXPECT_EQ(spec::Bit(spec::kFeatureIndirectDesc), 0x10000000ull);
  EXPECT_EQ(spec::Bit(spec::kFeatureEventIdx), 0x20000000ull);
  EXPECT_EQ(spec::Bit(0), 1u);
  EXPECT_EQ(spec::Bit(63), 0x8000000000000000ull);
}

TEST(SpecTest, StatusFlagsAndDescriptorFlags) {
  EXPECT_EQ(spec::kStatusAcknowledge, 1);
  EXPECT_EQ(spec::kStatusDriver, 2);
  EXPECT_EQ(spec::kStatusDriverOk, 4);
  EXPECT_EQ(spec::kStatusFeaturesOk, 8);
  EXPECT_EQ(spec::kStatusDeviceNeedsReset, 64);
  EXPECT_EQ(spec::kStatusFailed, 128);

  EXPECT_EQ(spec::kDescFlagNext, 1);
  EXPECT_EQ(spec::kDescFlagWrite, 2);
  EXPECT_EQ(spec::kDescFlagIndirect, 4);
  EXPECT_EQ(spec::kDescFlagAvail, 0x80);
  EXPECT_EQ(spec::kDescFlagUsed, 0x8000);
  EXPECT_EQ(spec::kAvailFlagNoInterrupt, 1);
  EXPECT_EQ(spec::kUsedFlagNoNotify, 1);
  EXPECT_EQ(spec::kRingEventFlagsEnable, 0);
  EXPECT_EQ(spec::kRingEventFlagsDisable, 1);
  EXPECT_EQ(spec::kRingEventFlagsDesc, 2);
  EXPECT_EQ(spec::kEventWrapBit, 0x8000);
  EXPECT_EQ(spec::kMaxQueueSize, 32768u);

  EXPECT_EQ(spec::kDeviceIdNet, 1u);
  EXPECT_EQ(spec::kDeviceIdBlock, 2u);
  EXPECT_EQ(spec::kDeviceIdConsole, 3u);
  EXPECT_EQ(spec::kDeviceIdEntropy, 4u);
}

TEST(SpecTest, SplitRingPartSizes) {
  // §2.7: desc 16*n; avail 6 + 2*n (flags, idx, ring[n], used_event);
  // used 6 + 8*n (flags, idx, ring[n], avail_event).
  struct Case {
    uint32_t n;
    uint64_t desc, avail, used;
  };
  const Case cases[] = {
      {1, 16, 8, 14},
      {2, 32, 10, 22},
      {16, 256, 38, 134},
      {256, 4096, 518, 2054},
      {32768, 524288, 65542, 262150},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.n);
    EXPECT_EQ(spec::SplitDescTableSize(c.n), c.desc);
    EXPECT_EQ(spec::SplitAvailRingSize(c.n), c.avail);
    EXPECT_EQ(spec::SplitUsedRingSize(c.n), c.used);
    // The event fields are the last two bytes of their ring part.
    EXPECT_EQ(spec::SplitUsedEventOffset(c.n) + 2, c.avail);
    EXPECT_EQ(spec::SplitAvailEventOffset(c.n) + 2, c.used);
    EXPECT_EQ(spec::PackedDescRingSize(c.n), c.desc);
  }
  EXPECT_EQ(spec::kSplitDescAlign, 16u);
  EXPECT_EQ(spec::kSplitAvailAlign, 2u);
  EXPECT_EQ(spec::kSplitUsedAlign, 4u);
  EXPECT_EQ(spec::kPackedDescAlign, 16u);
  EXPECT_EQ(spec::kPackedEventAlign, 4u);
  EXPECT_EQ(sizeof(spec::SplitDesc), 16u);
  EXPECT_EQ(sizeof(spec::SplitUsedElem), 8u);
  EXPECT_EQ(sizeof(spec::PackedDesc), 16u);
  EXPECT_EQ(sizeof(spec::PackedEventSuppress), 4u);
}

constexpr uint8_t kLastRingError =
    static_cast<uint8_t>(RingError::kTooManySegments);

TEST(RingErrorTest, NamesNonEmptyAndDistinct) {
  std::set<std::string> names;
  for (uint8_t v = 0; v <= kLastRingError; ++v) {
    const auto e = static_cast<RingError>(v);
    const std::string name(RingErrorName(e));
    EXPECT_FALSE(name.empty()) << int{v};
    EXPECT_NE(name, "unknown ring error") << int{v};
    EXPECT_TRUE(names.insert(name).second) << "duplicate name: " << name;
  }
  EXPECT_EQ(names.size(), size_t{kLastRingError} + 1);
  // A value outside the enum still gets a name rather than crashing.
  EXPECT_FALSE(
      RingErrorName(static_cast<RingError>(kLastRingError + 1)).empty());
}

TEST(RingErrorTest, Classification) {
  EXPECT_FALSE(IsRingError(RingError::kNone));
  for (RingError e :
       {RingError::kAvailIndexTooFarAhead,
        RingError::kDescriptorIndexOutOfRange, RingError::kChainTooLong,
        RingError::kIndirectNotNegotiated, RingError::kIndirectTableBadLength,
        RingError::kIndirectTableOutOfRange, RingError::kNestedIndirect,
        RingError::kIndirectWithNext, RingError::kIndirectNotAtHead,
        RingError::kUsedOverflow}) {
    EXPECT_TRUE(IsRingError(e)) << RingErrorName(e);
  }
  for (RingError e :
       {RingError::kBufferOutOfRange, RingError::kBufferAddressOverflow,
        RingError::kReadableAfterWritable, RingError::kChainTooLarge,
        RingError::kTooManySegments}) {
    EXPECT_FALSE(IsRingError(e)) << RingErrorName(e);
  }
}

TEST(RingErrorTest, ToStatus) {
  EXPECT_TRUE(RingErrorToStatus(RingError::kNone).ok());
  for (uint8_t v = 1; v <= kLastRingError; ++v) {
    const auto e = static_cast<RingError>(v);
    const absl::Status s = RingErrorToStatus(e);
    EXPECT_FALSE(s.ok()) << int{v};
    EXPECT_EQ(s.code(), IsRingError(e) ? absl::StatusCode::kDataLoss
                                       : absl::StatusCode::kInvalidArgument)
        << RingErrorName(e);
    EXPECT_EQ(std::string(s.message()), std::string(RingErrorName(e)));
  }
  EXPECT_EQ(RingErrorToStatus(RingError::kChainTooLong).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(RingErrorToStatus(RingError::kBufferOutOfRange).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace virtio
