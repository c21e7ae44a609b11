// virtio/catalog/spec_values.h — the typed values of the `--device`
// grammar (docs/devices.md): booleans, integers, sizes, MAC and PCI
// addresses. Each parser takes the whole value and returns nothing when it
// is not one; SpecReader (spec_reader.h) turns that into a message naming
// the key and the spec.
#ifndef VIRTIO_CATALOG_SPEC_VALUES_H_
#define VIRTIO_CATALOG_SPEC_VALUES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace virtio::catalog {

// on/off, true/false, yes/no, 1/0.
std::optional<bool> ParseBoolValue(std::string_view value);

// A decimal number, or hexadecimal with 0x.
std::optional<uint64_t> ParseIntegerValue(std::string_view value);

// An integer with an optional K, M, G or T suffix (powers of 1024, either
// case): 64M is 67108864. Overflow is not a size.
std::optional<uint64_t> ParseSizeValue(std::string_view value);

// Six hexadecimal byte pairs separated by colons: 52:54:00:12:34:56.
using MacAddress = std::array<uint8_t, 6>;
std::optional<MacAddress> ParseMacValue(std::string_view value);
std::string FormatMac(const MacAddress& mac);

// A PCI function, [[segment:]bus:]slot.function in hexadecimal: 05.0,
// 00:05.0, 0000:00:05.0. Missing segment and bus are 0.
struct PciAddress {
  uint16_t segment = 0;
  uint8_t bus = 0;
  uint8_t slot = 0;      // 0..1f
  uint8_t function = 0;  // 0..7
  bool operator==(const PciAddress&) const = default;
  // Bus, device and function as in a configuration address.
  uint32_t bdf() const {
    return (uint32_t{bus} << 8) | (uint32_t{slot} << 3) | function;
  }
};
std::optional<PciAddress> ParsePciAddressValue(std::string_view value);
// "bus:slot.fn", with "segment:" in front when the segment is not 0.
std::string FormatPciAddress(const PciAddress& address);

// Whether `value` is written as a PCI address rather than a number (it has
// a ':' or a '.'): addr= takes either.
bool LooksLikePciAddress(std::string_view value);

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_SPEC_VALUES_H_
