#include "json_writer.h"

#include "absl/strings/str_format.h"

namespace vhost_user {

void JsonWriter::BeforeValue() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!has_member_.empty()) {
    if (has_member_.back()) out_ += ',';
    has_member_.back() = true;
  }
}

void JsonWriter::BeginObject() {
  BeforeValue();
  out_ += '{';
  has_member_.push_back(false);
}

void JsonWriter::EndObject() {
  out_ += '}';
  if (!has_member_.empty()) has_member_.pop_back();
}

void JsonWriter::BeginArray() {
  BeforeValue();
  out_ += '[';
  has_member_.push_back(false);
}

void JsonWriter::EndArray() {
  out_ += ']';
  if (!has_member_.empty()) has_member_.pop_back();
}

void JsonWriter::Key(std::string_view key) {
  BeforeValue();
  AppendEscaped(key);
  out_ += ':';
  after_key_ = true;
}

void JsonWriter::String(std::string_view value) {
  BeforeValue();
  AppendEscaped(value);
}

void JsonWriter::Uint(uint64_t value) {
  BeforeValue();
  absl::StrAppendFormat(&out_, "%u", value);
}

void JsonWriter::Int(int64_t value) {
  BeforeValue();
  absl::StrAppendFormat(&out_, "%d", value);
}

void JsonWriter::Bool(bool value) {
  BeforeValue();
  out_ += value ? "true" : "false";
}

void JsonWriter::Hex(uint64_t value) { String(absl::StrFormat("0x%x", value)); }

void JsonWriter::FieldString(std::string_view key, std::string_view value) {
  Key(key);
  String(value);
}
void JsonWriter::FieldUint(std::string_view key, uint64_t value) {
  Key(key);
  Uint(value);
}
void JsonWriter::FieldInt(std::string_view key, int64_t value) {
  Key(key);
  Int(value);
}
void JsonWriter::FieldBool(std::string_view key, bool value) {
  Key(key);
  Bool(value);
}
void JsonWriter::FieldHex(std::string_view key, uint64_t value) {
  Key(key);
  Hex(value);
}

void JsonWriter::AppendEscaped(std::string_view s) {
  out_ += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out_ += "\\\"";
        break;
      case '\\':
        out_ += "\\\\";
        break;
      case '\n':
        out_ += "\\n";
        break;
      case '\r':
        out_ += "\\r";
        break;
      case '\t':
        out_ += "\\t";
        break;
      default:
        // Other control characters as \u escapes; bytes >= 0x80 pass as
        // they are (the daemon's strings are UTF-8 or ASCII file names).
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out_, "\\u%04x", c);
        } else {
          out_ += ch;
        }
    }
  }
  out_ += '"';
}

}  // namespace vhost_user
