// quickstart: the shortest useful flypg program. It reads its configuration from the environment,
// starts an RPC node and a repo on one io_context, inserts a row (forwarded to the primary region
// when this process runs elsewhere), reads it back at once from the local database
// (read-your-writes), and shuts down cleanly.
//
// Needs: a PostgreSQL primary (and, for a second region, a streaming replica), for example
//     scripts/pg-cluster start --replicas 1      # prints host/port of the primary and the replica
// and these environment variables:
//     FLYPG_PRIMARY_URL=postgres://flypg@127.0.0.1:55432/flypg   (or DATABASE_URL; see config.hpp)
//     FLYPG_REPLICA_URL=postgres://flypg@127.0.0.1:55433/flypg   (outside the primary region)
//     MY_REGION, PRIMARY_REGION       both default to "local": this process is the primary region
//     FLYPG_CLUSTER_SECRET            16+ characters shared by every node, or FLYPG_ENV=dev
//     FLYPG_RPC_PORT, FLYPG_PEERS     where this node listens (default 7878) and its peers
//
// Run, in the primary region only:
//     FLYPG_ENV=dev FLYPG_PRIMARY_URL=postgres://flypg@127.0.0.1:55432/flypg ./flypg_quickstart
// or from a second region, writing through a primary-region node that is already running (for
// example the guestbook sample with MY_REGION=ams) at 127.0.0.1:7878:
//     export MY_REGION=syd PRIMARY_REGION=ams FLYPG_RPC_PORT=7879 FLYPG_PEERS=127.0.0.1:7878
//     export FLYPG_CLUSTER_SECRET=... FLYPG_PRIMARY_URL=... FLYPG_REPLICA_URL=...
//     ./flypg_quickstart
#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <utility>

#include "flypg/config.hpp"
#include "flypg/repo.hpp"
#include "flypg/rpc/node.hpp"
#include "flypg/rpc/region.hpp"

namespace {

asio::awaitable<void> hello(flypg::rpc::node& node, flypg::repo& db) {
    // Outside the primary region, writes need a primary-region node: wait until one is connected.
    if (!db.is_primary()) co_await node.wait_for_region(node.primary_region(), std::chrono::seconds(30));

    // Raw SQL writes go through execute(); it runs on the primary wherever this process is.
    flypg::pg::params none;
    co_await db.execute(
        "CREATE TABLE IF NOT EXISTS quickstart_notes ("
        " id bigserial PRIMARY KEY, region text NOT NULL, note text NOT NULL)",
        std::move(none));

    // Name braced arguments before the co_await (a g++ 12 bug; see repo.hpp).
    flypg::sql::column_values row{{"region", node.my_region()}, {"note", "hello from quickstart"}};
    flypg::write_result written = co_await db.insert("quickstart_notes", std::move(row));
    const auto id = written.rows().at(0).get<std::int64_t>("id");

    // The write has returned, so the local database (a replica outside the primary region) has it.
    flypg::sql::column_values key{{"id", id}};
    flypg::pg::result read = co_await db.get("quickstart_notes", std::move(key));
    std::printf("region %s wrote note %lld (%s) and read back %zu row: \"%s\"\n",
                node.my_region().c_str(),
                static_cast<long long>(id),
                written.route == flypg::write_route::forwarded ? "forwarded to the primary region"
                                                               : "written locally on the primary",
                read.size(),
                read.empty() ? "" : read.at(0).get<std::string>("note").c_str());
}

}  // namespace

int main() {
    asio::io_context io;
    try {
        const flypg::database_config config =
            flypg::database_config_from_environment(flypg::rpc::my_region(), flypg::rpc::primary_region());

        // Every node serves forwarded writes when it is in the primary region.
        auto service = std::make_shared<flypg::primary_service>();
        flypg::rpc::node_options node_options;
        node_options.writes = service;
        service->add_procedures(node_options.procedures);
        flypg::rpc::node node = flypg::rpc::node::create(io, std::move(node_options));

        flypg::repo_options repo_options = flypg::repo_options_for(config);
        flypg::repo db(io.get_executor(), node, service, std::move(repo_options));

        // The node and the repo's replication tracker run until cancelled.
        asio::cancellation_signal stop_node;
        asio::cancellation_signal stop_repo;
        int running = 2;
        auto finished = [&running](std::exception_ptr) {
            --running;
        };
        asio::co_spawn(io, node.run(), asio::bind_cancellation_slot(stop_node.slot(), finished));
        asio::co_spawn(io, db.run(), asio::bind_cancellation_slot(stop_repo.slot(), finished));

        int status = 0;
        bool done = false;
        asio::co_spawn(io, hello(node, db), [&](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& failure) {
                    std::fprintf(stderr, "quickstart: %s\n", failure.what());
                    status = 1;
                }
            }
            done = true;
            stop_repo.emit(asio::cancellation_type::terminal);
            stop_node.emit(asio::cancellation_type::terminal);
        });
        // Run until both loops have returned; only then may the repo and the node be destroyed.
        while (running > 0 || !done) io.run_one();
        return status;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "quickstart: %s\n", e.what());
        return 1;
    }
}
