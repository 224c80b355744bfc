// A pool living through a restart of the primary. It restarts the shared test primary, so it runs
// alone (RUN_SERIAL), never beside other integration tests.
#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include "flypg/pg/pool.hpp"
#include "support/test_support.hpp"

namespace {

using flypg::pg::pool;
using flypg::test::run;

flypg::pg::pool_options primary_pool(std::size_t max_size) {
    flypg::pg::pool_options options;
    options.connection.conninfo = flypg::test::primary_conninfo();
    options.max_size = max_size;
    return options;
}

TEST(Pool, RecoversAfterThePrimaryRestarts) {
    asio::io_context io;
    pool db(io.get_executor(), primary_pool(4));
    run(io, [&]() -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        auto warm = [&]() -> asio::awaitable<void> {
            co_await db.query("SELECT pg_sleep(0.05)");
        };
        co_await (warm() && warm() && warm() && warm());
    }());
    ASSERT_EQ(db.stats().idle, 4u);
    ASSERT_EQ(flypg::test::pg_cluster("restart-primary"), 0);
    run(io, [&]() -> asio::awaitable<void> {
        // Idle connections died with the old server; the pool notices and opens fresh ones.
        for (int i = 0; i < 10; ++i) {
            flypg::pg::result r = co_await db.query("SELECT 1");
            EXPECT_EQ(r[0].get<std::int32_t>(0), 1);
        }
    }());
    EXPECT_GE(db.stats().discarded, 1u);
    EXPECT_LE(db.stats().size, 4u);
}

}  // namespace
