#include "frontend.h"

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "vhost_user/connection.h"

namespace vhost_user::testing {

int CountOpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

SharedMemory::SharedMemory(uint64_t gpa, uint64_t size)
    : fd_(memfd_create("guest", MFD_CLOEXEC)), gpa_(gpa), size_(size) {
  if (!fd_ || ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) std::abort();
  void* p =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) std::abort();
  base_ = static_cast<uint8_t*>(p);
}

SharedMemory::~SharedMemory() { munmap(base_, size_); }

uint64_t SharedMemory::Alloc(uint64_t size, uint64_t align) {
  next_ = (next_ + align - 1) / align * align;
  if (next_ + size > size_) std::abort();
  const uint64_t gpa = gpa_ + next_;
  next_ += size;
  std::memset(host(gpa), 0, size);
  return gpa;
}

SplitRing::SplitRing(SharedMemory& mem, uint16_t size)
    : mem_(mem), size_(size) {
  desc_ = mem.Alloc(16ull * size, 16);
  avail_ = mem.Alloc(6 + 2ull * size, 2);
  used_ = mem.Alloc(6 + 8ull * size, 4);
}

uint16_t SplitRing::Add(const std::vector<Buf>& bufs) {
  const uint16_t head = next_desc_;
  for (size_t i = 0; i < bufs.size(); ++i) {
    const uint16_t idx = static_cast<uint16_t>((next_desc_ + i) % size_);
    virtio::spec::SplitDesc d{};
    d.addr = bufs[i].gpa;
    d.len = bufs[i].len;
    d.flags = static_cast<uint16_t>(
        (bufs[i].writable ? virtio::spec::kDescFlagWrite : 0) |
        (i + 1 < bufs.size() ? virtio::spec::kDescFlagNext : 0));
    d.next = static_cast<uint16_t>((idx + 1) % size_);
    std::memcpy(mem_.host(desc_ + 16ull * idx), &d, sizeof d);
  }
  next_desc_ = static_cast<uint16_t>((next_desc_ + bufs.size()) % size_);
  auto* ring = reinterpret_cast<uint16_t*>(mem_.host(avail_ + 4));
  ring[avail_idx_ % size_] = head;
  ++avail_idx_;
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(reinterpret_cast<uint16_t*>(mem_.host(avail_ + 2)),
                   avail_idx_, __ATOMIC_RELEASE);
  return head;
}

uint16_t SplitRing::AddLoop(uint64_t gpa, uint32_t len) {
  const uint16_t head = next_desc_;
  const auto second = static_cast<uint16_t>((head + 1) % size_);
  for (const auto& [idx, next] : {std::pair{head, second}, {second, head}}) {
    virtio::spec::SplitDesc d{};
    d.addr = gpa;
    d.len = len;
    d.flags = virtio::spec::kDescFlagNext;
    d.next = next;
    std::memcpy(mem_.host(desc_ + 16ull * idx), &d, sizeof d);
  }
  next_desc_ = static_cast<uint16_t>((head + 2) % size_);
  auto* ring = reinterpret_cast<uint16_t*>(mem_.host(avail_ + 4));
  ring[avail_idx_ % size_] = head;
  ++avail_idx_;
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(reinterpret_cast<uint16_t*>(mem_.host(avail_ + 2)),
                   avail_idx_, __ATOMIC_RELEASE);
  return head;
}

std::optional<std::pair<uint32_t, uint32_t>> SplitRing::Reap() {
  const uint16_t idx = __atomic_load_n(
      reinterpret_cast<uint16_t*>(mem_.host(used_ + 2)), __ATOMIC_ACQUIRE);
  if (idx == last_used_) return std::nullopt;
  uint32_t e[2];
  std::memcpy(e, mem_.host(used_ + 4 + 8ull * (last_used_ % size_)), 8);
  ++last_used_;
  return std::make_pair(e[0], e[1]);
}

bool Frontend::SendRaw(uint32_t request, const void* payload, uint32_t len,
                       const std::vector<int>& fds, uint32_t flags,
                       std::optional<uint32_t> size) {
  Message m;
  m.header = {request, flags, size.value_or(len)};
  m.payload.assign(static_cast<const uint8_t*>(payload),
                   static_cast<const uint8_t*>(payload) + len);
  if (size) {
    // SendMessage sets the size from the payload; write by hand.
    std::vector<uint8_t> all(sizeof m.header + len);
    std::memcpy(all.data(), &m.header, sizeof m.header);
    if (len) std::memcpy(all.data() + sizeof m.header, payload, len);
    return send(sock_.get(), all.data(), all.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(all.size());
  }
  return SendMessage(sock_.get(), m, fds).ok();
}

std::optional<Message> Frontend::Receive() {
  pollfd p{sock_.get(), POLLIN, 0};
  if (poll(&p, 1, 5000) <= 0) return std::nullopt;
  Message m;
  if (recv(sock_.get(), &m.header, sizeof m.header, MSG_WAITALL) !=
      static_cast<ssize_t>(sizeof m.header)) {
    return std::nullopt;
  }
  m.payload.resize(m.header.size);
  if (m.header.size &&
      recv(sock_.get(), m.payload.data(), m.header.size, MSG_WAITALL) !=
          static_cast<ssize_t>(m.header.size)) {
    return std::nullopt;
  }
  return m;
}

std::optional<uint64_t> Frontend::GetU64(uint32_t request) {
  if (!Send(request)) return std::nullopt;
  auto m = Receive();
  if (!m || m->payload.size() != 8 || m->header.request != request) {
    return std::nullopt;
  }
  return m->As<uint64_t>();
}

bool Frontend::PeerClosed(int timeout_ms) {
  pollfd p{sock_.get(), POLLIN, 0};
  while (poll(&p, 1, timeout_ms) > 0) {
    char buf[256];
    const ssize_t n = recv(sock_.get(), buf, sizeof buf, 0);
    if (n <= 0) return true;  // EOF (or reset)
  }
  return false;
}

bool Frontend::SetMemTable(const SharedMemory& mem) {
  struct {
    uint32_t n, pad;
    MemoryRegion r;
  } t{1, 0, mem.region()};
  return Send(kSetMemTable, t, {mem.fd()});
}

bool Frontend::SetupRing(uint16_t q, const SplitRing& ring, UniqueFd& kick,
                         UniqueFd& call, bool enable) {
  kick.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  VringAddr a{q, 0, ring.desc_uaddr(), ring.used_uaddr(), ring.avail_uaddr(),
              0};
  return Send(kSetVringNum, VringState{q, ring.size()}) &&
         Send(kSetVringBase, VringState{q, 0}) && Send(kSetVringAddr, a) &&
         Send(kSetVringCall, uint64_t{q}, {call.get()}) &&
         Send(kSetVringKick, uint64_t{q}, {kick.get()}) &&
         (!enable || Send(kSetVringEnable, VringState{q, 1}));
}

bool WaitEvent(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  uint64_t v;
  return read(fd, &v, sizeof v) == sizeof v;
}

}  // namespace vhost_user::testing
