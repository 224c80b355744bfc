// The repo: one object through which application code reads and writes one database, wherever
// the process runs. The counterpart of fly_postgres's Fly.Repo.
//
// Reads run on the local database: the replica in this region, or the primary in the primary
// region. Writes run on the primary: locally in the primary region, else forwarded over RPC to a
// node of the primary region, which commits them and answers with the commit LSN; the caller then
// waits (without blocking its thread) until the local replica has replayed that LSN, so it reads
// its own writes right after the write returns.
//
//     auto service = std::make_shared<flypg::primary_service>();   // what primary nodes serve
//     flypg::rpc::node_options node_options;
//     node_options.writes = service;
//     service->add_procedures(node_options.procedures);
//     auto node = flypg::rpc::node::create(io, std::move(node_options));
//     flypg::repo_options options;
//     options.local_url = "postgres://app@replica.internal:5433/app";
//     options.primary_url = "postgres://app@primary.internal:5432/app";
//     flypg::repo db(io.get_executor(), node, service, options);
//     asio::co_spawn(io, node.run(), asio::detached);
//     asio::co_spawn(io, db.run(), asio::detached);  // the replication tracker
//
//     flypg::sql::column_values user{{"name", "ada"}};
//     flypg::write_result w = co_await db.insert("users", std::move(user));   // forwarded + waited
//     flypg::pg::params key{w.rows()[0].get<std::int64_t>("id")};
//     auto r = co_await db.query("SELECT name FROM users WHERE id = $1", std::move(key));  // sees it
//
// g++ 12 note: name braced arguments (column lists, parameter vectors, option structs) before the
// co_await; g++ 12 miscompiles braced temporaries inside a co_await expression.
//
// Errors (flypg::error): a SQL error from the primary keeps its SQLSTATE (flypg::sqlstate("23505"))
// and origin::primary; errc::outcome_unknown when a forwarded write may have run (its reply was
// lost); errc::committed_not_replicated (a replication::replication_timeout_error carrying the LSN)
// when the write committed but the replica did not replay it within replication_timeout;
// errc::no_node_in_region when no primary-region node is known; errc::use_execute_for_writes when
// query() was given a write on a replica.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flypg/config.hpp"
#include "flypg/lsn.hpp"
#include "flypg/metrics.hpp"
#include "flypg/pg/pool.hpp"
#include "flypg/replication/tracker_options.hpp"
#include "flypg/replication/tracker_stats.hpp"
#include "flypg/rpc/node.hpp"
#include "flypg/sql.hpp"

namespace flypg {

/// Whether a write waits for the local replica to replay it.
enum class await_replication {
    yes,  ///< Default: the write returns once the local replica has it (read-your-writes).
    no,   ///< Return as soon as the primary committed; a read right after may not see the write.
};

/// What a write, or a read given a consistency token, does when the local replica has not
/// replayed the write within its timeout (see the README's "A slow replica: fail, read from the
/// primary, or read stale").
enum class slow_replica_policy {
    /// Default. A write fails with errc::committed_not_replicated (it did commit); a token read
    /// fails the same way and runs nothing.
    fail,
    /// A write returns with replicated = false and replica_behind = true; a token read runs on the
    /// primary (through a primary-region node, in a read-only transaction) and says so
    /// (read_result::source).
    read_from_primary,
    /// A write returns with replicated = false and replica_behind = true; a token read runs on the
    /// local replica anyway and is flagged (read_result::stale): it may miss the write.
    allow_stale,
};

/// Per-call options; unset fields take the repo's defaults (repo_options).
struct write_options {
    std::optional<await_replication> await;
    /// A forwarded write's deadline. Within it, a write whose answer was lost is sent again under
    /// its request id (the primary-region node runs it at most once); errc::outcome_unknown comes
    /// only once it has passed.
    std::optional<std::chrono::milliseconds> rpc_timeout;
    std::optional<std::chrono::milliseconds> replication_timeout;
    /// When the replica is still behind at replication_timeout.
    std::optional<slow_replica_policy> if_replica_slow;
    /// Your own key for this write (at most 126 bytes), instead of a fresh random id per call: a
    /// later call with the same key (after a crash of the caller, from another process) then
    /// returns the first run's results too, for write_request_retention (24 h). Keys are global
    /// to the database: never reuse one for another write.
    std::optional<std::string> idempotency_key;
};

/// How the local database behaves.
enum class local_mode {
    /// As it is: a replica outside the primary region, the primary inside it.
    as_is,
    /// Local development: the local database is writable, but sessions are made read-only
    /// (SET default_transaction_read_only = on) so it behaves like a replica, as fly_postgres's
    /// make_connection_read_only! does.
    read_only,
};

struct repo_options {
    /// Names the database in forwarded writes, metrics and logs. Every node must use the same name
    /// for the same database.
    std::string name = "main";
    /// The database in this node's region: its replica, or the primary in the primary region.
    std::string local_url;
    /// The primary database, used on nodes of the primary region (they run their own writes and
    /// serve other regions' writes). Empty: local_url, when the node is in the primary region at
    /// construction.
    std::string primary_url;
    local_mode local = local_mode::as_is;
    /// Connections per pool (local reads; primary writes on primary-region nodes).
    std::size_t pool_size = 10;
    /// Defaults for write_options.
    await_replication await = await_replication::yes;
    std::chrono::milliseconds rpc_timeout{5'000};
    std::chrono::milliseconds replication_timeout{5'000};
    /// Default of write_options::if_replica_slow and read_options::if_replica_slow.
    slow_replica_policy if_replica_slow = slow_replica_policy::fail;
    /// The replication tracker (poll interval floor/ceiling, strategy, reconnect backoff).
    replication::tracker_options tracker = {};
    /// Prepare the tracker's poll on its replica connection (see
    /// replication::pg_replay_source_options::prepare_poll); false behind a pooler that cannot keep
    /// prepared statements.
    bool prepare_poll = true;
    /// Where the repo records its metrics (labelled database="<name>"). Share one registry between
    /// repos to serve them from one /metrics; null: the repo makes its own.
    std::shared_ptr<metrics::registry> metrics;
    /// Receives the repo's log lines (the same sink type as rpc::node_options::log). Warnings: a
    /// write that committed but was not replicated in time, a write whose outcome is unknown, a
    /// write sent to query() on a replica. Null: rpc::stderr_log_sink (warnings and errors on
    /// stderr, more with FLYPG_LOG_LEVEL).
    rpc::log_sink log;
    /// Also log every write at debug level: where it ran, its commit LSN and its latency.
    bool verbose = false;
};

/// The repo_options of a resolved database configuration (database_config_from_environment()):
/// the replica as the local URL, the primary as the primary URL (when the configuration has one),
/// and read_only local mode when the configuration makes the replica read-only. Other fields keep
/// their defaults.
repo_options repo_options_for(const database_config& config);

/// Where a write ran and what happened to its replication.
enum class write_route {
    local_primary,  ///< This node is in the primary region: ran locally, nothing to wait for.
    forwarded,      ///< Ran on a primary-region node over RPC.
};

/// The outcome of a write.
struct write_result {
    /// One result per statement (RETURNING rows, affected counts).
    std::vector<pg::result> results;
    /// The LSN the local replica must replay to see the write.
    lsn commit_lsn;
    write_route route = write_route::local_primary;
    /// True when the call waited and the local database has replayed commit_lsn (or is the
    /// primary itself). A local database that is not a standby fails the write instead
    /// (errc::not_replicating).
    bool replicated = false;
    /// The wait reached replication_timeout and slow_replica_policy let the write return anyway:
    /// it committed, but a read on the local database may not see it yet. Pass token() to the
    /// reads that must see it (with read_from_primary they then run on the primary).
    bool replica_behind = false;

    /// A consistency token for this write: opaque, URL-safe, at most 32 characters. Hand it to the
    /// client (a cookie, a header); a read on any node of any region given it back
    /// (read_options(token)) sees this write. (Today: "1." and the commit LSN in hex; the leading
    /// version lets the format change without old tokens being misread.)
    std::string token() const;

    /// The first statement's result.
    const pg::result& rows() const { return results.at(0); }
    /// Rows affected by all statements.
    std::int64_t affected_rows() const noexcept;
};

/// Options of a read.
///
/// Not an aggregate on purpose (as rpc::call_options): g++ 12 destroys a braced aggregate
/// temporary twice inside a co_await expression, and this type is meant to be passed inline.
class read_options {
  public:
    read_options() noexcept {}
    /// Read-your-writes on the next request: the read first waits (suspending only its coroutine,
    /// at most `timeout`) until the local database has everything the write that gave `token`
    /// (write_result::token()) had, then runs there.
    explicit read_options(std::string token) : at_least(std::move(token)) {}

    /// A write's consistency token; empty: read at once.
    std::string at_least;
    /// How long the read may wait for the token; unset: repo_options::replication_timeout.
    std::optional<std::chrono::milliseconds> timeout;
    /// What happens when the timeout passes; unset: repo_options::if_replica_slow. With `fail`
    /// the read fails with errc::committed_not_replicated (the write is there, the local database
    /// is behind) and runs nothing.
    std::optional<slow_replica_policy> if_replica_slow;
};

/// Where a read ran.
enum class read_source {
    local,    ///< The local database (this region's replica, or the primary in its region).
    primary,  ///< The primary, because the replica was behind the read's token (read_from_primary).
};

/// A read's rows and where they came from; see repo::read().
struct read_result {
    pg::result rows;
    read_source source = read_source::local;
    /// Ran on the local replica although it had not replayed the token's write (allow_stale): the
    /// rows may miss it.
    bool stale = false;
};

/// The LSN a consistency token stands for. Throws flypg::error (errc::invalid_argument) for
/// anything that is not a token of this format (the message does not quote it).
lsn parse_consistency_token(std::string_view token);

/// A transaction run on the primary by a named procedure; see primary_service::add_transaction.
using primary_transaction_fn = std::function<asio::awaitable<std::vector<rpc::value>>(
    pg::connection& conn, std::vector<rpc::value> args)>;

namespace detail {
class repo_impl;
class primary_service_impl;
}  // namespace detail

/// What a primary-region node serves to the others for every repo of its process: forwarded
/// writes, interactive transactions and named transactions. Every node creates one and hands it to
/// its rpc::node (it serves only while its node is in the primary region).
class primary_service final : public rpc::write_executor {
  public:
    primary_service();
    ~primary_service() override;

    /// Registers a named transaction (fly_postgres issue #35): `fn` runs on a primary-region node
    /// inside BEGIN ... COMMIT on the primary of database `database`, and the caller of
    /// repo::transaction_on_primary() then waits for its commit LSN. Call before add_procedures().
    void add_transaction(std::string name, primary_transaction_fn fn);
    /// Adds the procedures behind the named transactions to a node's registry.
    void add_procedures(rpc::procedure_registry& procedures);

    // rpc::write_executor: runs on the primary of the database named in the request.
    asio::awaitable<rpc::write_result> execute(std::vector<rpc::statement> statements) override;
    asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin() override;
    asio::awaitable<rpc::write_result> execute_on(std::string database,
                                                  std::vector<rpc::statement> statements) override;
    asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin_on(std::string database) override;
    /// Runs a forwarded write at most once per request id: the id is recorded with the write's
    /// results in the primary's flypg_write_requests table, in the write's own transaction (see
    /// the README's "Exactly-once writes").
    asio::awaitable<rpc::write_result> execute_once(std::string database,
                                                    std::vector<rpc::statement> statements,
                                                    std::string request_id) override;
    bool remembers_request_ids() const noexcept override { return true; }

    /// For fault-injection tests only: `hook` runs after a write with a request id committed and
    /// before its answer is sent (a test kills the serving node there).
    void set_after_commit_hook(std::function<void()> hook);

    /// Internal: the repos of this process register their primary pools here.
    detail::primary_service_impl& impl() noexcept { return *impl_; }

  private:
    std::unique_ptr<detail::primary_service_impl> impl_;
};

/// An interactive transaction on the primary from any region; see repo::begin_on_primary().
class primary_transaction {
  public:
    primary_transaction(primary_transaction&&) noexcept;
    primary_transaction& operator=(primary_transaction&&) noexcept;
    /// Rolls back if neither committed nor rolled back.
    ~primary_transaction();

    asio::awaitable<pg::result> execute(std::string sql, pg::params parameters = {});
    /// Commits, then waits for the local replica as a write does.
    asio::awaitable<write_result> commit();
    asio::awaitable<void> rollback();

  private:
    friend class repo;
    struct state;
    explicit primary_transaction(std::unique_ptr<state> s);
    std::unique_ptr<state> state_;
};

/// The repo. Use it from coroutines on its executor's thread.
class repo {
  public:
    /// Opens nothing yet (connections are made on first use). Throws flypg::error
    /// (errc::invalid_argument) naming a missing or malformed option.
    repo(asio::any_io_executor executor,
         rpc::node& node,
         std::shared_ptr<primary_service> service,
         repo_options options);
    ~repo();
    repo(const repo&) = delete;
    repo& operator=(const repo&) = delete;

    /// The replication tracker's loop; spawn once, stop by cancellation (it then returns normally).
    /// It sends nothing while nobody waits, so it costs nothing in the primary region either.
    asio::awaitable<void> run();

    // Reads, on the local database.

    /// Runs a read. On a replica, a write here fails with errc::use_execute_for_writes. Every read
    /// takes read_options: read_options(token) reads what the token's write wrote.
    asio::awaitable<pg::result> query(std::string sql, pg::params parameters = {}, read_options options = {});
    /// query(), and where the read ran: what a caller using read_from_primary or allow_stale looks
    /// at. (The other reads apply the same policy without saying where they ran.)
    asio::awaitable<read_result> read(std::string sql, pg::params parameters = {}, read_options options = {});
    /// Runs a read expected to return at most one row; more is errc::out_of_range.
    asio::awaitable<std::optional<pg::result>> query_one(std::string sql,
                                                         pg::params parameters = {},
                                                         read_options options = {});
    /// SELECT * FROM table WHERE key columns = values (composite keys allowed).
    asio::awaitable<pg::result> get(sql::qualified_name table,
                                    sql::column_values key,
                                    read_options options = {});
    /// Whether a row matches `filter` (empty: any row).
    asio::awaitable<bool> exists(sql::qualified_name table,
                                 sql::where filter = {},
                                 read_options options = {});
    /// Rows matching `filter` (empty: all rows).
    asio::awaitable<std::int64_t> count(sql::qualified_name table,
                                        sql::where filter = {},
                                        read_options options = {});
    /// Runs `body` in a read-only REPEATABLE READ transaction on the local database: every read in
    /// it sees one consistent snapshot.
    template <class T>
    asio::awaitable<T> read_transaction(std::function<asio::awaitable<T>(pg::connection&)> body) {
        pg::pooled_connection conn = co_await begin_read_transaction();
        T value = co_await body(*conn);
        co_await conn->query("COMMIT");
        co_return value;
    }

    // Writes, on the primary.

    /// INSERT ... RETURNING *: rows() holds the inserted row.
    asio::awaitable<write_result> insert(sql::qualified_name table,
                                         sql::column_values row,
                                         write_options options = {});
    /// Many rows in as few statements as PostgreSQL's parameter limit allows, as one transaction.
    asio::awaitable<write_result> insert_many(sql::qualified_name table,
                                              std::vector<std::string> columns,
                                              std::vector<pg::params> rows,
                                              write_options options = {});
    /// UPDATE ... WHERE key RETURNING *.
    asio::awaitable<write_result> update(sql::qualified_name table,
                                         sql::column_values key,
                                         sql::column_values set,
                                         write_options options = {});
    /// UPDATE ... WHERE filter; affected_rows() counts them.
    asio::awaitable<write_result> update_many(sql::qualified_name table,
                                              sql::column_values set,
                                              sql::where filter,
                                              write_options options = {});
    /// DELETE ... WHERE key RETURNING *.
    asio::awaitable<write_result> remove(sql::qualified_name table,
                                         sql::column_values key,
                                         write_options options = {});
    /// DELETE ... WHERE filter (an empty filter deletes every row).
    asio::awaitable<write_result> remove_many(sql::qualified_name table,
                                              sql::where filter,
                                              write_options options = {});
    /// INSERT ... ON CONFLICT (conflict_columns) DO UPDATE SET the other columns RETURNING *.
    asio::awaitable<write_result> upsert(sql::qualified_name table,
                                         sql::column_values row,
                                         std::vector<std::string> conflict_columns,
                                         write_options options = {});
    /// Raw SQL write (or any statement that must run on the primary).
    asio::awaitable<write_result> execute(std::string sql,
                                          pg::params parameters = {},
                                          write_options options = {});
    /// Several statements as one transaction on the primary, in one round trip.
    asio::awaitable<write_result> execute_all(std::vector<pg::statement> statements,
                                              write_options options = {});

    /// Runs the named transaction `name` (primary_service::add_transaction) on the primary, then
    /// waits for its LSN. Returns what the transaction returned.
    asio::awaitable<std::vector<rpc::value>> transaction_on_primary(std::string name,
                                                                    std::vector<rpc::value> args,
                                                                    write_options options = {});
    /// Opens an interactive transaction on the primary (over RPC outside the primary region).
    asio::awaitable<primary_transaction> begin_on_primary(write_options options = {});

    /// Waits until the local replica has replayed `target` (what every awaited write does).
    asio::awaitable<void> wait_for_replication(lsn target,
                                               std::optional<std::chrono::milliseconds> timeout = {});

    const repo_options& options() const noexcept;
    /// Whether this node is in the primary region (re-read on every call, as fly_rpc does).
    bool is_primary() const;
    pg::pool& local_pool() noexcept;
    replication::tracker_stats tracker_stats() const;

    /// Every metric of this repo in Prometheus text format (0.0.4), for a /metrics endpoint: writes
    /// by route, write and RPC latency, replication wait latency, failures by kind, snapshots of
    /// the tracker (waiters, polls, timeouts, ...) and the pools (size, idle, waiters, ...), and on
    /// a primary-region node what it serves for other regions (flypg_served_writes_total,
    /// flypg_served_write_seconds, flypg_served_transactions_total{kind}, and their failures).
    /// Renders the whole registry, so with a shared registry, call update_metrics() on the other
    /// repos first.
    std::string render_metrics();
    /// Copies the tracker's and pools' current counters into the registry.
    void update_metrics();
    metrics::registry& metrics() noexcept;

    /// Callback form of execute(), for code that does not use coroutines.
    template <class CompletionToken>
    auto execute(std::string sql, pg::params parameters, write_options options, CompletionToken&& token) {
        return asio::co_spawn(executor(),
                              execute(std::move(sql), std::move(parameters), options),
                              std::forward<CompletionToken>(token));
    }
    /// Callback form of query().
    template <class CompletionToken>
    auto query(std::string sql, pg::params parameters, CompletionToken&& token) {
        return asio::co_spawn(
            executor(), query(std::move(sql), std::move(parameters)), std::forward<CompletionToken>(token));
    }

    asio::any_io_executor executor() const noexcept;

  private:
    asio::awaitable<pg::pooled_connection> begin_read_transaction();
    std::unique_ptr<detail::repo_impl> impl_;
};

}  // namespace flypg
