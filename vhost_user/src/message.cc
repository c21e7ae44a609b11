#include "vhost_user/message.h"

#include <string>

#include "absl/strings/str_format.h"
#include "vhost_user/inflight.h"

namespace vhost_user {

std::string_view RequestName(uint32_t request) {
  switch (request) {
    case kGetFeatures: return "GET_FEATURES";
    case kSetFeatures: return "SET_FEATURES";
    case kSetOwner: return "SET_OWNER";
    case kResetOwner: return "RESET_OWNER";
    case kSetMemTable: return "SET_MEM_TABLE";
    case kSetLogBase: return "SET_LOG_BASE";
    case kSetLogFd: return "SET_LOG_FD";
    case kSetVringNum: return "SET_VRING_NUM";
    case kSetVringAddr: return "SET_VRING_ADDR";
    case kSetVringBase: return "SET_VRING_BASE";
    case kGetVringBase: return "GET_VRING_BASE";
    case kSetVringKick: return "SET_VRING_KICK";
    case kSetVringCall: return "SET_VRING_CALL";
    case kSetVringErr: return "SET_VRING_ERR";
    case kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case kGetQueueNum: return "GET_QUEUE_NUM";
    case kSetVringEnable: return "SET_VRING_ENABLE";
    case kSendRarp: return "SEND_RARP";
    case kNetSetMtu: return "NET_SET_MTU";
    case kSetBackendReqFd: return "SET_BACKEND_REQ_FD";
    case kIotlbMsg: return "IOTLB_MSG";
    case kSetVringEndian: return "SET_VRING_ENDIAN";
    case kGetConfig: return "GET_CONFIG";
    case kSetConfig: return "SET_CONFIG";
    case kGetInflightFd: return "GET_INFLIGHT_FD";
    case kSetInflightFd: return "SET_INFLIGHT_FD";
    case kResetDevice: return "RESET_DEVICE";
    case kVringKick: return "VRING_KICK";
    case kGetMaxMemSlots: return "GET_MAX_MEM_SLOTS";
    case kAddMemReg: return "ADD_MEM_REG";
    case kRemMemReg: return "REM_MEM_REG";
    case kSetStatus: return "SET_STATUS";
    case kGetStatus: return "GET_STATUS";
    default: return "unknown request";
  }
}

namespace {

std::string Want(const Message& m, uint32_t size, uint32_t fds_min,
                 uint32_t fds_max) {
  if (m.header.size != size) {
    return absl::StrFormat("%s: payload of %u bytes, expected %u",
                           RequestName(m.request()), m.header.size, size);
  }
  if (m.fds.size() < fds_min || m.fds.size() > fds_max) {
    return absl::StrFormat("%s: %u fds attached, expected %u..%u",
                           RequestName(m.request()), m.fds.size(), fds_min,
                           fds_max);
  }
  return "";
}

}  // namespace

std::string ValidateShape(const Message& m) {
  if ((m.header.flags & kVersionMask) != kVersion) {
    return absl::StrFormat("%s: protocol version %u, expected 1",
                           RequestName(m.request()),
                           m.header.flags & kVersionMask);
  }
  if (m.header.flags & kFlagReply) {
    return absl::StrFormat("%s: front-end sent a reply",
                           RequestName(m.request()));
  }
  if (m.payload.size() != m.header.size) {
    return absl::StrFormat("%s: header says %u bytes, got %u",
                           RequestName(m.request()), m.header.size,
                           m.payload.size());
  }
  switch (m.request()) {
    case kGetFeatures:
    case kSetOwner:
    case kResetOwner:
    case kGetProtocolFeatures:
    case kGetQueueNum:
    case kResetDevice:
    case kGetMaxMemSlots:
    case kGetStatus:
      return Want(m, 0, 0, 0);
    case kSetFeatures:
    case kSetProtocolFeatures:
    case kSetStatus:
      return Want(m, 8, 0, 0);
    case kSetVringNum:
    case kSetVringBase:
    case kGetVringBase:
    case kSetVringEnable:
      return Want(m, sizeof(VringState), 0, 0);
    case kSetVringAddr:
      return Want(m, sizeof(VringAddr), 0, 0);
    case kSetVringKick:
    case kSetVringCall:
    case kSetVringErr: {
      if (m.header.size != 8) return Want(m, 8, 0, 1);
      const uint64_t v = m.As<uint64_t>();
      const uint32_t fds = (v & kVringNoFdMask) ? 0 : 1;
      return Want(m, 8, fds, fds);
    }
    case kSetBackendReqFd:
      return Want(m, 0, 1, 1);
    case kSetLogBase:
      // The fd is required with LOG_SHMFD (the back-end checks); without
      // it the payload was a front-end pointer, meaningless here.
      return Want(m, sizeof(LogDescription), 0, 1);
    case kSetLogFd:
      return Want(m, 0, 1, 1);
    case kSetMemTable: {
      if (m.header.size < kMemTableHeaderSize) {
        return Want(m, kMemTableHeaderSize, 0, 0);
      }
      const uint32_t n = m.As<uint32_t>();
      if (n > kMaxMemTableRegions) {
        return absl::StrFormat("SET_MEM_TABLE: %u regions, at most %u", n,
                               kMaxMemTableRegions);
      }
      // Some front-ends (User-mode Linux) send their whole fixed region
      // array with only the first n in use: accept trailing whole slots.
      const uint32_t used = kMemTableHeaderSize + n * uint32_t{sizeof(MemoryRegion)};
      const uint32_t slack = m.header.size - used;
      if (m.header.size > used && slack % sizeof(MemoryRegion) == 0 &&
          m.header.size <= kMemTableHeaderSize +
                               kMaxMemTableRegions * sizeof(MemoryRegion)) {
        return Want(m, m.header.size, n, n);
      }
      return Want(m, used, n, n);
    }
    case kAddMemReg:
      return Want(m, sizeof(SingleMemoryRegion), 1, 1);
    case kGetInflightFd:
      return Want(m, sizeof(InflightInfo), 0, 0);
    case kSetInflightFd:
      return Want(m, sizeof(InflightInfo), 1, 1);
    case kRemMemReg:
      // QEMU sends no fd; the spec allows one, which is ignored.
      return Want(m, sizeof(SingleMemoryRegion), 0, 1);
    case kGetConfig:
    case kSetConfig: {
      if (m.header.size < sizeof(ConfigHeader)) {
        return Want(m, sizeof(ConfigHeader), 0, 0);
      }
      const auto h = m.As<ConfigHeader>();
      if (h.size > kMaxConfigSize) {
        return absl::StrFormat("%s: %u config bytes, at most %u",
                               RequestName(m.request()), h.size,
                               kMaxConfigSize);
      }
      return Want(m, uint32_t{sizeof(ConfigHeader)} + h.size, 0, 0);
    }
    default:
      return absl::StrFormat("unsupported request %u (%s)", m.request(),
                             RequestName(m.request()));
  }
}

}  // namespace vhost_user
