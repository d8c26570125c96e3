#include "meta.hpp"

#include <simdjson.h>

#include <algorithm>
#include <stdexcept>

namespace ranker {
namespace {

// 5: export_id and updatable (pushes); export/artifact.py FORMAT_VERSION.
constexpr int64_t kFormatVersion = 5;

using simdjson::dom::element;

struct Reader {
  std::string file;

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(file + ": " + what); }

  element member(element obj, const std::string& key, const std::string& where) const {
    element v;
    if (!obj.is_object() || obj.at_key(key).get(v)) fail("missing field " + where + key);
    return v;
  }
  int64_t integer(element v, const std::string& where) const {
    int64_t out = 0;
    if (v.get_int64().get(out)) fail(where + " must be an integer");
    return out;
  }
  std::string text(element v, const std::string& where) const {
    std::string_view out;
    if (v.get_string().get(out)) fail(where + " must be a string");
    return std::string(out);
  }
  std::vector<std::string> texts(element v, const std::string& where) const {
    simdjson::dom::array items;
    if (v.get_array().get(items)) fail(where + " must be an array");
    std::vector<std::string> out;
    for (element item : items) out.push_back(text(item, where + "[]"));
    return out;
  }
};

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

ModelMeta ModelMeta::load(const std::filesystem::path& path) {
  Reader r{path.string()};
  simdjson::padded_string text;
  if (simdjson::padded_string::load(path.string()).get(text)) r.fail("cannot open");
  simdjson::dom::parser parser;
  element doc;
  if (auto error = parser.parse(text).get(doc)) r.fail(std::string("not valid JSON: ") + simdjson::error_message(error));
  int64_t version = r.integer(r.member(doc, "format_version", ""), "format_version");
  if (version != kFormatVersion)
    r.fail("format_version " + std::to_string(version) + " is not the " + std::to_string(kFormatVersion) +
           " this ranker reads; rebuild the ranker or re-export the model (make export)");

  element layout = r.member(r.member(doc, "request_layout", ""), "user", "request_layout.");
  auto user_ids = r.texts(r.member(layout, "ids", "request_layout.user."), "request_layout.user.ids");
  auto user_dense = r.texts(r.member(layout, "dense", "request_layout.user."), "request_layout.user.dense");
  auto user_gsus = r.texts(r.member(layout, "sequences", "request_layout.user."), "request_layout.user.sequences");

  ModelMeta meta;
  simdjson::dom::array ids;
  if (r.member(doc, "id_features", "").get_array().get(ids)) r.fail("id_features must be an array");
  for (element f : ids) {
    const std::string name = r.text(r.member(f, "name", "id_features[]."), "id_features[].name");
    PartFields& side = contains(user_ids, name) ? meta.user_fields : meta.candidate_fields;
    side.ids.push_back(name);
    side.id_rows.push_back(r.integer(r.member(f, "rows", "id_features[]."), "id_features[].rows"));
  }
  for (const auto& name : r.texts(r.member(doc, "dense_features", ""), "dense_features"))
    (contains(user_dense, name) ? meta.user_fields : meta.candidate_fields).dense.push_back(name);

  element gsus = r.member(doc, "gsus", "");
  for (const auto& name : r.texts(r.member(gsus, "names", "gsus."), "gsus.names"))
    (contains(user_gsus, name) ? meta.user_fields : meta.candidate_fields).sequences.push_back(name);
  meta.seq_len = r.integer(r.member(gsus, "length", "gsus."), "gsus.length");
  meta.sequence_fields = r.texts(r.member(gsus, "id_fields", "gsus."), "gsus.id_fields");
  meta.n_id_fields = static_cast<int64_t>(meta.sequence_fields.size());
  for (const auto& field : r.texts(r.member(gsus, "side_fields", "gsus."), "gsus.side_fields"))
    meta.sequence_fields.push_back(field);
  element rows = r.member(gsus, "rows", "gsus.");
  for (const auto& field : meta.sequence_fields)
    meta.sequence_rows.push_back(r.integer(r.member(rows, field, "gsus.rows."), "gsus.rows." + field));
  meta.tasks = r.texts(r.member(doc, "tasks", ""), "tasks");
  meta.max_candidates = r.integer(r.member(doc, "max_candidates", ""), "max_candidates");
  simdjson::dom::object files;
  if (r.member(doc, "files", "").get_object().get(files) || files.size() == 0)
    r.fail("files must be an object naming at least one model file");
  for (auto [key, value] : files) {
    const std::string format(key);
    if (format != "torchscript" && format != "aoti")
      r.fail("files." + format + ": unknown model format (this ranker reads torchscript and aoti)");
    std::string name = r.text(value, "files." + format);
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
      r.fail("files." + format + " must be a plain file name in the export directory, got '" + name + "'");
    meta.files[format] = name;
  }
  meta.export_id = r.text(r.member(doc, "export_id", ""), "export_id");
  if (meta.export_id.empty() || meta.export_id.find_first_not_of("0123456789abcdef") != std::string::npos)
    r.fail("export_id must be lowercase hexadecimal, got '" + meta.export_id + "'");
  element updatable = r.member(doc, "updatable", "");
  meta.updatable_fingerprint = r.text(r.member(updatable, "fingerprint", "updatable."), "updatable.fingerprint");
  simdjson::dom::object tables, dense;
  if (r.member(updatable, "tables", "updatable.").get_object().get(tables)) r.fail("updatable.tables must be an object");
  for (auto [key, value] : tables) {
    const std::string where = "updatable.tables." + std::string(key) + ".";
    meta.updatable_tables[std::string(key)] = {r.integer(r.member(value, "rows", where), where + "rows"),
                                               r.integer(r.member(value, "dim", where), where + "dim")};
  }
  if (r.member(updatable, "dense", "updatable.").get_object().get(dense)) r.fail("updatable.dense must be an object");
  for (auto [key, value] : dense) {
    simdjson::dom::array shape;
    if (value.get_array().get(shape)) r.fail("updatable.dense." + std::string(key) + " must be a shape (an array)");
    auto& out = meta.updatable_dense[std::string(key)];
    for (element d : shape) out.push_back(r.integer(d, "updatable.dense." + std::string(key) + "[]"));
  }
  std::string_view run_id;
  if (!doc.at_pointer("/training/run_id").get_string().get(run_id)) meta.run_id = std::string(run_id);
  return meta;
}

}  // namespace ranker
