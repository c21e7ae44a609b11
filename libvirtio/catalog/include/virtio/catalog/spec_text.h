// virtio/catalog/spec_text.h — a `--device` argument split into its type
// and key=value entries, before any value is interpreted.
//
//   blk,path=disk.img,readonly=on  ->  type "blk",
//                                      {path: disk.img, readonly: on}
//
// The first comma-separated field is the type; every other field is
// key=value, split at its first '=' (so backend=socket=PATH has the value
// socket=PATH). An empty type, a field without '=' or with an empty key,
// and a key given twice are refused, each with a message that quotes the
// whole argument.
#ifndef VIRTIO_CATALOG_SPEC_TEXT_H_
#define VIRTIO_CATALOG_SPEC_TEXT_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace virtio::catalog {

struct SpecText {
  std::string text = {};  // the argument as given, for messages
  std::string type = {};
  // In command-line order; no key appears twice.
  std::vector<std::pair<std::string, std::string>> entries = {};
};

absl::StatusOr<SpecText> ParseSpecText(std::string_view text);

}  // namespace virtio::catalog

#endif  // VIRTIO_CATALOG_SPEC_TEXT_H_
