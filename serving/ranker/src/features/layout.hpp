// The features the stage assembled (state.hpp, by contract name) laid out as the loaded model's
// request (request.hpp ValidRequest, by model.json's request_layout): what an ids-only request is
// scored with. A feature the model puts on the user's side must be one the stage computes per
// request; any value out of the model's table rows means the catalog does not fit the model.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "features/state.hpp"
#include "meta.hpp"
#include "request.hpp"

namespace ranker::features {

// The catalog and the model disagree (a feature the stage does not compute, a row beyond a table):
// a server fault, not the caller's.
struct LayoutError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

ValidRequest lay_out(const Assembled& features, const ModelMeta& meta, const std::optional<std::string>& request_id);

}  // namespace ranker::features
