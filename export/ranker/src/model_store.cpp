#include "model_store.hpp"

#include <dlfcn.h>
#include <pthread.h>

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

// A read-write lock that prefers the writer: publish() waits for the calls already running, and
// calls arriving meanwhile wait behind it (a reader-first lock could keep a busy server from ever
// publishing).
class SwapLock {
 public:
  SwapLock() {
    pthread_rwlockattr_t attributes;
    pthread_rwlockattr_init(&attributes);
    pthread_rwlockattr_setkind_np(&attributes, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock_, &attributes);
    pthread_rwlockattr_destroy(&attributes);
  }
  ~SwapLock() { pthread_rwlock_destroy(&lock_); }
  SwapLock(const SwapLock&) = delete;
  SwapLock& operator=(const SwapLock&) = delete;

  struct Reading {
    explicit Reading(SwapLock& l) : lock(l) { pthread_rwlock_rdlock(&lock.lock_); }
    ~Reading() { pthread_rwlock_unlock(&lock.lock_); }
    SwapLock& lock;
  };
  struct Writing {
    explicit Writing(SwapLock& l) : lock(l) { pthread_rwlock_wrlock(&lock.lock_); }
    ~Writing() { pthread_rwlock_unlock(&lock.lock_); }
    SwapLock& lock;
  };

 private:
  pthread_rwlock_t lock_;
};

std::map<std::string, at::Tensor> named_tensors(const torch::jit::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : module.named_parameters()) out[p.name] = p.value.detach();
  for (const auto& b : module.named_buffers()) out[b.name] = b.value.detach();
  return out;
}

// Two copies of the module, loaded from the same file: one serves, the other takes pushes.
class TorchScriptForward : public Forward {
 public:
  explicit TorchScriptForward(const std::filesystem::path& file) {
    for (auto& copy : copies_) {
      try {
        torch::jit::ExtraFilesMap extra{{"export_id", ""}};
        copy = torch::jit::load(file.string(), std::nullopt, extra);
        export_id_ = extra["export_id"];
      } catch (const c10::Error& e) {
        throw std::runtime_error(file.string() + ": " + e.what_without_backtrace());
      }
      copy.eval();
    }
  }
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs, int64_t* version) const override {
    std::vector<c10::IValue> args(inputs.begin(), inputs.end());
    SwapLock::Reading reading(lock_);
    if (version != nullptr) *version = version_;
    // Module::forward is not const, but a loaded eval-mode module holds no state a call changes,
    // and TorchScript allows concurrent calls of one module.
    auto out = const_cast<torch::jit::Module&>(copies_[live_]).forward(args).toTuple();
    std::vector<at::Tensor> tensors;
    for (const auto& e : out->elements()) tensors.push_back(e.toTensor());
    return tensors;
  }
  std::map<std::string, at::Tensor> idle_tensors() override { return named_tensors(copies_[1 - live_]); }
  void publish(int64_t version) override {
    SwapLock::Writing writing(lock_);
    live_ = 1 - live_;
    version_ = version;
  }
  int64_t version() const override { return version_; }
  std::string export_id() const override { return export_id_; }

 private:
  torch::jit::Module copies_[2];
  std::string export_id_;
  mutable SwapLock lock_;
  int live_ = 0;          // written under the write lock, by the updater thread only
  int64_t version_ = 0;
};

// The package's two constant buffers: the active one serves, the inactive one takes pushes, and
// swap_constant_buffer() exchanges them. Constants folded from the weights are refolded into the
// inactive buffer before each swap.
class AotiForward : public Forward {
 public:
  AotiForward(const std::filesystem::path& file, size_t runners) {
    try {
      // One runner per concurrent caller: a call waits for a free runner rather than sharing one.
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(file.string(), "model", false,
                                                                          std::max<size_t>(1, runners));
      auto* runner = loader_->get_runner();
      // The inactive buffer starts as a copy of the active one (update_constant_buffer copies into
      // a buffer of the package's own), keyed by the constants' internal names.
      auto active = runner->extract_constants_map(/*use_inactive=*/false);
      std::unordered_map<std::string, at::Tensor> copy;
      for (const auto& [name, fqn] : runner->getConstantNamesToOriginalFQNs()) {
        auto it = active.find(fqn);
        if (it != active.end()) copy[name] = it->second;
      }
      runner->update_constant_buffer(copy, /*use_inactive=*/true, /*validate_full_updates=*/false);
      runner->run_const_fold(/*use_inactive=*/true);
    } catch (const c10::Error& e) {
      throw std::runtime_error(file.string() + ": " + e.what_without_backtrace());
    }
  }
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs, int64_t* version) const override {
    SwapLock::Reading reading(lock_);
    if (version != nullptr) *version = version_;
    return loader_->run(inputs);
  }
  std::map<std::string, at::Tensor> idle_tensors() override {
    std::map<std::string, at::Tensor> out;
    for (const auto& [fqn, tensor] : loader_->get_runner()->extract_constants_map(/*use_inactive=*/true))
      out[fqn] = tensor;
    return out;
  }
  void refresh_idle() override { loader_->get_runner()->run_const_fold(/*use_inactive=*/true); }
  void publish(int64_t version) override {
    SwapLock::Writing writing(lock_);
    loader_->get_runner()->swap_constant_buffer();
    version_ = version;
  }
  int64_t version() const override { return version_; }
  std::string export_id() const override {
    auto metadata = loader_->get_metadata();
    auto it = metadata.find("export_id");
    return it == metadata.end() ? "" : it->second;
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  mutable SwapLock lock_;
  int64_t version_ = 0;
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
  // Started while an export is being put in place, the model files may already be the new export's
  // and model.json not yet: wait for it a little rather than fail.
  for (int attempt = 0;; ++attempt) {
    loaded_stamp_ = stamp();
    try {
      model_ = load(1, pushes_);
      break;
    } catch (const ExportMismatch& e) {
      if (attempt == 20) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (options_.check_every.count() > 0 || options_.push_check_every.count() > 0)
    watcher_ = std::thread([this] { watch(); });
}

ModelStore::~ModelStore() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

std::shared_ptr<const LoadedModel> ModelStore::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return model_;
}

ModelStore::Stamp ModelStore::Stamp::of(const std::filesystem::path& file) {
  std::error_code ec;
  Stamp s;
  s.mtime = std::filesystem::last_write_time(file, ec);
  if (!ec) s.size = std::filesystem::file_size(file, ec);
  return s;
}

ModelStore::Stamp ModelStore::stamp() const { return Stamp::of(dir_ / "model.json"); }

std::shared_ptr<LoadedModel> ModelStore::load(int64_t generation, PushState& pushes) {
  auto model = std::make_shared<LoadedModel>();
  model->meta = ModelMeta::load(dir_ / "model.json");
  model->format = choose_format(model->meta, options_.format, dir_);
  const auto file = dir_ / model->meta.files.at(model->format);
  if (model->format == "aoti")
    model->forward = std::make_unique<AotiForward>(file, options_.concurrent_calls);
  else
    model->forward = std::make_unique<TorchScriptForward>(file);
  if (model->forward->export_id() != model->meta.export_id)
    throw ExportMismatch(file.string() + " belongs to export '" + model->forward->export_id() + "', " +
                         (dir_ / "model.json").string() + " to export '" + model->meta.export_id +
                         "': an export is being put in place (its model.json comes last), or the files are mixed");
  check_updatable(model->forward->idle_tensors(), model->meta, model->format);
  model->generation = generation;
  pushes = PushState{};
  // A replica started (or an export reloaded) after pushes were written catches up before it serves.
  if (options_.push_check_every.count() > 0) follow_pushes(*model, pushes);
  if (options_.check) options_.check(*model);
  return model;
}

int ModelStore::follow_pushes(const LoadedModel& model, PushState& state) {
  int applied = 0;
  if (state.stopped) return 0;
  while (!stop_) {
    const int64_t next = model.forward->version() + 1;
    const auto file = push_file(dir_, model.meta.export_id, next);
    const Stamp stamp = Stamp::of(file);
    if (stamp.size == 0) {  // not there (or still empty): a later one present means one is missing
      auto present = push_sequences(dir_, model.meta.export_id);
      int64_t later = 0;
      for (int64_t s : present)
        if (s > next && (later == 0 || s < later)) later = s;
      if (later && state.gap_reported_at != next) {
        state.gap_reported_at = next;
        PushOutcome gap{PushOutcome::Result::Gap, "gap",
                        "push " + std::to_string(next) + " is missing and push " + std::to_string(later) +
                            " is present: waiting for push " + std::to_string(next) + ", applying nothing after it",
                        next};
        std::cerr << "ranker: " << gap.message << std::endl;
        if (options_.on_push) options_.on_push(gap);
      }
      break;
    }
    if (state.refused_sequence == next && state.refused_stamp == stamp) break;  // refused, not replaced since
    const auto t0 = std::chrono::steady_clock::now();
    try {
      Push push = read_push(file, model.meta, next);
      auto write_idle = [&] {
        auto idle = model.forward->idle_tensors();
        write_push(push, idle);
        model.forward->refresh_idle();
      };
      write_idle();
      model.forward->publish(next);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      write_idle();  // the copy that served until now takes the same push: the next one finds both equal
      ++applied;
      const auto serving_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count();
      std::cerr << "ranker: push " << next << " serving at " << serving_ms << " ms (" << push.rows << " rows, "
                << push.bytes << " bytes, applied in " << seconds * 1e3 << " ms; its newest batch learned at "
                << push.learned_unix_ms << " ms)" << std::endl;
      if (options_.on_push)
        options_.on_push(PushOutcome{PushOutcome::Result::Applied, "", "", next, seconds, push.rows, push.bytes,
                                     push.data_time_ms, push.learned_unix_ms});
    } catch (const PushRefused& e) {
      state.refused_sequence = next;
      state.refused_stamp = stamp;
      std::cerr << "ranker: push refused (" << e.reason << "), still serving push " << next - 1 << ": " << e.what()
                << std::endl;
      if (options_.on_push) options_.on_push(PushOutcome{PushOutcome::Result::Refused, e.reason, e.what(), next});
      break;
    }
  }
  return applied;
}

void ModelStore::watch() {
  using clock = std::chrono::steady_clock;
  auto next_reload = clock::now(), next_push = clock::now();
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // short naps: shutdown stays prompt
    const auto now = clock::now();
    if (options_.push_check_every.count() > 0 && now >= next_push) {
      next_push = now + options_.push_check_every;
      auto model = current();
      try {
        follow_pushes(*model, pushes_);
      } catch (const std::exception& e) {
        // Not a refusal: writing a checked push failed. The idle copy may be half written, so no
        // further push is applied to this export; the next full export starts clean.
        std::cerr << "ranker: applying a push failed; pushes stop until the next export: " << e.what() << std::endl;
        pushes_.stopped = true;
        if (options_.on_push)
          options_.on_push(PushOutcome{PushOutcome::Result::Refused, "internal", e.what(), model->forward->version() + 1});
      }
    }
    if (options_.check_every.count() == 0 || now < next_reload) continue;
    next_reload = now + options_.check_every;
    Stamp now_stamp = stamp();
    if (now_stamp == loaded_stamp_ || now_stamp.size == 0) continue;
    loaded_stamp_ = now_stamp;  // a broken export is reported once, not on every check
    int64_t generation = current()->generation + 1;
    try {
      PushState pushes;
      auto fresh = load(generation, pushes);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        model_ = fresh;
      }
      pushes_ = pushes;
      std::cerr << "ranker: reloaded " << dir_.string() << " (generation " << generation << ", " << fresh->format
                << ", run " << fresh->meta.run_id << ", export " << fresh->meta.export_id << ", push "
                << fresh->forward->version() << ")" << std::endl;
      if (options_.on_reload) options_.on_reload(true, generation, fresh->forward->version());
    } catch (const std::exception& e) {
      std::cerr << "ranker: keeping the current model; the new export failed to load: " << e.what() << std::endl;
      if (options_.on_reload) options_.on_reload(false, generation - 1, current()->forward->version());
    }
  }
}

}  // namespace ranker
