// vhost-user-device — serves one libvirtio device to a vhost-user front-end
// (QEMU, Cloud Hypervisor, DPDK virtio-user, User-mode Linux).
//
//   vhost-user-device --socket-path /run/disk0.sock
//       --device blk,path=disk.img,num-queues=2,serial=disk0
//   vhost-user-device --client --socket-path /tmp/qemu-rng.sock --device rng
//   vhost-user-device --fd 3 --blk-file disk.img --read-only
//   vhost-user-device --print-capabilities --device blk
//
// It follows QEMU's "Backend program conventions" (docs/interop/vhost-user.rst
// in QEMU): --socket-path (alias --socket), --fd (an inherited listening
// socket: no file is created or removed), --print-capabilities, and, run as
// vhost-user-blk|net|console|rng (the installed links), the device type
// from its name. Under systemd it takes its socket from socket activation
// (LISTEN_FDS) and reports READY=1 / STOPPING=1 on NOTIFY_SOCKET.
//
// Server mode (default) creates the socket with mode 0600 (--socket-mode,
// --socket-group widen it) and serves one front-end at a time, accepting
// the next after a disconnect. Client mode connects to a front-end's
// socket, reconnecting after a disconnect. SIGTERM / SIGINT stop it
// cleanly: the device is reset (in-flight requests finished), the socket
// file it created removed. SIGUSR1 logs every queue's state (ring indexes,
// event indexes, requests in flight, last kick, interrupt and completion):
// for a guest that seems stuck. A blk queue with requests in flight and no
// completion for 5 s logs the same on its own. Log lines (--log,
// --log-level; daemon_log.h) carry the connection number ([#N]).
//
// --control-socket PATH serves statistics and online resize on a second
// Unix socket (control_server.h, control_commands.h; created like the
// vhost-user socket, with --socket-mode / --socket-group, and removed on
// exit), on its own thread; `vhost-user-device --query PATH [stats|resize|
// help]` asks it and prints the JSON reply. SIGHUP resizes a blk device to
// its image's size now (growing only), as `resize` does.
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backend_conventions.h"
#include "control_commands.h"
#include "control_server.h"
#include "daemon_log.h"
#include "device_spec.h"
#include "device_summary.h"
#include "service_manager.h"
#include "stats_json.h"
#include "vhost_user/server.h"
#include "virtio/log.h"

ABSL_FLAG(std::string, socket_path, "",
          "the vhost-user Unix socket: created and listened on (removed on "
          "exit), or with --client connected to");
ABSL_FLAG(std::string, socket, "", "the same as --socket-path");
ABSL_FLAG(int, fd, -1,
          "serve the listening Unix socket inherited as this file "
          "descriptor (created and removed by the caller)");
ABSL_FLAG(std::string, socket_mode, "",
          "permissions of the socket the daemon creates, octal (default "
          "0600, or 0660 with --socket-group)");
ABSL_FLAG(std::string, socket_group, "",
          "group (name or number) to give the socket the daemon creates, so "
          "that a front-end running as another user in that group can "
          "connect");
ABSL_FLAG(bool, print_capabilities, false,
          "print the device type's capabilities as JSON (QEMU's "
          "vhost-user.json) and exit; the type comes from --device, "
          "--blk-file or the program's name (vhost-user-blk, ...)");
ABSL_FLAG(std::string, blk_file, "",
          "serve this image as a blk device: the same as --device "
          "blk,path=FILE (QEMU's vhost-user-blk convention)");
ABSL_FLAG(bool, read_only, false,
          "with --blk-file: the device is read-only (readonly=on)");
ABSL_FLAG(bool, client, false,
          "connect to a front-end listening on --socket-path instead of "
          "listening");
ABSL_FLAG(std::string, device, "",
          "the device to serve, TYPE,key=value,... (see --help)");
ABSL_FLAG(bool, busy_poll, false,
          "data-path workers spin on their rings instead of sleeping "
          "(throughput; costs a core per queue group)");
ABSL_FLAG(uint32_t, poll_us, 50,
          "without --busy-poll: after the last request or completion, a "
          "worker keeps polling its rings for this many microseconds before "
          "it sleeps (saves the wake-up when the next request comes soon; "
          "the window shrinks while the worker gets less than its share of "
          "the CPU; 0: sleep at once, which can do better when requests "
          "come further apart than this and the cores are busy, e.g. a "
          "guest under TCG)");
ABSL_FLAG(std::string, log, "stderr",
          "where log lines go: stderr (with timestamps; under systemd the "
          "journal's priorities instead), syslog, or journald (the "
          "journal's native socket)");
ABSL_FLAG(std::string, log_level, "info",
          "the least severe lines logged: error, warning, info or debug");
ABSL_FLAG(bool, no_packed, false,
          "never offer packed rings (same as packed=off in --device)");
ABSL_FLAG(std::string, control_socket, "",
          "serve statistics and online resize on this Unix socket (created "
          "with --socket-mode / --socket-group, removed on exit; see "
          "--query)");
ABSL_FLAG(std::string, query, "",
          "ask the daemon whose control socket this is: `--query PATH "
          "[stats|resize|help]` (default stats) prints its JSON reply; "
          "exits 1 if it answered an error, 2 if it could not be asked");

namespace {

int g_stop_fd = -1;

int g_dump_fd = -1;

int g_hangup_fd = -1;

void OnSignal(int) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_stop_fd, &one, sizeof one);
}

void OnDumpSignal(int) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_dump_fd, &one, sizeof one);
}

void OnHangupSignal(int) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_hangup_fd, &one, sizeof one);
}

// Abseil's strings are not std's on Debian (ABSL_USES_STD_STRING_VIEW off).
std::string_view StdView(absl::string_view s) { return {s.data(), s.size()}; }

int Fail(std::string_view msg) {
  std::fprintf(stderr, "vhost-user-device: %.*s\n",
               static_cast<int>(msg.size()), msg.data());
  return 2;
}

// --query PATH [COMMAND]: prints the daemon's reply.
int Query(const std::string& path, const std::vector<char*>& rest) {
  if (rest.size() > 2) {
    return Fail(
        absl::StrCat("--query takes one command (stats, resize, "
                     "help), not also '",
                     rest[2], "'"));
  }
  const std::string command = rest.size() == 2 ? rest[1] : "stats";
  absl::StatusOr<std::string> reply =
      vhost_user::QueryControlSocket(path, command);
  if (!reply.ok()) return Fail(StdView(reply.status().message()));
  std::printf("%s\n", reply->c_str());
  if (vhost_user::IsControlError(*reply)) {
    std::fprintf(stderr,
                 "vhost-user-device: the daemon answered '%s' with an "
                 "error\n",
                 command.c_str());
    return 1;
  }
  return 0;
}

// Abseil's own --help exits with status 1, which scripts read as a failure:
// asking for help is not one. Prints the usage and this daemon's flags.
int PrintHelp() {
  const std::string_view usage = StdView(absl::ProgramUsageMessage());
  std::printf("vhost-user-device: %.*s\n\nflags:\n",
              static_cast<int>(usage.size()), usage.data());
  std::map<std::string, const absl::CommandLineFlag*> ours;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::EndsWith(flag->Filename(), "vhost-user/main.cc")) {
      ours.emplace(StdView(name), flag);
    }
  }
  for (const auto& [name, flag] : ours) {
    std::string dashed = name;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    std::printf("  --%s  %s (default: %s)\n", dashed.c_str(),
                flag->Help().c_str(), flag->DefaultValue().c_str());
  }
  return 0;
}

bool IsFlag(const std::string& arg, const std::string& name) {
  for (const char* dashes : {"-", "--"}) {
    const std::string f = std::string(dashes) + name;
    if (arg == f || absl::StartsWith(arg, f + "=")) return true;
  }
  return false;
}

// --print-capabilities: the device type from the first --device, else
// --blk-file, else the program's name. Per the conventions every other
// option is ignored (and nothing is opened or checked).
int PrintCapabilities(const std::vector<std::string>& args) {
  std::optional<virtio::catalog::DeviceType> type;
  for (size_t i = 1; i < args.size() && !type; ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    for (const char* name : {"device", "blk_file"}) {
      for (const char* dashes : {"-", "--"}) {
        const std::string f = std::string(dashes) + name;
        std::string value;
        if (absl::StartsWith(a, f + "=")) {
          value = a.substr(f.size() + 1);
        } else if (a == f && i + 1 < args.size()) {
          value = args[i + 1];
        } else {
          continue;
        }
        type = std::string_view(name) == "device"
                   ? vhost_user::DeviceTypeOfSpec(value)
                   : virtio::catalog::DeviceType::kBlk;
        if (!type) {
          return Fail(absl::StrCat("--print-capabilities: '", value,
                                   "' names no device type (blk, net, "
                                   "console, rng)"));
        }
      }
    }
  }
  if (!type) type = vhost_user::DeviceTypeOfProgram(args[0]);
  if (!type) {
    return Fail(
        "--print-capabilities needs a device type: give --device TYPE "
        "(blk, net, console, rng) or run the daemon as vhost-user-TYPE");
  }
  std::printf("%s\n", vhost_user::CapabilitiesJson(*type).c_str());
  return 0;
}

// The one --device spec: --device, --blk-file [--read-only], or the
// program's name (vhost-user-rng serves rng). Empty with an error printed.
absl::StatusOr<std::string> DeviceText(const std::string& argv0) {
  std::string device = absl::GetFlag(FLAGS_device);
  const std::string blk_file = absl::GetFlag(FLAGS_blk_file);
  const bool read_only = absl::GetFlag(FLAGS_read_only);
  if (!blk_file.empty()) {
    if (!device.empty()) {
      return absl::InvalidArgumentError(
          "--blk-file and --device both name the device: give one");
    }
    device = absl::StrCat("blk,path=", blk_file);
    if (read_only) absl::StrAppend(&device, ",readonly=on");
  } else if (read_only) {
    return absl::InvalidArgumentError(
        "--read-only goes with --blk-file (with --device: readonly=on)");
  }
  if (device.empty()) {
    if (auto type = vhost_user::DeviceTypeOfProgram(argv0)) {
      device = std::string(virtio::catalog::DeviceTypeName(*type));
    }
  }
  if (device.empty()) {
    return absl::InvalidArgumentError("--device SPEC is required (see --help)");
  }
  return device;
}

// Where the front-end comes from: the socket path, or a listening socket
// handed over (--fd, socket activation). Exactly one.
struct Endpoint {
  std::string socket_path;  // created (server) or connected to (--client)
  int inherited_fd = -1;    // --fd or LISTEN_FDS: neither created nor removed
  std::string description;  // for log lines
};

absl::StatusOr<Endpoint> ChooseEndpoint() {
  std::string path = absl::GetFlag(FLAGS_socket_path);
  const std::string alias = absl::GetFlag(FLAGS_socket);
  if (!alias.empty()) {
    if (!path.empty() && path != alias) {
      return absl::InvalidArgumentError(
          "--socket is another name for --socket-path: give one");
    }
    path = alias;
  }
  const int fd = absl::GetFlag(FLAGS_fd);
  const bool client = absl::GetFlag(FLAGS_client);
  absl::StatusOr<std::vector<vhost_user::ActivatedSocket>> activated =
      vhost_user::TakeActivatedSockets();
  if (!activated.ok()) return activated.status();
  const bool has_fd = fd != -1;
  const bool has_activation = !activated->empty();
  if (has_fd && !path.empty()) {
    return absl::InvalidArgumentError(
        "--fd and --socket-path are incompatible: the socket is either "
        "inherited or created");
  }
  if (has_activation && (has_fd || !path.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the service manager passed ", activated->size(),
        " socket(s) (LISTEN_FDS) and ", has_fd ? "--fd" : "--socket-path",
        " names another: give one"));
  }
  if (client && (has_fd || has_activation)) {
    return absl::InvalidArgumentError(
        "--client connects to --socket-path: it takes no inherited listening "
        "socket (--fd, LISTEN_FDS)");
  }
  if ((has_fd || has_activation) &&
      (!absl::GetFlag(FLAGS_socket_mode).empty() ||
       !absl::GetFlag(FLAGS_socket_group).empty())) {
    return absl::InvalidArgumentError(
        "--socket-mode and --socket-group apply to a socket the daemon "
        "creates; an inherited one keeps the permissions its creator gave "
        "it");
  }
  if (client && (!absl::GetFlag(FLAGS_socket_mode).empty() ||
                 !absl::GetFlag(FLAGS_socket_group).empty())) {
    return absl::InvalidArgumentError(
        "--socket-mode and --socket-group apply to a socket the daemon "
        "creates; with --client the front-end creates it");
  }
  Endpoint e;
  if (has_fd) {
    if (fd < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--fd=", fd, ": not a file descriptor number"));
    }
    absl::Status s =
        vhost_user::CheckListeningSocket(fd, absl::StrCat("--fd=", fd));
    if (!s.ok()) return s;
    e.inherited_fd = fd;
    e.description = absl::StrCat("inherited socket fd ", fd);
  } else if (has_activation) {
    if (activated->size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("the service manager passed ", activated->size(),
                       " sockets (LISTEN_FDS) for one device"));
    }
    e.inherited_fd = activated->front().fd;
    e.description = absl::StrCat("socket-activated fd ", e.inherited_fd);
  } else if (path.empty()) {
    return absl::InvalidArgumentError(
        "--socket-path PATH (or --fd N, or socket activation) is required "
        "(see --help)");
  } else {
    e.socket_path = path;
    e.description = path;
  }
  return e;
}

void NotifyOrLog(std::string_view state) {
  absl::Status s = vhost_user::NotifyServiceManager(state);
  if (!s.ok()) virtio::Log(virtio::LogLevel::kWarning, StdView(s.message()));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(absl::StrCat(
      "serves a libvirtio device over vhost-user.\n\n"
      "usage: vhost-user-device (--socket-path PATH [--client] | --fd N)\n"
      "         [--socket-mode MODE] [--socket-group GROUP]\n"
      "         [--busy-poll | --poll-us=N]\n"
      "         (--device SPEC | --blk-file FILE [--read-only])\n"
      "         [--control-socket PATH]\n"
      "       vhost-user-device --print-capabilities [--device TYPE]\n"
      "       vhost-user-device --query PATH [stats|resize|help]\n\n"
      "SPEC:\n",
      vhost_user::DeviceSpecHelp()));
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "vhost-user/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  // Flag names may be spelled with dashes (--busy-poll, --no-packed) as
  // well as with Abseil's underscores.
  std::vector<std::string> normalized(argv, argv + argc);
  int devices = 0;
  bool print_capabilities = false;
  for (size_t i = 1; i < normalized.size(); ++i) {
    std::string& a = normalized[i];
    if (a == "--") break;
    if (a == "--help" || a == "-help" || a == "-h" || a == "--helpfull") {
      return PrintHelp();
    }
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    const size_t end = std::min(a.find('='), a.size());
    std::replace(a.begin() + 2, a.begin() + static_cast<ptrdiff_t>(end), '-',
                 '_');
    if (IsFlag(a, "device")) ++devices;
    print_capabilities |= IsFlag(a, "print_capabilities");
  }
  if (print_capabilities) return PrintCapabilities(normalized);
  // A flag given twice silently keeps the last one: a second device would
  // be dropped without a word.
  if (devices > 1) {
    return Fail(
        "--device given more than once: one daemon serves one device "
        "(start one vhost-user-device per device)");
  }
  std::vector<char*> args;
  args.reserve(normalized.size());
  for (std::string& a : normalized) args.push_back(a.data());
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (!absl::GetFlag(FLAGS_query).empty()) {
    return Query(absl::GetFlag(FLAGS_query), rest);
  }
  if (rest.size() > 1) {
    return Fail(
        absl::StrCat("unexpected argument '", rest[1], "' (see --help)"));
  }
  absl::StatusOr<std::string> device = DeviceText(normalized[0]);
  if (!device.ok()) return Fail(StdView(device.status().message()));
  absl::StatusOr<Endpoint> endpoint = ChooseEndpoint();
  if (!endpoint.ok()) return Fail(StdView(endpoint.status().message()));
  absl::StatusOr<vhost_user::SocketAccess> access =
      vhost_user::ParseSocketAccess(absl::GetFlag(FLAGS_socket_mode),
                                    absl::GetFlag(FLAGS_socket_group));
  if (!access.ok()) return Fail(StdView(access.status().message()));
  absl::StatusOr<vhost_user::DaemonLogOptions> log_options =
      vhost_user::ParseDaemonLogOptions(absl::GetFlag(FLAGS_log),
                                        absl::GetFlag(FLAGS_log_level));
  if (!log_options.ok()) return Fail(StdView(log_options.status().message()));
  // Before the device is built: its own lines (a pty's path) go there too.
  absl::Status log_installed = vhost_user::InstallDaemonLog(*log_options);
  if (!log_installed.ok()) return Fail(StdView(log_installed.message()));
  auto spec = vhost_user::ParseDeviceSpec(*device);
  if (!spec.ok()) return Fail(StdView(spec.status().message()));
  if (absl::GetFlag(FLAGS_no_packed)) spec->packed = false;
  absl::StatusOr<vhost_user::ServedDevice> served =
      vhost_user::MakeServedDevice(*spec);
  if (!served.ok()) return Fail(StdView(served.status().message()));
  std::unique_ptr<vhost_user::VhostDevice>& dev = served->device;

  g_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g_stop_fd < 0) return Fail("eventfd failed");
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // SIGUSR1: log every queue's state (a guest that seems stuck).
  g_dump_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g_dump_fd < 0) return Fail("eventfd failed");
  struct sigaction dump {};
  dump.sa_handler = OnDumpSignal;
  sigemptyset(&dump.sa_mask);
  dump.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &dump, nullptr);
  // SIGHUP: resize (the control thread does it).
  g_hangup_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g_hangup_fd < 0) return Fail("eventfd failed");
  struct sigaction hangup {};
  hangup.sa_handler = OnHangupSignal;
  sigemptyset(&hangup.sa_mask);
  hangup.sa_flags = SA_RESTART;
  sigaction(SIGHUP, &hangup, nullptr);
  signal(SIGPIPE, SIG_IGN);

  vhost_user::DaemonOptions o;
  o.client = absl::GetFlag(FLAGS_client);
  o.socket_path = endpoint->description;
  o.serve.name = absl::StrCat(
      "vhost-user-device[",
      std::string(virtio::catalog::DeviceTypeName(spec->type)), "]");
  // The protocol's own lines (features negotiated, dirty logging) name the
  // device like the daemon's.
  o.serve.backend.name = o.serve.name;
  // Created here rather than by RunDaemon(): with the permissions asked
  // for, and before READY=1, so that a front-end started on readiness
  // finds it.
  vhost_user::UniqueFd created;
  if (!o.client && endpoint->inherited_fd < 0) {
    absl::StatusOr<vhost_user::UniqueFd> l =
        vhost_user::CreateListeningSocket(endpoint->socket_path, *access);
    if (!l.ok()) return Fail(StdView(l.status().message()));
    created = *std::move(l);
    o.listen_fd = created.get();
  } else if (!o.client) {
    o.listen_fd = endpoint->inherited_fd;
  } else {
    o.socket_path = endpoint->socket_path;
  }
  virtio::Logf(virtio::LogLevel::kInfo, "%s: serving %s", o.serve.name,
               vhost_user::DeviceSummary(*spec, *dev));
  // The control socket and SIGHUP, on their own thread.
  const std::string control_path = absl::GetFlag(FLAGS_control_socket);
  vhost_user::UniqueFd control_listener;
  if (!control_path.empty()) {
    absl::StatusOr<vhost_user::UniqueFd> l =
        vhost_user::CreateListeningSocket(control_path, *access);
    if (!l.ok()) {
      if (created) unlink(endpoint->socket_path.c_str());
      return Fail(StdView(l.status().message()));
    }
    control_listener = *std::move(l);
  }
  vhost_user::ConnectionState connection_state;
  o.serve.state = &connection_state;
  const std::string type_name(virtio::catalog::DeviceTypeName(spec->type));
  const std::string device_name =
      spec->id.empty() ? type_name : std::string(spec->id);
  const vhost_user::StatsSubject subject{.type = type_name,
                                         .name = device_name,
                                         .spec = spec->text,
                                         .device = dev.get(),
                                         .control = served->control.get(),
                                         .connection = &connection_state};
  vhost_user::DeviceControl& control = *served->control;
  absl::StatusOr<std::unique_ptr<vhost_user::ControlServer>> control_server =
      vhost_user::ControlServer::Start(
          std::move(control_listener),
          [&](absl::string_view command) {
            return vhost_user::HandleControlCommand(subject, control, command);
          },
          g_hangup_fd,
          [&] { vhost_user::ResizeDevice(subject, control, "SIGHUP"); });
  if (!control_server.ok()) {
    if (created) unlink(endpoint->socket_path.c_str());
    if (!control_path.empty()) unlink(control_path.c_str());
    return Fail(StdView(control_server.status().message()));
  }
  if (!control_path.empty()) {
    virtio::Logf(virtio::LogLevel::kInfo, "%s: control socket %s", o.serve.name,
                 control_path);
  }
  if (!o.client) {
    virtio::Logf(virtio::LogLevel::kInfo, "%s: listening on %s", o.serve.name,
                 endpoint->description);
  }
  o.serve.stop_fd = g_stop_fd;
  o.serve.dump_fd = g_dump_fd;
  o.serve.busy_poll = absl::GetFlag(FLAGS_busy_poll);
  o.serve.poll_us = absl::GetFlag(FLAGS_poll_us);
  NotifyOrLog(absl::StrCat("READY=1\nSTATUS=serving ", spec->text, " on ",
                           endpoint->description));
  absl::Status s = vhost_user::RunDaemon(*dev, o);
  NotifyOrLog("STOPPING=1");
  control_server->reset();  // before the device it reads goes
  if (!control_path.empty()) unlink(control_path.c_str());
  served->control.reset();
  dev.reset();  // finishes in-flight requests, flushes nothing left behind
  if (created) unlink(endpoint->socket_path.c_str());
  if (!s.ok()) return Fail(StdView(s.message()));
  virtio::Log(virtio::LogLevel::kInfo, "vhost-user-device: stopped");
  return 0;
}
