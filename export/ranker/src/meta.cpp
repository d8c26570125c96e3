#include "meta.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "json.hpp"

namespace ranker {
namespace {

constexpr int64_t kFormatVersion = 3;

struct Reader {
  std::string file;

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(file + ": " + what); }

  const json::Value& member(const json::Value& obj, const std::string& key, const std::string& where) const {
    const json::Value* v = obj.is_object() ? obj.find(key) : nullptr;
    if (v == nullptr) fail("missing field " + where + key);
    return *v;
  }
  int64_t integer(const json::Value& v, const std::string& where) const {
    int64_t out = 0;
    if (!v.integer(out)) fail(where + " must be an integer");
    return out;
  }
  std::string text(const json::Value& v, const std::string& where) const {
    if (!v.is_string()) fail(where + " must be a string");
    return v.string;
  }
  std::vector<std::string> texts(const json::Value& v, const std::string& where) const {
    if (!v.is_array()) fail(where + " must be an array");
    std::vector<std::string> out;
    for (const auto& item : v.items) out.push_back(text(item, where + "[]"));
    return out;
  }
};

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

ModelMeta ModelMeta::load(const std::filesystem::path& path) {
  Reader r{path.string()};
  std::ifstream in(path);
  if (!in) r.fail("cannot open");
  std::stringstream buffer;
  buffer << in.rdbuf();
  json::Value doc;
  try {
    doc = json::parse(buffer.str());
  } catch (const json::ParseError& e) {
    r.fail(std::string("not valid JSON: ") + e.what());
  }
  int64_t version = r.integer(r.member(doc, "format_version", ""), "format_version");
  if (version != kFormatVersion)
    r.fail("format_version " + std::to_string(version) + " is not the " + std::to_string(kFormatVersion) +
           " this ranker reads; rebuild the ranker or re-export the model");

  const auto& layout = r.member(r.member(doc, "request_layout", ""), "user", "request_layout.");
  auto user_ids = r.texts(r.member(layout, "ids", "request_layout.user."), "request_layout.user.ids");
  auto user_dense = r.texts(r.member(layout, "dense", "request_layout.user."), "request_layout.user.dense");
  auto user_gsus = r.texts(r.member(layout, "sequences", "request_layout.user."), "request_layout.user.sequences");

  ModelMeta meta;
  const auto& ids = r.member(doc, "id_features", "");
  if (!ids.is_array()) r.fail("id_features must be an array");
  for (const auto& f : ids.items) {
    IdFeature feature;
    feature.name = r.text(r.member(f, "name", "id_features[]."), "id_features[].name");
    feature.rows = r.integer(r.member(f, "rows", "id_features[]."), "id_features[].rows");
    feature.from_user = contains(user_ids, feature.name);
    meta.id_features.push_back(feature);
  }
  for (const auto& name : r.texts(r.member(doc, "dense_features", ""), "dense_features"))
    meta.dense_features.push_back({name, contains(user_dense, name)});

  const auto& gsus = r.member(doc, "gsus", "");
  for (const auto& name : r.texts(r.member(gsus, "names", "gsus."), "gsus.names"))
    meta.gsus.push_back({name, contains(user_gsus, name)});
  meta.seq_len = r.integer(r.member(gsus, "length", "gsus."), "gsus.length");
  meta.sequence_fields = r.texts(r.member(gsus, "id_fields", "gsus."), "gsus.id_fields");
  meta.n_id_fields = static_cast<int64_t>(meta.sequence_fields.size());
  for (const auto& field : r.texts(r.member(gsus, "side_fields", "gsus."), "gsus.side_fields"))
    meta.sequence_fields.push_back(field);
  const auto& rows = r.member(gsus, "rows", "gsus.");
  for (const auto& field : meta.sequence_fields)
    meta.sequence_rows.push_back(r.integer(r.member(rows, field, "gsus.rows."), "gsus.rows." + field));
  meta.tasks = r.texts(r.member(doc, "tasks", ""), "tasks");
  for (const auto& f : meta.id_features) (f.from_user ? meta.user_fields : meta.candidate_fields).ids.push_back(f.name);
  for (const auto& f : meta.dense_features)
    (f.from_user ? meta.user_fields : meta.candidate_fields).dense.push_back(f.name);
  for (const auto& g : meta.gsus) (g.from_user ? meta.user_fields : meta.candidate_fields).sequences.push_back(g.name);
  meta.max_candidates = r.integer(r.member(doc, "max_candidates", ""), "max_candidates");
  const auto& files = r.member(doc, "files", "");
  if (!files.is_object() || files.keys().empty()) r.fail("files must be an object naming at least one model file");
  for (size_t i = 0; i < files.keys().size(); ++i) {
    const std::string& format = files.keys()[i];
    if (format != "torchscript" && format != "aoti")
      r.fail("files." + format + ": unknown model format (this ranker reads torchscript and aoti)");
    std::string name = r.text(files.items[i], "files." + format);
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
      r.fail("files." + format + " must be a plain file name in the export directory, got '" + name + "'");
    meta.files[format] = name;
  }
  if (const auto* training = doc.find("training"); training != nullptr && training->is_object())
    if (const auto* id = training->find("run_id"); id != nullptr && id->is_string()) meta.run_id = id->string;
  return meta;
}

}  // namespace ranker
