#include "virtio/catalog/spec_text.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace virtio::catalog {

absl::StatusOr<SpecText> ParseSpecText(std::string_view text) {
  SpecText spec;
  spec.text = std::string(text);
  // Abseil's string_view is its own type here, not std::string_view.
  const std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(text.data(), text.size()), ',');
  spec.type = std::string(fields.front());
  if (spec.type.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--device '%s': empty device type", text));
  }
  for (size_t i = 1; i < fields.size(); ++i) {
    const std::string_view field(fields[i].data(), fields[i].size());
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--device %s: '%s' is not key=value", text, field));
    }
    std::string key(field.substr(0, eq));
    const bool repeated =
        std::any_of(spec.entries.begin(), spec.entries.end(),
                    [&](const auto& entry) { return entry.first == key; });
    if (repeated) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--device %s: '%s' given twice", text, key));
    }
    spec.entries.emplace_back(std::move(key),
                              std::string(field.substr(eq + 1)));
  }
  return spec;
}

}  // namespace virtio::catalog
