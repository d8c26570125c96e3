// A small JSON reader and writer: enough for the ranker's requests and model.json, strict (RFC 8259,
// no NaN or comments, no duplicate keys, valid UTF-8 only, no lone surrogates), bounded nesting, and
// errors that say where the text went wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ranker::json {

struct ParseError : std::runtime_error {
  ParseError(const std::string& what, size_t column)
      : std::runtime_error(what + " at column " + std::to_string(column)), column(column) {}
  size_t column;  // 1-based, in bytes
};

// One value. Kept small, since a request of numbers holds one per two bytes of text: containers share
// `items`, a number is kept as its literal (short ones need no allocation) and converted on use, and
// only objects allocate their member names.
struct Value {
  enum class Type : uint8_t { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  bool integral = false;     // a number written without fraction or exponent
  std::string string;        // a string's text, or a number's literal as written
  std::vector<Value> items;  // array elements, or object member values (document order)
  std::unique_ptr<std::vector<std::string>> names;  // object member names, parallel to items

  double number() const;             // a number's value; +-inf beyond the double range
  bool integer(int64_t& out) const;  // an integral number within int64 (false otherwise)
  const std::vector<std::string>& keys() const;  // an object's member names (none for other values)

  bool is_object() const { return type == Type::Object; }
  bool is_array() const { return type == Type::Array; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_null() const { return type == Type::Null; }
  // The member named `key` (keys are unique: the parser refuses repeats), or nullptr.
  const Value* find(std::string_view key) const;
  // The literal as it was written, for error messages (numbers, strings, null, bools; containers abridged).
  std::string repr() const;
};

Value parse(std::string_view text);

void append_string(std::string& out, std::string_view s);  // quoted and escaped
void append_number(std::string& out, double v);             // shortest form that reads back as the same float

}  // namespace ranker::json
