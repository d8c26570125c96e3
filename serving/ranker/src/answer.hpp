// What a Rank call is answered with: a Ranking, or the RankFailure that says why there is none. Both
// front ends and the scoring code speak these; the header includes nothing of torch (the gRPC code
// includes it) and nothing of the engine (scoring includes it).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ranker {

struct RankedCandidate {
  int64_t candidate = 0;  // index in the request
  float score = 0;
  std::vector<float> probabilities;  // in Ranking::tasks order
};

struct Ranking {
  std::optional<std::string> request_id;
  int64_t generation = 0;  // the export serving: 1 for the first, +1 per reload
  int64_t push = 0;        // the pushes applied to that export when the request was scored
  std::string export_id;   // model.json's export_id: with push, the version that answered across restarts
  std::vector<std::string> tasks;
  std::vector<RankedCandidate> ranked;  // by descending score, ties in request order
  double forward_seconds = 0;           // the forward of the batch that scored it
  int intra_op_threads = 0;             // the threads that forward could use
};

// Why a request got no ranking, in the words every front end answers with: "candidates[3].ids.live_item=...
// out of range ...", "bad JSON: ...", "model error: ...", "internal error: ...".
struct RankFailure : std::runtime_error {
  enum class Kind { InvalidRequest, Unavailable, Model, Internal };
  RankFailure(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  Kind kind;
};

}  // namespace ranker
