// Command-line flags with CLI11: the engine's flags, which both front ends take, declared once, and
// the way both binaries report a bad command line. Torch-free (the gRPC server includes it).
#pragma once

#include <cstdlib>
#include <iostream>
#include <limits>
#include <string>

#include <CLI/CLI.hpp>

#include "engine.hpp"
#include "features/state.hpp"

#ifndef RANKER_DEFAULT_OPS_DIR
#define RANKER_DEFAULT_OPS_DIR ""
#endif

namespace ranker {

// A number of at least `least` ("--workers: must be at least 1").
inline CLI::Validator at_least(long long least) {
  return CLI::Validator(
      [least](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const long long value = std::stoll(text, &used);
          if (used != text.size()) return "needs a number, got " + text;
          return value < least ? "must be at least " + std::to_string(least) : std::string();
        } catch (...) {
          return "needs a number, got " + text;
        }
      },
      ">=" + std::to_string(least));
}

// --model, --format, --ops-dir, --intra-op-threads, --reload-check-ms, --push-check-ms, --verbose: what loads and runs
// the model, the same in the JSON tool and the gRPC service.
inline void add_engine_options(CLI::App& app, EngineOptions& o) {
  const char* env_ops = std::getenv("RANKER_OPS_DIR");
  o.ops_dir = env_ops ? env_ops : RANKER_DEFAULT_OPS_DIR;
  app.add_option("--model", o.model_dir, "an export: DIR/model.json and the model file(s) it lists (make export)")
      ->required();
  app.add_option("--format", o.format, "auto (the AOTInductor package if the export has one) | torchscript | aoti")
      ->check(CLI::IsMember({"auto", "torchscript", "aoti"}));
  app.add_option("--ops-dir", o.ops_dir, "fbgemm operator libraries (default: $RANKER_OPS_DIR or the build's fbgemm_gpu)");
  app.add_option("--intra-op-threads", o.intra_op_threads,
                 "intra-op threads per forward (default 1: on a busy machine more threads than free cores "
                 "made a request 10-27x slower)")
      ->check(at_least(1));
  app.add_option("--push-check-ms", o.push_check_ms,
                 "how often to look for the export's next push (default 100; 0 = pushes are not applied)")
      ->check(at_least(0));
  app.add_option("--reload-check-ms", o.reload_check_ms, "how often to look for a newer export (default 1000; 0 = never)")
      ->check(at_least(0));
  app.add_flag("--verbose", o.verbose, "say which operator libraries did not load");
}

// The live feature state that ids-only requests are assembled from (docs/serving.md, "Live feature state").
struct FeatureOptions {
  std::string catalog;  // empty: no feature state, the full-feature form only
  features::StateOptions state;
};

inline void add_feature_options(CLI::App& app, FeatureOptions& o) {
  app.add_option("--features-catalog", o.catalog,
                 "the feature catalog (make streams writes <data>/streams/feature_catalog): with it, ids-only "
                 "requests are served from a live feature state");
  app.add_option("--feature-tolerance-ms", o.state.tolerance_ms,
                 "refuse an ids-only request whose request_ts is further than this from the feature state's clock "
                 "(default 60000)")
      ->check(at_least(0));
  app.add_option("--feature-max-event-lead-ms", o.state.max_event_lead_ms,
                 "quarantine an event further than this ahead of the feature state's clock (default 0: no limit; with clock marks on every partition, e.g. 3600000)")
      ->check(at_least(0));
}

// Parses the command line; a bad one is reported as "<program>: <what>" and exits 2, --help exits 0.
inline void parse_or_exit(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    std::exit(0);
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": " << e.what() << " (--help lists the flags)\n";
    std::exit(2);
  }
}

}  // namespace ranker
