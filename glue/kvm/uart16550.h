// glue/kvm/uart16550.h — a transmit-only 16550A UART for the guest's serial
// console (COM1, 0x3f8, IRQ 4).
//
// Enough of the 16550A for Linux's 8250 driver to detect it as a 16550A,
// use it as its console and drive it by interrupts: the divisor latch,
// scratch register, FIFO control (IIR reports FIFOs enabled), modem
// control with loopback, and the THR-empty interrupt. Transmission is
// instantaneous: a byte written to THR goes to the output at once, so LSR
// always shows the transmitter empty. A THR write drops the THRE interrupt
// and raises it again: on an edge-triggered ISA line that is the edge the
// driver waits for. There is no receiver (LSR.DR stays 0): guest input
// goes through virtio-console.
//
// Output is collected a line at a time and handed to `out`. Not
// thread-safe: the VMM calls it under its port-I/O lock.
#ifndef LIBVIRTIO_GLUE_KVM_UART16550_H_
#define LIBVIRTIO_GLUE_KVM_UART16550_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace kvmglue {

class Uart16550 {
 public:
  static constexpr uint16_t kCom1 = 0x3f8;
  static constexpr uint32_t kCom1Irq = 4;

  // `irq(level)` sets the interrupt line; `out(text)` receives output.
  Uart16550(uint16_t base, std::function<void(bool)> irq,
            std::function<void(std::string_view)> out)
      : base_(base), irq_(std::move(irq)), out_(std::move(out)) {}

  bool Claims(uint16_t port) const { return port >= base_ && port < base_ + 8; }

  uint8_t Read(uint16_t port) {
    switch (port - base_) {
      case kRbr:
        return Dlab() ? static_cast<uint8_t>(divisor_) : 0;
      case kIer:
        return Dlab() ? static_cast<uint8_t>(divisor_ >> 8) : ier_;
      case kIir: {
        const uint8_t fifo = (fcr_ & kFcrEnable) ? 0xc0 : 0;
        if (ThrInterrupt()) {
          // Reading IIR acknowledges a THR-empty interrupt.
          thre_pending_ = false;
          UpdateIrq();
          return fifo | kIirThre;
        }
        return fifo | kIirNone;
      }
      case kLcr:
        return lcr_;
      case kMcr:
        return mcr_;
      case kLsr:
        return kLsrThre | kLsrTemt;
      case kMsr:
        if (mcr_ & kMcrLoop) {
          // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
          return static_cast<uint8_t>(((mcr_ & 0x1) << 5) |
                                      ((mcr_ & 0x2) << 3) |
                                      ((mcr_ & 0x4) << 4) |
                                      ((mcr_ & 0x8) << 4));
        }
        return kMsrDcd | kMsrDsr | kMsrCts;
      default:  // kScr
        return scr_;
    }
  }

  void Write(uint16_t port, uint8_t value) {
    switch (port - base_) {
      case kThr:
        if (Dlab()) {
          divisor_ = (divisor_ & 0xff00) | value;
          return;
        }
        if (!(mcr_ & kMcrLoop)) Transmit(value);
        // The byte left at once: THR is empty again. Lower then raise, so
        // an edge-triggered line sees a new edge for every byte.
        thre_pending_ = false;
        UpdateIrq();
        thre_pending_ = true;
        UpdateIrq();
        return;
      case kIer:
        if (Dlab()) {
          divisor_ = static_cast<uint16_t>((divisor_ & 0xff) | (value << 8));
          return;
        }
        // Enabling the THRE interrupt while THR is empty raises it.
        if ((value & kIerThri) && !(ier_ & kIerThri)) thre_pending_ = true;
        ier_ = value & 0x0f;
        UpdateIrq();
        return;
      case kFcr:
        fcr_ = value & kFcrEnable;
        return;
      case kLcr:
        lcr_ = value;
        return;
      case kMcr:
        mcr_ = value & 0x1f;
        UpdateIrq();
        return;
      case kScr:
        scr_ = value;
        return;
      default:  // LSR, MSR: read-only
        return;
    }
  }

  // Hands out a partial line (at exit).
  void Flush() {
    if (!line_.empty()) out_(line_);
    line_.clear();
  }

 private:
  enum Register : uint16_t {
    kRbr = 0, kThr = 0, kIer = 1, kIir = 2, kFcr = 2, kLcr = 3, kMcr = 4,
    kLsr = 5, kMsr = 6, kScr = 7,
  };
  static constexpr uint8_t kIerThri = 0x02;
  static constexpr uint8_t kIirNone = 0x01;
  static constexpr uint8_t kIirThre = 0x02;
  static constexpr uint8_t kFcrEnable = 0x01;
  static constexpr uint8_t kLcrDlab = 0x80;
  static constexpr uint8_t kMcrOut2 = 0x08;  // gates the IRQ on PC UARTs
  static constexpr uint8_t kMcrLoop = 0x10;
  static constexpr uint8_t kLsrThre = 0x20;
  static constexpr uint8_t kLsrTemt = 0x40;
  static constexpr uint8_t kMsrCts = 0x10;
  static constexpr uint8_t kMsrDsr = 0x20;
  static constexpr uint8_t kMsrDcd = 0x80;
  static constexpr size_t kMaxLine = 4096;

  bool Dlab() const { return lcr_ & kLcrDlab; }
  bool ThrInterrupt() const { return (ier_ & kIerThri) && thre_pending_; }

  void UpdateIrq() {
    const bool level = ThrInterrupt() && (mcr_ & kMcrOut2);
    if (level != irq_level_) {
      irq_level_ = level;
      irq_(level);
    }
  }

  void Transmit(uint8_t c) {
    line_.push_back(static_cast<char>(c));
    if (c == '\n' || line_.size() >= kMaxLine) Flush();
  }

  uint16_t base_;
  std::function<void(bool)> irq_;
  std::function<void(std::string_view)> out_;
  uint16_t divisor_ = 1;
  uint8_t ier_ = 0;
  uint8_t fcr_ = 0;
  uint8_t lcr_ = 0;
  uint8_t mcr_ = 0;
  uint8_t scr_ = 0;
  bool thre_pending_ = false;
  bool irq_level_ = false;
  std::string line_;
};

}  // namespace kvmglue

#endif  // LIBVIRTIO_GLUE_KVM_UART16550_H_
