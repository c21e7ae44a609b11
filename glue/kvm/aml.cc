#include "aml.h"

#include <cctype>

namespace kvmglue::aml {
namespace {

// Opcodes, ACPI 6.5 section 20.3.
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = '\\';
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;

// Resource descriptor tags, ACPI 6.5 section 6.4.
constexpr uint8_t kIoPortTag = 0x47;  // small, 7 data bytes
constexpr uint8_t kEndTag = 0x79;     // small, 1 data byte
constexpr uint8_t kMemory32FixedTag = 0x86;
constexpr uint8_t kDWordAddressTag = 0x87;
constexpr uint8_t kWordAddressTag = 0x88;
constexpr uint8_t kExtendedIrqTag = 0x89;
constexpr uint8_t kQWordAddressTag = 0x8a;

// Address space descriptor fields.
constexpr uint8_t kResourceMemory = 0;
constexpr uint8_t kResourceIo = 1;
constexpr uint8_t kResourceBusNumber = 2;
// General flags of a bridge window: producer, positive decode, min and max
// fixed.
constexpr uint8_t kProducerFixedWindow = 0x0c;
constexpr uint8_t kMemoryReadWrite = 0x01;  // non-cacheable
constexpr uint8_t kIoEntireRange = 0x03;

void Append(Bytes& out, const Bytes& more) {
  out.insert(out.end(), more.begin(), more.end());
}

template <typename T>
void Le(Bytes& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
  }
}

// opcode(s) PkgLength body
Bytes Wrapped(std::initializer_list<uint8_t> ops, const Bytes& body) {
  Bytes out(ops);
  Append(out, PkgLength(body.size()));
  Append(out, body);
  return out;
}

}  // namespace

Bytes PkgLength(size_t content) {
  // One byte holds totals up to 63; each further byte adds 8 bits above the
  // lead byte's low nibble.
  if (content + 1 <= 63) return {static_cast<uint8_t>(content + 1)};
  for (size_t extra = 1; extra <= 3; ++extra) {
    const size_t total = content + 1 + extra;
    if (total < (size_t{1} << (4 + 8 * extra))) {
      Bytes out{static_cast<uint8_t>((extra << 6) | (total & 0xf))};
      for (size_t i = 0; i < extra; ++i) {
        out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
      }
      return out;
    }
  }
  return {};  // beyond 256 MiB: no AML table here comes near it
}

Bytes NameString(std::string_view path) {
  Bytes out;
  if (!path.empty() && path.front() == '\\') {
    out.push_back(kRootChar);
    path.remove_prefix(1);
  }
  std::vector<std::string_view> segments;
  while (!path.empty()) {
    const size_t dot = path.find('.');
    segments.push_back(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view{}
                                         : path.substr(dot + 1);
  }
  if (segments.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segments.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segments.size()));
  }
  for (std::string_view s : segments) {
    for (size_t i = 0; i < 4; ++i) {
      out.push_back(static_cast<uint8_t>(i < s.size() ? s[i] : '_'));
    }
  }
  return out;
}

Bytes Integer(uint64_t value) {
  Bytes out;
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  if (value <= 0xff) {
    out.push_back(kBytePrefix);
    Le<uint8_t>(out, static_cast<uint8_t>(value));
  } else if (value <= 0xffff) {
    out.push_back(kWordPrefix);
    Le<uint16_t>(out, static_cast<uint16_t>(value));
  } else if (value <= 0xffffffff) {
    out.push_back(kDWordPrefix);
    Le<uint32_t>(out, static_cast<uint32_t>(value));
  } else {
    out.push_back(kQWordPrefix);
    Le<uint64_t>(out, value);
  }
  return out;
}

Bytes String(std::string_view text) {
  Bytes out;
  out.reserve(text.size() + 2);
  out.push_back(kStringPrefix);
  for (char c : text) out.push_back(static_cast<uint8_t>(c));
  out.push_back(0);
  return out;
}

Bytes EisaId(std::string_view id) {
  if (id.size() != 7) return Integer(0);
  uint32_t vendor = 0;
  for (size_t i = 0; i < 3; ++i) {
    if (id[i] < 'A' || id[i] > 'Z') return Integer(0);
    vendor = (vendor << 5) | static_cast<uint32_t>(id[i] - 'A' + 1);
  }
  uint32_t product = 0;
  for (size_t i = 3; i < 7; ++i) {
    if (!std::isxdigit(static_cast<unsigned char>(id[i]))) return Integer(0);
    const char c =
        static_cast<char>(std::toupper(static_cast<unsigned char>(id[i])));
    product = (product << 4) |
              static_cast<uint32_t>(c <= '9' ? c - '0' : c - 'A' + 10);
  }
  // Both halves are stored big-endian inside the little-endian DWord.
  const uint32_t value = ((vendor >> 8) & 0xff) | ((vendor & 0xff) << 8) |
                         ((product >> 8) & 0xff) << 16 | (product & 0xff) << 24;
  Bytes out{kDWordPrefix};
  Le<uint32_t>(out, value);
  return out;
}

Bytes Package(const std::vector<Bytes>& elements) {
  Bytes body{static_cast<uint8_t>(elements.size())};
  for (const Bytes& e : elements) Append(body, e);
  return Wrapped({kPackageOp}, body);
}

Bytes Package(std::initializer_list<Bytes> elements) {
  return Package(std::vector<Bytes>(elements));
}

Bytes Buffer(const Bytes& data) {
  Bytes body = Integer(data.size());
  Append(body, data);
  return Wrapped({kBufferOp}, body);
}

Bytes Name(std::string_view path, const Bytes& value) {
  Bytes out{kNameOp};
  Append(out, NameString(path));
  Append(out, value);
  return out;
}

Bytes Scope(std::string_view path, const Bytes& body) {
  Bytes inner = NameString(path);
  Append(inner, body);
  return Wrapped({kScopeOp}, inner);
}

Bytes Device(std::string_view path, const Bytes& body) {
  Bytes inner = NameString(path);
  Append(inner, body);
  return Wrapped({kExtOpPrefix, kDeviceOp}, inner);
}

Bytes Join(std::initializer_list<Bytes> terms) {
  Bytes out;
  for (const Bytes& t : terms) Append(out, t);
  return out;
}

namespace resource {
namespace {

// Word/DWord/QWord Address Space Descriptor: granularity 0, no translation.
template <typename T>
Bytes AddressSpace(uint8_t tag, uint8_t type, uint8_t type_flags, T min,
                   T max) {
  Bytes out{tag};
  Le<uint16_t>(out, static_cast<uint16_t>(3 + 5 * sizeof(T)));
  out.push_back(type);
  out.push_back(kProducerFixedWindow);
  out.push_back(type_flags);
  Le<T>(out, 0);  // granularity
  Le<T>(out, min);
  Le<T>(out, max);
  Le<T>(out, 0);  // translation offset
  Le<T>(out, static_cast<T>(max - min + 1));
  return out;
}

}  // namespace

Bytes BusNumbers(uint16_t min, uint16_t max) {
  return AddressSpace<uint16_t>(kWordAddressTag, kResourceBusNumber, 0, min,
                                max);
}

Bytes IoPorts(uint16_t base, uint8_t length) {
  Bytes out{kIoPortTag, 0x01};  // decodes 16 address bits
  Le<uint16_t>(out, base);
  Le<uint16_t>(out, base);
  out.push_back(1);  // alignment
  out.push_back(length);
  return out;
}

Bytes IoWindow(uint16_t min, uint16_t max) {
  return AddressSpace<uint16_t>(kWordAddressTag, kResourceIo, kIoEntireRange,
                                min, max);
}

Bytes MemoryWindow(uint64_t min, uint64_t max) {
  if (max <= 0xffffffff) {
    return AddressSpace<uint32_t>(kDWordAddressTag, kResourceMemory,
                                  kMemoryReadWrite, static_cast<uint32_t>(min),
                                  static_cast<uint32_t>(max));
  }
  return AddressSpace<uint64_t>(kQWordAddressTag, kResourceMemory,
                                kMemoryReadWrite, min, max);
}

Bytes FixedMemory(uint32_t base, uint32_t length) {
  Bytes out{kMemory32FixedTag};
  Le<uint16_t>(out, 9);
  out.push_back(0x01);  // read/write
  Le<uint32_t>(out, base);
  Le<uint32_t>(out, length);
  return out;
}

Bytes Interrupt(uint32_t gsi, bool level_triggered) {
  Bytes out{kExtendedIrqTag};
  Le<uint16_t>(out, 6);
  // Consumer; edge (bit 1) unless level; active high; exclusive.
  out.push_back(static_cast<uint8_t>(0x01 | (level_triggered ? 0 : 0x02)));
  out.push_back(1);  // one interrupt
  Le<uint32_t>(out, gsi);
  return out;
}

}  // namespace resource

Bytes ResourceTemplate(std::initializer_list<Bytes> descriptors) {
  Bytes data;
  for (const Bytes& d : descriptors) Append(data, d);
  data.push_back(kEndTag);
  data.push_back(0);  // checksum 0: "the template is valid"
  return Buffer(data);
}

}  // namespace kvmglue::aml
