#include "ranking.hpp"

#include <algorithm>
#include <numeric>

#include "json.hpp"

namespace ranker {

Scores forward(const LoadedModel& model, const Request& request) {
  c10::InferenceMode guard;
  // Positions past the longest sequence of the request hold only padding, which the model gives no
  // weight: send only the positions some sequence fills (at least one). The answer is the same (the
  // export validates it), and a request of short histories costs a fraction of the full length.
  at::Tensor seq_ids = request.seq_ids, seq_side = request.seq_side;
  if (request.seq_lengths.numel() > 0) {
    const int64_t used = std::max<int64_t>(1, request.seq_lengths.max().item<int64_t>());
    if (used < seq_ids.size(2)) {
      seq_ids = seq_ids.narrow(2, 0, used).contiguous();
      seq_side = seq_side.narrow(2, 0, used).contiguous();
    }
  }
  auto out = model.forward->run({request.ids, request.dense, seq_ids, seq_side, request.seq_lengths});
  if (out.size() != 2) throw ModelError("the model returned " + std::to_string(out.size()) + " outputs, not 2");
  Scores s{out[0].contiguous(), out[1].contiguous()};
  const int64_t n = request.candidates, t = static_cast<int64_t>(model.meta.tasks.size());
  if (s.probabilities.sizes() != at::IntArrayRef({n, t}) || s.score.sizes() != at::IntArrayRef({n}))
    throw ModelError("the model returned unexpected shapes; is model.json from the same export?");
  return s;
}

Scores score(const LoadedModel& model, const Request& request) {
  Scores s = forward(model, request);
  // A NaN would also break the ordering (every comparison with it is false).
  at::Tensor finite = at::isfinite(s.score.to(at::kFloat)) & at::isfinite(s.probabilities.to(at::kFloat)).all(1);
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
    Request request = synthetic_request(model.meta, n);
    forward(model, request);  // stand-in inputs: their scores are not checked, only that they come
  }
}

std::string ranked_line(const Request& request, const Scores& scores, const LoadedModel& model) {
  const int64_t n = request.candidates;
  const auto& tasks = model.meta.tasks;
  at::Tensor p = scores.probabilities.to(at::kFloat), sc = scores.score.to(at::kFloat);
  const float* prob = p.data_ptr<float>();
  const float* score = sc.data_ptr<float>();
  const std::vector<int64_t> order = ranked_order(score, n);

  std::string out;
  out.reserve(64 + n * (48 + 24 * tasks.size()));
  out += "{\"request_id\":";
  if (request.request_id) json::append_string(out, *request.request_id); else out += "null";
  out += ",\"model_generation\":" + std::to_string(model.generation) + ",\"ranked\":[";
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[k];
    if (k) out += ',';
    out += "{\"candidate\":" + std::to_string(i) + ",\"score\":";
    json::append_number(out, score[i]);
    out += ",\"probabilities\":{";
    for (size_t j = 0; j < tasks.size(); ++j) {
      if (j) out += ',';
      json::append_string(out, tasks[j]);
      out += ':';
      json::append_number(out, prob[i * tasks.size() + j]);
    }
    out += "}}";
  }
  out += "]}";
  return out;
}

std::string error_line(const std::optional<std::string>& request_id, std::string_view message) {
  std::string out = "{\"request_id\":";
  if (request_id) json::append_string(out, *request_id); else out += "null";
  out += ",\"error\":";
  json::append_string(out, message);
  out += '}';
  return out;
}

Failure describe_failure(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const RequestError& e) {
    return {Failure::Kind::InvalidRequest, e.what()};
  } catch (const ModelError& e) {
    return {Failure::Kind::Model, std::string("model error: ") + e.what()};
  } catch (const c10::Error& e) {
    return {Failure::Kind::Model, std::string("model error: ") + e.what_without_backtrace()};
  } catch (const std::exception& e) {
    return {Failure::Kind::Internal, std::string("internal error: ") + e.what()};
  } catch (...) {
    return {Failure::Kind::Internal, "internal error: unknown exception"};
  }
}

std::string handle_line(std::string_view line, const LoadedModel& model) {
  std::optional<std::string> request_id;
  try {
    Request request = parse_request(line, model.meta, request_id);
    return ranked_line(request, score(model, request), model);
  } catch (...) {
    return error_line(request_id, describe_failure(std::current_exception()).message);
  }
}

}  // namespace ranker
