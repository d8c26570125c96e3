// ranker --model artifacts/<name> [--input requests.jsonl] [--bench requests.jsonl]
//
// Serving mode: one JSON request per input line (stdin by default), one JSON line out per line in:
// the candidates ranked by score with per-task probabilities, or {"request_id", "error"}. A bad
// request never stops the loop; a line longer than --max-request-bytes is skipped without being
// held, so memory stays bounded. The model is reloaded in the background when a newer export lands (model.json changes).
// Bench mode: every request of the file scored repeatedly; p50/p99 latency and candidates/s by
// request size.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "engine.hpp"
#include "model_store.hpp"
#include "ranking.hpp"

#ifndef RANKER_DEFAULT_OPS_DIR
#define RANKER_DEFAULT_OPS_DIR ""
#endif

namespace {

struct Options {
  std::string model_dir;
  std::string input;
  std::string ops_dir;
  std::string bench;
  std::string format = "auto";
  int threads = 1;
  size_t max_request_bytes = 8u << 20;
  int repeat = 20;
  int warmup = 3;
  int reload_check_ms = 1000;
  bool verbose = false;
};

const char* kUsage =
    "usage: ranker --model DIR [--format F] [--input FILE] [--ops-dir DIR] [--threads N] [--max-request-bytes N]\n"
    "              [--reload-check-ms MS] [--bench FILE [--repeat N] [--warmup N]] [--verbose]\n"
    "  --model DIR          an export: DIR/model.json and the model file(s) it lists (make export)\n"
    "  --format F           auto (the AOTInductor package if the export has one) | torchscript | aoti\n"
    "  --input FILE         requests, one JSON object per line (default: stdin)\n"
    "  --ops-dir DIR        fbgemm operator libraries (default: $RANKER_OPS_DIR or the build's fbgemm_gpu)\n"
    "  --threads N          intra-op threads for the one serving thread (default 1; 0 = one per core)\n"
    "  --max-request-bytes N  longest request line accepted (default 8 MiB); parsing takes up to ~60x\n"
    "                       a line's size in memory, so this bounds the memory a request can take\n"
    "  --reload-check-ms MS how often to look for a newer export (default 1000; 0 = never)\n"
    "  --bench FILE         benchmark mode over the requests in FILE\n";

Options parse_args(int argc, char** argv) {
  Options o;
  const char* env_ops = std::getenv("RANKER_OPS_DIR");
  o.ops_dir = env_ops ? env_ops : RANKER_DEFAULT_OPS_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) { std::cerr << "ranker: " << a << " needs a value\n" << kUsage; std::exit(2); }
      return argv[++i];
    };
    auto number = [&]() -> int {
      std::string v = value();
      try { return std::stoi(v); } catch (...) { std::cerr << "ranker: " << a << " needs a number, got " << v << "\n"; std::exit(2); }
    };
    if (a == "--model") o.model_dir = value();
    else if (a == "--input") o.input = value();
    else if (a == "--format") o.format = value();
    else if (a == "--ops-dir") o.ops_dir = value();
    else if (a == "--bench") o.bench = value();
    else if (a == "--threads") o.threads = number();
    else if (a == "--max-request-bytes") {
      int n = number();
      if (n < 1) { std::cerr << "ranker: --max-request-bytes must be positive\n"; std::exit(2); }
      o.max_request_bytes = static_cast<size_t>(n);
    }
    else if (a == "--repeat") o.repeat = number();
    else if (a == "--warmup") o.warmup = number();
    else if (a == "--reload-check-ms") o.reload_check_ms = number();
    else if (a == "--verbose") o.verbose = true;
    else if (a == "--help" || a == "-h") { std::cout << kUsage; std::exit(0); }
    else { std::cerr << "ranker: unknown argument " << a << "\n" << kUsage; std::exit(2); }
  }
  if (o.model_dir.empty()) { std::cerr << "ranker: --model is required\n" << kUsage; std::exit(2); }
  if (o.ops_dir.empty()) { std::cerr << "ranker: no --ops-dir and none built in\n"; std::exit(2); }
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

int serve(ranker::ModelStore& store, std::istream& in, size_t max_request_bytes) {
  std::ios::sync_with_stdio(false);
  std::string line;
  bool too_long = false;
  const std::string too_long_error =
      "request longer than " + std::to_string(max_request_bytes) + " bytes (--max-request-bytes)";
  while (read_line(in, line, max_request_bytes, too_long)) {
    auto model = store.current();  // one model for the whole request, even if a reload lands meanwhile
    std::string out = too_long ? ranker::error_line(std::nullopt, too_long_error)
                      : line.find_first_not_of(" \t\r") == std::string::npos
                          ? ranker::error_line(std::nullopt, "empty request")
                          : ranker::handle_line(line, *model);
    std::cout << out << '\n' << std::flush;
  }
  return 0;
}

double percentile(std::vector<double> values, double q) {  // nearest rank
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

int bench(ranker::ModelStore& store, const Options& o) {
  std::ifstream in(o.bench);
  if (!in) { std::cerr << "ranker: cannot open " << o.bench << "\n"; return 2; }
  auto model = store.current();
  std::map<int64_t, std::vector<std::string>> by_size;
  std::string line;
  int invalid = 0;
  while (std::getline(in, line)) {
    std::optional<std::string> id;
    try {
      auto request = ranker::parse_request(line, model->meta, id);
      by_size[request.candidates].push_back(line);
    } catch (const ranker::RequestError& e) {
      ++invalid;
      std::cerr << "ranker: bench skips an invalid request: " << e.what() << "\n";
    }
  }
  if (by_size.empty()) { std::cerr << "ranker: no valid request in " << o.bench << "\n"; return 2; }
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::cout << "ranker bench: " << o.model_dir << " (run " << model->meta.run_id << ", " << model->format << "), "
            << at::get_num_threads() << " threads, " << o.repeat << " repeats after " << o.warmup << " warm-up\n";
  std::cout << "candidates  requests     p50 ms     p99 ms  forward p50 ms  candidates/s\n";
  std::string results;
  for (const auto& [size, lines] : by_size) {
    std::vector<double> total, forward;
    for (int r = 0; r < o.warmup + o.repeat; ++r) {
      for (const auto& l : lines) {
        auto t0 = clock::now();
        std::optional<std::string> id;
        auto request = ranker::parse_request(l, model->meta, id);
        auto t1 = clock::now();
        auto scores = ranker::score(*model, request);
        auto t2 = clock::now();
        std::string out = ranker::ranked_line(request, scores, *model);
        auto t3 = clock::now();
        if (r >= o.warmup) {
          total.push_back(ms(t3 - t0));
          forward.push_back(ms(t2 - t1));
        }
      }
    }
    double mean = 0;
    for (double t : total) mean += t;
    mean /= total.size();
    double p50 = percentile(total, 0.5), p99 = percentile(total, 0.99), f50 = percentile(forward, 0.5);
    double per_s = size / (mean / 1000.0);
    char row[160];
    std::snprintf(row, sizeof row, "%10lld  %8zu  %9.3f  %9.3f  %14.3f  %12.0f\n", static_cast<long long>(size),
                  lines.size(), p50, p99, f50, per_s);
    std::cout << row;
    char item[200];
    std::snprintf(item, sizeof item,
                  "%s{\"candidates\":%lld,\"samples\":%zu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"forward_p50_ms\":%.4f,"
                  "\"candidates_per_s\":%.1f}",
                  results.empty() ? "" : ",", static_cast<long long>(size), total.size(), p50, p99, f50, per_s);
    results += item;
  }
  std::cout << "BENCH_JSON {\"threads\":" << at::get_num_threads() << ",\"invalid\":" << invalid
            << ",\"results\":[" << results << "]}" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ranker::keep_freed_memory();
  Options o = parse_args(argc, argv);
  try {
    // One thread by default: the serving loop is one thread, and on a busy machine more intra-op
    // threads than free cores made a request 10-27x slower with the same answers.
    if (o.threads > 0) at::set_num_threads(o.threads);
    int libraries = ranker::load_operator_libraries(o.ops_dir, o.verbose);
    ranker::ModelStoreOptions store_options;
    store_options.format = o.format;
    store_options.check_every = std::chrono::milliseconds(o.bench.empty() ? o.reload_check_ms : 0);
    const int threads = o.threads;
    store_options.check = [threads](const ranker::LoadedModel& m) {
      if (threads > 0) at::set_num_threads(threads);  // per thread: the watcher warms up as serving runs
      ranker::warm_up(m);
    };
    ranker::ModelStore store(o.model_dir, store_options);
    auto model = store.current();
    std::cerr << "ranker: serving " << o.model_dir << " (run " << model->meta.run_id << ", " << model->format << ", "
              << model->meta.tasks.size() << " tasks, " << libraries << " operator libraries)" << std::endl;
    if (!o.bench.empty()) return bench(store, o);
    if (o.input.empty()) return serve(store, std::cin, o.max_request_bytes);
    std::ifstream in(o.input);
    if (!in) { std::cerr << "ranker: cannot open " << o.input << "\n"; return 2; }
    return serve(store, in, o.max_request_bytes);
  } catch (const std::exception& e) {
    std::cerr << "ranker: " << e.what() << std::endl;
    return 1;
  }
}
