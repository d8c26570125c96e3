// The served model's lifecycle: model.json and the model file of the chosen format (a backend,
// forward.hpp) loaded, the pushes after it followed, and the whole replaced by a background watcher
// when a newer export lands. The export renames its model files into place first and writes
// model.json last, so a change of model.json means the export is complete. A new model is loaded
// beside the serving one and checked (a warm-up forward) before it is swapped in; requests keep
// being answered by the old model meanwhile, and a broken new export is reported and not taken.
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

#include "forward.hpp"
#include "meta.hpp"
#include "push.hpp"

namespace ranker {

// model.json names another export than its model file does: the files of a newer export were renamed
// into place and its model.json is not written yet (or an older model.json was copied over).
struct ExportMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct LoadedModel {
  std::unique_ptr<Forward> forward;
  std::string format;  // "torchscript" or "aoti"
  ModelMeta meta;
  int64_t generation = 0;  // 1 for the first model, +1 per reload
};

struct ModelStoreOptions {
  std::string format = "auto";
  std::chrono::milliseconds check_every{1000};  // 0 disables watching
  size_t concurrent_calls = 1;  // AOTInductor runners: how many forwards may run at once
  // Run on a freshly loaded model before it serves (throws to refuse it): the warm-up forward.
  std::function<void(const LoadedModel&)> check;
  // Told of every reload attempt after the first load: success, and the generation and push now serving.
  std::function<void(bool, int64_t, int64_t)> on_reload;
  // How often the export's push directory is looked at (0: pushes are not followed).
  std::chrono::milliseconds push_check_every{100};
  // Told of every push looked at: applied or refused (push.hpp).
  std::function<void(const PushOutcome&)> on_push;
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
    static Stamp of(const std::filesystem::path& file);
    bool operator==(const Stamp& o) const { return mtime == o.mtime && size == o.size; }
  };
  Stamp stamp() const;
  // What the updater knows of a model's pushes beyond the version serving: the push it refused
  // (looked at again only when its file changes) and the gap it reported (reported once).
  struct PushState {
    int64_t refused_sequence = 0;
    Stamp refused_stamp;
    int64_t gap_reported_at = 0;
    bool stopped = false;  // a checked push failed to write: none more for this export
  };
  std::shared_ptr<LoadedModel> load(int64_t generation, PushState& pushes);
  void watch();
  // Applies, in order, every push of the model's export that is next in sequence and present;
  // stops at the first one missing or refused. Returns how many were applied.
  int follow_pushes(const LoadedModel& model, PushState& state);

  std::filesystem::path dir_;
  ModelStoreOptions options_;
  mutable std::mutex mutex_;
  std::shared_ptr<const LoadedModel> model_;
  Stamp loaded_stamp_;
  PushState pushes_;  // the serving model's (updater thread only)
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace ranker
