#include "model_store.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <iostream>
#include <system_error>
#include <vector>

namespace ranker {

int load_operator_libraries(const std::filesystem::path& dir, bool verbose) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw std::runtime_error("operator library directory " + dir.string() +
                             " does not exist (pass --ops-dir, the fbgemm_gpu package directory)");
  std::vector<std::filesystem::path> pending;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".so") pending.push_back(entry.path());
  std::sort(pending.begin(), pending.end());
  int loaded = 0;
  std::vector<std::string> errors;
  bool progress = true;
  while (!pending.empty() && progress) {  // a library may need symbols of one later in the listing
    progress = false;
    errors.clear();
    std::vector<std::filesystem::path> still;
    for (const auto& path : pending) {
      if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) {
        ++loaded;
        progress = true;
      } else {
        const char* err = dlerror();
        errors.push_back(path.filename().string() + ": " + (err ? err : "unknown error"));
        still.push_back(path);
      }
    }
    pending.swap(still);
  }
  if (verbose)
    for (const auto& e : errors) std::cerr << "ranker: not loaded: " << e << "\n";
  if (loaded == 0) throw std::runtime_error("no operator library in " + dir.string() + " could be loaded");
  return loaded;
}

ModelStore::ModelStore(std::filesystem::path dir, std::chrono::milliseconds check_every)
    : dir_(std::move(dir)), check_every_(check_every) {
  loaded_stamp_ = stamp();
  model_ = load(1);
  if (check_every_.count() > 0) watcher_ = std::thread([this] { watch(); });
}

ModelStore::~ModelStore() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

std::shared_ptr<const LoadedModel> ModelStore::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return model_;
}

ModelStore::Stamp ModelStore::stamp() const {
  std::error_code ec;
  Stamp s;
  s.mtime = std::filesystem::last_write_time(dir_ / "model.pt", ec);
  if (!ec) s.size = std::filesystem::file_size(dir_ / "model.pt", ec);
  return s;
}

std::shared_ptr<LoadedModel> ModelStore::load(int64_t generation) const {
  auto model = std::make_shared<LoadedModel>();
  model->meta = ModelMeta::load(dir_ / "model.json");
  try {
    model->module = torch::jit::load((dir_ / "model.pt").string());
  } catch (const c10::Error& e) {
    throw std::runtime_error((dir_ / "model.pt").string() + ": " + e.what_without_backtrace());
  }
  model->module.eval();
  model->generation = generation;
  return model;
}

void ModelStore::watch() {
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // short naps: shutdown stays prompt
    if (std::chrono::steady_clock::now() < next) continue;
    next = std::chrono::steady_clock::now() + check_every_;
    Stamp now = stamp();
    if (now == loaded_stamp_ || now.size == 0) continue;
    loaded_stamp_ = now;  // a broken export is reported once, not on every check
    int64_t generation = current()->generation + 1;
    try {
      auto fresh = load(generation);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        model_ = fresh;
      }
      std::cerr << "ranker: reloaded " << (dir_ / "model.pt").string() << " (generation " << generation
                << ", run " << fresh->meta.run_id << ")" << std::endl;
    } catch (const std::exception& e) {
      std::cerr << "ranker: keeping the current model; the new export failed to load: " << e.what() << std::endl;
    }
  }
}

}  // namespace ranker
