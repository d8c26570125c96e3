// A small JSON reader and writer: enough for the ranker's requests and model.json, strict (RFC 8259,
// no NaN or comments), bounded nesting, and errors that say where the text went wrong.
#pragma once

#include <cstdint>
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

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  bool integral = false;        // written without fraction or exponent
  bool integer_fits = false;    // ... and within int64
  int64_t integer = 0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // in document order

  bool is_object() const { return type == Type::Object; }
  bool is_array() const { return type == Type::Array; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_null() const { return type == Type::Null; }
  // The member named `key` (the last one if repeated, as Python's json does), or nullptr.
  const Value* find(std::string_view key) const;
  // The literal as it was written, for error messages (numbers, strings, null, bools; containers abridged).
  std::string repr() const;
};

Value parse(std::string_view text);

void append_string(std::string& out, std::string_view s);  // quoted and escaped
void append_number(std::string& out, double v);             // shortest form that reads back as the same float

}  // namespace ranker::json
