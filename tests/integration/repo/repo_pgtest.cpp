// The repo end to end: this test process is a node of region "syd" reading its replica; a node of
// the primary region "ams" runs in another process (flypg_repo_test_node) with the primary. Real
// PostgreSQL primary and streaming replica, real RPC over loopback sockets.
#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <atomic>
#include <memory>

#include "flypg/pg/connection.hpp"
#include "flypg/replication/wait_result.hpp"
#include "flypg/repo.hpp"
#include "repo_world.hpp"
#include "support/test_support.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::test::run;
using namespace flypg::test::repo_world;

// A second database on the same servers, for the two-repos test.
constexpr const char* second_database = "flypg_second";

std::string in_second_database(const std::string& conninfo) {
    return conninfo + " dbname=" + second_database;
}

std::vector<std::string> primary_node_args_with_both_databases() {
    return primary_node_args({"--databases=main=" + flypg::test::primary_conninfo() +
                              ";second=" + in_second_database(flypg::test::primary_conninfo())});
}

class Repo : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        asio::io_context io;
        create_database(io, second_database);
        create_table(io, flypg::test::primary_conninfo(), flypg::test::replica_conninfo());
        create_table(io,
                     in_second_database(flypg::test::primary_conninfo()),
                     in_second_database(flypg::test::replica_conninfo()));
        primary_node = std::make_unique<region_node_process>(primary_node_args_with_both_databases());
    }
    static void TearDownTestSuite() { primary_node.reset(); }

    void SetUp() override {
        world = std::make_unique<replica_region>(io, std::vector<std::string>{primary_node->address()});
        run(io, world->node->wait_for_region("ams", 10s));
    }
    void TearDown() override { world.reset(); }

    flypg::repo& db() { return *world->db; }

    static std::unique_ptr<region_node_process> primary_node;
    asio::io_context io;
    std::unique_ptr<replica_region> world;
};

std::unique_ptr<region_node_process> Repo::primary_node;

template <class F>
std::error_code error_of(asio::io_context& io, F make_task) {
    try {
        run(io, make_task());
    } catch (const flypg::error& e) {
        return e.code();
    }
    return {};
}

TEST_F(Repo, WritesAreForwardedAndReadableRightAfterFromManyCoroutines) {
    constexpr int coroutines = 40;
    constexpr int writes_each = 50;
    int stale = 0;
    int written = 0;
    std::vector<std::string> failures;
    auto writer = [&](int worker) -> asio::awaitable<void> {
        try {
            for (int i = 0; i < writes_each; ++i) {
                flypg::sql::column_values row{
                    {"note", "ryw " + std::to_string(worker) + "/" + std::to_string(i)}};
                flypg::write_result w = co_await db().insert(table_name(), std::move(row));
                EXPECT_EQ(w.route, flypg::write_route::forwarded);
                EXPECT_TRUE(w.replicated);
                flypg::sql::column_values key{{"id", w.rows().at(0).get<std::int64_t>("id")}};
                flypg::pg::result r = co_await db().get(table_name(), std::move(key));
                if (r.size() != 1) ++stale;
                ++written;
            }
        } catch (const std::exception& e) {
            // Each writer's own error, not one folded into "multiple exceptions".
            failures.push_back("writer " + std::to_string(worker) + ": " + e.what());
        }
    };
    run(
        io,
        [&]() -> asio::awaitable<void> {
            using namespace asio::experimental::awaitable_operators;
            for (int w = 0; w < coroutines; w += 4)
                co_await (writer(w) && writer(w + 1) && writer(w + 2) && writer(w + 3));
        }(),
        300s);
    EXPECT_EQ(failures, std::vector<std::string>{});
    EXPECT_EQ(written, coroutines * writes_each);
    EXPECT_EQ(stale, 0) << "stale reads after an acknowledged, awaited write";
}

TEST_F(Repo, SqlErrorFromThePrimaryKeepsItsSqlstate) {
    const std::string note = "duplicate " + std::to_string(::getpid());
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values first{{"note", note}};
        co_await db().insert(table_name(), std::move(first));
    }());
    const std::error_code ec = error_of(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values again{{"note", note}};
        co_await db().insert(table_name(), std::move(again));
    });
    EXPECT_EQ(ec, flypg::sqlstate("23505"));
}

TEST_F(Repo, RawWriteSentToQueryOnAReplicaSaysToUseExecute) {
    try {
        run(io, db().query("INSERT INTO " + table_name() + " (note) VALUES ('via query')"));
        FAIL() << "a write through query() succeeded on the replica";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::use_execute_for_writes);
        EXPECT_NE(std::string(e.what()).find("execute()"), std::string::npos) << e.what();
    }
    run(io, [&]() -> asio::awaitable<void> {
        flypg::pg::params note{std::string("via execute")};
        flypg::write_result w =
            co_await db().execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(note));
        EXPECT_EQ(w.affected_rows(), 1);
        flypg::sql::where filter("note = $1", flypg::pg::params{std::string("via execute")});
        EXPECT_EQ(co_await db().count(table_name(), std::move(filter)), 1);
    }());
}

TEST_F(Repo, CrudRoundTrip) {
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", std::string("crud original")}};
        flypg::write_result inserted = co_await db().insert(table_name(), std::move(row));
        const std::int64_t id = inserted.rows().at(0).get<std::int64_t>("id");
        flypg::sql::column_values key{{"id", id}};
        flypg::sql::column_values set{{"note", std::string("crud updated")}};
        flypg::write_result updated = co_await db().update(table_name(), key, std::move(set));
        EXPECT_EQ(updated.rows().at(0).get<std::string>("note"), "crud updated");
        flypg::pg::result seen = co_await db().get(table_name(), key);
        EXPECT_EQ(seen.at(0).get<std::string>("note"), "crud updated");
        flypg::sql::column_values up{{"id", id}, {"note", std::string("crud upserted")}};
        std::vector<std::string> conflict{"id"};
        co_await db().upsert(table_name(), std::move(up), std::move(conflict));
        seen = co_await db().get(table_name(), key);
        EXPECT_EQ(seen.at(0).get<std::string>("note"), "crud upserted");
        co_await db().remove(table_name(), key);
        flypg::sql::where by_id("id = $1", flypg::pg::params{id});
        EXPECT_FALSE(co_await db().exists(table_name(), std::move(by_id)));
    }());
}

TEST_F(Repo, InsertManyAndUpdateManyAndRemoveMany) {
    const std::string tag = "bulk " + std::to_string(::getpid()) + " ";
    run(io, [&]() -> asio::awaitable<void> {
        std::vector<flypg::pg::params> rows;
        for (int i = 0; i < 300; ++i) rows.push_back(flypg::pg::params{tag + std::to_string(i)});
        std::vector<std::string> columns{"note"};
        flypg::write_result w = co_await db().insert_many(table_name(), std::move(columns), std::move(rows));
        EXPECT_EQ(w.affected_rows(), 300);
        flypg::sql::where like("note LIKE $1", flypg::pg::params{tag + "%"});
        EXPECT_EQ(co_await db().count(table_name(), like), 300);
        flypg::sql::column_values set{{"note", nullptr}};
        flypg::sql::where one_row("note = $1", flypg::pg::params{tag + "7"});
        flypg::write_result cleared =
            co_await db().update_many(table_name(), std::move(set), std::move(one_row));
        EXPECT_EQ(cleared.affected_rows(), 1);
        flypg::write_result removed = co_await db().remove_many(table_name(), like);
        EXPECT_EQ(removed.affected_rows(), 299);
        EXPECT_EQ(co_await db().count(table_name(), like), 0);
    }());
}

TEST_F(Repo, NamedTransactionRunsOnThePrimaryThenWaits) {
    run(io, [&]() -> asio::awaitable<void> {
        std::vector<flypg::rpc::value> args{table_name(),
                                            std::string("pair a ") + std::to_string(::getpid()),
                                            std::string("pair b ") + std::to_string(::getpid())};
        std::vector<flypg::rpc::value> ids =
            co_await db().transaction_on_primary("insert_pair", std::move(args));
        EXPECT_EQ(ids.size(), 2u);
        for (const flypg::rpc::value& id : ids) {
            flypg::sql::column_values key{{"id", std::get<std::int64_t>(id)}};
            flypg::pg::result r = co_await db().get(table_name(), std::move(key));
            EXPECT_EQ(r.size(), 1u) << "a row of the named transaction is not on the replica after the wait";
        }
    }());
}

TEST_F(Repo, FailedNamedTransactionKeepsItsSqlstate) {
    const std::error_code ec = error_of(io, [&]() -> asio::awaitable<void> {
        std::vector<flypg::rpc::value> none;
        co_await db().transaction_on_primary("fail_with_duplicate", std::move(none));
    });
    EXPECT_EQ(ec, flypg::sqlstate("23505"));
}

TEST_F(Repo, InteractiveTransactionFromAnotherRegion) {
    const std::string note = "interactive " + std::to_string(::getpid());
    run(io, [&]() -> asio::awaitable<void> {
        flypg::primary_transaction tx = co_await db().begin_on_primary();
        flypg::pg::params p{note};
        co_await tx.execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(p));
        flypg::pg::params q{note};
        flypg::pg::result inside =
            co_await tx.execute("SELECT count(*) FROM " + table_name() + " WHERE note = $1", std::move(q));
        EXPECT_EQ(inside.at(0).get<std::int64_t>(0), 1);
        flypg::write_result committed = co_await tx.commit();
        EXPECT_TRUE(committed.replicated);
        flypg::sql::where filter("note = $1", flypg::pg::params{note});
        EXPECT_EQ(co_await db().count(table_name(), std::move(filter)), 1);
    }());
}

TEST_F(Repo, AbandonedInteractiveTransactionRollsBack) {
    const std::string note = "abandoned " + std::to_string(::getpid());
    run(io, [&]() -> asio::awaitable<void> {
        {
            flypg::primary_transaction tx = co_await db().begin_on_primary();
            flypg::pg::params p{note};
            co_await tx.execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(p));
        }
        // A later write commits after the abandoned one was rolled back or never committed.
        flypg::pg::params marker{note + " marker"};
        co_await db().execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(marker));
        flypg::sql::where filter("note = $1", flypg::pg::params{note});
        EXPECT_EQ(co_await db().count(table_name(), std::move(filter)), 0);
    }());
}

TEST_F(Repo, NoPrimaryRegionNodeIsItsOwnError) {
    replica_region alone(io, {});
    try {
        run(io, [&]() -> asio::awaitable<void> {
            flypg::sql::column_values row{{"note", std::string("nowhere")}};
            co_await alone.db->insert(table_name(), std::move(row));
        }());
        FAIL() << "a write succeeded without any primary-region node";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::no_node_in_region);
        EXPECT_NE(std::string(e.what()).find("no node found running in region \"ams\""), std::string::npos)
            << e.what();
    }
}

TEST_F(Repo, AwaitFalseReturnsWithoutWaiting) {
    run(io, [&]() -> asio::awaitable<void> {
        flypg::write_options no_wait;
        no_wait.await = flypg::await_replication::no;
        flypg::sql::column_values row{{"note", "no wait " + std::to_string(::getpid())}};
        flypg::write_result w = co_await db().insert(table_name(), std::move(row), no_wait);
        EXPECT_EQ(w.route, flypg::write_route::forwarded);
        EXPECT_FALSE(w.replicated);
        // The caller can still wait later, with the LSN it got back.
        co_await db().wait_for_replication(w.commit_lsn);
        flypg::sql::column_values key{{"id", w.rows().at(0).get<std::int64_t>("id")}};
        flypg::pg::result r = co_await db().get(table_name(), std::move(key));
        EXPECT_EQ(r.size(), 1u);
    }());
}

TEST_F(Repo, LocalDatabaseThatIsNotAReplicaCompletesWaitsAtOnce) {
    // fly_postgres 0.3 spins and times out every waiter when its "replica" is a primary; here the
    // repo's local database is the primary itself while the node is outside the primary region,
    // and the repo is told so (its primary_url is the same database).
    flypg::repo_options primary_as_local;
    primary_as_local.local_url = flypg::test::primary_conninfo();
    primary_as_local.primary_url = flypg::test::primary_conninfo();
    replica_region odd(io, {primary_node->address()}, primary_as_local);
    flypg::repo& db_on_primary = *odd.db;
    run(io, odd.node->wait_for_region("ams", 10s));
    const auto started = std::chrono::steady_clock::now();
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", "not replicating " + std::to_string(::getpid())}};
        flypg::write_result w = co_await db_on_primary.insert(table_name(), std::move(row));
        EXPECT_TRUE(w.replicated);
    }());
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
    EXPECT_GE(db_on_primary.tracker_stats().not_replicating, 1u);
}

// The value of the sample `name_and_labels` in Prometheus text (0 when absent).
double sample_value(const std::string& text, const std::string& name_and_labels) {
    const std::string prefix = name_and_labels + " ";
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t end = std::min(text.find('\n', at), text.size());
        if (text.compare(at, prefix.size(), prefix) == 0) return std::stod(text.substr(at + prefix.size()));
        at = end + 1;
    }
    return 0;
}

// Replica 2 is read only by tests of this binary (and by disruptive tests, which run alone); they
// hold ctest's replica2 lock, so delaying it here disturbs no test that runs meanwhile.
class replay_delay {
  public:
    explicit replay_delay(int ms) { EXPECT_EQ(flypg::test::pg_cluster("delay 2 " + std::to_string(ms)), 0); }
    ~replay_delay() { clear(); }
    void clear() {
        if (active_) {
            EXPECT_EQ(flypg::test::pg_cluster("delay 2 0"), 0);
        }
        active_ = false;
    }

  private:
    bool active_ = true;
};

TEST_F(Repo, SlowReplicaGivesCommittedNotReplicatedWithTheLsnAndTheCallerCanWaitAgain) {
    flypg::repo_options slow;
    slow.local_url = flypg::test::replica_conninfo(2);
    slow.replication_timeout = 300ms;
    replica_region far(io, {primary_node->address()}, slow);
    run(io, far.node->wait_for_region("ams", 10s));
    const std::string note = "slow replica " + std::to_string(::getpid());
    replay_delay delay(2000);
    flypg::lsn target;
    try {
        run(io, [&]() -> asio::awaitable<void> {
            flypg::sql::column_values row{{"note", note}};
            co_await far.db->insert(table_name(), std::move(row));
        }());
        ADD_FAILURE() << "the write returned although the replica replays 2 s late";
    } catch (const flypg::replication::replication_timeout_error& e) {
        EXPECT_EQ(e.code(), flypg::errc::committed_not_replicated);
        target = e.target();
        EXPECT_NE(std::string(e.what()).find(target.to_string()), std::string::npos) << e.what();
    }
    ASSERT_GT(target.value(), 0u);
    delay.clear();
    run(io, [&]() -> asio::awaitable<void> {
        // Committed, as the error said; and once replayed, readable where the writer reads.
        co_await far.db->wait_for_replication(target, 10s);
        flypg::sql::where filter("note = $1", flypg::pg::params{note});
        EXPECT_EQ(co_await far.db->count(table_name(), std::move(filter)), 1);
    }());
}

// A node of region "syd" reading replica 2, which replays 2 s late, with writes and token reads
// that give up on it after 200 ms under `policy`.
struct behind_replica {
    behind_replica(asio::io_context& io, const std::string& primary_node, flypg::slow_replica_policy policy)
        : world(io, {primary_node}, options(policy)) {
        run(io, world.node->wait_for_region("ams", 10s));
    }
    static flypg::repo_options options(flypg::slow_replica_policy policy) {
        flypg::repo_options o;
        o.local_url = flypg::test::replica_conninfo(2);
        o.replication_timeout = 200ms;
        o.if_replica_slow = policy;
        return o;
    }
    flypg::repo& db() { return *world.db; }
    double slow_count(const std::string& operation, const std::string& policy) {
        return sample_value(db().render_metrics(),
                            "flypg_slow_replica_total{database=\"main\",operation=\"" + operation +
                                "\",policy=\"" + policy + "\"}");
    }

    replica_region world;
    replay_delay delay{2000};
};

TEST_F(Repo, ReadFromPrimaryPolicyReturnsTheWriteAndRunsTokenReadsOnThePrimary) {
    behind_replica far(io, primary_node->address(), flypg::slow_replica_policy::read_from_primary);
    const std::string note = "read from primary " + std::to_string(::getpid());
    std::string token;
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", note}};
        flypg::write_result w = co_await far.db().insert(table_name(), std::move(row));
        token = w.token();
        EXPECT_FALSE(w.replicated);
        EXPECT_TRUE(w.replica_behind);
        // The control: the replica does not have it yet.
        flypg::pg::params plain{note};
        flypg::read_result local = co_await far.db().read(
            "SELECT count(*) FROM " + table_name() + " WHERE note = $1", std::move(plain));
        EXPECT_EQ(local.source, flypg::read_source::local);
        EXPECT_EQ(local.rows.at(0).get<std::int64_t>(0), 0);
        // With the token, the read goes where the write is, and says so.
        flypg::pg::params key{note};
        flypg::read_options at_least(w.token());
        at_least.timeout = 50ms;
        flypg::read_result r = co_await far.db().read(
            "SELECT count(*) FROM " + table_name() + " WHERE note = $1", std::move(key), std::move(at_least));
        EXPECT_EQ(r.source, flypg::read_source::primary);
        EXPECT_FALSE(r.stale);
        EXPECT_EQ(r.rows.at(0).get<std::int64_t>(0), 1);
        // The primary runs it read-only: a write slipped into a read does not run there.
        flypg::read_options write_token(w.token());
        write_token.timeout = 50ms;
        try {
            co_await far.db().query("DELETE FROM " + table_name(), {}, std::move(write_token));
            ADD_FAILURE() << "a write ran as a read on the primary";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::sqlstate("25006")) << e.what();
        }
        // A per-call policy overrides the repo's.
        flypg::read_options strict(w.token());
        strict.timeout = 50ms;
        strict.if_replica_slow = flypg::slow_replica_policy::fail;
        try {
            co_await far.db().query("SELECT 1", {}, std::move(strict));
            ADD_FAILURE() << "a token read with policy fail ran on a replica 2 s behind";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::committed_not_replicated) << e.what();
        }
    }());
    EXPECT_EQ(far.slow_count("write", "read_from_primary"), 1);
    EXPECT_EQ(far.slow_count("read", "read_from_primary"), 2);
    EXPECT_EQ(far.slow_count("read", "fail"), 1);
    // The row is still there (the DELETE did not run), as node A reading replica 1 sees.
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::where filter("note = $1", flypg::pg::params{note});
        flypg::read_options at_least(token);
        EXPECT_EQ(co_await db().count(table_name(), std::move(filter), std::move(at_least)), 1);
    }());
}

TEST_F(Repo, AllowStalePolicyReturnsTheWriteAndFlagsStaleTokenReads) {
    behind_replica far(io, primary_node->address(), flypg::slow_replica_policy::allow_stale);
    const std::string note = "allow stale " + std::to_string(::getpid());
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", note}};
        flypg::write_result w = co_await far.db().insert(table_name(), std::move(row));
        EXPECT_FALSE(w.replicated);
        EXPECT_TRUE(w.replica_behind);
        flypg::pg::params key{note};
        flypg::read_options at_least(w.token());
        at_least.timeout = 50ms;
        flypg::read_result r = co_await far.db().read(
            "SELECT count(*) FROM " + table_name() + " WHERE note = $1", std::move(key), std::move(at_least));
        EXPECT_EQ(r.source, flypg::read_source::local);
        EXPECT_TRUE(r.stale);
        EXPECT_EQ(r.rows.at(0).get<std::int64_t>(0), 0) << "the replica replays 2 s late";
        // An interactive transaction's commit follows the same policy.
        flypg::primary_transaction tx = co_await far.db().begin_on_primary();
        flypg::pg::params second{note + " tx"};
        co_await tx.execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(second));
        flypg::write_result committed = co_await tx.commit();
        EXPECT_TRUE(committed.replica_behind);
        // And a per-call `fail` still fails.
        flypg::write_options strict;
        strict.if_replica_slow = flypg::slow_replica_policy::fail;
        flypg::sql::column_values third{{"note", note + " strict"}};
        try {
            co_await far.db().insert(table_name(), std::move(third), strict);
            ADD_FAILURE() << "a write with policy fail returned although the replica is 2 s behind";
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::committed_not_replicated) << e.what();
        }
    }());
    EXPECT_EQ(far.slow_count("write", "allow_stale"), 2);
    EXPECT_EQ(far.slow_count("read", "allow_stale"), 1);
    EXPECT_EQ(far.slow_count("write", "fail"), 1);
}

TEST_F(Repo, PrimaryNodeDyingMidWriteGivesOutcomeUnknown) {
    region_node_process doomed(primary_node_args_with_both_databases());
    replica_region alone(io, {doomed.address()});
    run(io, alone.node->wait_for_region("ams", 10s));
    std::error_code ec;
    std::string what;
    run(io, [&]() -> asio::awaitable<void> {
        asio::steady_timer kill_soon(co_await asio::this_coro::executor, 300ms);
        kill_soon.async_wait([&](std::error_code) { doomed.kill_hard(); });
        try {
            std::vector<flypg::rpc::value> args{table_name(), "doomed " + std::to_string(::getpid()), 2.0};
            co_await alone.db->transaction_on_primary("sleep_then_insert", std::move(args));
        } catch (const flypg::error& e) {
            ec = e.code();
            what = e.what();
        }
    }());
    // The transaction was sent again under its id until rpc_timeout; with no node left, those
    // attempts were never sent, which does not make the first one's outcome any less unknown.
    EXPECT_EQ(ec, flypg::errc::outcome_unknown) << what;
    EXPECT_EQ(ec, flypg::condition::outcome_unknown);
    EXPECT_NE(what.find("the answer to an earlier attempt was lost"), std::string::npos) << what;
}

TEST_F(Repo, QueryOneAndReadOnlySnapshotTransaction) {
    const std::string note = "snapshot " + std::to_string(::getpid());
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", note}};
        co_await db().insert(table_name(), std::move(row));
        flypg::pg::params by_note{note};
        std::optional<flypg::pg::result> one = co_await db().query_one(
            "SELECT id FROM " + table_name() + " WHERE note = $1", std::move(by_note));
        EXPECT_TRUE(one.has_value());
        flypg::pg::params none_note{note + " missing"};
        std::optional<flypg::pg::result> none = co_await db().query_one(
            "SELECT id FROM " + table_name() + " WHERE note = $1", std::move(none_note));
        EXPECT_FALSE(none.has_value());
        // Two reads in one read-only transaction see one snapshot, even with a write in between.
        auto body = [&](flypg::pg::connection& conn) -> asio::awaitable<std::int64_t> {
            flypg::pg::result before = co_await conn.query("SELECT count(*) FROM " + table_name());
            flypg::sql::column_values more{{"note", note + " later"}};
            co_await db().insert(table_name(), std::move(more));
            flypg::pg::result after = co_await conn.query("SELECT count(*) FROM " + table_name());
            co_return after.at(0).get<std::int64_t>(0) - before.at(0).get<std::int64_t>(0);
        };
        const std::int64_t moved = co_await db().read_transaction<std::int64_t>(body);
        EXPECT_EQ(moved, 0) << "the read-only transaction saw a write made during it";
    }());
}

TEST_F(Repo, VerboseLogSinkSeesEveryWrite) {
    std::vector<std::string> lines;
    flypg::repo_options logged;
    logged.log = [&](flypg::rpc::log_level, std::string_view line) {
        lines.emplace_back(line);
    };
    logged.verbose = true;
    replica_region chatty(io, {primary_node->address()}, logged);
    run(io, chatty.node->wait_for_region("ams", 10s));
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", "logged " + std::to_string(::getpid())}};
        co_await chatty.db->insert(table_name(), std::move(row));
    }());
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NE(lines[0].find("forwarded write committed at"), std::string::npos) << lines[0];
    EXPECT_NE(lines[0].find("replicated"), std::string::npos) << lines[0];
}

TEST_F(Repo, MetricsRenderInPrometheusFormat) {
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", "metrics " + std::to_string(::getpid())}};
        co_await db().insert(table_name(), std::move(row));
    }());
    const std::string text = db().render_metrics();
    EXPECT_NE(text.find("# TYPE flypg_writes_total counter"), std::string::npos) << text;
    EXPECT_NE(text.find("flypg_writes_total{database=\"main\",route=\"forwarded\"} 1"), std::string::npos)
        << text;
    EXPECT_NE(text.find("flypg_replication_wait_seconds_count{database=\"main\"} 1"), std::string::npos)
        << text;
    EXPECT_NE(text.find("flypg_replication_waiters{database=\"main\"} 0"), std::string::npos) << text;
    EXPECT_NE(text.find("flypg_pool_connections{database=\"main\"}"), std::string::npos) << text;
}

TEST_F(Repo, ThePrimaryRegionNodeCountsWhatItServesForOtherRegions) {
    auto served = [&] {
        std::vector<flypg::rpc::value> none;
        std::vector<flypg::rpc::value> reply =
            run(io, world->node->call_primary("test.metrics", std::move(none)));
        return std::get<std::string>(reply.at(0));
    };
    const std::string before = served();
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", "served " + std::to_string(::getpid())}};
        co_await db().insert(table_name(), std::move(row));
        std::vector<flypg::rpc::value> args{table_name(), std::string("served a"), std::string("served b")};
        co_await db().transaction_on_primary("insert_pair", std::move(args));
    }());
    const std::error_code failed = error_of(io, [&]() -> asio::awaitable<void> {
        std::vector<flypg::rpc::value> none;
        co_await db().transaction_on_primary("fail_with_duplicate", std::move(none));
    });
    EXPECT_TRUE(failed);
    const std::string after = served();
    auto delta = [&](const std::string& sample) {
        return sample_value(after, sample) - sample_value(before, sample);
    };
    EXPECT_EQ(delta("flypg_served_writes_total{database=\"main\"}"), 1) << after;
    EXPECT_EQ(delta("flypg_served_write_seconds_count{database=\"main\"}"), 1) << after;
    EXPECT_EQ(delta("flypg_served_write_failures_total{database=\"main\"}"), 0) << after;
    EXPECT_EQ(delta("flypg_served_transactions_total{database=\"main\",kind=\"named\"}"), 2) << after;
    EXPECT_EQ(delta("flypg_served_transaction_failures_total{database=\"main\",kind=\"named\"}"), 1) << after;
}

TEST_F(Repo, TwoDatabasesInOneProcessEachWithItsOwnRouting) {
    flypg::repo_options second_options;
    second_options.name = "second";
    second_options.local_url = in_second_database(flypg::test::replica_conninfo());
    flypg::repo second(io.get_executor(), *world->node, world->service, second_options);
    asio::cancellation_signal stop;
    bool stopped = false;
    asio::co_spawn(io, second.run(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) {
                       stopped = true;
                   }));
    const std::string note = "two databases " + std::to_string(::getpid());
    run(io, [&]() -> asio::awaitable<void> {
        flypg::sql::column_values row{{"note", note}};
        flypg::write_result w = co_await second.insert(table_name(), std::move(row));
        EXPECT_EQ(w.route, flypg::write_route::forwarded);
        flypg::sql::where filter("note = $1", flypg::pg::params{note});
        EXPECT_EQ(co_await second.count(table_name(), filter), 1) << "not readable in its own database";
        EXPECT_EQ(co_await db().count(table_name(), filter), 0) << "the write landed in the other database";
        flypg::primary_transaction tx = co_await second.begin_on_primary();
        flypg::pg::result where = co_await tx.execute("SELECT current_database()");
        EXPECT_EQ(where.at(0).get<std::string>(0), second_database);
        co_await tx.rollback();
    }());
    stop.emit(asio::cancellation_type::terminal);
    while (!stopped) io.run_one_for(50ms);
}

// Three rows of the test table with notes `prefix` 1..3, written on the primary.
void insert_three(flypg::repo& db, asio::io_context& io, const std::string& prefix) {
    run(io, [&]() -> asio::awaitable<void> {
        for (int i = 1; i <= 3; ++i) {
            flypg::sql::column_values row{{"note", prefix + std::to_string(i)}};
            co_await db.insert(table_name(), std::move(row));
        }
    }());
}

std::int64_t count_like(flypg::repo& db, asio::io_context& io, const std::string& prefix) {
    return run(io, [&]() -> asio::awaitable<std::int64_t> {
        flypg::sql::where filter("note LIKE $1", flypg::pg::params{prefix + "%"});
        co_return co_await db.count(table_name(), std::move(filter));
    }());
}

TEST_F(Repo, SqlWithANulByteIsRefusedEverywhereAndDeletesNothing) {
    const std::string prefix = "nul " + std::to_string(::getpid()) + " ";
    insert_three(db(), io, prefix);
    const std::string cut = "DELETE FROM " + table_name() + std::string("\0 WHERE note = 'none'", 21);
    // Forwarded from this region, then sent to the serving node directly (as a peer could).
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await db().execute(cut); }),
              flypg::errc::invalid_argument);
    EXPECT_EQ(error_of(io,
                       [&]() -> asio::awaitable<void> {
                           std::vector<flypg::rpc::statement> raw;
                           raw.push_back(flypg::rpc::statement{cut, {}});
                           flypg::rpc::call_options call;
                           call.database = "main";
                           co_await world->node->forward_write(std::move(raw), call);
                       }),
              flypg::errc::invalid_argument);
    EXPECT_EQ(error_of(io,
                       [&]() -> asio::awaitable<void> {
                           flypg::primary_transaction tx = co_await db().begin_on_primary();
                           co_await tx.execute(cut);
                       }),
              flypg::errc::invalid_argument);
    // In the primary region: the same refusal, on the local route.
    primary_region_repo local(io);
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await local.db.execute(cut); }),
              flypg::errc::invalid_argument);
    EXPECT_EQ(count_like(db(), io, prefix), 3) << "a statement cut at its NUL byte ran";
}

TEST_F(Repo, EmptySqlAndEmptyWritesAreRefused) {
    EXPECT_EQ(error_of(io, [&]() -> asio::awaitable<void> { co_await db().execute(" "); }),
              flypg::errc::invalid_argument);
    EXPECT_EQ(error_of(io,
                       [&]() -> asio::awaitable<void> {
                           std::vector<flypg::pg::statement> none;
                           co_await db().execute_all(std::move(none));
                       }),
              flypg::errc::invalid_argument);
    EXPECT_EQ(error_of(io,
                       [&]() -> asio::awaitable<void> {
                           std::vector<flypg::rpc::statement> none;
                           flypg::rpc::call_options call;
                           call.database = "main";
                           co_await world->node->forward_write(std::move(none), call);
                       }),
              flypg::errc::invalid_argument);
}

TEST_F(Repo, AStatementOfARemoteTransactionEndsOnTheServerAtItsDeadlineAndRollsBack) {
    flypg::repo_options quick;
    quick.rpc_timeout = 1s;
    world.reset();
    world = std::make_unique<replica_region>(io, std::vector<std::string>{primary_node->address()}, quick);
    run(io, world->node->wait_for_region("ams", 10s));
    const std::string note = "tx deadline " + std::to_string(::getpid());
    const std::string marker = "flypg tx deadline " + std::to_string(::getpid());
    const std::error_code ec = error_of(io, [&]() -> asio::awaitable<void> {
        flypg::primary_transaction tx = co_await db().begin_on_primary();
        flypg::pg::params p{note};
        co_await tx.execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(p));
        co_await tx.execute("SELECT pg_sleep(30) /* " + marker + " */");
    });
    EXPECT_EQ(ec, flypg::errc::timeout);
    // On the primary, the statement ends (within seconds, not 30) and the insert never commits.
    run(
        io,
        [&]() -> asio::awaitable<void> {
            flypg::pg::connect_options options;
            options.conninfo = flypg::test::primary_conninfo();
            auto ex = co_await asio::this_coro::executor;
            flypg::pg::connection primary = co_await flypg::pg::connection::connect(ex, options);
            std::int64_t running = 1;
            for (int i = 0; i < 100 && running > 0; ++i) {
                flypg::pg::params like{"%" + marker + "%"};
                flypg::pg::result r = co_await primary.query(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                    std::move(like));
                running = r.at(0).get<std::int64_t>(0);
                asio::steady_timer t(ex, 50ms);
                co_await t.async_wait(asio::use_awaitable);
            }
            EXPECT_EQ(running, 0) << "the statement still runs on the primary 5 s after its deadline";
            flypg::pg::params n{note};
            flypg::pg::result rows = co_await primary.query(
                "SELECT count(*) FROM " + table_name() + " WHERE note = $1", std::move(n));
            EXPECT_EQ(rows.at(0).get<std::int64_t>(0), 0);
        }(),
        20s);
}

TEST_F(Repo, AWriteOverTheMessageLimitNamesTheSettingThatRaisesIt) {
    try {
        run(io, [&]() -> asio::awaitable<void> {
            flypg::pg::params big{std::string(20 * 1024 * 1024, 'v')};
            co_await db().execute("INSERT INTO " + table_name() + " (note) VALUES ($1)", std::move(big));
        }());
        ADD_FAILURE() << "a 20 MB write went through a 16 MiB message limit";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::overloaded);
        EXPECT_NE(std::string(e.what()).find("node_options::max_message_bytes"), std::string::npos)
            << e.what();
    }
}

TEST_F(Repo, ATokenReadsTheWriteOnAnotherNodeOfTheRegionThatReadsAnotherReplica) {
    // Node A (the fixture's world) reads replica 1; node B, in the same region, reads replica 2,
    // which replays 30 ms late: B sees A's writes at once only when it is given their tokens.
    flypg::repo_options on_replica_2;
    on_replica_2.local_url = flypg::test::replica_conninfo(2);
    replica_region node_b(io, {primary_node->address()}, on_replica_2);
    run(io, node_b.node->wait_for_region("ams", 10s));
    replay_delay delay(30);
    constexpr int writes = 40;
    int stale_with_token = 0;
    int stale_without_token = 0;
    run(
        io,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < writes; ++i) {
                const std::string note = "token " + std::to_string(::getpid()) + " " + std::to_string(i);
                flypg::sql::column_values row{{"note", note}};
                flypg::write_result w = co_await db().insert(table_name(), std::move(row));
                const std::string token = w.token();
                EXPECT_LE(token.size(), 32u);
                EXPECT_EQ(token.find_first_not_of("0123456789abcdef."), std::string::npos) << token;
                flypg::sql::where plain("note = $1", flypg::pg::params{note});
                if (co_await node_b.db->count(table_name(), std::move(plain)) != 1) ++stale_without_token;
                flypg::sql::where with_token("note = $1", flypg::pg::params{note});
                flypg::read_options at_least(token);
                if (co_await node_b.db->count(table_name(), std::move(with_token), std::move(at_least)) != 1)
                    ++stale_with_token;
            }
        }(),
        120s);
    EXPECT_EQ(stale_with_token, 0) << "stale reads with the write's token";
    EXPECT_GT(stale_without_token, 0) << "the control: without a token, replica 2 is 30 ms behind";
    std::printf(
        "tokens across two nodes of one region: %d writes, %d stale reads with the token, %d without\n",
        writes,
        stale_with_token,
        stale_without_token);
    // A token from elsewhere is refused before anything runs, without being quoted.
    EXPECT_EQ(error_of(io,
                       [&]() -> asio::awaitable<void> {
                           flypg::read_options forged(std::string("1.zz\n<script>"));
                           co_await node_b.db->query("SELECT 1", {}, std::move(forged));
                       }),
              flypg::errc::invalid_argument);
}

TEST_F(Repo, NoNodeInTheRegionSaysWhyItsPeersCannotBeUsed) {
    // A node whose secret differs from the primary region's: its writes fail with
    // no_node_in_region, and the message says why (not only that no node was found).
    flypg::rpc::node_options o =
        node_options_in("syd", {primary_node->address()}, "another-secret-0123456789");
    flypg::rpc::node wrong = flypg::rpc::node::create(io, std::move(o));
    asio::cancellation_signal stop;
    bool stopped = false;
    asio::co_spawn(io, wrong.run(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) {
                       stopped = true;
                   }));
    std::string message;
    run(io, [&]() -> asio::awaitable<void> {
        for (int attempt = 0; attempt < 100; ++attempt) {
            try {
                std::vector<flypg::rpc::value> none;
                co_await wrong.call_primary("test.metrics", std::move(none));
            } catch (const flypg::error& e) {
                EXPECT_EQ(e.code(), flypg::errc::no_node_in_region);
                message = e.what();
            }
            if (message.find("cluster secret") != std::string::npos) break;
            asio::steady_timer t(co_await asio::this_coro::executor, 50ms);
            co_await t.async_wait(asio::use_awaitable);
        }
    }());
    EXPECT_NE(
        message.find("no node found running in region \"ams\"; this node reaches no peer; failing peers: "),
        std::string::npos)
        << message;
    EXPECT_NE(message.find(primary_node->address()), std::string::npos) << message;
    EXPECT_NE(message.find("did not prove the cluster secret"), std::string::npos) << message;
    stop.emit(asio::cancellation_type::terminal);
    while (!stopped) io.run_one_for(50ms);
}

}  // namespace
