#include "daemon_plan.h"

#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "backend_conventions.h"
#include "device_spec.h"

namespace vhost_user {
namespace {

using virtio::catalog::DeviceType;
using virtio::catalog::DeviceTypeName;

// Abseil's strings are not std's on Debian (ABSL_USES_STD_STRING_VIEW off).
std::string TypeName(DeviceType type) {
  const std::string_view name = DeviceTypeName(type);
  return {name.data(), name.size()};
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(what);
}

// The --device texts: every --device, or --blk-file [--read-only], or the
// device type the program's name stands for (vhost-user-rng serves rng).
absl::StatusOr<std::vector<std::string>> DeviceTexts(const DaemonFlags& f) {
  std::vector<std::string> texts = f.devices;
  for (const std::string& t : texts) {
    if (t.empty()) return Invalid("--device SPEC is required (see --help)");
  }
  if (!f.blk_file.empty()) {
    if (!texts.empty()) {
      return Invalid("--blk-file and --device both name the device: give one");
    }
    std::string text = absl::StrCat("blk,path=", f.blk_file);
    if (f.read_only) absl::StrAppend(&text, ",readonly=on");
    texts.push_back(std::move(text));
  } else if (f.read_only) {
    return Invalid(
        "--read-only goes with --blk-file (with --device: readonly=on)");
  }
  if (texts.empty()) {
    if (std::optional<DeviceType> type = DeviceTypeOfProgram(f.argv0)) {
      texts.push_back(TypeName(*type));
    }
  }
  if (texts.empty()) return Invalid("--device SPEC is required (see --help)");
  return texts;
}

// The checks that hold however many devices there are.
absl::Status CheckEndpointFlags(const DaemonFlags& f, const std::string& path,
                                size_t activated) {
  const bool has_fd = f.fd != -1;
  const bool has_activation = activated > 0;
  if (has_fd && !path.empty()) {
    return Invalid(
        "--fd and --socket-path are incompatible: the socket is either "
        "inherited or created");
  }
  if (has_activation && (has_fd || !path.empty())) {
    return Invalid(absl::StrCat("the service manager passed ", activated,
                                " socket(s) (LISTEN_FDS) and ",
                                has_fd ? "--fd" : "--socket-path",
                                " names another: give one"));
  }
  if (f.client && (has_fd || has_activation)) {
    return Invalid(
        "--client connects to --socket-path: it takes no inherited listening "
        "socket (--fd, LISTEN_FDS)");
  }
  if ((has_fd || has_activation) && f.socket_access_given) {
    return Invalid(
        "--socket-mode and --socket-group apply to a socket the daemon "
        "creates; an inherited one keeps the permissions its creator gave "
        "it");
  }
  if (f.client && f.socket_access_given) {
    return Invalid(
        "--socket-mode and --socket-group apply to a socket the daemon "
        "creates; with --client the front-end creates it");
  }
  if (has_fd && f.fd < 0) {
    return Invalid(
        absl::StrCat("--fd=", f.fd, ": not a file descriptor number"));
  }
  return absl::OkStatus();
}

Endpoint PathEndpoint(const std::string& path) {
  return Endpoint{.socket_path = path, .description = path};
}

// One device: exactly one of --socket-path, --fd, an activated socket and
// the spec's socket-path=.
absl::StatusOr<Endpoint> SingleEndpoint(
    const DaemonFlags& f, std::string path, const DaemonDeviceSpec& spec,
    absl::Span<const ActivatedSocket> activated) {
  if (!spec.socket_path.empty()) {
    if (!path.empty() && path != spec.socket_path) {
      return Invalid(
          "--socket-path and the device's socket-path= name two sockets: "
          "give one");
    }
    if (f.fd != -1 || !activated.empty()) {
      return Invalid(
          absl::StrCat("socket-path= names a socket the daemon creates, and ",
                       f.fd != -1 ? "--fd" : "socket activation (LISTEN_FDS)",
                       " hands over another: give one"));
    }
    path = spec.socket_path;
  }
  if (f.fd != -1) {
    absl::Status s = CheckListeningSocket(f.fd, absl::StrCat("--fd=", f.fd));
    if (!s.ok()) return s;
    return Endpoint{.inherited_fd = f.fd,
                    .description = absl::StrCat("inherited socket fd ", f.fd)};
  }
  if (!activated.empty()) {
    if (activated.size() > 1) {
      return Invalid(absl::StrCat("the service manager passed ",
                                  activated.size(),
                                  " sockets (LISTEN_FDS) for one device"));
    }
    const int fd = activated.front().fd;
    return Endpoint{.inherited_fd = fd,
                    .description = absl::StrCat("socket-activated fd ", fd)};
  }
  if (path.empty()) {
    return Invalid(
        "--socket-path PATH (or --fd N, or socket activation) is required "
        "(see --help)");
  }
  return PathEndpoint(path);
}

// Several devices: each its own socket, named by socket-path= or, under
// socket activation, by its id= matching a socket's FileDescriptorName=.
absl::Status PlanSeveralEndpoints(const DaemonFlags& f, const std::string& path,
                                  const std::vector<DaemonDeviceSpec>& specs,
                                  absl::Span<const ActivatedSocket> activated,
                                  std::vector<PlannedDevice>& out) {
  if (!path.empty() || f.fd != -1) {
    return Invalid(absl::StrCat(
        specs.size(), " devices and ", f.fd != -1 ? "--fd" : "--socket-path",
        ", which names one socket: give each device its own with "
        "socket-path=PATH in its --device"));
  }
  if (!activated.empty()) {
    std::map<std::string, int, std::less<>> by_name;
    for (const ActivatedSocket& a : activated) {
      if (a.name.empty() || !by_name.emplace(a.name, a.fd).second) {
        return Invalid(absl::StrCat(
            "the service manager passed ", activated.size(), " sockets for ",
            specs.size(),
            " devices: each socket needs its own name "
            "(FileDescriptorName= in the .socket unit) matching a device's "
            "id="));
      }
    }
    if (activated.size() != specs.size()) {
      return Invalid(absl::StrCat(
          "the service manager passed ", activated.size(),
          " sockets (LISTEN_FDS) for ", specs.size(), " devices: one each"));
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      const DaemonDeviceSpec& s = specs[i];
      if (!s.socket_path.empty()) {
        return Invalid(absl::StrCat(
            "--device ", s.device.text,
            ": socket-path= names a socket the daemon creates; under socket "
            "activation each device takes the passed socket named like its "
            "id="));
      }
      auto it = by_name.find(s.device.id);
      if (s.device.id.empty() || it == by_name.end()) {
        return Invalid(absl::StrCat(
            "--device ", s.device.text,
            ": no passed socket is named like its id= (FileDescriptorName= "
            "in the .socket unit)"));
      }
      out[i].endpoint = Endpoint{
          .inherited_fd = it->second,
          .description = absl::StrCat("socket-activated fd ", it->second, " (",
                                      it->first, ")")};
    }
    return absl::OkStatus();
  }
  std::set<std::string, std::less<>> paths;
  for (size_t i = 0; i < specs.size(); ++i) {
    const DaemonDeviceSpec& s = specs[i];
    if (s.socket_path.empty()) {
      return Invalid(absl::StrCat(
          "--device ", s.device.text, ": with ", specs.size(),
          " devices each names its own socket: add socket-path=PATH"));
    }
    if (!paths.insert(s.socket_path).second) {
      return Invalid(absl::StrCat("two devices on one socket, ", s.socket_path,
                                  ": each needs its own socket-path="));
    }
    out[i].endpoint = PathEndpoint(s.socket_path);
  }
  return absl::OkStatus();
}

// Log names: [TYPE] for one device; [ID], or [TYPE] when no other device
// has that type, else [TYPE.N] (N: its place among the --device flags).
absl::Status NameDevices(std::vector<PlannedDevice>& devices) {
  if (devices.size() == 1) {
    PlannedDevice& d = devices[0];
    d.name = absl::StrCat("vhost-user-device[", TypeName(d.spec.type), "]");
    d.label = d.spec.id.empty() ? TypeName(d.spec.type) : d.spec.id;
    return absl::OkStatus();
  }
  std::map<DeviceType, int> of_type;
  for (const PlannedDevice& d : devices) ++of_type[d.spec.type];
  std::set<std::string, std::less<>> names;
  for (size_t i = 0; i < devices.size(); ++i) {
    PlannedDevice& d = devices[i];
    std::string label;
    if (!d.spec.id.empty()) {
      label = d.spec.id;
    } else if (of_type[d.spec.type] == 1) {
      label = TypeName(d.spec.type);
    } else {
      label = absl::StrCat(TypeName(d.spec.type), ".", i + 1);
    }
    if (!names.insert(label).second) {
      return Invalid(absl::StrCat("two devices are named '", label,
                                  "': give each its own id="));
    }
    d.name = absl::StrCat("vhost-user-device[", label, "]");
    d.label = std::move(label);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<PlannedDevice>> PlanDaemon(
    const DaemonFlags& f, absl::Span<const ActivatedSocket> activated) {
  absl::StatusOr<std::vector<std::string>> texts = DeviceTexts(f);
  if (!texts.ok()) return texts.status();
  std::string path = f.socket_path;
  if (!f.socket_alias.empty()) {
    if (!path.empty() && path != f.socket_alias) {
      return Invalid("--socket is another name for --socket-path: give one");
    }
    path = f.socket_alias;
  }
  absl::Status flags_ok = CheckEndpointFlags(f, path, activated.size());
  if (!flags_ok.ok()) return flags_ok;

  std::vector<DaemonDeviceSpec> specs;
  std::vector<PlannedDevice> devices;
  for (const std::string& text : *texts) {
    absl::StatusOr<DaemonDeviceSpec> spec = ParseDaemonDeviceSpec(text);
    if (!spec.ok()) return spec.status();
    if (f.no_packed) spec->device.packed = false;
    devices.push_back(PlannedDevice{.spec = spec->device});
    specs.push_back(*std::move(spec));
  }
  if (f.client && devices.size() > 1) {
    // Each device connects to its own front-end socket (socket-path=).
    for (const DaemonDeviceSpec& s : specs) {
      if (s.socket_path.empty()) {
        return Invalid(
            absl::StrCat("--device ", s.device.text, ": with ", specs.size(),
                         " devices each names the socket it connects to: add "
                         "socket-path=PATH"));
      }
    }
  }
  if (devices.size() == 1) {
    absl::StatusOr<Endpoint> e =
        SingleEndpoint(f, path, specs.front(), activated);
    if (!e.ok()) return e.status();
    devices.front().endpoint = *std::move(e);
  } else {
    absl::Status s = PlanSeveralEndpoints(f, path, specs, activated, devices);
    if (!s.ok()) return s;
  }
  absl::Status named = NameDevices(devices);
  if (!named.ok()) return named;
  return devices;
}

}  // namespace vhost_user
