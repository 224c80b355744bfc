// A flypg node with repos in its own process: the other region in the end-to-end tests.
//
//   flypg_repo_test_node --region=ams --primary_region=ams --secret=S --peers=host:port,...
//                        --databases=main=<url>[;second=<url>]
//                        [--handshake_timeout_ms=N] [--max_unauthenticated=N] [--exit_after_commits=N]
//                        [--port=N]
//
// Each database's URL serves as both local and primary URL (this node is meant for the primary
// region). Registers the named transactions the tests call and a test.metrics procedure, prints "LISTENING
// <port> <node_id>" once it listens, logs to stderr, and exits when stdin closes (it never outlives its
// test).
#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/strings/str_split.h>

#include <asio.hpp>
#include <cstdio>
#include <cstdlib>
#include <list>

#include "flypg/repo.hpp"
#include "flypg/rpc/node.hpp"
#include "support/node_process.hpp"

ABSL_FLAG(std::string, region, "ams", "this node's region");
ABSL_FLAG(std::string, primary_region, "ams", "the primary region");
ABSL_FLAG(std::string, secret, "", "cluster secret");
ABSL_FLAG(std::string, peers, "", "peers, host:port,...");
ABSL_FLAG(std::string, databases, "", "name=url;name=url");
ABSL_FLAG(int, handshake_timeout_ms, 5000, "node_options::handshake_timeout");
ABSL_FLAG(int, max_unauthenticated, 256, "node_options::max_unauthenticated_connections");
ABSL_FLAG(int, port, 0, "RPC port (0: any free one)");
ABSL_FLAG(
    int,
    exit_after_commits,
    0,
    "dies (exit 137) right after the Nth forwarded write with a request id committed, before answering it");

namespace {

using flypg::rpc::value;

// insert_pair(table, a, b): two rows in one transaction; returns both ids.
asio::awaitable<std::vector<value>> insert_pair(flypg::pg::connection& conn, std::vector<value> args) {
    const std::string table = flypg::sql::quote_identifier(std::get<std::string>(args.at(0)));
    std::vector<value> ids;
    for (std::size_t i = 1; i <= 2; ++i) {
        flypg::pg::params p{std::get<std::string>(args.at(i))};
        flypg::pg::result r =
            co_await conn.query("INSERT INTO " + table + " (note) VALUES ($1) RETURNING id", std::move(p));
        ids.emplace_back(r.at(0).get<std::int64_t>(0));
    }
    co_return ids;
}

// sleep_then_insert(table, note, seconds): for a call that is still running when its node dies.
asio::awaitable<std::vector<value>> sleep_then_insert(flypg::pg::connection& conn, std::vector<value> args) {
    flypg::pg::params seconds{std::get<double>(args.at(2))};
    co_await conn.query("SELECT pg_sleep($1)", std::move(seconds));
    const std::string table = flypg::sql::quote_identifier(std::get<std::string>(args.at(0)));
    flypg::pg::params note{std::get<std::string>(args.at(1))};
    co_await conn.query("INSERT INTO " + table + " (note) VALUES ($1)", std::move(note));
    co_return std::vector<value>{};
}

// fail_with_duplicate(): raises 23505 inside the transaction, which must roll back.
asio::awaitable<std::vector<value>> fail_with_duplicate(flypg::pg::connection& conn, std::vector<value>) {
    co_await conn.query(
        "DO $$BEGIN RAISE unique_violation USING MESSAGE = 'duplicate from the primary'; END$$");
    co_return std::vector<value>{};
}

}  // namespace

int main(int argc, char** argv) {
    absl::ParseCommandLine(argc, argv);
    auto service = std::make_shared<flypg::primary_service>();
    if (const int n = absl::GetFlag(FLAGS_exit_after_commits); n > 0) {
        // The fault the exactly-once tests need: committed, and the answer never sent.
        service->set_after_commit_hook([n, commits = 0]() mutable {
            if (++commits == n) {
                std::fprintf(stderr, "[region node] exiting after commit %d, before answering\n", n);
                std::_Exit(137);
            }
        });
    }
    service->add_transaction("insert_pair", insert_pair);
    service->add_transaction("sleep_then_insert", sleep_then_insert);
    service->add_transaction("fail_with_duplicate", fail_with_duplicate);

    flypg::rpc::node_options options;
    options.listen_address = "127.0.0.1";
    options.listen_port = static_cast<std::uint16_t>(absl::GetFlag(FLAGS_port));
    options.region = absl::GetFlag(FLAGS_region);
    options.primary_region = absl::GetFlag(FLAGS_primary_region);
    options.cluster_secret = absl::GetFlag(FLAGS_secret);
    const std::vector<std::string> peers = absl::StrSplit(absl::GetFlag(FLAGS_peers), ',', absl::SkipEmpty());
    options.peers = peers;
    options.heartbeat_interval = std::chrono::milliseconds(200);
    options.heartbeat_timeout = std::chrono::seconds(2);
    options.reconnect_min = std::chrono::milliseconds(20);
    options.reconnect_max = std::chrono::milliseconds(200);
    options.handshake_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_handshake_timeout_ms));
    options.max_unauthenticated_connections =
        static_cast<std::size_t>(absl::GetFlag(FLAGS_max_unauthenticated));
    options.writes = service;
    options.log = [](flypg::rpc::log_level, std::string_view text) {
        std::fprintf(stderr, "[region node] %.*s\n", static_cast<int>(text.size()), text.data());
        std::fflush(stderr);
    };
    service->add_procedures(options.procedures);
    // The repos use the io_context and the node: they are declared after the first and cleared
    // before the second goes.
    asio::io_context io;
    std::list<flypg::repo> repos;
    // test.metrics(): the Prometheus text of every repo of this node, for the serving-side metrics.
    options.procedures.add("test.metrics",
                           [&repos](std::vector<value>) -> asio::awaitable<std::vector<value>> {
                               std::string text;
                               for (flypg::repo& r : repos) text += r.render_metrics();
                               co_return std::vector<value>{value(std::move(text))};
                           });

    try {
        flypg::rpc::node node = flypg::rpc::node::create(io, std::move(options));
        const std::vector<std::string> databases =
            absl::StrSplit(absl::GetFlag(FLAGS_databases), ';', absl::SkipEmpty());
        for (const std::string& entry : databases) {
            const std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
            flypg::repo_options repo_options;
            repo_options.name = parts.at(0);
            repo_options.local_url = parts.at(1);
            repo_options.primary_url = parts.at(1);
            repos.emplace_back(io.get_executor(), node, service, std::move(repo_options));
        }
        flypg::test::serve_until_stdin_closes(io, node);
        repos.clear();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "[region node] fatal: %s\n", e.what());
        return 1;
    }
    return 0;
}
