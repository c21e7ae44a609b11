#include "virtio/catalog/spec_reader.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace virtio::catalog {
namespace {

const std::string* Find(const SpecText& spec, std::string_view key) {
  if (key.empty()) return nullptr;
  for (const auto& [name, value] : spec.entries) {
    if (name == key) return &value;
  }
  return nullptr;
}

}  // namespace

absl::Status SpecReader::Error(std::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrFormat("--device %s: %s", spec_.text, what));
}

absl::Status SpecReader::NotA(std::string_view key, std::string_view value,
                              std::string_view expected) const {
  return Error(absl::StrFormat("'%s=%s' is not %s", key, value, expected));
}

bool SpecReader::Has(KeyName key) const {
  return Find(spec_, key.name) != nullptr || Find(spec_, key.alias) != nullptr;
}

absl::StatusOr<std::optional<std::string>> SpecReader::Raw(KeyName key) {
  known_.emplace(key.name);
  if (!key.alias.empty()) known_.emplace(key.alias);
  const std::string* value = Find(spec_, key.name);
  const std::string* alias = Find(spec_, key.alias);
  if (value != nullptr && alias != nullptr) {
    return Error(absl::StrFormat("'%s' and '%s' are the same key; give it once",
                                 key.name, key.alias));
  }
  given_as_ = value != nullptr ? key.name : key.alias;
  if (value == nullptr) value = alias;
  if (value == nullptr) return std::nullopt;
  return *value;
}

absl::StatusOr<std::optional<std::string>> SpecReader::Text(KeyName key) {
  return Raw(key);
}

absl::StatusOr<std::optional<std::string>> SpecReader::Choice(
    KeyName key, absl::Span<const std::string_view> choices) {
  absl::StatusOr<std::optional<std::string>> value = Raw(key);
  if (!value.ok() || !value->has_value()) return value;
  for (std::string_view choice : choices) {
    if (**value == choice) return value;
  }
  std::string expected = "one of";
  for (std::string_view choice : choices) {
    absl::StrAppendFormat(&expected, "%s %s", expected.size() > 6 ? "," : "",
                          choice);
  }
  return NotA(given_as_, **value, expected);
}

absl::StatusOr<std::optional<bool>> SpecReader::Bool(KeyName key) {
  absl::StatusOr<std::optional<std::string>> value = Raw(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  const std::optional<bool> parsed = ParseBoolValue(**value);
  if (!parsed)
    return NotA(given_as_, **value, "on/off (or true/false, yes/no, 1/0)");
  return parsed;
}

absl::StatusOr<std::optional<uint64_t>> SpecReader::Integer(KeyName key,
                                                            uint64_t min,
                                                            uint64_t max) {
  absl::StatusOr<std::optional<std::string>> value = Raw(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  const std::optional<uint64_t> parsed = ParseIntegerValue(**value);
  if (!parsed || *parsed < min || *parsed > max) {
    return NotA(given_as_, **value,
                absl::StrFormat("a number in %u..%u", min, max));
  }
  return parsed;
}

absl::StatusOr<std::optional<uint64_t>> SpecReader::Size(KeyName key,
                                                         uint64_t min,
                                                         uint64_t max) {
  absl::StatusOr<std::optional<std::string>> value = Raw(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  const std::optional<uint64_t> parsed = ParseSizeValue(**value);
  if (!parsed || *parsed < min || *parsed > max) {
    return NotA(given_as_, **value,
                absl::StrFormat("a number in %u..%u (K, M, G, T suffixes "
                                "allowed)",
                                min, max));
  }
  return parsed;
}

absl::StatusOr<std::optional<MacAddress>> SpecReader::Mac(KeyName key) {
  absl::StatusOr<std::optional<std::string>> value = Raw(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  const std::optional<MacAddress> parsed = ParseMacValue(**value);
  if (!parsed)
    return NotA(given_as_, **value, "a MAC address xx:xx:xx:xx:xx:xx");
  return parsed;
}

absl::StatusOr<std::optional<PciAddress>> SpecReader::Pci(KeyName key) {
  absl::StatusOr<std::optional<std::string>> value = Raw(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  const std::optional<PciAddress> parsed = ParsePciAddressValue(**value);
  if (!parsed) {
    return NotA(given_as_, **value,
                "a PCI address [[segment:]bus:]slot.function (hex, slot "
                "0..1f, function 0..7)");
  }
  return parsed;
}

absl::Status SpecReader::Finish() const {
  for (const auto& [key, value] : spec_.entries) {
    if (known_.count(key) == 0) {
      return Error(absl::StrFormat("unknown key '%s' for %s (it takes: %s)",
                                   key, spec_.type,
                                   absl::StrJoin(known_, ", ")));
    }
  }
  return absl::OkStatus();
}

}  // namespace virtio::catalog
