#include "rank_service.hpp"

#include <chrono>

#include "convert.hpp"

namespace ranker::service {
namespace {

grpc::StatusCode code_of(RankFailure::Kind kind) {
  switch (kind) {
    case RankFailure::Kind::InvalidRequest: return grpc::StatusCode::INVALID_ARGUMENT;
    case RankFailure::Kind::Unavailable: return grpc::StatusCode::UNAVAILABLE;
    case RankFailure::Kind::Model: return grpc::StatusCode::INTERNAL;
    case RankFailure::Kind::Internal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::INTERNAL;
}

const char* name_of(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    default: return "UNKNOWN";
  }
}

}  // namespace

grpc::Status RankService::StreamedRank(
    grpc::ServerContext*,
    grpc::ServerUnaryStreamer<moment_cross::ranker::v1::RankRequest, moment_cross::ranker::v1::RankResponse>* stream) {
  const auto start = std::chrono::steady_clock::now();
  metrics_.in_flight(+1);
  grpc::Status status;
  moment_cross::ranker::v1::RankRequest message;
  moment_cross::ranker::v1::RankResponse answer;
  Engine* engine = engine_.load();
  if (!stream->Read(&message)) {
    status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the request's bytes do not parse as a moment_cross.ranker.v1.RankRequest (truncated, "
                          "corrupt, or another message)");
  } else if (engine == nullptr) {
    status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "no model loaded yet");
  } else {
    try {
      RequestInput input = to_input(message);
      metrics_.stage_done("convert", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      Ranking ranking = engine->rank(input);
      const auto encode = std::chrono::steady_clock::now();
      to_proto(ranking, &answer);
      metrics_.stage_done("encode", std::chrono::duration<double>(std::chrono::steady_clock::now() - encode).count());
    } catch (const RankFailure& e) {
      status = grpc::Status(code_of(e.kind), e.what());
    } catch (const std::exception& e) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what());
    }
  }
  if (status.ok()) stream->Write(answer);
  metrics_.in_flight(-1);
  metrics_.request_done(name_of(status.error_code()),
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return status;
}

}  // namespace ranker::service
