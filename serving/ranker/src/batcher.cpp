#include "batcher.hpp"

#include <ATen/Parallel.h>

namespace ranker {

Batcher::Batcher(BatcherOptions options, Metrics* metrics) : options_(options), metrics_(metrics) {
  if (options_.workers < 1) throw std::invalid_argument("--workers must be at least 1");
  if (options_.intra_op_threads < 1) throw std::invalid_argument("--intra-op-threads must be at least 1");
  if (options_.max_batch_candidates < 1) throw std::invalid_argument("--max-batch-candidates must be at least 1");
  if (options_.max_delay.count() < 0) throw std::invalid_argument("--max-delay-us must not be negative");
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() { stop(); }

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
}

Scores Batcher::score(std::shared_ptr<const LoadedModel> model, ValidRequest request) {
  Job job{std::move(model), std::move(request), {}, std::chrono::steady_clock::now()};
  auto result = job.done.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw BatcherStopped("the server is shutting down");
    queue_.push_back(&job);
  }
  changed_.notify_all();
  return result.get();  // the job lives on this stack until a worker has answered it
}

std::vector<Batcher::Job*> Batcher::next_batch() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  std::vector<Job*> batch;
  if (queue_.empty()) return batch;
  batch.push_back(queue_.front());
  queue_.pop_front();
  int64_t total = batch[0]->request.candidates;
  const auto deadline = batch[0]->queued + options_.max_delay;
  while (true) {
    while (!queue_.empty() && queue_.front()->model == batch[0]->model &&
           total + queue_.front()->request.candidates <= options_.max_batch_candidates) {
      total += queue_.front()->request.candidates;
      batch.push_back(queue_.front());
      queue_.pop_front();
    }
    // Full, or the next one does not fit (it starts the next batch), or time is up.
    if (total >= options_.max_batch_candidates || !queue_.empty() || stopping_ ||
        std::chrono::steady_clock::now() >= deadline)
      return batch;
    changed_.wait_until(lock, deadline);
  }
}

void Batcher::run(const std::vector<Job*>& batch) {
  std::vector<const ValidRequest*> requests;
  int64_t candidates = 0;
  for (const Job* job : batch) {
    requests.push_back(&job->request);
    candidates += job->request.candidates;
  }
  const auto& model = *batch[0]->model;
  try {
    auto t0 = std::chrono::steady_clock::now();
    if (metrics_ != nullptr)
      for (const Job* job : batch)
        metrics_->stage_done("queue", std::chrono::duration<double>(t0 - job->queued).count());
    Scores scores = ranker::score(model, requests);
    if (metrics_ != nullptr)
      metrics_->batch_done(static_cast<int64_t>(batch.size()), candidates,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    int64_t offset = 0;
    for (Job* job : batch) {
      const int64_t n = job->request.candidates;
      job->done.set_value(Scores{scores.probabilities.narrow(0, offset, n), scores.score.narrow(0, offset, n),
                                 scores.forward_seconds, scores.intra_op_threads, scores.version});
      offset += n;
    }
  } catch (...) {
    if (batch.size() == 1) {
      batch[0]->done.set_exception(std::current_exception());
      return;
    }
    // Something in the merged batch failed (a non-finite score, say): score each request alone, so
    // that each gets its own answer and an error names its own candidate.
    for (Job* job : batch) {
      try {
        job->done.set_value(ranker::score(model, {&job->request}));
      } catch (...) {
        job->done.set_exception(std::current_exception());
      }
    }
  }
}

void Batcher::work() {
  // Intra-op threads are a per-thread setting (OpenMP): each worker sets its own.
  at::set_num_threads(options_.intra_op_threads);
  while (true) {
    std::vector<Job*> batch = next_batch();
    if (batch.empty()) return;
    run(batch);
  }
}

}  // namespace ranker
