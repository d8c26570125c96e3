// One request line -> validated input tensors. The rules and messages follow export/requests.py,
// the Python reference the tests hold this against; nothing touches a tensor before a request
// has passed every check.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "json.hpp"
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
// The same rules on a request already read into a JSON value (the gRPC server builds one from the proto).
Request parse_request(const json::Value& doc, const ModelMeta& meta, std::optional<std::string>& request_id);

// A request every model of `meta` accepts: n candidates, ids 0, dense 0, one element per sequence.
Request synthetic_request(const ModelMeta& meta, int64_t n);

// Requests laid end to end, candidates in order: the input of one batched forward.
Request concatenate(const std::vector<const Request*>& requests);

}  // namespace ranker
