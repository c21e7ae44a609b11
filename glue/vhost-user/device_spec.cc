#include "device_spec.h"

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "device_adapter.h"
#include "interrupt.h"
#include "virtio/backends/null_disk.h"
#include "virtio/backends/ram_disk.h"
#include "virtio/backends/uring_disk.h"
#include "virtio/blk_device.h"
#include "virtio/rng_device.h"

namespace vhost_user {
namespace {

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

class Props {
 public:
  explicit Props(const DeviceSpec& s) : s_(s) {}

  absl::StatusOr<std::string> Str(const std::string& key,
                                  const std::string& def) {
    used_.insert(key);
    auto it = s_.props.find(key);
    return it == s_.props.end() ? def : it->second;
  }
  absl::StatusOr<bool> Bool(const std::string& key, bool def) {
    used_.insert(key);
    auto it = s_.props.find(key);
    if (it == s_.props.end()) return def;
    const std::string& v = it->second;
    if (v == "on" || v == "true" || v == "yes" || v == "1") return true;
    if (v == "off" || v == "false" || v == "no" || v == "0") return false;
    return Bad(absl::StrFormat("%s: '%s=%s' is not on/off", s_.type, key, v));
  }
  // A size with an optional K/M/G/T suffix (powers of 1024).
  absl::StatusOr<uint64_t> Size(const std::string& key, uint64_t def,
                                uint64_t max) {
    used_.insert(key);
    auto it = s_.props.find(key);
    if (it == s_.props.end()) return def;
    std::string v = it->second;
    uint64_t mult = 1;
    if (!v.empty()) {
      switch (v.back()) {
        case 'k': case 'K': mult = 1ull << 10; break;
        case 'm': case 'M': mult = 1ull << 20; break;
        case 'g': case 'G': mult = 1ull << 30; break;
        case 't': case 'T': mult = 1ull << 40; break;
        default: break;
      }
      if (mult != 1) v.pop_back();
    }
    uint64_t n;
    if (!absl::SimpleAtoi(v, &n) || n > max / mult) {
      return Bad(absl::StrFormat("%s: '%s=%s' is not a number in 0..%u",
                                 s_.type, key, it->second, max));
    }
    return n * mult;
  }
  absl::Status CheckAllUsed() const {
    for (const auto& [k, v] : s_.props) {
      if (!used_.count(k)) {
        return Bad(absl::StrFormat("%s: unknown property '%s'", s_.type, k));
      }
    }
    return absl::OkStatus();
  }

 private:
  const DeviceSpec& s_;
  std::set<std::string> used_;
};

#define ASSIGN_OR_RETURN_IMPL(var, expr, tmp) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  var = *std::move(tmp)
#define VU_CAT2(a, b) a##b
#define VU_CAT(a, b) VU_CAT2(a, b)
#define ASSIGN_OR_RETURN(var, expr) \
  ASSIGN_OR_RETURN_IMPL(var, expr, VU_CAT(_status_or_, __LINE__))

template <typename Disk>
absl::StatusOr<std::unique_ptr<VhostDevice>> MakeBlk(
    std::shared_ptr<Disk> disk, const virtio::BlkDeviceOptions& opts) {
  using Dev = virtio::BlkDevice<VhostTraits, Disk>;
  auto a = DeviceAdapter<Dev>::Create(
      [&](const MemoryTable& m, CallInterrupt& i) {
        return Dev::Create(m, i, *disk, opts);
      });
  if (!a.ok()) return a.status();
  (*a)->KeepAlive(disk);
  return std::unique_ptr<VhostDevice>(*std::move(a));
}

absl::StatusOr<std::unique_ptr<VhostDevice>> Blk(const DeviceSpec& s) {
  Props p(s);
  ASSIGN_OR_RETURN(std::string backend, p.Str("backend", ""));
  ASSIGN_OR_RETURN(std::string path, p.Str("path", ""));
  ASSIGN_OR_RETURN(bool ro, p.Bool("readonly", false));
  ASSIGN_OR_RETURN(bool direct, p.Bool("direct", false));
  ASSIGN_OR_RETURN(bool packed, p.Bool("packed", true));
  ASSIGN_OR_RETURN(uint64_t queues, p.Size("num-queues", 1, 64));
  ASSIGN_OR_RETURN(uint64_t qsize, p.Size("queue-size", 256, 32768));
  ASSIGN_OR_RETURN(uint64_t size, p.Size("size", 0, uint64_t{1} << 62));
  ASSIGN_OR_RETURN(std::string serial, p.Str("serial", ""));
  ASSIGN_OR_RETURN(std::string name, p.Str("id", "blk"));
  if (absl::Status st = p.CheckAllUsed(); !st.ok()) return st;
  if (backend.empty()) backend = path.empty() ? "" : "file";
  if (queues == 0) return Bad("blk: num-queues must be at least 1");
  virtio::BlkDeviceOptions opts{.name = name,
                                .num_queues = static_cast<uint16_t>(queues),
                                .queue_size = static_cast<uint32_t>(qsize),
                                .serial = serial};
  opts.ring.packed = packed;
  const auto nq = static_cast<uint16_t>(queues);
  if (backend == "file") {
    if (path.empty()) return Bad("blk: backend=file needs path=");
    if (size != 0) return Bad("blk: size= is for backend=ram or null");
    auto d = virtio::UringDisk::Open(
        {.path = path, .read_only = ro, .direct = direct, .num_queues = nq});
    if (!d.ok()) return d.status();
    return MakeBlk(std::shared_ptr<virtio::UringDisk>(*std::move(d)), opts);
  }
  if (!path.empty()) return Bad("blk: path= is for backend=file");
  if (backend == "ram") {
    if (size == 0) return Bad("blk: backend=ram needs size=");
    auto d = virtio::RamDisk::Create(
        {.capacity = size, .read_only = ro, .num_queues = nq});
    if (!d.ok()) return d.status();
    return MakeBlk(std::shared_ptr<virtio::RamDisk>(*std::move(d)), opts);
  }
  if (backend == "null") {
    if (size == 0) return Bad("blk: backend=null needs size=");
    auto d = virtio::NullDisk::Create(
        {.capacity = size, .read_only = ro, .num_queues = nq});
    if (!d.ok()) return d.status();
    return MakeBlk(std::shared_ptr<virtio::NullDisk>(*std::move(d)), opts);
  }
  return Bad(backend.empty()
                 ? "blk: needs path=FILE or backend=ram|null,size=BYTES"
                 : absl::StrFormat("blk: unknown backend '%s' (file, ram, null)",
                                   backend));
}

absl::StatusOr<std::unique_ptr<VhostDevice>> Rng(const DeviceSpec& s) {
  Props p(s);
  ASSIGN_OR_RETURN(uint64_t rate, p.Size("rate", 0, uint64_t{1} << 40));
  ASSIGN_OR_RETURN(uint64_t qsize, p.Size("queue-size", 256, 32768));
  ASSIGN_OR_RETURN(bool packed, p.Bool("packed", true));
  ASSIGN_OR_RETURN(std::string name, p.Str("id", "rng"));
  if (absl::Status st = p.CheckAllUsed(); !st.ok()) return st;
  if (qsize == 0) return Bad("rng: queue-size must be at least 1");
  virtio::RngOptions opts;
  opts.max_bytes_per_period = rate;
  opts.queue_size = static_cast<uint32_t>(qsize);
  opts.ring.packed = packed;
  opts.name = name;
  using Dev = virtio::RngDevice<VhostTraits>;
  auto a = DeviceAdapter<Dev>::Create(
      [&](const MemoryTable& m, CallInterrupt& i) {
        return std::make_unique<Dev>(m, i, opts);
      });
  if (!a.ok()) return a.status();
  return std::unique_ptr<VhostDevice>(*std::move(a));
}

}  // namespace

absl::StatusOr<DeviceSpec> ParseDeviceSpec(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  DeviceSpec s;
  s.type = parts.empty() ? "" : parts[0];
  if (s.type.empty()) return Bad("--device: empty device type");
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    if (eq == std::string::npos || eq == 0) {
      return Bad(absl::StrFormat("--device %s: '%s' is not key=value", s.type,
                                 parts[i]));
    }
    std::string key = parts[i].substr(0, eq);
    if (!s.props.emplace(key, parts[i].substr(eq + 1)).second) {
      return Bad(absl::StrFormat("--device %s: '%s' given twice", s.type, key));
    }
  }
  return s;
}

absl::StatusOr<std::unique_ptr<VhostDevice>> MakeDevice(const DeviceSpec& s) {
  if (s.type == "blk") return Blk(s);
  if (s.type == "rng") return Rng(s);
  if (s.type == "net" || s.type == "console") {
    return absl::UnimplementedError(absl::StrFormat(
        "--device %s: not served by vhost-user-device yet (blk, rng)", s.type));
  }
  return Bad(absl::StrFormat("--device: unknown type '%s' (blk, rng)", s.type));
}

const char* DeviceSpecHelp() {
  return "  blk,path=FILE[,readonly=on][,direct=on][,num-queues=N]"
         "[,queue-size=N][,serial=S][,packed=off][,id=NAME]\n"
         "  blk,backend=ram|null,size=BYTES[K|M|G|T][,...as above]\n"
         "  rng[,rate=BYTES_PER_SECOND][,queue-size=N][,packed=off][,id=NAME]";
}

}  // namespace vhost_user
