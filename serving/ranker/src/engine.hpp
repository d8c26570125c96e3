// The ranking engine behind both front ends (the JSON-lines tool and the gRPC service): validation,
// micro-batched scoring and reload, as a plain C++ interface. A front end fills a RequestInput from
// its wire format and answers with the Ranking or the RankFailure it gets back (answer.hpp). This
// header includes nothing of torch, so that the gRPC code can use it without torch's include path
// (the wheel ships protobuf 3.13 headers there, which clash with the system protobuf the generated
// gRPC code is built against).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "answer.hpp"
#include "metrics.hpp"
#include "request.hpp"

namespace ranker {

namespace features {
class FeatureState;
class ServedLog;
}

struct EngineOptions {
  std::string model_dir;
  std::string format = "auto";  // auto | torchscript | aoti
  std::string ops_dir;          // fbgemm operator libraries
  int workers = 1;
  int intra_op_threads = 1;
  int64_t max_batch_candidates = 512;
  int64_t max_delay_us = 0;
  int reload_check_ms = 1000;  // 0 = never
  int push_check_ms = 100;     // 0 = pushes are not followed
  bool verbose = false;
};

struct EngineInfo {
  std::string model_dir, format, run_id;
  int64_t generation = 0;
  int64_t push = 0;
  std::string export_id;
  size_t tasks = 0;
  int operator_libraries = 0;
};

// Scoring allocates and frees tensors of several MB; with glibc's defaults each is a fresh mapping
// whose pages fault again on every request (a 200-candidate forward took 21 ms instead of 6). Keeps
// freed memory in the process, as the Python jobs do (recsys/allocator.py). Call first in main().
void keep_freed_memory();

class Engine {
 public:
  // Loads the operator libraries and the model, warms it up, starts the workers; throws
  // std::runtime_error saying what is wrong. `features`: the live feature state ids-only requests
  // are assembled from (null: the full-feature form only); `served_log`: where each answered ids-only
  // request's features go (null: nowhere). Both must outlive the engine.
  Engine(const EngineOptions& options, Metrics& metrics, const features::FeatureState* features = nullptr,
         features::ServedLog* served_log = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and scores one request (blocks until its batch is scored): the full-feature form as
  // sent, the ids-only form with the features the feature state assembles. Throws RankFailure.
  Ranking rank(const RequestInput& request);
  EngineInfo info() const;
  // Refuses new requests, finishes the queued ones, stops the workers and the reload watcher.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ranker
