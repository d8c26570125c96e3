#include "features/layout.hpp"

#include <algorithm>
#include <cmath>

namespace ranker::features {
namespace {

[[noreturn]] void fail(const std::string& what) { throw LayoutError("the feature catalog does not fit the model: " + what); }

// A feature by name: from the request's user part, or from candidate k's.
bool user_id_feature(const UserFeatures& u, const std::string& name, int64_t& out) {
  if (name == "user_id") out = u.user_id;
  else if (name == "hour") out = u.hour;
  else if (name == "user_history_bucket") out = u.user_history_bucket;
  else if (name == "user_live_bucket") out = u.user_live_bucket;
  else return false;
  return true;
}

bool candidate_id_feature(const CandidateFeatures& c, const std::string& name, int64_t& out) {
  if (name == "live_item") out = c.live_item;
  else if (name == "author_id") out = c.author_id;
  else if (name == "category") out = c.category;
  else if (name == "live_type") out = c.live_type;
  else return false;
  return true;
}

bool user_dense_feature(const UserFeatures& u, const std::string& name, double& out) {
  if (name == "user_history_len") out = u.user_history_len;
  else if (name == "user_live_history_len") out = u.user_live_history_len;
  else return false;
  return true;
}

bool candidate_dense_feature(const CandidateFeatures& c, const std::string& name, double& out) {
  for (int r = 0; r < kRoomCount; ++r)
    if (name == kRoomNames[r]) {
      out = c.room[r];
      return true;
    }
  return false;
}

const Sequence* user_sequence(const UserFeatures& u, const std::string& name) {
  return name == "short" ? &u.short_seq : name == "mixed" ? &u.mixed_seq : nullptr;
}

const Sequence* candidate_sequence(const CandidateFeatures& c, const std::string& name) {
  return name == "long" ? &c.long_seq : name == "aidhard" ? &c.aidhard_seq : name == "livelong" ? &c.livelong_seq : nullptr;
}

int64_t field_of(const Element& e, const std::string& field) {
  if (field == "item") return e.item;
  if (field == "author") return e.author;
  if (field == "gap") return e.gap;
  if (field == "watch") return e.watch;
  if (field == "domain") return e.domain;
  fail("sequence field '" + field + "' is not one the stage computes");
}

void add_sequence(const Sequence& seq, const ModelMeta& meta, const std::string& where, Sequences& out) {
  const size_t n = std::min(seq.size(), static_cast<size_t>(meta.seq_len));  // the model's L may be shorter
  const size_t fields = meta.sequence_fields.size();
  const size_t start = out.values.size();
  out.values.resize(start + n * fields);
  for (size_t f = 0; f < fields; ++f)
    for (size_t i = 0; i < n; ++i) {
      const int64_t v = field_of(seq[i], meta.sequence_fields[f]);
      if (v < 0 || v >= meta.sequence_rows[f])
        fail(where + "." + meta.sequence_fields[f] + " row " + std::to_string(v) + " beyond the model's " +
             std::to_string(meta.sequence_rows[f]));
      out.values[start + i * fields + f] = v;
    }
  out.lengths.push_back(static_cast<int64_t>(n));
}

float finite(double v, const std::string& name) {
  if (!std::isfinite(v)) fail(name + " is " + std::to_string(v) + ", not a finite number");
  return static_cast<float>(v);
}

void check_row(int64_t v, int64_t rows, const std::string& name) {
  if (v < 0 || v >= rows) fail(name + " row " + std::to_string(v) + " beyond the model's " + std::to_string(rows) + " rows");
}

}  // namespace

ValidRequest lay_out(const Assembled& a, const ModelMeta& meta, const std::optional<std::string>& request_id) {
  ValidRequest out;
  out.request_id = request_id;
  const int64_t n = static_cast<int64_t>(a.candidates.size());
  out.candidates = n;
  const PartFields& user = meta.user_fields;
  for (size_t j = 0; j < user.ids.size(); ++j) {
    int64_t v = 0;
    if (!user_id_feature(a.user, user.ids[j], v))
      fail("model.json puts '" + user.ids[j] + "' on the user's side; the stage computes it per candidate, or not at all");
    check_row(v, user.id_rows[j], user.ids[j]);
    out.user_ids.push_back(v);
  }
  for (const auto& name : user.dense) {
    double v = 0;
    if (!user_dense_feature(a.user, name, v)) fail("model.json puts '" + name + "' on the user's side");
    out.user_dense.push_back(finite(v, name));
  }
  for (const auto& name : user.sequences) {
    const Sequence* seq = user_sequence(a.user, name);
    if (seq == nullptr) fail("model.json puts the GSU '" + name + "' on the user's side");
    add_sequence(*seq, meta, name, out.user_sequences);
  }
  const PartFields& own = meta.candidate_fields;
  out.ids.reserve(n * own.ids.size());
  out.dense.reserve(n * own.dense.size());
  for (const CandidateFeatures& c : a.candidates) {
    for (size_t j = 0; j < own.ids.size(); ++j) {  // a per-request feature may be repeated per candidate
      int64_t v = 0;
      if (!candidate_id_feature(c, own.ids[j], v) && !user_id_feature(a.user, own.ids[j], v))
        fail("'" + own.ids[j] + "' is not a feature the stage computes");
      check_row(v, own.id_rows[j], own.ids[j]);
      out.ids.push_back(v);
    }
    for (const auto& name : own.dense) {
      double v = 0;
      if (!candidate_dense_feature(c, name, v) && !user_dense_feature(a.user, name, v))
        fail("'" + name + "' is not a feature the stage computes");
      out.dense.push_back(finite(v, name));
    }
    for (const auto& name : own.sequences) {
      const Sequence* seq = candidate_sequence(c, name);
      if (seq == nullptr) seq = user_sequence(a.user, name);
      if (seq == nullptr) fail("the GSU '" + name + "' is not one the stage computes");
      add_sequence(*seq, meta, name, out.sequences);
    }
  }
  return out;
}

}  // namespace ranker::features
