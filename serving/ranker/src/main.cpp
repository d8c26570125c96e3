// ranker --model artifacts/<name> [--input requests.jsonl] [--bench requests.jsonl] [--features-catalog DIR]
//
// The JSON-lines front end of the engine (engine.hpp) that the gRPC service also uses: one JSON
// request per input line (stdin by default), one JSON line out per line in: the candidates ranked
// by score with per-task probabilities, or {"request_id", "error"}. A bad request never stops the
// loop; a line longer than --max-request-bytes is skipped without being held, so memory stays
// bounded. The model is reloaded in the background when a newer export lands (model.json changes).
// Bench mode: every request of the file ranked repeatedly; p50/p99 latency and candidates/s by
// request size and form (full-feature, ids-only).
// With --features-catalog, ids-only requests ({"ids": {...}}) are served from a feature state fed by
// the input's event lines ({"event": {...}}, answered only when refused: {"event_error", "line"}).
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "engine.hpp"
#include "features/json_events.hpp"
#include "features/state.hpp"
#include "json_io.hpp"
#include "options.hpp"

namespace {

struct Options {
  ranker::EngineOptions engine;
  ranker::FeatureOptions features;
  std::string input;
  std::string bench;
  size_t max_request_bytes = 8u << 20;
  int repeat = 20;
  int warmup = 3;
};

Options parse_args(int argc, char** argv) {
  Options o;
  CLI::App app("The ranker as a JSON-lines tool: one request per line in, one answer per line out.", "ranker");
  ranker::add_engine_options(app, o.engine);
  ranker::add_feature_options(app, o.features);
  app.add_option("--threads", o.engine.intra_op_threads, "the same as --intra-op-threads")->check(ranker::at_least(1));
  app.add_option("--input", o.input, "requests, one JSON object per line (default: stdin)");
  app.add_option("--max-request-bytes", o.max_request_bytes,
                 "longest request line accepted (default 8 MiB); longer lines are answered with an error "
                 "and read past without being held")
      ->check(ranker::at_least(1));
  auto* bench = app.add_option("--bench", o.bench, "benchmark mode over the requests in FILE");
  app.add_option("--repeat", o.repeat, "bench: timed passes over the file (default 20)")->needs(bench)->check(ranker::at_least(1));
  app.add_option("--warmup", o.warmup, "bench: untimed passes first (default 3)")->needs(bench)->check(ranker::at_least(0));
  ranker::parse_or_exit(app, argc, argv);
  if (o.engine.ops_dir.empty()) {
    std::cerr << "ranker: no --ops-dir and none built in\n";
    std::exit(2);
  }
  if (!o.bench.empty()) o.engine.reload_check_ms = 0;  // the file's requests are for the model as loaded
  return o;
}

// Reads one line (without its '\n') into `line`, keeping at most `limit` bytes of it: `too_long` says
// the line had more, and the rest was read past without being held. False at the end of the input.
bool read_line(std::istream& in, std::string& line, size_t limit, bool& too_long) {
  line.clear();
  too_long = false;
  char chunk[1 << 16];
  bool got = false;
  while (true) {
    in.get(chunk, sizeof chunk, '\n');  // up to the newline or a full chunk; fails when it reads nothing
    size_t n = static_cast<size_t>(in.gcount());
    if (n > 0) {
      got = true;
      if (line.size() + n <= limit) line.append(chunk, n); else too_long = true;
    }
    if (in.eof()) return got;
    in.clear();
    if (in.peek() == '\n') {
      in.ignore();
      return true;
    }
  }
}

// One line's answer: its ranking, or its error. Never throws.
std::string answer(ranker::Engine& engine, ranker::json::RequestReader& reader, std::string& line) {
  std::optional<std::string> request_id;
  try {
    ranker::RequestInput request = reader.read(line);
    request_id = request.request_id;
    return ranker::json::ranking_line(engine.rank(request));
  } catch (const ranker::RankFailure& e) {
    return ranker::json::error_line(request_id, e.what());
  } catch (const ranker::RequestError& e) {
    return ranker::json::error_line(request_id, e.what());
  } catch (const std::exception& e) {
    return ranker::json::error_line(request_id, std::string("internal error: ") + e.what());
  }
}

int serve(ranker::Engine& engine, ranker::features::FeatureState* state, std::istream& in, size_t max_request_bytes) {
  std::ios::sync_with_stdio(false);
  ranker::json::RequestReader reader;
  simdjson::dom::parser events;
  std::string line;
  bool too_long = false;
  int64_t number = 0;
  const std::string too_long_error =
      "request longer than " + std::to_string(max_request_bytes) + " bytes (--max-request-bytes)";
  while (read_line(in, line, max_request_bytes, too_long)) {
    ++number;
    if (state != nullptr && !too_long && ranker::features::is_event_line(line)) {
      const std::string error = ranker::features::apply_event_line(*state, events, line);
      if (!error.empty()) std::cout << ranker::json::event_error_line(error, number) << '\n' << std::flush;
      continue;
    }
    std::string out = too_long ? ranker::json::error_line(std::nullopt, too_long_error)
                      : line.find_first_not_of(" \t\r") == std::string::npos
                          ? ranker::json::error_line(std::nullopt, "empty request")
                          : answer(engine, reader, line);
    std::cout << out << '\n' << std::flush;
  }
  return 0;
}

double percentile(std::vector<double> values, double q) {  // nearest rank
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

int bench(ranker::Engine& engine, ranker::features::FeatureState* state, const Options& o) {
  std::ifstream in(o.bench);
  if (!in) {
    std::cerr << "ranker: cannot open " << o.bench << "\n";
    return 2;
  }
  ranker::json::RequestReader reader;
  simdjson::dom::parser events;
  // Keyed by (candidates, form): an ids-only request is -candidates, so both forms of a size sort apart.
  std::map<int64_t, std::vector<std::string>> by_size;
  std::string line;
  int invalid = 0;
  while (std::getline(in, line)) {
    if (state != nullptr && ranker::features::is_event_line(line)) {  // the state the ids-only requests see
      const std::string error = ranker::features::apply_event_line(*state, events, line);
      if (!error.empty()) std::cerr << "ranker: bench skips a refused event: " << error << "\n";
      continue;
    }
    try {
      const ranker::RequestInput request = reader.read(line);
      const int64_t size = request.ids ? -static_cast<int64_t>(request.ids->live_ids.size())
                                       : static_cast<int64_t>(request.candidates.size());
      by_size[size].push_back(line);
    } catch (const ranker::RequestError& e) {
      ++invalid;
      std::cerr << "ranker: bench skips an invalid request: " << e.what() << "\n";
    }
  }
  if (by_size.empty()) {
    std::cerr << "ranker: no valid request in " << o.bench << "\n";
    return 2;
  }
  const auto info = engine.info();
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::cout << "ranker bench: " << o.engine.model_dir << " (run " << info.run_id << ", " << info.format << "), "
            << o.engine.intra_op_threads << " intra-op threads, " << o.repeat << " repeats after " << o.warmup
            << " warm-up\n";
  std::cout << "form        candidates  requests     p50 ms     p99 ms  forward p50 ms  candidates/s\n";
  std::string results;
  int threads = 0;
  for (auto& [key, lines] : by_size) {
    const int64_t size = std::abs(key);
    const char* form = key < 0 ? "ids" : "full";
    std::vector<double> total, forward;
    for (int r = 0; r < o.warmup + o.repeat; ++r) {
      for (auto& l : lines) {  // the whole path: parse, validate, score, rank, write the answer
        const auto t0 = clock::now();
        ranker::Ranking ranking = engine.rank(reader.read(l));
        const std::string out = ranker::json::ranking_line(ranking);
        const auto t1 = clock::now();
        if (r >= o.warmup) {
          total.push_back(ms(t1 - t0));
          forward.push_back(ranking.forward_seconds * 1e3);
          threads = ranking.intra_op_threads;
        }
      }
    }
    double mean = 0;
    for (double t : total) mean += t;
    mean /= total.size();
    const double p50 = percentile(total, 0.5), p99 = percentile(total, 0.99), f50 = percentile(forward, 0.5);
    const double per_s = size / (mean / 1000.0);
    char row[160];
    std::snprintf(row, sizeof row, "%-10s  %10lld  %8zu  %9.3f  %9.3f  %14.3f  %12.0f\n", form,
                  static_cast<long long>(size), lines.size(), p50, p99, f50, per_s);
    std::cout << row;
    char item[200];
    std::snprintf(item, sizeof item,
                  "%s{\"form\":\"%s\",\"candidates\":%lld,\"samples\":%zu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"forward_p50_ms\":%.4f,"
                  "\"candidates_per_s\":%.1f}",
                  results.empty() ? "" : ",", form, static_cast<long long>(size), total.size(), p50, p99, f50, per_s);
    results += item;
  }
  std::cout << "BENCH_JSON {\"threads\":" << threads << ",\"invalid\":" << invalid
            << ",\"results\":[" << results << "]}" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ranker::keep_freed_memory();
  Options o = parse_args(argc, argv);
  try {
    ranker::Metrics metrics;  // the engine counts; this front end does not publish them
    std::unique_ptr<ranker::features::FeatureState> state;
    if (!o.features.catalog.empty())
      state = std::make_unique<ranker::features::FeatureState>(ranker::features::Catalog::load(o.features.catalog),
                                                               o.features.state);
    ranker::Engine engine(o.engine, metrics, state.get());  // one worker: lines are answered in order
    const auto info = engine.info();
    std::cerr << "ranker: serving " << o.engine.model_dir << " (run " << info.run_id << ", export " << info.export_id
              << " + push " << info.push << ", " << info.format << ", " << info.tasks << " tasks, " << info.operator_libraries << " operator libraries)" << std::endl;
    int status = 0;
    if (!o.bench.empty()) {
      status = bench(engine, state.get(), o);
    } else if (o.input.empty()) {
      status = serve(engine, state.get(), std::cin, o.max_request_bytes);
    } else {
      std::ifstream in(o.input);
      if (!in) {
        std::cerr << "ranker: cannot open " << o.input << "\n";
        return 2;
      }
      status = serve(engine, state.get(), in, o.max_request_bytes);
    }
    engine.stop();
    return status;
  } catch (const std::exception& e) {
    std::cerr << "ranker: " << e.what() << std::endl;
    return 1;
  }
}
