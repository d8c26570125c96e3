// The operator libraries a model may call (fbgemm's, from the fbgemm_gpu package directory): loaded
// once per process, before any model, so that TorchScript finds "fbgemm::..." operators.
#pragma once

#include <filesystem>

namespace ranker {

// dlopen()s every shared library in `dir` (RTLD_GLOBAL, in passes until no more load, since they
// depend on each other); returns how many loaded. Throws if none did.
int load_operator_libraries(const std::filesystem::path& dir, bool verbose);

}  // namespace ranker
