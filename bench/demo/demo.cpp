// flypg_demo: the two roles of the demo's two-region world (scripts/demo starts both).
//
//   flypg_demo --role=primary  --database=<primary url> --secret=S
//       A node of the primary region "ams" with the repo's primary; prints "LISTENING <port>" and
//       serves until SIGTERM or SIGINT.
//   flypg_demo --role=workload --database=<replica url> --peers=<primary node, via the delay proxy>
//              --secret=S --writes=2000 --concurrency=16
//       A node of region "syd" reading its replica. Writes rows (forwarded to "ams"), reads each
//       back from the replica at once, and prints write latency, replication wait and stale reads,
//       first with the wait (await = yes), then without it (await = no).
#include <absl/flags/flag.h>
#include <absl/strings/str_split.h>

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <cstdio>
#include <functional>

#include "bench_flags.hpp"
#include "flypg/repo.hpp"
#include "flypg/rpc/node.hpp"

ABSL_FLAG(std::string, role, "workload", "primary or workload");
ABSL_FLAG(std::string, database, "", "this node's database URL (the primary, or the local replica)");
ABSL_FLAG(std::string, peers, "", "peer nodes, host:port,...");
ABSL_FLAG(std::string, secret, "", "cluster secret shared by both nodes");
ABSL_FLAG(int, writes, 2000, "writes per phase");
ABSL_FLAG(int, concurrency, 16, "coroutines writing at once");

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr const char* table = "flypg_demo";

struct phase_figures {
    std::vector<double> write_ms;
    std::vector<double> wait_ms;
    int stale = 0;
    int writes = 0;
    double seconds = 0;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

double ms_since(clock_type::time_point t) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

// One write, then an immediate read of it on the local replica. The wait is timed on its own:
// the write is sent with await = no and the LSN waited for right after, which is what await = yes
// does inside the repo.
asio::awaitable<void> write_and_read(flypg::repo& db, bool wait, int worker, int i, phase_figures& out) {
    flypg::write_options no_wait;
    no_wait.await = flypg::await_replication::no;
    flypg::sql::column_values row{{"worker", worker}, {"seq", i}};
    const auto started = clock_type::now();
    flypg::write_result w = co_await db.insert(table, std::move(row), no_wait);
    out.write_ms.push_back(ms_since(started));
    if (wait) {
        const auto wait_started = clock_type::now();
        co_await db.wait_for_replication(w.commit_lsn);
        out.wait_ms.push_back(ms_since(wait_started));
    }
    flypg::sql::column_values key{{"id", w.rows().at(0).get<std::int64_t>("id")}};
    flypg::pg::result r = co_await db.get(table, std::move(key));
    if (r.empty()) ++out.stale;
    ++out.writes;
}

asio::awaitable<phase_figures> run_phase(flypg::repo& db, bool wait) {
    phase_figures out;
    const int total = absl::GetFlag(FLAGS_writes);
    const int workers = absl::GetFlag(FLAGS_concurrency);
    int next = 0;
    auto worker = [&](int id) -> asio::awaitable<void> {
        while (next < total) co_await write_and_read(db, wait, id, next++, out);
    };
    const auto started = clock_type::now();
    // One coroutine per worker, joined through a counter: the count is not known at compile time.
    auto ex = co_await asio::this_coro::executor;
    int running = workers;
    std::exception_ptr failure;
    asio::steady_timer all_done(ex, clock_type::time_point::max());
    for (int w = 0; w < workers; ++w)
        asio::co_spawn(ex, worker(w), [&](std::exception_ptr e) {
            if (e && !failure) failure = e;
            if (--running == 0) all_done.cancel();
        });
    auto [ec] = co_await all_done.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    (void)ec;
    if (failure) std::rethrow_exception(failure);
    out.seconds = ms_since(started) / 1000.0;
    co_return out;
}

void print_row(const char* name, const phase_figures& f) {
    std::printf("| %-22s | %6d | %8.2f | %8.2f | %8.2f | %8.2f | %7d | %7.0f |\n",
                name,
                f.writes,
                percentile(f.write_ms, 0.5),
                percentile(f.write_ms, 0.99),
                percentile(f.wait_ms, 0.5),
                percentile(f.wait_ms, 0.99),
                f.stale,
                f.writes / f.seconds);
}

asio::awaitable<void> workload(flypg::rpc::node& node, flypg::repo& db) {
    co_await node.wait_for_region("ams", 30s);
    flypg::write_options options;
    flypg::pg::params none;
    co_await db.execute(
        "CREATE TABLE IF NOT EXISTS flypg_demo (id bigserial PRIMARY KEY, worker int, seq int)",
        none,
        options);
    co_await db.execute("TRUNCATE flypg_demo", none, options);
    phase_figures warmup = co_await run_phase(db, true);
    (void)warmup;
    phase_figures awaited = co_await run_phase(db, true);
    phase_figures unawaited = co_await run_phase(db, false);
    std::printf(
        "\nflypg demo: writes from region \"syd\" forwarded to the primary region \"ams\", each read back\n");
    std::printf("from the syd replica right after the write returns (%d coroutines).\n\n",
                absl::GetFlag(FLAGS_concurrency));
    std::printf("| %-22s | %6s | %8s | %8s | %8s | %8s | %7s | %7s |\n",
                "mode",
                "writes",
                "write50",
                "write99",
                "wait50",
                "wait99",
                "stale",
                "writes/s");
    std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n",
                "------------------------",
                "--------",
                "----------",
                "----------",
                "----------",
                "----------",
                "---------",
                "---------");
    print_row("await = yes (default)", awaited);
    print_row("await = no", unawaited);
    std::printf(
        "\nLatencies in ms. write: RPC to ams + commit + LSN, through a delay proxy. wait: until the\n"
        "syd replica replayed the commit LSN. stale: reads right after the write that missed it.\n");
}

flypg::rpc::node_options node_options(const std::string& region,
                                      std::shared_ptr<flypg::primary_service> service) {
    flypg::rpc::node_options options;
    options.listen_address = "127.0.0.1";
    options.listen_port = 0;
    options.region = region;
    options.primary_region = "ams";
    options.cluster_secret = absl::GetFlag(FLAGS_secret);
    const std::vector<std::string> peers = absl::StrSplit(absl::GetFlag(FLAGS_peers), ',', absl::SkipEmpty());
    options.peers = peers;
    options.writes = service;
    service->add_procedures(options.procedures);
    return options;
}

int serve(asio::io_context& io) {
    auto service = std::make_shared<flypg::primary_service>();
    flypg::rpc::node node = flypg::rpc::node::create(io, node_options("ams", service));
    flypg::repo_options options;
    options.local_url = absl::GetFlag(FLAGS_database);
    options.pool_size = 32;
    flypg::repo db(io.get_executor(), node, service, options);
    asio::cancellation_signal stop;
    bool finished = false;
    asio::co_spawn(io, node.run(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) {
                       finished = true;
                   }));
    // Serve until scripts/demo stops it.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](std::error_code ec, int) {
        if (!ec) stop.emit(asio::cancellation_type::terminal);
    });
    std::printf("LISTENING %u\n", static_cast<unsigned>(node.local_endpoint().port()));
    std::fflush(stdout);
    while (!finished) io.run_one();
    return 0;
}

int run_workload(asio::io_context& io) {
    auto service = std::make_shared<flypg::primary_service>();
    flypg::rpc::node node = flypg::rpc::node::create(io, node_options("syd", service));
    flypg::repo_options options;
    options.local_url = absl::GetFlag(FLAGS_database);
    flypg::repo db(io.get_executor(), node, service, options);
    asio::cancellation_signal stop_node;
    asio::cancellation_signal stop_repo;
    int stopped = 0;
    asio::co_spawn(io, node.run(), asio::bind_cancellation_slot(stop_node.slot(), [&](std::exception_ptr) {
                       ++stopped;
                   }));
    asio::co_spawn(
        io, db.run(), asio::bind_cancellation_slot(stop_repo.slot(), [&](std::exception_ptr) { ++stopped; }));
    int status = 0;
    bool done = false;
    asio::co_spawn(io, workload(node, db), [&](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                std::fprintf(stderr, "demo workload failed: %s\n", ex.what());
                status = 1;
            }
        }
        done = true;
        stop_repo.emit(asio::cancellation_type::terminal);
        stop_node.emit(asio::cancellation_type::terminal);
    });
    while (!(done && stopped == 2)) io.run_one();
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    flypg::bench::parse_command_line(
        "The two-region demo's workload (scripts/demo starts the cluster, the primary-region node and "
        "the delay proxies, then runs this)",
        argc,
        argv);
    asio::io_context io;
    try {
        return absl::GetFlag(FLAGS_role) == "primary" ? serve(io) : run_workload(io);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "flypg_demo: %s\n", e.what());
        return 1;
    }
}
