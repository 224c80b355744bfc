// One PostgreSQL connection driven by the Asio reactor (libpq's asynchronous API underneath).
//
//     asio::awaitable<void> example(asio::any_io_executor ex) {
//         auto conn = co_await flypg::pg::connection::connect(ex, {.conninfo = "host=127.0.0.1 dbname=app"});
//         flypg::pg::params args{std::int64_t{1}};
//         auto r = co_await conn.query("SELECT name FROM users WHERE id = $1", std::move(args));
//         std::string name = r.at(0).get<std::string>(0);
//     }
//
// Every operation suspends the calling coroutine and never blocks the thread: connecting resolves
// host names with Asio's resolver (libpq's own resolution would block), and socket readiness comes
// from the io_context's reactor. A connection runs one operation at a time (a second concurrent one
// fails with errc::busy); use pg::pool to share connections between coroutines.
//
// Failures throw flypg::error: SQL errors carry their SQLSTATE (flypg::sqlstate("23505")) and the
// server's message, detail and hint; a connection that broke gives errc::connection_lost and every
// later operation fails at once with errc::not_connected.
//
// Cancellation (per-operation, through the awaiting coroutine's cancellation slot; Asio's
// terminal, partial and total types are all accepted and treated alike): a running statement is
// cancelled on the server (pg_cancel_backend() from a separate short-lived connection, opened
// asynchronously like every other: libpq 15's own PQcancel would block the thread until the server
// answers), the remaining results are drained, and the operation fails with errc::cancelled; the
// connection stays usable. If cancelling and draining do not finish within `cancel_drain_timeout`
// (a frozen server answers neither), the connection is closed instead; nothing here ever blocks
// the thread. A statement cancelled after it was sent
// may have run: a cancelled write may or may not have committed.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flypg/pg/param.hpp"
#include "flypg/pg/result.hpp"

namespace flypg::pg {

/// Throws flypg::error (errc::invalid_argument, naming `what`) unless `sql` can be sent as it is:
/// it must hold a statement (not be empty or only white space) and no NUL byte, at which libpq,
/// taking C strings, would cut it short ("DELETE FROM t\0 WHERE id = 1" would delete every row).
/// Every operation of connection checks its SQL text this way before anything is sent.
void check_sql_text(std::string_view sql, std::string_view what = "the SQL text");

/// Throws flypg::error (errc::invalid_argument, naming `what`) when `text`, which becomes a C
/// string for libpq (a connection string, a statement name), holds a NUL byte.
void check_no_nul(std::string_view text, std::string_view what);

/// Whether two connection strings (URL or keyword form) name the same database as written: the
/// same host (or hostaddr), port, database name and user. Unparsable strings are not the same.
bool same_database(std::string_view a, std::string_view b);

/// Where a connection string points, for messages: "host 10.0.0.5 port 5433 database app"
/// (never the password or other options). "(malformed connection string)" if it cannot be parsed.
std::string database_label(std::string_view conninfo);

/// How to open a connection.
struct connect_options {
    /// libpq connection string or URI ("host=... port=... dbname=... user=..." or "postgresql://...").
    std::string conninfo;
    /// Statements run once right after connecting, in order, for example
    /// "SET default_transaction_read_only = on" (flypg's make_connection_read_only!).
    std::vector<std::string> session_settings;
    /// Deadline for resolving, connecting, authenticating and the session settings.
    std::chrono::milliseconds connect_timeout{10'000};
    /// How long a cancelled or timed-out statement may take to wind down before the connection is
    /// closed instead of being kept.
    std::chrono::milliseconds cancel_drain_timeout{2'000};
};

/// Per-operation options.
struct query_options {
    /// Deadline for the whole operation; zero means none. On expiry the statement is cancelled as
    /// described above and the operation fails with errc::timeout.
    std::chrono::milliseconds timeout{0};
};

/// Whether a pipeline segment ends after a statement.
enum class sync_after {
    no,   ///< The next statement runs in the same implicit transaction.
    yes,  ///< A Sync follows: this statement commits (or fails) before the next one starts.
};

/// One statement of a pipeline.
struct statement {
    std::string sql;
    pg::params params = {};
    /// A Sync after this statement ends its segment. Statements between two Syncs run as one
    /// implicit transaction: if one fails, the rest of its segment is skipped
    /// (errc::pipeline_aborted) and the segment rolls back. The pipeline always ends with a Sync.
    sync_after sync = sync_after::no;
};

/// A PostgreSQL connection. Move-only; destroying it closes the connection.
class connection {
  public:
    /// Opens a connection. Throws flypg::error: errc::connect_failed (with libpq's message),
    /// errc::invalid_argument for a malformed conninfo, errc::timeout, or the SQLSTATE of a
    /// failing session setting.
    static asio::awaitable<connection> connect(asio::any_io_executor executor, connect_options options);

    connection(connection&&) noexcept;
    connection& operator=(connection&&) noexcept;
    ~connection();

    /// Runs one statement with `$1..$n` parameters and returns its rows. Throws flypg::error.
    asio::awaitable<result> query(std::string sql, params parameters = {}, query_options options = {});

    /// Prepares `sql` as the statement `name` of this session (PQsendPrepare): later runs skip
    /// the server's parsing and planning. The parameters take the types of `example`'s values,
    /// and query_prepared() must pass values of the same types. Throws flypg::error with the
    /// server's SQLSTATE when the statement is invalid, or 42P05 (duplicate_prepared_statement)
    /// when `name` is already prepared on this connection.
    asio::awaitable<void> prepare(std::string name,
                                  std::string sql,
                                  params example = {},
                                  query_options options = {});

    /// Runs the statement prepared as `name` with `parameters`. Throws flypg::error:
    /// errc::invalid_argument naming the statement when it was not prepared on this connection
    /// or the parameters' types differ from the ones it was prepared with.
    asio::awaitable<result> query_prepared(std::string name,
                                           params parameters = {},
                                           query_options options = {});

    /// Sends the statement prepared as `name` now and returns without waiting for the server, so
    /// that the query travels while the caller finishes other work; receive_prepared() then reads
    /// its answer. Until then the connection is busy (other operations fail with errc::busy).
    /// Never blocks: what the socket does not take at once is sent by receive_prepared().
    /// Throws flypg::error at once, as query_prepared() would: errc::busy, errc::not_connected,
    /// errc::invalid_argument for a statement not prepared or parameters of other types, and
    /// errc::connection_lost when the send fails (the connection is then closed).
    void send_prepared(std::string_view name, const params& parameters = {});

    /// Reads the answer to the statement send_prepared() sent, with query_prepared()'s timeout,
    /// cancellation and errors. Throws flypg::error(errc::invalid_argument) when nothing was sent.
    asio::awaitable<result> receive_prepared(query_options options = {});

    /// Sends all `statements` in one round trip (libpq pipeline mode) and returns one result per
    /// statement, in order. SQL failures come back inside the results (result::error()); only
    /// connection failures, timeouts and cancellation throw.
    asio::awaitable<std::vector<result>> pipeline(std::vector<statement> statements,
                                                  query_options options = {});

    /// True while the connection is open and not broken.
    bool is_open() const noexcept;
    /// True when the connection is idle outside any transaction block, ready to be reused.
    bool is_idle() const noexcept;
    /// Reads whatever the server sent while the connection sat idle (for example the notice of a
    /// server shutdown) without waiting, and reports whether the connection is still usable.
    bool check_alive() noexcept;
    /// The backend's process id (for pg_cancel_backend and logs); 0 when closed.
    int backend_pid() const noexcept;
    /// Closes the connection now. Idempotent.
    void close() noexcept;

    asio::any_io_executor get_executor() const noexcept;

    struct impl;

  private:
    explicit connection(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> impl_;
};

}  // namespace flypg::pg
