#include "features/state.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <mutex>

namespace ranker::features {

const char* const kGsuNames[kGsuCount] = {"short", "long", "aidhard", "livelong", "mixed"};
const char* const kRoomNames[kRoomCount] = {"room_viewers_now", "room_clicks_30s", "room_clicks_5min",
                                            "room_impressions_5min", "room_ctr_5min", "room_age_min"};

namespace {

constexpr int64_t kWindow30s = 30'000, kWindow5min = 300'000;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// data_pipelines/streams/features.py log2_bucket_row: 1 for x < 1, then floor(log2(x)) + 2, at most
// log_buckets. floor(log2(x)) is read off the binary exponent (frexp), exact and ~20x cheaper than a
// log2 per sequence element; numpy's rounded log2 could differ only for x within ~1e-15 below a power
// of two, and every x here is a count, or milliseconds over 1,000 or 60,000 (at least 5e-10 away).
int64_t log2_bucket_row(double x, int64_t log_buckets) {
  if (!(x >= 1.0)) return 1;
  int exponent = 0;
  std::frexp(x, &exponent);  // x = m 2^exponent, m in [0.5, 1): floor(log2(x)) = exponent - 1
  return std::min<int64_t>(exponent, log_buckets - 1) + 1;
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string text(int64_t v) { return std::to_string(v); }

// ---- the long and livelong GSUs' scores: exact integer dot products, 8 history events at a time ---
// Embeddings of the searched events, packed as [blocks of 8][dimension pairs][8] 32-bit words, each
// holding two int16 coordinates (2p low, 2p+1 high): one multiply-add instruction (vpmaddwd) scores a
// pair of dimensions of 8 events against a target. Sums are exact in int32 (catalog: |q| <= 4095, width
// <= 128), so the order of summation cannot change a score, nor the GSU's selection.
struct Packed {
  int64_t rows = 0, pairs = 0, blocks = 0;
  std::vector<uint32_t> words;
};

uint32_t word(int16_t lo, int16_t hi) {
  return static_cast<uint32_t>(static_cast<uint16_t>(lo)) | (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16);
}

void pack(const std::vector<const int16_t*>& rows, int64_t dim, Packed& out) {
  out.rows = static_cast<int64_t>(rows.size());
  out.pairs = (dim + 1) / 2;
  out.blocks = (out.rows + 7) / 8;
  out.words.assign(static_cast<size_t>(out.blocks * out.pairs * 8), 0u);
  for (int64_t r = 0; r < out.rows; ++r) {
    const int16_t* v = rows[static_cast<size_t>(r)];
    uint32_t* block = out.words.data() + (r / 8) * out.pairs * 8 + (r % 8);
    for (int64_t p = 0; p < out.pairs; ++p) {
      const int16_t hi = 2 * p + 1 < dim ? v[2 * p + 1] : 0;
      block[p * 8] = word(v[2 * p], hi);
    }
  }
}

std::vector<uint32_t> target_words(const int16_t* v, int64_t dim) {  // nullptr: the zero vector
  std::vector<uint32_t> out(static_cast<size_t>((dim + 1) / 2), 0u);
  if (v != nullptr)
    for (int64_t p = 0; p < static_cast<int64_t>(out.size()); ++p) out[p] = word(v[2 * p], 2 * p + 1 < dim ? v[2 * p + 1] : 0);
  return out;
}

int32_t madd(uint32_t a, uint32_t b) {
  return static_cast<int32_t>(static_cast<int16_t>(a & 0xFFFF)) * static_cast<int16_t>(b & 0xFFFF) +
         static_cast<int32_t>(static_cast<int16_t>(a >> 16)) * static_cast<int16_t>(b >> 16);
}

// The `length` best (score, position) pairs seen, positions offered in increasing order (0 = the
// most recent event), each kept as one int64 key that orders like the pair: score high, position low
// (a later position with an equal score is older, hence worse). A min-heap of keys: its top is the
// worst kept, and only a strictly higher score displaces it.
class Best {
 public:
  explicit Best(int64_t length) : length_(static_cast<size_t>(length)) { heap_.reserve(length_); }
  bool full() const { return heap_.size() == length_; }
  int32_t worst() const { return static_cast<int32_t>(heap_.front() >> 32); }  // when full
  void offer(int32_t score, int64_t position) {
    const int64_t key = (static_cast<int64_t>(score) << 32) | (0xFFFFFFFFll - position);
    if (!full()) {  // filling: ordered once, when full
      heap_.push_back(key);
      if (full()) std::make_heap(heap_.begin(), heap_.end(), std::greater<int64_t>());
    } else if (key > heap_.front()) {
      replace_worst(key);
    }
  }
  // Positions, best first.
  std::vector<int64_t> positions() {
    std::sort(heap_.begin(), heap_.end(), std::greater<int64_t>());
    std::vector<int64_t> out;
    out.reserve(heap_.size());
    for (int64_t key : heap_) out.push_back(0xFFFFFFFFll - (key & 0xFFFFFFFFll));
    return out;
  }

 private:
  // The worst kept replaced by `key`, sifted down once (a pop and a push would sift twice).
  void replace_worst(int64_t key) {
    const size_t n = heap_.size();
    size_t i = 0;
    while (true) {
      size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && heap_[child + 1] < heap_[child]) ++child;
      if (heap_[child] >= key) break;
      heap_[i] = heap_[child];
      i = child;
    }
    heap_[i] = key;
  }

  size_t length_;
  std::vector<int64_t> heap_;  // a min-heap of keys once full
};

// Blocks [b0, b1) of `p` scored against `target`, each event offered to `best`.
void best_portable(const Packed& p, int64_t b0, int64_t b1, const uint32_t* target, Best& best) {
  for (int64_t b = b0; b < b1; ++b) {
    const uint32_t* block = p.words.data() + b * p.pairs * 8;
    int32_t acc[8] = {};
    for (int64_t q = 0; q < p.pairs; ++q)
      for (int l = 0; l < 8; ++l) acc[l] += madd(block[q * 8 + l], target[q]);
    for (int l = 0; l < 8 && b * 8 + l < p.rows; ++l) best.offer(acc[l], b * 8 + l);
  }
}

#if defined(__x86_64__)
// Scores 8 events per step and skips the 8 at once when none beats the worst kept (most steps, once
// the best are found): the selection then costs one compare per 8 events. `Pairs` > 0: the width's
// dimension pairs known at compile time (the loop unrolled); 0: read from `p`.
template <int Pairs>
__attribute__((target("avx2"))) void best_avx2(const Packed& p, int64_t b0, int64_t b1, const uint32_t* target,
                                               Best& best) {
  const int64_t pairs = Pairs > 0 ? Pairs : p.pairs;
  alignas(32) int32_t acc_out[8];
  for (int64_t b = b0; b < b1; ++b) {
    const __m256i* block = reinterpret_cast<const __m256i*>(p.words.data() + b * pairs * 8);
    __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();  // two chains: no add waits on the last
    int64_t q = 0;
    for (; q + 1 < pairs; q += 2) {
      even = _mm256_add_epi32(even, _mm256_madd_epi16(_mm256_loadu_si256(block + q),
                                                      _mm256_set1_epi32(static_cast<int32_t>(target[q]))));
      odd = _mm256_add_epi32(odd, _mm256_madd_epi16(_mm256_loadu_si256(block + q + 1),
                                                    _mm256_set1_epi32(static_cast<int32_t>(target[q + 1]))));
    }
    if (q < pairs)
      even = _mm256_add_epi32(even, _mm256_madd_epi16(_mm256_loadu_si256(block + q),
                                                      _mm256_set1_epi32(static_cast<int32_t>(target[q]))));
    const __m256i acc = _mm256_add_epi32(even, odd);
    // Lanes that may enter: all while filling, else those above the worst kept.
    int lanes = 0xFF;
    if (best.full()) {
      lanes = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(acc, _mm256_set1_epi32(best.worst()))));
      if (lanes == 0) continue;
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc_out), acc);
    for (; lanes != 0; lanes &= lanes - 1) {  // in lane order: the more recent first
      const int l = __builtin_ctz(static_cast<unsigned>(lanes));
      if (b * 8 + l < p.rows) best.offer(acc_out[l], b * 8 + l);
    }
  }
}

bool has_avx2() {
  __builtin_cpu_init();  // needed before __builtin_cpu_supports in a static initializer
  return __builtin_cpu_supports("avx2");
}

const bool kHasAvx2 = has_avx2();
#endif

void best_of(const Packed& p, int64_t b0, int64_t b1, const uint32_t* target, Best& best) {
#if defined(__x86_64__)
  if (kHasAvx2) {
    if (p.pairs == 16) best_avx2<16>(p, b0, b1, target, best);  // width 31-32, the worlds' content embeddings
    else best_avx2<0>(p, b0, b1, target, best);
    return;
  }
#endif
  best_portable(p, b0, b1, target, best);
}

}  // namespace

// ------------------------------------------------------------------------------------------- Times

void FeatureState::Times::add(int64_t t, int64_t horizon) {
  if (t < horizon) {  // counted as before any time a request may still ask about
    ++forgotten;
    return;
  }
  ts.insert(std::upper_bound(ts.begin(), ts.end(), t), t);  // at the end, unless out of order
}

int64_t FeatureState::Times::before(int64_t t) const {
  return forgotten + (std::lower_bound(ts.begin(), ts.end(), t) - ts.begin());
}

void FeatureState::Times::forget(int64_t horizon) {
  while (!ts.empty() && ts.front() < horizon) {
    ts.pop_front();
    ++forgotten;
  }
}

// ------------------------------------------------------------------------------------------- state

FeatureState::FeatureState(Catalog catalog, StateOptions options)
    : catalog_(std::move(catalog)), options_(options) {}

int64_t FeatureState::horizon() const {
  // The oldest time a room counter may still be asked about: the oldest request accepted, minus the
  // longest window.
  return clock_ == INT64_MIN ? INT64_MIN : clock_ - options_.tolerance_ms - kWindow5min - 1;
}

FeatureState::RoomState& FeatureState::room(int64_t live) {
  auto [it, fresh] = rooms_.try_emplace(live);
  if (fresh) {
    it->second.item_row = catalog_.live_row(live);
    const int64_t pos = it->second.item_row - static_cast<int64_t>(catalog_.photo_ids.size()) - 1;
    it->second.embedding = it->second.item_row == 0 ? -1 : pos;
  }
  return it->second;
}

void FeatureState::check(const StateEvent& e) const {
  auto need = [](bool ok, const std::string& why) {
    if (!ok) throw EventError(why);
  };
  need(options_.max_event_lead_ms == 0 || clock_ == INT64_MIN || e.ts <= clock_ + options_.max_event_lead_ms,
       "ts " + text(e.ts) + " is " + text(e.ts - clock_) + " ms ahead of the feature state's clock " + text(clock_) +
           " (at most " + text(options_.max_event_lead_ms) + ")");
  const bool interaction = e.kind == EventKind::play || (e.kind == EventKind::exit && e.clicked);
  if (interaction) {
    need(e.watch_ms >= 0 && e.watch_ms <= INT32_MAX, "watch_ms " + text(e.watch_ms) + " is not in [0, 2^31)");
    need(e.start_ts <= e.ts && e.ts - e.start_ts <= INT32_MAX,
         "start_ts " + text(e.start_ts) + " is not within 2^31 ms before ts " + text(e.ts));
  }
  if (e.kind == EventKind::room_end) {
    auto it = rooms_.find(e.live);
    need(it == rooms_.end() || !it->second.started || it->second.start_ts <= e.ts,
         "room_end at " + text(e.ts) + " before the room's start " + (it == rooms_.end() ? "" : text(it->second.start_ts)));
  }
}

int64_t FeatureState::watch_row(int64_t watch_ms) const {
  return log2_bucket_row(static_cast<double>(watch_ms) / 1000.0, catalog_.log_buckets);
}

void FeatureState::add_history(int64_t user, const HistoryEvent& ev) {
  auto& h = users_[user];
  // (ts, start, domain, item, author, watch): make streams' order of a user's interactions
  // (history_store.py from_events), item and author rows following their raw ids (the watch time
  // by its bucket, and a duration beyond 18.6 hours saturated: ties that differ only there may order
  // differently).
  auto key = [](const HistoryEvent& a) {
    const int64_t ts = a.ts();
    return std::make_tuple(ts, ts - a.duration_ms(), a.live(), a.item_row(), a.author, a.watch_row());
  };
  h.insert(std::upper_bound(h.begin(), h.end(), ev, [&](const HistoryEvent& a, const HistoryEvent& b) {
             return key(a) < key(b);
           }),
           ev);
  ++history_events_;
  // A request is at least clock - tolerance: every event before that time is before any request the
  // state still answers, and only the latest max_events of them can be asked for. Events after it
  // are all kept (published early, they must not push out what an earlier request needs).
  const int64_t oldest_request = clock_ - options_.tolerance_ms;
  int64_t settled = std::partition_point(h.begin(), h.end(), [&](const HistoryEvent& x) { return x.ts() < oldest_request; }) -
                    h.begin();
  for (; settled > catalog_.max_events; --settled) {
    h.pop_front();
    --history_events_;
  }
}

void FeatureState::apply(const StateEvent& e) {
  std::unique_lock lock(mutex_);
  check(e);
  clock_ = std::max(clock_, e.ts);
  const int64_t forget_before = horizon();
  ++events_;
  switch (e.kind) {
    case EventKind::clock:
      return;
    case EventKind::play:
      add_history(e.user, HistoryEvent::of(e.ts, e.ts - e.start_ts, catalog_.photo_row(e.photo), false,
                                           catalog_.author_row(e.author), watch_row(e.watch_ms),
                                           e.watch_ms >= catalog_.short_long_view_ms));
      return;
    case EventKind::impression: {
      auto& r = room(e.live);
      r.shown.add(e.ts, forget_before);
      r.shown.forget(forget_before);
      return;
    }
    case EventKind::click: {
      auto& r = room(e.live);
      r.entries.add(e.ts, forget_before);
      r.entries.forget(forget_before);
      return;
    }
    case EventKind::exit: {
      if (!e.clicked) return;  // an impression never entered: no stay, nothing counted
      auto& r = room(e.live);
      r.exits.add(e.ts, forget_before);
      r.exits.forget(forget_before);
      add_history(e.user, HistoryEvent::of(e.ts, e.ts - e.start_ts, r.item_row, true, catalog_.author_row(e.author),
                                           watch_row(e.watch_ms), e.watch_ms >= catalog_.live_long_view_ms));
      return;
    }
    case EventKind::room_start: {
      auto& r = room(e.live);
      r.started = true;
      r.start_ts = e.ts;
      r.author = e.author;
      r.author_row = catalog_.author_row(e.author);
      r.category_row = catalog_.category_row(e.category);
      r.live_type_row = catalog_.live_type_row(e.live_type);
      return;
    }
    case EventKind::room_end:
      room(e.live).end_ts = e.ts;
      return;
  }
}

int64_t FeatureState::clock_ms() const {
  std::shared_lock lock(mutex_);
  return clock_;
}

void FeatureState::set_complete_until(int64_t ts) {
  std::unique_lock lock(mutex_);
  complete_until_ = complete_until_ == INT64_MAX ? ts : std::max(complete_until_, ts);
}

int64_t FeatureState::answerable_ms() const {
  std::shared_lock lock(mutex_);
  // Before every partition has a mark there is no time it can answer yet: the clock, refused as lagging.
  if (complete_until_ == INT64_MAX || complete_until_ == INT64_MIN) return clock_;
  return std::min(clock_, complete_until_ + 1);
}

StateStats FeatureState::stats() const {
  std::shared_lock lock(mutex_);
  return StateStats{events_, static_cast<int64_t>(users_.size()), static_cast<int64_t>(rooms_.size()),
                    history_events_, clock_};
}

// ------------------------------------------------------------------------------------------- assembly

Assembled FeatureState::assemble(int64_t user, int64_t t0, const std::vector<int64_t>& live_ids) const {
  const auto started = Clock::now();
  const Catalog& c = catalog_;
  if (live_ids.empty()) throw FeatureError("live_ids: at least one candidate is needed");
  if (static_cast<int64_t>(live_ids.size()) > options_.max_candidates)
    throw FeatureError("live_ids: " + text(static_cast<int64_t>(live_ids.size())) + " candidates, at most " +
                       text(options_.max_candidates));
  std::shared_lock lock(mutex_);
  if (clock_ == INT64_MIN) throw FeatureLagError("request_ts: the feature state holds no events yet");
  if (t0 > clock_ + options_.tolerance_ms)
    throw FeatureLagError("request_ts " + text(t0) + " is " + text(t0 - clock_) +
                          " ms ahead of the feature state's clock " + text(clock_) + " (tolerance " +
                          text(options_.tolerance_ms) + " ms): the state has not caught up");
  if (complete_until_ != INT64_MAX && t0 - 1 > complete_until_)
    throw FeatureLagError("request_ts " + text(t0) + " needs every event before it, and every partition is delivered "
                          "only up to " + text(complete_until_) + " (its lowest clock mark): the state has not "
                          "caught up");
  if (t0 < clock_ - options_.tolerance_ms)
    throw FeatureError("request_ts " + text(t0) + " is " + text(clock_ - t0) + " ms behind the feature state's clock " +
                       text(clock_) + " (tolerance " + text(options_.tolerance_ms) + " ms): what it needs is forgotten");
  const int64_t n = static_cast<int64_t>(live_ids.size());
  std::vector<const RoomState*> rooms(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    auto it = rooms_.find(live_ids[k]);
    const std::string where = "live_ids[" + text(k) + "]: live " + text(live_ids[k]);
    if (it == rooms_.end() || !it->second.started || it->second.start_ts >= t0)
      throw FeatureError(where + " has not started before request_ts " + text(t0) + " (no room_start event)");
    if (it->second.end_ts <= t0)
      throw FeatureError(where + " ended at " + text(it->second.end_ts) + ", before request_ts " + text(t0));
    rooms[k] = &it->second;
  }

  Assembled out;
  out.request_ts = t0;
  out.state_clock_ms = clock_;
  out.candidates.resize(static_cast<size_t>(n));
  // ---- each candidate's ids and room state
  for (int64_t k = 0; k < n; ++k) {
    const RoomState& r = *rooms[k];
    CandidateFeatures& f = out.candidates[k];
    f.live_item = r.item_row;
    f.author_id = r.author_row;
    f.category = r.category_row;
    f.live_type = r.live_type_row;
    const double clicks_5min = static_cast<double>(r.entries.before(t0) - r.entries.before(t0 - kWindow5min));
    const double shown_5min = static_cast<double>(r.shown.before(t0) - r.shown.before(t0 - kWindow5min));
    // Never below 0: an exit whose click the feed has not delivered yet (another partition) must not
    // make the count negative, which log1p would turn into a NaN.
    f.room[kViewersNow] = std::log1p(static_cast<double>(std::max<int64_t>(r.entries.before(t0) - r.exits.before(t0), 0)));
    f.room[kClicks30s] = std::log1p(static_cast<double>(r.entries.before(t0) - r.entries.before(t0 - kWindow30s)));
    f.room[kClicks5min] = std::log1p(clicks_5min);
    f.room[kImpressions5min] = std::log1p(shown_5min);
    f.room[kCtr5min] = clicks_5min / std::max(shown_5min, 1.0);
    f.room[kAgeMin] = std::log1p(static_cast<double>(std::max<int64_t>(t0 - r.start_ts, 0)) / 60'000.0);
  }

  // What the GSUs need of the rooms and of the user's history is copied out, and the lock let go
  // before the searches: they take milliseconds, and with readers overlapping all the time the
  // feed's writer (glibc's reader-writer lock prefers readers) would wait without end.
  std::vector<std::pair<int64_t, int64_t>> targets;  // per candidate: (author row, embedding row or -1)
  targets.reserve(static_cast<size_t>(n));
  for (const RoomState* r : rooms) targets.emplace_back(r->author_row, r->embedding);
  std::vector<HistoryEvent> h;
  if (auto found = users_.find(user); found != users_.end()) {
    out.known_user = true;
    const auto& all = found->second;
    // The user's most recent max_events interactions known strictly before t0.
    const int64_t end = std::partition_point(all.begin(), all.end(), [t0](const HistoryEvent& x) { return x.ts() < t0; }) -
                        all.begin();
    h.assign(all.begin() + std::max<int64_t>(0, end - c.max_events), all.begin() + end);
  }
  lock.unlock();
  const int64_t b = 0, e = static_cast<int64_t>(h.size());
  out.history_events = e - b;
  const int64_t L = c.gsu_length;
  auto element = [&](const HistoryEvent& x) {
    return Element{x.item_row(), x.author, log2_bucket_row(static_cast<double>(t0 - x.ts()) / 60'000.0, c.log_buckets),
                   x.watch_row(), x.live() ? c.domain_live : c.domain_short};
  };

  // ---- the user's features
  UserFeatures& u = out.user;
  int64_t lives = 0;
  for (int64_t i = b; i < e; ++i) lives += h[i].live();
  u.user_id = c.user_row(user);
  u.hour = ((floor_div(t0, 3'600'000) + c.tz_offset_hours) % 24 + 24) % 24 + 1;
  u.user_history_bucket = log2_bucket_row(static_cast<double>(e - b), c.log_buckets);
  u.user_live_bucket = log2_bucket_row(static_cast<double>(lives), c.log_buckets);
  u.user_history_len = std::log1p(static_cast<double>(e - b));
  u.user_live_history_len = std::log1p(static_cast<double>(lives));
  auto t = Clock::now();
  for (int64_t i = e - 1; i >= b && static_cast<int64_t>(u.short_seq.size()) < L; --i)
    if (!h[i].live()) u.short_seq.push_back(element(h[i]));
  out.gsu_seconds[kShort] = seconds_since(t);
  t = Clock::now();
  for (int64_t i = e - 1; i >= b && static_cast<int64_t>(u.mixed_seq.size()) < L; --i)
    if (h[i].long_view()) u.mixed_seq.push_back(element(h[i]));
  out.gsu_seconds[kMixed] = seconds_since(t);

  // ---- aidhard: the latest L short videos by each candidate's author
  t = Clock::now();
  std::unordered_map<int64_t, std::vector<int64_t>> by_author;  // author row -> history positions
  for (const auto& [author_row, embedding] : targets)
    if (author_row != 0) by_author.try_emplace(author_row);
  size_t full = 0;
  for (int64_t i = e - 1; i >= b && full < by_author.size(); --i) {
    if (h[i].live()) continue;
    auto it = by_author.find(h[i].author);
    if (it == by_author.end() || static_cast<int64_t>(it->second.size()) == L) continue;
    it->second.push_back(i);
    full += static_cast<int64_t>(it->second.size()) == L;
  }
  for (int64_t k = 0; k < n; ++k) {
    auto it = by_author.find(targets[k].first);
    if (it == by_author.end()) continue;
    out.candidates[k].aidhard_seq.reserve(it->second.size());
    for (int64_t i : it->second) out.candidates[k].aidhard_seq.push_back(element(h[i]));
  }
  out.gsu_seconds[kAidhard] = seconds_since(t);

  // ---- long and livelong: the top L of the user's short videos / lives by content similarity
  auto search = [&](bool live_domain, Sequence CandidateFeatures::*seq, Gsu gsu) {
    const auto begun = Clock::now();
    std::vector<int64_t> position;  // newest first, events with an embedding
    std::vector<const int16_t*> rows;
    const int64_t photos = static_cast<int64_t>(c.photo_ids.size());
    for (int64_t i = e - 1; i >= b; --i) {
      if (h[i].live() != live_domain || h[i].item_row() == 0) continue;
      const int64_t emb = live_domain ? h[i].item_row() - photos - 1 : h[i].item_row() - 1;
      position.push_back(i);
      rows.push_back((live_domain ? c.live_embedding.data() : c.photo_embedding.data()) + emb * c.dim);
    }
    Packed packed;
    pack(rows, c.dim, packed);
    std::vector<uint32_t> words;  // [n, pairs]: each candidate's target, packed as the events are
    words.reserve(static_cast<size_t>(n * packed.pairs));
    std::vector<Best> best(static_cast<size_t>(n), Best(L));
    for (const auto& [author_row, embedding] : targets) {
      const auto w = target_words(embedding < 0 ? nullptr : c.live_embedding.data() + embedding * c.dim, c.dim);
      words.insert(words.end(), w.begin(), w.end());
    }
    // A chunk of ~16 KB of the packed events, scored for every candidate while it is in the L1 cache:
    // streamed once per request rather than once per candidate (10,000 events are 640 KB at width 32).
    const int64_t chunk = std::max<int64_t>(1, 16'384 / (packed.pairs * 32));
    for (int64_t b0 = 0; b0 < packed.blocks; b0 += chunk) {
      const int64_t b1 = std::min(packed.blocks, b0 + chunk);
      for (int64_t k = 0; k < n; ++k) {
        best_of(packed, b0, b1, words.data() + k * packed.pairs, best[k]);
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      Sequence& sequence = out.candidates[k].*seq;
      sequence.reserve(static_cast<size_t>(L));
      for (int64_t j : best[k].positions()) sequence.push_back(element(h[position[j]]));
    }
    out.gsu_seconds[gsu] = seconds_since(begun);
  };
  search(false, &CandidateFeatures::long_seq, kLong);
  search(true, &CandidateFeatures::livelong_seq, kLivelong);
  out.total_seconds = seconds_since(started);
  return out;
}

}  // namespace ranker::features
