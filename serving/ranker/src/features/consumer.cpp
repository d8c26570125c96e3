#include "features/consumer.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "features/event_fields.hpp"

namespace ranker::features {
namespace {

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

Context connect(const ConsumerOptions& o) {
  const timeval timeout{5, 0};
  Context c(redisConnectWithTimeout(o.host.c_str(), o.port, timeout));
  if (!c || c->err)
    throw std::runtime_error("events broker " + o.host + ":" + std::to_string(o.port) + ": " +
                             (c ? c->errstr : "cannot allocate a connection"));
  return c;
}

std::string_view text(const redisReply* r) { return std::string_view(r->str, r->len); }

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The id after which `id` is the next entry: XREAD returns entries strictly after the id given.
bool id_less(std::string_view a, std::string_view b) {
  auto split = [](std::string_view id) {
    const size_t dash = id.find('-');
    return std::make_pair(std::stoull(std::string(id.substr(0, dash))),
                          dash == std::string_view::npos ? 0ull : std::stoull(std::string(id.substr(dash + 1))));
  };
  return split(a) < split(b);
}

}  // namespace

EventConsumer::EventConsumer(FeatureState& state, ConsumerOptions options, Observer observer)
    : state_(state),
      options_(std::move(options)),
      observer_(std::move(observer)),
      marks_(static_cast<size_t>(std::max(options_.partitions, 1))) {
  if (options_.partitions < 1) throw std::invalid_argument("the events streams need at least one partition");
  for (int p = 0; p < options_.partitions; ++p)
    partitions_.push_back(Partition{static_cast<size_t>(p), options_.stream_prefix + std::to_string(p)});
  for (auto& m : marks_) m = INT64_MIN;
}

void EventConsumer::marked(size_t index, int64_t ts) {
  if (ts <= marks_[index].load()) return;
  marks_[index] = ts;  // one thread per partition writes its own
  int64_t lowest = INT64_MAX;
  for (const auto& m : marks_) lowest = std::min(lowest, m.load());
  state_.set_complete_until(lowest);
}

EventConsumer::~EventConsumer() { stop(); }

int64_t EventConsumer::read_batch(void* ctx, Partition& p, bool block, CatchUpReport& report) {
  auto* c = static_cast<redisContext*>(ctx);
  const std::string count = std::to_string(options_.count), wait = std::to_string(options_.block_ms);
  Reply reply(static_cast<redisReply*>(
      block ? redisCommand(c, "XREAD COUNT %s BLOCK %s STREAMS %s %s", count.c_str(), wait.c_str(), p.stream.c_str(),
                           p.last_id.c_str())
            : redisCommand(c, "XREAD COUNT %s STREAMS %s %s", count.c_str(), p.stream.c_str(), p.last_id.c_str())));
  if (!reply) throw std::runtime_error(p.stream + ": " + (c->errstr[0] ? c->errstr : "no reply"));
  if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error(p.stream + ": " + std::string(text(reply.get())));
  if (reply->type == REDIS_REPLY_NIL || reply->elements == 0) return 0;  // nothing new within block_ms
  const redisReply* entries = reply->element[0]->element[1];  // [[stream, [[id, [field, value, ...]], ...]]]
  Batch batch;
  int64_t mark = INT64_MIN;
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* entry = entries->element[i];
    const redisReply* fields = entry->element[1];
    const std::string_view id = text(entry->element[0]);
    auto field = [fields](std::string_view name) -> std::optional<std::string_view> {
      for (size_t f = 0; f + 1 < fields->elements; f += 2)
        if (text(fields->element[f]) == name) return text(fields->element[f + 1]);
      return std::nullopt;
    };
    try {
      auto event = event_of(field);
      if (event) state_.apply(*event);
      if (event && event->kind == EventKind::clock) mark = std::max(mark, event->ts);
      ++batch.applied;
      int64_t published = 0;
      // Following only: a rebuild reads old entries, whose lag says how old they are, not how fast the feed is.
      if (auto pub = field("pub");
          block && pub && std::from_chars(pub->data(), pub->data() + pub->size(), published).ec == std::errc())
        batch.lag_seconds.push_back(static_cast<double>(wall_ms() - published) / 1000.0);
    } catch (const EventError& e) {
      ++batch.quarantined;
      if (batch.quarantined <= 5)  // a flood of bad entries must not flood the log
        std::cerr << "ranker: feature state quarantined " << p.stream << " " << id << ": " << e.what() << std::endl;
    }
    p.last_id = std::string(id);
  }
  if (mark != INT64_MIN) marked(p.index, mark);
  report.entries += static_cast<int64_t>(entries->elements);
  report.applied += static_cast<int64_t>(batch.applied);
  report.quarantined += static_cast<int64_t>(batch.quarantined);
  if (observer_) observer_(batch);
  return static_cast<int64_t>(entries->elements);
}

CatchUpReport EventConsumer::catch_up() {
  const auto start = std::chrono::steady_clock::now();
  Context c = connect(options_);
  CatchUpReport report;
  for (Partition& p : partitions_) {
    Reply tail(static_cast<redisReply*>(redisCommand(c.get(), "XREVRANGE %s + - COUNT 1", p.stream.c_str())));
    if (!tail || tail->type == REDIS_REPLY_ERROR)
      throw std::runtime_error(p.stream + ": " + (tail ? std::string(text(tail.get())) : std::string(c->errstr)));
    if (tail->elements == 0) continue;  // nothing published yet
    const std::string last(text(tail->element[0]->element[0]));
    while (id_less(p.last_id, last))
      if (read_batch(c.get(), p, false, report) == 0) break;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

void EventConsumer::follow(size_t index) {
  Partition& p = partitions_[index];
  CatchUpReport report;
  auto backoff = std::chrono::milliseconds(50);
  while (!stopping_) {
    try {
      Context c = connect(options_);
      backoff = std::chrono::milliseconds(50);
      while (!stopping_) read_batch(c.get(), p, true, report);
    } catch (const std::exception& e) {
      if (stopping_) break;
      std::cerr << "ranker: feature state feed: " << e.what() << "; retrying in " << backoff.count() << " ms"
                << std::endl;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
  }
}

void EventConsumer::start() {
  for (size_t p = 0; p < partitions_.size(); ++p) threads_.emplace_back([this, p] { follow(p); });
}

void EventConsumer::stop() {
  stopping_ = true;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

}  // namespace ranker::features
