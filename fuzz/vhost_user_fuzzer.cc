// Feeds arbitrary vhost-user message streams, with real fds (memfds holding
// fuzzer-chosen guest memory, eventfds), into the back-end protocol handler
// serving a virtio-rng or a RAM-disk virtio-blk device, and kicks every
// running queue after each message so rings built from fuzzed addresses
// and memory are parsed too (with LOG_SHMFD / LOG_ALL negotiated, a memfd
// sent with SET_LOG_BASE becomes the dirty log those kicks mark). Checks
// that nothing crashes, that every fd and mapping (guest memory, the dirty
// log) is released at disconnect, and that the device is reset.
//
// Input: byte 0 picks the device; then messages, each
//   u32 request (taken modulo 48), u8 flags, u8 fd kinds (bits 0-3: count
//   0..9, bit 4: eventfds instead of memfds), u16 payload length, payload.
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "device_spec.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"
#include "virtio/log.h"

namespace {

using vhost_user::Message;
using vhost_user::UniqueFd;

constexpr size_t kMemfdSize = 64 * 1024;

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

struct Reader {
  const uint8_t* p;
  size_t n;
  bool Take(void* out, size_t len) {
    if (len > n) return false;
    std::memcpy(out, p, len);
    p += len;
    n -= len;
    return true;
  }
};

std::unique_ptr<vhost_user::VhostDevice> MakeDev(uint8_t which) {
  auto spec = vhost_user::ParseDeviceSpec(
      which & 1 ? "blk,backend=ram,size=64K,num-queues=2,queue-size=64"
                : "rng,queue-size=64");
  auto dev = vhost_user::MakeDevice(*spec);
  if (!dev.ok()) std::abort();
  return *std::move(dev);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  virtio::SetLogSink([](virtio::LogLevel, std::string_view) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static std::unique_ptr<vhost_user::VhostDevice> devs[2] = {MakeDev(0),
                                                             MakeDev(1)};
  vhost_user::VhostDevice& dev = *devs[data[0] & 1];
  Reader in{data + 1, size - 1};
  const int fds_before = CountFds();
  {
    vhost_user::Backend backend(dev);
    for (int count = 0; count < 64; ++count) {
      uint32_t request;
      uint8_t flags, fdspec;
      uint16_t len;
      if (!in.Take(&request, 4) || !in.Take(&flags, 1) ||
          !in.Take(&fdspec, 1) || !in.Take(&len, 2)) {
        break;
      }
      Message m;
      m.header.request = request % 48;
      m.header.flags = flags & 0xf;
      m.header.size = len;
      const size_t avail = len < in.n ? len : in.n;
      m.payload.assign(in.p, in.p + avail);
      in.p += avail;
      in.n -= avail;
      if (flags & 0x80) m.header.size = static_cast<uint32_t>(m.payload.size());
      const int nfds = (fdspec & 0xf) % 10;
      for (int i = 0; i < nfds; ++i) {
        if (fdspec & 0x10) {
          m.fds.emplace_back(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        } else {
          UniqueFd fd(memfd_create("fuzz-guest", MFD_CLOEXEC));
          if (ftruncate(fd.get(), kMemfdSize) != 0) std::abort();
          // Guest memory contents: the rest of the input, repeated.
          if (in.n > 0) {
            const size_t chunk = in.n < 4096 ? in.n : 4096;
            for (size_t off = 0; off < kMemfdSize; off += chunk) {
              [[maybe_unused]] ssize_t w =
                  pwrite(fd.get(), in.p, chunk, static_cast<off_t>(off));
            }
          }
          m.fds.push_back(std::move(fd));
        }
      }
      std::optional<Message> reply;
      if (!backend.Handle(std::move(m), &reply).ok()) break;
      for (uint16_t q = 0; q < dev.num_queues(); ++q) {
        if (dev.queue_running(q)) {
          dev.Kick(q);
          dev.Complete(q);
        }
      }
    }
    backend.Disconnect();
    // SET_LOG_BASE's mapping goes with the connection.
    if (backend.dirty_log().mapped()) std::abort();
  }
  if (dev.status() != 0 || dev.memory().num_regions() != 0) std::abort();
  if (CountFds() != fds_before) std::abort();
  return 0;
}
