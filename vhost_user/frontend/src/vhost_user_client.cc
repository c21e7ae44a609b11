#include "vhost_user/frontend/vhost_user_client.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace vhost_user {
namespace {

absl::Span<const uint8_t> NoPayload() { return {}; }

template <typename T>
absl::Span<const uint8_t> Bytes(const T& v) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v),
                                   sizeof v);
}

absl::Status Annotate(uint32_t request, const absl::Status& s) {
  return absl::Status(
      s.code(), absl::StrFormat("%s: %s", RequestName(request), s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<VhostUserClient>> VhostUserClient::Connect(
    const std::string& path, int timeout_ms) {
  auto fd = vhost_user::Connect(path);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<VhostUserClient>(
      new VhostUserClient(*std::move(fd), timeout_ms));
}

absl::StatusOr<Message> VhostUserClient::ReceiveReply(uint32_t request) {
  auto m = conn_.Receive();
  if (!m.ok()) {
    if (IsPeerClosed(m.status())) {
      return absl::UnavailableError(absl::StrFormat(
          "%s: back-end closed the connection", RequestName(request)));
    }
    return Annotate(request, m.status());
  }
  // The back-end sends no fds in replies to what we ask (only
  // GET_INFLIGHT_FD would, which we never send); they are closed with `m`.
  if (m->header.request != request) {
    return absl::DataLossError(
        absl::StrFormat("%s: back-end replied to request %u",
                        RequestName(request), m->header.request));
  }
  if ((m->header.flags & kVersionMask) != kVersion ||
      !(m->header.flags & kFlagReply)) {
    return absl::DataLossError(absl::StrFormat(
        "%s: reply has flags 0x%x", RequestName(request), m->header.flags));
  }
  return m;
}

absl::Status VhostUserClient::Request(uint32_t request,
                                      absl::Span<const uint8_t> payload,
                                      absl::Span<const int> fds) {
  const bool ack = (protocol_features_ & Bit(kProtocolReplyAck)) != 0;
  Message m;
  m.header = {request, kVersion | (ack ? kFlagNeedReply : 0u), 0};
  m.payload.assign(payload.begin(), payload.end());
  m.header.size = static_cast<uint32_t>(m.payload.size());
  if (absl::Status s = conn_.Send(m, fds); !s.ok()) {
    return Annotate(request, s);
  }
  if (!ack) return absl::OkStatus();
  auto r = ReceiveReply(request);
  if (!r.ok()) return r.status();
  if (r->payload.size() != 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: REPLY_ACK of %u bytes", RequestName(request), r->payload.size()));
  }
  if (const uint64_t v = r->As<uint64_t>(); v != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: back-end refused (0x%x)", RequestName(request), v));
  }
  return absl::OkStatus();
}

absl::StatusOr<Message> VhostUserClient::Call(uint32_t request,
                                              absl::Span<const uint8_t> payload,
                                              uint32_t expected_size) {
  Message m;
  m.header = {request, kVersion, static_cast<uint32_t>(payload.size())};
  m.payload.assign(payload.begin(), payload.end());
  if (absl::Status s = conn_.Send(m); !s.ok()) return Annotate(request, s);
  auto r = ReceiveReply(request);
  if (!r.ok()) return r.status();
  if (r->payload.size() != expected_size) {
    return absl::DataLossError(absl::StrFormat(
        "%s: reply of %u bytes, expected %u", RequestName(request),
        r->payload.size(), expected_size));
  }
  return r;
}

absl::StatusOr<uint64_t> VhostUserClient::GetFeatures() {
  auto r = Call(kGetFeatures, NoPayload(), 8);
  if (!r.ok()) return r.status();
  return r->As<uint64_t>();
}

absl::Status VhostUserClient::SetFeatures(uint64_t features) {
  return RequestValue(kSetFeatures, features);
}

absl::StatusOr<uint64_t> VhostUserClient::GetProtocolFeatures() {
  auto r = Call(kGetProtocolFeatures, NoPayload(), 8);
  if (!r.ok()) return r.status();
  return r->As<uint64_t>();
}

absl::Status VhostUserClient::SetProtocolFeatures(uint64_t features) {
  // Sent without NEED_REPLY: REPLY_ACK is not in force before this lands.
  absl::Status s = RequestValue(kSetProtocolFeatures, features);
  if (s.ok()) protocol_features_ = features;
  return s;
}

absl::Status VhostUserClient::SetOwner() { return Request(kSetOwner, {}); }

absl::StatusOr<uint64_t> VhostUserClient::GetQueueNum() {
  auto r = Call(kGetQueueNum, NoPayload(), 8);
  if (!r.ok()) return r.status();
  return r->As<uint64_t>();
}

absl::Status VhostUserClient::GetConfig(uint32_t offset,
                                        absl::Span<uint8_t> out) {
  if (out.size() > kMaxConfigSize) {
    return absl::InvalidArgumentError("GET_CONFIG: more than 256 bytes");
  }
  const ConfigHeader h{offset, static_cast<uint32_t>(out.size()), 0};
  std::vector<uint8_t> p(sizeof h + out.size(), 0);
  std::memcpy(p.data(), &h, sizeof h);
  auto r = Call(kGetConfig, p, static_cast<uint32_t>(p.size()));
  if (!r.ok()) return r.status();
  const auto rh = r->As<ConfigHeader>();
  if (rh.offset != offset || rh.size != out.size()) {
    return absl::DataLossError(
        absl::StrFormat("GET_CONFIG: reply for %u bytes at %u, asked %u at %u",
                        rh.size, rh.offset, out.size(), offset));
  }
  std::memcpy(out.data(), r->payload.data() + sizeof h, out.size());
  return absl::OkStatus();
}

absl::Status VhostUserClient::SetMemTable(const MemoryRegion& region, int fd) {
  struct {
    uint32_t n, padding;
    MemoryRegion r;
  } t{1, 0, region};
  static_assert(sizeof t == kMemTableHeaderSize + sizeof(MemoryRegion));
  const int fds[1] = {fd};
  return Request(kSetMemTable, Bytes(t), fds);
}

absl::Status VhostUserClient::SetVringNum(uint32_t index, uint32_t num) {
  return RequestValue(kSetVringNum, VringState{index, num});
}

absl::Status VhostUserClient::SetVringBase(uint32_t index, uint32_t base) {
  return RequestValue(kSetVringBase, VringState{index, base});
}

absl::Status VhostUserClient::SetVringAddr(const VringAddr& addr) {
  return RequestValue(kSetVringAddr, addr);
}

absl::Status VhostUserClient::SetVringKick(uint32_t index, int fd) {
  const int fds[1] = {fd};
  return RequestValue(kSetVringKick, uint64_t{index}, fds);
}

absl::Status VhostUserClient::SetVringCall(uint32_t index, int fd) {
  const int fds[1] = {fd};
  return RequestValue(kSetVringCall, uint64_t{index}, fds);
}

absl::Status VhostUserClient::SetVringEnable(uint32_t index, bool enable) {
  return RequestValue(kSetVringEnable, VringState{index, enable ? 1u : 0u});
}

absl::StatusOr<uint32_t> VhostUserClient::GetVringBase(uint32_t index) {
  auto r = Call(kGetVringBase, Bytes(VringState{index, 0}), sizeof(VringState));
  if (!r.ok()) return r.status();
  const auto st = r->As<VringState>();
  if (st.index != index) {
    return absl::DataLossError(absl::StrFormat(
        "GET_VRING_BASE: reply for queue %u, asked %u", st.index, index));
  }
  return st.num;
}

}  // namespace vhost_user
