// A minimal in-process vhost-user front-end for tests: memfd guest memory
// shared by fd, raw message I/O (so tests can also send malformed
// messages), and a split-ring driver whose rings live in that memory.
#ifndef VHOST_USER_TESTS_FRONTEND_H_
#define VHOST_USER_TESTS_FRONTEND_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vhost_user/message.h"
#include "vhost_user/unique_fd.h"
#include "virtio/spec.h"

namespace vhost_user::testing {

// Open fds of this process.
int CountOpenFds();

// Guest memory: one memfd of `size` bytes at guest-physical `gpa`.
class SharedMemory {
 public:
  SharedMemory(uint64_t gpa, uint64_t size);
  ~SharedMemory();
  int fd() const { return fd_.get(); }
  uint64_t gpa() const { return gpa_; }
  uint64_t size() const { return size_; }
  uint8_t* host(uint64_t gpa) const { return base_ + (gpa - gpa_); }
  uint64_t uaddr(uint64_t gpa) const {
    return reinterpret_cast<uint64_t>(host(gpa));
  }
  uint64_t Alloc(uint64_t size, uint64_t align = 16);
  MemoryRegion region() const {
    return {gpa_, size_, reinterpret_cast<uint64_t>(base_), 0};
  }

 private:
  UniqueFd fd_;
  uint64_t gpa_, size_;
  uint8_t* base_;
  uint64_t next_ = 0;
};

struct Buf {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

// Driver side of one split ring in SharedMemory.
class SplitRing {
 public:
  SplitRing(SharedMemory& mem, uint16_t size);
  uint16_t size() const { return size_; }
  uint64_t desc_uaddr() const { return mem_.uaddr(desc_); }
  uint64_t avail_uaddr() const { return mem_.uaddr(avail_); }
  uint64_t used_uaddr() const { return mem_.uaddr(used_); }
  // Adds and publishes a chain; returns its head.
  uint16_t Add(const std::vector<Buf>& bufs);
  // Adds and publishes a chain of two descriptors whose `next` fields point
  // at each other: a loop, which breaks the ring (RingError::kChainTooLong).
  uint16_t AddLoop(uint64_t gpa, uint32_t len);
  // Next used element (id, len), if any.
  std::optional<std::pair<uint32_t, uint32_t>> Reap();

 private:
  SharedMemory& mem_;
  uint16_t size_;
  uint64_t desc_, avail_, used_;
  uint16_t next_desc_ = 0, avail_idx_ = 0, last_used_ = 0;
};

class Frontend {
 public:
  explicit Frontend(UniqueFd sock) : sock_(std::move(sock)) {}
  int fd() const { return sock_.get(); }
  void Close() { sock_.reset(); }

  // Sends a raw message (header.size = payload size unless `size` given).
  bool SendRaw(uint32_t request, const void* payload, uint32_t len,
               const std::vector<int>& fds = {}, uint32_t flags = kVersion,
               std::optional<uint32_t> size = std::nullopt);
  template <typename T>
  bool Send(uint32_t request, const T& v, const std::vector<int>& fds = {},
            uint32_t flags = kVersion) {
    return SendRaw(request, &v, sizeof v, fds, flags);
  }
  bool Send(uint32_t request) { return SendRaw(request, nullptr, 0); }
  // Receives a reply (nullopt on EOF / error / 5 s timeout).
  std::optional<Message> Receive();
  std::optional<uint64_t> GetU64(uint32_t request);
  // True once the back-end has closed the connection.
  bool PeerClosed(int timeout_ms = 5000);

  // The usual bring-up of queue `q` on `ring`: NUM, BASE, ADDR, CALL, KICK,
  // ENABLE. Returns the kick and call eventfds (owned by the caller).
  bool SetupRing(uint16_t q, const SplitRing& ring, UniqueFd& kick,
                 UniqueFd& call, bool enable = true);
  bool SetMemTable(const SharedMemory& mem);

 private:
  UniqueFd sock_;
};

// Waits up to 5 s for an eventfd to be signalled; consumes the count.
bool WaitEvent(int fd, int timeout_ms = 5000);

}  // namespace vhost_user::testing

#endif  // VHOST_USER_TESTS_FRONTEND_H_
