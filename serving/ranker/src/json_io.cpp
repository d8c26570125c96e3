#include "json_io.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace ranker::json {
namespace {

using namespace simdjson;

[[noreturn]] void fail(const std::string& what) { throw RequestError(what); }
[[noreturn]] void bad_json(const std::string& what) { throw RequestError("bad JSON: " + what); }

void check(error_code error) {
  if (error) bad_json(error_message(error));
}

// 1-based column of the first byte that is not UTF-8 (simdjson says only that the text is not).
size_t first_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > text.size() || !validate_utf8(text.data() + i, n)) return i + 1;
    i += n;
  }
  return text.size() + 1;
}

// A value as the request wrote it, for messages: scalars as written, containers abridged.
std::string repr(ondemand::value& value) {
  ondemand::json_type type;
  if (!value.type().get(type)) {
    if (type == ondemand::json_type::object) return "{...}";
    if (type == ondemand::json_type::array) return "[...]";
  }
  std::string_view raw = value.raw_json_token();
  while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\t' || raw.back() == '\n' || raw.back() == '\r'))
    raw.remove_suffix(1);
  return std::string(raw);
}

// A number token that is valid JSON but beyond the double range reads as ERANGE; anything else
// simdjson refuses as a number is not JSON.
bool beyond_double(ondemand::value& value) {
  const std::string text = repr(value);
  errno = 0;
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return errno == ERANGE && end == text.c_str() + text.size();
}

// Keys of one object: a repeat is refused.
class Keys {
 public:
  std::string_view next(ondemand::field& field) {
    std::string_view key;
    if (field.unescaped_key().get(key)) bad_json("invalid key (a bad escape or a lone surrogate)");
    if (std::find(seen_.begin(), seen_.end(), key) != seen_.end()) bad_json("duplicate key '" + std::string(key) + "'");
    seen_.push_back(key);
    return key;
  }

 private:
  std::vector<std::string_view> seen_;
};

// One document's reading. A broken document ("bad JSON": syntax, a repeated key, a bad escape) is
// refused at once; a value of the wrong JSON type is noted and the reading goes on, so that a repeated
// key further on still wins, as it does for a parser that reads the whole text first.
class Reading {
 public:
  void note(std::string what) {
    if (!problem_) problem_ = std::move(what);
  }
  void finish() const {
    if (problem_) fail(*problem_);
  }

  template <typename Where>
  int64_t id(ondemand::value value, const Where& where) {
    int64_t id = 0;
    const error_code error = value.get_int64().get(id);
    if (!error) return id;
    ondemand::number_type type;
    if (error == NUMBER_ERROR) bad_json("invalid number " + repr(value) + " at " + where());
    if (value.get_number_type().get(type) || type == ondemand::number_type::floating_point_number)
      note(where() + " must be an integer, got " + repr(value));
    else
      note(where() + "=" + repr(value) + " out of range (beyond int64)");
    return 0;
  }

  template <typename Where>
  double dense(ondemand::value value, const Where& where) {
    double x = 0;
    const error_code error = value.get_double().get(x);
    if (!error) return x;
    if (error == NUMBER_ERROR && !beyond_double(value)) bad_json("invalid number " + repr(value) + " at " + where());
    note(where() + " must be a finite float32 number, got " + repr(value));
    return 0;
  }

  // fn(name, value) for each member of the object `value` (a repeated key is refused); a value
  // that is not an object is noted as "<where> must be an object".
  template <typename Fn>
  void members(ondemand::value value, const std::string& where, Fn&& fn) {
    ondemand::object object;
    if (value.get_object().get(object)) {
      note(where + " must be an object");
      return;
    }
    Keys keys;
    for (auto item : object) {
      ondemand::field field;
      check(std::move(item).get(field));
      const std::string_view name = keys.next(field);
      fn(name, field.value());
    }
  }

  SequenceInput sequence(ondemand::value value, const std::string& where) {
    SequenceInput sequence;
    members(value, where, [&](std::string_view name, ondemand::value field) {
      ondemand::array array;
      if (field.get_array().get(array)) {
        note(where + "." + std::string(name) + " must be an array");
        return;
      }
      std::vector<int64_t> values;
      size_t i = 0;
      for (auto element : array) {
        ondemand::value v;
        check(std::move(element).get(v));
        values.push_back(id(v, [&] { return where + "." + std::string(name) + "[" + std::to_string(i) + "]"; }));
        ++i;
      }
      sequence.fields.emplace_back(name, std::move(values));
    });
    return sequence;
  }

  PartInput part(ondemand::value value, const std::string& where) {
    PartInput part;
    std::string_view unknown;
    members(value, where, [&](std::string_view section, ondemand::value entries) {
      if (section != "ids" && section != "dense" && section != "sequences") {
        if (unknown.empty() || section < unknown) unknown = section;
        return;
      }
      const std::string at = where + "." + std::string(section);
      members(entries, at, [&](std::string_view name, ondemand::value entry) {
        auto path = [&] { return at + "." + std::string(name); };
        if (section == "ids") part.ids.emplace_back(name, id(entry, path));
        else if (section == "dense") part.dense.emplace_back(name, dense(entry, path));
        else part.sequences.emplace_back(name, sequence(entry, path()));
      });
    });
    if (!unknown.empty()) note(where + ": unexpected field '" + std::string(unknown) + "'");
    return part;
  }

  // {"user_id": int, "request_ts": int (optional), "live_ids": [int, ...]}: the ids-only form.
  IdsInput ids(ondemand::value value) {
    IdsInput ids;
    bool user = false, lives = false;
    members(value, "ids", [&](std::string_view name, ondemand::value field) {
      const std::string at = "ids." + std::string(name);
      if (name == "user_id") {
        ids.user_id = id(field, [&] { return at; });
        user = true;
      } else if (name == "request_ts") {
        if (!field.is_null()) ids.request_ts = id(field, [&] { return at; });
      } else if (name == "live_ids") {
        ondemand::array array;
        if (field.get_array().get(array)) {
          note(at + " must be an array");
          return;
        }
        lives = true;
        for (auto element : array) {
          ondemand::value v;
          check(std::move(element).get(v));
          ids.live_ids.push_back(id(v, [&] { return at + "[" + std::to_string(ids.live_ids.size()) + "]"; }));
        }
      } else {
        note("ids: unexpected field '" + std::string(name) + "' (expected here: ['user_id', 'request_ts', 'live_ids'])");
      }
    });
    if (!user) note("ids: missing field 'user_id'");
    if (!lives) note("ids: missing field 'live_ids'");
    return ids;
  }

 private:
  std::optional<std::string> problem_;
};

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

void append_number(std::string& out, float v) {
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;  // shortest text that reads back as this float
  out.append(buf, end);
}

void append_request_id(std::string& out, const std::optional<std::string>& request_id) {
  out += "{\"request_id\":";
  if (request_id) append_string(out, *request_id); else out += "null";
}

}  // namespace

RequestInput RequestReader::read(std::string& line) {
  line.reserve(line.size() + SIMDJSON_PADDING);
  ondemand::document doc;
  if (const error_code error = parser_.iterate(padded_string_view(line.data(), line.size(), line.capacity())).get(doc)) {
    if (error == UTF8_ERROR) bad_json("invalid UTF-8 at column " + std::to_string(first_invalid_utf8(line)));
    bad_json(error_message(error));
  }
  ondemand::json_type type;
  check(doc.type().get(type));
  if (type != ondemand::json_type::object) fail("a request must be a JSON object");
  ondemand::object top;
  check(doc.get_object().get(top));
  RequestInput request;
  Reading reading;
  Keys keys;
  std::string_view unknown;
  bool has_candidates = false;
  for (auto item : top) {
    ondemand::field field;
    check(std::move(item).get(field));
    const std::string_view key = keys.next(field);
    ondemand::value value = field.value();
    if (key == "request_id") {
      if (value.is_null()) continue;
      std::string_view id;
      const error_code error = value.get_string().get(id);
      if (error == STRING_ERROR) bad_json("invalid string (a bad escape or a lone surrogate) in request_id");
      if (error) reading.note("request_id must be a string");
      else request.request_id = std::string(id);
    } else if (key == "user") {
      request.user = reading.part(value, "user");
    } else if (key == "ids") {
      request.ids = reading.ids(value);
    } else if (key == "candidates") {
      ondemand::array candidates;
      if (value.get_array().get(candidates)) continue;  // as if absent: "missing or non-array"
      has_candidates = true;
      for (auto element : candidates) {
        ondemand::value candidate;
        check(std::move(element).get(candidate));
        request.candidates.push_back(
            reading.part(candidate, "candidates[" + std::to_string(request.candidates.size()) + "]"));
      }
    } else if (unknown.empty() || key < unknown) {
      unknown = key;
    }
  }
  const char* trailing = nullptr;
  if (!doc.current_location().get(trailing))
    bad_json("text after the request at column " + std::to_string(trailing - line.data() + 1));
  reading.finish();
  if (!unknown.empty()) fail("unexpected field '" + std::string(unknown) + "'");
  if (!has_candidates && !request.ids) fail("missing or non-array field 'candidates'");
  return request;
}

std::string ranking_line(const Ranking& ranking) {
  const auto& tasks = ranking.tasks;
  std::string out;
  out.reserve(64 + ranking.ranked.size() * (48 + 24 * tasks.size()));
  append_request_id(out, ranking.request_id);
  out += ",\"model_generation\":" + std::to_string(ranking.generation) +
         ",\"model_push\":" + std::to_string(ranking.push) + ",\"model_export\":\"" + ranking.export_id +
         "\",\"ranked\":[";
  for (size_t k = 0; k < ranking.ranked.size(); ++k) {
    const RankedCandidate& r = ranking.ranked[k];
    if (k) out += ',';
    out += "{\"candidate\":" + std::to_string(r.candidate) + ",\"score\":";
    append_number(out, r.score);
    out += ",\"probabilities\":{";
    for (size_t j = 0; j < tasks.size(); ++j) {
      if (j) out += ',';
      append_string(out, tasks[j]);
      out += ':';
      append_number(out, r.probabilities[j]);
    }
    out += "}}";
  }
  out += "]}";
  return out;
}

std::string error_line(const std::optional<std::string>& request_id, std::string_view message) {
  std::string out;
  append_request_id(out, request_id);
  out += ",\"error\":";
  append_string(out, message);
  out += '}';
  return out;
}

std::string event_error_line(std::string_view message, int64_t line) {
  std::string out = "{\"event_error\":";
  append_string(out, message);
  return out + ",\"line\":" + std::to_string(line) + "}";
}

}  // namespace ranker::json
