#include "features/catalog.hpp"

#include <simdjson.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace ranker::features {
namespace {

constexpr int64_t kFormatVersion = 1;  // data_pipelines/streams/catalog.py FORMAT_VERSION

using simdjson::dom::element;

struct Reader {
  std::string file;

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(file + ": " + what); }

  element member(element obj, const std::string& key) const {
    element v;
    if (!obj.is_object() || obj.at_key(key).get(v)) fail("missing field " + key);
    return v;
  }
  int64_t integer(element obj, const std::string& key) const {
    int64_t out = 0;
    if (member(obj, key).get_int64().get(out)) fail(key + " must be an integer");
    return out;
  }
  std::vector<std::string> texts(element obj, const std::string& key) const {
    simdjson::dom::array items;
    if (member(obj, key).get_array().get(items)) fail(key + " must be an array");
    std::vector<std::string> out;
    for (element item : items) {
      std::string_view text;
      if (item.get_string().get(text)) fail(key + " must hold strings");
      out.emplace_back(text);
    }
    if (!std::is_sorted(out.begin(), out.end())) fail(key + " must be sorted");
    return out;
  }
};

// One array of catalog.bin, checked against the index: its dtype, its shape and that it lies in the file.
template <typename T>
std::vector<T> array_of(const Reader& r, element arrays, const std::string& blob, const std::string& name,
                        const char* dtype, size_t dims, std::vector<int64_t>& shape) {
  element a = r.member(arrays, name);
  std::string_view type;
  if (r.member(a, "dtype").get_string().get(type) || type != dtype)
    r.fail("arrays." + name + ".dtype must be " + dtype);
  simdjson::dom::array sizes;
  if (r.member(a, "shape").get_array().get(sizes) || sizes.size() != dims)
    r.fail("arrays." + name + ".shape must have " + std::to_string(dims) + " dimensions");
  shape.clear();
  int64_t count = 1;
  for (element s : sizes) {
    int64_t n = 0;
    if (s.get_int64().get(n) || n < 0) r.fail("arrays." + name + ".shape must hold sizes");
    shape.push_back(n);
    count *= n;
  }
  const int64_t offset = r.integer(a, "offset");
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  if (offset < 0 || offset + bytes > static_cast<int64_t>(blob.size()))
    r.fail("arrays." + name + " lies outside catalog.bin");
  std::vector<T> out(static_cast<size_t>(count));
  std::memcpy(out.data(), blob.data() + offset, static_cast<size_t>(bytes));  // little-endian, as written
  return out;
}

}  // namespace

int64_t Catalog::row(const std::vector<int64_t>& ids, int64_t id) {
  auto it = std::lower_bound(ids.begin(), ids.end(), id);
  return it != ids.end() && *it == id ? (it - ids.begin()) + 1 : 0;
}

int64_t Catalog::text_row(const std::vector<std::string>& texts, std::string_view text) {
  auto it = std::lower_bound(texts.begin(), texts.end(), text);
  return it != texts.end() && *it == text ? (it - texts.begin()) + 1 : 0;
}

Catalog Catalog::load(const std::filesystem::path& dir) {
  const Reader r{(dir / "catalog.json").string()};
  simdjson::dom::parser parser;
  element root;
  if (parser.load(r.file).get(root)) r.fail("cannot be read as JSON (run make streams to write the catalog)");
  if (r.integer(root, "format_version") != kFormatVersion)
    r.fail("format_version " + std::to_string(r.integer(root, "format_version")) + ", this ranker reads " +
           std::to_string(kFormatVersion));
  const std::string bin_path = (dir / "catalog.bin").string();
  std::ifstream in(bin_path, std::ios::binary);
  if (!in) throw std::runtime_error(bin_path + ": cannot be opened");
  const std::string blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (static_cast<int64_t>(blob.size()) != r.integer(root, "bin_bytes"))
    throw std::runtime_error(bin_path + ": " + std::to_string(blob.size()) + " bytes, catalog.json says " +
                             std::to_string(r.integer(root, "bin_bytes")));
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(blob.data()), static_cast<uInt>(blob.size()));
  if (static_cast<int64_t>(crc) != r.integer(root, "bin_crc32"))
    throw std::runtime_error(bin_path + ": CRC-32 does not match catalog.json (a cut or altered file)");

  Catalog c;
  element arrays = r.member(root, "arrays");
  std::vector<int64_t> shape;
  c.user_ids = array_of<int64_t>(r, arrays, blob, "user_ids", "int64", 1, shape);
  c.author_ids = array_of<int64_t>(r, arrays, blob, "author_ids", "int64", 1, shape);
  c.photo_ids = array_of<int64_t>(r, arrays, blob, "photo_ids", "int64", 1, shape);
  c.live_ids = array_of<int64_t>(r, arrays, blob, "live_ids", "int64", 1, shape);
  for (auto* ids : {&c.user_ids, &c.author_ids, &c.photo_ids, &c.live_ids})
    if (!std::is_sorted(ids->begin(), ids->end())) r.fail("the id arrays must be sorted");
  c.photo_embedding = array_of<int16_t>(r, arrays, blob, "photo_embedding", "int16", 2, shape);
  if (shape[0] != static_cast<int64_t>(c.photo_ids.size())) r.fail("photo_embedding must have a row per photo id");
  c.dim = shape[1];
  c.live_embedding = array_of<int16_t>(r, arrays, blob, "live_embedding", "int16", 2, shape);
  if (shape[0] != static_cast<int64_t>(c.live_ids.size()) || shape[1] != c.dim)
    r.fail("live_embedding must have a row per live id and the photos' width");
  // 4095^2 * 128 < 2^31: the GSUs' integer dot products cannot overflow (gsu.py EMBEDDING_LEVELS).
  if (c.dim < 1 || c.dim > 128) r.fail("embedding width must be 1 to 128");
  c.categories = r.texts(root, "categories");
  c.live_types = r.texts(root, "live_types");
  element history = r.member(root, "history");
  c.max_events = r.integer(history, "max_events");
  c.short_long_view_ms = r.integer(history, "short_long_view_ms");
  c.live_long_view_ms = r.integer(history, "live_long_view_ms");
  c.gsu_length = r.integer(root, "gsu_length");
  c.tz_offset_hours = r.integer(root, "tz_offset_hours");
  element contract = r.member(root, "contract");
  c.domain_short = r.integer(contract, "short");
  c.domain_live = r.integer(contract, "live");
  c.log_buckets = r.integer(contract, "log_buckets");
  if (c.max_events < 1 || c.gsu_length < 1 || c.log_buckets < 1) r.fail("max_events, gsu_length and log_buckets must be positive");
  return c;
}

}  // namespace ranker::features
