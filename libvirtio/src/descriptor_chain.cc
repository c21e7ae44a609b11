#include "virtio/descriptor_chain.h"

#include <cstring>

namespace virtio {
namespace {

// Walks `segs` from byte `offset`, calling copy(segment_ptr, buffer_ptr, n)
// for each piece; returns the bytes covered.
template <typename CopyFn>
size_t WalkSegments(absl::Span<const iovec> segs, uint64_t offset, size_t n,
                    CopyFn copy) {
  size_t done = 0;
  for (const iovec& seg : segs) {
    if (done == n) break;
    if (offset >= seg.iov_len) {
      offset -= seg.iov_len;
      continue;
    }
    const size_t avail = seg.iov_len - offset;
    const size_t take = (n - done) < avail ? (n - done) : avail;
    copy(static_cast<uint8_t*>(seg.iov_base) + offset, done, take);
    done += take;
    offset = 0;
  }
  return done;
}

}  // namespace

size_t DescriptorChain::CopyFromReadable(uint64_t offset, void* dst,
                                         size_t n) const {
  auto* out = static_cast<uint8_t*>(dst);
  return WalkSegments(readable(), offset, n,
                      [out](const uint8_t* seg, size_t at, size_t len) {
                        std::memcpy(out + at, seg, len);
                      });
}

size_t DescriptorChain::CopyToWritable(uint64_t offset, const void* src,
                                       size_t n) const {
  const auto* in = static_cast<const uint8_t*>(src);
  return WalkSegments(writable(), offset, n,
                      [in](uint8_t* seg, size_t at, size_t len) {
                        std::memcpy(seg, in + at, len);
                      });
}

}  // namespace virtio
