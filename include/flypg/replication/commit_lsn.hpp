// Writes on the primary that return the LSN a replica must replay before it shows them.
//
//     std::vector<flypg::pg::statement> writes(1);
//     writes[0].sql = "INSERT INTO notes (body) VALUES ($1)";
//     writes[0].params.emplace_back(body);
//     flypg::replication::committed_write done =
//         co_await flypg::replication::commit_with_lsn(primary, std::move(writes));
//     co_await tracker.wait_for(done.commit_lsn);  // on the replica's side
//
// Which LSN: the primary's WAL flush position, read in the same session right after COMMIT
// returned. A synchronous commit returns only once its commit record is flushed, so that position
// is at or past the end of the commit record; and every flushed byte is streamed to the replicas,
// so a replica always gets there. The raw insert position (pg_current_wal_insert_lsn(), which
// fly_postgres used) is not safe: when a commit record ends exactly on an 8 KiB page boundary it
// points 24 bytes past it, at a page header no replica replays until more WAL arrives; on an idle
// primary a wait for it hangs until its timeout.
#pragma once

#include <asio/awaitable.hpp>

#include <string_view>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/lsn.hpp"
#include "flypg/pg/connection.hpp"
#include "flypg/pg/result.hpp"

namespace flypg::replication {

/// The SQL that reads the commit LSN, to run in the same session right after COMMIT returned
/// (with synchronous_commit other than `off`, as commit_with_lsn() ensures).
inline constexpr std::string_view commit_lsn_sql = "SELECT pg_current_wal_flush_lsn()::text";

/// Run inside a transaction before its COMMIT: with synchronous_commit = off, COMMIT returns
/// before its record is flushed and the flush position read next could be short of it; `local`
/// (flush here, do not wait for standbys) restores the guarantee for this transaction only,
/// without touching stronger settings.
inline constexpr std::string_view keep_commit_synchronous_sql =
    "SELECT set_config('synchronous_commit', 'local', true) WHERE current_setting('synchronous_commit') = "
    "'off'";

/// Whether an error met during a commit's round trip leaves its outcome open: the session ended or
/// the client stopped waiting (a connection failure, SQLSTATE class 08, a timeout or cancellation),
/// or the server ended the backend (57P01 admin shutdown, 57P02 crash shutdown, 57P05 idle session
/// timeout). A backend told to end while it commits finishes the commit and then reports the end in
/// the commit's own answer, so such an error does not mean "rolled back".
bool leaves_commit_unknown(const std::error_code& code) noexcept;

/// When leaves_commit_unknown(e.code()): throws `e` as errc::outcome_unknown, its diagnostics kept
/// and its message saying why. Otherwise returns (the caller rethrows `e`).
void throw_if_commit_unknown(const flypg::error& e);

/// What commit_with_lsn() returns.
struct committed_write {
    std::vector<pg::result> results;  ///< One per statement given, in order.
    lsn commit_lsn;                   ///< Wait for this on a replica to read the writes there.
};

/// Runs `statements` on `primary` as one transaction and reads its commit LSN, all in one round
/// trip: one pipeline whose first segment holds the statements (one implicit transaction,
/// committed by the Sync after the last one) and whose second segment reads commit_lsn_sql. If
/// the session's synchronous_commit is `off`, this transaction commits with `local` instead, so the
/// LSN read after it is never short of its commit record. The statements must not contain
/// transaction control of their own (BEGIN, COMMIT, ...).
///
/// Throws flypg::error: the error of the first failed statement (the transaction then rolled back,
/// nothing was written, and the session is ready for more), or errc::outcome_unknown when the
/// round trip ended in a way that leaves the commit's outcome open (leaves_commit_unknown(): a
/// connection failure, a timeout or cancellation, the server ending the session); the message
/// names the cause.
asio::awaitable<committed_write> commit_with_lsn(pg::connection& primary,
                                                 std::vector<pg::statement> statements);

}  // namespace flypg::replication
