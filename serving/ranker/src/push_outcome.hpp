// What became of one push (push.hpp), as the log and the metrics see it. Torch-free, like
// metrics.hpp, which records it.
#pragma once

#include <cstdint>
#include <string>

namespace ranker {

// What became of one push, for the log and the metrics.
struct PushOutcome {
  enum class Result { Applied, Refused, Gap };
  Result result = Result::Applied;
  std::string reason;   // refusals: PushRefused::reason
  std::string message;  // refusals and gaps: what exactly
  int64_t sequence = 0;
  double apply_seconds = 0;  // applied: from opening the file until the new version serves
  int64_t rows = 0, bytes = 0, data_time_ms = 0, learned_unix_ms = 0;
};

}  // namespace ranker
