#include "sigbus_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace vhost_user {
namespace {

// One registered mapping. `base` is published last (release) and cleared
// first: the handler reads it (acquire) before the rest.
struct Slot {
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> length{0};
  std::atomic<int> notify_fd{-1};
  std::atomic<const char*> what{nullptr};
  // Set by the handler; read and cleared by TakeFaults.
  std::atomic<uintptr_t> fault_address{0};
  std::atomic<bool> faulted{false};
};

Slot g_slots[SigbusGuard::kMaxMappings];
// Registration is control-path only; the mutex keeps two connections'
// control threads from taking the same free slot.
std::mutex g_mu;
struct sigaction g_previous;
std::once_flag g_installed;

// Async-signal-safe: atomics, mmap, write, sigaction, raise.
void OnSigbus(int sig, siginfo_t* info, void* context) {
  const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  if (info->si_code > 0) {  // a fault, not kill(2)
    for (Slot& s : g_slots) {
      const uintptr_t base = s.base.load(std::memory_order_acquire);
      if (base == 0) continue;
      const size_t length = s.length.load(std::memory_order_relaxed);
      if (address - base >= length) continue;
      void* p =
          mmap(reinterpret_cast<void*>(base), length, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) break;  // cannot contain it
      s.fault_address.store(address, std::memory_order_relaxed);
      s.faulted.store(true, std::memory_order_release);
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n =
          write(s.notify_fd.load(std::memory_order_relaxed), &one, sizeof one);
      return;  // the access is retried, on zeroes now
    }
  }
  // Not ours.
  if (g_previous.sa_flags & SA_SIGINFO) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: returning re-executes the faulting access, which now
  // kills the process as if we had never been here; a sent signal is
  // raised again.
  signal(SIGBUS, SIG_DFL);
  if (info->si_code <= 0) raise(SIGBUS);
}

void Install() {
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_previous);
}

}  // namespace

bool SigbusGuard::Register(void* base, size_t length, int notify_fd,
                           const char* what) {
  if (base == nullptr || length == 0) return false;
  std::call_once(g_installed, Install);
  std::lock_guard<std::mutex> l(g_mu);
  for (Slot& s : g_slots) {
    if (s.base.load(std::memory_order_relaxed) != 0) continue;
    s.length.store(length, std::memory_order_relaxed);
    s.notify_fd.store(notify_fd, std::memory_order_relaxed);
    s.what.store(what, std::memory_order_relaxed);
    s.fault_address.store(0, std::memory_order_relaxed);
    s.faulted.store(false, std::memory_order_relaxed);
    s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
    return true;
  }
  return false;
}

void SigbusGuard::Unregister(void* base) {
  if (base == nullptr) return;
  std::lock_guard<std::mutex> l(g_mu);
  for (Slot& s : g_slots) {
    if (s.base.load(std::memory_order_relaxed) ==
        reinterpret_cast<uintptr_t>(base)) {
      s.base.store(0, std::memory_order_release);
    }
  }
}

std::vector<SharedMemoryFault> SigbusGuard::TakeFaults(int notify_fd) {
  std::vector<SharedMemoryFault> out;
  std::lock_guard<std::mutex> l(g_mu);
  for (Slot& s : g_slots) {
    const uintptr_t base = s.base.load(std::memory_order_relaxed);
    if (base == 0 || s.notify_fd.load(std::memory_order_relaxed) != notify_fd ||
        !s.faulted.exchange(false, std::memory_order_acquire)) {
      continue;
    }
    out.push_back({s.what.load(std::memory_order_relaxed), base,
                   s.length.load(std::memory_order_relaxed),
                   s.fault_address.load(std::memory_order_relaxed)});
  }
  return out;
}

}  // namespace vhost_user
