// Micro-batching: concurrent requests' candidates merged into one forward. Callers block in
// score(); worker threads take the oldest queued request, add the ones queued behind it while they
// fit under `max_batch_candidates` and share its model, wait up to `max_delay` after its arrival for
// more (0: take only what is already queued — batches form by themselves while the workers are
// busy, and an idle server adds no delay), score them together and hand each caller its own rows.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "metrics.hpp"
#include "model_store.hpp"
#include "ranking.hpp"
#include "request.hpp"

namespace ranker {

struct BatcherOptions {
  int workers = 1;
  int intra_op_threads = 1;  // per worker
  int64_t max_batch_candidates = 512;
  std::chrono::microseconds max_delay{0};
};

// score() after stop().
struct BatcherStopped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Batcher {
 public:
  Batcher(BatcherOptions options, Metrics* metrics);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Scores `request` with `model` (the model it was validated against), with whatever other requests
  // for the same model are queued with it. Throws as ranker::score does.
  Scores score(std::shared_ptr<const LoadedModel> model, ValidRequest request);
  // Refuses new requests, scores the queued ones, joins the workers. Idempotent.
  void stop();

 private:
  struct Job {
    std::shared_ptr<const LoadedModel> model;
    ValidRequest request;
    std::promise<Scores> done;
    std::chrono::steady_clock::time_point queued;
  };
  std::vector<Job*> next_batch();  // blocks; empty when stopped and drained
  void run(const std::vector<Job*>& batch);
  void work();

  BatcherOptions options_;
  Metrics* metrics_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job*> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace ranker
