// The two-region world of the repo's end-to-end tests: this test process is a node of region
// "syd" reading its replica (replica_region); a node of the primary region "ams" runs in another
// process (flypg_repo_test_node, region_node.cpp) with the primary. Real PostgreSQL primary and
// streaming replica, real RPC over loopback sockets.
#pragma once

#include <unistd.h>

#include <asio.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flypg/pg/connection.hpp"
#include "flypg/repo.hpp"
#include "support/child_process.hpp"
#include "support/test_support.hpp"

namespace flypg::test::repo_world {

using namespace std::chrono_literals;
using flypg::test::run;

// flypg_repo_test_node (region_node.cpp) in its own process: the primary region.
class region_node_process : public flypg::test::child_process {
  public:
    explicit region_node_process(std::vector<std::string> args)
        : child_process(FLYPG_REPO_TEST_NODE, std::move(args)) {}
};

inline const std::string secret = "repo-test-secret-0123456789";

inline std::string table_name() {
    return "repo_e2e_" + std::to_string(::getpid());
}

// Creates database `name` on the primary unless it exists, and waits until the replica has
// replayed its creation (until then the replica refuses connections to it).
inline void create_database(asio::io_context& io, const std::string& name) {
    run(io, [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        flypg::pg::connect_options primary_options;
        primary_options.conninfo = flypg::test::primary_conninfo();
        flypg::pg::connection primary = co_await flypg::pg::connection::connect(ex, primary_options);
        flypg::pg::params name_on_primary{name};
        flypg::pg::result exists = co_await primary.query("SELECT 1 FROM pg_database WHERE datname = $1",
                                                          std::move(name_on_primary));
        if (exists.empty()) co_await primary.query("CREATE DATABASE " + name);
        flypg::pg::connect_options replica_options;
        replica_options.conninfo = flypg::test::replica_conninfo();
        flypg::pg::connection replica = co_await flypg::pg::connection::connect(ex, replica_options);
        for (;;) {
            flypg::pg::params name_on_replica{name};
            flypg::pg::result there = co_await replica.query("SELECT 1 FROM pg_database WHERE datname = $1",
                                                             std::move(name_on_replica));
            if (!there.empty()) break;
            asio::steady_timer t(ex, 5ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }());
}

// Creates table `name` (columns as given) on the primary and waits until the replica has it.
inline void create_table(asio::io_context& io,
                         const std::string& primary_conninfo,
                         const std::string& replica_conninfo,
                         const std::string& name = table_name(),
                         const std::string& columns = "(id bigserial PRIMARY KEY, note text UNIQUE)") {
    run(io, [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        flypg::pg::connect_options primary_options;
        primary_options.conninfo = primary_conninfo;
        flypg::pg::connection primary = co_await flypg::pg::connection::connect(ex, primary_options);
        co_await primary.query("DROP TABLE IF EXISTS " + name);
        co_await primary.query("CREATE TABLE " + name + " " + columns);
        flypg::pg::connect_options replica_options;
        replica_options.conninfo = replica_conninfo;
        flypg::pg::connection replica = co_await flypg::pg::connection::connect(ex, replica_options);
        for (;;) {
            flypg::pg::params wanted{name};
            flypg::pg::result r =
                co_await replica.query("SELECT to_regclass($1) IS NOT NULL", std::move(wanted));
            if (r[0].get<bool>(0)) break;
            asio::steady_timer t(ex, 5ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }());
}

// Options of a test node in `region` (the primary region is "ams"): loopback, any port, the test
// secret, quick reconnects and heartbeats.
inline flypg::rpc::node_options node_options_in(std::string region,
                                                std::vector<std::string> peers,
                                                std::string cluster_secret = secret) {
    flypg::rpc::node_options options;
    options.listen_address = "127.0.0.1";
    options.listen_port = 0;
    options.region = std::move(region);
    options.primary_region = "ams";
    options.cluster_secret = std::move(cluster_secret);
    options.peers = std::move(peers);
    options.reconnect_min = 20ms;
    options.reconnect_max = 200ms;
    options.heartbeat_interval = 200ms;
    options.heartbeat_timeout = 2s;  // a path that lost bytes is dialled again soon (fault suite)
    return options;
}

// The replica-region side: a node, a primary_service (unused here, as in any node) and a repo.
struct replica_region {
    replica_region(asio::io_context& io, std::vector<std::string> peers, flypg::repo_options extra = {})
        : io_(io) {
        flypg::rpc::node_options options = node_options_in("syd", std::move(peers));
        options.writes = service;
        service->add_procedures(options.procedures);
        node.emplace(flypg::rpc::node::create(io, std::move(options)));
        if (extra.local_url.empty()) extra.local_url = flypg::test::replica_conninfo();
        db = std::make_unique<flypg::repo>(io.get_executor(), *node, service, std::move(extra));
        asio::co_spawn(
            io, node->run(), asio::bind_cancellation_slot(stop_node.slot(), [this](std::exception_ptr) {
                node_done = true;
            }));
        asio::co_spawn(
            io, db->run(), asio::bind_cancellation_slot(stop_repo.slot(), [this](std::exception_ptr) {
                repo_done = true;
            }));
    }
    // Stops the repo's tracker and the node, and lets their coroutines finish before the objects
    // they use are destroyed.
    ~replica_region() {
        stop_repo.emit(asio::cancellation_type::terminal);
        stop_node.emit(asio::cancellation_type::terminal);
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!(node_done && repo_done) && std::chrono::steady_clock::now() < deadline) {
            io_.restart();
            io_.run_one_for(50ms);
        }
        db.reset();
        node.reset();
        io_.restart();
        io_.poll();
    }

    std::shared_ptr<flypg::primary_service> service = std::make_shared<flypg::primary_service>();
    std::optional<flypg::rpc::node> node;
    std::unique_ptr<flypg::repo> db;
    asio::cancellation_signal stop_node;
    asio::cancellation_signal stop_repo;
    asio::io_context& io_;
    bool node_done = false;
    bool repo_done = false;
};

// A node of the primary region "ams" in this process, with a repo whose local database is the
// primary: writes take the local route.
struct primary_region_repo {
    explicit primary_region_repo(asio::io_context& io)
        : node(flypg::rpc::node::create(io, options(service))),
          db(io.get_executor(), node, service, repo_options()) {}

    static flypg::rpc::node_options options(const std::shared_ptr<flypg::primary_service>& service) {
        flypg::rpc::node_options o = node_options_in("ams", {});
        o.writes = service;
        return o;
    }
    static flypg::repo_options repo_options() {
        flypg::repo_options r;
        r.local_url = flypg::test::primary_conninfo();
        r.primary_url = flypg::test::primary_conninfo();
        return r;
    }

    std::shared_ptr<flypg::primary_service> service = std::make_shared<flypg::primary_service>();
    flypg::rpc::node node;
    flypg::repo db;
};

/// Arguments of a primary-region node serving the test primary as database "main".
inline std::vector<std::string> primary_node_args(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--region=ams",
                                  "--primary_region=ams",
                                  "--secret=" + secret,
                                  "--databases=main=" + flypg::test::primary_conninfo()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

}  // namespace flypg::test::repo_world
