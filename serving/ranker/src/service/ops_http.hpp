// The operations port: GET <healthz path> answers 200 "SERVING" or 503 "NOT_SERVING" (as the gRPC
// health service does), GET <metrics path> the Prometheus text. Anything else is 404.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "metrics.hpp"

namespace httplib {
class Server;
}

namespace ranker::service {

class OpsHttp {
 public:
  // Binds now (throws std::runtime_error if it cannot) and serves on its own thread.
  OpsHttp(const std::string& host, int port, const std::string& healthz_path, const std::string& metrics_path,
          std::function<bool()> serving, const Metrics& metrics);
  ~OpsHttp();
  int port() const { return port_; }
  void stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace ranker::service
