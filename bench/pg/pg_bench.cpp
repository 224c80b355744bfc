// PostgreSQL client benchmark: prints figures, asserts nothing.
//
//   flypg_pg_bench [--conninfo="host=127.0.0.1 port=55432 dbname=flypg user=flypg"]
//
// 1. Round trip at concurrency 1: flypg's async query vs synchronous libpq PQexecParams, the
//    same statement on the same server, interleaved in rounds so machine noise hits both alike.
// 2. Pipelined vs one-at-a-time: 32 small statements in one pipeline vs 32 awaited queries.
// 3. Pool acquire + release overhead per operation on a warm pool.
#include <libpq-fe.h>

#include <absl/flags/flag.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_flags.hpp"
#include "flypg/pg/connection.hpp"
#include "flypg/pg/pool.hpp"

ABSL_FLAG(std::string,
          conninfo,
          flypg::bench::env_or("FLYPG_TEST_PRIMARY", "host=127.0.0.1 port=55432 dbname=flypg user=flypg"),
          "server to measure against (default: $FLYPG_TEST_PRIMARY)");
ABSL_FLAG(int, rounds, 10, "interleaved rounds per comparison");
ABSL_FLAG(int, queries_per_round, 500, "queries per round in the round-trip comparison");

namespace {

using clock_type = std::chrono::steady_clock;
using flypg::pg::connection;

double micros(clock_type::duration d) {
    return std::chrono::duration<double, std::micro>(d).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Per-query time of synchronous libpq, binary int4 parameter, text result: what flypg sends.
double sync_round(PGconn* conn, int queries) {
    const Oid type = 23;
    const auto start = clock_type::now();
    for (int i = 0; i < queries; ++i) {
        const std::uint32_t be = __builtin_bswap32(static_cast<std::uint32_t>(i));
        const char* value = reinterpret_cast<const char*>(&be);
        const int length = 4;
        const int format = 1;
        PGresult* r = PQexecParams(conn, "SELECT $1::int4", 1, &type, &value, &length, &format, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) std::fprintf(stderr, "sync query failed\n");
        PQclear(r);
    }
    return micros(clock_type::now() - start) / queries;
}

asio::awaitable<double> async_round(connection& conn, int queries) {
    const auto start = clock_type::now();
    for (int i = 0; i < queries; ++i) {
        flypg::pg::params values{std::int32_t{i}};
        flypg::pg::result r = co_await conn.query("SELECT $1::int4", std::move(values));
        if (r.size() != 1) std::fprintf(stderr, "async query failed\n");
    }
    co_return micros(clock_type::now() - start) / queries;
}

asio::awaitable<double> sequential_statements(connection& conn, int statements) {
    const auto start = clock_type::now();
    for (int i = 0; i < statements; ++i) {
        flypg::pg::params values{std::int32_t{i}};
        co_await conn.query("SELECT $1::int4", std::move(values));
    }
    co_return micros(clock_type::now() - start);
}

asio::awaitable<double> pipelined_statements(connection& conn, int statements) {
    const auto start = clock_type::now();
    std::vector<flypg::pg::statement> batch;
    batch.reserve(static_cast<std::size_t>(statements));
    for (int i = 0; i < statements; ++i) {
        flypg::pg::params values{std::int32_t{i}};
        batch.push_back({"SELECT $1::int4", std::move(values)});
    }
    std::vector<flypg::pg::result> results = co_await conn.pipeline(std::move(batch));
    if (results.size() != static_cast<std::size_t>(statements)) std::fprintf(stderr, "pipeline failed\n");
    co_return micros(clock_type::now() - start);
}

asio::awaitable<void> run_all(PGconn* sync_conn) {
    const std::string conninfo = absl::GetFlag(FLAGS_conninfo);
    const int rounds = absl::GetFlag(FLAGS_rounds);
    const int per_round = absl::GetFlag(FLAGS_queries_per_round);
    auto ex = co_await asio::this_coro::executor;
    flypg::pg::connect_options options;
    options.conninfo = conninfo;
    connection conn = co_await connection::connect(ex, options);

    // Warm both paths (plan caches, TCP windows) before measuring.
    sync_round(sync_conn, 200);
    co_await async_round(conn, 200);
    std::vector<double> sync_us, async_us;
    for (int r = 0; r < rounds; ++r) {
        sync_us.push_back(sync_round(sync_conn, per_round));
        async_us.push_back(co_await async_round(conn, per_round));
    }
    const double sync_median = median(sync_us);
    const double async_median = median(async_us);
    std::printf("round trip, concurrency 1 (median of %d rounds x %d queries)\n", rounds, per_round);
    std::printf("  libpq PQexecParams (sync) : %8.1f us/query\n", sync_median);
    std::printf("  flypg connection::query   : %8.1f us/query\n", async_median);
    std::printf("  ratio flypg / sync libpq  : %8.2f   (target <= 1.30)\n\n", async_median / sync_median);

    constexpr int depth = 32;
    std::vector<double> sequential_us, pipelined_us;
    co_await pipelined_statements(conn, depth);
    for (int r = 0; r < rounds * 20; ++r) {
        sequential_us.push_back(co_await sequential_statements(conn, depth));
        pipelined_us.push_back(co_await pipelined_statements(conn, depth));
    }
    const double seq = median(sequential_us);
    const double pipe = median(pipelined_us);
    std::printf("%d small statements (median of %d)\n", depth, rounds * 20);
    std::printf("  one at a time             : %8.1f us  (%8.0f statements/s)\n", seq, depth / seq * 1e6);
    std::printf("  pipelined                 : %8.1f us  (%8.0f statements/s)\n", pipe, depth / pipe * 1e6);
    std::printf("  throughput ratio          : %8.2f   (target >= 3)\n\n", seq / pipe);

    flypg::pg::pool_options pool_opts;
    pool_opts.connection.conninfo = conninfo;
    pool_opts.max_size = 1;
    flypg::pg::pool db(ex, pool_opts);
    { auto warm = co_await db.acquire(); }
    constexpr int acquires = 200'000;
    const auto start = clock_type::now();
    for (int i = 0; i < acquires; ++i) {
        flypg::pg::pooled_connection held = co_await db.acquire();
    }
    const double per_acquire_ns = micros(clock_type::now() - start) * 1000.0 / acquires;
    std::printf("pool acquire + release, warm pool of 1\n");
    std::printf("  overhead                  : %8.0f ns/operation (%.2f%% of one query round trip)\n",
                per_acquire_ns,
                per_acquire_ns / 10.0 / async_median);
}

}  // namespace

int main(int argc, char** argv) {
    flypg::bench::parse_command_line(
        "PostgreSQL client figures: flypg's async query against synchronous libpq, pipelining, pool "
        "overhead (default server: $FLYPG_TEST_PRIMARY, as scripts/pg-cluster env sets it)",
        argc,
        argv);
    PGconn* sync_conn = PQconnectdb(absl::GetFlag(FLAGS_conninfo).c_str());
    if (PQstatus(sync_conn) != CONNECTION_OK) {
        std::fprintf(stderr,
                     "cannot connect to %s: %s",
                     absl::GetFlag(FLAGS_conninfo).c_str(),
                     PQerrorMessage(sync_conn));
        return 1;
    }
    asio::io_context io;
    int status = 0;
    asio::co_spawn(io, run_all(sync_conn), [&](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "benchmark failed: %s\n", ex.what());
            status = 1;
        }
    });
    io.run();
    PQfinish(sync_conn);
    return status;
}
