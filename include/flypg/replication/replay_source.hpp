// Where a replication tracker learns how far its replica has replayed the WAL.
//
// The tracker owns one replay_source and is its only user: at most one of its operations is in
// flight at any time. flypg ships a PostgreSQL implementation (pg_replay_source.hpp); tests and
// other databases plug in their own by deriving from replay_source:
//
//     class my_source final : public flypg::replication::replay_source {
//     public:
//         asio::awaitable<flypg::replication::replay_status> read() override {
//             co_return flypg::replication::replay_status::replaying(co_await ask_the_replica());
//         }
//         asio::awaitable<void> reconnect() override { co_await reopen(); }
//     };
#pragma once

#include <asio/awaitable.hpp>

#include <chrono>
#include <cstdint>

#include "flypg/lsn.hpp"

namespace flypg::replication {

/// What a replica reports about its replay.
enum class replay_state {
    replaying,        ///< A standby in recovery; `position` is its last replayed LSN.
    not_replicating,  ///< Not a standby: `pg_last_wal_replay_lsn()` is NULL, or the server was
                      ///< promoted (`pg_is_in_recovery()` is false). It will not replay anything.
};

/// One observation of a replica. Construct with replaying() or not_replicating().
struct replay_status {
    replay_state state = replay_state::not_replicating;
    lsn position{};  ///< The last replayed LSN; meaningful only when `state == replaying`.

    static constexpr replay_status replaying(lsn replayed) noexcept {
        replay_status status;
        status.state = replay_state::replaying;
        status.position = replayed;
        return status;
    }
    static constexpr replay_status not_replicating() noexcept { return replay_status{}; }

    friend constexpr bool operator==(const replay_status&, const replay_status&) noexcept = default;
};

/// Reads a replica's replay position for a tracker. Implementations need not be thread-safe: the
/// tracker calls one operation at a time, on its own executor.
///
/// Errors: any exception from an operation other than cancellation counts as a connection failure:
/// the tracker calls reconnect() (with backoff) before its next read.
///
/// Cancellation: the tracker cancels a read() or wait_past() that outlives its query timeout
/// (through the awaiting coroutine's cancellation slot, with every cancellation type set), then
/// calls reconnect(); when run() is stopped, the operation in flight receives the type run() was
/// stopped with. An implementation should stop promptly on any type; it may leave its connection
/// unusable.
class replay_source {
  public:
    virtual ~replay_source() = default;

    /// The replica's current replay status, with one query.
    virtual asio::awaitable<replay_status> read() = 0;

    /// Optional: sends now, without waiting, the query the next read() would send, and returns
    /// whether it did; that read() then returns this query's answer instead of sending another.
    /// The tracker calls it on its own executor when a wait arrives that should be polled for at
    /// once: its loop only runs after the handler that started the wait returns, which may be a
    /// handler starting a thousand waits, and the query can travel meanwhile. Must not block or
    /// throw for a source that cannot send now (it returns false). The default sends nothing.
    virtual bool start_read() { return false; }

    /// Long-poll: returns once the replay position is at or past `target`, or after about
    /// `max_wait`, or at once when the server is not replicating, whichever comes first; the result
    /// is the status at that moment (so it may be short of `target`). A server-side implementation
    /// checks the position every `step`. The default implementation just calls read(): sources
    /// without a server-side wait degrade to plain polling.
    virtual asio::awaitable<replay_status> wait_past(lsn target,
                                                     std::chrono::microseconds max_wait,
                                                     std::chrono::microseconds step);

    /// Drops the current connection, if any, and opens a new one. Also called once when the
    /// tracker starts, so that the first wait finds a connection ready. Throws on failure.
    virtual asio::awaitable<void> reconnect() = 0;

    /// Number of queries this source has sent to the server so far (for stats and tests); sources
    /// that do not count return 0.
    virtual std::uint64_t queries_sent() const noexcept { return 0; }
};

}  // namespace flypg::replication
