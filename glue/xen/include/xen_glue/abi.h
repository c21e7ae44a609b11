// xen_glue/abi.h — the parts of Xen's public ioreq ABI the glue uses,
// mirrored so the dispatch logic, the simulator and the fuzzer build without
// libxen-dev. src/abi_check.cc static_asserts every constant, size and
// offset here against the real <xen/hvm/ioreq.h>, <xen/hvm/dm_op.h> and
// <xen/memory.h> whenever libxen-dev is present.
//
// The slot: each vCPU owns one 32-byte IoreqSlot in the shared ioreq page.
// Byte 30 packs state (bits 0-3), data_is_ptr (bit 4), dir (bit 5) and df
// (bit 6). Xen and the backend hand the slot back and forth through the
// state nibble, so byte 30 is only ever accessed through
// std::atomic_ref<uint8_t> (SlotByte30): a plain bitfield store would be a
// data race with the other side's load.
#ifndef XEN_GLUE_ABI_H_
#define XEN_GLUE_ABI_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace virtio::xg {

using DomId = uint16_t;
using IoServId = uint16_t;
using EvtchnPort = uint32_t;
using XenPfn = uint64_t;  // unsigned long on x86-64 and arm64 Linux

inline constexpr uint64_t kPageSize = 4096;
inline constexpr unsigned kPageShift = 12;

// ioreq.h
inline constexpr uint8_t kIoreqRead = 1;
inline constexpr uint8_t kIoreqWrite = 0;
inline constexpr uint8_t kStateNone = 0;
inline constexpr uint8_t kStateReady = 1;
inline constexpr uint8_t kStateInProcess = 2;
inline constexpr uint8_t kStateRespReady = 3;
inline constexpr uint8_t kTypePio = 0;
inline constexpr uint8_t kTypeCopy = 1;  // MMIO
inline constexpr uint8_t kTypePciConfig = 2;
inline constexpr uint8_t kTypeTimeOffset = 7;
inline constexpr uint8_t kTypeInvalidate = 8;

// hvm_op.h (__XEN_TOOLS__ only)
inline constexpr int kBufioreqOff = 0;
inline constexpr int kBufioreqLegacy = 1;
inline constexpr int kBufioreqAtomic = 2;

// memory.h
inline constexpr unsigned kResourceIoreqServer = 0;
inline constexpr unsigned long kResourceFrameBufioreq = 0;
constexpr unsigned long ResourceFrameIoreq(unsigned long n) { return 1 + n; }

// dm_op.h
inline constexpr uint32_t kIoRangePort = 0;
inline constexpr uint32_t kIoRangeMemory = 1;
inline constexpr uint32_t kIoRangePci = 2;
constexpr uint32_t PciSbdf(uint16_t seg, uint8_t bus, uint8_t dev, uint8_t fn) {
  return (uint32_t{seg} << 16) | (uint32_t{bus} << 8) |
         (uint32_t{dev & 0x1fu} << 3) | (fn & 0x7u);
}

// Xen limits (xen/include/xen/ioreq.h, xen/common/ioreq.c).
inline constexpr unsigned kMaxIoreqServers = 8;
inline constexpr unsigned kMaxIoRanges = 256;
inline constexpr unsigned kMaxVcpusPerPage = kPageSize / 32;  // 128

// struct ioreq, byte for byte. Fields other than byte 30 are written by one
// side while the other is not looking (ordered by the state byte).
struct IoreqSlot {
  uint64_t addr;      // @0
  uint64_t data;      // @8
  uint32_t count;     // @16
  uint32_t size;      // @20
  uint32_t vp_eport;  // @24
  uint16_t pad0;      // @28
  uint8_t flags;      // @30 state:4 data_is_ptr:1 dir:1 df:1 pad:1
  uint8_t type;       // @31
};
static_assert(sizeof(IoreqSlot) == 32);
static_assert(offsetof(IoreqSlot, addr) == 0);
static_assert(offsetof(IoreqSlot, data) == 8);
static_assert(offsetof(IoreqSlot, count) == 16);
static_assert(offsetof(IoreqSlot, size) == 20);
static_assert(offsetof(IoreqSlot, vp_eport) == 24);
static_assert(offsetof(IoreqSlot, flags) == 30);
static_assert(offsetof(IoreqSlot, type) == 31);

inline constexpr uint8_t kFlagStateMask = 0x0f;
inline constexpr uint8_t kFlagDataIsPtr = 1u << 4;
inline constexpr uint8_t kFlagDirRead = 1u << 5;
inline constexpr uint8_t kFlagDf = 1u << 6;

inline std::atomic_ref<uint8_t> SlotByte30(IoreqSlot& slot) {
  static_assert(std::atomic_ref<uint8_t>::is_always_lock_free);
  return std::atomic_ref<uint8_t>(slot.flags);
}

// A decoded copy of a slot, taken after the acquire load that saw READY.
struct Ioreq {
  uint64_t addr = 0;
  uint64_t data = 0;
  uint32_t count = 0;
  uint32_t size = 0;
  uint8_t type = 0;
  bool read = false;
  bool data_is_ptr = false;
  bool df = false;
};

// PCI_CONFIG requests: addr = SBDF << 32 | register.
constexpr uint32_t PciConfigSbdf(uint64_t addr) {
  return static_cast<uint32_t>(addr >> 32);
}
constexpr uint32_t PciConfigReg(uint64_t addr) {
  return static_cast<uint32_t>(addr);
}

}  // namespace virtio::xg

#endif  // XEN_GLUE_ABI_H_
