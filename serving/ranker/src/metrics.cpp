#include "metrics.hpp"

#include <charconv>
#include <chrono>

namespace ranker {
namespace {

std::string number(double v) {  // the shortest form that reads back the same: le="0.0005", not 0.00050000000000000001
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general).ptr);
}

void header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lock(mutex_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mutex_);
  header(out, name, help, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : latency_({0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5}),
      forward_({0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5}),
      batch_candidates_({1, 10, 50, 100, 200, 400, 800, 1600, 3200, 6400, 10000}),
      batch_requests_({1, 2, 4, 8, 16, 32, 64}),
      push_apply_({0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5}),
      state_lag_({0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60}) {}

void Metrics::request_done(const std::string& code, double seconds) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_by_code_[code];
  }
  latency_.observe(seconds);
}

void Metrics::batch_done(int64_t requests, int64_t candidates, double forward_seconds) {
  batch_requests_.observe(static_cast<double>(requests));
  batch_candidates_.observe(static_cast<double>(candidates));
  forward_.observe(forward_seconds);
}

void Metrics::stage_done(const std::string& stage, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& [sum, count] = stages_[stage];
  sum += seconds;
  ++count;
}

void Metrics::reload_done(bool success, int64_t generation, int64_t push) {
  (success ? reload_success_ : reload_failure_)++;
  generation_ = generation;
  push_ = push;
}

void Metrics::push_done(const PushOutcome& outcome) {
  using Result = PushOutcome::Result;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++pushes_by_result_[outcome.result == Result::Applied ? "applied"
                        : outcome.result == Result::Gap   ? "gap"
                                                          : "refused/" + outcome.reason];
  }
  if (outcome.result != Result::Applied) return;
  push_apply_.observe(outcome.apply_seconds);
  push_ = outcome.sequence;
  push_learned_unix_ms_ = outcome.learned_unix_ms;
  push_data_time_ms_ = outcome.data_time_ms;
}

std::string Metrics::prometheus_text() const {
  std::string out;
  header(out, "ranker_requests_total", "Rank calls answered, by gRPC status code.", "counter");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [code, n] : requests_by_code_)
      out += "ranker_requests_total{code=\"" + code + "\"} " + std::to_string(n) + "\n";
  }
  header(out, "ranker_stage_seconds", "Time spent per stage of the Rank calls (a summary without quantiles).",
         "summary");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [stage, total] : stages_) {
      out += "ranker_stage_seconds_sum{stage=\"" + stage + "\"} " + number(total.first) + "\n";
      out += "ranker_stage_seconds_count{stage=\"" + stage + "\"} " + std::to_string(total.second) + "\n";
    }
  }
  latency_.write(out, "ranker_request_duration_seconds",
                 "Rank call latency in the server: request received to answer built (queue and forward included).");
  forward_.write(out, "ranker_forward_duration_seconds", "Duration of one batched forward.");
  batch_candidates_.write(out, "ranker_batch_candidates", "Candidates scored by one forward.");
  batch_requests_.write(out, "ranker_batch_requests", "Requests merged into one forward.");
  header(out, "ranker_model_generation", "Generation of the model serving now (1 = the first loaded).", "gauge");
  out += "ranker_model_generation " + std::to_string(generation_.load()) + "\n";
  header(out, "ranker_reloads_total", "Reloads of a newer export, by result.", "counter");
  out += "ranker_reloads_total{result=\"success\"} " + std::to_string(reload_success_.load()) + "\n";
  out += "ranker_reloads_total{result=\"failure\"} " + std::to_string(reload_failure_.load()) + "\n";
  header(out, "ranker_model_push", "Pushes applied to the export serving now (0 = the export as written).", "gauge");
  out += "ranker_model_push " + std::to_string(push_.load()) + "\n";
  header(out, "ranker_pushes_total", "Pushes looked at, by result (refusals by reason; gap: a push missing before a later one).",
         "counter");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [key, n] : pushes_by_result_) {
      const auto slash = key.find('/');
      out += slash == std::string::npos
                 ? "ranker_pushes_total{result=\"" + key + "\"} " + std::to_string(n) + "\n"
                 : "ranker_pushes_total{result=\"refused\",reason=\"" + key.substr(slash + 1) + "\"} " +
                       std::to_string(n) + "\n";
    }
  }
  push_apply_.write(out, "ranker_push_apply_seconds",
                    "Applying one push: from opening its file until its version serves (read, checks, write, swap).");
  const int64_t learned = push_learned_unix_ms_.load();
  header(out, "ranker_push_age_seconds",
         "Wall-clock age of the newest update serving: now minus when the newest batch of the last applied push was "
         "learned (absent until a push is applied).", "gauge");
  if (learned > 0) {
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    out += "ranker_push_age_seconds " + number((now_ms - learned) / 1000.0) + "\n";
  }
  header(out, "ranker_push_data_timestamp_seconds",
         "The data clock (Unix seconds of the data's time) of the newest sample learned by the push serving.",
         "gauge");
  out += "ranker_push_data_timestamp_seconds " + number(push_data_time_ms_.load() / 1000.0) + "\n";
  header(out, "ranker_requests_in_flight", "Rank calls being served now.", "gauge");
  out += "ranker_requests_in_flight " + std::to_string(in_flight_.load()) + "\n";
  header(out, "ranker_unknown_users_total",
         "Ids-only requests for a user the feature state holds no event of (served with an empty history).", "counter");
  out += "ranker_unknown_users_total " + std::to_string(unknown_users_.load()) + "\n";
  header(out, "ranker_state_events_total", "Events the feature state took from the events streams, by outcome.",
         "counter");
  out += "ranker_state_events_total{outcome=\"applied\"} " + std::to_string(state_events_applied_.load()) + "\n";
  out += "ranker_state_events_total{outcome=\"quarantined\"} " + std::to_string(state_events_quarantined_.load()) + "\n";
  header(out, "ranker_served_log_total", "Answered ids-only requests whose features were logged, by outcome.",
         "counter");
  out += "ranker_served_log_total{outcome=\"written\"} " + std::to_string(served_written_.load()) + "\n";
  out += "ranker_served_log_total{outcome=\"dropped\"} " + std::to_string(served_dropped_.load()) + "\n";
  state_lag_.write(out, "ranker_state_event_lag_seconds",
                   "From an event's publication (its pub field, wall clock) to its being applied to the feature state.");
  header(out, "ranker_state_clock_seconds", "The feature state's clock: the newest event's time (data time).", "gauge");
  out += "ranker_state_clock_seconds " + number(state_clock_ms_.load() / 1000.0) + "\n";
  return out;
}

}  // namespace ranker
