// blk_check — checks an installed vhost-user-device serving a blk device,
// through the installed libvirtio::vhost_user_frontend: the capacity it
// reports, and a write read back.
//
//   blk_check SOCKET CAPACITY_SECTORS SECTOR
//
// Writes a 4 KiB pattern (byte i of it: (SECTOR + i) & 0xff) at SECTOR,
// reads it back and compares. Exit status: 0 right; 1 a wrong answer
// (capacity or data); 2 usage; 3 anything else (no daemon, an error).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "vhost_user/frontend/blk_client.h"

namespace {

constexpr uint32_t kLen = 4096;

// One request on queue 0, waited for; false (printed) if it failed.
bool Finish(vhost_user::BlkClient& client, const char* what) {
  vhost_user::BlkCompletion done[1];
  auto n = client.Wait(0, absl::MakeSpan(done), 1, 5000);
  if (!n.ok() || *n != 1 || done[0].result != vhost_user::BlkResult::kOk) {
    std::fprintf(stderr, "blk_check: %s failed\n", what);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: blk_check SOCKET CAPACITY_SECTORS SECTOR\n");
    return 2;
  }
  const uint64_t capacity = std::strtoull(argv[2], nullptr, 0);
  const uint64_t sector = std::strtoull(argv[3], nullptr, 0);
  vhost_user::BlkClientOptions o;
  o.socket_path = argv[1];
  o.queue_size = 16;
  o.buffer_memory = 1 << 20;
  auto client = vhost_user::BlkClient::Connect(o);
  if (!client.ok()) {
    std::fprintf(stderr, "blk_check: %s\n",
                 std::string(client.status().message()).c_str());
    return 3;
  }
  vhost_user::BlkClient& c = **client;
  if (c.capacity_sectors() != capacity) {
    std::fprintf(stderr, "blk_check: capacity %llu sectors, want %llu\n",
                 static_cast<unsigned long long>(c.capacity_sectors()),
                 static_cast<unsigned long long>(capacity));
    return 1;
  }
  auto* buf = static_cast<uint8_t*>(c.AllocBuffer(kLen));
  if (buf == nullptr) return 3;
  for (uint32_t i = 0; i < kLen; ++i) {
    buf[i] = static_cast<uint8_t>((sector + i) & 0xff);
  }
  if (!c.Write(0, sector, buf, kLen, 1).ok() || !Finish(c, "write")) return 3;
  std::memset(buf, 0, kLen);
  if (!c.Read(0, sector, buf, kLen, 2).ok() || !Finish(c, "read")) return 3;
  for (uint32_t i = 0; i < kLen; ++i) {
    if (buf[i] != static_cast<uint8_t>((sector + i) & 0xff)) {
      std::fprintf(stderr, "blk_check: byte %u read back wrong\n", i);
      return 1;
    }
  }
  std::printf("blk_check: %llu sectors, write and read back OK\n",
              static_cast<unsigned long long>(capacity));
  return 0;
}
