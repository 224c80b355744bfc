// The PostgreSQL replay source: asks a hot standby how far it has replayed, over one dedicated
// connection (flypg::pg::connection), and the server-side long-poll function it can use.
//
//     flypg::replication::tracker tracker(
//         io.get_executor(),
//         flypg::replication::make_pg_replay_source(io.get_executor(), {.connect = {.conninfo = replica}}));
//
// For poll_strategy::long_poll, install the function once, on the primary (replicas are read-only;
// the function reaches them through replication like any other DDL):
//
//     auto primary = co_await flypg::pg::connection::connect(ex, {.conninfo = primary_url});
//     co_await flypg::replication::install_long_poll_function(primary);
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "flypg/pg/connection.hpp"
#include "flypg/replication/replay_source.hpp"

namespace flypg::replication {

/// Name of the long-poll function install_long_poll_function() creates by default.
inline constexpr std::string_view default_long_poll_function = "flypg_wait_for_replay";

/// Options of the PostgreSQL replay source.
struct pg_replay_source_options {
    /// The replica to watch. Its `connect_timeout` bounds each (re)connection.
    pg::connect_options connect;
    /// The long-poll function to call for poll_strategy::long_poll (schema-qualify it if
    /// search_path may not find it).
    std::string long_poll_function = std::string(default_long_poll_function);
    /// Prepare the poll statement once per connection, so that a poll costs the server no parsing
    /// or planning (it cut the poll's round trip by about 40 % on loopback). Turn it off only
    /// when the replica is reached through a pooler that cannot keep prepared statements (PgBouncer
    /// in transaction mode before 1.21).
    bool prepare_poll = true;
};

/// A replay_source over one PostgreSQL connection. read() runs (prepared, see prepare_poll)
/// `SELECT pg_last_wal_replay_lsn()::text, pg_is_in_recovery()`: a NULL LSN or `false` means
/// not replicating. wait_past() calls the long-poll function. The connection is opened by the
/// first reconnect() (the tracker's run() does that at once). Failures throw flypg::error from the
/// PostgreSQL client (errc::connect_failed, connection_lost, ...), or errc::protocol_error when the
/// answer is not what the query returns, or errc::malformed_lsn.
std::unique_ptr<replay_source> make_pg_replay_source(asio::any_io_executor executor,
                                                     pg_replay_source_options options);

/// The `CREATE OR REPLACE FUNCTION` statement of the long-poll function named `name`:
/// `name(target pg_lsn, max_wait_ms float8, step_ms float8) RETURNS TABLE (replay_lsn text,
/// in_recovery boolean)`. It checks pg_last_wal_replay_lsn() every `step_ms` and returns as soon
/// as it reaches `target`, after `max_wait_ms`, or at once when the server is not in recovery.
/// PostgreSQL's pg_sleep() rounds sleeps up to whole milliseconds, so steps below 1 ms act as 1 ms.
std::string long_poll_function_sql(std::string_view name = default_long_poll_function);

/// Runs long_poll_function_sql(name) on `primary` (a connection to the primary). Idempotent.
/// Throws flypg::error; errc::invalid_argument if `name` is not a plain or schema-qualified
/// identifier.
asio::awaitable<void> install_long_poll_function(pg::connection& primary,
                                                 std::string name = std::string(default_long_poll_function));

}  // namespace flypg::replication
