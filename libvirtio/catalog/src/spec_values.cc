#include "virtio/catalog/spec_values.h"

#include <charconv>
#include <limits>

#include "absl/strings/str_format.h"

namespace virtio::catalog {
namespace {

// The whole of `text` as an unsigned number in `base`.
template <typename T>
std::optional<T> WholeNumber(std::string_view text, int base) {
  T value{};
  if (text.empty()) return std::nullopt;
  const auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (error != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

std::optional<bool> ParseBoolValue(std::string_view value) {
  if (value == "on" || value == "true" || value == "yes" || value == "1") {
    return true;
  }
  if (value == "off" || value == "false" || value == "no" || value == "0") {
    return false;
  }
  return std::nullopt;
}

std::optional<uint64_t> ParseIntegerValue(std::string_view value) {
  if (value.size() > 2 && value[0] == '0' &&
      (value[1] == 'x' || value[1] == 'X')) {
    return WholeNumber<uint64_t>(value.substr(2), 16);
  }
  return WholeNumber<uint64_t>(value, 10);
}

std::optional<uint64_t> ParseSizeValue(std::string_view value) {
  if (value.empty()) return std::nullopt;
  unsigned shift = 0;
  switch (value.back()) {
    case 'k':
    case 'K':
      shift = 10;
      break;
    case 'm':
    case 'M':
      shift = 20;
      break;
    case 'g':
    case 'G':
      shift = 30;
      break;
    case 't':
    case 'T':
      shift = 40;
      break;
    default:
      break;
  }
  if (shift != 0) value.remove_suffix(1);
  const std::optional<uint64_t> number = ParseIntegerValue(value);
  if (!number || *number > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return std::nullopt;
  }
  return *number << shift;
}

std::optional<MacAddress> ParseMacValue(std::string_view value) {
  MacAddress mac{};
  if (value.size() != 17) return std::nullopt;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i > 0 && value[3 * i - 1] != ':') return std::nullopt;
    const std::optional<uint8_t> byte =
        WholeNumber<uint8_t>(value.substr(3 * i, 2), 16);
    if (!byte) return std::nullopt;
    mac[i] = *byte;
  }
  return mac;
}

std::string FormatMac(const MacAddress& mac) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
                         mac[2], mac[3], mac[4], mac[5]);
}

std::optional<PciAddress> ParsePciAddressValue(std::string_view value) {
  PciAddress address;
  // Peel "segment:" and "bus:" off the front, right to left.
  const size_t last_colon = value.rfind(':');
  std::string_view slot_function = value;
  if (last_colon != std::string_view::npos) {
    std::string_view prefix = value.substr(0, last_colon);
    slot_function = value.substr(last_colon + 1);
    const size_t colon = prefix.find(':');
    std::string_view bus = prefix;
    if (colon != std::string_view::npos) {
      const std::optional<uint16_t> segment =
          WholeNumber<uint16_t>(prefix.substr(0, colon), 16);
      if (!segment) return std::nullopt;
      address.segment = *segment;
      bus = prefix.substr(colon + 1);
    }
    const std::optional<uint8_t> bus_number = WholeNumber<uint8_t>(bus, 16);
    if (!bus_number) return std::nullopt;
    address.bus = *bus_number;
  }
  const size_t dot = slot_function.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::optional<uint8_t> slot =
      WholeNumber<uint8_t>(slot_function.substr(0, dot), 16);
  const std::optional<uint8_t> function =
      WholeNumber<uint8_t>(slot_function.substr(dot + 1), 16);
  if (!slot || !function || *slot > 0x1f || *function > 7) {
    return std::nullopt;
  }
  address.slot = *slot;
  address.function = *function;
  return address;
}

std::string FormatPciAddress(const PciAddress& address) {
  const std::string bdf = absl::StrFormat("%02x:%02x.%x", address.bus,
                                          address.slot, address.function);
  if (address.segment == 0) return bdf;
  return absl::StrFormat("%04x:%s", address.segment, bdf);
}

bool LooksLikePciAddress(std::string_view value) {
  return value.find_first_of(":.") != std::string_view::npos;
}

}  // namespace virtio::catalog
