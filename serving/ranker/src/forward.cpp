#include "forward.hpp"

#include <pthread.h>

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <stdexcept>
#include <unordered_map>

namespace ranker {

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

std::unique_ptr<Forward> make_forward(const std::string& format, const std::filesystem::path& file,
                                      size_t concurrent_calls) {
  if (format == "aoti") return std::make_unique<AotiForward>(file, concurrent_calls);
  if (format == "torchscript") return std::make_unique<TorchScriptForward>(file);
  throw std::runtime_error("unknown model format '" + format + "' (torchscript or aoti)");
}

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

}  // namespace ranker
