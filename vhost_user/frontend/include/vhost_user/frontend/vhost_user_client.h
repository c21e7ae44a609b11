// vhost_user/frontend/vhost_user_client.h — the front-end's side of the
// vhost-user control channel, for any device type.
//
// One request at a time, blocking: the message goes out with its fds; a
// request that has a reply (GET_*) waits for it; any other request waits
// for a REPLY_ACK once that protocol feature is negotiated, so a refusal
// surfaces at the request that caused it. Every reply is checked (request
// code, reply flag, version, payload size) before use: a back-end that
// answers garbage or stalls past the timeout fails the call, it cannot
// crash the front-end.
//
//   auto c = vhost_user::VhostUserClient::Connect("/run/disk.sock", 10000);
//   auto features = (*c)->GetFeatures();
//   ...
#ifndef VHOST_USER_FRONTEND_VHOST_USER_CLIENT_H_
#define VHOST_USER_FRONTEND_VHOST_USER_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vhost_user/connection.h"
#include "vhost_user/message.h"

namespace vhost_user {

// The front-end's end of one vhost-user control connection (see the top
// of this file); one caller at a time.
class VhostUserClient {
 public:
  // Connects to a back-end listening at `path`. Replies slower than
  // `timeout_ms` are errors.
  static absl::StatusOr<std::unique_ptr<VhostUserClient>> Connect(
      const std::string& path, int timeout_ms);

  int fd() const { return conn_.fd(); }
  // Protocol features in force (after SetProtocolFeatures()).
  uint64_t protocol_features() const { return protocol_features_; }
  bool has_protocol(unsigned bit) const {
    return (protocol_features_ & Bit(bit)) != 0;
  }

  absl::StatusOr<uint64_t> GetFeatures();
  absl::Status SetFeatures(uint64_t features);
  absl::StatusOr<uint64_t> GetProtocolFeatures();
  // Also turns on REPLY_ACK handling if `features` has it.
  absl::Status SetProtocolFeatures(uint64_t features);
  absl::Status SetOwner();
  absl::StatusOr<uint64_t> GetQueueNum();
  // Reads `out.size()` (<= kMaxConfigSize) config bytes at `offset`.
  absl::Status GetConfig(uint32_t offset, absl::Span<uint8_t> out);
  // One region backed by `fd`.
  absl::Status SetMemTable(const MemoryRegion& region, int fd);
  absl::Status SetVringNum(uint32_t index, uint32_t num);
  absl::Status SetVringBase(uint32_t index, uint32_t base);
  absl::Status SetVringAddr(const VringAddr& addr);
  absl::Status SetVringKick(uint32_t index, int fd);
  absl::Status SetVringCall(uint32_t index, int fd);
  absl::Status SetVringEnable(uint32_t index, bool enable);
  absl::StatusOr<uint32_t> GetVringBase(uint32_t index);

 private:
  explicit VhostUserClient(UniqueFd fd, int timeout_ms)
      : conn_(std::move(fd), timeout_ms) {}

  // Sends `request` with `payload` and `fds`; waits for the REPLY_ACK if
  // negotiated.
  absl::Status Request(uint32_t request, absl::Span<const uint8_t> payload,
                       absl::Span<const int> fds = {});
  template <typename T>
  absl::Status RequestValue(uint32_t request, const T& v,
                            absl::Span<const int> fds = {}) {
    return Request(request,
                   absl::Span<const uint8_t>(
                       reinterpret_cast<const uint8_t*>(&v), sizeof v),
                   fds);
  }
  // Sends `request` and returns its reply's payload, which must be
  // `expected_size` bytes.
  absl::StatusOr<Message> Call(uint32_t request,
                               absl::Span<const uint8_t> payload,
                               uint32_t expected_size);
  absl::StatusOr<Message> ReceiveReply(uint32_t request);

  Connection conn_;
  uint64_t protocol_features_ = 0;
};

}  // namespace vhost_user

#endif  // VHOST_USER_FRONTEND_VHOST_USER_CLIENT_H_
