#include "device_summary.h"

#include <cstddef>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "virtio/blk_spec.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

// 8 MiB, 1.5 GiB, 512 bytes.
std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " bytes");
  return absl::StrFormat("%.4g %s", value, kUnits[unit]);
}

}  // namespace

std::string DeviceSummary(const virtio::catalog::DeviceSpec& spec,
                          VhostDevice& device) {
  const uint64_t features = device.features();
  std::string out =
      spec.text.empty()
          ? std::string(virtio::catalog::DeviceTypeName(spec.type))
          : spec.text;
  out += ":";
  if (spec.type == virtio::catalog::DeviceType::kBlk) {
    uint64_t capacity = 0;
    device.ReadConfig(offsetof(virtio::blk::Config, capacity), &capacity,
                      sizeof capacity);
    const bool read_only =
        (features & virtio::spec::Bit(virtio::blk::kFeatureRo)) != 0;
    absl::StrAppend(&out, " ", capacity, " sectors of 512 bytes (",
                    HumanBytes(capacity * virtio::blk::kSectorSize), "), ",
                    read_only ? "read-only" : "read-write", ",");
  }
  const uint16_t queues = device.num_queues();
  uint32_t largest = 0;
  for (uint16_t q = 0; q < queues; ++q) {
    largest = std::max(largest, device.queue_max_size(q));
  }
  absl::StrAppend(
      &out, " ", queues, queues == 1 ? " queue" : " queues", " of up to ",
      largest, " entries, rings offered: split",
      (features & virtio::spec::Bit(virtio::spec::kFeatureRingPacked))
          ? " packed"
          : "",
      absl::StrFormat(", features offered 0x%x", features));
  return out;
}

}  // namespace vhost_user
