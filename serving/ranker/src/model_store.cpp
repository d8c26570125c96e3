#include "model_store.hpp"

#include <iostream>
#include <vector>

namespace ranker {

ModelStore::ModelStore(std::filesystem::path dir, ModelStoreOptions options)
    : dir_(std::move(dir)), options_(std::move(options)) {
  // Started while an export is being put in place, the model files may already be the new export's
  // and model.json not yet: wait for it a little rather than fail.
  for (int attempt = 0;; ++attempt) {
    loaded_stamp_ = stamp();
    try {
      model_ = load(1, pushes_);
      break;
    } catch (const ExportMismatch& e) {
      if (attempt == 20) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (options_.check_every.count() > 0 || options_.push_check_every.count() > 0)
    watcher_ = std::thread([this] { watch(); });
}

ModelStore::~ModelStore() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

std::shared_ptr<const LoadedModel> ModelStore::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return model_;
}

ModelStore::Stamp ModelStore::Stamp::of(const std::filesystem::path& file) {
  std::error_code ec;
  Stamp s;
  s.mtime = std::filesystem::last_write_time(file, ec);
  if (!ec) s.size = std::filesystem::file_size(file, ec);
  return s;
}

ModelStore::Stamp ModelStore::stamp() const { return Stamp::of(dir_ / "model.json"); }

std::shared_ptr<LoadedModel> ModelStore::load(int64_t generation, PushState& pushes) {
  auto model = std::make_shared<LoadedModel>();
  model->meta = ModelMeta::load(dir_ / "model.json");
  model->format = choose_format(model->meta, options_.format, dir_);
  const auto file = dir_ / model->meta.files.at(model->format);
  model->forward = make_forward(model->format, file, options_.concurrent_calls);
  if (model->forward->export_id() != model->meta.export_id)
    throw ExportMismatch(file.string() + " belongs to export '" + model->forward->export_id() + "', " +
                         (dir_ / "model.json").string() + " to export '" + model->meta.export_id +
                         "': an export is being put in place (its model.json comes last), or the files are mixed");
  check_updatable(model->forward->idle_tensors(), model->meta, model->format);
  model->generation = generation;
  pushes = PushState{};
  // A replica started (or an export reloaded) after pushes were written catches up before it serves.
  if (options_.push_check_every.count() > 0) follow_pushes(*model, pushes);
  if (options_.check) options_.check(*model);
  return model;
}

int ModelStore::follow_pushes(const LoadedModel& model, PushState& state) {
  int applied = 0;
  if (state.stopped) return 0;
  while (!stop_) {
    const int64_t next = model.forward->version() + 1;
    const auto file = push_file(dir_, model.meta.export_id, next);
    const Stamp stamp = Stamp::of(file);
    if (stamp.size == 0) {  // not there (or still empty): a later one present means one is missing
      auto present = push_sequences(dir_, model.meta.export_id);
      int64_t later = 0;
      for (int64_t s : present)
        if (s > next && (later == 0 || s < later)) later = s;
      if (later && state.gap_reported_at != next) {
        state.gap_reported_at = next;
        PushOutcome gap{PushOutcome::Result::Gap, "gap",
                        "push " + std::to_string(next) + " is missing and push " + std::to_string(later) +
                            " is present: waiting for push " + std::to_string(next) + ", applying nothing after it",
                        next};
        std::cerr << "ranker: " << gap.message << std::endl;
        if (options_.on_push) options_.on_push(gap);
      }
      break;
    }
    if (state.refused_sequence == next && state.refused_stamp == stamp) break;  // refused, not replaced since
    const auto t0 = std::chrono::steady_clock::now();
    try {
      Push push = read_push(file, model.meta, next);
      auto write_idle = [&] {
        auto idle = model.forward->idle_tensors();
        write_push(push, idle);
        model.forward->refresh_idle();
      };
      write_idle();
      model.forward->publish(next);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      write_idle();  // the copy that served until now takes the same push: the next one finds both equal
      ++applied;
      const auto serving_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count();
      std::cerr << "ranker: push " << next << " serving at " << serving_ms << " ms (" << push.rows << " rows, "
                << push.bytes << " bytes, applied in " << seconds * 1e3 << " ms; its newest batch learned at "
                << push.learned_unix_ms << " ms)" << std::endl;
      if (options_.on_push)
        options_.on_push(PushOutcome{PushOutcome::Result::Applied, "", "", next, seconds, push.rows, push.bytes,
                                     push.data_time_ms, push.learned_unix_ms});
    } catch (const PushRefused& e) {
      state.refused_sequence = next;
      state.refused_stamp = stamp;
      std::cerr << "ranker: push refused (" << e.reason << "), still serving push " << next - 1 << ": " << e.what()
                << std::endl;
      if (options_.on_push) options_.on_push(PushOutcome{PushOutcome::Result::Refused, e.reason, e.what(), next});
      break;
    }
  }
  return applied;
}

void ModelStore::watch() {
  using clock = std::chrono::steady_clock;
  auto next_reload = clock::now(), next_push = clock::now();
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // short naps: shutdown stays prompt
    const auto now = clock::now();
    if (options_.push_check_every.count() > 0 && now >= next_push) {
      next_push = now + options_.push_check_every;
      auto model = current();
      try {
        follow_pushes(*model, pushes_);
      } catch (const std::exception& e) {
        // Not a refusal: writing a checked push failed. The idle copy may be half written, so no
        // further push is applied to this export; the next full export starts clean.
        std::cerr << "ranker: applying a push failed; pushes stop until the next export: " << e.what() << std::endl;
        pushes_.stopped = true;
        if (options_.on_push)
          options_.on_push(PushOutcome{PushOutcome::Result::Refused, "internal", e.what(), model->forward->version() + 1});
      }
    }
    if (options_.check_every.count() == 0 || now < next_reload) continue;
    next_reload = now + options_.check_every;
    Stamp now_stamp = stamp();
    if (now_stamp == loaded_stamp_ || now_stamp.size == 0) continue;
    loaded_stamp_ = now_stamp;  // a broken export is reported once, not on every check
    int64_t generation = current()->generation + 1;
    try {
      PushState pushes;
      auto fresh = load(generation, pushes);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        model_ = fresh;
      }
      pushes_ = pushes;
      std::cerr << "ranker: reloaded " << dir_.string() << " (generation " << generation << ", " << fresh->format
                << ", run " << fresh->meta.run_id << ", export " << fresh->meta.export_id << ", push "
                << fresh->forward->version() << ")" << std::endl;
      if (options_.on_reload) options_.on_reload(true, generation, fresh->forward->version());
    } catch (const std::exception& e) {
      std::cerr << "ranker: keeping the current model; the new export failed to load: " << e.what() << std::endl;
      if (options_.on_reload) options_.on_reload(false, generation - 1, current()->forward->version());
    }
  }
}

}  // namespace ranker
