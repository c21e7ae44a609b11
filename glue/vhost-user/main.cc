// vhost-user-device — serves one libvirtio device to a vhost-user front-end
// (QEMU, Cloud Hypervisor, DPDK virtio-user, User-mode Linux).
//
//   vhost-user-device --socket /run/disk0.sock
//       --device blk,path=disk.img,num-queues=2,serial=disk0
//   vhost-user-device --client --socket /tmp/qemu-rng.sock --device rng
//
// Server mode (default) creates the socket with mode 0600 and serves one
// front-end at a time, accepting the next after a disconnect. Client mode
// connects to a front-end's socket, reconnecting after a disconnect.
// SIGTERM / SIGINT stop it cleanly: the device is reset (in-flight requests
// finished), the socket file removed. SIGUSR1 logs every queue's state (ring
// indexes, event indexes, requests in flight, last kick, interrupt and
// completion): for a guest that seems stuck. A blk queue with requests in
// flight and no completion for 5 s logs the same on its own. Log lines
// carry the connection number ([#N]).
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
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
#include "device_spec.h"
#include "vhost_user/server.h"
#include "virtio/log.h"

ABSL_FLAG(std::string, socket, "", "Unix socket path (required)");
ABSL_FLAG(bool, client, false,
          "connect to a front-end listening on --socket instead of listening");
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
ABSL_FLAG(bool, no_packed, false,
          "never offer packed rings (same as packed=off in --device)");

namespace {

int g_stop_fd = -1;

int g_dump_fd = -1;

void OnSignal(int) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_stop_fd, &one, sizeof one);
}

void OnDumpSignal(int) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(g_dump_fd, &one, sizeof one);
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "vhost-user-device: %s\n", msg.c_str());
  return 2;
}

// Abseil's own --help exits with status 1, which scripts read as a failure:
// asking for help is not one. Prints the usage and this daemon's flags.
int PrintHelp() {
  std::printf("vhost-user-device: %s\n\nflags:\n",
              std::string(absl::ProgramUsageMessage()).c_str());
  std::map<std::string, const absl::CommandLineFlag*> ours;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::EndsWith(flag->Filename(), "vhost-user/main.cc")) {
      ours.emplace(std::string(name), flag);
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

// Every line says which connection it belongs to: the device's own lines
// name the device only, and one daemon serves guest after guest.
void ConnectionSink(virtio::LogLevel level, std::string_view message) {
  static constexpr const char* kNames[] = {"I", "W", "E"};
  const int c = vhost_user::CurrentConnection();
  std::string prefix = c > 0 ? absl::StrCat("[#", c, "] ") : std::string();
  std::fprintf(stderr, "libvirtio %s: %s%.*s\n",
               kNames[static_cast<int>(level)], prefix.c_str(),
               static_cast<int>(message.size()), message.data());
}

bool IsFlag(const std::string& arg, const std::string& name) {
  for (const char* dashes : {"-", "--"}) {
    const std::string f = std::string(dashes) + name;
    if (arg == f || absl::StartsWith(arg, f + "=")) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      absl::StrCat("serves a libvirtio device over vhost-user.\n\n"
                   "usage: vhost-user-device --socket PATH [--client] "
                   "[--busy-poll | --poll-us=N] --device SPEC\n\n"
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
  for (size_t i = 1; i < normalized.size(); ++i) {
    std::string& a = normalized[i];
    if (a == "--") break;
    if (a == "--help" || a == "-help" || a == "-h" || a == "--helpfull") {
      return PrintHelp();
    }
    if (IsFlag(a, "device")) ++devices;
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    const size_t end = std::min(a.find('='), a.size());
    std::replace(a.begin() + 2, a.begin() + static_cast<ptrdiff_t>(end), '-',
                 '_');
  }
  // A flag given twice silently keeps the last one: a second device would
  // be dropped without a word.
  if (devices > 1) {
    return Fail(
        "--device given more than once: one daemon serves one device "
        "(start one vhost-user-device per device)");
  }
  std::vector<char*> args;
  for (std::string& a : normalized) args.push_back(a.data());
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (rest.size() > 1) {
    return Fail(
        absl::StrCat("unexpected argument '", rest[1], "' (see --help)"));
  }
  const std::string socket = absl::GetFlag(FLAGS_socket);
  std::string device = absl::GetFlag(FLAGS_device);
  if (socket.empty()) return Fail("--socket PATH is required (see --help)");
  if (device.empty()) return Fail("--device SPEC is required (see --help)");
  auto spec = vhost_user::ParseDeviceSpec(device);
  if (!spec.ok()) return Fail(std::string(spec.status().message()));
  if (absl::GetFlag(FLAGS_no_packed)) spec->packed = false;
  auto dev = vhost_user::MakeDevice(*spec);
  if (!dev.ok()) return Fail(std::string(dev.status().message()));

  virtio::SetLogSink(&ConnectionSink);
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
  signal(SIGPIPE, SIG_IGN);

  vhost_user::DaemonOptions o;
  o.socket_path = socket;
  o.client = absl::GetFlag(FLAGS_client);
  o.serve.name = absl::StrCat("vhost-user-device[", spec->type, "]");
  o.serve.stop_fd = g_stop_fd;
  o.serve.dump_fd = g_dump_fd;
  o.serve.busy_poll = absl::GetFlag(FLAGS_busy_poll);
  o.serve.poll_us = absl::GetFlag(FLAGS_poll_us);
  absl::Status s = vhost_user::RunDaemon(**dev, o);
  dev->reset();  // finishes in-flight requests, flushes nothing left behind
  if (!s.ok()) return Fail(std::string(s.message()));
  virtio::Log(virtio::LogLevel::kInfo, "vhost-user-device: stopped");
  return 0;
}
