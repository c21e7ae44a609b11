// vhost_user/message.h — the vhost-user wire format (QEMU
// docs/interop/vhost-user.rst): request codes, header flags, feature bits,
// payload layouts, and a received message with the file descriptors that
// came with it.
//
// Every message is a 12-byte header (request, flags, size; native byte
// order) followed by `size` payload bytes; file descriptors travel as
// SCM_RIGHTS ancillary data on the same sendmsg(2). ExpectedShape() says,
// for each front-end request, exactly which payload sizes and fd counts are
// valid; anything else is a protocol error.
#ifndef VHOST_USER_MESSAGE_H_
#define VHOST_USER_MESSAGE_H_

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "vhost_user/unique_fd.h"

namespace vhost_user {

// Front-end → back-end requests.
enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
};

// Back-end → front-end requests (on the SET_BACKEND_REQ_FD channel).
enum BackendRequest : uint32_t {
  kBackendIotlbMsg = 1,
  kBackendConfigChangeMsg = 2,
  kBackendVringHostNotifierMsg = 3,
};

// Header flags.
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

// Virtio feature bit vhost-user borrows to announce protocol features.
inline constexpr unsigned kFeatureProtocolFeatures = 30;
// VHOST_F_LOG_ALL (dirty logging during migration).
inline constexpr unsigned kFeatureLogAll = 26;

// Protocol feature bits.
enum ProtocolFeature : unsigned {
  kProtocolMq = 0,
  kProtocolLogShmfd = 1,
  kProtocolRarp = 2,
  kProtocolReplyAck = 3,
  kProtocolNetMtu = 4,
  kProtocolBackendReq = 5,
  kProtocolCrossEndian = 6,
  kProtocolCryptoSession = 7,
  kProtocolPagefault = 8,
  kProtocolConfig = 9,
  kProtocolBackendSendFd = 10,
  kProtocolHostNotifier = 11,
  kProtocolInflightShmfd = 12,
  kProtocolResetDevice = 13,
  kProtocolInbandNotifications = 14,
  kProtocolConfigureMemSlots = 15,
  kProtocolStatus = 16,
};

constexpr uint64_t Bit(unsigned b) { return uint64_t{1} << b; }

// SET_VRING_KICK/CALL/ERR payload: queue index in bits 0-7, bit 8 = no fd.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdMask = 0x100;

// SET_MEM_TABLE carries at most this many regions (one fd each).
inline constexpr uint32_t kMaxMemTableRegions = 8;
// GET_MAX_MEM_SLOTS answer (the most ADD_MEM_REG can add).
inline constexpr uint32_t kMaxMemSlots = 509;
// GET/SET_CONFIG carry at most this many config bytes.
inline constexpr uint32_t kMaxConfigSize = 256;
// Largest payload any request has (SET_CONFIG with 256 bytes).
inline constexpr uint32_t kMaxPayload = 12 + kMaxConfigSize;
// Most fds one message may carry.
inline constexpr uint32_t kMaxFds = kMaxMemTableRegions;

// Every message starts with this header (native byte order).
struct Header {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
};
static_assert(sizeof(Header) == 12);

// SET_VRING_NUM, SET/GET_VRING_BASE, SET_VRING_ENABLE: a queue index and
// a number.
struct VringState {
  uint32_t index;
  uint32_t num;
};
static_assert(sizeof(VringState) == 8);

// SET_VRING_ADDR: a queue's ring addresses in the front-end's address
// space, and where its used ring is logged.
struct VringAddr {
  uint32_t index;
  uint32_t flags;  // bit 0: VHOST_VRING_F_LOG
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40);

// One guest memory region of SET_MEM_TABLE / ADD_MEM_REG; its fd travels
// with the message.
struct MemoryRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};
static_assert(sizeof(MemoryRegion) == 32);

// SET_MEM_TABLE: u32 nregions, u32 padding, then nregions regions.
inline constexpr uint32_t kMemTableHeaderSize = 8;
// ADD_MEM_REG / REM_MEM_REG: u64 padding, one region.
struct SingleMemoryRegion {
  uint64_t padding;
  MemoryRegion region;
};
static_assert(sizeof(SingleMemoryRegion) == 40);

// SET_VRING_ADDR flags: VHOST_VRING_F_LOG, log the ring's used-ring writes
// at log_guest_addr.
inline constexpr uint32_t kVringFlagLog = 1u << 0;

// SET_LOG_BASE payload (with LOG_SHMFD; one fd): the dirty log is
// `mmap_size` bytes of the fd from `mmap_offset`, one bit per
// kLogPageSize-byte guest-physical page, bit 0 of byte 0 = page 0.
struct LogDescription {
  uint64_t mmap_size;
  uint64_t mmap_offset;
};
static_assert(sizeof(LogDescription) == 16);
// VHOST_LOG_PAGE.
inline constexpr uint64_t kLogPageSize = 0x1000;

// GET/SET_CONFIG: offset, size, flags, then `size` bytes.
struct ConfigHeader {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
};
static_assert(sizeof(ConfigHeader) == 12);

// A message as received or about to be sent. Owns its fds.
struct Message {
  Header header{};
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;

  uint32_t request() const { return header.request; }
  bool need_reply() const { return (header.flags & kFlagNeedReply) != 0; }

  // Copies a fixed-size payload out (the caller validated the size).
  template <typename T>
  T As() const {
    T v{};
    std::memcpy(&v, payload.data(), payload.size() < sizeof v ? payload.size()
                                                              : sizeof v);
    return v;
  }
  // Replaces the payload with `v`.
  template <typename T>
  void Set(const T& v) {
    payload.resize(sizeof v);
    std::memcpy(payload.data(), &v, sizeof v);
    header.size = sizeof v;
  }
};

// Makes a reply to `request` carrying `v`.
template <typename T>
Message MakeReply(uint32_t request, const T& v) {
  Message m;
  m.header = {request, kVersion | kFlagReply, 0};
  m.Set(v);
  return m;
}

// The name of a front-end request, for logs ("SET_MEM_TABLE", "request 99").
std::string_view RequestName(uint32_t request);

// Checks a front-end message's payload size and fd count against what its
// request allows. Returns "" if valid, else a description of what is wrong.
// Does not judge whether the request is allowed now (negotiation state).
std::string ValidateShape(const Message& m);

}  // namespace vhost_user

#endif  // VHOST_USER_MESSAGE_H_
