#include "features/served_log.hpp"

#include <hiredis/hiredis.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <vector>

#include "features/features_json.hpp"

namespace ranker::features {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

}  // namespace

ServedLog::ServedLog(ServedLogOptions options, Observer observer)
    : options_(std::move(options)), observer_(std::move(observer)), writer_([this] { run(); }) {}

ServedLog::~ServedLog() { stop(); }

bool ServedLog::log(ServedRecord record) {
  std::future<bool> written;
  if (options_.wait_ms > 0) {
    record.written = std::make_shared<std::promise<bool>>();
    written = record.written->get_future();
  }
  {
    std::lock_guard lock(mutex_);
    if (!stopping_ && queue_.size() < options_.max_queued) {
      queue_.push_back(std::move(record));
      wake_.notify_one();
    } else {
      if (observer_) observer_(0, 1);
      return false;
    }
  }
  if (options_.wait_ms <= 0) return true;
  return written.wait_for(std::chrono::milliseconds(options_.wait_ms)) == std::future_status::ready && written.get();
}

void ServedLog::stop(int timeout_ms) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !writer_.joinable()) return;
    stopping_ = true;
    stop_deadline_ms_ = now_ms() + timeout_ms;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void ServedLog::run() {
  Context c;
  auto backoff = std::chrono::milliseconds(50);
  std::vector<ServedRecord> batch;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !batch.empty(); });
      if (queue_.empty() && batch.empty()) return;  // stopping, and nothing left
      if (stopping_ && now_ms() > stop_deadline_ms_) {
        if (observer_) observer_(0, queue_.size() + batch.size());
        for (auto& r : queue_) if (r.written) r.written->set_value(false);
        for (auto& r : batch) if (r.written) r.written->set_value(false);
        return;
      }
      while (!queue_.empty() && batch.size() < 256) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    try {
      if (!c) {
        const timeval timeout{5, 0};
        c.reset(redisConnectWithTimeout(options_.host.c_str(), options_.port, timeout));
        if (!c || c->err) throw std::runtime_error(c ? c->errstr : "cannot allocate a connection");
      }
      for (const ServedRecord& r : batch) {
        const std::string stream = options_.stream_prefix + std::to_string(((r.user_id % options_.partitions) +
                                                                             options_.partitions) % options_.partitions);
        const std::string features = features_json(r.request_id, r.features);
        const std::string user = std::to_string(r.user_id), ts = std::to_string(r.request_ts),
                          push = std::to_string(r.model_push), clock = std::to_string(r.state_clock_ms);
        const char* argv[] = {"XADD", stream.c_str(), "*", "request", r.request_id.c_str(), "user", user.c_str(),
                              "request_ts", ts.c_str(), "export", r.model_export.c_str(), "push", push.c_str(),
                              "state_clock", clock.c_str(), "features", features.c_str()};
        const size_t lengths[] = {4, stream.size(), 1, 7, r.request_id.size(), 4, user.size(), 10, ts.size(), 6,
                                  r.model_export.size(), 4, push.size(), 11, clock.size(), 8, features.size()};
        if (redisAppendCommandArgv(c.get(), 17, argv, lengths) != REDIS_OK) throw std::runtime_error(c->errstr);
      }
      for (size_t i = 0; i < batch.size(); ++i) {
        void* reply = nullptr;
        if (redisGetReply(c.get(), &reply) != REDIS_OK) throw std::runtime_error(c->errstr);
        const bool error = static_cast<redisReply*>(reply)->type == REDIS_REPLY_ERROR;
        const std::string what = error ? static_cast<redisReply*>(reply)->str : "";
        freeReplyObject(reply);
        if (error) throw std::runtime_error(what);
      }
      if (observer_) observer_(batch.size(), 0);
      for (auto& r : batch) if (r.written) r.written->set_value(true);
      batch.clear();
      backoff = std::chrono::milliseconds(50);
    } catch (const std::exception& e) {
      c.reset();  // the batch is sent again, whole, on a new connection
      std::cerr << "ranker: served-features log: " << e.what() << "; retrying in " << backoff.count() << " ms"
                << std::endl;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
  }
}

}  // namespace ranker::features
