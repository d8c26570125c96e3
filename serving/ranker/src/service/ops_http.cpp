#include "ops_http.hpp"

#include <stdexcept>

#include <httplib.h>

namespace ranker::service {

OpsHttp::OpsHttp(const std::string& host, int port, const std::string& healthz_path, const std::string& metrics_path,
                 std::function<bool()> serving, const Metrics& metrics)
    : server_(std::make_unique<httplib::Server>()) {
  server_->Get(healthz_path, [serving](const httplib::Request&, httplib::Response& res) {
    bool up = serving();
    res.status = up ? 200 : 503;
    res.set_content(up ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
  });
  server_->Get(metrics_path, [&metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.prometheus_text(), "text/plain; version=0.0.4");
  });
  port_ = port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (port_ < 0) throw std::runtime_error("cannot bind the HTTP port " + host + ":" + std::to_string(port));
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

OpsHttp::~OpsHttp() { stop(); }

void OpsHttp::stop() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace ranker::service
