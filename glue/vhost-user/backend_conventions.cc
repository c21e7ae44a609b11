#include "backend_conventions.h"

#include <errno.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vhost_user/connection.h"

namespace vhost_user {
namespace {

using virtio::catalog::DeviceType;

constexpr mode_t kOwnerReadWrite = 0600;
constexpr mode_t kGroupReadWrite = 0060;

}  // namespace

std::string_view QemuBackendType(DeviceType type) {
  switch (type) {
    case DeviceType::kBlk:
      return "block";
    case DeviceType::kNet:
      return "net";
    case DeviceType::kConsole:
      return "console";
    case DeviceType::kRng:
      return "rng";
  }
  return "unknown";
}

std::optional<DeviceType> DeviceTypeOfSpec(std::string_view spec) {
  const std::string_view first = spec.substr(0, spec.find(','));
  for (DeviceType t : {DeviceType::kBlk, DeviceType::kNet, DeviceType::kConsole,
                       DeviceType::kRng}) {
    if (first == virtio::catalog::DeviceTypeName(t)) return t;
  }
  return std::nullopt;
}

std::optional<DeviceType> DeviceTypeOfProgram(std::string_view argv0) {
  const size_t slash = argv0.rfind('/');
  std::string_view name =
      slash == std::string_view::npos ? argv0 : argv0.substr(slash + 1);
  constexpr std::string_view kPrefix = "vhost-user-";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  // QEMU's own spelling of the type, as in vhost-user-blk and its schema.
  if (name == "block") return DeviceType::kBlk;
  if (name.find(',') != std::string_view::npos) return std::nullopt;
  return DeviceTypeOfSpec(name);
}

std::string CapabilitiesJson(DeviceType type) {
  const char* features =
      type == DeviceType::kBlk ? R"("read-only", "blk-file")" : "";
  return absl::StrFormat(R"({"type": "%s", "features": [%s]})",
                         QemuBackendType(type), features);
}

absl::StatusOr<SocketAccess> ParseSocketAccess(std::string_view mode_text,
                                               std::string_view group_text) {
  SocketAccess access;
  if (!group_text.empty()) {
    access.group_name = std::string(group_text);
    uint32_t number = 0;
    if (absl::SimpleAtoi(
            absl::string_view(group_text.data(), group_text.size()), &number)) {
      access.group = static_cast<gid_t>(number);
    } else {
      struct group buffer {};
      struct group* found = nullptr;
      std::vector<char> strings(16384);
      const std::string name(group_text);
      const int rc = getgrnam_r(name.c_str(), &buffer, strings.data(),
                                strings.size(), &found);
      if (rc != 0 || found == nullptr) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--socket-group=%s: no such group%s", group_text,
            rc != 0 ? absl::StrCat(" (", std::strerror(rc), ")") : ""));
      }
      access.group = found->gr_gid;
    }
    access.mode = kOwnerReadWrite | kGroupReadWrite;
  }
  if (!mode_text.empty()) {
    uint32_t bits = 0;
    bool octal = mode_text.size() <= 4;
    for (char c : mode_text) {
      if (c < '0' || c > '7') octal = false;
      bits = bits * 8 + static_cast<uint32_t>(c - '0');
    }
    if (!octal || bits > 0777) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--socket-mode=%s is not an octal permission mode such as 0660",
          mode_text));
    }
    if ((bits & kOwnerReadWrite) != kOwnerReadWrite) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--socket-mode=%s: the owner needs read and write (0600) to "
          "connect",
          mode_text));
    }
    if (access.group && (bits & kGroupReadWrite) != kGroupReadWrite) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--socket-mode=%s gives group %s no read and write (0060): "
          "its members could not connect",
          mode_text, access.group_name));
    }
    access.mode = static_cast<mode_t>(bits);
  }
  return access;
}

absl::StatusOr<UniqueFd> CreateListeningSocket(const std::string& path,
                                               const SocketAccess& access) {
  absl::StatusOr<UniqueFd> fd = Listen(path);
  if (!fd.ok()) return fd.status();
  if (access.group &&
      chown(path.c_str(), static_cast<uid_t>(-1), *access.group) != 0) {
    const int e = errno;
    unlink(path.c_str());
    return absl::PermissionDeniedError(absl::StrFormat(
        "--socket-group=%s: cannot give %s to group %u: %s%s",
        access.group_name, path, *access.group, std::strerror(e),
        e == EPERM ? " (a daemon not running as root may only use a group "
                     "it is a member of)"
                   : ""));
  }
  if (access.mode != kOwnerReadWrite && chmod(path.c_str(), access.mode) != 0) {
    const int e = errno;
    unlink(path.c_str());
    return absl::PermissionDeniedError(
        absl::StrFormat("--socket-mode=%04o: chmod %s: %s", access.mode, path,
                        std::strerror(e)));
  }
  return fd;
}

}  // namespace vhost_user
