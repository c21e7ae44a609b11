// virtio-console with its real backends: a pty (the test opens the slave
// path and talks through it), a Unix socket (a client connects and leaves:
// PORT_OPEN both ways), stdio on pipes (pacing against a full pipe), and an
// output-only file.
#include "virtio/backends/console_backends.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "console_test_util.h"
#include "gtest/gtest.h"
#include "virtio/console_device.h"
#include "virtio/testing/driver.h"
#include "virtio/testing/recording_interrupt.h"
#include "virtio/testing/test_memory.h"

namespace virtio {
namespace {

using testing::GuestConsole;
using testing::RecordingInterrupt;
using testing::SplitDriver;
using testing::TestGuestMemory;
using testing::TestTraits;

constexpr uint64_t kFeatures = spec::Bit(console::kFeatureSize) |
                               spec::Bit(console::kFeatureMultiport) |
                               spec::Bit(console::kFeatureEmergWrite);

std::string TempPath(const char* tag) {
  const char* dir = std::getenv("TMPDIR");
  return absl::StrFormat("%s/console_%s_%d", dir ? dir : "/tmp", tag, getpid());
}

// Services `port` until `done()` or ~5 s pass, polling the fds the device
// asks for (the glue's loop).
template <typename Dev>
bool ServiceUntil(Dev& dev, uint32_t port, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    const ConsolePollSet set = dev.BackendPoll(port);
    std::vector<pollfd> fds;
    for (const ConsolePoll& p : set.fds) {
      if (p.fd >= 0) fds.push_back({p.fd, p.events, 0});
    }
    poll(fds.data(), fds.size(), 20);
    dev.ServiceBackend(port);
  }
  return true;
}

std::string ReadAvailable(int fd, size_t want, int timeout_ms = 5000) {
  std::string out;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) out.append(buf, static_cast<size_t>(n));
    if (n == 0) break;
  }
  return out;
}

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = write(fd, s.data() + off, s.size() - off);
    ASSERT_GT(n, 0) << std::strerror(errno);
    off += static_cast<size_t>(n);
  }
}

TEST(ConsolePty, BytesBothWaysThroughTheSlave) {
  auto pty = PtyConsoleBackend::Create({});
  ASSERT_TRUE(pty.ok()) << pty.status();
  PtyConsoleBackend& be = **pty;
  EXPECT_EQ(be.path().rfind("/dev/pts/", 0), 0u) << be.path();
  TestGuestMemory mem;
  RecordingInterrupt irq;
  std::vector<PtyConsoleBackend*> ports = {&be};
  using Dev = ConsoleDevice<TestTraits, PtyConsoleBackend>;
  auto dev = Dev::Create(mem.map(), irq, ports, {});
  ASSERT_TRUE(dev.ok()) << dev.status();
  GuestConsole<SplitDriver> guest(mem, 2, 32, {});
  testing::BringUpDirect(**dev, guest, kFeatures);

  const int slave = open(be.path().c_str(), O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0) << std::strerror(errno);
  // Guest → terminal, unchanged (raw mode: no \n → \r\n).
  guest.Transmit(1, "hello from the guest\n");
  EXPECT_EQ(ReadAvailable(slave, 21), "hello from the guest\n");
  // Terminal → guest.
  guest.AddRx(0, 4, 64);
  WriteAll(slave, "typed\r");
  std::string got;
  EXPECT_TRUE(ServiceUntil(**dev, 0, [&] {
    got += guest.Receive(0);
    return got.size() >= 6;
  }));
  EXPECT_EQ(got, "typed\r");
  // The terminal is resized: the device follows.
  winsize ws{};
  ws.ws_col = 99;
  ws.ws_row = 33;
  ASSERT_EQ(ioctl(slave, TIOCSWINSZ, &ws), 0);
  (*dev)->ServiceBackend(0);
  EXPECT_EQ((*dev)->size(), (ConsoleSize{99, 33}));
  // The terminal closes: output is discarded (and counted), not queued.
  close(slave);
  (*dev)->ServiceBackend(0);
  EXPECT_FALSE(be.connected());
  EXPECT_GE((*dev)->BackendPoll(0).timeout_ms, 0) << "recheck by timer";
  guest.Transmit(1, "nobody listens");
  EXPECT_EQ(be.discarded_bytes(), 14u);
  EXPECT_FALSE((*dev)->tx_paced(0));
  // Reopened: back to normal.
  const int again = open(be.path().c_str(), O_RDWR | O_NOCTTY);
  ASSERT_GE(again, 0);
  (*dev)->ServiceBackend(0);
  EXPECT_TRUE(be.connected());
  guest.Transmit(1, "back");
  EXPECT_EQ(ReadAvailable(again, 4), "back");
  close(again);
  EXPECT_FALSE((*dev)->needs_reset());
}

// What a terminal's opener wrote just before closing it (`echo line >
// /dev/pts/N`) reaches the guest, also while the pty counts as hung up: the
// master returns that input before it fails with EIO. The backend used to
// skip reading once hung up, leaving such input stranded until somebody
// opened the terminal again (found with UML, uml_console_pty.sh).
TEST(ConsolePty, InputOfAClosedTerminalStillArrives) {
  auto pty = PtyConsoleBackend::Create({.print_path = false});
  ASSERT_TRUE(pty.ok()) << pty.status();
  PtyConsoleBackend& be = **pty;
  TestGuestMemory mem;
  RecordingInterrupt irq;
  std::vector<PtyConsoleBackend*> ports = {&be};
  using Dev = ConsoleDevice<TestTraits, PtyConsoleBackend>;
  auto dev = Dev::Create(mem.map(), irq, ports, {});
  ASSERT_TRUE(dev.ok()) << dev.status();
  GuestConsole<SplitDriver> guest(mem, 2, 32, {});
  testing::BringUpDirect(**dev, guest, kFeatures);
  guest.AddRx(0, 8, 64);
  for (const std::string line : {"first\n", "second\n"}) {
    const int term = open(be.path().c_str(), O_RDWR | O_NOCTTY);
    ASSERT_GE(term, 0) << std::strerror(errno);
    WriteAll(term, line);
    close(term);
    std::string got;
    auto arrived = [&] {
      got += guest.Receive(0);
      return got.size() >= line.size();
    };
    EXPECT_TRUE(ServiceUntil(**dev, 0, arrived))
        << "got \"" << got << "\" of \"" << line << "\"";
    EXPECT_EQ(got, line);
    EXPECT_FALSE(be.connected()) << "the terminal is closed";
  }
}

TEST(ConsoleSocket, ClientConnectsAndLeavesMultiport) {
  const std::string path = TempPath("sock");
  auto sock = SocketConsoleBackend::Create({.path = path});
  ASSERT_TRUE(sock.ok()) << sock.status();
  testing::MemoryConsoleBackend console;
  TestGuestMemory mem;
  RecordingInterrupt irq;
  // Port 0 in memory (the console), port 1 on the socket: one backend type
  // per device, so this test wraps both behind a tiny adapter.
  struct Either {
    testing::MemoryConsoleBackend* m = nullptr;
    SocketConsoleBackend* s = nullptr;
    size_t Write(absl::Span<const iovec> v) { return m ? m->Write(v) : s->Write(v); }
    size_t Read(absl::Span<const iovec> v) { return m ? m->Read(v) : s->Read(v); }
    ConsolePollSet Poll(bool i, bool o) { return m ? m->Poll(i, o) : s->Poll(i, o); }
    void Service() { m ? m->Service() : s->Service(); }
    bool connected() const { return m ? m->connected() : s->connected(); }
    void SetGuestOpen(bool b) { m ? m->SetGuestOpen(b) : s->SetGuestOpen(b); }
    std::optional<ConsoleSize> size() { return m ? m->size() : s->size(); }
  };
  Either e0{&console, nullptr}, e1{nullptr, sock->get()};
  std::vector<Either*> ports = {&e0, &e1};
  using Dev = ConsoleDevice<TestTraits, Either>;
  auto dev = Dev::Create(mem.map(), irq, ports,
                         {.multiport = true, .port_names = {"", "org.test.sock"}});
  ASSERT_TRUE(dev.ok()) << dev.status();
  GuestConsole<SplitDriver> guest(mem, (*dev)->num_queues(), 32, {});
  testing::BringUpDirect(**dev, guest, kFeatures);
  guest.LinuxProbe();
  EXPECT_EQ(guest.names[1], "org.test.sock");
  EXPECT_FALSE(guest.host_connected.count(1)) << "no client yet";
  // Output without a client is discarded and counted.
  guest.Transmit(console::TxQueue(1), "lost");
  EXPECT_EQ((*sock)->discarded_bytes(), 4u);

  const int client = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_TRUE(ServiceUntil(**dev, 1, [&] { return (*sock)->connected(); }));
  guest.PollControl();
  EXPECT_TRUE(guest.host_connected[1]);
  // The guest opens the port; bytes both ways.
  guest.SendControl(1, console::kEventPortOpen, 1);
  guest.Transmit(console::TxQueue(1), "guest says hi");
  EXPECT_EQ(ReadAvailable(client, 13), "guest says hi");
  WriteAll(client, "host says hi");
  std::string got;
  EXPECT_TRUE(ServiceUntil(**dev, 1, [&] {
    got += guest.Receive(console::RxQueue(1));
    return got.size() >= 12;
  }));
  EXPECT_EQ(got, "host says hi");
  // The client sends a last word and leaves: the word arrives, then the
  // guest learns the host side closed.
  WriteAll(client, "bye");
  close(client);
  got.clear();
  EXPECT_TRUE(ServiceUntil(**dev, 1, [&] {
    got += guest.Receive(console::RxQueue(1));
    return !(*sock)->connected();
  }));
  EXPECT_EQ(got, "bye");
  guest.PollControl();
  EXPECT_FALSE(guest.host_connected[1]);
  EXPECT_FALSE((*dev)->needs_reset());
}

TEST(ConsoleStdio, PacesAgainstAFullPipe) {
  int in[2], out[2];
  ASSERT_EQ(pipe(in), 0);
  ASSERT_EQ(pipe(out), 0);
  auto be = StdioConsoleBackend::Create({.in_fd = in[0], .out_fd = out[1]});
  ASSERT_TRUE(be.ok()) << be.status();
  TestGuestMemory mem;
  RecordingInterrupt irq;
  std::vector<StdioConsoleBackend*> ports = {be->get()};
  using Dev = ConsoleDevice<TestTraits, StdioConsoleBackend>;
  auto dev = Dev::Create(mem.map(), irq, ports, {});
  ASSERT_TRUE(dev.ok());
  GuestConsole<SplitDriver> guest(mem, 2, 64, {});
  testing::BringUpDirect(**dev, guest, kFeatures);
  // 256 KiB into a 64 KiB pipe nobody reads yet.
  std::string data(256 * 1024, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + i / 7);
  ASSERT_EQ(guest.Transmit(1, data, 8192), data.size());
  EXPECT_TRUE((*dev)->tx_paced(0));
  const ConsolePollSet set = (*dev)->BackendPoll(0);
  EXPECT_EQ(set.fds[1].fd, out[1]);
  EXPECT_EQ(set.fds[1].events, POLLOUT);
  // The reader drains slowly; the glue services the port when writable.
  std::string got;
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  EXPECT_TRUE(ServiceUntil(**dev, 0, [&] {
    char buf[16384];
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n > 0) got.append(buf, static_cast<size_t>(n));
    guest.ReapTx(1);
    return got.size() == data.size();
  }));
  EXPECT_TRUE(got == data) << "bytes lost or reordered";
  EXPECT_EQ((*be)->discarded_bytes(), 0u);
  // Input from the pipe, then EOF stops polling it.
  guest.AddRx(0, 2, 32);
  WriteAll(in[1], "stdin line\n");
  close(in[1]);
  std::string rx;
  EXPECT_TRUE(ServiceUntil(**dev, 0, [&] {
    rx += guest.Receive(0);
    return (*be)->input_eof();
  }));
  EXPECT_EQ(rx, "stdin line\n");
  EXPECT_EQ((*dev)->BackendPoll(0).fds[0].fd, -1);
  be->reset();
  close(in[0]);
  close(out[0]);
  close(out[1]);
}

TEST(ConsoleFile, OutputOnly) {
  const std::string path = TempPath("file");
  auto file = FileConsoleBackend::Create({.path = path, .append = false});
  ASSERT_TRUE(file.ok()) << file.status();
  TestGuestMemory mem;
  RecordingInterrupt irq;
  std::vector<FileConsoleBackend*> ports = {file->get()};
  using Dev = ConsoleDevice<TestTraits, FileConsoleBackend>;
  auto dev = Dev::Create(mem.map(), irq, ports, {});
  ASSERT_TRUE(dev.ok());
  GuestConsole<SplitDriver> guest(mem, 2, 32, {});
  testing::BringUpDirect(**dev, guest, kFeatures);
  guest.Transmit(1, "line one\n");
  const uint8_t c = '!';
  (*dev)->WriteConfig(8, &c, 1);
  guest.Transmit(1, "line two\n");
  guest.AddRx(0, 2, 16);
  (*dev)->ServiceBackend(0);
  EXPECT_EQ(guest.Receive(0), "") << "a file has no input";
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), "line one\n!line two\n");
  EXPECT_EQ((*dev)->BackendPoll(0).fds[0].fd, -1);
  file->reset();
  unlink(path.c_str());
}

TEST(ConsoleSocket, RefusesToReplaceARegularFile) {
  const std::string path = TempPath("notsock");
  { std::ofstream(path) << "x"; }
  EXPECT_FALSE(SocketConsoleBackend::Create({.path = path}).ok());
  unlink(path.c_str());
}

}  // namespace
}  // namespace virtio
