// The daemon's control socket (control_server.h, control_commands.h,
// stats_json.h): a device served through the in-process front-end, driven
// with good and malformed requests, then asked over a real control socket
// for its statistics, whose counters must match exactly; and online resize
// of a file-backed disk (grow: configuration change on the back-end
// channel and the new capacity in GET_CONFIG; shrink: refused).
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "backend_conventions.h"
#include "control_commands.h"
#include "control_server.h"
#include "device_spec.h"
#include "frontend.h"
#include "gtest/gtest.h"
#include "session.h"
#include "stats_json.h"
#include "vhost_user/interrupt.h"
#include "vhost_user/message.h"
#include "virtio/blk_spec.h"
#include "virtio/spec.h"

namespace vhost_user::testing {
namespace {

namespace spec = virtio::spec;
namespace blk = virtio::blk;

constexpr uint64_t kVersion1 = uint64_t{1} << spec::kFeatureVersion1;
constexpr uint64_t kGpa = 0x100000;
constexpr uint64_t kMemSize = 1 << 20;

struct BlkHeader {
  uint32_t type, reserved;
  uint64_t sector;
};

// A scratch directory, removed with its files.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string t =
        absl::StrCat(base != nullptr ? base : "/tmp", "/vu-control-XXXXXX");
    path_ = mkdtemp(t.data()) != nullptr ? t : "";
  }
  ~TempDir() {
    if (!path_.empty()) {
      const std::string cmd = absl::StrCat("rm -rf '", path_, "'");
      [[maybe_unused]] int rc = system(cmd.c_str());
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const char* name) const {
    return absl::StrCat(path_, "/", name);
  }

 private:
  std::string path_;
};

// A served device with a control socket answering for it.
class Controlled {
 public:
  Controlled(const std::string& text, const TempDir& dir,
             const char* socket_name = "control.sock")
      : socket_path_(dir.file(socket_name)) {
    auto s = ParseDeviceSpec(text);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return;
    spec_ = *s;
    auto served = MakeServedDevice(spec_);
    if (!served.ok()) {
      error_ = served.status();
      return;
    }
    served_ = *std::move(served);
    type_ = std::string(virtio::catalog::DeviceTypeName(spec_.type));
    subject_ = {.type = type_,
                .name = spec_.id.empty() ? type_ : spec_.id,
                .spec = spec_.text,
                .device = served_.device.get(),
                .control = served_.control.get(),
                .connection = &state_};
    auto listener = CreateListeningSocket(socket_path_, SocketAccess{});
    EXPECT_TRUE(listener.ok()) << listener.status();
    auto server = ControlServer::Start(
        *std::move(listener),
        [this](absl::string_view command) {
          return HandleControlCommand(subject_, *served_.control, command);
        },
        -1, nullptr);
    EXPECT_TRUE(server.ok()) << server.status();
    if (server.ok()) server_ = *std::move(server);
  }
  ~Controlled() {
    server_.reset();
    unlink(socket_path_.c_str());
  }
  Controlled(const Controlled&) = delete;
  Controlled& operator=(const Controlled&) = delete;

  const absl::Status& error() const { return error_; }
  ConnectionState* state() { return &state_; }
  VhostDevice& device() { return *served_.device; }
  std::string Query(absl::string_view command) {
    auto reply = QueryControlSocket(socket_path_, command);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : "";
  }

 private:
  std::string socket_path_;
  virtio::catalog::DeviceSpec spec_;
  std::string type_;
  ServedDevice served_;
  ConnectionState state_;
  StatsSubject subject_;
  std::unique_ptr<ControlServer> server_;
  absl::Status error_;
};

void Negotiate(Frontend& f, uint64_t protocol) {
  auto features = f.GetU64(kGetFeatures);
  ASSERT_TRUE(features);
  auto pf = f.GetU64(kGetProtocolFeatures);
  ASSERT_TRUE(pf);
  ASSERT_EQ(*pf & protocol, protocol);
  ASSERT_TRUE(f.Send(kSetProtocolFeatures, protocol));
  ASSERT_TRUE(f.Send(kSetOwner));
  ASSERT_TRUE(f.Send(kSetFeatures,
                     uint64_t{kVersion1 | Bit(kFeatureProtocolFeatures)}));
}

// Posts `bufs` on queue 0, kicks it and waits for its used element.
std::pair<uint32_t, uint32_t> Request(SplitRing& ring, const UniqueFd& kick,
                                      const UniqueFd& call,
                                      const std::vector<Buf>& bufs) {
  ring.Add(bufs);
  EXPECT_TRUE(SignalFd(kick.get()));
  EXPECT_TRUE(WaitEvent(call.get()));
  auto used = ring.Reap();
  EXPECT_TRUE(used);
  return used.value_or(std::pair<uint32_t, uint32_t>{~0u, ~0u});
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(ControlSocket, StatsCountGoodAndMalformedRequestsByKind) {
  TempDir dir;
  Controlled c("blk,backend=ram,size=1M,id=disk0", dir);
  ASSERT_TRUE(c.error().ok()) << c.error();
  {
    Session s(c.device(), false, -1, c.state());
    Frontend& f = s.f();
    Negotiate(f, Bit(kProtocolReplyAck) | Bit(kProtocolConfig));
    SharedMemory mem(kGpa, kMemSize);
    SplitRing ring(mem, 64);
    ASSERT_TRUE(f.SetMemTable(mem));
    UniqueFd kick, call;
    ASSERT_TRUE(f.SetupRing(0, ring, kick, call));
    UniqueFd err(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    // Acknowledged: the data path below must not outrun it.
    const uint64_t queue0 = 0;
    ASSERT_TRUE(f.SendRaw(kSetVringErr, &queue0, sizeof queue0, {err.get()},
                          kVersion | kFlagNeedReply));
    auto ack = f.Receive();
    ASSERT_TRUE(ack);
    ASSERT_EQ(ack->As<uint64_t>(), 0u);

    const uint64_t hdr = mem.Alloc(16), data = mem.Alloc(4096),
                   status = mem.Alloc(1);
    // 1. A good write of 4096 bytes, 2. a good read of them back.
    BlkHeader w{blk::kTypeOut, 0, 0};
    std::memcpy(mem.host(hdr), &w, sizeof w);
    auto u =
        Request(ring, kick, call,
                {{hdr, 16, false}, {data, 4096, false}, {status, 1, true}});
    EXPECT_EQ(u.second, 1u);
    EXPECT_EQ(*mem.host(status), blk::kStatusOk);
    BlkHeader r{blk::kTypeIn, 0, 0};
    std::memcpy(mem.host(hdr), &r, sizeof r);
    u = Request(ring, kick, call,
                {{hdr, 16, false}, {data, 4096, true}, {status, 1, true}});
    EXPECT_EQ(u.second, 4097u);
    EXPECT_EQ(*mem.host(status), blk::kStatusOk);
    // 3. A data buffer outside guest memory: a bad-address chain, cut
    // there, so with no status byte to answer in: returned with length 0.
    std::memcpy(mem.host(hdr), &w, sizeof w);
    *mem.host(status) = 0xff;
    u = Request(ring, kick, call,
                {{hdr, 16, false},
                 {kGpa + kMemSize + 0x1000, 4096, false},
                 {status, 1, true}});
    EXPECT_EQ(u.second, 0u);
    EXPECT_EQ(*mem.host(status), 0xff);
    // 4. A header of 8 bytes: the chain is fine, the request is not.
    u = Request(ring, kick, call, {{hdr, 8, false}, {status, 1, true}});
    EXPECT_EQ(u.second, 1u);
    EXPECT_EQ(*mem.host(status), blk::kStatusIoErr);
    // 5. A readable descriptor after a writable one: a malformed chain,
    // failed with IOERR in its status byte (the last writable one).
    u = Request(ring, kick, call,
                {{hdr, 16, false}, {status, 1, true}, {data, 512, false}});
    EXPECT_EQ(u.second, 1u);
    EXPECT_EQ(*mem.host(status), blk::kStatusIoErr);
    // 6. A descriptor loop: the ring breaks (the error fd says so) and the
    // device needs a reset; nothing is used.
    ring.AddLoop(data, 512);
    ASSERT_TRUE(SignalFd(kick.get()));
    ASSERT_TRUE(WaitEvent(err.get()));

    const std::string stats = c.Query("stats");
    SCOPED_TRACE(stats);
    EXPECT_TRUE(Contains(stats, R"("type":"blk","name":"disk0")"));
    EXPECT_TRUE(Contains(stats, R"("needs_reset":true)"));
    EXPECT_TRUE(Contains(stats, R"("capacity_sectors":2048)"));
    EXPECT_TRUE(Contains(
        stats, absl::StrCat(R"("connection":{"state":"connected","number":0,)",
                            R"("accepted":0,"features":"0x)")));
    EXPECT_TRUE(Contains(stats, R"("protocol_features":"0x208")"));
    // Requests 1-5 popped and used; the loop never became a chain. Bytes
    // from the driver: the usable chains' readable parts (16 + 4096, 16,
    // 8); to it: the used lengths (1 + 4097 + 0 + 1 + 1).
    EXPECT_TRUE(Contains(
        stats, R"({"index":0,"requests":5,"completions":5,"in_flight":0,)"
               R"("bytes_from_driver":4136,"bytes_to_driver":4100,)"));
    // Without EVENT_IDX or NO_INTERRUPT every publish notifies.
    EXPECT_TRUE(Contains(
        stats, R"("notifications":{"sent":5,"suppressed":0,"lost":0})"));
    EXPECT_TRUE(Contains(
        stats,
        R"("errors":{"bad_address_chains":1,"malformed_chains":1,)"
        R"("ring_errors":1,)"
        R"j("last_ring_error":"descriptor chain longer than the queue (loop?)",)j"
        R"("malformed_requests":3,"backend_errors":0})"));
    EXPECT_TRUE(Contains(
        stats,
        R"("blk":{"requests":5,"completed":4,"ok":2,"ioerr":2,)"
        R"("unsupp":0,"malformed":3,"no_status":1,"backend_errors":0,)"));
    EXPECT_TRUE(s.Finish().ok());
  }
  // The counters outlive the connection; the connection state does not.
  const std::string after = c.Query("stats");
  EXPECT_TRUE(Contains(after, R"("state":"waiting")")) << after;
  EXPECT_TRUE(Contains(after, R"("requests":5,"completions":5)")) << after;
}

TEST(ControlSocket, HelpAndUnknownCommands) {
  TempDir dir;
  Controlled c("rng", dir);
  ASSERT_TRUE(c.error().ok()) << c.error();
  EXPECT_EQ(c.Query("help"), R"({"commands":["help","resize","stats"]})");
  const std::string unknown = c.Query("frobnicate \"x\"");
  EXPECT_TRUE(IsControlError(unknown));
  EXPECT_EQ(unknown,
            R"({"error":"unknown command 'frobnicate \"x\"' (commands: help, )"
            R"j(resize, stats)"})j");
  const std::string resize = c.Query("resize");
  EXPECT_EQ(resize, R"({"error":"this device is not resizable"})");
  // A ram disk has no file to re-read.
  Controlled ram("blk,backend=ram,size=1M", dir, "ram.sock");
  EXPECT_TRUE(IsControlError(ram.Query("resize")));
}

TEST(ControlSocket, QueryWithoutDaemonIsUnavailable) {
  TempDir dir;
  auto reply = QueryControlSocket(dir.file("nothing.sock"), "stats");
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
}

// Reads the capacity (config offset 0) with GET_CONFIG.
uint64_t ConfigCapacity(Frontend& f) {
  struct {
    ConfigHeader h;
    uint8_t data[8];
  } cfg{{0, 8, 0}, {}};
  EXPECT_TRUE(f.SendRaw(kGetConfig, &cfg, sizeof cfg));
  auto r = f.Receive();
  EXPECT_TRUE(r);
  if (!r || r->payload.size() != sizeof cfg) return 0;
  uint64_t capacity;
  std::memcpy(&capacity, r->payload.data() + sizeof(ConfigHeader), 8);
  return capacity;
}

TEST(ControlSocket, ResizeGrowsAndTellsTheFrontEndRefusesToShrink) {
  TempDir dir;
  const std::string image = dir.file("disk.img");
  ASSERT_EQ(truncate(image.c_str(), 0), -1);  // not there yet
  {
    FILE* f = fopen(image.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fclose(f);
  }
  ASSERT_EQ(truncate(image.c_str(), 1 << 20), 0);
  Controlled c(absl::StrCat("blk,path=", image), dir);
  if (absl::IsUnavailable(c.error()) || absl::IsInternal(c.error())) {
    GTEST_SKIP() << "no io_uring here: " << c.error();
  }
  ASSERT_TRUE(c.error().ok()) << c.error();
  Session s(c.device(), false, -1, c.state());
  Frontend& f = s.f();
  Negotiate(f, Bit(kProtocolReplyAck) | Bit(kProtocolConfig) |
                   Bit(kProtocolBackendReq));
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd channel(sv[0]), theirs(sv[1]);
  ASSERT_TRUE(f.SendRaw(kSetBackendReqFd, nullptr, 0, {theirs.get()},
                        kVersion | kFlagNeedReply));
  auto ack = f.Receive();
  ASSERT_TRUE(ack);
  ASSERT_EQ(ack->As<uint64_t>(), 0u);
  theirs.reset();
  SharedMemory mem(kGpa, kMemSize);
  SplitRing ring(mem, 64);
  ASSERT_TRUE(f.SetMemTable(mem));
  UniqueFd kick, call;
  ASSERT_TRUE(f.SetupRing(0, ring, kick, call));  // DRIVER_OK
  EXPECT_EQ(ConfigCapacity(f), 2048u);

  ASSERT_EQ(truncate(image.c_str(), 2 << 20), 0);
  EXPECT_EQ(c.Query("resize"),
            R"({"resized":true,"old_capacity_sectors":2048,)"
            R"("new_capacity_sectors":4096,"config_change_sent":true})");
  Header h{};
  ASSERT_EQ(recv(channel.get(), &h, sizeof h, 0),
            static_cast<ssize_t>(sizeof h));
  EXPECT_EQ(h.request, static_cast<uint32_t>(kBackendConfigChangeMsg));
  EXPECT_EQ(ConfigCapacity(f), 4096u);
  // A sector past the old end is readable now.
  const uint64_t hdr = mem.Alloc(16), data = mem.Alloc(512),
                 status = mem.Alloc(1);
  BlkHeader rd{blk::kTypeIn, 0, 3000};
  std::memcpy(mem.host(hdr), &rd, sizeof rd);
  auto u = Request(ring, kick, call,
                   {{hdr, 16, false}, {data, 512, true}, {status, 1, true}});
  EXPECT_EQ(u.second, 513u);
  EXPECT_EQ(*mem.host(status), blk::kStatusOk);
  // Unchanged: nothing to tell.
  EXPECT_EQ(c.Query("resize"),
            R"({"resized":false,"old_capacity_sectors":4096,)"
            R"("new_capacity_sectors":4096,"config_change_sent":false})");
  // Shrinking is refused; the guest keeps its size.
  ASSERT_EQ(truncate(image.c_str(), 1 << 20), 0);
  const std::string shrink = c.Query("resize");
  EXPECT_TRUE(IsControlError(shrink)) << shrink;
  EXPECT_TRUE(Contains(shrink, "shrinking is refused")) << shrink;
  EXPECT_EQ(ConfigCapacity(f), 4096u);
  EXPECT_TRUE(s.Finish().ok());
}

}  // namespace
}  // namespace vhost_user::testing
