// The local replica is promoted (it splits off and stops following the primary): a forwarded write
// still commits on the primary, but a read on the local database cannot see it, so the write must
// not be reported as replicated. It fails with errc::not_replicating naming the local database,
// every later write too (not a 1 ms success), with one warning per change of state.
//
// Disruptive: replica 2 is promoted and then rebuilt (`pg-cluster start`), so ctest runs it alone.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <mutex>

#include "repo_world.hpp"

namespace {

using namespace flypg::test::repo_world;

// Rebuilds the promoted replica as a streaming standby when the test ends, however it ends.
struct rebuild_replicas_afterwards {
    ~rebuild_replicas_afterwards() { EXPECT_EQ(flypg::test::pg_cluster("start --replicas 2"), 0); }
};

TEST(Promotion, WritesAfterTheLocalReplicaWasPromotedAreNotReportedAsReplicated) {
    asio::io_context io;
    create_table(io, flypg::test::primary_conninfo(), flypg::test::replica_conninfo(2));
    region_node_process primary_node(primary_node_args());

    std::vector<std::string> warnings;
    flypg::repo_options options;
    options.local_url = flypg::test::replica_conninfo(2);
    options.replication_timeout = 2s;
    options.log = [&warnings](flypg::rpc::log_level level, std::string_view text) {
        if (level == flypg::rpc::log_level::warning) warnings.emplace_back(text);
    };
    replica_region world(io, {primary_node.address()}, options);
    run(io, world.node->wait_for_region("ams", 10s));
    flypg::repo& db = *world.db;
    const std::string prefix = "promoted " + std::to_string(::getpid()) + " ";
    auto write = [&](const std::string& note) -> std::error_code {
        try {
            run(io, [&]() -> asio::awaitable<void> {
                flypg::sql::column_values row{{"note", note}};
                flypg::write_result w = co_await db.insert(table_name(), std::move(row));
                EXPECT_TRUE(w.replicated);
            }());
        } catch (const flypg::error& e) {
            EXPECT_NE(std::string(e.what()).find(flypg::pg::database_label(flypg::test::replica_conninfo(2))),
                      std::string::npos)
                << "the error names the local database: " << e.what();
            return e.code();
        }
        return {};
    };
    ASSERT_EQ(write(prefix + "before"), std::error_code());

    rebuild_replicas_afterwards restore;
    ASSERT_EQ(flypg::test::pg_cluster("promote 2"), 0);
    EXPECT_EQ(write(prefix + "after 1"), flypg::errc::not_replicating);
    const auto second_started = std::chrono::steady_clock::now();
    EXPECT_EQ(write(prefix + "after 2"), flypg::errc::not_replicating);
    EXPECT_LT(std::chrono::steady_clock::now() - second_started, 2s);

    // Both committed on the primary; the promoted server has neither.
    const auto count = [&](const std::string& conninfo) {
        return run(io, [&]() -> asio::awaitable<std::int64_t> {
            flypg::pg::connect_options o;
            o.conninfo = conninfo;
            flypg::pg::connection c =
                co_await flypg::pg::connection::connect(co_await asio::this_coro::executor, o);
            flypg::pg::params like{prefix + "after%"};
            flypg::pg::result r = co_await c.query(
                "SELECT count(*) FROM " + table_name() + " WHERE note LIKE $1", std::move(like));
            co_return r.at(0).get<std::int64_t>(0);
        }());
    };
    EXPECT_EQ(count(flypg::test::primary_conninfo()), 2);
    EXPECT_EQ(count(flypg::test::replica_conninfo(2)), 0);

    // One warning for the change of state, not one per write; and counted.
    int state_warnings = 0;
    for (const auto& w : warnings)
        if (w.find("is not a standby") != std::string::npos) ++state_warnings;
    EXPECT_EQ(state_warnings, 1);
    EXPECT_NE(db.render_metrics().find("kind=\"not_replicating\"} 2"), std::string::npos)
        << db.render_metrics();
}

}  // namespace
