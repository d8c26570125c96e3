// The Ranker gRPC service: each call is converted, ranked by the engine, counted, and answered with
// the status its outcome maps to. Until an engine is attached (the model is still loading) and after
// shutdown has begun, calls get UNAVAILABLE.
#pragma once

#include <atomic>

#include "engine.hpp"
#include "metrics.hpp"
#include "ranker.grpc.pb.h"

namespace ranker::service {

class RankService final : public moment_cross::ranker::v1::Ranker::Service {
 public:
  explicit RankService(Metrics& metrics) : metrics_(metrics) {}
  void attach(Engine* engine) { engine_ = engine; }

  grpc::Status Rank(grpc::ServerContext* context, const moment_cross::ranker::v1::RankRequest* request,
                    moment_cross::ranker::v1::RankResponse* response) override;

 private:
  Metrics& metrics_;
  std::atomic<Engine*> engine_{nullptr};
};

}  // namespace ranker::service
