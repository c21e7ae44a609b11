// uppercase_daemon — serves the uppercase echo device (uppercase_device.h)
// over vhost-user with the installed libvirtio::vhost_user: the whole
// daemon a third party writes for a device of its own.
//
//   uppercase_daemon --socket PATH [--connections N] [--answer-unchanged]
//
// Listens at PATH and serves N front-ends one after another (0: until
// killed). --answer-unchanged makes the device echo the text as it came,
// for the test that proves the front-end's check catches a wrong answer.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "uppercase_device.h"
#include "vhost_user/device_adapter.h"
#include "vhost_user/interrupt.h"
#include "vhost_user/memory_table.h"
#include "vhost_user/server.h"

namespace {

using Device = uppercase::UppercaseDevice<vhost_user::VhostTraits>;

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --socket PATH [--connections N] "
               "[--answer-unchanged]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  int connections = 1;
  uppercase::Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--socket" && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (arg == "--connections" && i + 1 < argc) {
      connections = std::atoi(argv[++i]);
    } else if (arg == "--answer-unchanged") {
      options.answer_unchanged = true;
    } else {
      return Usage(argv[0]);
    }
  }
  if (socket_path.empty() || connections < 0) return Usage(argv[0]);

  // DeviceAdapter owns the guest memory the front-end shares and the
  // interrupt sink (call eventfds), and drives the device as a virtio
  // driver would on the front-end's behalf.
  absl::StatusOr<std::unique_ptr<vhost_user::DeviceAdapter<Device>>> adapter =
      vhost_user::DeviceAdapter<Device>::Create(
          [&](const vhost_user::MemoryTable& memory,
              vhost_user::CallInterrupt& interrupt) {
            return std::make_unique<Device>(memory, interrupt, options);
          });
  if (!adapter.ok()) {
    std::fprintf(stderr, "uppercase_daemon: %s\n",
                 adapter.status().ToString().c_str());
    return 1;
  }

  vhost_user::DaemonOptions daemon;
  daemon.serve.name = "uppercase";
  daemon.socket_path = socket_path;
  daemon.max_connections = connections;
  const absl::Status served = vhost_user::RunDaemon(**adapter, daemon);
  if (!served.ok()) {
    std::fprintf(stderr, "uppercase_daemon: %s\n", served.ToString().c_str());
    return 1;
  }
  std::printf("uppercase_daemon: served %d front-end(s)\n", connections);
  return 0;
}
