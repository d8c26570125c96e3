// The JSON-lines front end: one request line -> RequestInput with simdjson's On-Demand parser, and the
// answer lines. Strict where JSON parsers are lenient: a key given twice in an object is refused (the
// last would silently win), so is text that is not UTF-8 or a string with a lone surrogate escape;
// JSON types are checked here (an id must be an integer, a dense value a number, a sequence field an
// array), the model's rules by validate() (request.hpp). Torch-free.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <simdjson.h>

#include "engine.hpp"
#include "request.hpp"

namespace ranker::json {

class RequestReader {
 public:
  // Reads one request line; `line` may gain capacity (simdjson reads a little past the text). The
  // names of the result view this reader's buffers: valid until the next read(). Throws RequestError:
  // "bad JSON: ..." for the syntax, else the field's path and the rule.
  RequestInput read(std::string& line);

 private:
  simdjson::ondemand::parser parser_;
};

// {"request_id": ... or null, "model_generation": g, "ranked": [{"candidate": i, "score": s,
// "probabilities": {task: p, ...}}, ...]}, every float32 in its shortest form.
std::string ranking_line(const Ranking& ranking);
// {"request_id": ... or null, "error": "..."}
std::string error_line(const std::optional<std::string>& request_id, std::string_view message);
// {"event_error": "...", "line": n}: an event line the feature state refused.
std::string event_error_line(std::string_view message, int64_t line);

}  // namespace ranker::json
