// Read-your-writes on a replica: wait until the replica has replayed a write's commit LSN.
//
// One tracker per replica database. It owns one replay_source (one dedicated connection, not taken
// from a read pool) and runs one coroutine, run(), on your io_context. Any number of coroutines
// wait on it; whatever their number, at most one query is in flight, each answer resumes every
// wait it covers, and nothing is sent to the replica while nobody waits.
//
//     #include "flypg/replication/pg_replay_source.hpp"
//
//     asio::io_context io;
//     flypg::replication::pg_replay_source_options replica;
//     replica.connect.conninfo = "host=replica dbname=app";
//     flypg::replication::tracker tracker(
//         io.get_executor(), flypg::replication::make_pg_replay_source(io.get_executor(), replica));
//     asio::cancellation_signal stop;
//     asio::co_spawn(io, tracker.run(), asio::bind_cancellation_slot(stop.slot(), asio::detached));
//
//     // In a request handler, after a write on the primary returned its commit LSN
//     // (see commit_lsn.hpp):
//     auto result = co_await tracker.wait_for(commit);  // may throw replication_timeout_error
//     // ... read from the replica: it has the write ...
//
//     stop.emit(asio::cancellation_type::terminal);  // at shutdown: run() returns
//
// Threads: wait_for() and stats() may be called from any thread; waits complete on their own
// handler's executor. run(), the constructor and the destructor belong to the tracker's executor,
// which must not run two handlers at once (a one-thread io_context, or a strand).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "flypg/lsn.hpp"
#include "flypg/replication/detail/waiter.hpp"
#include "flypg/replication/replay_source.hpp"
#include "flypg/replication/tracker_options.hpp"
#include "flypg/replication/tracker_stats.hpp"
#include "flypg/replication/wait_result.hpp"

namespace flypg::replication {

/// Waits for a replica to replay LSNs. Move-only.
class tracker {
  public:
    using executor_type = asio::any_io_executor;
    using clock_type = std::chrono::steady_clock;
    using duration = clock_type::duration;
    /// The completion signature of wait_for().
    using wait_signature = detail::wait_signature;

    /// A tracker that reads `source` and runs its loops on `executor`.
    /// @throws flypg::error(errc::invalid_argument) naming an invalid option, or a null source.
    tracker(executor_type executor, std::unique_ptr<replay_source> source, tracker_options options = {});

    tracker(tracker&&) noexcept;
    tracker& operator=(tracker&&) noexcept;
    tracker(const tracker&) = delete;
    tracker& operator=(const tracker&) = delete;

    /// Fails every pending wait with errc::cancelled and makes a running run() return (after the
    /// query in flight, if any). Call it on the tracker's executor.
    ~tracker();

    executor_type get_executor() const noexcept;
    const tracker_options& options() const noexcept;

    /// The tracker's service loop: connects the source, polls while anybody waits, enforces the
    /// waits' deadlines, reconnects with backoff after failures. Spawn it once on the tracker's
    /// executor:
    ///
    ///     asio::co_spawn(executor, tracker.run(), asio::bind_cancellation_slot(slot, asio::detached));
    ///
    /// Waits registered before it starts are kept (their deadlines run from the call). It returns
    /// normally when cancelled (terminal, partial or total: all stop it) or when the tracker is
    /// destroyed; the waits still pending then fail with errc::cancelled, and so do waits started
    /// later until run() is spawned again. The replay source's failures never end it.
    /// @throws flypg::error(errc::invalid_argument) if run() is already running.
    asio::awaitable<void> run();

    /// Waits until the replica has replayed `target` (replay position >= target).
    ///
    /// Completion signature: `void(std::exception_ptr, lsn_wait_result)`; with the default token,
    /// `co_await tracker.wait_for(lsn)` returns the lsn_wait_result or throws:
    ///   - lsn_wait_result{replayed, position}: the replica has the write. Returns without any
    ///     query when the last replay position seen already covers `target`.
    ///   - lsn_wait_result{not_replicating}: the replica is not a standby (its replay LSN is NULL,
    ///     or it was promoted). Completes every pending wait at once, and later waits too, without
    ///     a query, until the source reconnects.
    ///   - replication_timeout_error (a flypg::error, errc::committed_not_replicated) when `timeout`
    ///     (default: options().replication_timeout) passes first. It carries the target LSN.
    ///   - flypg::error(errc::cancelled) when cancelled through the handler's cancellation slot,
    ///     or when run() stops or the tracker is destroyed with the wait pending.
    ///
    /// Cancellation: terminal, partial and total are all supported, since a wait has no side
    /// effects: the wait is removed at once and completes with errc::cancelled; it is never
    /// resumed again. (An awaiting coroutine passes on only terminal cancellation unless it resets
    /// its cancellation state; `co_await (tracker.wait_for(l) || timer.async_wait(...))` works.)
    ///
    /// The handler runs on its associated executor (default: the tracker's), never inline. Waits
    /// covered by the same poll are completed in LSN order, FIFO among equal LSNs.
    template <class CompletionToken = asio::use_awaitable_t<>>
    auto wait_for(lsn target, std::optional<duration> timeout = std::nullopt, CompletionToken&& token = {}) {
        return asio::async_initiate<CompletionToken, wait_signature>(
            detail::initiate_wait(registry(), get_executor()), token, target, timeout);
    }

    /// wait_for(target, default timeout, token).
    template <class CompletionToken>
    requires(!std::is_convertible_v<CompletionToken, std::optional<duration>>) auto wait_for(
        lsn target, CompletionToken&& token) {
        return wait_for(target, std::nullopt, std::forward<CompletionToken>(token));
    }

    /// A consistent snapshot of the tracker's counters.
    tracker_stats stats() const;

    struct impl;

  private:
    std::shared_ptr<detail::waiter_registry> registry() const noexcept;

    std::shared_ptr<impl> impl_;
};

}  // namespace flypg::replication
