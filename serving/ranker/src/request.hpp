// A ranking request without torch: what every front end (the JSON-lines tool, the gRPC service) fills
// from its wire format, and the same request once validated against model.json and laid out by side.
// The rules and field paths follow export/requests.py, the Python reference the tests hold this
// against; nothing becomes a tensor before a request has passed every check (ranking.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meta.hpp"

namespace ranker {

// A request that cannot be scored; the message starts with the field's path ("candidates[3].ids.live_item")
// and says the rule it breaks.
struct RequestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- as a front end read it: names and values as sent, nothing checked against the model --------
// Names view the front end's source (its JSON buffer or proto message) and are valid while it lives;
// validate() is called before it goes.

struct SequenceInput {  // one GSU: each element field's values, by field name
  std::vector<std::pair<std::string_view, std::vector<int64_t>>> fields;
};

struct PartInput {  // the user, or one candidate
  std::vector<std::pair<std::string_view, int64_t>> ids;
  std::vector<std::pair<std::string_view, double>> dense;
  std::vector<std::pair<std::string_view, SequenceInput>> sequences;
};

// The ids-only form: the ranker's feature state computes every feature (features/state.hpp).
struct IdsInput {
  int64_t user_id = 0;
  std::optional<int64_t> request_ts;  // absent: the feature state's clock
  std::vector<int64_t> live_ids;
};

struct RequestInput {
  std::optional<std::string> request_id;
  std::optional<PartInput> user;  // absent: "missing field 'user'"
  std::vector<PartInput> candidates;
  std::optional<IdsInput> ids;  // present: the ids-only form (then neither user nor candidates)
};

// ---- validated: values in the model's orders, one side at a time ---------------------------------

// Sequences of several parts side by side, ragged: sequence k (part-major, then the side's GSUs in
// model.json order) has lengths[k] elements; element e of it holds values[(offset_k + e) * fields + f]
// for each field f in model.json order (id fields, then side fields).
struct Sequences {
  std::vector<int64_t> lengths;
  std::vector<int64_t> values;
};

struct ValidRequest {
  std::optional<std::string> request_id;
  int64_t candidates = 0;
  std::vector<int64_t> user_ids;   // [F_u] the user-owned id features, model.json order
  std::vector<float> user_dense;   // [D_u]
  Sequences user_sequences;        // G_u sequences
  std::vector<int64_t> ids;        // [N, F_c] the candidate-owned id features
  std::vector<float> dense;        // [N, D_c]
  Sequences sequences;             // N x G_c sequences
};

// Every rule of model.json (fields present where the layout puts them and nowhere else, ids and
// buckets in range, dense values finite as float32, sequences no longer than the model's and with
// fields of equal length, 1 to max_candidates candidates). Throws RequestError.
ValidRequest validate(const RequestInput& request, const ModelMeta& meta);

// A request every model of `meta` accepts: n candidates, ids 0, dense 0, one element per sequence.
ValidRequest synthetic_request(const ModelMeta& meta, int64_t n);

// A double as Python's repr writes it (shortest round trip, "2.0" not "2"), for messages.
std::string number_text(double value);

}  // namespace ranker
