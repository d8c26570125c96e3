#include "features/features_json.hpp"

#include <cstdio>

namespace ranker::features {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
      continue;
    }
    out += ch;
  }
  return out + "\"";
}

namespace {

void put_sequence(std::string& out, const char* name, const Sequence& seq) {
  out += json_string(name) + ":{";
  const char* fields[] = {"item", "author", "gap", "watch", "domain"};
  for (int f = 0; f < 5; ++f) {
    out += (f ? ",\"" : "\"") + std::string(fields[f]) + "\":[";
    for (size_t i = 0; i < seq.size(); ++i) {
      const Element& e = seq[i];
      const int64_t v = f == 0 ? e.item : f == 1 ? e.author : f == 2 ? e.gap : f == 3 ? e.watch : e.domain;
      out += (i ? "," : "") + std::to_string(v);
    }
    out += "]";
  }
  out += "}";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

std::string features_json(std::string_view request_id, const Assembled& a) {
  const UserFeatures& u = a.user;
  std::string out = "{\"request_id\":" + json_string(request_id) + ",\"known_user\":" + (a.known_user ? "true" : "false") +
                    ",\"history_events\":" + std::to_string(a.history_events) + ",\"user\":{\"ids\":{\"user_id\":" +
                    std::to_string(u.user_id) + ",\"hour\":" + std::to_string(u.hour) + ",\"user_history_bucket\":" +
                    std::to_string(u.user_history_bucket) + ",\"user_live_bucket\":" +
                    std::to_string(u.user_live_bucket) + "},\"dense\":{\"user_history_len\":" +
                    number(u.user_history_len) + ",\"user_live_history_len\":" + number(u.user_live_history_len) +
                    "},\"sequences\":{";
  put_sequence(out, "short", u.short_seq);
  out += ",";
  put_sequence(out, "mixed", u.mixed_seq);
  out += "}},\"candidates\":[";
  for (size_t k = 0; k < a.candidates.size(); ++k) {
    const CandidateFeatures& c = a.candidates[k];
    out += std::string(k ? "," : "") + "{\"ids\":{\"live_item\":" + std::to_string(c.live_item) + ",\"author_id\":" +
           std::to_string(c.author_id) + ",\"category\":" + std::to_string(c.category) + ",\"live_type\":" +
           std::to_string(c.live_type) + "},\"dense\":{";
    for (int r = 0; r < kRoomCount; ++r) out += (r ? ",\"" : "\"") + std::string(kRoomNames[r]) + "\":" + number(c.room[r]);
    out += "},\"sequences\":{";
    put_sequence(out, "long", c.long_seq);
    out += ",";
    put_sequence(out, "aidhard", c.aidhard_seq);
    out += ",";
    put_sequence(out, "livelong", c.livelong_seq);
    out += "}}";
  }
  out += "]}";
  return out;
}


}  // namespace ranker::features
