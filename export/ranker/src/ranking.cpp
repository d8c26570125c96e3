#include "ranking.hpp"

#include <algorithm>
#include <chrono>
#include <numeric>

#include <ATen/Parallel.h>

namespace ranker {
namespace {

int64_t longest(const std::vector<const ValidRequest*>& requests, bool user) {
  int64_t most = 1;
  for (const ValidRequest* r : requests)
    for (int64_t n : (user ? r->user_sequences : r->sequences).lengths) most = std::max(most, n);
  return most;
}

// Ragged sequences (request.hpp) into [parts, G, L, P] ids and [parts, G, L, S] side buckets from row `row`.
void copy_sequences(const Sequences& from, int64_t gsus, int64_t length, int64_t id_fields, int64_t row,
                    at::Tensor& ids, at::Tensor& side, at::Tensor& lengths) {
  const int64_t side_fields = side.size(-1), fields = id_fields + side_fields;
  int64_t* id_out = ids.data_ptr<int64_t>();
  int64_t* side_out = side.data_ptr<int64_t>();
  int64_t* length_out = lengths.data_ptr<int64_t>() + row * gsus;
  const int64_t* values = from.values.data();
  for (size_t k = 0; k < from.lengths.size(); ++k) {
    const int64_t slot = row * gsus + static_cast<int64_t>(k);  // (part, gsu) in the tensors' first two axes
    const int64_t n = from.lengths[k];
    length_out[k] = n;
    for (int64_t e = 0; e < n; ++e, values += fields) {
      std::copy(values, values + id_fields, id_out + (slot * length + e) * id_fields);
      std::copy(values + id_fields, values + fields, side_out + (slot * length + e) * side_fields);
    }
  }
}

}  // namespace

std::vector<at::Tensor> model_inputs(const std::vector<const ValidRequest*>& requests, const ModelMeta& meta) {
  const auto& user = meta.user_fields;
  const auto& cand = meta.candidate_fields;
  const int64_t U = static_cast<int64_t>(requests.size());
  int64_t B = 0;
  for (const ValidRequest* r : requests) B += r->candidates;
  const int64_t P = meta.n_id_fields, S = static_cast<int64_t>(meta.sequence_fields.size()) - P;
  const int64_t Gu = user.sequences.size(), Gc = cand.sequences.size();
  const int64_t Lu = longest(requests, true), Lc = longest(requests, false);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor user_ids = at::empty({U, static_cast<int64_t>(user.ids.size())}, i64);
  at::Tensor user_dense = at::empty({U, static_cast<int64_t>(user.dense.size())}, f32);
  at::Tensor user_seq_ids = at::zeros({U, Gu, Lu, P}, i64), user_seq_side = at::zeros({U, Gu, Lu, S}, i64);
  at::Tensor user_lengths = at::empty({U, Gu}, i64);
  at::Tensor candidate_user = at::empty({B}, i64);
  at::Tensor ids = at::empty({B, static_cast<int64_t>(cand.ids.size())}, i64);
  at::Tensor dense = at::empty({B, static_cast<int64_t>(cand.dense.size())}, f32);
  at::Tensor seq_ids = at::zeros({B, Gc, Lc, P}, i64), seq_side = at::zeros({B, Gc, Lc, S}, i64);
  at::Tensor lengths = at::empty({B, Gc}, i64);
  int64_t row = 0;
  for (int64_t u = 0; u < U; ++u) {
    const ValidRequest& r = *requests[u];
    std::copy(r.user_ids.begin(), r.user_ids.end(), user_ids.data_ptr<int64_t>() + u * user_ids.size(1));
    std::copy(r.user_dense.begin(), r.user_dense.end(), user_dense.data_ptr<float>() + u * user_dense.size(1));
    copy_sequences(r.user_sequences, Gu, Lu, P, u, user_seq_ids, user_seq_side, user_lengths);
    std::fill_n(candidate_user.data_ptr<int64_t>() + row, r.candidates, u);
    std::copy(r.ids.begin(), r.ids.end(), ids.data_ptr<int64_t>() + row * ids.size(1));
    std::copy(r.dense.begin(), r.dense.end(), dense.data_ptr<float>() + row * dense.size(1));
    copy_sequences(r.sequences, Gc, Lc, P, row, seq_ids, seq_side, lengths);
    row += r.candidates;
  }
  return {user_ids, user_dense, user_seq_ids, user_seq_side, user_lengths, candidate_user,
          ids,      dense,      seq_ids,      seq_side,      lengths};
}

Scores score(const LoadedModel& model, const std::vector<const ValidRequest*>& requests) {
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  auto out = model.forward->run(model_inputs(requests, model.meta));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (out.size() != 2) throw ModelError("the model returned " + std::to_string(out.size()) + " outputs, not 2");
  Scores s{out[0].to(at::kFloat).contiguous(), out[1].to(at::kFloat).contiguous(), seconds, at::get_num_threads()};
  int64_t n = 0;
  for (const ValidRequest* r : requests) n += r->candidates;
  const int64_t t = static_cast<int64_t>(model.meta.tasks.size());
  if (s.probabilities.sizes() != at::IntArrayRef({n, t}) || s.score.sizes() != at::IntArrayRef({n}))
    throw ModelError("the model returned unexpected shapes; is model.json from the same export?");
  // A NaN would also break the ordering (every comparison with it is false).
  at::Tensor finite = at::isfinite(s.score) & at::isfinite(s.probabilities).all(1);
  if (!finite.all().item<bool>()) {
    int64_t first = (~finite).nonzero()[0][0].item<int64_t>();
    throw ModelError("non-finite score or probability for candidate " + std::to_string(first));
  }
  return s;
}

std::vector<int64_t> ranked_order(const float* score, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  return order;
}

void warm_up(const LoadedModel& model) {
  for (int64_t n : {int64_t{1}, std::min<int64_t>(200, model.meta.max_candidates)}) {
    ValidRequest request = synthetic_request(model.meta, n);
    c10::InferenceMode guard;
    model.forward->run(model_inputs({&request}, model.meta));  // stand-in inputs: only that an answer comes
  }
}

RankFailure failure_of(std::exception_ptr error) {
  using Kind = RankFailure::Kind;
  try {
    std::rethrow_exception(error);
  } catch (const RankFailure& e) {
    return e;
  } catch (const RequestError& e) {
    return {Kind::InvalidRequest, e.what()};
  } catch (const ModelError& e) {
    return {Kind::Model, std::string("model error: ") + e.what()};
  } catch (const c10::Error& e) {
    return {Kind::Model, std::string("model error: ") + e.what_without_backtrace()};
  } catch (const std::exception& e) {
    return {Kind::Internal, std::string("internal error: ") + e.what()};
  } catch (...) {
    return {Kind::Internal, "internal error: unknown exception"};
  }
}

}  // namespace ranker
