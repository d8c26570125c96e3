// ranker_server --model artifacts/<name> [--port 50051] [--http-port 8080] ...
//
// The ranker as a network service: the Ranker gRPC service (proto/ranker.proto) and the standard
// grpc.health.v1 health service on one port, /healthz and /metrics (Prometheus) over HTTP on
// another, both on loopback unless told. The ports open at once; health says NOT_SERVING until the
// model has loaded and warmed up, then SERVING. SIGTERM or SIGINT: health turns NOT_SERVING, calls
// are still answered for --drain-ms (so load balancers can stop sending), then no new call is
// accepted, the ones in flight finish, and the process exits 0.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "engine.hpp"
#include "metrics.hpp"
#include "ops_http.hpp"
#include "rank_service.hpp"

#ifndef RANKER_DEFAULT_OPS_DIR
#define RANKER_DEFAULT_OPS_DIR ""
#endif

namespace {

const char* kServiceName = "moment_cross.ranker.v1.Ranker";

struct Options {
  ranker::EngineOptions engine;
  std::string host = "127.0.0.1";
  int port = 50051;
  int http_port = 8080;
  std::string healthz_path = "/healthz";
  std::string metrics_path = "/metrics";
  int max_request_bytes = 8 << 20;
  int drain_ms = 0;
  int shutdown_timeout_ms = 10000;
};

const char* kUsage =
    "usage: ranker_server --model DIR [options]\n"
    "  --model DIR               an export: DIR/model.json and the model file(s) it lists (make export)\n"
    "  --format F                auto (the AOTInductor package if the export has one) | torchscript | aoti\n"
    "  --host H                  address to bind both ports to (default 127.0.0.1; 0.0.0.0 = every interface)\n"
    "  --port N                  gRPC port: Ranker and grpc.health.v1 (default 50051; 0 = any free port)\n"
    "  --http-port N             HTTP port for the health and metrics paths (default 8080; 0 = any free port)\n"
    "  --healthz-path P          (default /healthz)     --metrics-path P   (default /metrics)\n"
    "  --workers N               threads running forwards (default 1)\n"
    "  --intra-op-threads N      intra-op threads per worker (default 1)\n"
    "  --max-batch-candidates N  most candidates merged into one forward (default 512;\n"
    "                            on CPU a forward costs more per candidate beyond a few hundred)\n"
    "  --max-delay-us N          how long a forward waits for more requests to merge (default 0: it takes\n"
    "                            what is queued when a worker is free; no added latency when idle)\n"
    "  --max-request-bytes N     largest request message (default 8 MiB; larger: RESOURCE_EXHAUSTED)\n"
    "  --reload-check-ms MS      how often to look for a newer export (default 1000; 0 = never)\n"
    "  --drain-ms MS             after SIGTERM, keep answering this long while health says NOT_SERVING (default 0)\n"
    "  --shutdown-timeout-ms MS  then wait this long for calls in flight before cancelling them (default 10000)\n"
    "  --ops-dir DIR             fbgemm operator libraries (default: $RANKER_OPS_DIR or the build's fbgemm_gpu)\n"
    "  --verbose\n";

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "ranker_server: " << what << "\n" << kUsage;
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  const char* env_ops = std::getenv("RANKER_OPS_DIR");
  o.engine.ops_dir = env_ops ? env_ops : RANKER_DEFAULT_OPS_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    auto number = [&](int64_t min) -> int64_t {
      std::string v = value();
      int64_t n = 0;
      try {
        size_t used = 0;
        n = std::stoll(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
      } catch (...) {
        usage_error(a + " needs a number, got " + v);
      }
      if (n < min) usage_error(a + " must be at least " + std::to_string(min));
      return n;
    };
    if (a == "--model") o.engine.model_dir = value();
    else if (a == "--format") o.engine.format = value();
    else if (a == "--ops-dir") o.engine.ops_dir = value();
    else if (a == "--host") o.host = value();
    else if (a == "--port") o.port = static_cast<int>(number(0));
    else if (a == "--http-port") o.http_port = static_cast<int>(number(0));
    else if (a == "--healthz-path") o.healthz_path = value();
    else if (a == "--metrics-path") o.metrics_path = value();
    else if (a == "--workers") o.engine.workers = static_cast<int>(number(1));
    else if (a == "--intra-op-threads") o.engine.intra_op_threads = static_cast<int>(number(1));
    else if (a == "--max-batch-candidates") o.engine.max_batch_candidates = number(1);
    else if (a == "--max-delay-us") o.engine.max_delay_us = number(0);
    else if (a == "--max-request-bytes") o.max_request_bytes = static_cast<int>(number(1));
    else if (a == "--reload-check-ms") o.engine.reload_check_ms = static_cast<int>(number(0));
    else if (a == "--drain-ms") o.drain_ms = static_cast<int>(number(0));
    else if (a == "--shutdown-timeout-ms") o.shutdown_timeout_ms = static_cast<int>(number(0));
    else if (a == "--verbose") o.engine.verbose = true;
    else if (a == "--help" || a == "-h") { std::cout << kUsage; std::exit(0); }
    else usage_error("unknown argument " + a);
  }
  if (o.engine.model_dir.empty()) usage_error("--model is required");
  if (o.engine.ops_dir.empty()) usage_error("no --ops-dir and none built in");
  for (const auto* path : {&o.healthz_path, &o.metrics_path})
    if (path->empty() || (*path)[0] != '/') usage_error("HTTP paths must start with '/', got '" + *path + "'");
  if (o.healthz_path == o.metrics_path) usage_error("--healthz-path and --metrics-path must differ");
  return o;
}

std::string address(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

int main(int argc, char** argv) {
  ranker::keep_freed_memory();
  Options o = parse_args(argc, argv);
  // Signals are taken by sigwait below: block them before any thread starts, so every thread inherits it.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ranker::Metrics metrics;
  ranker::service::RankService service(metrics);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(address(o.host, o.port), grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(o.max_request_bytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    std::cerr << "ranker_server: cannot listen on " << address(o.host, o.port) << std::endl;
    return 2;
  }
  auto* health = server->GetHealthCheckService();
  auto set_health = [&](bool up) {
    health->SetServingStatus(up);
    health->SetServingStatus(kServiceName, up);
  };
  set_health(false);
  std::atomic<bool> serving{false};
  std::unique_ptr<ranker::service::OpsHttp> http;
  try {
    http = std::make_unique<ranker::service::OpsHttp>(o.host, o.http_port, o.healthz_path, o.metrics_path,
                                                      [&serving] { return serving.load(); }, metrics);
  } catch (const std::exception& e) {
    std::cerr << "ranker_server: " << e.what() << std::endl;
    server->Shutdown();
    return 2;
  }
  std::cerr << "ranker_server: listening grpc=" << address(o.host, grpc_port)
            << " http=" << address(o.host, http->port()) << std::endl;

  std::unique_ptr<ranker::Engine> engine;
  try {
    engine = std::make_unique<ranker::Engine>(o.engine, metrics);
  } catch (const std::exception& e) {
    std::cerr << "ranker_server: " << e.what() << std::endl;
    server->Shutdown();
    http->stop();
    return 1;
  }
  auto info = engine->info();
  service.attach(engine.get());
  serving = true;
  set_health(true);
  std::cerr << "ranker_server: serving " << info.model_dir << " (run " << info.run_id << ", " << info.format << ", "
            << info.tasks << " tasks, " << o.engine.workers << " workers x " << o.engine.intra_op_threads
            << " intra-op threads, " << info.operator_libraries << " operator libraries)" << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cerr << "ranker_server: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") << ": draining for "
            << o.drain_ms << " ms, then shutting down" << std::endl;
  serving = false;
  set_health(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(o.drain_ms));
  // Stops accepting calls and waits for those in flight, cancelling any still running at the deadline.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(o.shutdown_timeout_ms));
  engine->stop();
  http->stop();
  std::cerr << "ranker_server: stopped" << std::endl;
  return 0;
}
