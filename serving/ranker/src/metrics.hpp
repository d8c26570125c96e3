// What the server counts, exported in the Prometheus text format (version 0.0.4). Torch-free: the
// gRPC side and the scoring side both record into it. Every member is safe to update from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "push_outcome.hpp"

namespace ranker {

// A cumulative histogram with fixed upper bounds (Prometheus "le" buckets, +Inf implied).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // name_bucket{le="..."}, name_sum, name_count lines, with HELP and TYPE.
  void write(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bound, then +Inf; not cumulative until written
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // One finished Rank call: its gRPC status code name ("OK", "INVALID_ARGUMENT", ...) and latency.
  void request_done(const std::string& code, double seconds);
  // One forward of the batcher: how many requests it merged and how many candidates it scored.
  void batch_done(int64_t requests, int64_t candidates, double forward_seconds);
  // A reload attempt: its result, and the export (generation) and push serving after it.
  void reload_done(bool success, int64_t generation, int64_t push);
  // A push looked at: applied (the push now serving, its apply time, the wall clock at which its
  // newest batch was learned), refused (by reason) or a gap in the sequence.
  void push_done(const PushOutcome& outcome);
  // Time spent in one stage of a call: "convert" (proto to the validator's input), "features" (an
  // ids-only request's features assembled from the feature state), "validate"
  // (rules and tensors), "queue" (waiting for a worker), "rank" (ordering and the answer).
  void stage_done(const std::string& stage, double seconds);
  void set_generation(int64_t generation) { generation_ = generation; }
  void set_push(int64_t push) { push_ = push; }
  void in_flight(int delta) { in_flight_ += delta; }
  // An ids-only request for a user the feature state holds no event of (served, with an empty history).
  void unknown_user() { ++unknown_users_; }
  // The feature state fed by the events streams: events applied, events quarantined (with the reason
  // logged), the state's clock (data ms), and the newest event's publication-to-state delay.
  void state_events(uint64_t applied, uint64_t quarantined) {
    state_events_applied_ += applied;
    state_events_quarantined_ += quarantined;
  }
  // An event's publication (its `pub` field, wall ms) to its being applied to the state.
  void state_event_lag(double seconds) { state_lag_.observe(seconds); }
  void set_state_clock(int64_t clock_ms) { state_clock_ms_ = clock_ms; }
  void served_logged(uint64_t written, uint64_t dropped) {
    served_written_ += written;
    served_dropped_ += dropped;
  }

  std::string prometheus_text() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> requests_by_code_;
  std::map<std::string, std::pair<double, uint64_t>> stages_;  // stage -> (seconds, calls)
  Histogram latency_;
  Histogram forward_;
  Histogram batch_candidates_;
  Histogram batch_requests_;
  std::atomic<uint64_t> reload_success_{0}, reload_failure_{0};
  std::atomic<int64_t> generation_{0};
  std::atomic<int64_t> push_{0};
  std::atomic<int64_t> push_learned_unix_ms_{0}, push_data_time_ms_{0};
  std::map<std::string, uint64_t> pushes_by_result_;  // "applied", "gap", "refused/<reason>"
  Histogram push_apply_;
  Histogram state_lag_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> unknown_users_{0}, state_events_applied_{0}, state_events_quarantined_{0};
  std::atomic<uint64_t> served_written_{0}, served_dropped_{0};
  std::atomic<int64_t> state_clock_ms_{0};
};

}  // namespace ranker
