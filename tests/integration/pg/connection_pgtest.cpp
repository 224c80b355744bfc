// The PostgreSQL client against the real test primary and its streaming replica.
#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <memory>
#include <optional>

#include "flypg/pg/connection.hpp"
#include "support/test_support.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::pg::connection;
using flypg::pg::params;
using flypg::pg::result;
using flypg::pg::statement;
using flypg::test::run;

asio::awaitable<connection> open_primary() {
    flypg::pg::connect_options options;
    options.conninfo = flypg::test::primary_conninfo();
    co_return co_await connection::connect(co_await asio::this_coro::executor, options);
}

template <class Awaitable>
std::error_code error_of(asio::io_context& io, Awaitable task) {
    try {
        run(io, std::move(task));
    } catch (const flypg::error& e) {
        return e.code();
    }
    return {};
}

class Connection : public ::testing::Test {
  protected:
    asio::io_context io;
};

TEST_F(Connection, TypesRoundTrip) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        params values{nullptr,
                      true,
                      std::int16_t{-7},
                      std::int32_t{123456},
                      std::int64_t{-9'000'000'000'000},
                      0.125,
                      "naïve 'quoted' text",
                      flypg::pg::bytes{{std::byte{0}, std::byte{0x7f}, std::byte{0xff}}}};
        result r = co_await conn.query(
            "SELECT $1::int4 AS n, $2 AS b, $3 AS s, $4 AS i, $5 AS l, $6 AS d, $7 AS t, $8 AS x",
            std::move(values));
        EXPECT_EQ(r.size(), 1u);
        const auto row = r.at(0);
        EXPECT_TRUE(row.is_null("n"));
        EXPECT_TRUE(row.get<bool>("b"));
        EXPECT_EQ(row.get<std::int16_t>("s"), -7);
        EXPECT_EQ(row.get<std::int32_t>("i"), 123456);
        EXPECT_EQ(row.get<std::int64_t>("l"), -9'000'000'000'000);
        EXPECT_DOUBLE_EQ(row.get<double>("d"), 0.125);
        EXPECT_EQ(row.get<std::string>("t"), "naïve 'quoted' text");
        const flypg::pg::bytes expected{{std::byte{0}, std::byte{0x7f}, std::byte{0xff}}};
        EXPECT_EQ(row.get<flypg::pg::bytes>("x"), expected);
    }());
}

TEST_F(Connection, ParametersAreNeverSplicedIntoSql) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        params hostile{"'); DROP TABLE pg_class; --"};
        result r = co_await conn.query("SELECT $1::text AS v", std::move(hostile));
        EXPECT_EQ(r[0].get<std::string>(0), "'); DROP TABLE pg_class; --");
    }());
}

TEST_F(Connection, PreparedStatementRunsWithTheTypesItWasPreparedWith) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        params example{std::int64_t{0}, std::string()};
        co_await conn.prepare("add_and_tag", "SELECT $1 + 1 AS n, $2 || '!' AS tag", std::move(example));
        for (std::int64_t i = 0; i < 3; ++i) {
            params args{i, std::string("run ") + std::to_string(i)};
            result r = co_await conn.query_prepared("add_and_tag", std::move(args));
            EXPECT_EQ(r[0].get<std::int64_t>("n"), i + 1);
            EXPECT_EQ(r[0].get<std::string>("tag"), "run " + std::to_string(i) + "!");
        }
        // Hostile text stays a value here too.
        params hostile{std::int64_t{1}, std::string("'); DROP TABLE pg_class; --")};
        result r = co_await conn.query_prepared("add_and_tag", std::move(hostile));
        EXPECT_EQ(r[0].get<std::string>("tag"), "'); DROP TABLE pg_class; --!");
    }());
}

TEST_F(Connection, PreparedStatementMisuseIsNamedAndLeavesTheConnectionUsable) {
    auto conn = std::make_shared<std::optional<connection>>();
    run(io, [conn]() -> asio::awaitable<void> {
        conn->emplace(co_await open_primary());
    }());
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           co_await (*conn)->query_prepared("never_prepared");
                       }()),
              flypg::errc::invalid_argument);
    run(io, [conn]() -> asio::awaitable<void> {
        params example{std::int64_t{0}};
        co_await (*conn)->prepare("plus_one", "SELECT $1 + 1", std::move(example));
    }());
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           params wrong{std::string("1")};
                           co_await (*conn)->query_prepared("plus_one", std::move(wrong));
                       }()),
              flypg::errc::invalid_argument);
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           co_await (*conn)->prepare("broken", "SELEC 1");
                       }()),
              flypg::sqlstate("42601"));
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           params example{std::int64_t{0}};
                           co_await (*conn)->prepare("plus_one", "SELECT $1 + 2", std::move(example));
                       }()),
              flypg::sqlstate("42P05"));
    run(io, [conn]() -> asio::awaitable<void> {
        params args{std::int64_t{41}};
        result r = co_await (*conn)->query_prepared("plus_one", std::move(args));
        EXPECT_EQ(r[0].get<std::int64_t>(0), 42);
    }());
}

TEST_F(Connection, ReportsAffectedRowsAndCommandTag) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        co_await conn.query("CREATE TEMP TABLE t (id int)");
        result r = co_await conn.query("INSERT INTO t SELECT generate_series(1, 5)");
        EXPECT_EQ(r.affected_rows(), 5);
        EXPECT_EQ(r.command_tag(), "INSERT 0 5");
    }());
}

TEST_F(Connection, SqlErrorsCarrySqlstateAndServerText) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        co_await conn.query("CREATE TEMP TABLE u (id int PRIMARY KEY)");
        co_await conn.query("INSERT INTO u VALUES (1)");
        try {
            co_await conn.query("INSERT INTO u VALUES (1)");
            ADD_FAILURE() << "duplicate key accepted";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::sqlstate("23505"));
            EXPECT_NE(e.diag().server_message.find("duplicate key"), std::string::npos);
            EXPECT_NE(e.diag().detail.find("(id)=(1)"), std::string::npos);
        }
        // The connection is still usable after a SQL error.
        result r = co_await conn.query("SELECT count(*) FROM u");
        EXPECT_EQ(r[0].get<std::int64_t>(0), 1);
    }());
}

TEST_F(Connection, WriteOnReplicaFailsWithReadOnlySqlstate) {
    run(io, []() -> asio::awaitable<void> {
        flypg::pg::connect_options options;
        options.conninfo = flypg::test::replica_conninfo();
        connection replica = co_await connection::connect(co_await asio::this_coro::executor, options);
        try {
            co_await replica.query("CREATE TABLE must_fail (id int)");
            ADD_FAILURE() << "the replica accepted a write";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::sqlstate("25006"));
            EXPECT_EQ(e.code(), flypg::condition::replica_read_only);
        }
    }());
}

TEST_F(Connection, SessionSettingsMakeAConnectionReadOnly) {
    run(io, []() -> asio::awaitable<void> {
        flypg::pg::connect_options options;
        options.conninfo = flypg::test::primary_conninfo();
        options.session_settings = {"SET default_transaction_read_only = on"};
        connection conn = co_await connection::connect(co_await asio::this_coro::executor, options);
        try {
            co_await conn.query("CREATE TEMP TABLE must_fail (id int)");
            ADD_FAILURE() << "a read-only session accepted a write";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::sqlstate("25006"));
        }
    }());
}

TEST_F(Connection, PipelineRunsStatementsInOrderAndSyncCommits) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        co_await conn.query("DROP TABLE IF EXISTS pipeline_t");
        co_await conn.query("CREATE TABLE pipeline_t (id int PRIMARY KEY)");
        std::vector<statement> statements;
        statements.push_back({"INSERT INTO pipeline_t VALUES (1)", {}, flypg::pg::sync_after::yes});
        statements.push_back({"SELECT count(*) FROM pipeline_t"});
        statements.push_back({"SELECT pg_current_wal_flush_lsn()::text"});
        std::vector<result> results = co_await conn.pipeline(std::move(statements));
        EXPECT_EQ(results.size(), 3u);
        EXPECT_FALSE(results[0].error());
        EXPECT_EQ(results[1][0].get<std::int64_t>(0), 1);
        EXPECT_NE(results[2][0].get<std::string>(0).find('/'), std::string::npos);
        co_await conn.query("DROP TABLE pipeline_t");
    }());
}

TEST_F(Connection, PipelineFailureSkipsOnlyItsSegment) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        std::vector<statement> statements;
        statements.push_back({"SELECT 1/0"});
        statements.push_back({"SELECT 2", {}, flypg::pg::sync_after::yes});
        params three{std::int32_t{3}};
        statements.push_back({"SELECT $1::int4", std::move(three)});
        std::vector<result> results = co_await conn.pipeline(std::move(statements));
        EXPECT_EQ(results[0].error(), flypg::sqlstate("22012"));
        EXPECT_EQ(results[1].error(), flypg::errc::pipeline_aborted);
        EXPECT_FALSE(results[2].error());
        EXPECT_EQ(results[2][0].get<std::int32_t>(0), 3);
        result after = co_await conn.query("SELECT 4");
        EXPECT_EQ(after[0].get<std::int32_t>(0), 4);
    }());
}

TEST_F(Connection, TimeoutCancelsTheStatementOnTheServerAndKeepsTheConnection) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        const auto started = std::chrono::steady_clock::now();
        flypg::pg::query_options options;
        options.timeout = 200ms;
        try {
            co_await conn.query("SELECT pg_sleep(30)", {}, options);
            ADD_FAILURE() << "pg_sleep(30) finished within the timeout";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::timeout);
        }
        EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
        EXPECT_TRUE(conn.is_open());
        result r = co_await conn.query("SELECT 1");
        EXPECT_EQ(r[0].get<std::int32_t>(0), 1);
    }());
}

TEST_F(Connection, CancellationSlotCancelsAPgSleepMidQuery) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        const int pid = conn.backend_pid();
        asio::steady_timer timer(co_await asio::this_coro::executor, 200ms);
        using namespace asio::experimental::awaitable_operators;
        const auto started = std::chrono::steady_clock::now();
        // The timer wins, which cancels the query through its cancellation slot.
        auto outcome = co_await (conn.query("SELECT pg_sleep(30)") || timer.async_wait(asio::use_awaitable));
        EXPECT_EQ(outcome.index(), 1u);
        EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
        // The backend is idle again: the server really stopped the sleep.
        connection observer = co_await open_primary();
        params pid_param{pid};
        result state = co_await observer.query("SELECT state FROM pg_stat_activity WHERE pid = $1",
                                               std::move(pid_param));
        EXPECT_EQ(state[0].get<std::string>(0), "idle");
        result r = co_await conn.query("SELECT 2");
        EXPECT_EQ(r[0].get<std::int32_t>(0), 2);
    }());
}

TEST_F(Connection, SendPreparedLeavesAtOnceAndReceivePreparedReadsTheAnswer) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        connection observer = co_await open_primary();
        params example{std::string()};
        co_await conn.prepare(
            "name_session", "SELECT set_config('application_name', $1, false)", std::move(example));
        const std::string name = "flypg-sent-" + std::to_string(conn.backend_pid());
        params args{name};
        conn.send_prepared("name_session", args);
        // Nothing awaits `conn`, yet the server runs the statement: another session sees its effect.
        asio::steady_timer pause(co_await asio::this_coro::executor);
        std::string seen;
        for (int i = 0; i < 500 && seen != name; ++i) {
            params pid{std::int64_t{conn.backend_pid()}};
            result r = co_await observer.query("SELECT application_name FROM pg_stat_activity WHERE pid = $1",
                                               std::move(pid));
            seen = r.at(0).get<std::string>(0);
            pause.expires_after(10ms);
            if (seen != name) co_await pause.async_wait(asio::use_awaitable);
        }
        EXPECT_EQ(seen, name);
        // Until the answer is read, the connection is busy.
        std::error_code refused;
        try {
            co_await conn.query("SELECT 1");
        } catch (const flypg::error& e) {
            refused = e.code();
        }
        EXPECT_EQ(refused, flypg::errc::busy);
        result r = co_await conn.receive_prepared();
        EXPECT_EQ(r.at(0).get<std::string>(0), name);
        result after = co_await conn.query("SELECT 2");
        EXPECT_EQ(after.at(0).get<std::int32_t>(0), 2);
    }());
}

TEST_F(Connection, SendPreparedMisuseIsNamedAndLeavesTheConnectionUsable) {
    auto conn = std::make_shared<std::optional<connection>>();
    run(io, [conn]() -> asio::awaitable<void> {
        conn->emplace(co_await open_primary());
        params example{std::int64_t{0}};
        co_await (*conn)->prepare("plus_one", "SELECT $1 + 1", std::move(example));
    }());
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           co_await (*conn)->receive_prepared();
                       }()),
              flypg::errc::invalid_argument);
    try {
        (*conn)->send_prepared("never_prepared");
        ADD_FAILURE() << "an unknown statement was sent";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        EXPECT_NE(std::string(e.what()).find("never_prepared"), std::string::npos) << e.what();
    }
    try {
        params wrong{std::string("1")};
        (*conn)->send_prepared("plus_one", wrong);
        ADD_FAILURE() << "parameters of the wrong type were sent";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
    }
    params args{std::int64_t{41}};
    (*conn)->send_prepared("plus_one", args);
    try {
        (*conn)->send_prepared("plus_one", args);
        ADD_FAILURE() << "a second statement was sent before the first answer was read";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::busy);
    }
    run(io, [conn]() -> asio::awaitable<void> {
        result r = co_await (*conn)->receive_prepared();
        EXPECT_EQ(r.at(0).get<std::int64_t>(0), 42);
    }());
    // Closed with an answer pending: every later operation says the connection is gone.
    (*conn)->send_prepared("plus_one", args);
    (*conn)->close();
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           co_await (*conn)->receive_prepared();
                       }()),
              flypg::errc::not_connected);
    EXPECT_EQ(error_of(io,
                       [conn]() -> asio::awaitable<void> {
                           co_await (*conn)->query("SELECT 1");
                       }()),
              flypg::errc::not_connected);
}

TEST_F(Connection, ConcurrentUseOfOneConnectionIsRefused) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        using namespace asio::experimental::awaitable_operators;
        auto second = [&]() -> asio::awaitable<std::error_code> {
            try {
                co_await conn.query("SELECT 1");
            } catch (const flypg::error& e) {
                co_return e.code();
            }
            co_return std::error_code();
        };
        auto [first, refused] = co_await (conn.query("SELECT pg_sleep(0.1)") && second());
        EXPECT_EQ(refused, flypg::errc::busy);
        EXPECT_FALSE(first.error());
    }());
}

TEST_F(Connection, ConnectFailureNamesTheProblem) {
    const std::error_code ec = error_of(io, []() -> asio::awaitable<void> {
        flypg::pg::connect_options options;
        options.conninfo = "host=127.0.0.1 port=1 dbname=flypg user=flypg";
        co_await connection::connect(co_await asio::this_coro::executor, options);
    }());
    EXPECT_EQ(ec, flypg::errc::connect_failed);
}

TEST_F(Connection, SqlThatLibpqWouldCutIsRefusedAndNothingRuns) {
    run(io, [&]() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        co_await conn.query("CREATE TEMP TABLE nul_test (id int)");
        co_await conn.query("INSERT INTO nul_test VALUES (1), (2), (3)");
        auto refused = [&](auto op) -> asio::awaitable<std::error_code> {
            try {
                co_await op();
            } catch (const flypg::error& e) {
                co_return e.code();
            }
            co_return std::error_code();
        };
        EXPECT_EQ(co_await refused(
                      [&] { return conn.query(std::string("DELETE FROM nul_test\0 WHERE id = 1", 35)); }),
                  flypg::errc::invalid_argument);
        std::vector<statement> batch(2);
        batch[0].sql = "DELETE FROM nul_test WHERE id = 2";
        batch[1].sql = std::string("DELETE FROM nul_test\0 WHERE id = 3", 35);
        EXPECT_EQ(co_await refused([&] { return conn.pipeline(std::move(batch)); }),
                  flypg::errc::invalid_argument);
        EXPECT_EQ(co_await refused([&] { return conn.query("   "); }), flypg::errc::invalid_argument);
        // Nothing ran, and the connection is free for the next statement.
        result r = co_await conn.query("SELECT count(*) FROM nul_test");
        EXPECT_EQ(r.at(0).get<std::int64_t>(0), 3);
    }());
}

TEST_F(Connection, MalformedConninfoIsInvalidArgument) {
    const std::error_code ec = error_of(io, []() -> asio::awaitable<void> {
        flypg::pg::connect_options options;
        options.conninfo = "host=127.0.0.1 nonsense_keyword=1";
        co_await connection::connect(co_await asio::this_coro::executor, options);
    }());
    EXPECT_EQ(ec, flypg::errc::invalid_argument);
}

TEST_F(Connection, HostNamesAreResolvedWithoutBlocking) {
    run(io, []() -> asio::awaitable<void> {
        flypg::pg::connect_options options;
        options.conninfo = flypg::test::primary_conninfo() + " host=localhost";
        connection conn = co_await connection::connect(co_await asio::this_coro::executor, options);
        result r = co_await conn.query("SELECT 1");
        EXPECT_EQ(r[0].get<std::int32_t>(0), 1);
    }());
}

TEST_F(Connection, AcceptsUrisWithNamedAndNumericHosts) {
    run(io, []() -> asio::awaitable<void> {
        // The port of the test primary, from its keyword/value connection string.
        const std::string primary = flypg::test::primary_conninfo();
        const auto at = primary.find("port=") + 5;
        const std::string port = primary.substr(at, primary.find(' ', at) - at);
        for (const std::string host : {"localhost", "127.0.0.1"}) {
            flypg::pg::connect_options options;
            options.conninfo = "postgresql://flypg@" + host + ":" + port + "/flypg?application_name=uri_test";
            connection conn = co_await connection::connect(co_await asio::this_coro::executor, options);
            result r = co_await conn.query("SELECT current_setting('application_name')");
            EXPECT_EQ(r[0].get<std::string>(0), "uri_test");
        }
    }());
}

TEST_F(Connection, QueryOnABrokenConnectionFailsAtOnce) {
    run(io, []() -> asio::awaitable<void> {
        connection conn = co_await open_primary();
        connection killer = co_await open_primary();
        params pid{conn.backend_pid()};
        co_await killer.query("SELECT pg_terminate_backend($1)", std::move(pid));
        try {
            co_await conn.query("SELECT 1");
            ADD_FAILURE() << "query on a terminated backend succeeded";
        } catch (const flypg::error& e) {
            EXPECT_TRUE(e.code() == flypg::condition::connection_error ||
                        e.code() == flypg::sqlstate("57P01"))
                << e.code().message() << ": " << e.what();
        }
        EXPECT_FALSE(conn.is_open());
        const auto started = std::chrono::steady_clock::now();
        try {
            co_await conn.query("SELECT 1");
            ADD_FAILURE() << "query on a closed connection succeeded";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::not_connected);
        }
        EXPECT_LT(std::chrono::steady_clock::now() - started, 100ms);
    }());
}

}  // namespace
