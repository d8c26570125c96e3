// The feature catalog (data_pipelines/streams/catalog.py writes it): the vocabularies that turn raw
// ids into the model's table rows, the quantized content embeddings the `long` and `livelong` GSUs
// rank by, and the settings the streams computed features with. Static for one export's lifetime;
// everything that changes with time comes from events (state.hpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace ranker::features {

struct Catalog {
  // Sorted raw ids; the row of the id at position i is i + 1 (0: unknown), lives after the photos
  // in the one item table (row photo_ids.size() + i + 1), as data_pipelines/streams/features.py Vocab.
  std::vector<int64_t> user_ids, author_ids, photo_ids, live_ids;
  std::vector<std::string> categories, live_types;  // sorted texts, rows as above
  int64_t dim = 0;                                  // embedding width
  std::vector<int16_t> photo_embedding;             // [photo_ids.size(), dim], rows follow photo_ids
  std::vector<int16_t> live_embedding;              // [live_ids.size(), dim]
  int64_t max_events = 0, short_long_view_ms = 0, live_long_view_ms = 0;
  int64_t gsu_length = 0, tz_offset_hours = 0;
  int64_t domain_short = 0, domain_live = 0, log_buckets = 0;  // the data contract's constants

  int64_t user_row(int64_t id) const { return row(user_ids, id); }
  int64_t author_row(int64_t id) const { return row(author_ids, id); }
  int64_t photo_row(int64_t id) const { return row(photo_ids, id); }
  int64_t live_row(int64_t id) const {
    const int64_t r = row(live_ids, id);
    return r == 0 ? 0 : static_cast<int64_t>(photo_ids.size()) + r;
  }
  int64_t category_row(std::string_view text) const { return text_row(categories, text); }
  int64_t live_type_row(std::string_view text) const { return text_row(live_types, text); }
  // Rows of each table (padding included), as model.json's table_sizes counts them.
  int64_t item_rows() const { return static_cast<int64_t>(photo_ids.size() + live_ids.size()) + 1; }

  // Reads dir/catalog.json and dir/catalog.bin; throws std::runtime_error naming the file and field.
  static Catalog load(const std::filesystem::path& dir);

 private:
  static int64_t row(const std::vector<int64_t>& ids, int64_t id);
  static int64_t text_row(const std::vector<std::string>& texts, std::string_view text);
};

}  // namespace ranker::features
