#include "convert.hpp"

#include <charconv>

namespace ranker::service {
namespace {

using json::Value;
namespace pb = moment_cross::ranker::v1;

Value object() {
  Value v;
  v.type = Value::Type::Object;
  v.names = std::make_unique<std::vector<std::string>>();
  return v;
}

void add(Value& obj, const std::string& name, Value member) {
  obj.names->push_back(name);
  obj.items.push_back(std::move(member));
}

Value integer(int64_t x) {
  Value v;
  v.type = Value::Type::Number;
  v.integral = true;
  v.string = std::to_string(x);
  return v;
}

Value real(double x) {
  // The literal Python's repr and json.dumps write (shortest round trip), so that a message naming
  // the value reads as the JSON tool's does for the same request sent as JSON.
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, x).ptr;
  Value v;
  v.type = Value::Type::Number;
  v.string.assign(buf, end);
  if (v.string.find_first_of(".eEn") == std::string::npos) v.string += ".0";  // 2.0, not 2: not an integer
  return v;
}

Value part(const pb::Part& p) {
  Value out = object();
  Value ids = object(), dense = object(), sequences = object();
  for (const auto& [name, id] : p.ids()) add(ids, name, integer(id));
  for (const auto& [name, x] : p.dense()) add(dense, name, real(x));
  for (const auto& [name, seq] : p.sequences()) {
    Value fields = object();
    for (const auto& [field, list] : seq.fields()) {
      Value items;
      items.type = Value::Type::Array;
      items.items.reserve(list.values_size());
      for (int64_t x : list.values()) items.items.push_back(integer(x));
      add(fields, field, std::move(items));
    }
    add(sequences, name, std::move(fields));
  }
  add(out, "ids", std::move(ids));
  add(out, "dense", std::move(dense));
  add(out, "sequences", std::move(sequences));
  return out;
}

}  // namespace

Value to_json(const pb::RankRequest& request) {
  Value doc = object();
  if (request.has_request_id()) {
    Value id;
    id.type = Value::Type::String;
    id.string = request.request_id();
    add(doc, "request_id", std::move(id));
  }
  if (request.has_user()) add(doc, "user", part(request.user()));
  Value candidates;
  candidates.type = Value::Type::Array;
  candidates.items.reserve(request.candidates_size());
  for (const auto& c : request.candidates()) candidates.items.push_back(part(c));
  add(doc, "candidates", std::move(candidates));
  return doc;
}

void to_proto(const Ranking& ranking, pb::RankResponse* response) {
  if (ranking.request_id) response->set_request_id(*ranking.request_id);
  response->set_model_generation(ranking.generation);
  response->mutable_ranked()->Reserve(static_cast<int>(ranking.ranked.size()));
  for (const auto& r : ranking.ranked) {
    auto* out = response->add_ranked();
    out->set_candidate(r.candidate);
    out->set_score(r.score);
    auto& probabilities = *out->mutable_probabilities();
    for (size_t t = 0; t < ranking.tasks.size(); ++t) probabilities[ranking.tasks[t]] = r.probabilities[t];
  }
}

}  // namespace ranker::service
