#include "request.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace ranker {
namespace {

[[noreturn]] void fail(const std::string& what) { throw RequestError(what); }

std::string list_repr(const std::vector<std::string>& names) {  // as Python prints a list of str
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return out + "]";
}

// `where` below is a callable giving the field's path for a message: paths are built only for an
// error, not for each of the thousands of values a valid request holds.

// The values of `given` (name, value pairs) in the order of `expected`, each named exactly once:
// an unknown name (the first in sorted order) or a missing one is an error.
template <typename T, typename Where>
std::vector<const T*> in_order(const std::vector<std::pair<std::string_view, T>>& given,
                               const std::vector<std::string>& expected, const Where& where) {
  std::vector<const T*> out(expected.size(), nullptr);
  std::string_view unknown;
  for (const auto& [name, value] : given) {
    auto at = std::find(expected.begin(), expected.end(), name);
    if (at == expected.end()) {
      if (unknown.empty() || name < unknown) unknown = name;
    } else {
      out[at - expected.begin()] = &value;  // names are unique: the front ends refuse repeats
    }
  }
  if (!unknown.empty())
    fail(where() + ": unexpected field '" + std::string(unknown) + "' (expected here: " + list_repr(expected) + ")");
  for (size_t i = 0; i < expected.size(); ++i)
    if (out[i] == nullptr) fail(where() + ": missing field '" + expected[i] + "'");
  return out;
}

template <typename Where>
void check_id(int64_t id, int64_t rows, const Where& where) {
  if (id < 0 || id >= rows)
    fail(where() + "=" + std::to_string(id) + " out of range [0, " + std::to_string(rows) + ")");
}

// One GSU's sequence appended to `out`: its length, then its elements' fields interleaved.
template <typename Where>
void add_sequence(const SequenceInput& sequence, const ModelMeta& meta, const Where& where, Sequences& out) {
  const auto fields = in_order(sequence.fields, meta.sequence_fields, where);
  const size_t n_fields = meta.sequence_fields.size();
  const size_t n = fields[0]->size();
  for (size_t f = 0; f < n_fields; ++f) {
    const std::string& name = meta.sequence_fields[f];
    if (f == 0 && static_cast<int64_t>(n) > meta.seq_len)
      fail(where() + "." + name + " has " + std::to_string(n) + " elements, more than the model's " +
           std::to_string(meta.seq_len));
    if (fields[f]->size() != n)
      fail(where() + "." + name + " has " + std::to_string(fields[f]->size()) + " elements, " +
           meta.sequence_fields[0] + " has " + std::to_string(n));
    for (size_t i = 0; i < n; ++i)
      check_id((*fields[f])[i], meta.sequence_rows[f],
               [&] { return where() + "." + name + "[" + std::to_string(i) + "]"; });
  }
  const size_t start = out.values.size();
  out.values.resize(start + n * n_fields);
  for (size_t f = 0; f < n_fields; ++f)
    for (size_t i = 0; i < n; ++i) out.values[start + i * n_fields + f] = (*fields[f])[i];
  out.lengths.push_back(static_cast<int64_t>(n));
}

// One part's checked values appended to the side's arrays.
void add_part(const PartInput& part, const PartFields& own, const ModelMeta& meta, const std::string& where,
              std::vector<int64_t>& ids, std::vector<float>& dense, Sequences& sequences) {
  const auto id_values = in_order(part.ids, own.ids, [&] { return where + ".ids"; });
  const auto dense_values = in_order(part.dense, own.dense, [&] { return where + ".dense"; });
  const auto gsus = in_order(part.sequences, own.sequences, [&] { return where + ".sequences"; });
  for (size_t j = 0; j < own.ids.size(); ++j) {
    check_id(*id_values[j], own.id_rows[j], [&] { return where + ".ids." + own.ids[j]; });
    ids.push_back(*id_values[j]);
  }
  for (size_t j = 0; j < own.dense.size(); ++j) {
    // The model reads float32: a double beyond its range would become inf there.
    const double value = *dense_values[j];
    if (!std::isfinite(value) || std::fabs(value) > std::numeric_limits<float>::max())
      fail(where + ".dense." + own.dense[j] + " must be a finite float32 number, got " + number_text(value));
    dense.push_back(static_cast<float>(value));
  }
  for (size_t g = 0; g < own.sequences.size(); ++g)
    add_sequence(*gsus[g], meta, [&] { return where + ".sequences." + own.sequences[g]; }, sequences);
}

}  // namespace

std::string number_text(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  std::string text(buf, end);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

ValidRequest validate(const RequestInput& request, const ModelMeta& meta) {
  ValidRequest out;
  out.request_id = request.request_id;
  if (!request.user) fail("missing field 'user'");
  add_part(*request.user, meta.user_fields, meta, "user", out.user_ids, out.user_dense, out.user_sequences);
  const int64_t n = static_cast<int64_t>(request.candidates.size());
  if (n == 0) fail("candidates is empty");
  if (n > meta.max_candidates)
    fail(std::to_string(n) + " candidates, more than the limit of " + std::to_string(meta.max_candidates));
  out.candidates = n;
  const PartFields& own = meta.candidate_fields;
  out.ids.reserve(n * own.ids.size());
  out.dense.reserve(n * own.dense.size());
  out.sequences.lengths.reserve(n * own.sequences.size());
  for (int64_t i = 0; i < n; ++i)
    add_part(request.candidates[i], own, meta, "candidates[" + std::to_string(i) + "]", out.ids, out.dense,
             out.sequences);
  return out;
}

ValidRequest synthetic_request(const ModelMeta& meta, int64_t n) {
  auto sequences = [&](size_t count) {
    Sequences s;
    const int64_t length = meta.seq_len > 0 ? 1 : 0;
    s.lengths.assign(count, length);
    s.values.assign(count * length * meta.sequence_fields.size(), 0);
    return s;
  };
  ValidRequest r;
  r.candidates = n;
  r.user_ids.assign(meta.user_fields.ids.size(), 0);
  r.user_dense.assign(meta.user_fields.dense.size(), 0.0f);
  r.user_sequences = sequences(meta.user_fields.sequences.size());
  r.ids.assign(n * meta.candidate_fields.ids.size(), 0);
  r.dense.assign(n * meta.candidate_fields.dense.size(), 0.0f);
  r.sequences = sequences(n * meta.candidate_fields.sequences.size());
  return r;
}

}  // namespace ranker
