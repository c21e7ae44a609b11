// virtio/blk_spec.h — the virtio-blk wire format (VIRTIO 1.2 §5.2).
//
// Feature bits, request types and status values, the request header, the
// discard / write-zeroes segment and the configuration space layout, as
// plain little-endian structs whose sizes and offsets are checked at compile
// time. BlkDevice (virtio/blk_device.h) serves them; drivers and tests can
// use them to build requests.
//
// Example:
//   virtio::blk::RequestHeader h{.type = virtio::blk::kTypeIn, .reserved = 0,
//                                .sector = 8};
#ifndef VIRTIO_BLK_SPEC_H_
#define VIRTIO_BLK_SPEC_H_

#include <cstddef>
#include <cstdint>

namespace virtio {

namespace blk {

enum Feature : unsigned {
  kFeatureSizeMax = 1,
  kFeatureSegMax = 2,
  kFeatureGeometry = 4,
  kFeatureRo = 5,
  kFeatureBlkSize = 6,
  kFeatureFlush = 9,
  kFeatureTopology = 10,
  kFeatureConfigWce = 11,
  kFeatureMq = 12,
  kFeatureDiscard = 13,
  kFeatureWriteZeroes = 14,
  kFeatureLifetime = 15,
  kFeatureSecureErase = 16,
  kFeatureZoned = 17,
};

enum RequestType : uint32_t {
  kTypeIn = 0,
  kTypeOut = 1,
  kTypeFlush = 4,
  kTypeGetId = 8,
  kTypeGetLifetime = 10,
  kTypeDiscard = 11,
  kTypeWriteZeroes = 13,
  kTypeSecureErase = 14,
};

enum RequestStatus : uint8_t {
  kStatusOk = 0,
  kStatusIoErr = 1,
  kStatusUnsupp = 2,
};

inline constexpr uint32_t kSectorSize = 512;
inline constexpr uint32_t kSectorShift = 9;
inline constexpr uint32_t kIdBytes = 20;
inline constexpr uint32_t kWriteZeroesFlagUnmap = 1;

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;  // ioprio in the legacy interface
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);
static_assert(offsetof(RequestHeader, sector) == 8);

// One range of a DISCARD / WRITE_ZEROES request.
struct DiscardWriteZeroes {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};
static_assert(sizeof(DiscardWriteZeroes) == 16);
static_assert(offsetof(DiscardWriteZeroes, num_sectors) == 8);
static_assert(offsetof(DiscardWriteZeroes, flags) == 12);

#pragma pack(push, 1)
struct Geometry {
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors;
};
struct Topology {
  uint8_t physical_block_exp;
  uint8_t alignment_offset;
  uint16_t min_io_size;
  uint32_t opt_io_size;
};
// struct virtio_blk_config up to and including write_zeroes_may_unmap and
// its padding (secure-erase and zoned fields are not exposed: those
// features are not offered).
struct Config {
  uint64_t capacity;
  uint32_t size_max;
  uint32_t seg_max;
  Geometry geometry;
  uint32_t blk_size;
  Topology topology;
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
};
#pragma pack(pop)
static_assert(sizeof(Geometry) == 4);
static_assert(sizeof(Topology) == 8);
static_assert(offsetof(Config, capacity) == 0);
static_assert(offsetof(Config, size_max) == 8);
static_assert(offsetof(Config, seg_max) == 12);
static_assert(offsetof(Config, geometry) == 16);
static_assert(offsetof(Config, blk_size) == 20);
static_assert(offsetof(Config, topology) == 24);
static_assert(offsetof(Config, writeback) == 32);
static_assert(offsetof(Config, num_queues) == 34);
static_assert(offsetof(Config, max_discard_sectors) == 36);
static_assert(offsetof(Config, max_discard_seg) == 40);
static_assert(offsetof(Config, discard_sector_alignment) == 44);
static_assert(offsetof(Config, max_write_zeroes_sectors) == 48);
static_assert(offsetof(Config, max_write_zeroes_seg) == 52);
static_assert(offsetof(Config, write_zeroes_may_unmap) == 56);
static_assert(sizeof(Config) == 60);

}  // namespace blk

}  // namespace virtio

#endif  // VIRTIO_BLK_SPEC_H_
