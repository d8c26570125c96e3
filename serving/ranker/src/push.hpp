// Pushes: the trainer's updates between full exports (export/push.py writes them; docs/serving.md,
// "Pushes"). An export's pushes lie in <export>/pushes/<export_id>/<sequence:010d>.push, one file
// each, in the safetensors layout. Reading one checks everything before any weight is touched: the
// CRC-32 of its data, its format, the export it builds on, the model shape it was written for, its
// sequence number, every tensor's name, dtype and shape, every row id and every value.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "meta.hpp"
#include "push_outcome.hpp"

namespace ranker {

struct Push {
  std::filesystem::path file;
  int64_t sequence = 0;
  int64_t data_time_ms = 0;     // the data clock of the newest sample learned
  int64_t learned_unix_ms = 0;  // when the newest learned batch was learned (wall clock)
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> tables;  // name -> (rows [n] int64, values [n, dim] float32)
  std::map<std::string, at::Tensor> dense;                          // name -> its whole new value (dense pushes)
  int64_t rows = 0;   // table rows, all tables together
  int64_t bytes = 0;  // the file's size
};

// A push that must not be applied. `reason` is one word for the metrics: io, format, checksum,
// base (another export), shape (another model), sequence, tensor (a name, dtype or shape the
// model does not have), rows (a row id out of range or repeated), values (not finite).
struct PushRefused : std::runtime_error {
  PushRefused(std::string reason, const std::string& message)
      : std::runtime_error(message), reason(std::move(reason)) {}
  std::string reason;
};

// The file of push `sequence` in an export's push directory.
std::filesystem::path push_file(const std::filesystem::path& export_dir, const std::string& export_id, int64_t sequence);
// The sequence numbers of the push files present (those named as push_file names them).
std::vector<int64_t> push_sequences(const std::filesystem::path& export_dir, const std::string& export_id);

// Reads and checks push `sequence` of `meta`'s export; throws PushRefused saying why not.
Push read_push(const std::filesystem::path& file, const ModelMeta& meta, int64_t sequence);

// Writes a checked push into a model copy's tensors (Forward::idle_tensors): each table's rows,
// each dense tensor whole.
void write_push(const Push& push, std::map<std::string, at::Tensor>& tensors);

// Throws std::runtime_error unless `tensors` holds every tensor model.json says a push may replace,
// with its shape: what an export compiled with freezing (its weights folded into other constants)
// cannot offer.
void check_updatable(const std::map<std::string, at::Tensor>& tensors, const ModelMeta& meta, const std::string& format);

}  // namespace ranker
