#include "virtio/catalog/device_spec.h"

#include <array>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "virtio/catalog/spec_text.h"
#include "virtio/net_spec.h"
#include "virtio/spec.h"

namespace virtio::catalog {
namespace {

// Stores the value of one key in `out` when it is given; returns the error
// when it does not parse. `call` is a SpecReader getter (StatusOr of an
// optional). A macro because it returns from the reading function.
#define CATALOG_READ(out, call)                                  \
  do {                                                           \
    auto catalog_read_value = (call);                            \
    if (!catalog_read_value.ok()) {                              \
      return catalog_read_value.status();                        \
    }                                                            \
    if (catalog_read_value->has_value()) {                       \
      out = static_cast<std::remove_reference_t<decltype(out)>>( \
          **catalog_read_value);                                 \
    }                                                            \
  } while (0)

constexpr uint64_t kMaxDiskSize = uint64_t{1} << 62;
constexpr uint64_t kMaxRngRate = uint64_t{1} << 40;
constexpr uint16_t kMaxBlockQueues = 64;
constexpr uint16_t kMaxQueuePairs = 256;

absl::Status ReadBlock(SpecReader& reader, BlockSpec& blk) {
  std::string backend;
  CATALOG_READ(backend, reader.Text({.name = "backend"}));
  CATALOG_READ(blk.path, reader.Text({.name = "path"}));
  CATALOG_READ(blk.size, reader.Size({.name = "size"}, 0, kMaxDiskSize));
  CATALOG_READ(blk.readonly, reader.Bool({.name = "readonly"}));
  CATALOG_READ(blk.direct, reader.Bool({.name = "direct"}));
  CATALOG_READ(blk.num_queues,
               reader.Integer({.name = "num-queues", .alias = "queues"}, 1,
                              kMaxBlockQueues));
  CATALOG_READ(blk.serial, reader.Text({.name = "serial"}));
  if (backend.empty() && !blk.path.empty()) backend = "file";
  if (backend == "file") {
    blk.backend = BlockBackendKind::kFile;
    if (blk.path.empty()) return reader.Error("backend=file needs path=");
    if (reader.Has({.name = "size"})) {
      return reader.Error("size= is for backend=ram or null");
    }
    return absl::OkStatus();
  }
  if (backend == "ram" || backend == "null") {
    blk.backend =
        backend == "ram" ? BlockBackendKind::kRam : BlockBackendKind::kNull;
    if (!blk.path.empty()) return reader.Error("path= is for backend=file");
    if (blk.size == 0) {
      return reader.Error(absl::StrFormat("backend=%s needs size=", backend));
    }
    if (blk.direct) return reader.Error("direct= is for backend=file");
    return absl::OkStatus();
  }
  if (backend.empty()) {
    return reader.Error("needs path=FILE or backend=ram|null,size=BYTES");
  }
  return reader.Error(
      absl::StrFormat("unknown backend '%s' (file, ram, null)", backend));
}

absl::Status ReadNet(SpecReader& reader, NetSpec& net) {
  std::string backend = "loopback";
  CATALOG_READ(backend, reader.Text({.name = "backend"}));
  CATALOG_READ(net.ifname, reader.Text({.name = "ifname"}));
  CATALOG_READ(net.mac, reader.Mac({.name = "mac"}));
  CATALOG_READ(net.queue_pairs,
               reader.Integer({.name = "queue-pairs"}, 1, kMaxQueuePairs));
  CATALOG_READ(net.mtu, reader.Integer({.name = "mtu"}, 0, 65535));
  CATALOG_READ(net.ctrl_vq, reader.Bool({.name = "ctrl-vq"}));
  CATALOG_READ(net.frame_len,
               reader.Integer({.name = "frame-len"}, 0, net::kMaxFrameSize));
  static constexpr std::array<std::pair<std::string_view, NetBackendKind>, 5>
      kBackends = {{{"loopback", NetBackendKind::kLoopback},
                    {"tap", NetBackendKind::kTap},
                    {"null", NetBackendKind::kNull},
                    {"generator", NetBackendKind::kGenerator},
                    {"gen", NetBackendKind::kGenerator}}};
  bool known = false;
  for (const auto& [name, kind] : kBackends) {
    if (backend == name) {
      net.backend = kind;
      known = true;
    }
  }
  if (!known) {
    return reader.Error(absl::StrFormat(
        "unknown backend '%s' (loopback, tap, null, generator)", backend));
  }
  if (!net.ifname.empty() && net.backend != NetBackendKind::kTap) {
    return reader.Error("ifname= is for backend=tap");
  }
  if (net.frame_len != 0 && net.backend != NetBackendKind::kGenerator) {
    return reader.Error("frame-len= is for backend=generator");
  }
  if (net.queue_pairs > 1 && !net.ctrl_vq) {
    return reader.Error("queue-pairs > 1 needs ctrl-vq=on");
  }
  return absl::OkStatus();
}

absl::Status ReadConsole(SpecReader& reader, ConsoleSpec& console) {
  std::string backend = "stdio";
  std::optional<std::string> socket_path;
  std::optional<std::string> file_path;
  CATALOG_READ(backend, reader.Text({.name = "backend"}));
  CATALOG_READ(console.path, reader.Text({.name = "path"}));
  // The short forms socket=PATH and file=PATH (virtio-kvm's first syntax).
  CATALOG_READ(socket_path, reader.Text({.name = "socket"}));
  CATALOG_READ(file_path, reader.Text({.name = "file"}));
  int paths_given = !console.path.empty();
  // backend=socket=PATH and backend=file=PATH carry the path inline.
  if (const size_t eq = backend.find('='); eq != std::string::npos) {
    console.path = backend.substr(eq + 1);
    backend.resize(eq);
    ++paths_given;
  }
  const struct {
    const char* name;
    const std::optional<std::string>& path;
  } short_forms[] = {{"socket", socket_path}, {"file", file_path}};
  for (const auto& form : short_forms) {
    if (!form.path.has_value()) continue;
    if (reader.Has({.name = "backend"}) && backend != form.name) {
      return reader.Error(
          absl::StrFormat("%s= with backend=%s", form.name, backend));
    }
    backend = form.name;
    console.path = *form.path;
    ++paths_given;
  }
  if (paths_given > 1) {
    return reader.Error("give the path once (backend=TYPE=PATH or path=)");
  }
  if (backend == "stdio") {
    console.backend = ConsoleBackendKind::kStdio;
  } else if (backend == "pty") {
    console.backend = ConsoleBackendKind::kPty;
  } else if (backend == "socket") {
    console.backend = ConsoleBackendKind::kSocket;
  } else if (backend == "file") {
    console.backend = ConsoleBackendKind::kFile;
  } else {
    return reader.Error(absl::StrFormat(
        "unknown backend '%s' (stdio, pty, socket=PATH, file=PATH)", backend));
  }
  const bool needs_path = console.backend == ConsoleBackendKind::kSocket ||
                          console.backend == ConsoleBackendKind::kFile;
  if (needs_path && console.path.empty()) {
    return reader.Error(absl::StrFormat(
        "backend=%s needs a path (backend=%s=PATH)", backend, backend));
  }
  if (!needs_path && !console.path.empty()) {
    return reader.Error("a path is for backend=socket or backend=file");
  }
  return absl::OkStatus();
}

absl::Status ReadRng(SpecReader& reader, RngSpec& rng) {
  CATALOG_READ(rng.rate, reader.Size({.name = "rate"}, 0, kMaxRngRate));
  return absl::OkStatus();
}

absl::Status ReadShared(SpecReader& reader, DeviceSpec& spec) {
  CATALOG_READ(spec.id, reader.Text({.name = "id"}));
  if (reader.Has({.name = "id"}) && spec.id.empty()) {
    return reader.Error("id= is empty");
  }
  CATALOG_READ(spec.packed, reader.Bool({.name = "packed"}));
  CATALOG_READ(spec.queue_size,
               reader.Integer({.name = "queue-size"}, 1, spec::kMaxQueueSize));
  switch (spec.type) {
    case DeviceType::kBlk:
      return ReadBlock(reader, spec.blk);
    case DeviceType::kNet:
      return ReadNet(reader, spec.net);
    case DeviceType::kConsole:
      return ReadConsole(reader, spec.console);
    case DeviceType::kRng:
      return ReadRng(reader, spec.rng);
  }
  return absl::OkStatus();
}

#undef CATALOG_READ

}  // namespace

std::string_view DeviceTypeName(DeviceType type) {
  switch (type) {
    case DeviceType::kBlk:
      return "blk";
    case DeviceType::kNet:
      return "net";
    case DeviceType::kConsole:
      return "console";
    case DeviceType::kRng:
      return "rng";
  }
  return "?";
}

std::string_view BackendName(BlockBackendKind kind) {
  switch (kind) {
    case BlockBackendKind::kFile:
      return "file";
    case BlockBackendKind::kRam:
      return "ram";
    case BlockBackendKind::kNull:
      return "null";
  }
  return "?";
}

std::string_view BackendName(NetBackendKind kind) {
  switch (kind) {
    case NetBackendKind::kLoopback:
      return "loopback";
    case NetBackendKind::kTap:
      return "tap";
    case NetBackendKind::kNull:
      return "null";
    case NetBackendKind::kGenerator:
      return "generator";
  }
  return "?";
}

std::string_view BackendName(ConsoleBackendKind kind) {
  switch (kind) {
    case ConsoleBackendKind::kStdio:
      return "stdio";
    case ConsoleBackendKind::kPty:
      return "pty";
    case ConsoleBackendKind::kSocket:
      return "socket";
    case ConsoleBackendKind::kFile:
      return "file";
  }
  return "?";
}

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view text,
                                           GlueKeys glue_keys) {
  absl::StatusOr<SpecText> split = ParseSpecText(text);
  if (!split.ok()) return split.status();
  DeviceSpec spec;
  spec.text = std::string(text);
  bool known_type = false;
  for (DeviceType type : {DeviceType::kBlk, DeviceType::kNet,
                          DeviceType::kConsole, DeviceType::kRng}) {
    if (split->type == DeviceTypeName(type)) {
      spec.type = type;
      known_type = true;
    }
  }
  if (!known_type) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--device %s: unknown type '%s' (blk, net, console, rng)", text,
        split->type));
  }
  SpecReader reader(*split);
  if (absl::Status s = ReadShared(reader, spec); !s.ok()) return s;
  if (absl::Status s = glue_keys(reader, spec); !s.ok()) return s;
  if (absl::Status s = reader.Finish(); !s.ok()) return s;
  return spec;
}

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view text) {
  return ParseDeviceSpec(
      text, [](SpecReader&, const DeviceSpec&) { return absl::OkStatus(); });
}

std::string FormatDeviceSpec(const DeviceSpec& spec) {
  std::string out(DeviceTypeName(spec.type));
  if (!spec.id.empty()) absl::StrAppend(&out, ",id=", spec.id);
  switch (spec.type) {
    case DeviceType::kBlk: {
      const BlockSpec& blk = spec.blk;
      if (blk.backend == BlockBackendKind::kFile) {
        absl::StrAppend(&out, ",path=", blk.path);
      } else {
        absl::StrAppend(&out,
                        ",backend=", std::string(BackendName(blk.backend)),
                        ",size=", blk.size);
      }
      if (blk.readonly) absl::StrAppend(&out, ",readonly=on");
      if (blk.direct) absl::StrAppend(&out, ",direct=on");
      if (blk.num_queues != 1) {
        absl::StrAppend(&out, ",num-queues=", blk.num_queues);
      }
      if (!blk.serial.empty()) absl::StrAppend(&out, ",serial=", blk.serial);
      break;
    }
    case DeviceType::kNet: {
      const NetSpec& net = spec.net;
      absl::StrAppend(&out, ",backend=", std::string(BackendName(net.backend)));
      if (!net.ifname.empty()) absl::StrAppend(&out, ",ifname=", net.ifname);
      if (net.mac) absl::StrAppend(&out, ",mac=", FormatMac(*net.mac));
      if (net.queue_pairs != 1) {
        absl::StrAppend(&out, ",queue-pairs=", net.queue_pairs);
      }
      if (net.mtu != 0) absl::StrAppend(&out, ",mtu=", net.mtu);
      if (!net.ctrl_vq) absl::StrAppend(&out, ",ctrl-vq=off");
      if (net.frame_len != 0) {
        absl::StrAppend(&out, ",frame-len=", net.frame_len);
      }
      break;
    }
    case DeviceType::kConsole:
      absl::StrAppend(
          &out, ",backend=", std::string(BackendName(spec.console.backend)));
      if (!spec.console.path.empty()) {
        absl::StrAppend(&out, "=", spec.console.path);
      }
      break;
    case DeviceType::kRng:
      if (spec.rng.rate != 0) absl::StrAppend(&out, ",rate=", spec.rng.rate);
      break;
  }
  if (!spec.packed) absl::StrAppend(&out, ",packed=off");
  if (spec.queue_size) absl::StrAppend(&out, ",queue-size=", *spec.queue_size);
  return out;
}

const char* DeviceSpecHelp() {
  return "  blk,path=FILE | blk,backend=ram|null,size=BYTES[K|M|G|T]\n"
         "      [,readonly=on][,direct=on][,num-queues=N][,serial=S]\n"
         "  net[,backend=loopback|tap|null|generator][,ifname=NAME]"
         "[,mac=XX:XX:XX:XX:XX:XX]\n"
         "      [,queue-pairs=N][,mtu=N][,ctrl-vq=off][,frame-len=N]\n"
         "      (loopback, the default, sends the guest's frames back to it;"
         " null drops\n"
         "      them; generator fills every rx buffer with a fixed frame,"
         " for benchmarks)\n"
         "  console[,backend=stdio|pty|socket=PATH|file=PATH]"
         " (stdio by default)\n"
         "  rng[,rate=BYTES_PER_SECOND]\n"
         "  every type: [,id=NAME][,packed=off][,queue-size=N]\n"
         "  booleans: on/off, true/false, yes/no, 1/0; sizes take K/M/G/T\n"
         "  (see docs/devices.md)";
}

}  // namespace virtio::catalog
