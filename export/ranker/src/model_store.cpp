#include "model_store.hpp"

#include <dlfcn.h>

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

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

namespace {

class TorchScriptForward : public Forward {
 public:
  explicit TorchScriptForward(const std::filesystem::path& file) {
    try {
      module_ = torch::jit::load(file.string());
    } catch (const c10::Error& e) {
      throw std::runtime_error(file.string() + ": " + e.what_without_backtrace());
    }
    module_.eval();
  }
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const override {
    std::vector<c10::IValue> args(inputs.begin(), inputs.end());
    // Module::forward is not const, but a loaded eval-mode module holds no state a call changes,
    // and TorchScript allows concurrent calls of one module.
    auto out = const_cast<torch::jit::Module&>(module_).forward(args).toTuple();
    std::vector<at::Tensor> tensors;
    for (const auto& e : out->elements()) tensors.push_back(e.toTensor());
    return tensors;
  }

 private:
  torch::jit::Module module_;
};

class AotiForward : public Forward {
 public:
  AotiForward(const std::filesystem::path& file, size_t runners) {
    try {
      // One runner per concurrent caller: a call waits for a free runner rather than sharing one.
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(file.string(), "model", false,
                                                                          std::max<size_t>(1, runners));
    } catch (const c10::Error& e) {
      throw std::runtime_error(file.string() + ": " + e.what_without_backtrace());
    }
  }
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const override { return loader_->run(inputs); }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace

std::string choose_format(const ModelMeta& meta, const std::string& wanted, const std::filesystem::path& dir) {
  if (wanted == "auto") return meta.files.count("aoti") ? "aoti" : "torchscript";
  if (wanted != "torchscript" && wanted != "aoti")
    throw std::runtime_error("unknown model format '" + wanted + "' (auto, torchscript or aoti)");
  if (!meta.files.count(wanted))
    throw std::runtime_error((dir / "model.json").string() + " lists no " + wanted +
                             " file (export with format=" + (wanted == "aoti" ? "aoti" : "torchscript") +
                             " or format=both)");
  return wanted;
}

ModelStore::ModelStore(std::filesystem::path dir, ModelStoreOptions options)
    : dir_(std::move(dir)), options_(std::move(options)) {
  loaded_stamp_ = stamp();
  model_ = load(1);
  if (options_.check_every.count() > 0) watcher_ = std::thread([this] { watch(); });
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
  s.mtime = std::filesystem::last_write_time(dir_ / "model.json", ec);
  if (!ec) s.size = std::filesystem::file_size(dir_ / "model.json", ec);
  return s;
}

std::shared_ptr<LoadedModel> ModelStore::load(int64_t generation) const {
  auto model = std::make_shared<LoadedModel>();
  model->meta = ModelMeta::load(dir_ / "model.json");
  model->format = choose_format(model->meta, options_.format, dir_);
  const auto file = dir_ / model->meta.files.at(model->format);
  if (model->format == "aoti")
    model->forward = std::make_unique<AotiForward>(file, options_.concurrent_calls);
  else
    model->forward = std::make_unique<TorchScriptForward>(file);
  model->generation = generation;
  if (options_.check) options_.check(*model);
  return model;
}

void ModelStore::watch() {
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // short naps: shutdown stays prompt
    if (std::chrono::steady_clock::now() < next) continue;
    next = std::chrono::steady_clock::now() + options_.check_every;
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
      std::cerr << "ranker: reloaded " << dir_.string() << " (generation " << generation << ", " << fresh->format
                << ", run " << fresh->meta.run_id << ")" << std::endl;
      if (options_.on_reload) options_.on_reload(true, generation);
    } catch (const std::exception& e) {
      std::cerr << "ranker: keeping the current model; the new export failed to load: " << e.what() << std::endl;
      if (options_.on_reload) options_.on_reload(false, generation - 1);
    }
  }
}

}  // namespace ranker
