// The Ranker gRPC service: each call is converted, ranked by the engine, counted, and answered with
// the status its outcome maps to. Until an engine is attached (the model is still loading) and after
// shutdown has begun, calls get UNAVAILABLE.
#pragma once

#include <atomic>

#include "engine.hpp"
#include "metrics.hpp"
#include "ranker.grpc.pb.h"

namespace ranker::service {

// Rank is served as a "streamed unary" method: the handler reads the message itself, so bytes that do
// not parse as a RankRequest are answered INVALID_ARGUMENT saying so (gRPC's own unary handler answers
// them INTERNAL with an empty message: what monitoring counts as a server fault).
class RankService final
    : public moment_cross::ranker::v1::Ranker::WithStreamedUnaryMethod_Rank<moment_cross::ranker::v1::Ranker::Service> {
 public:
  explicit RankService(Metrics& metrics) : metrics_(metrics) {}
  void attach(Engine* engine) { engine_ = engine; }

  grpc::Status StreamedRank(grpc::ServerContext* context,
                            grpc::ServerUnaryStreamer<moment_cross::ranker::v1::RankRequest,
                                                      moment_cross::ranker::v1::RankResponse>* stream) override;

 private:
  Metrics& metrics_;
  std::atomic<Engine*> engine_{nullptr};
};

}  // namespace ranker::service
