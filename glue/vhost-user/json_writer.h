// vhost-user/json_writer.h — a small streaming JSON writer for the
// daemon's control socket replies (statistics, resize): objects, arrays,
// strings (escaped as RFC 8259 requires), unsigned and signed integers and
// booleans. Commas and key/value separators are placed for the caller;
// nesting mistakes are the caller's bug (the tests parse every document).
//
// Example:
//   JsonWriter j;
//   j.BeginObject();
//   j.FieldString("name", "disk0");
//   j.Key("queues");
//   j.BeginArray();
//   j.Uint(3);
//   j.EndArray();
//   j.EndObject();
//   // j.str() == R"({"name":"disk0","queues":[3]})"
#ifndef VHOST_USER_JSON_WRITER_H_
#define VHOST_USER_JSON_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vhost_user {

// Builds one JSON document in memory (see the top of this file).
class JsonWriter {
 public:
  void BeginObject();
  void EndObject();
  void BeginArray();
  void EndArray();
  // An object member's name; the next value is its value.
  void Key(std::string_view key);
  void String(std::string_view value);
  void Uint(uint64_t value);
  void Int(int64_t value);
  void Bool(bool value);
  // A 64-bit mask as a "0x..." string (JSON numbers above 2^53 lose
  // precision in many parsers).
  void Hex(uint64_t value);

  // Key() followed by the value.
  void FieldString(std::string_view key, std::string_view value);
  void FieldUint(std::string_view key, uint64_t value);
  void FieldInt(std::string_view key, int64_t value);
  void FieldBool(std::string_view key, bool value);
  void FieldHex(std::string_view key, uint64_t value);

  const std::string& str() const { return out_; }

 private:
  // Writes the comma before a value or key that is not the first of its
  // container.
  void BeforeValue();
  void AppendEscaped(std::string_view s);

  std::string out_;
  // Per open container: whether it has a member yet.
  std::vector<bool> has_member_;
  bool after_key_ = false;
};

}  // namespace vhost_user

#endif  // VHOST_USER_JSON_WRITER_H_
