// virtio/catalog/spec_reader.h — reads the typed values of one `--device`
// argument, key by key, and refuses what nobody read.
//
//   SpecReader reader(*spec_text);
//   absl::StatusOr<std::optional<bool>> readonly =
//       reader.Bool({.name = "readonly"});
//   ...
//   absl::Status done = reader.Finish();   // unknown keys
//
// Every getter returns nullopt when the key is absent, the value when it
// parses, and InvalidArgument naming the key, the value, what was expected
// and the whole spec when it does not ("--device blk,readonly=maybe:
// 'readonly=maybe' is not on/off"). A key may have one alias (num-queues
// and queues); giving both is refused like a key given twice. The catalogue
// (device_spec.h) reads the keys every glue shares; a glue reads its own
// (addresses, interrupts, grants, transport) from the same reader before
// Finish().
#ifndef VIRTIO_CATALOG_SPEC_READER_H_
#define VIRTIO_CATALOG_SPEC_READER_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "virtio/catalog/spec_text.h"
#include "virtio/catalog/spec_values.h"

namespace virtio::catalog {

// A key as the grammar names it, and an older spelling still accepted.
struct KeyName {
  std::string_view name;
  std::string_view alias = {};
};

class SpecReader {
 public:
  explicit SpecReader(const SpecText& spec) : spec_(spec) {}

  const std::string& type() const { return spec_.type; }
  const std::string& text() const { return spec_.text; }

  // Any text (possibly empty).
  absl::StatusOr<std::optional<std::string>> Text(KeyName key);
  // One of `choices`.
  absl::StatusOr<std::optional<std::string>> Choice(
      KeyName key, absl::Span<const std::string_view> choices);
  // on/off, true/false, yes/no, 1/0.
  absl::StatusOr<std::optional<bool>> Bool(KeyName key);
  // Decimal or 0x-hexadecimal, in [min, max].
  absl::StatusOr<std::optional<uint64_t>> Integer(KeyName key, uint64_t min,
                                                  uint64_t max);
  // An integer with an optional K/M/G/T suffix, in [min, max].
  absl::StatusOr<std::optional<uint64_t>> Size(KeyName key, uint64_t min,
                                               uint64_t max);
  absl::StatusOr<std::optional<MacAddress>> Mac(KeyName key);
  absl::StatusOr<std::optional<PciAddress>> Pci(KeyName key);

  // Whether the key (or its alias) was given, without consuming it.
  bool Has(KeyName key) const;

  // InvalidArgument "--device SPEC: what".
  absl::Status Error(std::string_view what) const;

  // Refuses the first key no getter asked for, naming it and the keys
  // that were asked for (what this device type takes here).
  absl::Status Finish() const;

 private:
  // The value of `key` or its alias, marking both as known. Fails when
  // both spellings are given.
  absl::StatusOr<std::optional<std::string>> Raw(KeyName key);
  // "'key=value' is not <expected>".
  absl::Status NotA(std::string_view key, std::string_view value,
                    std::string_view expected) const;

  const SpecText& spec_;
  // The spelling (name or alias) of the key Raw() last found, so that a
  // message quotes what the user wrote.
  std::string_view given_as_;
  // Every name and alias asked for, given or not.
  std::set<std::string, std::less<>> known_;
};

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_SPEC_READER_H_
