// vhost-user-device — serves libvirtio devices to vhost-user front-ends
// (QEMU, Cloud Hypervisor, DPDK virtio-user, User-mode Linux).
//
//   vhost-user-device --socket-path /run/disk0.sock
//       --device blk,path=disk.img,num-queues=2,serial=disk0
//   vhost-user-device --client --socket-path /tmp/qemu-rng.sock --device rng
//   vhost-user-device --fd 3 --blk-file disk.img --read-only
//   vhost-user-device --print-capabilities --device blk
//   vhost-user-device --device blk,id=disk0,path=a.img,socket-path=/run/a.sock
//       --device rng,socket-path=/run/rng.sock
//
// It follows QEMU's "Backend program conventions" (docs/interop/vhost-user.rst
// in QEMU): --socket-path (alias --socket), --fd (an inherited listening
// socket: no file is created or removed), --print-capabilities, and, run as
// vhost-user-blk|net|console|rng (the installed links), the device type
// from its name. Under systemd it takes its sockets from socket activation
// (LISTEN_FDS) and reports READY=1 / STOPPING=1 on NOTIFY_SOCKET.
//
// --device may be repeated (like qemu-storage-daemon's --export): each
// device has its own socket (socket-path= in its spec, or the activated
// socket named like its id=), its own connection loop thread and workers;
// daemon_plan.h has the rules that keep this unambiguous.
//
// Server mode (default) creates each socket with mode 0600 (--socket-mode,
// --socket-group widen it) and serves one front-end at a time per device,
// accepting the next after a disconnect. Client mode connects to a
// front-end's socket, reconnecting after a disconnect. SIGTERM / SIGINT
// stop it cleanly: every device is reset (in-flight requests finished), the
// socket files it created removed. SIGUSR1 logs every queue's state (ring
// indexes, event indexes, requests in flight, last kick, interrupt and
// completion): for a guest that seems stuck. A blk queue with requests in
// flight and no completion for 5 s logs the same on its own. Log lines
// (--log, --log-level; daemon_log.h) carry the device's name and its
// connection number ([#N]).
//
// --control-socket PATH serves statistics and online resize on a second
// Unix socket (control_server.h, control_commands.h; created like the
// vhost-user sockets, with --socket-mode / --socket-group, and removed on
// exit), on its own thread; `vhost-user-device --query PATH [stats|resize|
// help] [DEVICE]` asks it and prints the JSON reply. SIGHUP resizes every
// blk device to its image's size now (growing only), as `resize` does.
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
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
#include "daemon_plan.h"
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

// One per device (written by the SIGUSR1 handler; sized before the handler
// is installed and never resized after).
std::vector<int> g_dump_fds;

int g_hangup_fd = -1;

void OnSignal(int) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_stop_fd, &one, sizeof one);
}

void OnDumpSignal(int) {
  const uint64_t one = 1;
  for (int fd : g_dump_fds) {
    [[maybe_unused]] ssize_t n = write(fd, &one, sizeof one);
  }
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

// --query PATH [COMMAND [DEVICE]]: prints the daemon's reply.
int Query(const std::string& path, const std::vector<char*>& rest) {
  if (rest.size() > 3) {
    return Fail(absl::StrCat(
        "--query takes one command (stats, resize, help) and at most a "
        "device name, not also '",
        rest[3], "'"));
  }
  std::string command = rest.size() >= 2 ? rest[1] : "stats";
  if (rest.size() == 3) absl::StrAppend(&command, " ", rest[2]);
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

void NotifyOrLog(std::string_view state) {
  absl::Status s = vhost_user::NotifyServiceManager(state);
  if (!s.ok()) virtio::Log(virtio::LogLevel::kWarning, StdView(s.message()));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(absl::StrCat(
      "serves libvirtio devices over vhost-user.\n\n"
      "usage: vhost-user-device (--socket-path PATH [--client] | --fd N)\n"
      "         [--socket-mode MODE] [--socket-group GROUP]\n"
      "         [--busy-poll | --poll-us=N]\n"
      "         (--device SPEC | --blk-file FILE [--read-only])\n"
      "         [--control-socket PATH]\n"
      "       vhost-user-device [--client] --device SPEC,socket-path=PATH\n"
      "         --device SPEC,socket-path=PATH ...   (several devices)\n"
      "       vhost-user-device --print-capabilities [--device TYPE]\n"
      "       vhost-user-device --query PATH [stats|resize|help] [DEVICE]\n\n"
      "SPEC (plus socket-path=PATH, this device's own socket):\n",
      vhost_user::DeviceSpecHelp()));
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "vhost-user/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  // Flag names may be spelled with dashes (--busy-poll, --no-packed) as
  // well as with Abseil's underscores. Every --device is taken out here:
  // Abseil keeps only the last of a repeated flag.
  std::vector<std::string> normalized;
  std::vector<std::string> device_texts;
  bool print_capabilities = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i == 0 || a == "--" || a.size() < 2 || a[0] != '-') {
      normalized.push_back(std::move(a));
      if (normalized.back() == "--") {
        normalized.insert(normalized.end(), argv + i + 1, argv + argc);
        break;
      }
      continue;
    }
    if (a == "--help" || a == "-help" || a == "-h" || a == "--helpfull") {
      return PrintHelp();
    }
    if (a[1] == '-') {
      const size_t end = std::min(a.find('='), a.size());
      std::replace(a.begin() + 2, a.begin() + static_cast<ptrdiff_t>(end), '-',
                   '_');
    }
    print_capabilities |= IsFlag(a, "print_capabilities");
    if (IsFlag(a, "device")) {
      const size_t eq = a.find('=');
      if (eq != std::string::npos) {
        device_texts.push_back(a.substr(eq + 1));
        continue;
      }
      if (i + 1 < argc) {
        device_texts.emplace_back(argv[++i]);
        continue;
      }
    }
    normalized.push_back(std::move(a));
  }
  if (print_capabilities) {
    // The type of the first device, else --blk-file, else the program's.
    std::vector<std::string> for_capabilities = {normalized[0]};
    if (!device_texts.empty()) {
      for_capabilities.push_back("--device=" + device_texts.front());
    }
    for_capabilities.insert(for_capabilities.end(), normalized.begin() + 1,
                            normalized.end());
    return PrintCapabilities(for_capabilities);
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
  absl::StatusOr<std::vector<vhost_user::ActivatedSocket>> activated =
      vhost_user::TakeActivatedSockets();
  if (!activated.ok()) return Fail(StdView(activated.status().message()));
  const vhost_user::DaemonFlags flags{
      .argv0 = normalized[0],
      .devices = device_texts,
      .blk_file = absl::GetFlag(FLAGS_blk_file),
      .read_only = absl::GetFlag(FLAGS_read_only),
      .socket_path = absl::GetFlag(FLAGS_socket_path),
      .socket_alias = absl::GetFlag(FLAGS_socket),
      .fd = absl::GetFlag(FLAGS_fd),
      .client = absl::GetFlag(FLAGS_client),
      .socket_access_given = !absl::GetFlag(FLAGS_socket_mode).empty() ||
                             !absl::GetFlag(FLAGS_socket_group).empty(),
      .no_packed = absl::GetFlag(FLAGS_no_packed)};
  absl::StatusOr<std::vector<vhost_user::PlannedDevice>> plan =
      vhost_user::PlanDaemon(flags, *activated);
  if (!plan.ok()) return Fail(StdView(plan.status().message()));
  absl::StatusOr<vhost_user::SocketAccess> access =
      vhost_user::ParseSocketAccess(absl::GetFlag(FLAGS_socket_mode),
                                    absl::GetFlag(FLAGS_socket_group));
  if (!access.ok()) return Fail(StdView(access.status().message()));
  absl::StatusOr<vhost_user::DaemonLogOptions> log_options =
      vhost_user::ParseDaemonLogOptions(absl::GetFlag(FLAGS_log),
                                        absl::GetFlag(FLAGS_log_level));
  if (!log_options.ok()) return Fail(StdView(log_options.status().message()));
  // Before the devices are built: their own lines (a pty's path) go there
  // too.
  absl::Status log_installed = vhost_user::InstallDaemonLog(*log_options);
  if (!log_installed.ok()) return Fail(StdView(log_installed.message()));
  std::vector<vhost_user::ServedDevice> devices;
  for (const vhost_user::PlannedDevice& p : *plan) {
    absl::StatusOr<vhost_user::ServedDevice> served =
        vhost_user::MakeServedDevice(p.spec);
    if (!served.ok()) return Fail(StdView(served.status().message()));
    devices.push_back(*std::move(served));
  }

  g_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g_stop_fd < 0) return Fail("eventfd failed");
  // Each device's loop drains its own dump eventfd: one per device.
  g_dump_fds.resize(devices.size(), -1);
  for (int& fd : g_dump_fds) {
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return Fail("eventfd failed");
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // SIGUSR1: log every queue's state (a guest that seems stuck).
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

  // Sockets are created here rather than by RunDaemon(): with the
  // permissions asked for, and all of them before READY=1, so that a
  // front-end started on readiness finds its socket.
  std::vector<vhost_user::DaemonOptions> options(plan->size());
  std::vector<vhost_user::UniqueFd> created(plan->size());
  auto remove_created = [&] {
    for (size_t i = 0; i < created.size(); ++i) {
      if (created[i]) unlink((*plan)[i].endpoint.socket_path.c_str());
    }
  };
  for (size_t i = 0; i < plan->size(); ++i) {
    const vhost_user::PlannedDevice& p = (*plan)[i];
    vhost_user::DaemonOptions& o = options[i];
    o.client = flags.client;
    o.socket_path = p.endpoint.description;
    o.serve.name = p.name;
    // The protocol's own lines (features negotiated, dirty logging) name
    // the device like the daemon's.
    o.serve.backend.name = o.serve.name;
    if (!o.client && p.endpoint.inherited_fd < 0) {
      absl::StatusOr<vhost_user::UniqueFd> l =
          vhost_user::CreateListeningSocket(p.endpoint.socket_path, *access);
      if (!l.ok()) {
        remove_created();
        return Fail(StdView(l.status().message()));
      }
      created[i] = *std::move(l);
      o.listen_fd = created[i].get();
    } else if (!o.client) {
      o.listen_fd = p.endpoint.inherited_fd;
    } else {
      o.socket_path = p.endpoint.socket_path;
    }
    virtio::Logf(virtio::LogLevel::kInfo, "%s: serving %s", o.serve.name,
                 vhost_user::DeviceSummary(p.spec, *devices[i].device));
    if (!o.client) {
      virtio::Logf(virtio::LogLevel::kInfo, "%s: listening on %s", o.serve.name,
                   p.endpoint.description);
    }
    o.serve.stop_fd = g_stop_fd;
    o.serve.dump_fd = g_dump_fds[i];
    o.serve.busy_poll = absl::GetFlag(FLAGS_busy_poll);
    o.serve.poll_us = absl::GetFlag(FLAGS_poll_us);
  }
  // The control socket and SIGHUP, on their own thread.
  const std::string control_path = absl::GetFlag(FLAGS_control_socket);
  vhost_user::UniqueFd control_listener;
  if (!control_path.empty()) {
    absl::StatusOr<vhost_user::UniqueFd> l =
        vhost_user::CreateListeningSocket(control_path, *access);
    if (!l.ok()) {
      remove_created();
      return Fail(StdView(l.status().message()));
    }
    control_listener = *std::move(l);
  }
  // Per device: its connection's state (published by its loop), and what
  // the control socket reads. Sized once: the targets point into them.
  std::vector<vhost_user::ConnectionState> states(plan->size());
  std::vector<std::string> type_names(plan->size());
  std::vector<vhost_user::ControlTarget> targets(plan->size());
  for (size_t i = 0; i < plan->size(); ++i) {
    const vhost_user::PlannedDevice& p = (*plan)[i];
    const std::string_view type = virtio::catalog::DeviceTypeName(p.spec.type);
    type_names[i].assign(type.data(), type.size());
    options[i].serve.state = &states[i];
    targets[i] = {.subject = {.type = type_names[i],
                              .name = p.label,
                              .spec = p.spec.text,
                              .device = devices[i].device.get(),
                              .control = devices[i].control.get(),
                              .connection = &states[i]},
                  .control = devices[i].control.get()};
  }
  absl::StatusOr<std::unique_ptr<vhost_user::ControlServer>> control_server =
      vhost_user::ControlServer::Start(
          std::move(control_listener),
          [&](absl::string_view command) {
            return vhost_user::HandleDaemonCommand(targets, command);
          },
          g_hangup_fd, [&] { vhost_user::ResizeEveryBlk(targets, "SIGHUP"); });
  if (!control_server.ok()) {
    remove_created();
    if (!control_path.empty()) unlink(control_path.c_str());
    return Fail(StdView(control_server.status().message()));
  }
  if (!control_path.empty()) {
    virtio::Logf(virtio::LogLevel::kInfo,
                 "vhost-user-device: control socket %s", control_path);
  }
  NotifyOrLog(absl::StrCat("READY=1\nSTATUS=serving ",
                           plan->size() == 1
                               ? absl::StrCat((*plan)[0].spec.text, " on ",
                                              (*plan)[0].endpoint.description)
                               : absl::StrCat(plan->size(), " devices")));
  // One loop per device, each on its own thread: a device's front-end
  // coming and going never waits for another's. The first loop to end
  // (stop signal, or an error) stops the others.
  std::vector<absl::Status> results(plan->size());
  std::vector<std::thread> loops;
  for (size_t i = 0; i < plan->size(); ++i) {
    loops.emplace_back([&, i] {
      results[i] = vhost_user::RunDaemon(*devices[i].device, options[i]);
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = write(g_stop_fd, &one, sizeof one);
    });
  }
  for (std::thread& t : loops) t.join();
  NotifyOrLog("STOPPING=1");
  control_server->reset();  // before the devices it reads go
  if (!control_path.empty()) unlink(control_path.c_str());
  // Finishes in-flight requests, flushes nothing left behind (each
  // device's control part refers to the device: it goes first).
  for (vhost_user::ServedDevice& d : devices) {
    d.control.reset();
    d.device.reset();
  }
  remove_created();
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].ok()) {
      return Fail(absl::StrCat((*plan)[i].name, ": ", results[i].message()));
    }
  }
  virtio::Log(virtio::LogLevel::kInfo, "vhost-user-device: stopped");
  return 0;
}
