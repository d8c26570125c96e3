// Scoring validated requests with the loaded model: the request scorer's input tensors, the forward,
// the checks on what it returns, and the words a failure is answered with.
#pragma once

#include <exception>
#include <stdexcept>
#include <vector>

#include <ATen/ATen.h>

#include "answer.hpp"
#include "model_store.hpp"
#include "request.hpp"

namespace ranker {

struct Scores {
  at::Tensor probabilities;  // [N, T]
  at::Tensor score;          // [N]
  double forward_seconds = 0;  // the forward that computed them (with any requests merged into it)
  int intra_op_threads = 0;    // the threads that forward could use
  int64_t version = 0;         // the pushes applied to the weights that computed them
};

// The model gave something that cannot be ranked (shapes that do not fit model.json, a score or
// probability that is not finite); the request is answered with an error, never a ranking.
struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The request scorer's eleven inputs (export/request_scorer.py) for requests scored together: one
// user row per request with its sequences padded to the batch's longest (at least one position:
// positions past every sequence's end change nothing), the candidates in request order, and their
// sequences' elements jagged, each with its (candidate row, GSU).
std::vector<at::Tensor> model_inputs(const std::vector<const ValidRequest*>& requests, const ModelMeta& meta);

// The model's answer for the requests' candidates, in order: shapes checked against model.json and
// every score and probability finite (throws ModelError naming the first candidate that is not).
Scores score(const LoadedModel& model, const std::vector<const ValidRequest*>& requests);

// Candidate indices by descending score, ties in request order.
std::vector<int64_t> ranked_order(const float* score, int64_t n);

// Runs a valid stand-in request of 1 and of up to 200 candidates through the model (throws ModelError
// or c10::Error if it cannot answer with the shapes model.json promises). Run on a newly loaded model
// before it serves, so that its first real request neither pays the one-off set-up of the first
// forward nor finds a model that cannot answer.
void warm_up(const LoadedModel& model);

// The failure a thrown exception means, worded as every front end answers it.
RankFailure failure_of(std::exception_ptr error);

}  // namespace ranker
