// The connection pool against the real test primary, including a primary restart.
#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <chrono>

#include "flypg/pg/pool.hpp"
#include "support/test_support.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::pg::pool;
using flypg::pg::pool_options;
using flypg::pg::pooled_connection;
using flypg::test::run;

pool_options primary_pool(std::size_t max_size, std::chrono::milliseconds acquire_timeout = 5s) {
    pool_options options;
    options.connection.conninfo = flypg::test::primary_conninfo();
    options.max_size = max_size;
    options.acquire_timeout = acquire_timeout;
    return options;
}

TEST(Pool, ReusesConnectionsAndStaysWithinMaxSize) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(3));
    run(io, [&]() -> asio::awaitable<void> {
        auto worker = [&]() -> asio::awaitable<void> {
            for (int i = 0; i < 20; ++i) {
                flypg::pg::result r = co_await db.query("SELECT pg_backend_pid()");
                EXPECT_EQ(r.size(), 1u);
                EXPECT_LE(db.stats().size, 3u);
            }
        };
        using namespace asio::experimental::awaitable_operators;
        co_await (worker() && worker() && worker() && worker() && worker() && worker());
    }());
    const flypg::pg::pool_stats stats = db.stats();
    EXPECT_EQ(stats.opened, 3u);
    EXPECT_EQ(stats.acquired, 120u);
    EXPECT_EQ(stats.size, 3u);
    EXPECT_EQ(stats.idle, 3u);
}

TEST(Pool, ExhaustionTimesOut) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(1, 150ms));
    run(io, [&]() -> asio::awaitable<void> {
        pooled_connection held = co_await db.acquire();
        const auto started = std::chrono::steady_clock::now();
        try {
            pooled_connection second = co_await db.acquire();
            ADD_FAILURE() << "acquired a second connection from a pool of one";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::pool_timeout);
        }
        const auto waited = std::chrono::steady_clock::now() - started;
        EXPECT_GE(waited, 150ms);
        EXPECT_LT(waited, 2s);
    }());
    EXPECT_EQ(db.stats().timeouts, 1u);
    EXPECT_EQ(db.stats().waiters, 0u);
}

TEST(Pool, WaiterGetsTheConnectionReleasedByAnother) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(1));
    run(io, [&]() -> asio::awaitable<void> {
        auto holder = [&]() -> asio::awaitable<int> {
            pooled_connection conn = co_await db.acquire();
            asio::steady_timer t(co_await asio::this_coro::executor, 50ms);
            co_await t.async_wait(asio::use_awaitable);
            co_return conn->backend_pid();
        };
        auto waiter = [&]() -> asio::awaitable<int> {
            asio::steady_timer t(co_await asio::this_coro::executor, 10ms);
            co_await t.async_wait(asio::use_awaitable);
            pooled_connection conn = co_await db.acquire();
            co_return conn->backend_pid();
        };
        using namespace asio::experimental::awaitable_operators;
        auto [first_pid, second_pid] = co_await (holder() && waiter());
        EXPECT_EQ(first_pid, second_pid);
    }());
    EXPECT_EQ(db.stats().opened, 1u);
}

TEST(Pool, CancelledAcquireLeaksNothing) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(1));
    run(io, [&]() -> asio::awaitable<void> {
        {
            pooled_connection held = co_await db.acquire();
            asio::steady_timer t(co_await asio::this_coro::executor, 20ms);
            using namespace asio::experimental::awaitable_operators;
            auto outcome = co_await (db.acquire() || t.async_wait(asio::use_awaitable));
            EXPECT_EQ(outcome.index(), 1u);
            EXPECT_EQ(db.stats().waiters, 0u);
        }
        // The pool of one still works: nothing was lost to the cancelled acquire.
        flypg::pg::result r = co_await db.query("SELECT 1");
        EXPECT_EQ(r[0].get<std::int32_t>(0), 1);
    }());
    EXPECT_EQ(db.stats().size, 1u);
}

TEST(Pool, ConnectionHeldByAThrowingCoroutineIsReturned) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(1, 500ms));
    run(io, [&]() -> asio::awaitable<void> {
        try {
            pooled_connection conn = co_await db.acquire();
            co_await conn->query("SELECT * FROM table_that_does_not_exist");
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::sqlstate("42P01"));
        }
        flypg::pg::result r = co_await db.query("SELECT 1");
        EXPECT_EQ(r.size(), 1u);
    }());
}

TEST(Pool, ConnectionLeftInATransactionIsNotReused) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(1));
    run(io, [&]() -> asio::awaitable<void> {
        int abandoned_pid = 0;
        {
            pooled_connection conn = co_await db.acquire();
            co_await conn->query("BEGIN");
            abandoned_pid = conn->backend_pid();
        }
        pooled_connection next = co_await db.acquire();
        EXPECT_NE(next->backend_pid(), abandoned_pid) << "a connection inside a transaction block was reused";
        flypg::pg::result r = co_await next->query("SELECT pg_current_xact_id_if_assigned() IS NULL");
        EXPECT_TRUE(r[0].get<bool>(0));
    }());
    EXPECT_EQ(db.stats().discarded, 1u);
    EXPECT_EQ(db.stats().opened, 2u);
}

TEST(Pool, ZeroMaxSizeIsRejected) {
    asio::io_context io;
    try {
        pool db(io.get_executor(), primary_pool(0));
        FAIL() << "a pool of size 0 was accepted";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        EXPECT_NE(std::string(e.what()).find("max_size"), std::string::npos);
    }
}

}  // namespace
