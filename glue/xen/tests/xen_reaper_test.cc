// A backend that dies without stopping its ioreq server: the reaper
// (reaper.h) answers what it left pending and destroys the server, and the
// guardian (guardian.h) runs the reaper when, and only when, the backend
// process ends without its teardown.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "sim/sim_xen.h"
#include "xen_glue/abi.h"
#include "xen_glue/guardian.h"
#include "xen_glue/ioreq_server.h"
#include "xen_glue/reaper.h"

namespace virtio::xg {
namespace {

using sim::AccessStatus;
using sim::SimDeviceModel;
using sim::SimEvtchn;
using sim::SimForeignMemory;
using sim::SimXen;
using Server = IoreqServer<SimDeviceModel, SimForeignMemory, SimEvtchn>;

constexpr uint64_t kBase = 0x02000000;
// x86 HVM: after the server is gone, unclaimed reads return all ones.
const sim::SimOptions kX86{.arch = sim::Arch::kX86};
constexpr IoServId kNoServer = 0xffff;

class Counter : public IoDevice {
 public:
  uint64_t MmioRead(uint64_t /*offset*/, uint32_t /*size*/) override {
    return ++reads;
  }
  void MmioWrite(uint64_t /*offset*/, uint32_t /*size*/,
                 uint64_t /*v*/) override {}
  std::atomic<uint64_t> reads{0};
};

// A backend process's Xen handles and server; Crash() forgets the server
// without telling Xen and closes the event-channel handle, as the kernel
// does for a killed process.
struct DeadBackend {
  explicit DeadBackend(SimXen& xen)
      : dm(xen),
        fm(xen),
        ev(std::make_unique<SimEvtchn>(xen)),
        server(std::make_unique<Server>(
            dm, fm, *ev, IoreqServerOptions{.domid = xen.domid()})) {}
  // Starts serving `dev` at kBase; kNoServer if that failed.
  IoServId Serve(IoDevice* dev) {
    if (!server->AddMmio(kBase, 0x200, dev, "dev").ok() ||
        !server->Start().ok()) {
      return kNoServer;
    }
    return server->id();
  }
  void Crash(bool close_evtchn = true) {
    server->Abandon();
    server.reset();
    if (close_evtchn) ev.reset();
  }
  SimDeviceModel dm;
  SimForeignMemory fm;
  std::unique_ptr<SimEvtchn> ev;
  std::unique_ptr<Server> server;
};

// A vCPU reads from kBase and, with nobody answering, is still blocked
// after 100 ms (kTimeout).
sim::AccessResult ReadAndBlock(SimXen& xen, unsigned vcpu) {
  return xen.Run(vcpu,
                 {.type = kTypeCopy, .write = false, .addr = kBase, .size = 4},
                 {}, std::chrono::milliseconds(100));
}

// The guardian's side: its own handles.
struct Reaper {
  explicit Reaper(SimXen& xen) : dm(xen), fm(xen), ev(xen) {}
  absl::StatusOr<ReapReport> Reap(DomId domid, IoServId id,
                                  const ReapOptions& o = {}) {
    return ReapIoreqServer(dm, fm, ev, domid, id, o);
  }
  SimDeviceModel dm;
  SimForeignMemory fm;
  SimEvtchn ev;
};

TEST(XenReaper, AnswersTheRequestADeadBackendLeftAndDestroysItsServer) {
  SimXen xen(kX86);
  DeadBackend b(xen);
  Counter dev;
  const IoServId id = b.Serve(&dev);
  ASSERT_NE(id, kNoServer);
  b.Crash();
  // The vCPU traps into the dead server's range and waits for good.
  ASSERT_EQ(ReadAndBlock(xen, 0).status, AccessStatus::kTimeout);

  // The vCPU keeps waiting while the reaper works, as under Xen.
  sim::AccessResult resumed;
  std::thread vcpu([&] { resumed = xen.Resume(0); });
  Reaper r(xen);
  auto report = r.Reap(xen.domid(), id);
  vcpu.join();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->answered, 1u);
  EXPECT_EQ(report->adopted, 0u);
  EXPECT_EQ(report->attempts, 1u);
  EXPECT_EQ(report->unconsumed, 0u);
  // The waiting vCPU got "nothing here", not the device's answer.
  EXPECT_EQ(resumed.status, AccessStatus::kOk);
  EXPECT_EQ(resumed.data, 0xffffffffu);
  EXPECT_EQ(dev.reads.load(), 0u);
  EXPECT_FALSE(xen.server_exists(id));
  // Later accesses no longer reach a server: unclaimed, all ones, no hang.
  auto later = xen.Mmio(0, false, kBase, 4, 0);
  EXPECT_EQ(later.status, AccessStatus::kUnclaimed);
  EXPECT_EQ(later.data, 0xffffffffu);
  EXPECT_EQ(xen.mapped_pages(), 0u);
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
}

TEST(XenReaper, AdoptsARequestTheBackendTookButNeverAnswered) {
  SimXen xen(kX86);
  DeadBackend b(xen);
  Counter dev;
  const IoServId id = b.Serve(&dev);
  ASSERT_NE(id, kNoServer);
  auto stuck = xen.Run(
      1, {.type = kTypeCopy, .write = true, .addr = kBase + 8, .data = 5}, {},
      std::chrono::milliseconds(100));
  ASSERT_EQ(stuck.status, AccessStatus::kTimeout);
  // The backend took the request (READY -> INPROCESS) and then died.
  {
    void* addr = nullptr;
    void* res = b.fm.map_resource(xen.domid(), kResourceIoreqServer, id,
                                  ResourceFrameIoreq(0), 1, &addr,
                                  PROT_READ | PROT_WRITE, 0);
    ASSERT_NE(res, nullptr);
    auto* page = static_cast<IoreqSlot*>(addr);
    auto b30 = SlotByte30(page[1]);
    const uint8_t f = b30.load(std::memory_order_acquire);
    ASSERT_EQ(f & kFlagStateMask, kStateReady);
    b30.store(static_cast<uint8_t>((f & ~kFlagStateMask) | kStateInProcess),
              std::memory_order_release);
    b.fm.unmap_resource(res);
  }
  b.Crash();
  EXPECT_EQ(xen.SlotState(id, 1), kStateInProcess);

  sim::AccessResult resumed;
  std::thread vcpu([&] { resumed = xen.Resume(1); });
  Reaper r(xen);
  auto report = r.Reap(xen.domid(), id);
  vcpu.join();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->answered, 1u);
  EXPECT_EQ(report->adopted, 1u);
  EXPECT_EQ(resumed.status, AccessStatus::kOk);
  EXPECT_EQ(dev.reads.load(), 0u);
  EXPECT_FALSE(xen.server_exists(id));
  EXPECT_FALSE(xen.crashed()) << xen.crash_reason();
}

TEST(XenReaper, WaitsUntilTheDeadOwnersEventChannelsAreReleased) {
  SimXen xen(kX86);
  DeadBackend b(xen);
  Counter dev;
  const IoServId id = b.Serve(&dev);
  ASSERT_NE(id, kNoServer);
  ASSERT_EQ(ReadAndBlock(xen, 0).status, AccessStatus::kTimeout);
  // The kernel has not released the dead process's evtchn handle yet: its
  // ports are still bound and binding them again fails for a while.
  b.Crash(/*close_evtchn=*/false);
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    b.ev.reset();
  });
  sim::AccessResult resumed;
  std::thread vcpu([&] { resumed = xen.Resume(0); });
  Reaper r(xen);
  auto report = r.Reap(xen.domid(), id,
                       {.bind_deadline = std::chrono::milliseconds(10000),
                        .retry_interval = std::chrono::milliseconds(10)});
  release.join();
  vcpu.join();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(report->attempts, 1u);
  EXPECT_EQ(report->answered, 1u);
  EXPECT_EQ(resumed.status, AccessStatus::kOk);
  EXPECT_FALSE(xen.server_exists(id));
}

TEST(XenReaper, GivesUpAfterTheDeadlineButStillDestroysTheServer) {
  SimXen xen(kX86);
  DeadBackend b(xen);
  Counter dev;
  const IoServId id = b.Serve(&dev);
  ASSERT_NE(id, kNoServer);
  b.Crash(/*close_evtchn=*/false);  // and it never is released
  Reaper r(xen);
  auto report = r.Reap(xen.domid(), id,
                       {.bind_deadline = std::chrono::milliseconds(100),
                        .retry_interval = std::chrono::milliseconds(10)});
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(report.status())) << report.status();
  EXPECT_FALSE(xen.server_exists(id));
  // Nothing routes to it any more.
  EXPECT_EQ(xen.Mmio(0, false, kBase, 4, 0).status, AccessStatus::kUnclaimed);
}

TEST(XenReaper, ReportsAServerThatIsAlreadyGone) {
  SimXen xen(kX86);
  Reaper r(xen);
  auto report = r.Reap(xen.domid(), 3);
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(absl::IsNotFound(report.status())) << report.status();
}

// --- the guardian: a real fork, a real SIGKILL
// ---------------------------------

class GuardianTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("xen_guardian_test." + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    log_ = dir_ / "reaped";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Forks a "backend" that starts a guardian, protects server (7, 3), runs
  // `then` and exits 0 (unless `then` ended it). Returns how it ended.
  template <typename Fn>
  int RunBackend(Fn then) {
    const std::string log = log_.string();
    const pid_t pid = fork();
    if (pid == 0) {
      auto g = Guardian::Start([log](DomId domid, IoServId id, pid_t backend) {
        std::ofstream(log, std::ios::app)
            << domid << ' ' << id << ' ' << backend << '\n';
      });
      if (!g.ok() || !g->Protect(7, 3).ok()) _exit(2);
      then(*g);
      _exit(0);
    }
    backend_ = pid;
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
  }

  // What the guardian wrote, waiting up to 10 s for a first line.
  std::string WaitForReap() {
    for (int i = 0; i < 1000 && !std::filesystem::exists(log_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(20));  // the whole line
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::filesystem::path dir_, log_;
  pid_t backend_ = -1;
};

TEST_F(GuardianTest, ReapsWhenTheBackendIsKilled) {
  const int status = RunBackend([](Guardian&) { raise(SIGKILL); });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WaitForReap(), "7 3 " + std::to_string(backend_) + "\n");
}

TEST_F(GuardianTest, ReapsWhenTheBackendExitsWithoutItsTeardown) {
  // _exit() from a fatal path that skips destructors is a crash too.
  const int status = RunBackend([](Guardian&) { _exit(3); });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_EQ(WaitForReap(), "7 3 " + std::to_string(backend_) + "\n");
}

TEST_F(GuardianTest, StaysQuietAfterAnOrderlyExit) {
  const int status = RunBackend([](Guardian& g) {
    const pid_t gp = g.pid();
    g.Release();  // collects the guardian: it has exited when this returns
    _exit(kill(gp, 0) == 0 ? 4 : 0);
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the guardian outlived Release()";
  EXPECT_FALSE(std::filesystem::exists(log_));
}

TEST_F(GuardianTest, SurvivesTheSignalsThatStopTheBackend) {
  // SIGTERM/SIGINT/SIGHUP sent to the whole group (systemd, a terminal)
  // must not take the guardian down before the backend's own fate is
  // known: here the backend then dies by SIGKILL and is still reaped.
  const int status = RunBackend([](Guardian& g) {
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) kill(g.pid(), sig);
    raise(SIGKILL);
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WaitForReap(), "7 3 " + std::to_string(backend_) + "\n");
}

TEST(Guardian, ProtectAfterReleaseIsRefused) {
  auto g = Guardian::Start([](DomId, IoServId, pid_t) {});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->active());
  g->Release();
  EXPECT_FALSE(g->active());
  EXPECT_FALSE(g->Protect(1, 1).ok());
}

}  // namespace
}  // namespace virtio::xg
