// One event of the broker's events streams (a flat map of text fields; online/events.py writes them)
// as the feature state takes it. The same reader serves the Redis consumer and the JSON tool, so the
// two cannot read an event differently.
#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "features/state.hpp"

namespace ranker::features {

// The field's text, or nullopt where the entry has no such field.
using FieldLookup = std::function<std::optional<std::string_view>(std::string_view name)>;

// The state event an entry holds; nullopt for the types the state has no use for (like, comment,
// gift, end). Throws EventError naming the field for a malformed one: an unknown type, a missing
// field, a value that is not a decimal integer.
std::optional<StateEvent> event_of(const FieldLookup& field);

}  // namespace ranker::features
