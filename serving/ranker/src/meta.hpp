// model.json, as the ranker needs it: what a valid request holds and how to lay it out as tensors.
// Read with simdjson's DOM; every missing or mistyped field is named.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ranker {

// What one side of a request (the user, or each candidate) must hold, in model.json order.
struct PartFields {
  std::vector<std::string> ids, dense, sequences;
  std::vector<int64_t> id_rows;  // valid ids of ids[j] are [0, id_rows[j])
};

struct ModelMeta {
  // What the user sends once and what each candidate sends: ids, dense features and GSUs, each in
  // model.json order (the request_layout splits model.json's lists between the two sides).
  PartFields user_fields, candidate_fields;
  int64_t seq_len = 0;
  // A sequence element's fields as model.json orders them: the first n_id_fields go to *seq_ids,
  // the rest to *seq_side, each in this order along the last axis.
  std::vector<std::string> sequence_fields;
  int64_t n_id_fields = 0;
  std::vector<int64_t> sequence_rows;  // valid values [0, rows) per sequence field
  std::vector<std::string> tasks;
  int64_t max_candidates = 0;
  std::string run_id;
  // The model files of the export by format ("torchscript" -> "model.pt", "aoti" -> "model.pt2"),
  // as model.json "files" lists them; at least one.
  std::map<std::string, std::string> files;
  // What a push may replace (model.json "updatable"): the export it builds on, the fingerprint of
  // the names and shapes below, each embedding table's rows and width, each dense tensor's shape.
  std::string export_id;
  std::string updatable_fingerprint;
  struct TableShape {
    int64_t rows = 0, dim = 0;
  };
  std::map<std::string, TableShape> updatable_tables;
  std::map<std::string, std::vector<int64_t>> updatable_dense;

  static ModelMeta load(const std::filesystem::path& path);  // throws std::runtime_error naming the field
};

}  // namespace ranker
