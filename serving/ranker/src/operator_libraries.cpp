#include "operator_libraries.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <iostream>
#include <stdexcept>
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

}  // namespace ranker
