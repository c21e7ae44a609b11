#include "stats_json.h"

#include <cstdint>

#include "json_writer.h"
#include "vhost_user/queue_counters.h"
#include "vhost_user/server.h"
#include "virtio/ring_error.h"
#include "virtio/spec.h"

namespace vhost_user {
namespace {

void WriteDevice(const StatsSubject& s, JsonWriter& j) {
  namespace spec = virtio::spec;
  const uint8_t status = s.device->status();
  j.Key("device");
  j.BeginObject();
  j.FieldString("type", s.type);
  j.FieldString("name", s.name);
  j.FieldString("spec", s.spec);
  j.FieldUint("status", status);
  j.FieldBool("driver_ok", (status & spec::kStatusDriverOk) != 0);
  j.FieldBool("needs_reset", (status & spec::kStatusDeviceNeedsReset) != 0);
  j.FieldHex("features_offered", s.device->features());
  j.FieldUint("num_queues", s.device->num_queues());
  s.control->WriteDeviceFields(j);
  j.EndObject();
}

void WriteConnection(const StatsSubject& s, JsonWriter& j) {
  const ConnectionStatus c =
      s.connection != nullptr ? s.connection->Read() : ConnectionStatus{};
  j.Key("connection");
  j.BeginObject();
  j.FieldString("state", c.connected ? "connected" : "waiting");
  j.FieldInt("number", c.number);
  j.FieldInt("accepted", c.accepted);
  j.FieldHex("features", c.features);
  j.FieldHex("protocol_features", c.protocol_features);
  j.FieldBool("backend_channel", c.backend_channel);
  j.EndObject();
}

void WriteQueue(const StatsSubject& s, uint16_t q, JsonWriter& j) {
  VhostDevice& dev = *s.device;
  j.BeginObject();
  j.FieldUint("index", q);
  const uint64_t sent = dev.queue_interrupts(q);
  const uint64_t lost = dev.queue_interrupts_lost(q);
  const DeviceQueueErrors device_errors = s.control->queue_errors(q);
  uint64_t requests = 0, completions = 0, in_flight = 0, bytes_from = 0,
           bytes_to = 0, kicks = 0, publishes = 0, bad_address = 0,
           malformed = 0, ring_errors = 0;
  virtio::RingError last = virtio::RingError::kNone;
  if (const QueueCounters* c = dev.queue_counters(q)) {
    requests = QueueCounters::Read(c->requests);
    completions = QueueCounters::Read(c->completions);
    in_flight = QueueCounters::Read(c->in_flight);
    bytes_from = QueueCounters::Read(c->bytes_from_driver);
    bytes_to = QueueCounters::Read(c->bytes_to_driver);
    kicks = QueueCounters::Read(c->kicks);
    publishes = QueueCounters::Read(c->publishes);
    bad_address = QueueCounters::Read(c->bad_address_chains);
    malformed = QueueCounters::Read(c->malformed_chains);
    ring_errors = QueueCounters::Read(c->ring_errors);
    last = c->last_ring_error.load(std::memory_order_relaxed);
  }
  j.FieldUint("requests", requests);
  j.FieldUint("completions", completions);
  j.FieldUint("in_flight", in_flight);
  j.FieldUint("bytes_from_driver", bytes_from);
  j.FieldUint("bytes_to_driver", bytes_to);
  j.FieldUint("kicks", kicks);
  j.Key("notifications");
  j.BeginObject();
  j.FieldUint("sent", sent);
  // Publishes the driver asked not to be told about (EVENT_IDX,
  // NO_INTERRUPT). The counters are read one after another while the
  // queue runs: never let a publish counted after its signal go negative.
  j.FieldUint("suppressed",
              publishes > sent + lost ? publishes - sent - lost : 0);
  j.FieldUint("lost", lost);
  j.EndObject();
  j.Key("errors");
  j.BeginObject();
  j.FieldUint("bad_address_chains", bad_address);
  j.FieldUint("malformed_chains", malformed);
  j.FieldUint("ring_errors", ring_errors);
  j.FieldString("last_ring_error", last == virtio::RingError::kNone
                                       ? std::string_view("none")
                                       : virtio::RingErrorName(last));
  j.FieldUint("malformed_requests", device_errors.malformed_requests);
  j.FieldUint("backend_errors", device_errors.backend_errors);
  j.EndObject();
  s.control->WriteQueueFields(q, j);
  j.EndObject();
}

}  // namespace

std::string StatsJson(const StatsSubject& subject) {
  JsonWriter j;
  j.BeginObject();
  WriteDevice(subject, j);
  WriteConnection(subject, j);
  j.Key("queues");
  j.BeginArray();
  for (uint16_t q = 0; q < subject.device->num_queues(); ++q) {
    WriteQueue(subject, q, j);
  }
  j.EndArray();
  j.EndObject();
  return j.str();
}

}  // namespace vhost_user
