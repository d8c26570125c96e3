#include "push.hpp"

#include <simdjson.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>
#include <system_error>
#include <vector>

namespace ranker {
namespace {

constexpr const char* kFormat = "moment-cross-push";
constexpr int64_t kFormatVersion = 1;  // export/push.py PUSH_FORMAT_VERSION

using simdjson::dom::element;

std::string shape_text(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

struct Header {
  std::map<std::string, std::string> metadata;
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
  };
  std::map<std::string, Entry> tensors;
};

Header parse_header(std::string_view json, const std::string& where) {
  auto refuse = [&](const std::string& what) -> PushRefused { return PushRefused("format", where + ": " + what); };
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  element doc;
  if (parser.parse(padded).get(doc)) throw refuse("the header is not valid JSON");
  simdjson::dom::object top;
  if (doc.get_object().get(top)) throw refuse("the header is not a JSON object");
  Header header;
  for (auto [key, value] : top) {
    const std::string name(key);
    if (name == "__metadata__") {
      simdjson::dom::object meta;
      if (value.get_object().get(meta)) throw refuse("__metadata__ is not an object");
      for (auto [k, v] : meta) {
        std::string_view text;
        if (v.get_string().get(text)) throw refuse("__metadata__." + std::string(k) + " is not a string");
        header.metadata[std::string(k)] = std::string(text);
      }
      continue;
    }
    Header::Entry entry;
    std::string_view dtype;
    simdjson::dom::array shape, offsets;
    if (value["dtype"].get_string().get(dtype) || value["shape"].get_array().get(shape) ||
        value["data_offsets"].get_array().get(offsets) || offsets.size() != 2)
      throw refuse("tensor '" + name + "' lacks dtype, shape or data_offsets [begin, end]");
    entry.dtype = std::string(dtype);
    for (element d : shape) {
      int64_t n = 0;
      if (d.get_int64().get(n) || n < 0) throw refuse("tensor '" + name + "' has a bad shape");
      entry.shape.push_back(n);
    }
    if (offsets.at(0).get_uint64().get(entry.begin) || offsets.at(1).get_uint64().get(entry.end) ||
        entry.begin > entry.end)
      throw refuse("tensor '" + name + "' has bad data_offsets");
    header.tensors[name] = entry;
  }
  return header;
}

int64_t metadata_integer(const Header& header, const std::string& key, const std::string& where) {
  auto it = header.metadata.find(key);
  if (it == header.metadata.end()) throw PushRefused("format", where + ": __metadata__ has no " + key);
  int64_t value = 0;
  size_t used = 0;
  try {
    value = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != it->second.size())
    throw PushRefused("format", where + ": __metadata__." + key + " is not an integer: '" + it->second + "'");
  return value;
}

std::string metadata_text(const Header& header, const std::string& key, const std::string& where) {
  auto it = header.metadata.find(key);
  if (it == header.metadata.end()) throw PushRefused("format", where + ": __metadata__ has no " + key);
  return it->second;
}

}  // namespace

std::filesystem::path push_file(const std::filesystem::path& export_dir, const std::string& export_id, int64_t sequence) {
  std::ostringstream name;
  name << std::setw(10) << std::setfill('0') << sequence << ".push";
  return export_dir / "pushes" / export_id / name.str();
}

std::vector<int64_t> push_sequences(const std::filesystem::path& export_dir, const std::string& export_id) {
  std::vector<int64_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(export_dir / "pushes" / export_id, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 15 || name.compare(10, 5, ".push") != 0) continue;  // temporaries start with '.'
    if (name.find_first_not_of("0123456789") < 10) continue;
    out.push_back(std::stoll(name.substr(0, 10)));
  }
  return out;
}

Push read_push(const std::filesystem::path& file, const ModelMeta& meta, int64_t sequence) {
  const std::string where = file.string();
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  if (!in) throw PushRefused("io", where + ": cannot open");
  std::vector<char> bytes(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    throw PushRefused("io", where + ": cannot read " + std::to_string(bytes.size()) + " bytes");
  if (bytes.size() < 8) throw PushRefused("format", where + ": " + std::to_string(bytes.size()) + " bytes, not a push");
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_length > bytes.size() - 8)
    throw PushRefused("format", where + ": the header claims " + std::to_string(header_length) + " bytes of " +
                                    std::to_string(bytes.size() - 8));
  const Header header = parse_header(std::string_view(bytes.data() + 8, header_length), where);
  const char* data = bytes.data() + 8 + header_length;
  const uint64_t data_size = bytes.size() - 8 - header_length;

  if (metadata_text(header, "format", where) != kFormat)
    throw PushRefused("format", where + ": not a " + std::string(kFormat) + " file");
  const int64_t version = metadata_integer(header, "format_version", where);
  if (version != kFormatVersion)
    throw PushRefused("format", where + ": push format " + std::to_string(version) + ", this ranker reads " +
                                    std::to_string(kFormatVersion));
  // The checksum first: a damaged file says nothing trustworthy about anything else.
  const int64_t crc = metadata_integer(header, "crc32", where);
  uLong actual = crc32(0L, Z_NULL, 0);
  for (uint64_t at = 0; at < data_size;) {  // zlib takes lengths as uInt
    const uInt n = static_cast<uInt>(std::min<uint64_t>(data_size - at, 1u << 30));
    actual = crc32(actual, reinterpret_cast<const Bytef*>(data + at), n);
    at += n;
  }
  if (static_cast<int64_t>(actual) != crc)
    throw PushRefused("checksum", where + ": CRC-32 of the data is " + std::to_string(actual) + ", the header says " +
                                      std::to_string(crc));
  const std::string export_id = metadata_text(header, "export_id", where);
  if (export_id != meta.export_id)
    throw PushRefused("base", where + ": written for export " + export_id + ", the model serving is export " +
                                  meta.export_id);
  const std::string fingerprint = metadata_text(header, "fingerprint", where);
  if (fingerprint != meta.updatable_fingerprint)
    throw PushRefused("shape", where + ": written for model shape " + fingerprint + ", the model serving has shape " +
                                   meta.updatable_fingerprint + " (model.json updatable.fingerprint)");
  Push push;
  push.file = file;
  push.sequence = metadata_integer(header, "sequence", where);
  if (push.sequence != sequence)
    throw PushRefused("sequence", where + ": holds push " + std::to_string(push.sequence) + " where push " +
                                      std::to_string(sequence) + " is due");
  push.data_time_ms = metadata_integer(header, "data_time_ms", where);
  push.learned_unix_ms = metadata_integer(header, "learned_unix_ms", where);
  push.bytes = static_cast<int64_t>(bytes.size());
  const bool dense = metadata_integer(header, "dense", where) != 0;

  auto tensor = [&](const std::string& name, const Header::Entry& e, at::ScalarType type) {
    const char* expected = type == at::kLong ? "I64" : "F32";
    if (e.dtype != expected)
      throw PushRefused("tensor", where + ": " + name + " is " + e.dtype + ", not " + expected);
    int64_t count = 1;
    for (int64_t d : e.shape) {
      if (d != 0 && count > std::numeric_limits<int64_t>::max() / 8 / d)
        throw PushRefused("format", where + ": " + name + " is too large");
      count *= d;
    }
    const uint64_t size = static_cast<uint64_t>(count) * (type == at::kLong ? 8 : 4);
    if (e.end > data_size || e.end - e.begin != size)
      throw PushRefused("format", where + ": " + name + "'s data_offsets do not fit its shape or the file");
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(type));
    std::memcpy(t.data_ptr(), data + e.begin, size);
    return t;
  };
  // Checked on the raw values: a few ATen calls per tensor cost more than the pass itself.
  auto finite = [&](const std::string& name, const at::Tensor& t) {
    const float* v = t.data_ptr<float>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(v[i])) throw PushRefused("values", where + ": " + name + " holds a value that is not finite");
  };
  std::set<std::string> seen;
  for (const auto& [name, entry] : header.tensors) {
    const auto slash = name.find('/');
    const std::string kind = name.substr(0, slash), target = slash == std::string::npos ? "" : name.substr(slash + 1);
    if (kind == "rows" || kind == "values") {
      auto spec = meta.updatable_tables.find(target);
      if (spec == meta.updatable_tables.end())
        throw PushRefused("tensor", where + ": " + name + ": the model has no table " + target);
      if (!seen.insert(target).second) continue;  // both halves are read below, once
      auto rows_entry = header.tensors.find("rows/" + target);
      auto values_entry = header.tensors.find("values/" + target);
      if (rows_entry == header.tensors.end() || values_entry == header.tensors.end())
        throw PushRefused("tensor", where + ": table " + target + " needs both rows/ and values/");
      at::Tensor rows = tensor(rows_entry->first, rows_entry->second, at::kLong);
      at::Tensor values = tensor(values_entry->first, values_entry->second, at::kFloat);
      const int64_t n = rows.dim() == 1 ? rows.size(0) : -1;
      if (n < 0 || values.dim() != 2 || values.size(0) != n || values.size(1) != spec->second.dim)
        throw PushRefused("tensor", where + ": table " + target + ": rows " + shape_text(rows.sizes()) + " and values " +
                                        shape_text(values.sizes()) + " do not fit [n] and [n, " +
                                        std::to_string(spec->second.dim) + "]");
      const int64_t* row = rows.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i)
        if (row[i] < 0 || row[i] >= spec->second.rows)
          throw PushRefused("rows", where + ": table " + target + ": row " + std::to_string(row[i]) +
                                        " is out of range [0, " + std::to_string(spec->second.rows) + ")");
      std::vector<int64_t> sorted(row, row + n);
      std::sort(sorted.begin(), sorted.end());
      if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
        throw PushRefused("rows", where + ": table " + target + " lists a row twice");
      finite(values_entry->first, values);
      push.rows += n;
      push.tables[target] = {rows, values};
    } else if (kind == "dense") {
      auto spec = meta.updatable_dense.find(target);
      if (spec == meta.updatable_dense.end())
        throw PushRefused("tensor", where + ": " + name + ": the model has no such dense tensor");
      at::Tensor value = tensor(name, entry, at::kFloat);
      if (value.sizes() != at::IntArrayRef(spec->second))
        throw PushRefused("tensor", where + ": " + name + " is " + shape_text(value.sizes()) + ", the model's is " +
                                        shape_text(spec->second));
      finite(name, value);
      push.dense[target] = value;
    } else {
      throw PushRefused("tensor", where + ": unknown tensor '" + name + "' (rows/, values/ or dense/)");
    }
  }
  if (dense && push.dense.size() != meta.updatable_dense.size())
    throw PushRefused("tensor", where + ": a dense push must hold all " + std::to_string(meta.updatable_dense.size()) +
                                    " dense tensors, it holds " + std::to_string(push.dense.size()));
  if (!dense && !push.dense.empty()) throw PushRefused("format", where + ": dense tensors in a push marked dense=0");
  return push;
}

void write_push(const Push& push, std::map<std::string, at::Tensor>& tensors) {
  c10::InferenceMode guard;  // weights are written in place, never differentiated
  for (const auto& [name, update] : push.tables) {
    at::Tensor& table = tensors.at(name);
    if (update.first.numel()) table.index_copy_(0, update.first, update.second.to(table.scalar_type()));
  }
  for (const auto& [name, value] : push.dense) tensors.at(name).copy_(value);
}

void check_updatable(const std::map<std::string, at::Tensor>& tensors, const ModelMeta& meta, const std::string& format) {
  auto need = [&](const std::string& name, std::vector<int64_t> shape) {
    auto it = tensors.find(name);
    if (it == tensors.end())
      throw std::runtime_error("the " + format + " model has no tensor named " + name +
                               ", which pushes replace: an export whose weights were frozen or folded at compile "
                               "time cannot take pushes; export it with `make export`, which keeps them by name");
    if (it->second.sizes() != at::IntArrayRef(shape))
      throw std::runtime_error("the " + format + " model's " + name + " is " + shape_text(it->second.sizes()) +
                               ", model.json says " + shape_text(shape));
  };
  for (const auto& [name, table] : meta.updatable_tables) need(name, {table.rows, table.dim});
  for (const auto& [name, shape] : meta.updatable_dense) need(name, shape);
}

}  // namespace ranker
