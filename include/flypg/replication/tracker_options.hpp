// Tuning of a replication tracker. Every field has a default; set only what you need:
//
//     flypg::replication::tracker_options options{
//         .poll_floor = std::chrono::microseconds(500),
//         .replication_timeout = std::chrono::seconds(2),
//     };
#pragma once

#include <chrono>
#include <functional>
#include <string_view>

namespace flypg::replication {

/// How the tracker learns that the replica has moved.
enum class poll_strategy {
    /// Client-side polling: one short query (`SELECT pg_last_wal_replay_lsn()`) per interval, the
    /// interval adapting between poll_floor and poll_ceiling. Lowest latency; costs one round
    /// trip per interval on the replica while anybody waits.
    poll,
    /// Server-side long-poll: one call to the function installed by install_long_poll_function(),
    /// which checks the replay position every long_poll_step on the server and returns as soon as
    /// it reaches the lowest pending target. Fewer round trips while a replica lags; one backend
    /// busy while anybody waits, and its query holds a snapshot that can delay the replay of
    /// conflicting cleanup records by up to long_poll_max_wait (hot standby conflict handling).
    /// A wait registered during a call for a lower target than the call's waits for that call.
    long_poll,
};

/// Options of a tracker. Validated by the tracker's constructor (errc::invalid_argument names the
/// field).
struct tracker_options {
    /// Shortest interval between the starts of two polls, used while the replay position keeps
    /// moving. Bounds the polling rate (1/poll_floor queries per second at most) and the added wait
    /// latency; a replica slower to answer than this is asked again as soon as it answers.
    std::chrono::microseconds poll_floor{200};
    /// Longest interval between two polls, reached while the replay position stands still.
    std::chrono::microseconds poll_ceiling{50'000};
    /// Factor by which the interval grows after each poll that saw no progress (>= 1).
    double backoff_factor = 2.0;
    /// Polls at poll_floor that may see no progress before the interval starts growing. A commit
    /// usually reaches the replica within a few hundred microseconds; this keeps the first polls of
    /// a wait fast.
    unsigned backoff_after_polls = 2;

    /// Default deadline of a wait, counted from the call (fly_postgres' replication_timeout).
    std::chrono::milliseconds replication_timeout{5'000};

    /// Longest time one query (or one long-poll call beyond its own wait) may take before the
    /// tracker cancels it and reconnects.
    std::chrono::milliseconds query_timeout{2'000};
    /// First delay before reconnecting after a failure; doubles on each failure in a row.
    std::chrono::milliseconds reconnect_backoff_min{50};
    /// Upper bound of the reconnect delay.
    std::chrono::milliseconds reconnect_backoff_max{5'000};

    /// How long "the local database is not a standby" (promoted, a primary) answers waits without
    /// a query. A wait after that polls again, so that a database that follows the primary again
    /// (rebuilt, or restarted as a standby) is noticed: at most one query per this interval while
    /// the split lasts.
    std::chrono::milliseconds not_replicating_recheck{1'000};

    /// Polling or server-side long-poll (see poll_strategy).
    poll_strategy strategy = poll_strategy::poll;
    /// poll only: when a wait arrives on the tracker's own executor (an io_context's executor or a
    /// strand of one; other executor types are not recognised) and a poll is due, send the
    /// query from inside that wait's call instead of from the tracker's loop, which runs only after
    /// the handler that started the wait returns (a handler that starts a thousand waits delays
    /// its own poll by as long as that takes). Needs a source that can (replay_source::start_read:
    /// the PostgreSQL source with prepare_poll). Off: every query leaves from the loop.
    bool early_poll = true;
    /// long_poll only: how often the server-side function checks the replay position. PostgreSQL's
    /// pg_sleep() rounds up to whole milliseconds: any step below 1 ms sleeps about 1.1 ms (measured
    /// here), which bounds what the long-poll adds to a wait.
    std::chrono::microseconds long_poll_step{200};
    /// long_poll only: longest time one server-side call waits before returning short of its target.
    std::chrono::milliseconds long_poll_max_wait{1'000};

    /// Told when the tracker's connection to its replica stops working (`connected` false, with the
    /// failure's text) and when it works again (true, empty text): once per change, not once per
    /// retry. Runs on the tracker's executor, inside its loop: it must not block. The repo logs it.
    std::function<void(bool connected, std::string_view detail)> on_connection_change;
};

}  // namespace flypg::replication
