// Forwarded writes run at most once: a write whose answer was lost is sent again under its request
// id, and the primary-region node that receives the repeat answers with the first run's results
// instead of running it again. The fault is the one that matters: the serving node dies after the
// commit and before the answer (flypg_repo_test_node --exit_after_commits).
#include <gtest/gtest.h>

#include <asio.hpp>

#include <thread>

#include "repo_world.hpp"

namespace {

using namespace flypg::test::repo_world;

std::string once_table() {
    return table_name() + "_once";
}

// Rows per note on the primary.
std::map<std::string, std::int64_t> rows_by_note(asio::io_context& io, const std::string& prefix) {
    return run(io, [&]() -> asio::awaitable<std::map<std::string, std::int64_t>> {
        flypg::pg::connect_options o;
        o.conninfo = flypg::test::primary_conninfo();
        flypg::pg::connection primary =
            co_await flypg::pg::connection::connect(co_await asio::this_coro::executor, o);
        flypg::pg::params like{prefix + "%"};
        flypg::pg::result r = co_await primary.query(
            "SELECT note, count(*) FROM " + once_table() + " WHERE note LIKE $1 GROUP BY note",
            std::move(like));
        std::map<std::string, std::int64_t> out;
        for (flypg::pg::row row : r) out[row.get<std::string>(0)] = row.get<std::int64_t>(1);
        co_return out;
    }());
}

class ExactlyOnce : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        // Without a unique constraint: a write that ran twice shows as two rows.
        asio::io_context io;
        create_table(io,
                     flypg::test::primary_conninfo(),
                     flypg::test::replica_conninfo(),
                     once_table(),
                     "(id bigserial PRIMARY KEY, note text)");
    }
    asio::io_context io;
};

// A caller in region "syd" whose primary-region node dies right after its Nth commit with a
// request id, before answering it. A second node starts only once the first has died, so a lost
// answer can only come from a node that did not run the request.
struct serving_node_dies {
    serving_node_dies(asio::io_context& io, int after_commits)
        : first(std::make_unique<region_node_process>(
              primary_node_args({"--exit_after_commits=" + std::to_string(after_commits)}))),
          world(io, {first->address(), "127.0.0.1:" + std::to_string(second_port)}) {
        run(io, world.node->wait_for_region("ams", 10s));
        starter = std::thread([this] {
            for (int i = 0; i < 1000 && first->running(); ++i) std::this_thread::sleep_for(10ms);
            second = std::make_unique<region_node_process>(
                primary_node_args({"--port=" + std::to_string(second_port)}));
        });
    }
    ~serving_node_dies() { wait_for_second(); }
    void wait_for_second() {
        if (starter.joinable()) starter.join();
    }

    const std::uint16_t second_port = flypg::test::free_port();
    std::unique_ptr<region_node_process> first;
    std::unique_ptr<region_node_process> second;
    replica_region world;
    std::thread starter;
};

// The id of the row with `note`, read through the caller's repo.
std::int64_t id_of(asio::io_context& io, flypg::repo& db, const std::string& note) {
    return run(io, [&]() -> asio::awaitable<std::int64_t> {
        flypg::pg::params p{note};
        flypg::pg::result r =
            co_await db.query("SELECT id FROM " + once_table() + " WHERE note = $1", std::move(p));
        co_return r.at(0).get<std::int64_t>(0);
    }());
}

TEST_F(ExactlyOnce, AWriteWhoseServingNodeDiedBeforeAnsweringRunsOnceAndReturnsItsResults) {
    serving_node_dies dies(io, 3);
    replica_region& world = dies.world;

    const std::string prefix = "once " + std::to_string(::getpid()) + " ";
    std::vector<std::int64_t> returned_ids;
    std::string failure;
    try {
        run(
            io,
            [&]() -> asio::awaitable<void> {
                for (int i = 0; i < 8; ++i) {
                    flypg::sql::column_values row{{"note", prefix + std::to_string(i)}};
                    flypg::write_result w = co_await world.db->insert(once_table(), std::move(row));
                    EXPECT_TRUE(w.replicated);
                    returned_ids.push_back(w.rows().at(0).get<std::int64_t>("id"));
                }
            }(),
            60s);
    } catch (const std::exception& e) {
        failure = e.what();
    }
    dies.wait_for_second();
    EXPECT_EQ(failure, "");
    EXPECT_FALSE(dies.first->running()) << "the first node should have died after its third commit";
    ASSERT_TRUE(dies.second) << "the second node never started";

    // Every write exactly once, and the lost one's answer is the row it really wrote.
    const auto rows = rows_by_note(io, prefix);
    ASSERT_EQ(rows.size(), 8u);
    for (const auto& [note, count] : rows) EXPECT_EQ(count, 1) << note << " ran " << count << " times";
    ASSERT_EQ(returned_ids.size(), 8u);
    EXPECT_EQ(returned_ids[2], id_of(io, *world.db, prefix + "2"));
    // The second node answered it as a repeat; the caller sent it again once.
    const std::string served = run(io, [&]() -> asio::awaitable<std::string> {
        std::vector<flypg::rpc::value> none;
        auto reply = co_await world.node->call_primary("test.metrics", std::move(none));
        co_return std::get<std::string>(reply.at(0));
    }());
    EXPECT_NE(served.find("flypg_served_repeated_writes_total{database=\"main\"} 1"), std::string::npos)
        << served;
    EXPECT_NE(world.db->render_metrics().find("flypg_write_retries_total{database=\"main\"}"),
              std::string::npos);
    std::printf(
        "exactly once: 8 writes, the serving node killed between the 3rd commit and its answer: "
        "%zu rows, 0 duplicates\n",
        rows.size());
}

TEST_F(ExactlyOnce, ATransactionWhoseServingNodeDiedAfterCommittingIsReportedCommittedOnce) {
    serving_node_dies dies(io, 1);
    replica_region& world = dies.world;

    const std::string note = "tx once " + std::to_string(::getpid());
    flypg::write_result committed;
    std::string failure;
    try {
        committed = run(
            io,
            [&]() -> asio::awaitable<flypg::write_result> {
                flypg::primary_transaction tx = co_await world.db->begin_on_primary();
                flypg::pg::params p{note};
                co_await tx.execute("INSERT INTO " + once_table() + " (note) VALUES ($1)", std::move(p));
                co_return co_await tx.commit();
            }(),
            60s);
    } catch (const std::exception& e) {
        failure = e.what();
    }
    dies.wait_for_second();
    EXPECT_EQ(failure, "");
    EXPECT_FALSE(dies.first->running()) << "the serving node should have died after the commit";
    // The caller learnt the truth from the second node (the id was found, not fenced), and the
    // row it waited for is readable on its replica.
    EXPECT_TRUE(committed.replicated);
    EXPECT_EQ(committed.route, flypg::write_route::forwarded);
    EXPECT_EQ(rows_by_note(io, note)[note], 1);
    const std::int64_t seen = run(io, [&]() -> asio::awaitable<std::int64_t> {
        flypg::pg::params p{note};
        flypg::pg::result r = co_await world.db->query(
            "SELECT count(*) FROM " + once_table() + " WHERE note = $1", std::move(p));
        co_return r.at(0).get<std::int64_t>(0);
    }());
    EXPECT_EQ(seen, 1);
}

TEST_F(ExactlyOnce, ATransactionRepeatingAnIdempotencyKeyRollsBackInEveryRegion) {
    region_node_process primary(primary_node_args());
    replica_region world(io, {primary.address()});
    primary_region_repo local(io);
    run(io, world.node->wait_for_region("ams", 10s));
    const std::string note = "tx keyed " + std::to_string(::getpid());
    const std::string key = "tx-" + std::to_string(::getpid()) + "-" +
                            std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    auto insert_keyed = [&](flypg::repo& db) -> asio::awaitable<flypg::write_result> {
        flypg::write_options keyed;
        keyed.idempotency_key = key;
        flypg::primary_transaction tx = co_await db.begin_on_primary(keyed);
        flypg::pg::params p{note};
        co_await tx.execute("INSERT INTO " + once_table() + " (note) VALUES ($1)", std::move(p));
        co_return co_await tx.commit();
    };
    const flypg::write_result first = run(io, insert_keyed(*world.db));
    EXPECT_TRUE(first.replicated);
    for (flypg::repo* again : {world.db.get(), &local.db}) {
        std::error_code code;
        std::string message;
        try {
            run(io, insert_keyed(*again));
        } catch (const flypg::error& e) {
            code = e.code();
            message = e.diag().hint;
        }
        EXPECT_EQ(code, flypg::sqlstate("23505")) << message;
        EXPECT_NE(message.find("request id is already taken"), std::string::npos) << message;
    }
    EXPECT_EQ(rows_by_note(io, note)[note], 1);
}

TEST_F(ExactlyOnce, AnIdempotencyKeyReturnsTheFirstOutcomeToALaterCall) {
    region_node_process primary(primary_node_args());
    replica_region world(io, {primary.address()});
    run(io, world.node->wait_for_region("ams", 10s));
    const std::string note = "keyed " + std::to_string(::getpid());
    // Keys are remembered for a day: this one must not have been used by an earlier run.
    const std::string key = "order-" + std::to_string(::getpid()) + "-" +
                            std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    std::int64_t first_id = 0;
    std::int64_t second_id = 0;
    run(io, [&]() -> asio::awaitable<void> {
        flypg::write_options keyed;
        keyed.idempotency_key = key;
        flypg::pg::params p1{note};
        flypg::write_result a = co_await world.db->execute(
            "INSERT INTO " + once_table() + " (note) VALUES ($1) RETURNING id", std::move(p1), keyed);
        first_id = a.rows().at(0).get<std::int64_t>("id");
        flypg::pg::params p2{note};
        flypg::write_result b = co_await world.db->execute(
            "INSERT INTO " + once_table() + " (note) VALUES ($1) RETURNING id", std::move(p2), keyed);
        second_id = b.rows().at(0).get<std::int64_t>("id");
        EXPECT_TRUE(b.replicated);
    }());
    EXPECT_EQ(first_id, second_id);
    // In the primary region the key means the same: the write is found, not run again.
    primary_region_repo local(io);
    const std::int64_t local_id = run(io, [&]() -> asio::awaitable<std::int64_t> {
        flypg::write_options keyed;
        keyed.idempotency_key = key;
        flypg::pg::params p{note};
        flypg::write_result w = co_await local.db.execute(
            "INSERT INTO " + once_table() + " (note) VALUES ($1) RETURNING id", std::move(p), keyed);
        EXPECT_EQ(w.route, flypg::write_route::local_primary);
        co_return w.rows().at(0).get<std::int64_t>("id");
    }());
    EXPECT_EQ(local_id, first_id);
    EXPECT_EQ(rows_by_note(io, note)[note], 1);
}

TEST_F(ExactlyOnce, ANamedTransactionWhoseServingNodeDiedAfterCommittingRunsOnceAndReturnsItsValues) {
    serving_node_dies dies(io, 1);
    replica_region& world = dies.world;

    const std::string prefix = "named once " + std::to_string(::getpid()) + " ";
    std::vector<flypg::rpc::value> returned;
    std::string failure;
    try {
        returned = run(
            io,
            [&]() -> asio::awaitable<std::vector<flypg::rpc::value>> {
                std::vector<flypg::rpc::value> args{once_table(), prefix + "a", prefix + "b"};
                co_return co_await world.db->transaction_on_primary("insert_pair", std::move(args));
            }(),
            60s);
    } catch (const std::exception& e) {
        failure = e.what();
    }
    dies.wait_for_second();
    EXPECT_EQ(failure, "");
    EXPECT_FALSE(dies.first->running()) << "the serving node should have died after the commit";
    ASSERT_TRUE(dies.second) << "the second node never started";
    // Both rows once, and the values returned are the first run's ids (the second node answered
    // from what the first run stored, it did not run the transaction again).
    const auto rows = rows_by_note(io, prefix);
    EXPECT_EQ(rows.size(), 2u);
    for (const auto& [note, count] : rows) EXPECT_EQ(count, 1) << note << " ran " << count << " times";
    ASSERT_EQ(returned.size(), 2u);
    EXPECT_EQ(std::get<std::int64_t>(returned[0]), id_of(io, *world.db, prefix + "a"));
}

// Registered in the primary region of this process under the name the node process gives its
// insert_pair: a repeated key must find the first run and never get here.
asio::awaitable<std::vector<flypg::rpc::value>> must_not_run(flypg::pg::connection&,
                                                             std::vector<flypg::rpc::value>) {
    ADD_FAILURE() << "a named transaction ran again under a key that had committed";
    co_return std::vector<flypg::rpc::value>{};
}

TEST_F(ExactlyOnce, ANamedTransactionRepeatingAnIdempotencyKeyReturnsTheFirstValuesInEveryRegion) {
    region_node_process primary(primary_node_args());
    replica_region world(io, {primary.address()});
    primary_region_repo local(io);
    local.service->add_transaction("insert_pair", must_not_run);
    run(io, world.node->wait_for_region("ams", 10s));
    const std::string prefix = "named keyed " + std::to_string(::getpid()) + " ";
    const std::string key = "pair-" + std::to_string(::getpid()) + "-" +
                            std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    auto insert_pair = [&](flypg::repo& db,
                           std::string suffix) -> asio::awaitable<std::vector<flypg::rpc::value>> {
        flypg::write_options keyed;
        keyed.idempotency_key = key;
        std::vector<flypg::rpc::value> args{once_table(), prefix + "a" + suffix, prefix + "b" + suffix};
        co_return co_await db.transaction_on_primary("insert_pair", std::move(args), keyed);
    };
    const std::vector<flypg::rpc::value> first = run(io, insert_pair(*world.db, ""));
    ASSERT_EQ(first.size(), 2u);
    // Different arguments under the same key: the key names the operation, so the first run's
    // values come back and nothing new is written, from either region.
    EXPECT_EQ(run(io, insert_pair(*world.db, " again")), first);
    EXPECT_EQ(run(io, insert_pair(local.db, " again")), first);
    const auto rows = rows_by_note(io, prefix);
    EXPECT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows.count(prefix + "a again"), 0u);
}

// The first writes through a fresh node all find the request table missing and create it at once;
// the losers of that race must see it as created, not fail the write. A database of its own, so
// dropping the table does not touch other tests.
TEST_F(ExactlyOnce, ConcurrentFirstWritesCreateTheRequestTableWithoutFailing) {
    const std::string database = "flypg_fresh_requests";
    const std::string primary = flypg::test::primary_conninfo() + " dbname=" + database;
    const std::string replica = flypg::test::replica_conninfo() + " dbname=" + database;
    create_database(io, database);
    create_table(io, primary, replica, once_table(), "(id bigserial PRIMARY KEY, note text)");

    constexpr int rounds = 3;
    constexpr int writers = 16;
    std::vector<std::string> failures;
    for (int round = 0; round < rounds; ++round) {
        run(io, [&]() -> asio::awaitable<void> {
            flypg::pg::connect_options o;
            o.conninfo = primary;
            flypg::pg::connection conn =
                co_await flypg::pg::connection::connect(co_await asio::this_coro::executor, o);
            co_await conn.query("DROP TABLE IF EXISTS flypg_write_requests");
        }());
        region_node_process node(primary_node_args({"--databases=main=" + primary}));
        flypg::repo_options options;
        options.local_url = replica;
        replica_region world(io, {node.address()}, options);
        run(io, world.node->wait_for_region("ams", 10s));
        auto write = [&](int i) -> asio::awaitable<void> {
            try {
                flypg::sql::column_values row{
                    {"note", "fresh " + std::to_string(round) + "/" + std::to_string(i)}};
                co_await world.db->insert(once_table(), std::move(row));
            } catch (const std::exception& e) {
                failures.push_back(e.what());
            }
        };
        int done = 0;
        for (int i = 0; i < writers; ++i) asio::co_spawn(io, write(i), [&](std::exception_ptr) { ++done; });
        run(io, [&]() -> asio::awaitable<void> {
            asio::steady_timer t(co_await asio::this_coro::executor);
            while (done < writers) {
                t.expires_after(5ms);
                co_await t.async_wait(asio::use_awaitable);
            }
        }());
    }
    EXPECT_EQ(failures, std::vector<std::string>{});
}

}  // namespace
