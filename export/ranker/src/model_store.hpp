// The served model: fbgemm operator libraries loaded once, then model.json and the model file of the
// chosen format, replaced by a background watcher when a newer export lands. The export renames its
// model files into place first and writes model.json last, so a change of model.json means the
// export is complete. A new model is loaded beside the serving one and checked (a warm-up forward)
// before it is swapped in; requests keep being answered by the old model meanwhile, and a broken
// new export is reported and not taken.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "meta.hpp"

namespace ranker {

// One loaded model file: the scorer's five input tensors in, (probabilities, score) out.
class Forward {
 public:
  virtual ~Forward() = default;
  virtual std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const = 0;
};

struct LoadedModel {
  std::unique_ptr<Forward> forward;
  std::string format;  // "torchscript" or "aoti"
  ModelMeta meta;
  int64_t generation = 0;  // 1 for the first model, +1 per reload
};

// dlopen()s every shared library in `dir` (RTLD_GLOBAL, in passes until no more load, since they
// depend on each other); returns how many loaded. Throws if none did.
int load_operator_libraries(const std::filesystem::path& dir, bool verbose);

// "auto" = the AOTInductor package when the export has one, else TorchScript; or a format by name.
std::string choose_format(const ModelMeta& meta, const std::string& wanted, const std::filesystem::path& dir);

struct ModelStoreOptions {
  std::string format = "auto";
  std::chrono::milliseconds check_every{1000};  // 0 disables watching
  size_t concurrent_calls = 1;  // AOTInductor runners: how many forwards may run at once
  // Run on a freshly loaded model before it serves (throws to refuse it): the warm-up forward.
  std::function<void(const LoadedModel&)> check;
  // Told of every reload attempt after the first load: success, and the generation now serving.
  std::function<void(bool, int64_t)> on_reload;
};

class ModelStore {
 public:
  // Loads the model now (throws on failure).
  ModelStore(std::filesystem::path dir, ModelStoreOptions options);
  ~ModelStore();
  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  std::shared_ptr<const LoadedModel> current() const;

 private:
  struct Stamp {
    std::filesystem::file_time_type mtime{};
    std::uintmax_t size = 0;
    bool operator==(const Stamp& o) const { return mtime == o.mtime && size == o.size; }
  };
  Stamp stamp() const;
  std::shared_ptr<LoadedModel> load(int64_t generation) const;
  void watch();

  std::filesystem::path dir_;
  ModelStoreOptions options_;
  mutable std::mutex mutex_;
  std::shared_ptr<const LoadedModel> model_;
  Stamp loaded_stamp_;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace ranker
