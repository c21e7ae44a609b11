// vhost_user/frontend/blk_client.h — a vhost-user-blk front-end: connects to
// any vhost-user-blk back-end (our vhost-user-device, qemu-storage-daemon,
// SPDK, ...) and submits block requests to it directly from this process,
// with no VM in between. The counterpart of libblkio's
// virtio-blk-vhost-user driver.
//
// Setup (BlkClient::Connect) negotiates features and protocol features
// (REPLY_ACK, CONFIG, MQ as the back-end offers them), shares one memfd
// with the back-end (SET_MEM_TABLE), reads the virtio-blk config space and
// starts `num_queues` split or packed rings, each with its own kick and
// call eventfd. The memfd holds the rings, a small per-request area
// (request header, status byte, indirect table) and an arena for I/O
// buffers: every data buffer must come from AllocBuffer() (or lie
// elsewhere in that region), since the back-end sees nothing else.
//
// Data path, per queue:
//
//   void* buf = client->AllocBuffer(4096);
//   client->Read(q, /*sector=*/8, buf, 4096, /*user_data=*/1);  // queued
//   client->Write(q, 16, buf, 4096, 2);
//   BlkCompletion done[32];
//   auto n = client->Wait(q, done, /*min=*/2, /*timeout_ms=*/1000);
//   // n: completions; done[i].user_data, done[i].result
//
// Requests are queued by Read/Write/...; Kick() (also done by Poll and
// Wait) makes them visible to the back-end and notifies it if it asked to
// be. Poll() harvests completions without blocking (with call interrupts
// suppressed, so a back-end never signals a polling client); Wait() sleeps
// on the call eventfd. Up to queue_size requests can be in flight per
// queue with Indirect::kAlways and a back-end that offers indirect
// descriptors (a direct request takes 2 + segments descriptors; see
// BlkClientOptions::indirect). Nothing on the
// data path allocates or locks; a full queue answers ResourceExhausted (with no
// message, no allocation). A queue is used by one thread at a time; different
// queues may be used by different threads concurrently.
//
// The back-end is not trusted: used IDs, indices and lengths are validated
// and each status byte is read once. A request the back-end answers
// nonsensically (unknown status, length beyond the buffers) completes with
// BlkResult::kBadReply; a ring the back-end corrupts (unknown or duplicate
// ID, index running ahead) stops: Poll/Wait return DataLoss and the queue
// refuses new requests. Control-plane replies are checked the same way
// (vhost_user_client.h).
#ifndef VHOST_USER_FRONTEND_BLK_CLIENT_H_
#define VHOST_USER_FRONTEND_BLK_CLIENT_H_

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vhost_user/frontend/packed_driver_ring.h"
#include "vhost_user/frontend/shared_memory.h"
#include "vhost_user/frontend/split_driver_ring.h"
#include "vhost_user/frontend/vhost_user_client.h"
#include "vhost_user/unique_fd.h"
#include "virtio/blk_spec.h"

namespace vhost_user {

// How BlkClient::Connect() sets up the connection and its queues.
struct BlkClientOptions {
  // The back-end's Unix socket.
  std::string socket_path;
  // Queues to start; 0 = all the back-end has.
  uint16_t num_queues = 1;
  // Ring size (split: a power of two), at most 32768.
  uint16_t queue_size = 256;
  // Use packed rings (the back-end must offer VIRTIO_F_RING_PACKED).
  bool packed = false;
  // Negotiate VIRTIO_F_EVENT_IDX if offered (fewer kicks and calls).
  bool event_idx = true;
  // When to put a request's descriptors in an indirect table (needs
  // VIRTIO_F_INDIRECT_DESC; otherwise always direct). Direct chains save
  // the back-end a table fetch; kAlways lets queue_size requests be in
  // flight (kWhenFull: about queue_size / 3 single-buffer requests, then
  // one more per free slot).
  enum class Indirect : uint8_t {
    kNever,
    kWhenFull,  // only when the direct chain does not fit the ring
    kAlways
  };
  Indirect indirect = Indirect::kWhenFull;
  // Most data buffers in one request (capped by the back-end's seg_max).
  uint32_t max_segments = 16;
  // Bytes of shared memory for AllocBuffer().
  uint64_t buffer_memory = uint64_t{16} << 20;
  // Control-plane reply timeout.
  int timeout_ms = 10000;
};

// How a request ended.
enum class BlkResult : uint8_t {
  kOk = 0,           // VIRTIO_BLK_S_OK
  kIoError = 1,      // VIRTIO_BLK_S_IOERR
  kUnsupported = 2,  // VIRTIO_BLK_S_UNSUPP
  kBadReply = 255,   // the back-end wrote no valid status, or a used
                     // length larger than the request's writable bytes
};

// One finished request.
struct BlkCompletion {
  uint64_t user_data = 0;  // as given at submission
  uint32_t len = 0;        // used length the back-end reported
  BlkResult result = BlkResult::kBadReply;
};

// A vhost-user-blk front-end (see the top of this file). Setup is
// single-threaded; after it, each queue may be used by its own thread.
class BlkClient {
 public:
  // Connects and starts the queues (see the file comment).
  static absl::StatusOr<std::unique_ptr<BlkClient>> Connect(
      const BlkClientOptions& options);
  ~BlkClient();
  BlkClient(const BlkClient&) = delete;
  BlkClient& operator=(const BlkClient&) = delete;

  // --- What was negotiated ---
  // The back-end's config space (fields of features not offered are 0).
  const virtio::blk::Config& config() const { return config_; }
  uint64_t capacity_sectors() const { return config_.capacity; }
  uint64_t features() const { return features_; }
  uint64_t protocol_features() const { return client_->protocol_features(); }
  bool has_feature(unsigned bit) const {
    return (features_ & (uint64_t{1} << bit)) != 0;
  }
  bool read_only() const { return has_feature(virtio::blk::kFeatureRo); }
  uint16_t num_queues() const { return num_queues_; }
  uint16_t queue_size() const { return queue_size_; }
  bool packed() const { return packed_; }
  // Most data buffers one request may have.
  uint32_t max_segments() const { return max_segments_; }

  // --- I/O buffers in the shared region (thread-safe; not per request) ---
  // nullptr when the arena has no room. `align` is a power of two.
  void* AllocBuffer(uint64_t len, uint64_t align = 4096);
  void FreeBuffer(void* p);
  // True if [p, p + len) is visible to the back-end.
  bool IsShared(const void* p, uint64_t len) const {
    return mem_->Contains(p, len);
  }

  // --- Requests on queue q ---
  // Errors: InvalidArgument (bad queue, buffer outside the shared region,
  // too many segments), ResourceExhausted (queue full; no message),
  // FailedPrecondition (the back-end broke this queue).
  absl::Status Read(uint16_t q, uint64_t sector, void* buf, uint32_t len,
                    uint64_t user_data);
  absl::Status Write(uint16_t q, uint64_t sector, const void* buf, uint32_t len,
                     uint64_t user_data);
  absl::Status Readv(uint16_t q, uint64_t sector, const iovec* iov, int iovcnt,
                     uint64_t user_data);
  absl::Status Writev(uint16_t q, uint64_t sector, const iovec* iov, int iovcnt,
                      uint64_t user_data);
  absl::Status Flush(uint16_t q, uint64_t user_data);
  absl::Status Discard(uint16_t q, uint64_t sector, uint32_t num_sectors,
                       uint64_t user_data);
  absl::Status WriteZeroes(uint16_t q, uint64_t sector, uint32_t num_sectors,
                           bool unmap, uint64_t user_data);

  // Requests queued or submitted on `q` and not yet harvested.
  uint32_t inflight(uint16_t q) const { return queues_[q].inflight; }

  // Makes queued requests visible and notifies the back-end if it wants.
  absl::Status Kick(uint16_t q);
  // Kicks, then harvests up to out.size() completions without blocking.
  // Returns how many, or DataLoss once the back-end broke the ring.
  absl::StatusOr<size_t> Poll(uint16_t q, absl::Span<BlkCompletion> out);
  // As Poll, but sleeps on the call eventfd until at least `min` (capped
  // at out.size()) completions arrived or `timeout_ms` passed (-1: no
  // limit). Returns how many arrived: fewer than `min` means timeout.
  absl::StatusOr<size_t> Wait(uint16_t q, absl::Span<BlkCompletion> out,
                              size_t min, int timeout_ms);

 private:
  // Per-request area in shared memory, one per ring ID.
  struct SlotMem {
    virtio::blk::RequestHeader header;
    virtio::blk::DiscardWriteZeroes segment;
    uint8_t status;
    uint8_t pad[31];
    // Followed by the indirect table (max_segments + 2 descriptors).
  };
  static_assert(sizeof(SlotMem) == 64);
  // Private per-ID state.
  struct Slot {
    uint64_t user_data;
    uint32_t writable;  // bytes the back-end may write (data + status)
  };
  struct alignas(64) Queue {
    SplitDriverRing split;
    PackedDriverRing packed;
    UniqueFd kick, call;
    uint8_t* slot_mem = nullptr;
    std::unique_ptr<Slot[]> slots;
    uint32_t inflight = 0;
    bool pending = false;  // added since the last Kick()
  };

  BlkClient() = default;
  absl::Status Setup(const BlkClientOptions& o);
  absl::Status StartQueue(uint16_t q);
  absl::Status Submit(uint16_t q, uint32_t type, uint64_t sector,
                      const iovec* iov, int iovcnt, bool data_in,
                      const virtio::blk::DiscardWriteZeroes* segment,
                      uint64_t user_data);
  SlotMem* slot_mem(const Queue& qu, uint16_t id) const {
    return reinterpret_cast<SlotMem*>(qu.slot_mem + slot_stride_ * id);
  }
  absl::Status BrokenStatus(const Queue& qu) const;

  std::unique_ptr<VhostUserClient> client_;
  std::unique_ptr<SharedMemory> mem_;
  std::unique_ptr<Queue[]> queues_;
  uint16_t num_queues_ = 0;
  virtio::blk::Config config_{};
  uint64_t features_ = 0;
  uint16_t queue_size_ = 0;
  bool packed_ = false;
  bool event_idx_ = false;
  bool indirect_ = false;
  bool indirect_always_ = false;
  uint32_t max_segments_ = 0;
  uint64_t slot_stride_ = 0;
};

}  // namespace vhost_user

#endif  // VHOST_USER_FRONTEND_BLK_CLIENT_H_
