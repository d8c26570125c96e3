#include "request.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "json.hpp"

namespace ranker {
namespace {

using json::Value;

[[noreturn]] void fail(const std::string& what) { throw RequestError(what); }

std::string list_repr(const std::vector<std::string>& names) {  // as Python prints a list of str
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return out + "]";
}

// `where` below is a callable giving the field's name for a message: names are built only for an
// error, not for each of the thousands of values a valid request holds.

// Checks that `value` is an object with exactly the fields `expected`.
template <typename Where>
void check_fields(const Value& value, const Where& where, const std::vector<std::string>& expected) {
  if (!value.is_object()) fail(where() + " must be an object");
  std::set<std::string> unknown;
  for (const auto& key : value.keys())
    if (std::find(expected.begin(), expected.end(), key) == expected.end()) unknown.insert(key);
  if (!unknown.empty())
    fail(where() + ": unexpected field '" + *unknown.begin() + "' (expected here: " + list_repr(expected) + ")");
  for (const auto& name : expected)
    if (value.find(name) == nullptr) fail(where() + ": missing field '" + name + "'");
}

template <typename Where>
int64_t check_id(const Value& v, int64_t rows, const Where& where) {
  if (!v.is_number() || !v.integral) fail(where() + " must be an integer, got " + v.repr());
  int64_t id = 0;
  if (!v.integer(id) || id < 0 || id >= rows)
    fail(where() + "=" + v.repr() + " out of range [0, " + std::to_string(rows) + ")");
  return id;
}

struct Sequence {
  int64_t length = 0;
  std::vector<std::vector<int64_t>> fields;  // meta.sequence_fields order
};

// What one side of a request (the user, or one candidate) holds; entries it does not own stay empty.
struct Part {
  std::vector<int64_t> ids;
  std::vector<float> dense;
  std::vector<Sequence> sequences;
};

template <typename Where>
Sequence read_sequence(const Value& value, const ModelMeta& meta, const Where& where) {
  check_fields(value, where, meta.sequence_fields);
  Sequence seq;
  seq.fields.resize(meta.sequence_fields.size());
  for (size_t f = 0; f < meta.sequence_fields.size(); ++f) {
    const std::string& name = meta.sequence_fields[f];
    const Value& items = *value.find(name);
    if (!items.is_array()) fail(where() + "." + name + " must be an array");
    int64_t n = static_cast<int64_t>(items.items.size());
    if (f == 0) {
      seq.length = n;
      if (n > meta.seq_len)
        fail(where() + "." + name + " has " + std::to_string(n) + " elements, more than the model's " +
             std::to_string(meta.seq_len));
    } else if (n != seq.length) {
      fail(where() + "." + name + " has " + std::to_string(n) + " elements, " + meta.sequence_fields[0] + " has " +
           std::to_string(seq.length));
    }
    seq.fields[f].reserve(n);
    for (int64_t i = 0; i < n; ++i)
      seq.fields[f].push_back(
          check_id(items.items[i], meta.sequence_rows[f],
                   [&] { return where() + "." + name + "[" + std::to_string(i) + "]"; }));
  }
  return seq;
}

Part read_part(const Value& obj, bool user, const std::string& where, const ModelMeta& meta) {
  if (!obj.is_object()) fail(where + " must be an object");
  std::set<std::string> unknown;
  for (const auto& key : obj.keys())
    if (key != "ids" && key != "dense" && key != "sequences") unknown.insert(key);
  if (!unknown.empty()) fail(where + ": unexpected field '" + *unknown.begin() + "'");

  const PartFields& own = user ? meta.user_fields : meta.candidate_fields;
  static const Value kEmpty = [] { Value v; v.type = Value::Type::Object; return v; }();  // no members
  auto section = [&](const char* name) -> const Value& {
    const Value* v = obj.find(name);
    return v != nullptr ? *v : kEmpty;
  };
  const Value& ids = section("ids");
  const Value& dense = section("dense");
  const Value& sequences = section("sequences");
  check_fields(ids, [&] { return where + ".ids"; }, own.ids);
  check_fields(dense, [&] { return where + ".dense"; }, own.dense);
  check_fields(sequences, [&] { return where + ".sequences"; }, own.sequences);

  Part part;
  part.ids.assign(meta.id_features.size(), 0);
  for (size_t j = 0; j < meta.id_features.size(); ++j) {
    const auto& f = meta.id_features[j];
    if (f.from_user == user)
      part.ids[j] = check_id(*ids.find(f.name), f.rows, [&] { return where + ".ids." + f.name; });
  }
  part.dense.assign(meta.dense_features.size(), 0.0f);
  for (size_t j = 0; j < meta.dense_features.size(); ++j) {
    const auto& f = meta.dense_features[j];
    if (f.from_user != user) continue;
    const Value& v = *dense.find(f.name);
    // The model reads float32: a double beyond its range would become inf there.
    float value = v.is_number() ? static_cast<float>(v.number()) : 0.0f;
    if (!v.is_number() || !std::isfinite(value))
      fail(where + ".dense." + f.name + " must be a finite float32 number, got " + v.repr());
    part.dense[j] = value;
  }
  part.sequences.resize(meta.gsus.size());
  for (size_t g = 0; g < meta.gsus.size(); ++g) {
    const auto& gsu = meta.gsus[g];
    if (gsu.from_user == user)
      part.sequences[g] =
          read_sequence(*sequences.find(gsu.name), meta, [&] { return where + ".sequences." + gsu.name; });
  }
  return part;
}

// The checked parts as the scorer's input tensors; the user's entries are repeated for every candidate.
Request layout(const ModelMeta& meta, const Part& user, const std::vector<Part>& parts,
               const std::optional<std::string>& request_id) {
  const int64_t n = static_cast<int64_t>(parts.size());
  const int64_t F = meta.id_features.size(), D = meta.dense_features.size(), G = meta.gsus.size();
  const int64_t L = meta.seq_len, P = meta.n_id_fields;
  const int64_t S = static_cast<int64_t>(meta.sequence_fields.size()) - P;
  Request req;
  req.request_id = request_id;
  req.candidates = n;
  auto i64 = at::TensorOptions().dtype(at::kLong);
  req.ids = at::empty({n, F}, i64);
  req.dense = at::empty({n, D}, at::TensorOptions().dtype(at::kFloat));
  req.seq_ids = at::zeros({n, G, L, P}, i64);
  req.seq_side = at::zeros({n, G, L, S}, i64);
  req.seq_lengths = at::empty({n, G}, i64);
  int64_t* ids = req.ids.data_ptr<int64_t>();
  float* dense = req.dense.data_ptr<float>();
  int64_t* seq_ids = req.seq_ids.data_ptr<int64_t>();
  int64_t* seq_side = req.seq_side.data_ptr<int64_t>();
  int64_t* lengths = req.seq_lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const Part& cand = parts[i];
    for (int64_t j = 0; j < F; ++j) ids[i * F + j] = (meta.id_features[j].from_user ? user : cand).ids[j];
    for (int64_t j = 0; j < D; ++j) dense[i * D + j] = (meta.dense_features[j].from_user ? user : cand).dense[j];
    for (int64_t g = 0; g < G; ++g) {
      const Sequence& seq = (meta.gsus[g].from_user ? user : cand).sequences[g];
      lengths[i * G + g] = seq.length;
      for (int64_t p = 0; p < seq.length; ++p) {
        int64_t* id_slot = seq_ids + ((i * G + g) * L + p) * P;
        for (int64_t f = 0; f < P; ++f) id_slot[f] = seq.fields[f][p];
        int64_t* side_slot = seq_side + ((i * G + g) * L + p) * S;
        for (int64_t s = 0; s < S; ++s) side_slot[s] = seq.fields[P + s][p];
      }
    }
  }
  return req;
}

}  // namespace

Request parse_request(std::string_view line, const ModelMeta& meta, std::optional<std::string>& request_id) {
  Value doc;
  try {
    doc = json::parse(line);
  } catch (const json::ParseError& e) {
    fail(std::string("bad JSON: ") + e.what());
  }
  return parse_request(doc, meta, request_id);
}

Request parse_request(const Value& doc, const ModelMeta& meta, std::optional<std::string>& request_id) {
  if (!doc.is_object()) fail("a request must be a JSON object");
  if (const Value* id = doc.find("request_id"); id != nullptr && !id->is_null()) {
    if (!id->is_string()) fail("request_id must be a string");
    request_id = id->string;
  }
  std::set<std::string> unknown;
  for (const auto& key : doc.keys())
    if (key != "request_id" && key != "user" && key != "candidates") unknown.insert(key);
  if (!unknown.empty()) fail("unexpected field '" + *unknown.begin() + "'");
  const Value* user_value = doc.find("user");
  if (user_value == nullptr) fail("missing field 'user'");
  Part user = read_part(*user_value, true, "user", meta);
  const Value* candidates = doc.find("candidates");
  if (candidates == nullptr || !candidates->is_array()) fail("missing or non-array field 'candidates'");
  if (candidates->items.empty()) fail("candidates is empty");
  const int64_t n = static_cast<int64_t>(candidates->items.size());
  if (n > meta.max_candidates)
    fail(std::to_string(n) + " candidates, more than the limit of " + std::to_string(meta.max_candidates));
  std::vector<Part> parts;
  parts.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    parts.push_back(read_part(candidates->items[i], false, "candidates[" + std::to_string(i) + "]", meta));

  // Every check has passed: only now are tensors made.
  return layout(meta, user, parts, request_id);
}

Request synthetic_request(const ModelMeta& meta, int64_t n) {
  Part part;
  part.ids.assign(meta.id_features.size(), 0);
  part.dense.assign(meta.dense_features.size(), 0.0f);
  Sequence one;
  one.length = meta.seq_len > 0 ? 1 : 0;
  one.fields.assign(meta.sequence_fields.size(), std::vector<int64_t>(one.length, 0));
  part.sequences.assign(meta.gsus.size(), one);
  return layout(meta, part, std::vector<Part>(n, part), std::nullopt);
}

Request concatenate(const std::vector<const Request*>& requests) {
  if (requests.size() == 1) return *requests[0];
  std::vector<at::Tensor> ids, dense, seq_ids, seq_side, lengths;
  Request out;
  for (const Request* r : requests) {
    ids.push_back(r->ids);
    dense.push_back(r->dense);
    seq_ids.push_back(r->seq_ids);
    seq_side.push_back(r->seq_side);
    lengths.push_back(r->seq_lengths);
    out.candidates += r->candidates;
  }
  out.ids = at::cat(ids);
  out.dense = at::cat(dense);
  out.seq_ids = at::cat(seq_ids);
  out.seq_side = at::cat(seq_side);
  out.seq_lengths = at::cat(lengths);
  return out;
}

}  // namespace ranker
