// Helpers shared by the replication integration tests: a table per test, writes that capture their
// commit LSN, and a tracker running beside the test's scenario.
#pragma once

#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <unistd.h>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flypg/lsn.hpp"
#include "flypg/pg/connection.hpp"
#include "flypg/replication/pg_replay_source.hpp"
#include "flypg/replication/tracker.hpp"
#include "support/test_support.hpp"

namespace flypg::test {

inline asio::awaitable<pg::connection> connect_to(std::string conninfo) {
    pg::connect_options options;
    options.conninfo = std::move(conninfo);
    co_return co_await pg::connection::connect(co_await asio::this_coro::executor, options);
}

/// A table name unique to this process and test, so binaries running side by side never meet.
inline std::string unique_table(const char* prefix) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(prefix) + "_" + std::to_string(::getpid()) + "_" + info->name();
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return name.substr(0, 63);
}

/// Inserts row `id` on the primary and reads the commit LSN in the same round trip: a pipeline
/// whose Sync after the INSERT commits it before `pg_current_wal_flush_lsn()` runs, in the same
/// session. With synchronous_commit on, the flush position is at or past the commit record's end,
/// and never beyond what a replica will replay (unlike the insert position, see fly-semantics.md).
inline asio::awaitable<lsn> insert_row(pg::connection& primary, std::string table, std::int64_t id) {
    std::vector<pg::statement> batch(2);
    batch[0].sql = "INSERT INTO " + table + " (id) VALUES ($1)";
    batch[0].params.emplace_back(id);
    batch[0].sync = pg::sync_after::yes;
    batch[1].sql = "SELECT pg_current_wal_flush_lsn()::text";
    std::vector<pg::result> results = co_await primary.pipeline(std::move(batch));
    results[0].throw_if_error();
    results[1].throw_if_error();
    co_return lsn::parse(results[1][0].get<std::string>(0));
}

/// True when row `id` is visible on `replica`.
inline asio::awaitable<bool> row_visible(pg::connection& replica, std::string table, std::int64_t id) {
    pg::params args;
    args.emplace_back(id);
    pg::result r = co_await replica.query("SELECT 1 FROM " + table + " WHERE id = $1", std::move(args));
    co_return r.size() == 1;
}

inline std::unique_ptr<replication::replay_source> replay_source_for(asio::io_context& io,
                                                                     std::string conninfo,
                                                                     bool prepare_poll = true) {
    replication::pg_replay_source_options options;
    options.connect.conninfo = std::move(conninfo);
    options.prepare_poll = prepare_poll;
    return replication::make_pg_replay_source(io.get_executor(), std::move(options));
}

/// Runs `scenario` with `tracker.run()` beside it, and stops the tracker when the scenario ends.
/// The scenario's exception, if any, is rethrown.
inline void run_with_tracker(asio::io_context& io,
                             replication::tracker& tracker,
                             std::function<asio::awaitable<void>()> scenario,
                             std::chrono::milliseconds limit = std::chrono::seconds(120)) {
    auto failure = std::make_shared<std::exception_ptr>();
    // `||` ends when one side succeeds; the scenario therefore never throws through it, or a
    // failing scenario would leave run() going until the limit.
    auto guarded = [](std::function<asio::awaitable<void>()> body,
                      std::shared_ptr<std::exception_ptr> out) -> asio::awaitable<void> {
        try {
            co_await body();
        } catch (...) {
            *out = std::current_exception();
        }
    };
    auto both = [](asio::awaitable<void> service, asio::awaitable<void> body) -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        co_await (std::move(service) || std::move(body));
    };
    run(io, both(tracker.run(), guarded(std::move(scenario), failure)), limit);
    if (*failure) std::rethrow_exception(*failure);
}

/// Sets recovery_min_apply_delay on replica 1 for the guard's lifetime.
class apply_delay {
  public:
    explicit apply_delay(int milliseconds) {
        if (pg_cluster("delay 1 " + std::to_string(milliseconds)) != 0) {
            throw std::runtime_error("pg-cluster delay failed");
        }
    }
    ~apply_delay() { pg_cluster("delay 1 0"); }
    apply_delay(const apply_delay&) = delete;
    apply_delay& operator=(const apply_delay&) = delete;
};

}  // namespace flypg::test
