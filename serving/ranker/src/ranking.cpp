#include "ranking.hpp"

#include <algorithm>
#include <chrono>
#include <numeric>

#include <ATen/Parallel.h>

namespace ranker {
namespace {

int64_t longest_user_sequence(const std::vector<const ValidRequest*>& requests) {
  int64_t most = 1;
  for (const ValidRequest* r : requests)
    for (int64_t n : r->user_sequences.lengths) most = std::max(most, n);
  return most;
}

int64_t elements_of(const Sequences& sequences) {
  int64_t n = 0;
  for (int64_t length : sequences.lengths) n += length;
  return n;
}

}  // namespace

std::vector<at::Tensor> model_inputs(const std::vector<const ValidRequest*>& requests, const ModelMeta& meta) {
  const auto& user = meta.user_fields;
  const auto& cand = meta.candidate_fields;
  const int64_t U = static_cast<int64_t>(requests.size());
  int64_t B = 0, E = 0;
  for (const ValidRequest* r : requests) {
    B += r->candidates;
    E += elements_of(r->sequences);
  }
  const int64_t P = meta.n_id_fields, S = static_cast<int64_t>(meta.sequence_fields.size()) - P;
  const int64_t Gu = user.sequences.size(), Gc = cand.sequences.size(), Lu = longest_user_sequence(requests);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor user_ids = at::empty({U, static_cast<int64_t>(user.ids.size())}, i64);
  at::Tensor user_dense = at::empty({U, static_cast<int64_t>(user.dense.size())}, f32);
  at::Tensor user_seq_ids = at::zeros({U, Gu, Lu, P}, i64), user_seq_side = at::zeros({U, Gu, Lu, S}, i64);
  at::Tensor user_lengths = at::empty({U, Gu}, i64);
  at::Tensor candidate_user = at::empty({B}, i64);
  at::Tensor ids = at::empty({B, static_cast<int64_t>(cand.ids.size())}, i64);
  at::Tensor dense = at::empty({B, static_cast<int64_t>(cand.dense.size())}, f32);
  at::Tensor seq_ids = at::empty({E, P}, i64), seq_side = at::empty({E, S}, i64), seq_owner = at::empty({E, 2}, i64);
  int64_t* id_out = seq_ids.data_ptr<int64_t>();
  int64_t* side_out = seq_side.data_ptr<int64_t>();
  int64_t* owner_out = seq_owner.data_ptr<int64_t>();
  int64_t row = 0;
  for (int64_t u = 0; u < U; ++u) {
    const ValidRequest& r = *requests[u];
    std::copy(r.user_ids.begin(), r.user_ids.end(), user_ids.data_ptr<int64_t>() + u * user_ids.size(1));
    std::copy(r.user_dense.begin(), r.user_dense.end(), user_dense.data_ptr<float>() + u * user_dense.size(1));
    // The user's sequences padded to the batch's longest: [U, G_u, L_u, P] and [U, G_u, L_u, S].
    const int64_t* values = r.user_sequences.values.data();
    for (int64_t g = 0; g < Gu; ++g) {
      const int64_t n = r.user_sequences.lengths[g];
      user_lengths.data_ptr<int64_t>()[u * Gu + g] = n;
      for (int64_t e = 0; e < n; ++e, values += P + S) {
        std::copy(values, values + P, user_seq_ids.data_ptr<int64_t>() + ((u * Gu + g) * Lu + e) * P);
        std::copy(values + P, values + P + S, user_seq_side.data_ptr<int64_t>() + ((u * Gu + g) * Lu + e) * S);
      }
    }
    std::fill_n(candidate_user.data_ptr<int64_t>() + row, r.candidates, u);
    std::copy(r.ids.begin(), r.ids.end(), ids.data_ptr<int64_t>() + row * ids.size(1));
    std::copy(r.dense.begin(), r.dense.end(), dense.data_ptr<float>() + row * dense.size(1));
    // The candidates' elements as they are, jagged, each with its (candidate row, GSU).
    values = r.sequences.values.data();
    for (size_t k = 0; k < r.sequences.lengths.size(); ++k) {
      const int64_t candidate = row + static_cast<int64_t>(k) / Gc, gsu = static_cast<int64_t>(k) % Gc;
      for (int64_t e = 0; e < r.sequences.lengths[k]; ++e, values += P + S) {
        id_out = std::copy(values, values + P, id_out);
        side_out = std::copy(values + P, values + P + S, side_out);
        *owner_out++ = candidate;
        *owner_out++ = gsu;
      }
    }
    row += r.candidates;
  }
  return {user_ids, user_dense, user_seq_ids, user_seq_side, user_lengths, candidate_user,
          ids,      dense,      seq_ids,      seq_side,      seq_owner};
}

Scores score(const LoadedModel& model, const std::vector<const ValidRequest*>& requests) {
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  int64_t version = 0;
  auto out = model.forward->run(model_inputs(requests, model.meta), &version);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (out.size() != 2) throw ModelError("the model returned " + std::to_string(out.size()) + " outputs, not 2");
  Scores s{out[0].to(at::kFloat).contiguous(), out[1].to(at::kFloat).contiguous(), seconds, at::get_num_threads(),
           version};
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
