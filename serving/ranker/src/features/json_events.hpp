// Event lines of the JSON tools: {"event": {"type": "play", "ts": 1, ...}}, the fields of a broker
// entry (event_fields.hpp) with integers given as JSON numbers or decimal strings.
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>

#include "features/state.hpp"

namespace ranker::features {

// Whether the line is an event line (starts with {"event": after any blanks).
bool is_event_line(std::string_view line);

// Applies the event of an event line's "event" object; "" when applied (or of a type the state does
// not use), else the reason it was refused (the state unchanged).
std::string apply_json_event(FeatureState& state, simdjson::dom::element event);

// The same from the whole line: "bad JSON" when it does not parse.
std::string apply_event_line(FeatureState& state, simdjson::dom::parser& parser, const std::string& line);

}  // namespace ranker::features
