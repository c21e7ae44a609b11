// vhost-user/stats_json.h — the statistics document vhost-user-device's
// control socket answers `stats` with (schema: README.md, "Statistics"):
// the device (type, name, status, the type's own fields), the front-end
// connection (state, negotiated features) and every queue (requests,
// bytes, errors by kind, notifications sent and suppressed, kicks, in
// flight). Built from counters the data path keeps anyway, read without
// locks while the queues run.
#ifndef VHOST_USER_STATS_JSON_H_
#define VHOST_USER_STATS_JSON_H_

#include <string>
#include <string_view>

#include "device_control.h"
#include "vhost_user/device.h"
#include "vhost_user/server.h"

namespace vhost_user {

// What the statistics describe.
struct StatsSubject {
  std::string_view type;  // "blk", "net", ...
  std::string_view name;  // the device's name (id= or its type)
  std::string_view spec;  // the --device spec as given
  VhostDevice* device = nullptr;
  const DeviceControl* control = nullptr;
  // The device's front-end connection (null: reported as waiting).
  const ConnectionState* connection = nullptr;
};

// The statistics document, one line of JSON (no newline).
std::string StatsJson(const StatsSubject& subject);

}  // namespace vhost_user

#endif  // VHOST_USER_STATS_JSON_H_
