#include "devices.h"

#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "slots.h"
#include <variant>

#include "virtio/blk_device.h"
#include "virtio/catalog/backend_opener.h"
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
  virtio::RngOptions options{.ring = {.packed = spec.device.packed},
                             .name = spec.id};
  options.max_bytes_per_period = spec.device.rng.rate;
  if (spec.device.queue_size) options.queue_size = *spec.device.queue_size;
  return [options](const virtio::GuestMemoryMap& mem,
                   typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<virtio::RngDevice<Traits>>> {
    return std::make_unique<virtio::RngDevice<Traits>>(mem, irq, options);
  };
}

template <typename Traits, typename Disk>
Factory<typename Traits::Interrupt, virtio::BlkDevice<Traits, Disk>> BlkFactory(
    const DeviceSpec& spec, Disk& disk) {
  using Dev = virtio::BlkDevice<Traits, Disk>;
  const virtio::catalog::BlockSpec& blk = spec.device.blk;
  const virtio::BlkDeviceOptions options{
      .name = spec.id,
      .num_queues = blk.num_queues,
      .queue_size = spec.device.queue_size.value_or(128),
      .serial = blk.serial.empty() ? spec.id.substr(0, 20) : blk.serial,
      .ring = {.packed = spec.device.packed}};
  return [&disk, options](const virtio::GuestMemoryMap& mem,
                          typename Traits::Interrupt& irq)
             -> absl::StatusOr<std::unique_ptr<Dev>> {
    return Dev::Create(mem, irq, disk, options);
  };
}

template <typename Disk>
absl::StatusOr<std::unique_ptr<VmmDevice>> MakeBlk(
    const DeviceSpec& spec, const Placement& p, Vm& vm, MsiRouter& router,
    std::shared_ptr<Disk> disk) {
  const uint16_t queues = spec.device.blk.num_queues;
  if (p.transport == TransportKind::kMmio) {
    return Make<virtio::BlkDevice<MmioTraits, Disk>>(
        spec, p, vm, router, disk, queues, BlkFactory<MmioTraits>(spec, *disk));
  }
  return Make<virtio::BlkDevice<PciTraits, Disk>>(
      spec, p, vm, router, disk, queues, BlkFactory<PciTraits>(spec, *disk));
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
    absl::StatusOr<virtio::catalog::BlockBackend> disk =
        virtio::catalog::OpenBlockBackend(spec.device.blk,
                                          {.queue_depth = 64});
    if (!disk.ok()) return disk.status();
    return std::visit(
        [&](auto& d) { return MakeBlk(spec, p, vm, router, d); }, *disk);
  }
  if (spec.type == "net") return slots::CreateNet(spec, p, vm, router);
  if (spec.type == "console") return slots::CreateConsole(spec, p, vm, router);
  return absl::InvalidArgumentError(
      absl::StrFormat("device type '%s' not supported by virtio-kvm", spec.type));
}

}  // namespace kvmglue
