// glue/kvm/aml.h — just enough of an ACPI Machine Language (AML) encoder
// to write a DSDT of names, scopes, devices, packages and resource
// templates: the static description of a virtual platform. No methods, no
// control flow: nothing in this VMM's platform changes at run time.
//
// Every function returns the encoded bytes of one AML term (ACPI 6.5,
// chapter 20 "ACPI Machine Language Specification"); terms nest by passing
// one function's result into another. Names are ACPI name paths such as
// "_HID", "PCI0" or "\\_SB.PCI0"; a segment shorter than four characters is
// padded with '_' as ASL does.
#ifndef LIBVIRTIO_GLUE_KVM_AML_H_
#define LIBVIRTIO_GLUE_KVM_AML_H_

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace kvmglue::aml {

using Bytes = std::vector<uint8_t>;

// PkgLength for `content` bytes that follow it (the encoding counts its own
// bytes too, so it is one to four bytes long).
Bytes PkgLength(size_t content);

// A NameString: optional root prefix '\', then one, two (DualNamePrefix) or
// more (MultiNamePrefix) four-character segments separated by '.'.
Bytes NameString(std::string_view path);

// The smallest integer encoding: ZeroOp, OneOp, or Byte/Word/DWord/QWord
// constant.
Bytes Integer(uint64_t value);

// A null-terminated ASCII string constant.
Bytes String(std::string_view text);

// EISAID("PNP0A03"): three letters and four hex digits, compressed into a
// DWord constant. `id` must be exactly that shape (checked by the caller's
// tests; a malformed id encodes as zero).
Bytes EisaId(std::string_view id);

// Package (up to 255 elements).
Bytes Package(std::initializer_list<Bytes> elements);
Bytes Package(const std::vector<Bytes>& elements);

// Buffer of raw bytes.
Bytes Buffer(const Bytes& data);

// Name(path, value).
Bytes Name(std::string_view path, const Bytes& value);

// Scope(path) { body } and Device(path) { body }: `body` is the
// concatenation of the terms inside.
Bytes Scope(std::string_view path, const Bytes& body);
Bytes Device(std::string_view path, const Bytes& body);

// Concatenates terms.
Bytes Join(std::initializer_list<Bytes> terms);

// Resource descriptors (ACPI 6.5, 6.4) for a ResourceTemplate. Ranges are
// inclusive [min, max] as in ASL.
namespace resource {

// A host bridge's bus-number range (WordBusNumber, producer).
Bytes BusNumbers(uint16_t min, uint16_t max);
// Fixed I/O ports a device decodes itself (IO, 16-bit decode).
Bytes IoPorts(uint16_t base, uint8_t length);
// An I/O window a bridge forwards (WordIO, producer, entire range).
Bytes IoWindow(uint16_t min, uint16_t max);
// A memory window a bridge forwards (DWordMemory or, above 4 GiB,
// QWordMemory; producer, read/write, non-cacheable).
Bytes MemoryWindow(uint64_t min, uint64_t max);
// A memory range a device decodes (Memory32Fixed, read/write).
Bytes FixedMemory(uint32_t base, uint32_t length);
// An interrupt a device raises (Extended Interrupt, consumer, exclusive,
// active high).
Bytes Interrupt(uint32_t gsi, bool level_triggered);

}  // namespace resource

// ResourceTemplate() { descriptors }: a Buffer ending with the End Tag.
Bytes ResourceTemplate(std::initializer_list<Bytes> descriptors);

}  // namespace kvmglue::aml

#endif  // LIBVIRTIO_GLUE_KVM_AML_H_
