// The gRPC front end's wire format: a proto request as the RequestInput every front end fills (the
// same names and values the JSON tool reads), and a ranking as the proto answer.
#pragma once

#include "engine.hpp"
#include "ranker.pb.h"

namespace ranker::service {

// Names view `request`'s strings: validate before it goes.
RequestInput to_input(const moment_cross::ranker::v1::RankRequest& request);
void to_proto(const Ranking& ranking, moment_cross::ranker::v1::RankResponse* response);

}  // namespace ranker::service
