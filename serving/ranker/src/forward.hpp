// The backends: a loaded model file behind one interface, whatever its format (TorchScript module or
// AOTInductor package). Each is double-buffered so that pushes reach it while it serves.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "meta.hpp"

namespace ranker {

// One loaded model file, double-buffered so that pushes (push.hpp) reach it while it serves: a live
// copy of its weights answers calls, an idle copy takes a push, then the two change places
// (TorchScript: two copies of the module; AOTInductor: the package's active and inactive constant
// buffers). Only the updater thread calls the push side; any thread may call run().
class Forward {
 public:
  virtual ~Forward() = default;
  // The scorer's input tensors in, (probabilities, score) out; `*version` (if given) is set to the
  // version of the weights that computed them: one version for the whole call.
  virtual std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs, int64_t* version = nullptr) const = 0;
  // The idle copy's tensors by the names model.json "updatable" uses (aliases: writing them writes
  // the copy). Nothing serves from them until publish().
  virtual std::map<std::string, at::Tensor> idle_tensors() = 0;
  // Recomputes whatever the idle copy derives from its tensors (AOTInductor's folded constants).
  virtual void refresh_idle() {}
  // The idle copy serves from now on, as `version`; returns once no call runs on the previous live
  // copy, which is then the idle one.
  virtual void publish(int64_t version) = 0;
  virtual int64_t version() const = 0;
  // The export the file says it belongs to (written by export/artifact.py; empty if it says none).
  virtual std::string export_id() const = 0;
};

// The backend of a format ("torchscript" or "aoti") with `file` loaded; throws std::runtime_error
// naming the file if it cannot be loaded. `concurrent_calls`: AOTInductor runners, how many forwards
// may run at once (TorchScript modules take concurrent calls as they are).
std::unique_ptr<Forward> make_forward(const std::string& format, const std::filesystem::path& file,
                                      size_t concurrent_calls);

// "auto" = the AOTInductor package when the export has one, else TorchScript; or a format by name.
std::string choose_format(const ModelMeta& meta, const std::string& wanted, const std::filesystem::path& dir);

}  // namespace ranker
