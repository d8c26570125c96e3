#include "engine.hpp"

#include <ATen/Parallel.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "batcher.hpp"
#include "features/layout.hpp"
#include "features/served_log.hpp"
#include "features/state.hpp"
#include "model_store.hpp"
#include "operator_libraries.hpp"
#include "ranking.hpp"

namespace ranker {

void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
#endif
}

struct Engine::Impl {
  Impl(const EngineOptions& o, Metrics& m, const features::FeatureState* f, features::ServedLog* log)
      : options(o),
        metrics(m),
        features(f),
        served_log(log),
        libraries(load_operator_libraries(o.ops_dir, o.verbose)),
        store(o.model_dir, store_options(o, m)),
        batcher(BatcherOptions{o.workers, o.intra_op_threads, o.max_batch_candidates,
                               std::chrono::microseconds(o.max_delay_us)},
                &m) {
    metrics.set_generation(store.current()->generation);
    metrics.set_push(store.current()->forward->version());
  }

  static ModelStoreOptions store_options(const EngineOptions& o, Metrics& m) {
    ModelStoreOptions s;
    s.format = o.format;
    s.check_every = std::chrono::milliseconds(o.reload_check_ms);
    s.concurrent_calls = static_cast<size_t>(std::max(1, o.workers));
    const int threads = o.intra_op_threads;
    s.check = [threads](const LoadedModel& model) {
      at::set_num_threads(threads);  // the thread that loads warms up as the workers will run
      warm_up(model);
    };
    s.on_reload = [&m](bool ok, int64_t generation, int64_t push) { m.reload_done(ok, generation, push); };
    s.push_check_every = std::chrono::milliseconds(o.push_check_ms);
    s.on_push = [&m](const PushOutcome& outcome) { m.push_done(outcome); };
    return s;
  }

  // The ids-only form: the features of the request's candidates, assembled from the live state
  // (kept in `assembled` for the served-features log).
  ValidRequest from_ids(const RequestInput& input, const ModelMeta& meta, features::Assembled& assembled) {
    if (input.user || !input.candidates.empty())
      throw RequestError("a request is ids-only (ids) or full-feature (user, candidates), not both");
    if (features == nullptr)
      throw RequestError("ids: this ranker has no feature state; send the full-feature form (user, candidates), or "
                         "start the ranker with --features-catalog");
    const IdsInput& ids = *input.ids;
    if (static_cast<int64_t>(ids.live_ids.size()) > meta.max_candidates)
      throw RequestError(std::to_string(ids.live_ids.size()) + " candidates, more than the limit of " +
                         std::to_string(meta.max_candidates));
    try {
      assembled = features->assemble(ids.user_id, ids.request_ts.value_or(features->answerable_ms()), ids.live_ids);
    } catch (const features::FeatureLagError& e) {
      throw RankFailure(RankFailure::Kind::Unavailable, std::string("ids.") + e.what());
    } catch (const features::FeatureError& e) {
      throw RequestError(std::string("ids.") + e.what());
    }
    if (!assembled.known_user) metrics.unknown_user();
    metrics.stage_done("features", assembled.total_seconds);
    return features::lay_out(assembled, meta, input.request_id);
  }

  EngineOptions options;
  Metrics& metrics;
  const features::FeatureState* features;
  features::ServedLog* served_log;
  int libraries;
  ModelStore store;
  Batcher batcher;
};

Engine::Engine(const EngineOptions& options, Metrics& metrics, const features::FeatureState* features,
               features::ServedLog* served_log)
    : impl_(std::make_unique<Impl>(options, metrics, features, served_log)) {}

Engine::~Engine() = default;

void Engine::stop() { impl_->batcher.stop(); }

EngineInfo Engine::info() const {
  auto model = impl_->store.current();
  return EngineInfo{impl_->options.model_dir, model->format,          model->meta.run_id,
                    model->generation,        model->forward->version(), model->meta.export_id,
                    model->meta.tasks.size(), impl_->libraries};
}

Ranking Engine::rank(const RequestInput& input) {
  auto model = impl_->store.current();  // one model for the whole request, even if a reload lands meanwhile
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  Scores scores;
  features::Assembled assembled;
  try {
    ValidRequest request = input.ids ? impl_->from_ids(input, model->meta, assembled) : validate(input, model->meta);
    // An ids-only request's assembly is its own stage ("features"); the layout is its "validate".
    impl_->metrics.stage_done("validate",
                              std::chrono::duration<double>(clock::now() - t0).count() - assembled.total_seconds);
    scores = impl_->batcher.score(model, std::move(request));
  } catch (const BatcherStopped& e) {
    throw RankFailure(RankFailure::Kind::Unavailable, e.what());
  } catch (...) {
    throw failure_of(std::current_exception());
  }
  const auto t1 = clock::now();
  const float* prob = scores.probabilities.data_ptr<float>();
  const float* score = scores.score.data_ptr<float>();
  const int64_t n = scores.score.size(0);
  const size_t t = model->meta.tasks.size();
  Ranking ranking{input.request_id, model->generation, scores.version, model->meta.export_id, model->meta.tasks, {},
                  scores.forward_seconds, scores.intra_op_threads};
  ranking.ranked.reserve(n);
  for (int64_t i : ranked_order(score, n))
    ranking.ranked.push_back(RankedCandidate{i, score[i], std::vector<float>(prob + i * t, prob + (i + 1) * t)});
  impl_->metrics.stage_done("rank", std::chrono::duration<double>(clock::now() - t1).count());
  // What was served, by the version that served it; where the log is waited for, no answer without it.
  if (input.ids && impl_->served_log != nullptr &&
      !impl_->served_log->log(features::ServedRecord{input.request_id.value_or(""), input.ids->user_id,
                                                     assembled.request_ts, assembled.state_clock_ms,
                                                     ranking.export_id, ranking.push, std::move(assembled), nullptr}))
    throw RankFailure(RankFailure::Kind::Unavailable,
                      "the served-features log could not be written in time: not answered, so that no answer "
                      "goes without its features (retry)");
  return ranking;
}

}  // namespace ranker
