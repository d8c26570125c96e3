#include "json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_set>

namespace ranker::json {
namespace {

constexpr int kMaxDepth = 64;  // requests nest 5 deep; anything far deeper is hostile or broken

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value document() {
    skip_space();
    Value v = value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const { throw ParseError(what, pos_ + 1); }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void expect_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail("invalid literal");
    pos_ += word.size();
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 64 levels");
    if (pos_ >= text_.size()) fail("unexpected end of input");
    Value v;
    switch (text_[pos_]) {
      case '{': object(v, depth); break;
      case '[': array(v, depth); break;
      case '"': v.type = Value::Type::String; v.string = string(); break;
      case 't': expect_word("true"); v.type = Value::Type::Bool; v.boolean = true; break;
      case 'f': expect_word("false"); v.type = Value::Type::Bool; break;
      case 'n': expect_word("null"); break;
      default: number(v);
    }
    return v;
  }

  void object(Value& v, int depth) {
    v.type = Value::Type::Object;
    v.names = std::make_unique<std::vector<std::string>>();
    std::vector<std::string>& keys = *v.names;
    ++pos_;
    skip_space();
    if (peek() == '}') { ++pos_; return; }
    std::unordered_set<std::string> seen;  // used once an object is large enough for a scan to cost
    constexpr size_t kScan = 16;
    while (true) {
      skip_space();
      if (peek() != '"') fail("expected a string key");
      size_t key_pos = pos_;
      std::string key = string();
      bool repeated = keys.size() < kScan ? std::find(keys.begin(), keys.end(), key) != keys.end()
                                          : seen.count(key) > 0;
      if (repeated) {
        pos_ = key_pos;
        fail("duplicate key '" + key + "'");
      }
      if (keys.size() + 1 == kScan) seen.insert(keys.begin(), keys.end());
      if (keys.size() + 1 >= kScan) seen.insert(key);
      skip_space();
      if (peek() != ':') fail("expected ':'");
      ++pos_;
      skip_space();
      v.items.push_back(value(depth + 1));
      keys.push_back(std::move(key));
      skip_space();
      if (peek() == ',') { ++pos_; continue; }
      if (peek() == '}') { ++pos_; return; }
      fail("expected ',' or '}'");
    }
  }

  void array(Value& v, int depth) {
    v.type = Value::Type::Array;
    ++pos_;
    skip_space();
    if (peek() == ']') { ++pos_; return; }
    while (true) {
      skip_space();
      v.items.push_back(value(depth + 1));
      skip_space();
      if (peek() == ',') { ++pos_; continue; }
      if (peek() == ']') { ++pos_; return; }
      fail("expected ',' or ']'");
    }
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (pos_ + 4 > text_.size()) fail("truncated \\u escape");
    uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      cp <<= 4;
      if (c >= '0' && c <= '9') cp |= c - '0';
      else if (c >= 'a' && c <= 'f') cp |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') cp |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return cp;
  }

  // One UTF-8 encoded character starting at pos_ (its lead byte >= 0x80), appended as it is.
  void utf8_character(std::string& out) {
    const auto byte = [&](size_t i) { return static_cast<unsigned char>(text_[i]); };
    unsigned char lead = byte(pos_);
    size_t n = lead >= 0xF0 && lead <= 0xF4 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 && lead <= 0xDF ? 2 : 0;
    if (n == 0 || (n == 3 && lead > 0xEF) || pos_ + n > text_.size()) fail("invalid UTF-8 in string");
    uint32_t cp = lead & (0x7F >> n);
    for (size_t i = 1; i < n; ++i) {
      if ((byte(pos_ + i) & 0xC0) != 0x80) fail("invalid UTF-8 in string");
      cp = (cp << 6) | (byte(pos_ + i) & 0x3F);
    }
    bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
    if (overlong || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) fail("invalid UTF-8 in string");
    out.append(text_.substr(pos_, n));
    pos_ += n;
  }

  std::string string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      char c = text_[pos_];
      if (static_cast<unsigned char>(c) >= 0x80) { utf8_character(out); continue; }
      ++pos_;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (pos_ >= text_.size()) fail("unterminated string");
      char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          size_t escape_pos = pos_ - 2;
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && text_.substr(pos_, 2) == "\\u") {
            pos_ += 2;
            uint32_t low = hex4();
            if (low < 0xDC00 || low >= 0xE000) {
              pos_ = escape_pos;
              fail("lone surrogate in \\u escape");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xD800 && cp < 0xE000) {  // text must stay valid UTF-8 when written back
            pos_ = escape_pos;
            fail("lone surrogate in \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape in string");
      }
    }
  }

  void number(Value& v) {
    size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("expected a value");
    }
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected digits after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected digits in exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    v.type = Value::Type::Number;
    v.integral = integral;
    v.string.assign(text_.substr(start, pos_ - start));
  }
};

}  // namespace

double Value::number() const { return std::strtod(string.c_str(), nullptr); }

bool Value::integer(int64_t& out) const {
  if (type != Type::Number || !integral) return false;
  auto [end, ec] = std::from_chars(string.data(), string.data() + string.size(), out);
  return ec == std::errc() && end == string.data() + string.size();
}

const std::vector<std::string>& Value::keys() const {
  static const std::vector<std::string> kNone;
  return names ? *names : kNone;
}

const Value* Value::find(std::string_view key) const {
  const auto& names = keys();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == key) return &items[i];
  return nullptr;
}

std::string Value::repr() const {
  std::string out;
  switch (type) {
    case Type::Null: return "null";
    case Type::Bool: return boolean ? "true" : "false";
    case Type::Number: return string;  // as written: 2.0 stays 2.0, 1e400 stays 1e400
    case Type::String: append_string(out, string); return out;
    case Type::Array: return "[...]";
    case Type::Object: return "{...}";
  }
  return out;
}

Value parse(std::string_view text) { return Parser(text).document(); }

void append_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void append_number(std::string& out, double v) {
  if (!std::isfinite(v)) {  // JSON has no NaN/inf; a model gone wrong must still give valid lines
    out += "null";
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

}  // namespace ranker::json
