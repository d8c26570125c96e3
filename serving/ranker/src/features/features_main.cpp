// ranker_features --catalog DIR [--input FILE] [--bench FILE] [--memory-users N] [--events-broker HOST:PORT]
//
// The feature stage as a JSON-lines tool, without a model: each input line is an event or a query,
//   {"event": {"type": "play", "ts": 1, "user": 7, ...}}   the fields of a broker entry (event_fields.hpp)
//   {"query": {"request_id": "r1", "user_id": 7, "request_ts": 2, "live_ids": [3, 4]}}
// and each query is answered by one line: the features the ranker would score, by contract name, as
// a full-feature request's user part and candidates (docs/serving.md), or {"request_id", "error"}.
// An event the state refuses is answered by {"event_error": reason, "line": n}. Tests hold this
// against make streams' features (tests/test_feature_stage.py); --bench times the assembly per GSU.
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "features/consumer.hpp"
#include "features/features_json.hpp"
#include "features/json_events.hpp"
#include "features/state.hpp"
#include "options.hpp"

namespace {

using namespace ranker::features;
using simdjson::dom::element;

struct Query {
  std::string request_id;
  int64_t user = 0, request_ts = 0;
  std::vector<int64_t> live_ids;
};

Query query_of(element q) {
  Query out;
  auto integer = [&](const char* name) {
    int64_t v = 0;
    element e;
    if (q.at_key(name).get(e)) throw FeatureError(std::string("missing field '") + name + "'");
    if (e.get_int64().get(v)) throw FeatureError(std::string(name) + " must be an integer");
    return v;
  };
  std::string_view id;
  element e;
  if (!q.at_key("request_id").get(e) && !e.get_string().get(id)) out.request_id = std::string(id);
  out.user = integer("user_id");
  out.request_ts = integer("request_ts");
  simdjson::dom::array ids;
  if (q.at_key("live_ids").get(e) || e.get_array().get(ids)) throw FeatureError("live_ids must be an array");
  for (element v : ids) {
    int64_t i = 0;
    if (v.get_int64().get(i)) throw FeatureError("live_ids must hold integers");
    out.live_ids.push_back(i);
  }
  return out;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

int64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}

int run(FeatureState& state, std::istream& in, bool bench, int repeat) {
  simdjson::dom::parser parser;
  std::string line;
  int64_t number = 0;
  std::vector<double> total, gsu[kGsuCount];
  int64_t candidates = 0, history = 0, queries = 0;
  const int64_t rss_before = rss_bytes();
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    element root;
    if (parser.parse(line).get(root) || !root.is_object()) {
      std::cout << "{\"event_error\":\"bad JSON\",\"line\":" << number << "}\n";
      continue;
    }
    element body;
    if (!root.at_key("event").get(body)) {
      const std::string error = apply_json_event(state, body);
      if (!error.empty()) std::cout << "{\"event_error\":" << json_string(error) << ",\"line\":" << number << "}\n";
      continue;
    }
    if (root.at_key("query").get(body)) {
      std::cout << "{\"event_error\":\"neither an event nor a query\",\"line\":" << number << "}\n";
      continue;
    }
    Query q;
    try {
      q = query_of(body);
      if (!bench) {
        std::cout << features_json(q.request_id, state.assemble(q.user, q.request_ts, q.live_ids)) << "\n";
        continue;
      }
      for (int r = 0; r < repeat; ++r) {
        const Assembled a = state.assemble(q.user, q.request_ts, q.live_ids);
        total.push_back(a.total_seconds * 1e3);
        for (int g = 0; g < kGsuCount; ++g) gsu[g].push_back(a.gsu_seconds[g] * 1e3);
        candidates = static_cast<int64_t>(q.live_ids.size());
        history = a.history_events;
      }
      ++queries;
    } catch (const FeatureError& e) {
      std::cout << "{\"request_id\":" << json_string(q.request_id) << ",\"error\":" << json_string(e.what()) << "}\n";
    }
  }
  if (bench) {
    const StateStats s = state.stats();
    const int64_t rss = rss_bytes();
    std::printf("feature assembly: %lld queries x %d, %lld candidates, %lld history events searched\n",
                static_cast<long long>(queries), repeat, static_cast<long long>(candidates), static_cast<long long>(history));
    std::printf("  total  p50 %.3f ms  p99 %.3f ms\n", percentile(total, 0.5), percentile(total, 0.99));
    std::string json = "{\"queries\":" + std::to_string(queries) + ",\"candidates\":" + std::to_string(candidates) +
                       ",\"history_events\":" + std::to_string(history) + ",\"p50_ms\":" +
                       std::to_string(percentile(total, 0.5)) + ",\"p99_ms\":" + std::to_string(percentile(total, 0.99)) +
                       ",\"gsu\":{";
    for (int g = 0; g < kGsuCount; ++g) {
      std::printf("  %-8s p50 %.3f ms  p99 %.3f ms\n", kGsuNames[g], percentile(gsu[g], 0.5), percentile(gsu[g], 0.99));
      json += std::string(g ? "," : "") + "\"" + kGsuNames[g] + "\":{\"p50_ms\":" + std::to_string(percentile(gsu[g], 0.5)) +
              ",\"p99_ms\":" + std::to_string(percentile(gsu[g], 0.99)) + "}";
    }
    json += "},\"state\":{\"events\":" + std::to_string(s.events) + ",\"users\":" + std::to_string(s.users) +
            ",\"rooms\":" + std::to_string(s.rooms) + ",\"history_events\":" + std::to_string(s.history_events) +
            ",\"rss_growth_bytes\":" + std::to_string(rss - rss_before) + ",\"rss_bytes\":" + std::to_string(rss) + "}}";
    std::printf("  state: %lld history events of %lld users, RSS %.1f MiB (+%.1f MiB while loading)\n",
                static_cast<long long>(s.history_events), static_cast<long long>(s.users), rss / 1048576.0,
                (rss - rss_before) / 1048576.0);
    std::printf("BENCH_JSON %s\n", json.c_str());
  }
  return 0;
}

// The state's memory: `users` synthetic users with `events` short-video plays each, applied to an
// empty state; the resident memory it grew by, per history event and per 100,000 users.
int memory(FeatureState& state, int64_t users, int64_t events) {
  const Catalog& c = state.catalog();
  if (c.photo_ids.empty() || c.author_ids.empty()) {
    std::cerr << "ranker_features: the catalog has no photos to play\n";
    return 2;
  }
  const int64_t before = rss_bytes();
  const auto start = std::chrono::steady_clock::now();
  StateEvent e;
  e.kind = EventKind::play;
  for (int64_t k = 0; k < events; ++k)
    for (int64_t u = 0; u < users; ++u) {  // time-ordered, as a feed delivers them
      e.user = u;
      e.ts = 1'000'000 + k * 1000;
      e.start_ts = e.ts - 500;
      e.watch_ms = 500;
      e.photo = c.photo_ids[static_cast<size_t>((u * 7919 + k) % static_cast<int64_t>(c.photo_ids.size()))];
      e.author = c.author_ids[static_cast<size_t>((u + k) % static_cast<int64_t>(c.author_ids.size()))];
      state.apply(e);
    }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t grown = rss_bytes() - before;
  const StateStats s = state.stats();
  const double per_event = static_cast<double>(grown) / std::max<int64_t>(s.history_events, 1);
  const double per_100k = static_cast<double>(grown) / std::max<int64_t>(s.users, 1) * 100'000;
  std::printf("feature state memory: %lld users x %lld plays = %lld history events in %.2f s (%.0f events/s); RSS +%.1f MiB: "
              "%.1f bytes per history event (%zu in the event itself), %.1f MiB per 100,000 users\n",
              static_cast<long long>(s.users), static_cast<long long>(events), static_cast<long long>(s.history_events),
              seconds, s.history_events / seconds, grown / 1048576.0, per_event, sizeof(HistoryEvent), per_100k / 1048576.0);
  std::printf("BENCH_JSON {\"users\":%lld,\"events_per_user\":%lld,\"history_events\":%lld,\"rss_growth_bytes\":%lld,"
              "\"bytes_per_history_event\":%.2f,\"event_bytes\":%zu,\"rss_mib_per_100k_users\":%.2f,\"apply_events_per_s\":%.0f}\n",
              static_cast<long long>(s.users), static_cast<long long>(events), static_cast<long long>(s.history_events),
              static_cast<long long>(grown), per_event, sizeof(HistoryEvent), per_100k / 1048576.0, s.history_events / seconds);
  return 0;
}

// The state rebuilt from a broker's events streams, as a starting ranker_server rebuilds it.
int rebuild(FeatureState& state, const std::string& broker, int partitions) {
  ConsumerOptions options;
  const size_t colon = broker.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "ranker_features: --events-broker must be HOST:PORT\n";
    return 2;
  }
  options.host = broker.substr(0, colon);
  options.port = std::stoi(broker.substr(colon + 1));
  options.partitions = partitions;
  const int64_t before = rss_bytes();
  EventConsumer feed(state, options);
  const CatchUpReport r = feed.catch_up();
  const StateStats s = state.stats();
  const double per_million = r.entries > 0 ? r.seconds * 1e6 / static_cast<double>(r.entries) : 0.0;
  std::printf("feature state rebuilt from %lld events (%lld quarantined) in %.2f s: %.2f s per million events; "
              "%lld users, %lld history events, %lld rooms, RSS +%.1f MiB\n",
              static_cast<long long>(r.entries), static_cast<long long>(r.quarantined), r.seconds, per_million,
              static_cast<long long>(s.users), static_cast<long long>(s.history_events), static_cast<long long>(s.rooms),
              (rss_bytes() - before) / 1048576.0);
  std::printf("BENCH_JSON {\"events\":%lld,\"quarantined\":%lld,\"seconds\":%.3f,\"seconds_per_million\":%.3f,"
              "\"users\":%lld,\"history_events\":%lld,\"rss_growth_bytes\":%lld}\n",
              static_cast<long long>(r.entries), static_cast<long long>(r.quarantined), r.seconds, per_million,
              static_cast<long long>(s.users), static_cast<long long>(s.history_events),
              static_cast<long long>(rss_bytes() - before));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string catalog_dir, input, bench;
  StateOptions options;
  int repeat = 20;
  int64_t memory_users = 0, memory_events = 100;
  std::string events_broker;
  int event_partitions = 1;
  CLI::App app("The ranker's feature stage as a JSON-lines tool: events and queries in, features out.", "ranker_features");
  app.add_option("--catalog", catalog_dir, "the feature catalog directory (make streams writes <data>/streams/feature_catalog)")->required();
  app.add_option("--input", input, "event and query lines (default: stdin)");
  app.add_option("--tolerance-ms", options.tolerance_ms, "refuse a request further than this from the state's clock")
      ->check(ranker::at_least(0));
  app.add_option("--max-candidates", options.max_candidates, "most candidates per request")->check(ranker::at_least(1));
  app.add_option("--max-event-lead-ms", options.max_event_lead_ms,
                 "quarantine an event further than this ahead of the state's clock (default 0: no limit)")
      ->check(ranker::at_least(0));
  app.add_option("--bench", bench, "time each query's assembly (per GSU) instead of answering it");
  app.add_option("--repeat", repeat, "bench: assemblies per query")->check(ranker::at_least(1));
  app.add_option("--memory-users", memory_users,
                 "measure the state's memory instead: this many synthetic users' plays applied to an empty state")
      ->check(ranker::at_least(1));
  app.add_option("--memory-events", memory_events, "plays per synthetic user (default 100)")->check(ranker::at_least(1));
  app.add_option("--events-broker", events_broker,
                 "rebuild the state from this Redis's events.<p> streams instead (HOST:PORT), as ranker_server does "
                 "before SERVING, and report the time");
  app.add_option("--event-partitions", event_partitions, "how many events.<p> streams (default 1)")
      ->check(ranker::at_least(1));
  ranker::parse_or_exit(app, argc, argv);
  try {
    FeatureState state(Catalog::load(catalog_dir), options);
    if (!events_broker.empty()) return rebuild(state, events_broker, event_partitions);
    if (memory_users > 0) {
      options.tolerance_ms = 0;  // every event settles at once: the history keeps max_events, as in a steady state
      FeatureState empty(Catalog::load(catalog_dir), options);
      return memory(empty, memory_users, memory_events);
    }
    std::ios::sync_with_stdio(false);
    const std::string& path = bench.empty() ? input : bench;
    if (path.empty()) return run(state, std::cin, false, 1);
    std::ifstream in(path);
    if (!in) {
      std::cerr << "ranker_features: cannot open " << path << "\n";
      return 2;
    }
    return run(state, in, !bench.empty(), repeat);
  } catch (const std::exception& e) {
    std::cerr << "ranker_features: " << e.what() << std::endl;
    return 1;
  }
}
