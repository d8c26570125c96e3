#include "features/event_fields.hpp"

#include <charconv>
#include <string>

namespace ranker::features {
namespace {

std::string_view need(const FieldLookup& field, std::string_view name) {
  auto v = field(name);
  if (!v) throw EventError("missing field '" + std::string(name) + "'");
  return *v;
}

int64_t integer(const FieldLookup& field, std::string_view name) {
  const std::string_view v = need(field, name);
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size() || v.empty())
    throw EventError("field '" + std::string(name) + "' is not an integer: '" + std::string(v.substr(0, 40)) + "'");
  return out;
}

}  // namespace

std::optional<StateEvent> event_of(const FieldLookup& field) {
  const std::string_view type = need(field, "type");
  StateEvent e;
  if (type == "like" || type == "comment" || type == "gift" || type == "end") return std::nullopt;
  if (type == "play") e.kind = EventKind::play;
  else if (type == "impression") e.kind = EventKind::impression;
  else if (type == "click") e.kind = EventKind::click;
  else if (type == "exit") e.kind = EventKind::exit;
  else if (type == "room_start") e.kind = EventKind::room_start;
  else if (type == "room_end") e.kind = EventKind::room_end;
  else if (type == "clock") e.kind = EventKind::clock;
  else throw EventError("unknown event type '" + std::string(type.substr(0, 40)) + "'");
  e.ts = integer(field, "ts");
  switch (e.kind) {
    case EventKind::play:
      e.user = integer(field, "user");
      e.photo = integer(field, "photo");
      e.author = integer(field, "author");
      e.start_ts = integer(field, "start_ts");
      e.watch_ms = integer(field, "watch_ms");
      break;
    case EventKind::impression:
    case EventKind::click:
      e.user = integer(field, "user");
      e.live = integer(field, "live");
      break;
    case EventKind::exit: {
      e.user = integer(field, "user");
      e.live = integer(field, "live");
      e.author = integer(field, "author");
      e.start_ts = integer(field, "start_ts");
      e.watch_ms = integer(field, "watch_ms");
      const int64_t clicked = integer(field, "clicked");
      if (clicked != 0 && clicked != 1) throw EventError("field 'clicked' must be 0 or 1");
      e.clicked = clicked == 1;
      break;
    }
    case EventKind::room_start:
      e.live = integer(field, "live");
      e.author = integer(field, "author");
      e.category = std::string(need(field, "category"));
      e.live_type = std::string(need(field, "live_type"));
      break;
    case EventKind::room_end:
      e.live = integer(field, "live");
      break;
    case EventKind::clock:
      break;
  }
  return e;
}

}  // namespace ranker::features
