// Several devices in one vhost-user-device process (--device repeated,
// like qemu-storage-daemon's --export): the rules that keep it unambiguous
// (PlanDaemon, daemon_plan.h), and the daemon binary serving two disks and
// an rng on their own sockets to front-ends connected at the same time,
// each front-end seeing its own device, by socket-path= and by socket
// activation matched on id=.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "control_server.h"
#include "daemon_plan.h"
#include "daemon_process.h"
#include "gtest/gtest.h"
#include "vhost_user/frontend/blk_client.h"

namespace vhost_user {
namespace {

using daemon_test::BindNotifySocket;
using daemon_test::ConnectBlk;
using daemon_test::Daemon;
using daemon_test::ListenAt;
using daemon_test::Listing;
using daemon_test::ReadFile;
using daemon_test::Receive;
using daemon_test::TempDir;

// The plan's error, "" when it succeeds.
std::string PlanError(const DaemonFlags& f,
                      const std::vector<ActivatedSocket>& activated = {}) {
  absl::StatusOr<std::vector<PlannedDevice>> p = PlanDaemon(f, activated);
  if (p.ok()) return "";
  const absl::string_view message = p.status().message();
  return {message.data(), message.size()};
}

TEST(DaemonPlanTest, OneDeviceTakesItsSocketFromOnePlace) {
  DaemonFlags f{.devices = {"rng"}, .socket_path = "/tmp/a.sock"};
  auto p = PlanDaemon(f, {});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 1u);
  EXPECT_EQ((*p)[0].endpoint.socket_path, "/tmp/a.sock");
  EXPECT_EQ((*p)[0].name, "vhost-user-device[rng]");
  // socket-path= in the spec does for one device what --socket-path does.
  f = {.devices = {"rng,id=r0,socket-path=/tmp/b.sock"}};
  p = PlanDaemon(f, {});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)[0].endpoint.socket_path, "/tmp/b.sock");
  EXPECT_EQ((*p)[0].name, "vhost-user-device[rng]");
  // The same path twice is one socket, not two.
  f.socket_path = "/tmp/b.sock";
  EXPECT_EQ(PlanError(f), "");
  f.socket_path = "/tmp/c.sock";
  EXPECT_TRUE(absl::StrContains(PlanError(f), "name two sockets"))
      << PlanError(f);
  f = {.devices = {"rng,socket-path=/tmp/b.sock"}, .fd = 0};
  EXPECT_TRUE(absl::StrContains(PlanError(f), "--fd hands over another"))
      << PlanError(f);
  f = {.devices = {"rng"}};
  EXPECT_TRUE(absl::StrContains(PlanError(f), "--socket-path PATH (or --fd N"))
      << PlanError(f);
}

TEST(DaemonPlanTest, SeveralDevicesEachNameTheirOwnSocket) {
  DaemonFlags f{.devices = {"blk,backend=ram,size=1M,id=disk0,socket-path=/a",
                            "blk,backend=null,size=1M,socket-path=/b",
                            "blk,backend=null,size=1M,socket-path=/c",
                            "rng,socket-path=/d"}};
  auto p = PlanDaemon(f, {});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 4u);
  const char* names[] = {"vhost-user-device[disk0]", "vhost-user-device[blk.2]",
                         "vhost-user-device[blk.3]", "vhost-user-device[rng]"};
  const char* paths[] = {"/a", "/b", "/c", "/d"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*p)[i].name, names[i]);
    EXPECT_EQ((*p)[i].endpoint.socket_path, paths[i]);
    EXPECT_EQ((*p)[i].endpoint.inherited_fd, -1);
  }
  EXPECT_EQ((*p)[0].spec.id, "disk0");
  EXPECT_EQ((*p)[0].spec.blk.size, 1u << 20);
}

TEST(DaemonPlanTest, AmbiguousLayoutsAreRefusedWithTheReason) {
  const struct {
    DaemonFlags flags;
    const char* error;
  } cases[] = {
      {{.devices = {"rng", "rng,socket-path=/b"}},
       "--device rng: with 2 devices each names its own socket: add "
       "socket-path=PATH"},
      {{.devices = {"rng,socket-path=/a", "rng,socket-path=/b"},
        .socket_path = "/s"},
       "2 devices and --socket-path, which names one socket"},
      {{.devices = {"rng,socket-path=/a", "rng,socket-path=/b"}, .fd = 3},
       "2 devices and --fd"},
      {{.devices = {"rng,socket-path=/a",
                    "blk,backend=ram,size=1M,"
                    "socket-path=/a"}},
       "two devices on one socket, /a"},
      {{.devices = {"rng,id=x,socket-path=/a", "rng,id=x,socket-path=/b"}},
       "two devices are named 'x'"},
      {{.devices = {"blk,backend=ram,size=1M,socket=/a"}, .socket_path = "/s"},
       "socket= names a console's backend; the device's vhost-user socket is "
       "socket-path=PATH"},
      {{.devices = {"rng,socket-path="}, .socket_path = "/s"},
       "socket-path= is empty"},
      {{.devices = {"rng,socket-path=/a", "rng"}, .client = true},
       "--device rng: with 2 devices each names the socket it connects to"},
      {{.devices = {"rng"}, .blk_file = "x.img"},
       "--blk-file and --device both name the device"},
  };
  for (const auto& c : cases) {
    const std::string error = PlanError(c.flags);
    EXPECT_TRUE(absl::StrContains(error, c.error))
        << "got '" << error << "', want '" << c.error << "'";
  }
}

TEST(DaemonPlanTest, SocketActivationMatchesSocketNamesToIds) {
  const DaemonFlags f{
      .devices = {"rng,id=rng0", "blk,backend=ram,size=1M,id=d"}};
  auto p = PlanDaemon(f, {{.fd = 3, .name = "d"}, {.fd = 4, .name = "rng0"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)[0].endpoint.inherited_fd, 4);
  EXPECT_EQ((*p)[1].endpoint.inherited_fd, 3);
  EXPECT_EQ((*p)[0].name, "vhost-user-device[rng0]");
  // Unnamed sockets cannot be told apart; a device nobody passed a socket
  // for, or a socket left over, would serve nothing.
  EXPECT_TRUE(
      absl::StrContains(PlanError(f, {{.fd = 3}, {.fd = 4}}),
                        "each socket needs its own name (FileDescriptorName="));
  EXPECT_TRUE(absl::StrContains(
      PlanError(f, {{.fd = 3, .name = "d"}, {.fd = 4, .name = "other"}}),
      "--device rng,id=rng0: no passed socket is named like its id="));
  EXPECT_TRUE(absl::StrContains(PlanError(f, {{.fd = 3, .name = "d"},
                                              {.fd = 4, .name = "rng0"},
                                              {.fd = 5, .name = "x"}}),
                                "passed 3 sockets (LISTEN_FDS) for 2 devices"));
  const DaemonFlags with_path{.devices = {"rng,id=rng0,socket-path=/a",
                                          "blk,backend=ram,size=1M,id=d"}};
  EXPECT_TRUE(absl::StrContains(
      PlanError(with_path, {{.fd = 3, .name = "d"}, {.fd = 4, .name = "rng0"}}),
      "under socket activation each device takes the passed socket"));
}

// Writes `byte` over the first 4 KiB of the disk behind `c` and reads it
// back.
void WriteAndReadBack(BlkClient& c, uint8_t byte) {
  auto* buf = static_cast<uint8_t*>(c.AllocBuffer(4096));
  ASSERT_NE(buf, nullptr);
  std::memset(buf, byte, 4096);
  BlkCompletion out[1];
  ASSERT_TRUE(c.Write(0, 0, buf, 4096, 1).ok());
  auto n = c.Wait(0, absl::MakeSpan(out), 1, 5000);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].result, BlkResult::kOk);
  std::memset(buf, 0, 4096);
  ASSERT_TRUE(c.Read(0, 0, buf, 4096, 2).ok());
  n = c.Wait(0, absl::MakeSpan(out), 1, 5000);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].result, BlkResult::kOk);
  EXPECT_EQ(buf[0], byte);
  EXPECT_EQ(buf[4095], byte);
  c.FreeBuffer(buf);
}

// The first byte of a file.
int FirstByte(const std::string& path) {
  const std::string text = ReadFile(path);
  return text.empty() ? -1 : static_cast<uint8_t>(text[0]);
}

TEST(MultiDeviceTest, TwoDisksAndAnRngOnTheirOwnSockets) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string a = dir / "a.img";
  const std::string b = dir / "b.img";
  for (const auto& [path, bytes] : {std::pair{a, 4u << 20}, {b, 8u << 20}}) {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    ASSERT_EQ(truncate(path.c_str(), bytes), 0);
  }
  const std::string log = dir / "stderr";
  const std::set<std::string> before = Listing(dir.path());
  {
    Daemon d(
        {.args = {"--device",
                  absl::StrCat("blk,id=disk-a,path=", a,
                               ",socket-path=", dir / "a.sock"),
                  absl::StrCat("--device=blk,path=", b,
                               ",serial=bee,socket-path=", dir / "b.sock"),
                  "--device", absl::StrCat("rng,socket-path=", dir / "r.sock")},
         .stderr_path = log});
    auto ca = ConnectBlk(dir / "a.sock");
    ASSERT_TRUE(ca.ok()) << ca.status() << "\n" << ReadFile(log);
    auto cb = ConnectBlk(dir / "b.sock");
    ASSERT_TRUE(cb.ok()) << cb.status() << "\n" << ReadFile(log);
    // Each front-end reaches its own disk, both connected at once.
    EXPECT_EQ((*ca)->capacity_sectors(), (4u << 20) / 512);
    EXPECT_EQ((*cb)->capacity_sectors(), (8u << 20) / 512);
    std::thread other([&] { WriteAndReadBack(**cb, 0xbb); });
    WriteAndReadBack(**ca, 0xaa);
    other.join();
    // The rng's socket accepts a front-end too.
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string rs = dir / "r.sock";
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", rs.c_str());
    EXPECT_EQ(connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    close(s);
    ca->reset();
    cb->reset();
    EXPECT_EQ(d.Stop(), 0) << ReadFile(log);
  }
  EXPECT_EQ(FirstByte(a), 0xaa);
  EXPECT_EQ(FirstByte(b), 0xbb);
  const std::string text = ReadFile(log);
  for (const char* want :
       {"vhost-user-device[disk-a]: serving blk,id=disk-a,path=",
        "vhost-user-device[blk.2]: serving blk,path=",
        "vhost-user-device[rng]: serving rng,socket-path=",
        "vhost-user-device[disk-a]: listening on ",
        "[#1] vhost-user-device[disk-a]: features negotiated",
        "[#1] vhost-user-device[blk.2]: features negotiated",
        "vhost-user-device: stopped"}) {
    EXPECT_TRUE(absl::StrContains(text, want)) << want << "\n" << text;
  }
  // Every socket it created is gone; the images stay.
  std::set<std::string> expected = before;
  expected.insert("stderr");
  EXPECT_EQ(Listing(dir.path()), expected);
}

// systemd with one .socket unit per device: the sockets come as fds 3, 4
// named by FileDescriptorName=, and each device takes the one named like
// its id=, whatever the order.
TEST(MultiDeviceTest, SocketActivationMatchesDevicesById) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int small = ListenAt(dir / "small.sock");
  const int large = ListenAt(dir / "large.sock");
  ASSERT_GE(small, 0);
  ASSERT_GE(large, 0);
  const std::string notify_path = dir / "notify";
  const int notify = BindNotifySocket(notify_path);
  ASSERT_GE(notify, 0);
  const std::string log = dir / "stderr";
  Daemon d({.args = {"--device", "blk,id=large,backend=ram,size=8M", "--device",
                     "blk,id=small,backend=ram,size=2M"},
            .fd = small,
            .target_fd = 3,
            .more_fds = {{large, 4}},
            .env = {{"LISTEN_FDS", "2"},
                    {"LISTEN_FDNAMES", "small:large"},
                    {"NOTIFY_SOCKET", notify_path}},
            .listen_pid_self = true,
            .stderr_path = log});
  const std::vector<std::string> ready = Receive(notify, 10000);
  ASSERT_EQ(ready.size(), 1u) << ReadFile(log);
  EXPECT_TRUE(absl::StrContains(ready[0], "STATUS=serving 2 devices"))
      << ready[0];
  auto cs = ConnectBlk(dir / "small.sock");
  ASSERT_TRUE(cs.ok()) << cs.status() << "\n" << ReadFile(log);
  auto cl = ConnectBlk(dir / "large.sock");
  ASSERT_TRUE(cl.ok()) << cl.status() << "\n" << ReadFile(log);
  EXPECT_EQ((*cs)->capacity_sectors(), (2u << 20) / 512);
  EXPECT_EQ((*cl)->capacity_sectors(), (8u << 20) / 512);
  cs->reset();
  cl->reset();
  EXPECT_EQ(d.Stop(), 0) << ReadFile(log);
  EXPECT_TRUE(absl::StrContains(ReadFile(log), "socket-activated fd 4 (large)"))
      << ReadFile(log);
  close(notify);
  close(small);
  close(large);
}

// One control socket for every device: `stats` lists them all, `stats NAME`
// and `resize NAME` reach one, `resize` grows every blk device.
TEST(MultiDeviceTest, ControlSocketAnswersForEachDevice) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string a = dir / "a.img";
  const std::string b = dir / "b.img";
  for (const std::string& path : {a, b}) {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    ASSERT_EQ(truncate(path.c_str(), 1 << 20), 0);
  }
  const std::string ctl = dir / "ctl.sock";
  const std::string log = dir / "stderr";
  Daemon d(
      {.args = {"--control-socket", ctl, "--device",
                absl::StrCat("blk,id=disk-a,path=", a,
                             ",socket-path=", dir / "a.sock"),
                "--device",
                absl::StrCat("blk,id=disk-b,path=", b,
                             ",socket-path=", dir / "b.sock"),
                "--device", absl::StrCat("rng,socket-path=", dir / "r.sock")},
       .stderr_path = log});
  // Connecting a front-end waits for the daemon to be up.
  auto ca = ConnectBlk(dir / "a.sock");
  ASSERT_TRUE(ca.ok()) << ca.status() << "\n" << ReadFile(log);
  absl::StatusOr<std::string> all = QueryControlSocket(ctl, "stats");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(absl::StartsWith(*all, "{\"devices\":[{\"device\":{")) << *all;
  for (const char* name :
       {"\"name\":\"disk-a\"", "\"name\":\"disk-b\"", "\"name\":\"rng\""}) {
    EXPECT_TRUE(absl::StrContains(*all, name)) << name << "\n" << *all;
  }
  // disk-a has its front-end, disk-b none.
  absl::StatusOr<std::string> one = QueryControlSocket(ctl, "stats disk-a");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_TRUE(absl::StartsWith(*one,
                               "{\"device\":{\"type\":\"blk\",\"name\":"
                               "\"disk-a\""))
      << *one;
  EXPECT_TRUE(absl::StrContains(*one, "\"state\":\"connected\"")) << *one;
  one = QueryControlSocket(ctl, "stats disk-b");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_TRUE(absl::StrContains(*one, "\"state\":\"waiting\"")) << *one;
  one = QueryControlSocket(ctl, "stats nosuch");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_TRUE(IsControlError(*one)) << *one;
  EXPECT_TRUE(absl::StrContains(*one, "devices: disk-a, disk-b, rng")) << *one;
  // Grow both images; `resize disk-b` grows only disk-b, `resize` the rest.
  ASSERT_EQ(truncate(a.c_str(), 2 << 20), 0);
  ASSERT_EQ(truncate(b.c_str(), 2 << 20), 0);
  one = QueryControlSocket(ctl, "resize disk-b");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_TRUE(absl::StrContains(
      *one, "\"old_capacity_sectors\":2048,\"new_capacity_sectors\":4096"))
      << *one;
  all = QueryControlSocket(ctl, "resize");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_FALSE(IsControlError(*all)) << *all;
  EXPECT_TRUE(absl::StrContains(*all,
                                "\"disk-a\":{\"resized\":true,\"old_capacity_"
                                "sectors\":2048,\"new_capacity_sectors\":4096"))
      << *all;
  EXPECT_TRUE(absl::StrContains(*all, "\"disk-b\":{\"resized\":false")) << *all;
  EXPECT_FALSE(absl::StrContains(*all, "\"rng\"")) << *all;
  // A shrink of one fails the whole reply, naming it.
  ASSERT_EQ(truncate(a.c_str(), 1 << 20), 0);
  all = QueryControlSocket(ctl, "resize");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(absl::StartsWith(*all, "{\"error\":\"resizing disk-a failed\""))
      << *all;
  ca->reset();
  EXPECT_EQ(d.Stop(), 0) << ReadFile(log);
}

}  // namespace
}  // namespace vhost_user
