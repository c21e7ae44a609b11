// TapNet: opening / creating the TAP interface and the ioctls that
// configure it (see virtio/backends/tap_net.h).
#include "virtio/backends/tap_net.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "virtio/spec.h"

namespace virtio {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(errno),
                      absl::StrFormat("tap: %s: %s", what, std::strerror(errno)));
}

unsigned TunFlags(uint64_t guest_offloads) {
  auto on = [&](unsigned bit) { return (guest_offloads & spec::Bit(bit)) != 0; };
  unsigned f = 0;
  if (on(net::kFeatureGuestCsum)) {
    f |= TUN_F_CSUM;
    if (on(net::kFeatureGuestTso4)) f |= TUN_F_TSO4;
    if (on(net::kFeatureGuestTso6)) f |= TUN_F_TSO6;
    if (on(net::kFeatureGuestEcn)) f |= TUN_F_TSO_ECN;
    if (on(net::kFeatureGuestUfo)) f |= TUN_F_UFO;
  }
  return f;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TapNet>> TapNet::Open(const TapNetOptions& options) {
  const uint16_t n = options.fds.empty() ? options.num_pairs
                                         : static_cast<uint16_t>(options.fds.size());
  if (n == 0) return absl::InvalidArgumentError("tap: num_pairs must be >= 1");
  if (options.name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tap: name '%s' longer than %d", options.name, IFNAMSIZ - 1));
  }
  std::unique_ptr<TapNet> tap(new TapNet());
  tap->multi_queue_ = n > 1;
  for (uint16_t i = 0; i < n; ++i) {
    int fd;
    if (!options.fds.empty()) {
      fd = options.fds[i];
      // Take ownership at once, so an error below still closes it.
      tap->pairs_.push_back(std::make_unique<Pair>(fd));
      const int fl = fcntl(fd, F_GETFL);
      if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return Errno("fcntl(O_NONBLOCK)");
      }
      ifreq ifr{};
      if (ioctl(fd, TUNGETIFF, &ifr) < 0) return Errno("TUNGETIFF");
      if (!(ifr.ifr_flags & IFF_VNET_HDR)) {
        return absl::InvalidArgumentError("tap: passed fd lacks IFF_VNET_HDR");
      }
      tap->name_ = ifr.ifr_name;
    } else {
      fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) return Errno("open /dev/net/tun");
      tap->pairs_.push_back(std::make_unique<Pair>(fd));
      unsigned features = 0;
      if (ioctl(fd, TUNGETFEATURES, &features) < 0) return Errno("TUNGETFEATURES");
      if (!(features & IFF_VNET_HDR) ||
          (tap->multi_queue_ && !(features & IFF_MULTI_QUEUE))) {
        return absl::UnimplementedError(
            "tap: kernel lacks IFF_VNET_HDR or IFF_MULTI_QUEUE");
      }
      ifreq ifr{};
      ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                                         (tap->multi_queue_ ? IFF_MULTI_QUEUE : 0));
      const std::string& name = i == 0 ? options.name : tap->name_;
      std::memcpy(ifr.ifr_name, name.data(), name.size());
      if (ioctl(fd, TUNSETIFF, &ifr) < 0) return Errno("TUNSETIFF " + name);
      tap->name_ = ifr.ifr_name;
    }
    int hdr = net::kHeaderSize;
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) return Errno("TUNSETVNETHDRSZ");
  }
  tap->attached_.assign(n, true);
  const int fd0 = tap->pairs_[0]->fd();
  // Which guest offloads the kernel can produce: probe, then turn off.
  tap->offloads_ = net::kHostOffloadFeatures;
  const uint64_t base = spec::Bit(net::kFeatureGuestCsum) |
                        spec::Bit(net::kFeatureGuestTso4) |
                        spec::Bit(net::kFeatureGuestTso6) |
                        spec::Bit(net::kFeatureGuestEcn);
  if (ioctl(fd0, TUNSETOFFLOAD, TunFlags(base)) == 0) {
    tap->offloads_ |= base;
    if (ioctl(fd0, TUNSETOFFLOAD, TunFlags(base | spec::Bit(net::kFeatureGuestUfo))) == 0) {
      tap->offloads_ |= spec::Bit(net::kFeatureGuestUfo);
    }
  } else if (ioctl(fd0, TUNSETOFFLOAD, TUN_F_CSUM) == 0) {
    tap->offloads_ |= spec::Bit(net::kFeatureGuestCsum);
  }
  if (ioctl(fd0, TUNSETOFFLOAD, 0u) < 0) return Errno("TUNSETOFFLOAD 0");
  return tap;
}

bool TapNet::SetOffloads(uint64_t guest_offloads) {
  return ioctl(pairs_[0]->fd(), TUNSETOFFLOAD, TunFlags(guest_offloads)) == 0;
}

bool TapNet::SetActivePairs(uint16_t n) {
  if (n == 0 || n > pairs_.size()) return false;
  if (!multi_queue_) return true;
  bool ok = true;
  for (uint16_t i = 0; i < pairs_.size(); ++i) {
    const bool want = i < n;
    if (attached_[i] == want) continue;
    ifreq ifr{};
    ifr.ifr_flags = static_cast<short>(want ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE);
    if (ioctl(pairs_[i]->fd(), TUNSETQUEUE, &ifr) == 0) {
      attached_[i] = want;
    } else {
      ok = false;
    }
  }
  return ok;
}

}  // namespace virtio
