// The tracker against the real primary and its streaming replicas (scripts/pg-cluster): writes on
// the primary, waits on replica 1, reads there.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <asio/experimental/as_tuple.hpp>

#include "flypg/pg/pool.hpp"
#include "replication_support.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::lsn;
using flypg::pg::connection;
using flypg::replication::tracker;
using flypg::replication::tracker_options;
using flypg::replication::wait_status;
namespace test = flypg::test;

class TrackerPg : public ::testing::Test {
  protected:
    void SetUp() override {
        table_ = test::unique_table("tracker_it");
        test::run(io_, [](std::string table) -> asio::awaitable<void> {
            connection primary = co_await test::connect_to(test::primary_conninfo());
            co_await primary.query("DROP TABLE IF EXISTS " + table);
            co_await primary.query("CREATE TABLE " + table + " (id bigint PRIMARY KEY)");
        }(table_));
    }

    void TearDown() override {
        test::run(io_, [](std::string table) -> asio::awaitable<void> {
            connection primary = co_await test::connect_to(test::primary_conninfo());
            co_await primary.query("DROP TABLE IF EXISTS " + table);
        }(table_));
    }

    asio::io_context io_;
    std::string table_;
};

// A tracker whose poll is prepared once per connection (`prepare_poll`, the default) or sent
// unprepared (for poolers that cannot keep prepared statements) sees every write replayed.
void expect_waits_end_once_the_replica_has_the_write(asio::io_context& io,
                                                     const std::string& table,
                                                     bool prepare_poll) {
    tracker t(io.get_executor(), test::replay_source_for(io, test::replica_conninfo(1), prepare_poll));
    test::run_with_tracker(io, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        for (std::int64_t id = 1; id <= 20; ++id) {
            const lsn commit = co_await test::insert_row(primary, table, id);
            auto result = co_await t.wait_for(commit);
            EXPECT_EQ(result.status, wait_status::replayed);
            EXPECT_GE(result.replay_position, commit);
            EXPECT_TRUE(co_await test::row_visible(replica, table, id)) << "row " << id;
        }
        EXPECT_TRUE(t.stats().replay_position.has_value());
        EXPECT_TRUE(t.stats().connected);
    });
    const auto s = t.stats();
    EXPECT_EQ(s.waits, 20u);
    EXPECT_EQ(s.replayed, 20u);
    EXPECT_EQ(s.timeouts, 0u);
    EXPECT_FALSE(s.replay_position.has_value()) << "forgotten once run() has stopped";
}

TEST_F(TrackerPg, WaitEndsOnceTheReplicaHasTheWrite) {
    expect_waits_end_once_the_replica_has_the_write(io_, table_, true);
}

TEST_F(TrackerPg, UnpreparedPollWorksToo) {
    expect_waits_end_once_the_replica_has_the_write(io_, table_, false);
}

// The PostgreSQL source's early poll: start_read() sends the prepared poll at once, and the next
// read() returns that query's answer instead of sending another.
TEST_F(TrackerPg, PgSourceStartedReadIsAnsweredByTheNextRead) {
    test::run(io_, [](asio::io_context& io, std::string table) -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        const lsn commit = co_await test::insert_row(primary, table, 1);
        auto source = test::replay_source_for(io, test::replica_conninfo(1));
        co_await source->reconnect();
        EXPECT_TRUE(source->start_read());
        EXPECT_FALSE(source->start_read()) << "a second query before the first answer was read";
        flypg::replication::replay_status status = co_await source->read();
        EXPECT_EQ(source->queries_sent(), 1u) << "read() sent its own query instead of taking the answer";
        asio::steady_timer pause(io);
        for (int i = 0; i < 5000 && status.position < commit; ++i) {
            pause.expires_after(1ms);
            co_await pause.async_wait(asio::use_awaitable);
            EXPECT_TRUE(source->start_read());
            status = co_await source->read();
        }
        EXPECT_EQ(status.state, flypg::replication::replay_state::replaying);
        EXPECT_GE(status.position, commit);

        // Unprepared (behind a pooler), the poll cannot be sent ahead: the tracker's loop sends it.
        auto unprepared = test::replay_source_for(io, test::replica_conninfo(1), false);
        co_await unprepared->reconnect();
        EXPECT_FALSE(unprepared->start_read());
        EXPECT_EQ(unprepared->queries_sent(), 0u);
    }(io_, table_));
}

// 100 coroutines each write 100 rows, wait, and read their row from the replica right away.
TEST_F(TrackerPg, HundredCoroutinesReadTheirOwnWritesWithoutStaleReads) {
    constexpr int writers = 100;
    constexpr int writes_each = 100;
    tracker t(io_.get_executor(), test::replay_source_for(io_, test::replica_conninfo(1)));
    flypg::pg::pool_options primary_options;
    primary_options.connection.conninfo = test::primary_conninfo();
    primary_options.max_size = 40;
    flypg::pg::pool primary_pool(io_.get_executor(), primary_options);
    flypg::pg::pool_options replica_options;
    replica_options.connection.conninfo = test::replica_conninfo(1);
    replica_options.max_size = 40;
    flypg::pg::pool replica_pool(io_.get_executor(), replica_options);
    int stale = 0;
    int done_writes = 0;
    std::vector<double> wait_micros;
    test::run_with_tracker(
        io_,
        t,
        [&]() -> asio::awaitable<void> {
            auto executor = co_await asio::this_coro::executor;
            int remaining = writers;
            std::exception_ptr first_failure;
            asio::steady_timer all_done(executor, asio::steady_timer::time_point::max());
            auto writer = [&](int w) -> asio::awaitable<void> {
                for (int i = 0; i < writes_each; ++i) {
                    const std::int64_t id = std::int64_t{w} * writes_each + i;
                    lsn commit;
                    {
                        auto conn = co_await primary_pool.acquire();
                        commit = co_await test::insert_row(*conn, table_, id);
                    }
                    const auto start = std::chrono::steady_clock::now();
                    co_await t.wait_for(commit);
                    wait_micros.push_back(
                        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                            .count());
                    auto conn = co_await replica_pool.acquire();
                    if (!co_await test::row_visible(*conn, table_, id)) ++stale;
                    ++done_writes;
                }
            };
            for (int w = 0; w < writers; ++w) {
                // The scenario outlives every writer: it waits for all of them below.
                asio::co_spawn(executor, writer(w), [&](std::exception_ptr e) {
                    if (e && !first_failure) first_failure = e;
                    if (--remaining == 0) all_done.cancel();
                });
            }
            co_await all_done.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
            if (first_failure) std::rethrow_exception(first_failure);
        },
        std::chrono::seconds(240));
    EXPECT_EQ(done_writes, writers * writes_each);
    EXPECT_EQ(stale, 0);
    const auto s = t.stats();
    EXPECT_EQ(s.timeouts, 0u);
    EXPECT_EQ(s.waits, static_cast<std::uint64_t>(writers * writes_each));
    std::sort(wait_micros.begin(), wait_micros.end());
    std::printf(
        "[ figures  ] %d writes: stale reads %d; wait p50 %.0f us, p99 %.0f us; %llu polls, "
        "%llu waits answered from cache, peak %zu waiters\n",
        done_writes,
        stale,
        wait_micros[wait_micros.size() / 2],
        wait_micros[wait_micros.size() * 99 / 100],
        static_cast<unsigned long long>(s.polls),
        static_cast<unsigned long long>(s.cached),
        s.peak_waiters);
}

// Idle means nothing reaches the replica: the tracker's counter stays put, and the replica itself
// shows the tracker's backend idle since before the quiet period.
TEST_F(TrackerPg, IdleTrackerSendsNoQueriesToTheReplica) {
    const std::string application = "flypg_idle_" + std::to_string(::getpid());
    tracker t(io_.get_executor(),
              test::replay_source_for(io_, test::replica_conninfo(1) + " application_name=" + application));
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        const lsn commit = co_await test::insert_row(primary, table_, 1);
        co_await t.wait_for(commit);  // polls at least once
        const auto polls_before = t.stats().polls;

        asio::steady_timer quiet(co_await asio::this_coro::executor, 5s);
        co_await quiet.async_wait(asio::use_awaitable);

        EXPECT_EQ(t.stats().polls, polls_before);
        connection observer = co_await test::connect_to(test::replica_conninfo(1));
        flypg::pg::params args;
        args.emplace_back(application);
        auto r = co_await observer.query(
            "SELECT state, extract(epoch FROM now() - state_change)::float8 FROM pg_stat_activity "
            "WHERE application_name = $1",
            std::move(args));
        EXPECT_EQ(r.size(), 1u) << "the tracker's backend is not on the replica";
        if (r.size() != 1) co_return;
        EXPECT_EQ(r[0].get<std::string>(0), "idle");
        EXPECT_GE(r[0].get<double>(1), 5.0) << "a statement ran during the quiet period";
        std::printf("[ figures  ] idle 5 s: %llu queries from the tracker; replica backend idle for %.2f s\n",
                    static_cast<unsigned long long>(t.stats().polls - polls_before),
                    r[0].get<double>(1));
    });
}

TEST_F(TrackerPg, ServerThatIsNotReplicatingCompletesWaitsAtOnce) {
    tracker t(io_.get_executor(), test::replay_source_for(io_, test::primary_conninfo()));
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        const lsn commit = co_await test::insert_row(primary, table_, 1);
        const auto start = std::chrono::steady_clock::now();
        auto result = co_await t.wait_for(commit, 5s);
        EXPECT_EQ(result.status, wait_status::not_replicating);
        EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
        auto again = co_await t.wait_for(lsn::from_value(commit.value() + 1'000'000));
        EXPECT_EQ(again.status, wait_status::not_replicating);
    });
    EXPECT_EQ(t.stats().not_replicating, 2u);
    EXPECT_EQ(t.stats().polls, 1u) << "the second wait is answered without a query";
}

TEST_F(TrackerPg, ReconnectsWhenTheReplicaDropsItsConnection) {
    const std::string application = "flypg_reconnect_" + std::to_string(::getpid());
    tracker t(io_.get_executor(),
              test::replay_source_for(io_, test::replica_conninfo(1) + " application_name=" + application));
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        co_await t.wait_for(co_await test::insert_row(primary, table_, 1));

        flypg::pg::params args;
        args.emplace_back(application);
        auto killed = co_await replica.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            std::move(args));
        EXPECT_EQ(killed.size(), 1u);

        const lsn commit = co_await test::insert_row(primary, table_, 2);
        auto result = co_await t.wait_for(commit, 5s);
        EXPECT_EQ(result.status, wait_status::replayed);
        EXPECT_TRUE(co_await test::row_visible(replica, table_, 2));
    });
    EXPECT_GE(t.stats().source_failures, 1u);
    EXPECT_GE(t.stats().reconnects, 2u);
}

TEST_F(TrackerPg, LongPollStrategyWaitsOnTheServer) {
    test::run(io_, []() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        co_await flypg::replication::install_long_poll_function(primary);
    }());
    tracker_options options;
    options.strategy = flypg::replication::poll_strategy::long_poll;
    tracker t(io_.get_executor(), test::replay_source_for(io_, test::replica_conninfo(1)), options);
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        // The function reaches the replica by replication: the first waits may find it missing
        // (an error, then a reconnect) until then; the deadline covers that.
        for (std::int64_t id = 1; id <= 20; ++id) {
            const lsn commit = co_await test::insert_row(primary, table_, id);
            auto result = co_await t.wait_for(commit);
            EXPECT_EQ(result.status, wait_status::replayed);
            EXPECT_TRUE(co_await test::row_visible(replica, table_, id));
        }
    });
    EXPECT_EQ(t.stats().timeouts, 0u);
}

TEST(LongPollFunction, RejectsNamesThatAreNotIdentifiers) {
    EXPECT_THROW(flypg::replication::long_poll_function_sql("f(); DROP TABLE x; --"), flypg::error);
    EXPECT_THROW(flypg::replication::long_poll_function_sql(""), flypg::error);
    EXPECT_NO_THROW(flypg::replication::long_poll_function_sql("flypg.wait_for_replay"));
}

}  // namespace
