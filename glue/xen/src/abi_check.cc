// src/abi_check.cc — xen_glue/abi.h against the real Xen public headers.
// Compiled (and linked into xen-virtio-backend) only when libxen-dev is
// present; a mismatch is a build error.
#include <cstddef>

#include "xen_glue/abi.h"
#include "xen_glue/real_ports.h"

extern "C" {
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
}

namespace virtio::xg {

#if defined(__x86_64__) || defined(__i386__)
static_assert(kX86EmuLapic == XEN_X86_EMU_LAPIC);
static_assert(kX86EmuIoapic == XEN_X86_EMU_IOAPIC);
static_assert(kX86EmuPic == XEN_X86_EMU_PIC);
#endif

static_assert(sizeof(ioreq_t) == sizeof(IoreqSlot));
static_assert(sizeof(ioreq_t) == 32);
static_assert(offsetof(ioreq_t, addr) == offsetof(IoreqSlot, addr));
static_assert(offsetof(ioreq_t, data) == offsetof(IoreqSlot, data));
static_assert(offsetof(ioreq_t, count) == offsetof(IoreqSlot, count));
static_assert(offsetof(ioreq_t, size) == offsetof(IoreqSlot, size));
static_assert(offsetof(ioreq_t, vp_eport) == offsetof(IoreqSlot, vp_eport));
static_assert(offsetof(ioreq_t, _pad0) == offsetof(IoreqSlot, pad0));
static_assert(offsetof(ioreq_t, type) == offsetof(IoreqSlot, type));
static_assert(sizeof(shared_iopage_t) == sizeof(ioreq_t));
static_assert(sizeof(buf_ioreq_t) == 8);

static_assert(IOREQ_READ == kIoreqRead && IOREQ_WRITE == kIoreqWrite);
static_assert(STATE_IOREQ_NONE == kStateNone);
static_assert(STATE_IOREQ_READY == kStateReady);
static_assert(STATE_IOREQ_INPROCESS == kStateInProcess);
static_assert(STATE_IORESP_READY == kStateRespReady);
static_assert(IOREQ_TYPE_PIO == kTypePio);
static_assert(IOREQ_TYPE_COPY == kTypeCopy);
static_assert(IOREQ_TYPE_PCI_CONFIG == kTypePciConfig);
static_assert(IOREQ_TYPE_TIMEOFFSET == kTypeTimeOffset);
static_assert(IOREQ_TYPE_INVALIDATE == kTypeInvalidate);

static_assert(HVM_IOREQSRV_BUFIOREQ_OFF == kBufioreqOff);
static_assert(HVM_IOREQSRV_BUFIOREQ_LEGACY == kBufioreqLegacy);
static_assert(HVM_IOREQSRV_BUFIOREQ_ATOMIC == kBufioreqAtomic);

static_assert(XENMEM_resource_ioreq_server == kResourceIoreqServer);
static_assert(XENMEM_resource_ioreq_server_frame_bufioreq == kResourceFrameBufioreq);
static_assert(XENMEM_resource_ioreq_server_frame_ioreq(0) == ResourceFrameIoreq(0));

static_assert(XEN_DMOP_IO_RANGE_PORT == kIoRangePort);
static_assert(XEN_DMOP_IO_RANGE_MEMORY == kIoRangeMemory);
static_assert(XEN_DMOP_IO_RANGE_PCI == kIoRangePci);
static_assert(static_cast<uint32_t>(XEN_DMOP_PCI_SBDF(1, 2, 3, 4)) == PciSbdf(1, 2, 3, 4));
static_assert(static_cast<uint32_t>(XEN_DMOP_PCI_SBDF(0xffff, 0xff, 0x1f, 7)) ==
              PciSbdf(0xffff, 0xff, 0x1f, 7));
static_assert(sizeof(ioservid_t) == sizeof(IoServId));
static_assert(sizeof(domid_t) == sizeof(DomId));
static_assert(sizeof(evtchn_port_t) == sizeof(EvtchnPort));
static_assert(sizeof(xen_pfn_t) == sizeof(XenPfn));

// The bitfield layout of byte 30, checked at startup (bitfield placement is
// implementation-defined, so it cannot be a static_assert).
bool CheckIoreqBitfields() {
  ioreq_t r{};
  r.state = 0xf;
  r.data_is_ptr = 1;
  r.dir = 1;
  r.df = 1;
  const auto* bytes = reinterpret_cast<const unsigned char*>(&r);
  ioreq_t s{};
  s.dir = 1;
  const auto* sb = reinterpret_cast<const unsigned char*>(&s);
  return bytes[30] == (kFlagStateMask | kFlagDataIsPtr | kFlagDirRead | kFlagDf) &&
         sb[30] == kFlagDirRead;
}

}  // namespace virtio::xg
