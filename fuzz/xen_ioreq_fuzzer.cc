// xen_ioreq_fuzzer: arbitrary 32-byte ioreq_t images placed in a vCPU slot
// of a simulated Xen and dispatched by glue/xen's IoreqServer. The backend
// must answer every one (IORESP_READY), never crash, and never touch
// memory outside its ranges: the devices trap on any access outside their
// register window, rep buffers go through the foreign-mapping guest memory
// (ASan catches strays), and the simulated domain must not be crashed.
//
// Self-contained (the fuzz preset may not build the glue): the simulator's
// sources are compiled into this fuzzer (fuzz_list.cmake).
#include <cstdint>
#include <cstring>
#include <memory>

#include "sim/sim_xen.h"
#include "xen_glue/foreign_memory.h"
#include "xen_glue/ioreq_server.h"

namespace {

using namespace virtio::xg;  // NOLINT

class Window : public IoDevice {
 public:
  explicit Window(uint64_t size) : size_(size) {}
  uint64_t MmioRead(uint64_t offset, uint32_t size) override {
    Check(offset, size);
    uint64_t v = 0;
    std::memcpy(&v, regs_ + offset, size);
    return v;
  }
  void MmioWrite(uint64_t offset, uint32_t size, uint64_t value) override {
    Check(offset, size);
    std::memcpy(regs_ + offset, &value, size);
  }
  uint32_t ConfigRead(uint32_t reg, uint32_t size) override {
    if (reg + size > 4096) __builtin_trap();
    return reg;
  }
  void ConfigWrite(uint32_t reg, uint32_t size, uint32_t) override {
    if (reg + size > 4096) __builtin_trap();
  }

 private:
  void Check(uint64_t offset, uint32_t size) const {
    if (size == 0 || size > 8 || offset >= size_ || size > size_ - offset)
      __builtin_trap();
  }
  uint64_t size_;
  uint8_t regs_[0x200] = {};
};

struct Rig {
  Rig()
      : xen(sim::SimOptions{.arch = sim::Arch::kX86,
                            .vcpus = 1,
                            .ram = {{0x40000000, 1 << 20}}}),
        dm(xen),
        fm(xen),
        ev(xen),
        server(dm, fm, ev, {.domid = xen.domid()}) {
    auto m = XenGuestMemory<sim::SimForeignMemory>::Create(
        fm, xen.domid(), {{0x40000000, 1 << 20}});
    if (!m.ok()) __builtin_trap();
    mem = std::move(*m);
    server.set_guest_copier(mem.get());
    server.set_invalidate_hook([this] { mem->Invalidate(); });
    if (!server.AddMmio(0x02000000, 0x200, &a, "a").ok()) __builtin_trap();
    if (!server.AddMmio(0x02000200, 0x100, &b, "b").ok()) __builtin_trap();
    if (!server.AddPci(0, 0, 5, 0, &p, "p").ok()) __builtin_trap();
    if (!server.Start().ok()) __builtin_trap();
  }
  sim::SimXen xen;
  sim::SimDeviceModel dm;
  sim::SimForeignMemory fm;
  sim::SimEvtchn ev;
  IoreqServer<sim::SimDeviceModel, sim::SimForeignMemory, sim::SimEvtchn>
      server;
  std::unique_ptr<XenGuestMemory<sim::SimForeignMemory>> mem;
  Window a{0x200};
  Window b{0x100};
  Window p{0x200};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Rig* rig = [] {
    virtio::SetLogSink([](virtio::LogLevel, std::string_view) {});
    return new Rig();
  }();
  if (size < sizeof(IoreqSlot)) return 0;
  IoreqSlot img;
  std::memcpy(&img, data, sizeof img);
  // Keep rep counts small enough to stay fast; the server caps them anyway.
  if (size > sizeof img && (data[sizeof img] & 1)) img.count &= 0xff;
  if (!rig->xen.PostRaw(rig->server.id(), 0, img)) __builtin_trap();
  rig->server.PollOnce(0);
  if (!rig->xen.TakeRawAnswer(rig->server.id(), 0).has_value())
    __builtin_trap();
  if (rig->xen.crashed()) __builtin_trap();
  return 0;
}
