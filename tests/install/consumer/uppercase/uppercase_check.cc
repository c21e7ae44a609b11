// uppercase_check — drives the uppercase echo device (uppercase_spec.h)
// through a vhost-user socket with the installed
// libvirtio::vhost_user_frontend, and checks every answer. Exits 0 only if
// the device behaved as its specification says.
//
//   uppercase_check SOCKET
//
// Exit status: 0 all answers right; 1 the device answered wrongly (a wrong
// text, length, configuration or ring position); 2 usage; 3 anything else
// (no daemon, a protocol error, a timeout), so that a test expecting a
// wrong answer is not satisfied by a daemon that never came up.
//
// What it checks: feature and protocol-feature negotiation, the
// configuration space (magic, limits, the count of answered requests), one
// request, a request whose text and answer are split across descriptors, a
// batch of requests in flight at once, an answer truncated to its buffer,
// and finally the ring position the back-end reports when the ring stops.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "uppercase_spec.h"
#include "vhost_user/frontend/driver_ring.h"
#include "vhost_user/frontend/shared_memory.h"
#include "vhost_user/frontend/split_driver_ring.h"
#include "vhost_user/frontend/vhost_user_client.h"
#include "vhost_user/message.h"
#include "vhost_user/unique_fd.h"
#include "virtio/spec.h"

namespace {

namespace spec = virtio::spec;

constexpr int kTimeoutMs = 5000;

// One request as the driver lays it out: the text in device-readable
// buffers (one per part) and device-writable buffers of the given sizes.
struct Request {
  std::vector<std::string> text_parts;
  std::vector<uint32_t> answer_sizes;
};

std::string Text(const Request& r) {
  std::string text;
  for (const std::string& part : r.text_parts) text += part;
  return text;
}

// What the device is expected to answer to `r`.
std::string ExpectedAnswer(const Request& r) {
  std::string text = Text(r);
  uint64_t room = 0;
  for (uint32_t size : r.answer_sizes) room += size;
  if (text.size() > room) text.resize(room);
  for (char& c : text) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return text;
}

// The driver of one uppercase device over vhost-user: one split ring in a
// memfd the back-end maps.
class UppercaseDriver {
 public:
  absl::Status Connect(const std::string& socket_path) {
    // The daemon may still be starting: retry until it listens.
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(kTimeoutMs);
    for (;;) {
      auto client =
          vhost_user::VhostUserClient::Connect(socket_path, kTimeoutMs);
      if (client.ok()) {
        client_ = *std::move(client);
        return absl::OkStatus();
      }
      if (std::chrono::steady_clock::now() >= deadline) return client.status();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Negotiates, reads the configuration space and starts the queue.
  absl::Status Start(uppercase::Config* config) {
    auto offered = client_->GetFeatures();
    if (!offered.ok()) return offered.status();
    const uint64_t wanted =
        spec::Bit(spec::kFeatureVersion1) |
        vhost_user::Bit(vhost_user::kFeatureProtocolFeatures);
    if ((*offered & wanted) != wanted) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "features 0x%x lack VERSION_1 or PROTOCOL_FEATURES", *offered));
    }
    auto protocol = client_->GetProtocolFeatures();
    if (!protocol.ok()) return protocol.status();
    if (!(*protocol & vhost_user::Bit(vhost_user::kProtocolConfig))) {
      return absl::FailedPreconditionError(
          "no CONFIG protocol feature: the config space cannot be read");
    }
    absl::Status s = client_->SetProtocolFeatures(
        *protocol & (vhost_user::Bit(vhost_user::kProtocolConfig) |
                     vhost_user::Bit(vhost_user::kProtocolReplyAck)));
    if (s.ok()) s = client_->SetOwner();
    if (s.ok()) s = ReadConfig(config);
    if (!s.ok()) return s;

    auto memory = vhost_user::SharedMemory::Create(1 << 20);
    if (!memory.ok()) return memory.status();
    memory_ = *std::move(memory);
    uint8_t* ring_memory = memory_->Reserve(
        vhost_user::SplitDriverRing::MemorySize(uppercase::kQueueSize), 4096);
    if (ring_memory == nullptr)
      return absl::InternalError("no room for the ring");
    ring_.Init(ring_memory, uppercase::kQueueSize, /*event_idx=*/false);
    memory_->InitArena();
    kick_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    call_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!kick_ || !call_) {
      return absl::InternalError(
          absl::StrFormat("eventfd: %s", std::strerror(errno)));
    }

    const vhost_user::VringAddr addr{.index = 0,
                                     .flags = 0,
                                     .desc_user_addr = ring_.desc_addr(),
                                     .used_user_addr = ring_.used_addr(),
                                     .avail_user_addr = ring_.avail_addr(),
                                     .log_guest_addr = 0};
    s = client_->SetFeatures(wanted);
    if (s.ok()) s = client_->SetMemTable(memory_->region(), memory_->fd());
    if (s.ok()) s = client_->SetVringNum(0, uppercase::kQueueSize);
    if (s.ok()) s = client_->SetVringBase(0, 0);
    if (s.ok()) s = client_->SetVringAddr(addr);
    if (s.ok()) s = client_->SetVringCall(0, call_.get());
    if (s.ok()) s = client_->SetVringKick(0, kick_.get());
    if (s.ok()) s = client_->SetVringEnable(0, true);
    return s;
  }

  absl::Status ReadConfig(uppercase::Config* config) {
    return client_->GetConfig(
        0, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(config),
                               sizeof *config));
  }

  // Sends `requests` at once (one kick) and checks every answer.
  absl::Status Exchange(absl::Span<const Request> requests) {
    std::map<uint16_t, const Request*> sent;
    std::map<uint16_t, std::vector<void*>> buffers;
    for (const Request& r : requests) {
      std::vector<vhost_user::RingBuf> descriptors;
      std::vector<void*>& owned = buffers[ring_.peek_id()];
      for (const std::string& part : r.text_parts) {
        void* p = Alloc(part.size(), owned);
        if (p == nullptr) return absl::ResourceExhaustedError("arena full");
        std::memcpy(p, part.data(), part.size());
        descriptors.push_back({.addr = reinterpret_cast<uint64_t>(p),
                               .len = static_cast<uint32_t>(part.size()),
                               .flags = 0});
      }
      for (uint32_t size : r.answer_sizes) {
        void* p = Alloc(size, owned);
        if (p == nullptr) return absl::ResourceExhaustedError("arena full");
        descriptors.push_back({.addr = reinterpret_cast<uint64_t>(p),
                               .len = size,
                               .flags = spec::kDescFlagWrite});
      }
      if (descriptors.size() > ring_.num_free()) {
        return absl::ResourceExhaustedError("ring full");
      }
      sent[ring_.Add(descriptors.data(),
                     static_cast<uint16_t>(descriptors.size()))] = &r;
    }
    if (ring_.Publish()) {
      const uint64_t one = 1;
      if (write(kick_.get(), &one, sizeof one) != sizeof one) {
        return absl::InternalError("kick failed");
      }
    }

    auto used = Collect(sent.size());
    if (!used.ok()) return used.status();
    absl::Status result;
    for (const auto& [id, len] : *used) {
      auto it = sent.find(id);
      if (it == sent.end()) {
        return absl::DataLossError(absl::StrFormat("used ID %u not sent", id));
      }
      const Request& r = *it->second;
      const std::string expected = ExpectedAnswer(r);
      std::string answer;
      const std::vector<void*>& owned = buffers[id];
      for (size_t i = 0; i < r.answer_sizes.size() && answer.size() < len;
           ++i) {
        const auto* p =
            static_cast<const char*>(owned[r.text_parts.size() + i]);
        answer.append(p,
                      std::min<size_t>(r.answer_sizes[i], len - answer.size()));
      }
      if (len != expected.size() || answer != expected) {
        result = absl::DataLossError(absl::StrFormat(
            "answer to \"%s\": \"%s\" (%u bytes), expected \"%s\"", Text(r),
            answer, len, expected));
        std::fprintf(stderr, "uppercase_check: %s\n",
                     result.ToString().c_str());
      }
    }
    for (auto& [id, owned] : buffers) {
      for (void* p : owned) memory_->Free(p);
    }
    return result;
  }

  // Stops the queue (GET_VRING_BASE); its position.
  absl::StatusOr<uint32_t> StopQueue() { return client_->GetVringBase(0); }

 private:
  void* Alloc(size_t len, std::vector<void*>& owned) {
    void* p = memory_->Alloc(len == 0 ? 1 : len, 8);
    if (p != nullptr) owned.push_back(p);
    return p;
  }

  // Reaps `n` used chains: ID -> used length.
  absl::StatusOr<std::map<uint16_t, uint32_t>> Collect(size_t n) {
    std::map<uint16_t, uint32_t> used;
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(kTimeoutMs);
    while (used.size() < n) {
      uint16_t id = 0;
      uint32_t len = 0;
      switch (ring_.Reap(&id, &len)) {
        case vhost_user::ReapStatus::kUsed:
          if (!used.emplace(id, len).second) {
            return absl::DataLossError(absl::StrFormat("ID %u used twice", id));
          }
          continue;
        case vhost_user::ReapStatus::kBroken:
          return absl::DataLossError(
              absl::StrFormat("the device broke the ring: %s", ring_.error()));
        case vhost_user::ReapStatus::kEmpty:
          break;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "%u of %u answers after %d ms", used.size(), n, kTimeoutMs));
      }
      pollfd p{.fd = call_.get(), .events = POLLIN, .revents = 0};
      if (poll(&p, 1, static_cast<int>(left.count())) > 0) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = read(call_.get(), &count, sizeof count);
      }
    }
    return used;
  }

  std::unique_ptr<vhost_user::VhostUserClient> client_;
  std::unique_ptr<vhost_user::SharedMemory> memory_;
  vhost_user::SplitDriverRing ring_;
  vhost_user::UniqueFd kick_;
  vhost_user::UniqueFd call_;
};

absl::Status Check(const std::string& socket_path) {
  UppercaseDriver driver;
  if (absl::Status s = driver.Connect(socket_path); !s.ok()) return s;
  uppercase::Config config{};
  if (absl::Status s = driver.Start(&config); !s.ok()) return s;
  if (config.magic != uppercase::kMagic ||
      config.max_text != uppercase::kMaxText || config.requests_answered != 0) {
    return absl::DataLossError(absl::StrFormat(
        "config: magic 0x%x max_text %u answered %u, expected 0x%x %u 0",
        config.magic, config.max_text, config.requests_answered,
        uppercase::kMagic, uppercase::kMaxText));
  }

  uint32_t sent = 0;
  const Request single{{"Hello, vhost-user! 123"}, {64}};
  const Request split{{"split ", "across", " three"}, {8, 64}};
  const Request truncated{{"truncated answer"}, {9}};
  std::vector<Request> batch;
  for (int i = 0; i < 16; ++i) {
    batch.push_back(
        {{absl::StrFormat("request %d: the quick brown fox", i)}, {128}});
  }
  for (absl::Span<const Request> round :
       {absl::Span<const Request>(&single, 1),
        absl::Span<const Request>(&split, 1), absl::Span<const Request>(batch),
        absl::Span<const Request>(&truncated, 1)}) {
    if (absl::Status s = driver.Exchange(round); !s.ok()) return s;
    sent += static_cast<uint32_t>(round.size());
  }

  if (absl::Status s = driver.ReadConfig(&config); !s.ok()) return s;
  if (config.requests_answered != sent) {
    return absl::DataLossError(
        absl::StrFormat("config: %u requests answered, %u sent",
                        config.requests_answered, sent));
  }
  // A split ring's position is the next avail index the device would take.
  auto position = driver.StopQueue();
  if (!position.ok()) return position.status();
  if (*position != sent) {
    return absl::DataLossError(absl::StrFormat(
        "GET_VRING_BASE: %u, expected %u (one per request)", *position, sent));
  }
  std::printf("uppercase_check: %u requests answered correctly\n", sent);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
    return 2;
  }
  const absl::Status s = Check(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "uppercase_check: FAILED: %s\n", s.ToString().c_str());
    // Every wrong answer is reported as DataLoss; the ring breaking too.
    return absl::IsDataLoss(s) ? 1 : 3;
  }
  return 0;
}
