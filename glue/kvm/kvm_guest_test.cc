// kvm_guest_test — runs the virtio-kvm test guest under the VMM and checks
// the result: the VMM's exit status (which mirrors the guest's report), the
// per-check lines, the disk image the guest wrote, and in hostile mode that
// the VMM logged what the guest did wrong.
//
//   kvm_guest_test --vmm virtio-kvm --guest guest.elf --workdir DIR
//       --name NAME --transport mmio|pci|mixed [--flags F,...] [--readonly]
//       [--devices rng,blk,net,console] [--blk-queues N]
//
// With console, the VMM's stdin is a file holding one line of input; the
// guest must print its lines on the console (the VMM's stdout) and echo
// the input back.
//
// Exit 77 (ctest SKIP_RETURN_CODE) when /dev/kvm is missing or cannot
// create a VM, after saying why.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "boot_info.h"

namespace {

constexpr int kSkip = 77;
constexpr uint32_t kDiskSectors = 2048;  // 1 MiB
constexpr uint8_t kFill = 0xaa;

struct Args {
  std::string vmm, guest, workdir, name, transport = "mmio", flags;
  std::string devices = "rng,blk";
  std::string blk_queues = "1";
  bool readonly = false;
};

constexpr char kConsoleInput[] = "ping-from-host-4711\n";

int Fail(const std::string& why) {
  std::printf("FAIL: %s\n", why.c_str());
  return 1;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

// Runs argv with stdout+stderr to `log` (and stdin from `in`, if given);
// returns the exit status or -1.
int Run(const std::vector<std::string>& argv, const std::string& log,
        const std::string& in) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(127);
    dup2(fd, 1);
    dup2(fd, 2);
    if (!in.empty()) {
      const int ifd = open(in.c_str(), O_RDONLY);
      if (ifd < 0) _exit(127);
      dup2(ifd, 0);
    }
    std::vector<char*> cargv;
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--readonly") {
      a.readonly = true;
      continue;
    }
    if (i + 1 >= argc) return Fail("missing value for " + k);
    const std::string v = argv[++i];
    if (k == "--vmm") a.vmm = v;
    else if (k == "--guest") a.guest = v;
    else if (k == "--workdir") a.workdir = v;
    else if (k == "--name") a.name = v;
    else if (k == "--transport") a.transport = v;
    else if (k == "--flags") a.flags = v;
    else if (k == "--devices") a.devices = v;
    else if (k == "--blk-queues") a.blk_queues = v;
    else return Fail("unknown option " + k);
  }
  if (a.vmm.empty() || a.guest.empty() || a.workdir.empty() || a.name.empty()) {
    return Fail("--vmm, --guest, --workdir and --name are required");
  }
  const int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    std::printf("SKIP: /dev/kvm unavailable: %s\n", strerror(errno));
    return kSkip;
  }
  close(kvm);

  mkdir(a.workdir.c_str(), 0755);
  const std::string disk = a.workdir + "/" + a.name + ".img";
  const std::string log = a.workdir + "/" + a.name + ".log";
  const std::string initial(kDiskSectors * 512, static_cast<char>(kFill));
  {
    std::ofstream out(disk, std::ios::binary | std::ios::trunc);
    out.write(initial.data(), static_cast<std::streamsize>(initial.size()));
    if (!out) return Fail("cannot write " + disk);
  }

  std::vector<std::string> cmd = {a.vmm, "--kernel", a.guest, "--mem", "32",
                                  "--timeout", "150"};
  const std::string devs = "," + a.devices + ",";
  const bool want_rng = absl::StrContains(devs, ",rng,");
  const bool want_blk = absl::StrContains(devs, ",blk,");
  const bool want_net = absl::StrContains(devs, ",net,");
  const bool want_console = absl::StrContains(devs, ",console,");
  std::string blk = "blk,path=" + disk + (a.readonly ? ",readonly=on" : "");
  if (a.blk_queues != "1") blk += ",queues=" + a.blk_queues;
  std::string rng = "rng";
  std::string net = "net,backend=loopback";
  std::string console = "console,backend=stdio";
  const bool mixed = a.transport == "mixed";
  if (mixed) {
    // Pinned placement on both transports, checked against --print-placement.
    rng += ",transport=mmio,addr=0xd0003000,irq=9";
    blk += ",id=disk0,addr=00:05.0,irq=11";
    net += ",transport=pci";
    console += ",transport=mmio";
    cmd.push_back("--print-placement");
  } else {
    rng += ",transport=" + a.transport;
    blk += ",transport=" + a.transport;
    net += ",transport=" + a.transport;
    console += ",transport=" + a.transport;
  }
  if (want_rng) cmd.insert(cmd.end(), {"--device", rng});
  if (want_blk) cmd.insert(cmd.end(), {"--device", blk});
  if (want_net) cmd.insert(cmd.end(), {"--device", net});
  if (want_console) cmd.insert(cmd.end(), {"--device", console});
  std::string input;
  if (want_console) {
    input = a.workdir + "/" + a.name + ".stdin";
    std::ofstream in(input, std::ios::binary | std::ios::trunc);
    in << kConsoleInput;
    if (!in) return Fail("cannot write " + input);
  }
  if (!a.flags.empty()) cmd.insert(cmd.end(), {"--guest-flags", a.flags});

  std::string shown;
  for (const std::string& c : cmd) shown += c + " ";
  std::printf("run: %s\n", shown.c_str());
  std::fflush(stdout);
  const int rc = Run(cmd, log, input);
  const std::string out = ReadFile(log);
  std::printf("---- VMM output (%s) ----\n%s---- exit status %d ----\n",
              log.c_str(), out.c_str(), rc);
  if (rc == kSkip) {
    std::printf("SKIP: the VMM could not create a KVM VM (see above)\n");
    return kSkip;
  }
  if (rc != 0) return Fail(absl::StrFormat("VMM exit status %d", rc));
  if (absl::StrContains(out, "FAIL ")) return Fail("the guest reported failures");
  if ((want_rng && !absl::StrContains(out, "PASS rng: ")) ||
      (want_blk && !absl::StrContains(out, "PASS blk: ")) ||
      (want_net && !absl::StrContains(out, "PASS net: ")) ||
      (want_console && !absl::StrContains(out, "PASS console: "))) {
    return Fail("missing check lines for a device");
  }
  if (want_net) {
    for (const char* expect : {"PASS net: 4 frames received back byte for byte (merged buffers)",
                               "PASS net: 4 frames received back byte for byte\n"}) {
      if (!absl::StrContains(out, expect)) {
        return Fail(absl::StrFormat("no '%s'", expect));
      }
    }
  }
  if (want_console) {
    // Written by the console device to stdout, not by the UART.
    for (const std::string& expect :
         {std::string("\nconsole: hello from the virtio-console guest\n"),
          std::string("\nconsole: multi-descriptor line\n"),
          std::string("\nconsole: emergency write\n"),
          "\nconsole echo: " + std::string(kConsoleInput)}) {
      if (!absl::StrContains(out, expect)) {
        return Fail(absl::StrFormat("VMM stdout lacks the console text '%s'",
                                    absl::StripAsciiWhitespace(expect)));
      }
    }
  }
  if (a.blk_queues != "1" &&
      !absl::StrContains(out, "PASS blk: multiqueue: a read on request queue 1")) {
    return Fail("multiqueue check did not run");
  }
  if (!absl::StrContains(out, " 0 failed")) return Fail("no guest summary");
  if (mixed && (!absl::StrContains(out, "transport=mmio,addr=0xd0003000,irq=9") ||
                !absl::StrContains(out, "id=disk0") ||
                !absl::StrContains(out, "transport=pci,addr=00:05.0,irq=11"))) {
    return Fail("--print-placement does not show the pinned placement");
  }
  // MSI-X must take the irqfd + GSI route path: KVM_SIGNAL_MSI is only the
  // fallback, and a silent fallback once hid a broken KVM_SET_GSI_ROUTING
  // (kvm_uapi.h).
  const bool msix = !absl::StrContains(a.flags, "intx") &&
                    (a.transport == "pci" || (mixed && (want_blk || want_net)));
  if (msix && !absl::StrContains(out, "msi_routing=yes")) {
    return Fail("MSI-X did not use irqfd + GSI routes (no msi_routing=yes)");
  }
  if (absl::StrContains(a.flags, "hostile")) {
    for (const char* expect : {"device needs reset", "read-only", "guest error"}) {
      if (!absl::StrContains(out, expect)) {
        return Fail(absl::StrFormat("VMM log lacks '%s'", expect));
      }
    }
  }

  if (!want_blk) {
    std::printf("PASS: %s\n", a.name.c_str());
    return 0;
  }
  // The disk: the written sectors hold the pattern, the discarded and
  // written-zeroes ones are zero, everything else is untouched (all of it
  // when read-only).
  const std::string after = ReadFile(disk);
  if (after.size() != initial.size()) return Fail("disk image changed size");
  for (uint32_t s = 0; s < kDiskSectors; ++s) {
    for (uint32_t b = 0; b < 512; ++b) {
      uint8_t want = kFill;
      if (!a.readonly) {
        if (s >= kvmglue::kBlkWriteSector &&
            s < kvmglue::kBlkWriteSector + kvmglue::kBlkWriteSectors) {
          want = kvmglue::BlkPattern(s, b);
        } else if ((s >= kvmglue::kBlkDiscardSector &&
                    s < kvmglue::kBlkDiscardSector + kvmglue::kBlkDiscardSectors) ||
                   (s >= kvmglue::kBlkWriteZeroesSector &&
                    s < kvmglue::kBlkWriteZeroesSector +
                            kvmglue::kBlkWriteZeroesSectors)) {
          want = 0;
        }
      }
      const uint8_t got = static_cast<uint8_t>(after[s * 512 + b]);
      if (got != want) {
        return Fail(absl::StrFormat(
            "disk sector %u byte %u is 0x%02x, expected 0x%02x", s, b, got, want));
      }
    }
  }
  std::printf("PASS: %s (disk image verified)\n", a.name.c_str());
  return 0;
}
