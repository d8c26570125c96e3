// Scoring a validated request with the loaded model and writing the response line.
#pragma once

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "model_store.hpp"
#include "request.hpp"

namespace ranker {

struct Scores {
  at::Tensor probabilities;  // [N, T]
  at::Tensor score;          // [N]
};

// The model gave something that cannot be ranked (shapes that do not fit model.json, a score or
// probability that is not finite); the request is answered with an error, never a ranking.
struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The model's answer for a validated request, shapes checked against model.json (throws ModelError).
Scores forward(const LoadedModel& model, const Request& request);
// forward(), and every score and probability finite (throws ModelError naming the first candidate).
Scores score(const LoadedModel& model, const Request& request);

// Candidate indices by descending score, ties in request order.
std::vector<int64_t> ranked_order(const float* score, int64_t n);

// Runs a valid stand-in request of 1 and of up to 200 candidates through the model (throws ModelError
// or c10::Error if it cannot answer with the shapes model.json promises). Run on a newly loaded model
// before it serves, so that its first real request neither pays the one-off set-up of the first
// forward nor finds a model that cannot answer.
void warm_up(const LoadedModel& model);

// {"request_id": ..., "model_generation": g, "ranked": [{"candidate": i, "score": s, "probabilities": {...}}]}
// candidates by descending score, ties in request order.
std::string ranked_line(const Request& request, const Scores& scores, const LoadedModel& model);

// Why a request got no ranking, in the words every front end (JSON tool, gRPC) answers with.
struct Failure {
  enum class Kind { InvalidRequest, Model, Internal };
  Kind kind;
  std::string message;  // "candidates[3].ids.live_item=... out of range ...", "model error: ...", "internal error: ..."
};
Failure describe_failure(std::exception_ptr error);

// {"request_id": ... or null, "error": "..."}
std::string error_line(const std::optional<std::string>& request_id, std::string_view message);

// The whole path for one input line: parse, validate, score, rank. Never throws.
std::string handle_line(std::string_view line, const LoadedModel& model);

}  // namespace ranker
