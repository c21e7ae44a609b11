// src/placement.cc — see xen_glue/placement.h.
#include "xen_glue/placement.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace virtio::xg {

namespace {

std::atomic<uint64_t> g_nonce{0};

const char* KindName(Claim::Kind k) {
  switch (k) {
    case Claim::kMmio: return "mmio";
    case Claim::kPci: return "pci";
    case Claim::kIrq: return "irq";
  }
  return "?";
}

std::string Describe(const Claim& c) {
  if (c.kind == Claim::kPci) {
    const auto s = static_cast<uint32_t>(c.start);
    return absl::StrFormat("PCI %04x:%02x:%02x.%x", s >> 16, (s >> 8) & 0xff,
                           (s >> 3) & 0x1f, s & 7);
  }
  if (c.kind == Claim::kIrq) return absl::StrFormat("irq %u", c.start);
  return absl::StrFormat("MMIO 0x%x-0x%x", c.start, c.end);
}

bool Alive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

// Runs fn(claims) with the lock held; fn may modify and the result is saved.
template <typename Fn>
absl::Status Locked(const std::string& dir, DomId domid, Fn fn) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::UnavailableError(absl::StrFormat(
        "placement claims: cannot create %s: %s", dir, std::strerror(errno)));
  }
  const std::string lock = absl::StrCat(dir, "/dom", domid, ".lock");
  const std::string file = absl::StrCat(dir, "/dom", domid, ".claims");
  const int fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrFormat(
        "placement claims: cannot open %s: %s", lock, std::strerror(errno)));
  }
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  std::vector<Claim> claims;
  {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string kind;
      Claim c;
      ls >> c.pid >> c.owner >> kind >> std::hex >> c.start >> c.end >> std::dec >> c.name;
      if (!ls) continue;
      c.kind = kind == "pci" ? Claim::kPci : kind == "irq" ? Claim::kIrq : Claim::kMmio;
      if (Alive(c.pid)) claims.push_back(c);  // drop dead processes' claims
    }
  }
  absl::Status s = fn(claims);
  {
    const std::string tmp = file + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    for (const Claim& c : claims) {
      out << c.pid << ' ' << c.owner << ' ' << KindName(c.kind) << ' ' << std::hex
          << c.start << ' ' << c.end << std::dec << ' ' << c.name << '\n';
    }
    out.close();
    if (rename(tmp.c_str(), file.c_str()) != 0 && s.ok()) {
      s = absl::UnavailableError(absl::StrFormat("placement claims: rename: %s",
                                                 std::strerror(errno)));
    }
  }
  flock(fd, LOCK_UN);
  close(fd);
  return s;
}

}  // namespace

std::vector<Claim> ClaimsFor(GuestArch arch, const std::vector<DeviceSpec>& devices) {
  std::vector<Claim> out;
  for (const DeviceSpec& d : devices) {
    if (d.pci && d.pci_addr) {
      const uint32_t s = PciSbdf(d.pci_addr->seg, d.pci_addr->bus, d.pci_addr->dev, d.pci_addr->fn);
      out.push_back({Claim::kPci, s, s, d.id, 0, ""});
      continue;
    }
    if (d.mmio_base) {
      out.push_back({Claim::kMmio, *d.mmio_base, *d.mmio_base + kVirtioMmioSize - 1, d.id, 0, ""});
    }
    if (d.irq) {
      // SPIs and ISA IRQs live in different numbering; tag x86 ones.
      const uint64_t irq = *d.irq + (arch == GuestArch::kX86 ? 0x10000 : 0);
      out.push_back({Claim::kIrq, irq, irq, d.id, 0, ""});
    }
  }
  return out;
}

ClaimRegistry::ClaimRegistry(std::string dir, DomId domid)
    : dir_(std::move(dir)), domid_(domid) {
  owner_ = absl::StrCat(getpid(), ":", g_nonce.fetch_add(1));
}

ClaimRegistry::~ClaimRegistry() { Release(); }

absl::Status ClaimRegistry::Acquire(const std::vector<Claim>& wanted) {
  return Locked(dir_, domid_, [&](std::vector<Claim>& claims) -> absl::Status {
    for (const Claim& w : wanted) {
      for (const Claim& c : claims) {
        if (c.owner == owner_ || c.kind != w.kind) continue;
        if (w.start <= c.end && c.start <= w.end) {
          return absl::AlreadyExistsError(absl::StrFormat(
              "placement conflict on domain %u: %s for %s is already claimed "
              "by %s (%s) of backend pid %d; pin a different addr=/irq=",
              domid_, Describe(w), w.name, c.name, Describe(c), c.pid));
        }
      }
    }
    for (Claim w : wanted) {
      w.pid = getpid();
      w.owner = owner_;
      claims.push_back(w);
    }
    holding_ = true;
    return absl::OkStatus();
  });
}

void ClaimRegistry::Release() {
  if (!holding_) return;
  holding_ = false;
  (void)Locked(dir_, domid_, [&](std::vector<Claim>& claims) -> absl::Status {
    std::erase_if(claims, [&](const Claim& c) { return c.owner == owner_; });
    return absl::OkStatus();
  });
}

std::vector<Claim> ClaimRegistry::List() {
  std::vector<Claim> out;
  (void)Locked(dir_, domid_, [&](std::vector<Claim>& claims) -> absl::Status {
    out = claims;
    return absl::OkStatus();
  });
  return out;
}

}  // namespace virtio::xg
