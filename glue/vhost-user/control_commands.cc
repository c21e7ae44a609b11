#include "control_commands.h"

#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "control_server.h"
#include "json_writer.h"
#include "vhost_user/server.h"
#include "virtio/log.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

constexpr std::string_view kCommands[] = {"help", "resize", "stats"};

std::string Help() {
  JsonWriter j;
  j.BeginObject();
  j.Key("commands");
  j.BeginArray();
  for (std::string_view c : kCommands) j.String(c);
  j.EndArray();
  j.EndObject();
  return j.str();
}

}  // namespace

std::string ResizeDevice(const StatsSubject& subject, DeviceControl& control,
                         absl::string_view trigger) {
  absl::StatusOr<ResizeOutcome> r = control.Resize();
  if (!r.ok()) {
    virtio::Logf(virtio::LogLevel::kWarning, "%s: resize (%s) refused: %s",
                 subject.name, trigger, r.status().message());
    return ControlError(r.status().message());
  }
  const bool resized = r->new_sectors != r->old_sectors;
  // The front-end hears of it only over its back-end request channel; a
  // guest not yet running reads the new capacity when it starts.
  const ConnectionStatus c = subject.connection != nullptr
                                 ? subject.connection->Read()
                                 : ConnectionStatus{};
  const bool sent =
      resized && c.connected && c.backend_channel &&
      (subject.device->status() & virtio::spec::kStatusDriverOk) != 0;
  if (resized) {
    virtio::Logf(virtio::LogLevel::kInfo,
                 "%s: resized (%s) from %u to %u sectors%s", subject.name,
                 trigger, r->old_sectors, r->new_sectors,
                 sent ? "; configuration change sent to the front-end"
                      : "; no front-end channel to tell (it reads the new "
                        "size when it next reads the configuration)");
  } else {
    virtio::Logf(virtio::LogLevel::kInfo, "%s: resize (%s): still %u sectors",
                 subject.name, trigger, r->new_sectors);
  }
  JsonWriter j;
  j.BeginObject();
  j.FieldBool("resized", resized);
  j.FieldUint("old_capacity_sectors", r->old_sectors);
  j.FieldUint("new_capacity_sectors", r->new_sectors);
  j.FieldBool("config_change_sent", sent);
  j.EndObject();
  return j.str();
}

std::string HandleControlCommand(const StatsSubject& subject,
                                 DeviceControl& control,
                                 absl::string_view command) {
  if (command == "stats") return StatsJson(subject);
  if (command == "resize") {
    return ResizeDevice(subject, control, "the control socket");
  }
  if (command == "help") return Help();
  return ControlError(absl::StrCat("unknown command '", command,
                                   "' (commands: help, resize, stats)"));
}

namespace {

bool IsBlk(const ControlTarget& t) { return t.subject.type == "blk"; }

std::string Names(absl::Span<const ControlTarget> targets) {
  std::string names;
  for (const ControlTarget& t : targets) {
    if (!names.empty()) names += ", ";
    names.append(t.subject.name.data(), t.subject.name.size());
  }
  return names;
}

}  // namespace

void ResizeEveryBlk(absl::Span<const ControlTarget> targets,
                    absl::string_view trigger) {
  for (const ControlTarget& t : targets) {
    if (IsBlk(t)) ResizeDevice(t.subject, *t.control, trigger);
  }
}

std::string HandleDaemonCommand(absl::Span<const ControlTarget> targets,
                                absl::string_view line) {
  const size_t space = line.find(' ');
  const absl::string_view verb = line.substr(0, space);
  absl::string_view device;
  if (space != absl::string_view::npos) {
    device = absl::StripLeadingAsciiWhitespace(line.substr(space + 1));
  }
  if (!device.empty()) {
    for (const ControlTarget& t : targets) {
      if (t.subject.name == std::string_view(device.data(), device.size())) {
        return HandleControlCommand(t.subject, *t.control, verb);
      }
    }
    return ControlError(absl::StrCat("no device named '", device,
                                     "' (devices: ", Names(targets), ")"));
  }
  if (targets.size() == 1) {
    return HandleControlCommand(targets[0].subject, *targets[0].control, verb);
  }
  if (verb == "help") return Help();
  if (verb == "stats") {
    std::string reply = "{\"devices\":[";
    for (size_t i = 0; i < targets.size(); ++i) {
      if (i > 0) reply += ",";
      reply += StatsJson(targets[i].subject);
    }
    return reply + "]}";
  }
  if (verb == "resize") {
    std::string devices;
    std::string failed;
    for (const ControlTarget& t : targets) {
      if (!IsBlk(t)) continue;
      const std::string r =
          ResizeDevice(t.subject, *t.control, "the control socket");
      JsonWriter name;
      name.String(t.subject.name);
      if (!devices.empty()) devices += ",";
      absl::StrAppend(&devices, name.str(), ":", r);
      if (IsControlError(r) && failed.empty()) {
        failed.assign(t.subject.name.data(), t.subject.name.size());
      }
    }
    if (devices.empty()) return ControlError("no blk device to resize");
    std::string reply = "{";
    if (!failed.empty()) {
      JsonWriter error;
      error.String(absl::StrCat("resizing ", failed, " failed"));
      absl::StrAppend(&reply, "\"error\":", error.str(), ",");
    }
    return absl::StrCat(reply, "\"devices\":{", devices, "}}");
  }
  return ControlError(absl::StrCat("unknown command '", verb,
                                   "' (commands: help, resize, stats)"));
}

}  // namespace vhost_user
