#include "features/json_events.hpp"

#include "features/event_fields.hpp"

namespace ranker::features {
namespace {

using simdjson::dom::element;

// The text of a field of an event object: a string as is, an integer written in decimal; anything
// else as its JSON text, which event_of refuses as not an integer.
std::optional<std::string_view> field_text(element event, std::string_view name, std::string& scratch) {
  element v;
  if (event.at_key(name).get(v)) return std::nullopt;
  std::string_view s;
  if (!v.get_string().get(s)) return s;
  int64_t i = 0;
  scratch = v.get_int64().get(i) ? simdjson::to_string(v) : std::to_string(i);
  return std::string_view(scratch);
}

}  // namespace

bool is_event_line(std::string_view line) {
  const size_t start = line.find_first_not_of(" \t\r");
  if (start == std::string_view::npos || line[start] != '{') return false;
  const size_t key = line.find_first_not_of(" \t\r", start + 1);
  return key != std::string_view::npos && line.substr(key, 7) == "\"event\"";
}

std::string apply_json_event(FeatureState& state, element event) {
  if (!event.is_object()) return "\"event\" must be an object";
  std::string scratch;
  try {
    auto parsed = event_of([&](std::string_view name) { return field_text(event, name, scratch); });
    if (parsed) state.apply(*parsed);
    return "";
  } catch (const EventError& e) {
    return e.what();
  }
}

std::string apply_event_line(FeatureState& state, simdjson::dom::parser& parser, const std::string& line) {
  element root, event;
  if (parser.parse(line).get(root) || root.at_key("event").get(event)) return "bad JSON";
  return apply_json_event(state, event);
}

}  // namespace ranker::features
