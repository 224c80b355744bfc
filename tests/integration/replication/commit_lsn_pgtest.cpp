// Commit LSN capture on the primary: commit_with_lsn() and the WAL page-boundary hazard. The
// boundary test needs a primary with no other writers, so ctest runs this binary alone
// (DISRUPTIVE).
#include <gtest/gtest.h>

#include <asio.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "flypg/replication/commit_lsn.hpp"
#include "replication_support.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::lsn;
using flypg::pg::connection;
using flypg::replication::commit_with_lsn;
using flypg::replication::committed_write;
using flypg::replication::replication_timeout_error;
using flypg::replication::tracker;
using flypg::replication::wait_status;
namespace test = flypg::test;

constexpr std::uint64_t wal_page = 8192;

asio::awaitable<lsn> read_lsn(connection& conn, std::string sql) {
    flypg::pg::result r = co_await conn.query(std::move(sql));
    co_return lsn::parse(r[0].get<std::string>(0));
}

class CommitLsnPg : public ::testing::Test {
  protected:
    void SetUp() override {
        table_ = test::unique_table("commit_lsn");
        test::run(io_, [](std::string table) -> asio::awaitable<void> {
            connection primary = co_await test::connect_to(test::primary_conninfo());
            co_await primary.query("DROP TABLE IF EXISTS " + table);
            co_await primary.query("CREATE TABLE " + table + " (id bigint PRIMARY KEY, note text)");
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

TEST_F(CommitLsnPg, CommitsAllStatementsAndReturnsAnLsnTheReplicaReaches) {
    tracker t(io_.get_executor(), test::replay_source_for(io_, test::replica_conninfo(1)));
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        // Asynchronous commit for the session: commit_with_lsn() must still return a safe LSN.
        co_await primary.query("SET synchronous_commit = off");
        const lsn before = co_await read_lsn(primary, "SELECT pg_current_wal_insert_lsn()::text");
        std::vector<flypg::pg::statement> writes(2);
        writes[0].sql = "INSERT INTO " + table_ + " (id, note) VALUES ($1, $2)";
        writes[0].params.emplace_back(std::int64_t{1});
        writes[0].params.emplace_back("first");
        writes[1].sql = "UPDATE " + table_ + " SET note = 'second' WHERE id = 1 RETURNING note";
        committed_write done = co_await commit_with_lsn(primary, std::move(writes));
        EXPECT_GT(done.commit_lsn, before);
        EXPECT_EQ(done.results.size(), 2u);
        EXPECT_EQ(done.results[0].affected_rows(), 1);
        EXPECT_EQ(done.results[1][0].get<std::string>(0), "second");
        auto result = co_await t.wait_for(done.commit_lsn);
        EXPECT_EQ(result.status, wait_status::replayed);
        flypg::pg::result row = co_await replica.query("SELECT note FROM " + table_ + " WHERE id = 1");
        EXPECT_EQ(row.size(), 1u);
        if (row.size() == 1) {
            EXPECT_EQ(row[0].get<std::string>(0), "second");
        }
    });
}

TEST_F(CommitLsnPg, FailedStatementRollsBackAndThrowsItsSqlstate) {
    test::run(io_, [](std::string table) -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        std::vector<flypg::pg::statement> writes(3);
        writes[0].sql = "INSERT INTO " + table + " (id) VALUES (1)";
        writes[1].sql = "INSERT INTO " + table + " (id) VALUES (1)";  // duplicate key
        writes[2].sql = "INSERT INTO " + table + " (id) VALUES (2)";
        std::error_code code;
        try {
            co_await commit_with_lsn(primary, std::move(writes));
        } catch (const flypg::error& e) {
            code = e.code();
        }
        EXPECT_EQ(code, flypg::sqlstate("23505"));
        flypg::pg::result count = co_await primary.query("SELECT count(*) FROM " + table);
        EXPECT_EQ(count[0].get<std::int64_t>(0), 0) << "the transaction was not rolled back";
        // The connection is usable afterwards, outside any transaction.
        EXPECT_TRUE(primary.is_idle());
    }(table_));
}

// The session ends during the commit's round trip (here the server terminated the backend just
// before; in the fault suite a primary restart did it while COMMIT ran, after the commit record was
// written): a backend told to end finishes a commit it is in, so the answer "terminating
// connection" (57P01) does not mean rolled back. The write must not be reported as failed.
TEST_F(CommitLsnPg, ASessionEndedDuringTheCommitIsOutcomeUnknownNotAFailure) {
    test::run(io_, [](std::string table) -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection other = co_await test::connect_to(test::primary_conninfo());
        flypg::pg::result pid = co_await primary.query("SELECT pg_backend_pid()");
        flypg::pg::params whom{pid[0].get<std::int32_t>(0)};
        co_await other.query("SELECT pg_terminate_backend($1, 5000)", std::move(whom));
        std::vector<flypg::pg::statement> writes(1);
        writes[0].sql = "INSERT INTO " + table + " (id) VALUES (1)";
        std::error_code code;
        std::string message;
        try {
            co_await commit_with_lsn(primary, std::move(writes));
        } catch (const flypg::error& e) {
            code = e.code();
            message = e.what();
        }
        EXPECT_EQ(code, flypg::errc::outcome_unknown) << message;
        EXPECT_NE(message.find("may have committed"), std::string::npos) << message;
    }(table_));
    EXPECT_TRUE(flypg::replication::leaves_commit_unknown(flypg::sqlstate("57P01")));
    EXPECT_TRUE(flypg::replication::leaves_commit_unknown(flypg::sqlstate("08006")));
    EXPECT_TRUE(flypg::replication::leaves_commit_unknown(flypg::errc::connection_lost));
    EXPECT_FALSE(flypg::replication::leaves_commit_unknown(flypg::sqlstate("23505")));
    EXPECT_FALSE(flypg::replication::leaves_commit_unknown(flypg::sqlstate("40001")));
    EXPECT_FALSE(flypg::replication::leaves_commit_unknown(flypg::errc::invalid_argument));
}

// fly-semantics.md: when a commit record ends exactly on an 8 KiB WAL page boundary, the insert
// position points past the next page's header, which an idle replica does not replay; the flush
// position read after the commit does not. Pads a transaction with a logical message so that its
// commit record ends on a boundary, then waits for both positions.
TEST_F(CommitLsnPg, CommitEndingOnAWalPageBoundaryDoesNotHangTheWait) {
    tracker t(io_.get_executor(), test::replay_source_for(io_, test::replica_conninfo(1)));
    test::run_with_tracker(io_, t, [&]() -> asio::awaitable<void> {
        connection primary = co_await test::connect_to(test::primary_conninfo());
        connection replica = co_await test::connect_to(test::replica_conninfo(1));
        // One transaction holding a transactional logical message of `size` bytes.
        auto padded_commit = [&](int size) -> asio::awaitable<committed_write> {
            std::vector<flypg::pg::statement> writes(1);
            writes[0].sql = "SELECT pg_logical_emit_message(true, 'flypg-test', repeat('x', $1))";
            writes[0].params.emplace_back(size);
            co_return co_await commit_with_lsn(primary, std::move(writes));
        };
        constexpr int probe_size = 300;  // > 255: the record's data length header keeps one size
        std::optional<lsn> boundary;
        for (int attempt = 0; attempt < 50 && !boundary; ++attempt) {
            // Measure what one padded transaction adds to the WAL, away from a page end.
            const lsn start = co_await read_lsn(primary, "SELECT pg_current_wal_insert_lsn()::text");
            const lsn end = (co_await padded_commit(probe_size)).commit_lsn;
            const std::uint64_t size = static_cast<std::uint64_t>(flypg::distance(start, end));
            if (start.value() / wal_page != end.value() / wal_page) continue;  // crossed a page: again
            // Pad the next one so that it ends exactly at the end of the current page. Record
            // lengths are multiples of 8, as are the gap and the size, so a pad of `gap - size`
            // more bytes fits exactly.
            const lsn from = co_await read_lsn(primary, "SELECT pg_current_wal_insert_lsn()::text");
            const std::uint64_t page_end = (from.value() / wal_page + 1) * wal_page;
            const std::uint64_t gap = page_end - from.value();
            if (gap < size || from != end) continue;  // no room on this page, or another writer
            const committed_write padded = co_await padded_commit(probe_size + static_cast<int>(gap - size));
            if (padded.commit_lsn.value() == page_end) boundary = padded.commit_lsn;
        }
        EXPECT_TRUE(boundary.has_value()) << "could not end a commit on a page boundary (other writers?)";
        if (!boundary) co_return;

        const lsn insert = co_await read_lsn(primary, "SELECT pg_current_wal_insert_lsn()::text");
        EXPECT_EQ(flypg::distance(*boundary, insert), 24) << "the insert position skips the page header";

        // The flush position: the wait ends at once.
        const auto start = std::chrono::steady_clock::now();
        auto result = co_await t.wait_for(*boundary, 2s);
        const auto waited = std::chrono::steady_clock::now() - start;
        EXPECT_EQ(result.status, wait_status::replayed);
        EXPECT_LT(waited, 100ms);

        // The raw insert position (what fly_postgres waits for): the replica stops at the boundary
        // and the wait runs into its timeout, unless some other WAL happens to arrive meanwhile.
        bool timed_out = false;
        try {
            co_await t.wait_for(insert, 1s);
        } catch (const replication_timeout_error& e) {
            timed_out = true;
            EXPECT_EQ(e.replay_position(), boundary);
        }
        const lsn insert_after = co_await read_lsn(primary, "SELECT pg_current_wal_insert_lsn()::text");
        const lsn replayed = co_await read_lsn(replica, "SELECT pg_last_wal_replay_lsn()::text");
        if (insert_after == insert) {
            EXPECT_TRUE(timed_out) << "the replica replayed past a page header nobody wrote after";
            EXPECT_EQ(replayed, *boundary);
        }
        std::printf(
            "[ figures  ] commit ends at %s; insert position %s; flush-LSN wait %.2f ms; "
            "insert-LSN wait %s\n",
            boundary->to_string().c_str(),
            insert.to_string().c_str(),
            std::chrono::duration<double, std::milli>(waited).count(),
            timed_out ? "timed out after 1 s" : "completed (other WAL arrived)");
    });
}

}  // namespace
