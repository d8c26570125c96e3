// model.json, as the ranker needs it: what a valid request holds and how to lay it out as tensors.
// Read with simdjson's DOM; every missing or mistyped field is named.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ranker {

struct IdFeature {
  std::string name;
  int64_t rows = 0;  // valid ids are [0, rows)
  bool from_user = false;
};

struct DenseFeature {
  std::string name;
  bool from_user = false;
};

struct Gsu {
  std::string name;
  bool from_user = false;
};

// What one side of a request (the user, or each candidate) must hold, in model.json order.
struct PartFields {
  std::vector<std::string> ids, dense, sequences;
  std::vector<int64_t> id_rows;  // valid ids of ids[j] are [0, id_rows[j])
};

struct ModelMeta {
  std::vector<IdFeature> id_features;       // column order of `ids`
  std::vector<DenseFeature> dense_features; // column order of `dense`
  std::vector<Gsu> gsus;                    // order of the G axis
  int64_t seq_len = 0;
  // A sequence element's fields as model.json orders them: the first n_id_fields go to seq_ids,
  // the rest to seq_side, each in this order along the last axis.
  std::vector<std::string> sequence_fields;
  int64_t n_id_fields = 0;
  std::vector<int64_t> sequence_rows;  // valid values [0, rows) per sequence field
  std::vector<std::string> tasks;
  PartFields user_fields, candidate_fields;  // from_user split of the three lists above: the model's inputs per side
  int64_t max_candidates = 0;
  std::string run_id;
  // The model files of the export by format ("torchscript" -> "model.pt", "aoti" -> "model.pt2"),
  // as model.json "files" lists them; at least one.
  std::map<std::string, std::string> files;

  static ModelMeta load(const std::filesystem::path& path);  // throws std::runtime_error naming the field
};

}  // namespace ranker
