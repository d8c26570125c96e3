// The features the stage assembled as one JSON object, by contract name, shaped as a full-feature
// request's user part and candidates (docs/serving.md): what ranker_features answers a query with and
// what the served-features log holds for each answered ids-only request.
#pragma once

#include <string>
#include <string_view>

#include "features/state.hpp"

namespace ranker::features {

// {"request_id", "known_user", "history_events", "user": {"ids", "dense", "sequences"},
//  "candidates": [{"ids", "dense", "sequences"}, ...]}; doubles in 17 significant digits.
std::string features_json(std::string_view request_id, const Assembled& features);

// A JSON string literal of `s`.
std::string json_string(std::string_view s);

}  // namespace ranker::features
