#include "devices.h"

#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "slots.h"
#include "virtio/backends/uring_disk.h"
#include "virtio/blk_device.h"
#include "virtio/rng_device.h"

namespace kvmglue {
namespace slots {
bool g_force_irq_line = false;
}  // namespace slots

namespace {

using namespace slots;  // NOLINT

// --- Device types ------------------------------------------------------------------

template <typename Traits>
Factory<typename Traits::Interrupt, virtio::RngDevice<Traits>> RngFactory(
    const DeviceSpec& spec) {
  return [name = spec.id, packed = spec.packed](
             const virtio::GuestMemoryMap& mem,
             typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<virtio::RngDevice<Traits>>> {
    return std::make_unique<virtio::RngDevice<Traits>>(
        mem, irq,
        virtio::RngOptions{.ring = {.packed = packed}, .name = name});
  };
}

template <typename Traits>
Factory<typename Traits::Interrupt, virtio::BlkDevice<Traits, virtio::UringDisk>>
BlkFactory(const DeviceSpec& spec, virtio::UringDisk& disk) {
  using Dev = virtio::BlkDevice<Traits, virtio::UringDisk>;
  return [&disk, name = spec.id, queues = spec.queues, packed = spec.packed](
             const virtio::GuestMemoryMap& mem, typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<Dev>> {
    return Dev::Create(mem, irq, disk,
                       virtio::BlkDeviceOptions{.name = name,
                                                .num_queues = queues,
                                                .queue_size = 128,
                                                .serial = name.substr(0, 20),
                                                .ring = {.packed = packed}});
  };
}

}  // namespace

void UseIrqLineIoctl(bool on) { slots::g_force_irq_line = on; }

absl::StatusOr<std::unique_ptr<VmmDevice>> CreateDevice(
    const DeviceSpec& spec, const Placement& p, Vm& vm, MsiRouter& router) {
  const bool mmio = p.transport == TransportKind::kMmio;
  if (spec.type == "rng") {
    if (mmio) {
      return Make<virtio::RngDevice<MmioTraits>>(
          spec, p, vm, router, nullptr, 1, RngFactory<MmioTraits>(spec));
    }
    return Make<virtio::RngDevice<PciTraits>>(spec, p, vm, router, nullptr, 1,
                                              RngFactory<PciTraits>(spec));
  }
  if (spec.type == "blk") {
    absl::StatusOr<std::unique_ptr<virtio::UringDisk>> disk =
        virtio::UringDisk::Open(
            {.path = spec.path,
             .read_only = spec.readonly,
             .num_queues = spec.queues,
             .queue_depth = 64});
    if (!disk.ok()) return disk.status();
    std::shared_ptr<virtio::UringDisk> shared = *std::move(disk);
    virtio::UringDisk& d = *shared;
    if (mmio) {
      return Make<virtio::BlkDevice<MmioTraits, virtio::UringDisk>>(
          spec, p, vm, router, shared, spec.queues, BlkFactory<MmioTraits>(spec, d));
    }
    return Make<virtio::BlkDevice<PciTraits, virtio::UringDisk>>(
        spec, p, vm, router, shared, spec.queues, BlkFactory<PciTraits>(spec, d));
  }
  if (spec.type == "net") return slots::CreateNet(spec, p, vm, router);
  if (spec.type == "console") return slots::CreateConsole(spec, p, vm, router);
  return absl::InvalidArgumentError(
      absl::StrFormat("device type '%s' not supported by virtio-kvm", spec.type));
}

}  // namespace kvmglue
