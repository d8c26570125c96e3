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
#include "features/consumer.hpp"
#include "features/served_log.hpp"
#include "features/state.hpp"
#include "metrics.hpp"
#include "ops_http.hpp"
#include "options.hpp"
#include "rank_service.hpp"

namespace {

const char* kServiceName = "moment_cross.ranker.v1.Ranker";

struct Options {
  ranker::EngineOptions engine;
  ranker::FeatureOptions features;
  std::string events_broker;  // host:port of the events streams' Redis; empty: no feed
  int event_partitions = 1;
  bool log_served = false;
  int log_served_wait_ms = 0;
  std::string host = "127.0.0.1";
  int port = 50051;
  int http_port = 8080;
  std::string healthz_path = "/healthz";
  std::string metrics_path = "/metrics";
  int max_request_bytes = 8 << 20;
  int drain_ms = 0;
  int shutdown_timeout_ms = 10000;
};

Options parse_args(int argc, char** argv) {
  Options o;
  CLI::App app("The ranker as a gRPC service (moment_cross.ranker.v1.Ranker, grpc.health.v1) with HTTP "
               "health and metrics.", "ranker_server");
  ranker::add_engine_options(app, o.engine);
  ranker::add_feature_options(app, o.features);
  app.add_option("--events-broker", o.events_broker,
                 "HOST:PORT of the Redis whose events.<p> streams feed the feature state (needs --features-catalog); "
                 "the state is rebuilt from them before the server reports SERVING");
  app.add_option("--event-partitions", o.event_partitions, "how many events.<p> streams there are (default 1)")
      ->check(ranker::at_least(1));
  app.add_flag("--log-served", o.log_served,
               "log every answered ids-only request's features to the events broker's served.<p> streams "
               "(needs --events-broker)");
  app.add_option("--log-served-wait-ms", o.log_served_wait_ms,
                 "answer an ids-only request only once its features are on the broker, waiting at most this long "
                 "(else UNAVAILABLE: retry); default 0: log in the background, never wait (needs --log-served)")
      ->check(ranker::at_least(0));
  app.add_option("--host", o.host, "address to bind both ports to (default 127.0.0.1; 0.0.0.0 = every interface)");
  app.add_option("--port", o.port, "gRPC port: Ranker and grpc.health.v1 (default 50051; 0 = any free port)")
      ->check(ranker::at_least(0));
  app.add_option("--http-port", o.http_port, "HTTP port for the health and metrics paths (default 8080; 0 = any free port)")
      ->check(ranker::at_least(0));
  app.add_option("--healthz-path", o.healthz_path, "(default /healthz)");
  app.add_option("--metrics-path", o.metrics_path, "(default /metrics)");
  app.add_option("--workers", o.engine.workers, "threads running forwards (default 1)")->check(ranker::at_least(1));
  app.add_option("--max-batch-candidates", o.engine.max_batch_candidates,
                 "most candidates merged into one forward (default 512; on CPU a forward costs more per "
                 "candidate beyond a few hundred)")
      ->check(ranker::at_least(1));
  app.add_option("--max-delay-us", o.engine.max_delay_us,
                 "how long a forward waits for more requests to merge (default 0: it takes what is queued when "
                 "a worker is free; no added latency when idle)")
      ->check(ranker::at_least(0));
  app.add_option("--max-request-bytes", o.max_request_bytes, "largest request message (default 8 MiB; larger: RESOURCE_EXHAUSTED)")
      ->check(ranker::at_least(1));
  app.add_option("--drain-ms", o.drain_ms, "after SIGTERM, keep answering this long while health says NOT_SERVING (default 0)")
      ->check(ranker::at_least(0));
  app.add_option("--shutdown-timeout-ms", o.shutdown_timeout_ms,
                 "then wait this long for calls in flight before cancelling them (default 10000)")
      ->check(ranker::at_least(0));
  ranker::parse_or_exit(app, argc, argv);
  auto usage_error = [](const std::string& what) {
    std::cerr << "ranker_server: " << what << "\n";
    std::exit(2);
  };
  if (o.engine.ops_dir.empty()) usage_error("no --ops-dir and none built in");
  for (const auto* path : {&o.healthz_path, &o.metrics_path})
    if (path->empty() || (*path)[0] != '/') usage_error("HTTP paths must start with '/', got '" + *path + "'");
  if (o.healthz_path == o.metrics_path) usage_error("--healthz-path and --metrics-path must differ");
  if (!o.events_broker.empty() && o.features.catalog.empty()) usage_error("--events-broker needs --features-catalog");
  if (o.events_broker.empty() && !o.features.catalog.empty())  // nothing would ever feed the state
    usage_error("--features-catalog needs --events-broker: the feature state is fed by the events streams");
  if (o.log_served && o.events_broker.empty()) usage_error("--log-served needs --events-broker");
  if (o.log_served_wait_ms > 0 && !o.log_served) usage_error("--log-served-wait-ms needs --log-served");
  if (!o.events_broker.empty() && o.events_broker.rfind(':') == std::string::npos)
    usage_error("--events-broker must be HOST:PORT, got '" + o.events_broker + "'");
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

  std::unique_ptr<ranker::features::FeatureState> state;
  std::unique_ptr<ranker::features::EventConsumer> feed;
  std::unique_ptr<ranker::features::ServedLog> served_log;
  std::unique_ptr<ranker::Engine> engine;
  try {
    if (!o.features.catalog.empty()) {
      state = std::make_unique<ranker::features::FeatureState>(ranker::features::Catalog::load(o.features.catalog),
                                                               o.features.state);
      if (!o.events_broker.empty()) {
        ranker::features::ConsumerOptions feed_options;
        const size_t colon = o.events_broker.rfind(':');
        feed_options.host = o.events_broker.substr(0, colon);
        feed_options.port = std::stoi(o.events_broker.substr(colon + 1));
        feed_options.partitions = o.event_partitions;
        auto* observed = state.get();
        feed = std::make_unique<ranker::features::EventConsumer>(
            *state, feed_options, [&metrics, observed](const ranker::features::EventConsumer::Batch& batch) {
              metrics.state_events(batch.applied, batch.quarantined);
              for (double lag : batch.lag_seconds) metrics.state_event_lag(lag);
              metrics.set_state_clock(observed->clock_ms());
            });
        // Rebuilt before SERVING: a ranker that starts again answers from the same state as before.
        const auto rebuilt = feed->catch_up();
        const auto stats = state->stats();
        std::cerr << "ranker_server: feature state rebuilt from " << rebuilt.entries << " events ("
                  << rebuilt.quarantined << " quarantined) in " << rebuilt.seconds << " s ("
                  << (rebuilt.entries > 0 ? rebuilt.seconds * 1e6 / rebuilt.entries : 0.0) << " s per million): "
                  << stats.users << " users, " << stats.history_events << " history events, " << stats.rooms
                  << " rooms" << std::endl;
        feed->start();
        if (o.log_served) {
          ranker::features::ServedLogOptions log_options;
          log_options.host = feed_options.host;
          log_options.port = feed_options.port;
          log_options.partitions = o.event_partitions;
          log_options.wait_ms = o.log_served_wait_ms;
          served_log = std::make_unique<ranker::features::ServedLog>(
              log_options, [&metrics](uint64_t written, uint64_t dropped) { metrics.served_logged(written, dropped); });
        }
      }
    }
    engine = std::make_unique<ranker::Engine>(o.engine, metrics, state.get(), served_log.get());
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
  std::cerr << "ranker_server: serving " << info.model_dir << " (run " << info.run_id << ", export " << info.export_id
            << " + push " << info.push << ", " << info.format << ", " << info.tasks << " tasks, " << o.engine.workers << " workers x " << o.engine.intra_op_threads
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
  if (served_log) served_log->stop();  // what was answered is logged before the process goes
  if (feed) feed->stop();
  http->stop();
  std::cerr << "ranker_server: stopped" << std::endl;
  return 0;
}
