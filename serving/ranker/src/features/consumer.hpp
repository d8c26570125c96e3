// The feature state's feed: one thread per events partition reading the broker's Redis stream
// (`events.<p>`, online/broker.py) with XREAD through Debian's libhiredis, each entry read by
// event_fields.hpp and applied to the state. Entries the state refuses are quarantined: counted and
// logged with their id and the reason, never applied.
//
// Start: catch_up() reads every partition from its first entry to the tail it had when called, so a
// ranker that starts, or starts again, has rebuilt its state before it reports SERVING; then start()
// follows the streams. A lost connection (the broker restarting) is retried with backoff, from the
// last entry applied: nothing is read twice, nothing skipped.
//
// Completeness: a `clock` entry on a partition says every event of it up to its time is published.
// Once any partition has carried one, the state is told the lowest of the partitions' latest marks
// (FeatureState::set_complete_until; a partition without a mark yet counts as complete up to nothing),
// so that no request is answered while another partition's events before it are still unread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "features/state.hpp"

namespace ranker::features {

struct ConsumerOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int partitions = 1;
  std::string stream_prefix = "events.";  // online/broker.py events_stream(p)
  int count = 2000;                       // entries per XREAD
  int block_ms = 50;                      // how long one XREAD waits for news
};

struct CatchUpReport {
  int64_t entries = 0, applied = 0, quarantined = 0;
  double seconds = 0;
};

class EventConsumer {
 public:
  // After each batch read (the server's metrics): how many entries were applied and quarantined, and
  // for those carrying a `pub` field (their publication's wall-clock ms) the seconds until applied.
  struct Batch {
    uint64_t applied = 0, quarantined = 0;
    std::vector<double> lag_seconds;
  };
  using Observer = std::function<void(const Batch&)>;

  EventConsumer(FeatureState& state, ConsumerOptions options, Observer observer = {});
  ~EventConsumer();
  EventConsumer(const EventConsumer&) = delete;
  EventConsumer& operator=(const EventConsumer&) = delete;

  // Every partition up to its tail as of now (throws std::runtime_error when the broker cannot be reached).
  CatchUpReport catch_up();
  // One thread per partition following its stream until stop().
  void start();
  void stop();

 private:
  struct Partition {
    size_t index = 0;
    std::string stream;
    std::string last_id = "0-0";
  };
  void marked(size_t index, int64_t ts);
  // Reads one batch of partition p after its last id (blocking up to block_ms when `block`);
  // the entries read. Throws std::runtime_error on a broker error.
  int64_t read_batch(void* context, Partition& p, bool block, CatchUpReport& report);
  void follow(size_t p);

  FeatureState& state_;
  ConsumerOptions options_;
  Observer observer_;
  std::vector<Partition> partitions_;
  std::vector<std::atomic<int64_t>> marks_;  // per partition its latest clock mark (INT64_MIN: none yet)
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};
};

}  // namespace ranker::features
