// One request line -> validated input tensors. The rules and messages follow export/requests.py,
// the Python reference the tests hold this against; nothing touches a tensor before a request
// has passed every check.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <ATen/ATen.h>

#include "meta.hpp"

namespace ranker {

struct RequestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Request {
  std::optional<std::string> request_id;
  int64_t candidates = 0;
  at::Tensor ids;          // [N, F] int64
  at::Tensor dense;        // [N, D] float32
  at::Tensor seq_ids;      // [N, G, L, P] int64, P = meta.n_id_fields
  at::Tensor seq_side;     // [N, G, L, S] int64
  at::Tensor seq_lengths;  // [N, G] int64
};

// Throws RequestError. `request_id` is filled as soon as it is known, so that an error line can name it.
Request parse_request(std::string_view line, const ModelMeta& meta, std::optional<std::string>& request_id);

}  // namespace ranker
