#include "convert.hpp"

namespace ranker::service {
namespace {

namespace pb = moment_cross::ranker::v1;

PartInput part(const pb::Part& p) {
  PartInput out;
  out.ids.reserve(p.ids_size());
  for (const auto& [name, id] : p.ids()) out.ids.emplace_back(name, id);
  out.dense.reserve(p.dense_size());
  for (const auto& [name, x] : p.dense()) out.dense.emplace_back(name, x);
  out.sequences.reserve(p.sequences_size());
  for (const auto& [name, seq] : p.sequences()) {
    SequenceInput sequence;
    for (const auto& [field, list] : seq.fields())
      sequence.fields.emplace_back(field, std::vector<int64_t>(list.values().begin(), list.values().end()));
    out.sequences.emplace_back(name, std::move(sequence));
  }
  return out;
}

}  // namespace

RequestInput to_input(const pb::RankRequest& request) {
  RequestInput out;
  if (request.has_request_id()) out.request_id = request.request_id();
  if (request.has_user()) out.user = part(request.user());
  if (request.has_ids()) {
    const pb::Ids& ids = request.ids();
    IdsInput in;
    in.user_id = ids.user_id();
    if (ids.has_request_ts()) in.request_ts = ids.request_ts();
    in.live_ids.assign(ids.live_ids().begin(), ids.live_ids().end());
    out.ids = std::move(in);
  }
  out.candidates.reserve(request.candidates_size());
  for (const auto& c : request.candidates()) out.candidates.push_back(part(c));
  return out;
}

void to_proto(const Ranking& ranking, pb::RankResponse* response) {
  if (ranking.request_id) response->set_request_id(*ranking.request_id);
  response->set_model_generation(ranking.generation);
  response->set_model_push(ranking.push);
  response->set_model_export(ranking.export_id);
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
