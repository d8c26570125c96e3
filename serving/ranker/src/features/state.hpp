// The feature stage's live state and the features it assembles for a request: per user a capped
// history of short-video plays and live stays, per room its catalog entry and the counters of the
// dense room features, all fed by events (the broker's events streams, or the JSON tool's lines),
// and at request time the five GSUs, the dense counters and the ids — with the rules of
// data_pipelines/streams/{features,gsu}.py, which tests/test_feature_stage.py holds this against.
//
// Point in time: a request at t0 sees only events with ts < t0, whatever the state already holds
// (events published early, or out of order). One writer (apply) and any number of readers
// (assemble) share it under a reader-writer lock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "features/catalog.hpp"

namespace ranker::features {

// An event the state cannot take; the message is the reason a consumer quarantines it with.
struct EventError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A request the state cannot answer (unknown or ended room, a time far behind the state's clock,
// too many candidates); the message names the field and the value.
struct FeatureError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A request ahead of what the state has seen: the feed lags (or the caller's clock runs ahead).
// Worth retrying, unlike a FeatureError: the ranker answers UNAVAILABLE.
struct FeatureLagError : FeatureError {
  using FeatureError::FeatureError;
};

enum class EventKind { play, impression, click, exit, room_start, room_end, clock };

// What the state learns from one event (docs/serving.md, "Live feature state"):
//   play        user, photo, author, start_ts, ts (its end), watch_ms: a short-video interaction
//   impression  user, live, ts: the room was shown
//   click       user, live, ts: the user entered the room
//   exit        user, live, author, start_ts (the request), ts, watch_ms, clicked: a stay ended
//   room_start  live, author, category, live_type, ts;   room_end  live, ts;   clock  ts
struct StateEvent {
  EventKind kind = EventKind::clock;
  int64_t ts = 0;
  int64_t user = 0, live = 0, photo = 0, author = 0;
  int64_t start_ts = 0, watch_ms = 0;
  bool clicked = false;
  std::string category, live_type;
};

// One interaction of a user's history, packed into 20 bytes (docs/serving.md: at most 24 bytes per
// history event in the state, container included). What the GSUs read of its watch time is its
// bucket and whether it was a long view, so those are kept rather than the milliseconds.
struct HistoryEvent {
  uint32_t ts_low, ts_high;  // when it became known (its end), ms; split so the struct aligns to 4 bytes
  uint32_t item;             // item-table row, kLiveBit set for a live
  int32_t author;            // author-table row
  uint32_t bits;             // duration ms (26 bits, saturating) | watch bucket row << 26 | long view << 31

  static constexpr uint32_t kLiveBit = 1u << 31;
  static constexpr uint32_t kDurationMask = (1u << 26) - 1;  // 18.6 hours

  static HistoryEvent of(int64_t ts, int64_t duration_ms, int64_t item_row, bool live, int64_t author_row,
                         int64_t watch_row, bool long_view) {
    const auto t = static_cast<uint64_t>(ts);
    const uint32_t duration = static_cast<uint32_t>(std::min<int64_t>(duration_ms, kDurationMask));
    return HistoryEvent{static_cast<uint32_t>(t), static_cast<uint32_t>(t >> 32),
                        static_cast<uint32_t>(item_row) | (live ? kLiveBit : 0u), static_cast<int32_t>(author_row),
                        duration | (static_cast<uint32_t>(watch_row) << 26) | (long_view ? 1u << 31 : 0u)};
  }
  int64_t ts() const { return static_cast<int64_t>((static_cast<uint64_t>(ts_high) << 32) | ts_low); }
  int64_t duration_ms() const { return bits & kDurationMask; }
  int64_t watch_row() const { return (bits >> 26) & 0x1F; }
  bool long_view() const { return (bits >> 31) != 0; }
  bool live() const { return (item & kLiveBit) != 0; }
  int64_t item_row() const { return static_cast<int64_t>(item & ~kLiveBit); }
};
static_assert(sizeof(HistoryEvent) == 20, "a history event must stay 20 bytes");

// One GSU sequence element, the contract's fields (contract.SEQUENCE_FIELDS).
struct Element {
  int64_t item, author, gap, watch, domain;
};
using Sequence = std::vector<Element>;

enum Gsu { kShort, kLong, kAidhard, kLivelong, kMixed, kGsuCount };
extern const char* const kGsuNames[kGsuCount];  // contract.GSU_NAMES

// Features the same for every candidate of a request (contract names in comments).
struct UserFeatures {
  int64_t user_id = 0, hour = 0, user_history_bucket = 0, user_live_bucket = 0;
  double user_history_len = 0, user_live_history_len = 0;  // log1p of the counts
  Sequence short_seq, mixed_seq;
};

enum Room { kViewersNow, kClicks30s, kClicks5min, kImpressions5min, kCtr5min, kAgeMin, kRoomCount };
extern const char* const kRoomNames[kRoomCount];  // contract.ROOM_STATE_FEATURES

struct CandidateFeatures {
  int64_t live_item = 0, author_id = 0, category = 0, live_type = 0;
  double room[kRoomCount] = {};
  Sequence long_seq, aidhard_seq, livelong_seq;
};

struct Assembled {
  int64_t request_ts = 0;      // the time the features are of
  int64_t state_clock_ms = 0;  // the state's clock then: its newest event's time
  UserFeatures user;
  std::vector<CandidateFeatures> candidates;
  bool known_user = false;   // the state holds events of this user (else: an empty history)
  int64_t history_events = 0;  // the history the GSUs searched
  double gsu_seconds[kGsuCount] = {};  // time per GSU (the user's once, the candidates' summed)
  double total_seconds = 0;
};

struct StateOptions {
  // A request whose time is further than this from the state's clock (the newest event's time) is
  // refused: the state has not caught up with it, or has forgotten what it needs.
  int64_t tolerance_ms = 60'000;
  int64_t max_candidates = 1000;
  // An event further than this ahead of the clock is quarantined (0: no limit), so that one garbled
  // time cannot move the clock past every request and make the state forget what they need. Set it
  // where every partition carries clock marks (a feed's heartbeat): a legitimate quiet gap longer
  // than the limit would otherwise be refused.
  int64_t max_event_lead_ms = 0;
};

struct StateStats {
  int64_t events = 0, users = 0, rooms = 0, history_events = 0, clock_ms = 0;
};

class FeatureState {
 public:
  FeatureState(Catalog catalog, StateOptions options);

  // Applies one event; throws EventError (the state unchanged) for one it cannot take.
  void apply(const StateEvent& event);
  // The features of `live_ids` for `user` at `request_ts`; throws FeatureError.
  Assembled assemble(int64_t user, int64_t request_ts, const std::vector<int64_t>& live_ids) const;

  // How far the feed is complete: every event with ts <= `ts` has been applied (a feed with clock
  // marks on every partition: the lowest of the partitions' latest marks). Once set, a request that
  // needs an event not yet delivered (request_ts - 1 > it) is a FeatureLagError however close its
  // time is to the clock: the newest event seen says nothing of a partition that lags.
  void set_complete_until(int64_t ts);

  StateStats stats() const;
  const Catalog& catalog() const { return catalog_; }
  int64_t clock_ms() const;
  // The latest request time the state can answer now: the clock, or past the complete time once set.
  int64_t answerable_ms() const;

 private:
  // Times of one kind of room event, sorted; those older than the horizon are only counted.
  struct Times {
    int64_t forgotten = 0;
    std::deque<int64_t> ts;
    void add(int64_t t, int64_t horizon);
    int64_t before(int64_t t) const;  // events with ts < t
    void forget(int64_t horizon);
  };
  struct RoomState {
    bool started = false;
    int64_t start_ts = 0, end_ts = INT64_MAX;
    int64_t author = 0;  // raw id
    int64_t item_row = 0, author_row = 0, category_row = 0, live_type_row = 0, embedding = -1;
    Times entries, exits, shown;
  };

  RoomState& room(int64_t live);
  int64_t horizon() const;
  void add_history(int64_t user, const HistoryEvent& event);
  int64_t watch_row(int64_t watch_ms) const;
  void check(const StateEvent& e) const;

  Catalog catalog_;
  StateOptions options_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<int64_t, std::deque<HistoryEvent>> users_;
  std::unordered_map<int64_t, RoomState> rooms_;
  int64_t clock_ = INT64_MIN;
  int64_t complete_until_ = INT64_MAX;  // INT64_MAX: not set (a feed without clock marks)
  int64_t events_ = 0, history_events_ = 0;
};

}  // namespace ranker::features
