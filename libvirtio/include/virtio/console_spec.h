// virtio/console_spec.h — the virtio-console wire format (VIRTIO 1.2 §5.3).
//
// Feature bits, the configuration layout, the control message header and
// its events, and the queue numbering of a multiport device, as plain
// little-endian structs whose sizes and offsets are checked at compile time.
// Control messages arrive in guest memory: copy them out once (with
// DescriptorChain::CopyFromReadable) before looking at any field.
//
// Example:
//   virtio::console::Control c;
//   if (chain.CopyFromReadable(0, &c, sizeof c) != sizeof c) { /* short */ }
//   if (c.event == virtio::console::kEventPortReady) { ... }
#ifndef VIRTIO_CONSOLE_SPEC_H_
#define VIRTIO_CONSOLE_SPEC_H_

#include <cstddef>
#include <cstdint>

namespace virtio::console {

// Device-specific feature bits (§5.3.3).
enum Feature : unsigned {
  kFeatureSize = 0,        // cols/rows in config space are valid
  kFeatureMultiport = 1,   // max_nr_ports valid; control queues exist
  kFeatureEmergWrite = 2,  // emerg_wr is writable
};

// Device configuration layout (§5.3.4).
struct Config {
  uint16_t cols;
  uint16_t rows;
  uint32_t max_nr_ports;
  uint32_t emerg_wr;
};
static_assert(sizeof(Config) == 12);
static_assert(offsetof(Config, cols) == 0);
static_assert(offsetof(Config, rows) == 2);
static_assert(offsetof(Config, max_nr_ports) == 4);
static_assert(offsetof(Config, emerg_wr) == 8);

// struct virtio_console_control (§5.3.6.2): the header of every message on
// the control queues, in both directions.
struct Control {
  uint32_t id;     // port number
  uint16_t event;  // one of Event
  uint16_t value;  // event-specific
};
static_assert(sizeof(Control) == 8);
static_assert(offsetof(Control, id) == 0);
static_assert(offsetof(Control, event) == 4);
static_assert(offsetof(Control, value) == 6);

// Follows a kEventResize header (struct virtio_console_resize, §5.3.6.2).
struct Resize {
  uint16_t cols;
  uint16_t rows;
};
static_assert(sizeof(Resize) == 4);
static_assert(offsetof(Resize, rows) == 2);

// Control events (§5.3.6.2). "D→G": device to guest; "G→D": guest to device.
enum Event : uint16_t {
  kEventDeviceReady = 0,   // G→D: driver is ready (value 1) or failed (0)
  kEventDeviceAdd = 1,     // D→G: port `id` exists (Linux: PORT_ADD)
  kEventDeviceRemove = 2,  // D→G: port `id` is gone (Linux: PORT_REMOVE)
  kEventPortReady = 3,     // G→D: port `id` set up (value 1) or failed (0)
  kEventConsolePort = 4,   // D→G: port `id` is a console (value 1)
  kEventResize = 5,        // D→G: console size; a Resize follows
  kEventPortOpen = 6,      // both: port `id` opened (value 1) or closed (0)
  kEventPortName = 7,      // D→G: the port's name follows the header
};

// The id Linux puts in DEVICE_READY (VIRTIO_CONSOLE_BAD_ID): that message
// names no port.
inline constexpr uint32_t kBadId = ~uint32_t{0};

// Queue numbering (§5.3.2): receiveq0, transmitq0, then (MULTIPORT) control
// receiveq, control transmitq, then receiveq/transmitq for ports 1, 2, ...
inline constexpr uint16_t kControlRxQueue = 2;
inline constexpr uint16_t kControlTxQueue = 3;
constexpr uint16_t RxQueue(uint32_t port) {
  return static_cast<uint16_t>(port == 0 ? 0 : 2 + 2 * port);
}
constexpr uint16_t TxQueue(uint32_t port) {
  return static_cast<uint16_t>(RxQueue(port) + 1);
}
// Number of queues a device with `ports` ports has (1 port without
// MULTIPORT: just receiveq0/transmitq0).
constexpr uint16_t NumQueues(uint32_t ports, bool multiport) {
  return static_cast<uint16_t>(multiport ? 2 + 2 * ports : 2);
}
static_assert(RxQueue(0) == 0 && TxQueue(0) == 1);
static_assert(RxQueue(1) == 4 && TxQueue(1) == 5);
static_assert(NumQueues(1, true) == 4 && NumQueues(3, true) == 8);

}  // namespace virtio::console

#endif  // VIRTIO_CONSOLE_SPEC_H_
