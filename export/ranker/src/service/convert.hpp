// The proto request as the JSON value the validator reads, and a ranking as the proto answer. The
// request keeps the JSON contract's shape (user / candidates / ids / dense / sequences), so the same
// rules, in the same order, give the same messages as the JSON tool.
#pragma once

#include "engine.hpp"
#include "json.hpp"
#include "ranker.pb.h"

namespace ranker::service {

json::Value to_json(const moment_cross::ranker::v1::RankRequest& request);
void to_proto(const Ranking& ranking, moment_cross::ranker::v1::RankResponse* response);

}  // namespace ranker::service
