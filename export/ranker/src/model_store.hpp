// The served model: fbgemm operator libraries loaded once, then model.pt + model.json, replaced by a
// background watcher when a newer export lands (export writes model.json first and renames model.pt
// into place last, so a change of model.pt means both are complete). Requests keep being answered by
// the old model until the new one has loaded; a broken new export is reported and not taken.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <torch/script.h>

#include "meta.hpp"

namespace ranker {

struct LoadedModel {
  torch::jit::Module module;
  ModelMeta meta;
  int64_t generation = 0;  // 1 for the first model, +1 per reload
};

// dlopen()s every shared library in `dir` (RTLD_GLOBAL, in passes until no more load, since they
// depend on each other); returns how many loaded. Throws if none did.
int load_operator_libraries(const std::filesystem::path& dir, bool verbose);

class ModelStore {
 public:
  // Loads the model now (throws on failure); `check_every` = 0 disables watching.
  ModelStore(std::filesystem::path dir, std::chrono::milliseconds check_every);
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
  std::chrono::milliseconds check_every_;
  mutable std::mutex mutex_;
  std::shared_ptr<const LoadedModel> model_;
  Stamp loaded_stamp_;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace ranker
