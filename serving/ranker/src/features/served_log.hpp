// The served-features log: every answered ids-only request's features, with the request's id, user
// and time, the model version that answered and the state's clock, appended to the broker's
// `served.<user % partitions>` stream (the events' partitions, so that the label joiner owning a
// user's events owns its served features too), for the joiner to build training samples from the
// features the model scored rather than from a recomputation (docs/serving.md, "Feature logging").
//
// Off the request path: log() queues the record and returns; a writer thread serializes (the features
// as features_json.hpp writes them) and appends in pipelined batches, reconnecting with backoff when
// the broker goes away (a batch whose replies were lost is sent again: a reader dedupes by request).
// A full queue drops the record and counts it: ranking never waits for the log — unless the caller
// is configured to (wait_ms, the server's --log-served-wait-ms): then the answer goes out only once its
// record is on the broker, so that a ranker killed at any moment leaves no answered request without
// its features (the live loop's trainer learns from nothing else).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "features/state.hpp"

namespace ranker::features {

struct ServedLogOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int partitions = 1;
  std::string stream_prefix = "served.";
  size_t max_queued = 10'000;  // records waiting to be written; beyond: dropped, counted
  int wait_ms = 0;             // > 0: log() returns once the record is written, or false after this long
};

struct ServedRecord {
  std::string request_id;
  int64_t user_id = 0, request_ts = 0, state_clock_ms = 0;
  std::string model_export;
  int64_t model_push = 0;
  Assembled features;
  std::shared_ptr<std::promise<bool>> written;  // set once appended (true) or given up (false); may be null
};

class ServedLog {
 public:
  // observer(written, dropped) after each batch and each drop (the server's metrics).
  using Observer = std::function<void(uint64_t written, uint64_t dropped)>;
  ServedLog(ServedLogOptions options, Observer observer = {});
  ~ServedLog();
  ServedLog(const ServedLog&) = delete;
  ServedLog& operator=(const ServedLog&) = delete;

  // Queues the record; with wait_ms, waits until the broker has it: false when it could not be
  // written (queue full, broker away) within wait_ms. True at once without wait_ms.
  bool log(ServedRecord record);
  // Writes what is queued (waiting up to `timeout_ms` for the broker), then stops the writer.
  void stop(int timeout_ms = 5000);

 private:
  void run();

  ServedLogOptions options_;
  Observer observer_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<ServedRecord> queue_;
  bool stopping_ = false;
  int64_t stop_deadline_ms_ = 0;
  std::thread writer_;
};

}  // namespace ranker::features
