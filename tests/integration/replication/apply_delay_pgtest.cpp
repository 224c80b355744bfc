// The tracker against a replica whose replay is held back with recovery_min_apply_delay. It
// reconfigures replica 1, so ctest runs it alone (DISRUPTIVE).
#include <gtest/gtest.h>

#include <asio.hpp>

#include <chrono>
#include <cstdio>
#include <string>

#include "replication_support.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::lsn;
using flypg::pg::connection;
using flypg::replication::replication_timeout_error;
using flypg::replication::tracker;
using flypg::replication::tracker_options;
using flypg::replication::wait_status;
namespace test = flypg::test;

double millis(std::chrono::steady_clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

class ApplyDelayPg : public ::testing::Test {
  protected:
    void SetUp() override {
        table_ = test::unique_table("delay_it");
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

void waits_match_the_delay(asio::io_context& io, const std::string& table, tracker_options options) {
    test::apply_delay delay(300);
    tracker t(io.get_executor(), test::replay_source_for(io, test::replica_conninfo(1)), options);
    std::uint64_t polls_during_waits = 0;
    test::run_with_tracker(io, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        for (std::int64_t id = 1; id <= 5; ++id) {
            // The commit happens after this instant, and the replica applies it 300 ms after the
            // commit's timestamp (same machine, same clock): nothing may end the wait earlier.
            const auto sent = std::chrono::steady_clock::now();
            const lsn commit = co_await test::insert_row(primary, table, id);
            const auto polls_before = t.stats().polls;
            auto result = co_await t.wait_for(commit);
            const double since_sent = millis(std::chrono::steady_clock::now() - sent);
            polls_during_waits += t.stats().polls - polls_before;
            EXPECT_EQ(result.status, wait_status::replayed);
            EXPECT_GE(since_sent, 299.0) << "returned before the replica could have the write";
            EXPECT_LE(since_sent, 400.0) << "the tracker noticed the replay late";
            EXPECT_TRUE(co_await test::row_visible(replica, table, id));
            std::printf("[ figures  ] %s: write + wait %.1f ms for a 300 ms apply delay\n",
                        options.strategy == flypg::replication::poll_strategy::poll ? "poll" : "long_poll",
                        since_sent);
        }
    });
    std::printf("[ figures  ] %llu queries during 5 waits of ~300 ms\n",
                static_cast<unsigned long long>(polls_during_waits));
    // Polling at the 200 us floor would send ~7,500; the backoff keeps it to a few dozen per wait.
    EXPECT_LT(polls_during_waits, 5u * 60u);
    EXPECT_EQ(t.stats().timeouts, 0u);
}

TEST_F(ApplyDelayPg, WaitsMatchTheReplicasApplyDelay) {
    waits_match_the_delay(io_, table_, {});
}

TEST_F(ApplyDelayPg, LongPollWaitsMatchTheReplicasApplyDelay) {
    test::run(io_, []() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        co_await flypg::replication::install_long_poll_function(primary);
    }());
    tracker_options options;
    options.strategy = flypg::replication::poll_strategy::long_poll;
    waits_match_the_delay(io_, table_, options);
}

TEST_F(ApplyDelayPg, DelayBeyondTheTimeoutIsCommittedNotReplicatedWithTheLsn) {
    test::apply_delay delay(1500);
    tracker t(io_.get_executor(), test::replay_source_for(io_, test::replica_conninfo(1)));
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        const lsn commit = co_await test::insert_row(primary, table_, 1);
        const auto start = std::chrono::steady_clock::now();
        bool timed_out = false;
        try {
            co_await t.wait_for(commit, 300ms);
        } catch (const replication_timeout_error& e) {
            timed_out = true;
            EXPECT_EQ(e.code(), flypg::errc::committed_not_replicated);
            EXPECT_EQ(e.target(), commit);
            EXPECT_NE(std::string(e.what()).find(commit.to_string()), std::string::npos) << e.what();
            EXPECT_TRUE(e.replay_position().has_value());
            EXPECT_LT(e.replay_position().value_or(commit), commit);
        }
        const double waited = millis(std::chrono::steady_clock::now() - start);
        EXPECT_TRUE(timed_out);
        EXPECT_GE(waited, 299.0);
        EXPECT_LE(waited, 400.0);
        EXPECT_FALSE(co_await test::row_visible(replica, table_, 1))
            << "the replica was not behind after all";

        // The write did commit: waiting again (the caller's choice) ends once the delay has passed.
        auto result = co_await t.wait_for(commit);
        EXPECT_EQ(result.status, wait_status::replayed);
        EXPECT_GE(millis(std::chrono::steady_clock::now() - start), 1490.0);
        EXPECT_TRUE(co_await test::row_visible(replica, table_, 1));
    });
    EXPECT_EQ(t.stats().timeouts, 1u);
}

}  // namespace
