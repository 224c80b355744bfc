// The replication tracker's engine, a template on its clock so that unit tests drive time by hand
// (tests/unit/replication) while the library instantiates it with std::chrono::steady_clock.
//
// Shape: run() is two loops joined with `&&`:
//   - the poll loop sleeps on poll_timer_ while nobody waits (zero queries when idle), polls at
//     once when the first waiter arrives, then every poll_interval while waiters remain, with at
//     most one query in flight; it reconnects the source with backoff after a failure;
//   - the expiry loop sleeps on expiry_timer_ until the earliest deadline and fails the waiters
//     whose deadline passed. It is separate so that deadlines hold even while a query or a
//     reconnect hangs.
// Waiters are added and cancelled from any thread (under mutex_); the loops and the timers live on
// the tracker's executor, which must not run two handlers at once (a strand or a one-thread
// io_context). add() wakes a sleeping loop by dispatching a timer cancel to that executor.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/basic_waitable_timer.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_state.hpp>
#include <asio/co_spawn.hpp>
#include <asio/dispatch.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/wait_traits.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/lsn.hpp"
#include "flypg/replication/detail/waiter.hpp"
#include "flypg/replication/replay_source.hpp"
#include "flypg/replication/tracker_options.hpp"
#include "flypg/replication/tracker_stats.hpp"
#include "flypg/replication/wait_result.hpp"
#include "replication/poll_interval.hpp"
#include "replication/waiter_heap.hpp"

namespace flypg::replication::detail {

// Non-template helpers, compiled once in tracker.cpp.

/// Whether the calling thread is running a handler of `executor` now (an io_context's executor or
/// a strand; false for executors of other types).
bool running_in_this_thread(const asio::any_io_executor& executor) noexcept;
/// Throws flypg::error(errc::invalid_argument) naming the first invalid field.
void validate(const tracker_options& options);
/// errc::cancelled: the wait was cancelled through its cancellation slot.
std::exception_ptr make_cancelled_error(lsn target);
/// errc::cancelled: the tracker's run() ended, or the tracker was destroyed, with the wait pending.
std::exception_ptr make_stopped_error(lsn target, bool destroyed);
/// errc::committed_not_replicated, as replication_timeout_error.
std::exception_ptr make_timeout_error(lsn target,
                                      std::optional<lsn> replay_position,
                                      std::chrono::nanoseconds timeout);
/// errc::timeout: the replay source did not answer within the query timeout.
[[noreturn]] void throw_query_timeout(std::chrono::nanoseconds limit);
/// errc::invalid_argument: run() while run() is already running.
[[noreturn]] void throw_already_running();

template <class Clock, class WaitTraits = asio::wait_traits<Clock>>
class tracker_core : public waiter_registry,
                     public std::enable_shared_from_this<tracker_core<Clock, WaitTraits>> {
    static_assert(std::is_same_v<typename Clock::duration, std::chrono::nanoseconds>,
                  "waiters store times as nanoseconds since the clock's epoch");

  public:
    using clock_type = Clock;
    using time_point = typename Clock::time_point;
    using timer_type = asio::basic_waitable_timer<Clock, WaitTraits, asio::any_io_executor>;

    /// Throws flypg::error(errc::invalid_argument) for invalid options or a null source.
    tracker_core(asio::any_io_executor executor,
                 std::unique_ptr<replay_source> source,
                 tracker_options options)
        : options_((validate(options), options)),
          interval_(options_.poll_floor,
                    options_.poll_ceiling,
                    options_.backoff_factor,
                    options_.backoff_after_polls),
          executor_(std::move(executor)),
          source_(std::move(source)),
          poll_timer_(executor_),
          expiry_timer_(executor_),
          backoff_timer_(executor_),
          query_watchdog_(executor_) {
        if (!source_) throw_error(errc::invalid_argument, "tracker: the replay source is null");
    }

    tracker_core(const tracker_core&) = delete;
    tracker_core& operator=(const tracker_core&) = delete;

    const asio::any_io_executor& get_executor() const noexcept { return executor_; }
    const tracker_options& options() const noexcept { return options_; }

    /// See tracker::run(). Keeps the core alive until it returns.
    asio::awaitable<void> run() {
        auto self = this->shared_from_this();
        {
            std::lock_guard lock(mutex_);
            if (run_state_ == run_state::running) throw_already_running();
            if (run_state_ == run_state::destroyed) co_return;
            run_state_ = run_state::running;
        }
        // A long-running service stops on any cancellation type.
        co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
        std::exception_ptr failure;
        try {
            using namespace asio::experimental::awaitable_operators;
            co_await (poll_loop() && expiry_loop());
        } catch (...) {
            failure = std::current_exception();
        }
        const bool was_cancelled = cancelled(co_await asio::this_coro::cancellation_state);
        const bool destroyed = stop();
        if (failure && !was_cancelled && !destroyed) std::rethrow_exception(failure);
    }

    /// Called by the owning tracker's destructor: fails every pending wait and makes run() return
    /// (after the query in flight, if any).
    void shutdown() {
        std::vector<waiter*> pending;
        {
            std::lock_guard lock(mutex_);
            run_state_ = run_state::destroyed;
            pending = take_all_locked();
            stats_.aborted += pending.size();
        }
        for (waiter* w : pending) w->complete(make_stopped_error(w->target, true), {});
        asio::dispatch(executor_, [self = this->shared_from_this()] {
            self->poll_timer_.cancel();
            self->expiry_timer_.cancel();
            self->backoff_timer_.cancel();
        });
    }

    void add(waiter& w, std::optional<std::chrono::nanoseconds> timeout) override {
        const time_point now = Clock::now();
        const std::chrono::nanoseconds now_ns = now.time_since_epoch();
        const std::chrono::nanoseconds limit =
            std::max(timeout.value_or(std::chrono::nanoseconds(options_.replication_timeout)),
                     std::chrono::nanoseconds::zero());
        w.started = now_ns;
        w.deadline = limit > std::chrono::nanoseconds::max() - now_ns ? std::chrono::nanoseconds::max()
                                                                      : now_ns + limit;

        enum class outcome { keep, answer, fail } what = outcome::keep;
        lsn_wait_result answer;
        bool kick_poll = false;
        bool kick_expiry = false;
        bool start_read = false;
        {
            std::lock_guard lock(mutex_);
            ++stats_.waits;
            if (run_state_ == run_state::stopped || run_state_ == run_state::destroyed) {
                what = outcome::fail;
                ++stats_.aborted;
            } else if (cached_ && cached_->state == replay_state::replaying &&
                       w.target <= cached_->position) {
                // Already replayed: no query, no wait.
                what = outcome::answer;
                answer.replay_position = cached_->position;
                ++stats_.cached;
                ++stats_.replayed;
            } else if (cached_ && cached_->state == replay_state::not_replicating &&
                       now - not_replicating_seen_ < options_.not_replicating_recheck) {
                what = outcome::answer;
                answer.status = wait_status::not_replicating;
                ++stats_.not_replicating;
            } else {
                const bool first = by_target_.empty();
                w.sequence = next_sequence_++;
                by_target_.push(&w);
                try {
                    by_deadline_.push(&w);
                } catch (...) {
                    by_target_.erase(&w);  // out of memory: leave both heaps as they were
                    throw;
                }
                stats_.waiters = by_target_.size();
                stats_.peak_waiters = std::max(stats_.peak_waiters, stats_.waiters);
                if (first) {
                    // First waiter after an idle spell: poll at once.
                    interval_.reset();
                    next_poll_at_ = now;
                } else if (w.target > highest_target_) {
                    // A target beyond every earlier one means fresh WAL on the primary: the replica
                    // is about to move, so stop backing off (never sooner than poll_floor after
                    // the last poll started, which bounds the query rate).
                    interval_.reset();
                    next_poll_at_ = std::min(next_poll_at_, last_poll_sent_ + interval_.floor());
                }
                highest_target_ = std::max(highest_target_, w.target);
                if (poll_sleeping_ && next_poll_at_ < poll_sleep_until_) {
                    kick_poll = true;
                    poll_sleep_until_ = next_poll_at_;
                }
                // Only the tracker's own executor may touch the source (checked last: rarely needed).
                if (options_.early_poll && options_.strategy == poll_strategy::poll && poll_sleeping_ &&
                    stats_.connected && !read_started_ && !start_declined_ && next_poll_at_ <= now &&
                    running_in_this_thread(executor_)) {
                    // The poll is due, and the loop would send it only after the caller's
                    // handler returns: send it now (claimed here, undone below if the source
                    // cannot).
                    start_read = true;
                    read_started_ = true;
                    read_started_at_ = now;
                }
                const time_point deadline = from_ns(w.deadline);
                if (expiry_sleeping_ && deadline < expiry_sleep_until_) {
                    kick_expiry = true;
                    expiry_sleep_until_ = deadline;
                }
            }
        }
        if (start_read) start_read_now();
        if (what == outcome::fail) {
            w.complete(make_stopped_error(w.target, false), {});
        } else if (what == outcome::answer) {
            w.complete(nullptr, answer);
        } else if (kick_poll || kick_expiry) {
            // The loops re-read the shared state when they wake, so a kick only has to end the
            // current sleep. Dispatched: inline when already on the tracker's executor.
            try {
                asio::dispatch(executor_, [self = this->shared_from_this(), kick_poll, kick_expiry] {
                    if (kick_poll) self->poll_timer_.cancel();
                    if (kick_expiry) self->expiry_timer_.cancel();
                });
            } catch (...) {
                forget(w);  // out of memory: the caller frees the waiter, so no heap may keep it
                throw;
            }
        }
    }

    // Sends the poll add() claimed (read_started_) from the caller's handler. A source that
    // cannot, or throws, is not asked again before the loop wakes: the loop sends it itself.
    void start_read_now() noexcept {
        bool started = false;
        try {
            started = source_->start_read();
        } catch (...) {
            started = false;
        }
        std::lock_guard lock(mutex_);
        if (started) {
            ++stats_.polls;
        } else {
            read_started_ = false;
            start_declined_ = true;
        }
    }

    // Removes a waiter add() had kept, when add() cannot finish and throws.
    void forget(waiter& w) noexcept {
        std::lock_guard lock(mutex_);
        if (!by_target_.contains(&w)) return;
        by_target_.erase(&w);
        by_deadline_.erase(&w);
        stats_.waiters = by_target_.size();
    }

    void cancel(waiter& w) noexcept override {
        {
            std::lock_guard lock(mutex_);
            if (!by_target_.contains(&w)) return;  // completion already on its way
            by_target_.erase(&w);
            by_deadline_.erase(&w);
            stats_.waiters = by_target_.size();
            ++stats_.cancellations;
        }
        w.complete(make_cancelled_error(w.target), {});
    }

    tracker_stats stats() const {
        std::lock_guard lock(mutex_);
        return stats_;
    }

  private:
    enum class run_state { not_started, running, stopped, destroyed };

    static time_point from_ns(std::chrono::nanoseconds ns) noexcept { return time_point(ns); }

    // Called with mutex_ held.
    std::vector<waiter*> take_all_locked() {
        std::vector<waiter*> pending;
        pending.reserve(by_target_.size());
        while (!by_target_.empty()) pending.push_back(by_target_.pop());  // in LSN order
        by_deadline_.take_all();
        stats_.waiters = 0;
        return pending;
    }

    // run() ended: later waits fail at once until run() starts again. Returns whether the
    // tracker was destroyed.
    bool stop() {
        std::vector<waiter*> pending;
        bool destroyed = false;
        {
            std::lock_guard lock(mutex_);
            destroyed = run_state_ == run_state::destroyed;
            if (!destroyed) run_state_ = run_state::stopped;
            pending = take_all_locked();
            stats_.aborted += pending.size();
            read_started_ = false;  // the next run() reconnects, which drops that query
            cached_.reset();
            stats_.replay_position.reset();
            stats_.connected = false;
        }
        for (waiter* w : pending) w->complete(make_stopped_error(w->target, destroyed), {});
        return destroyed;
    }

    bool destroyed() const {
        std::lock_guard lock(mutex_);
        return run_state_ == run_state::destroyed;
    }

    // Used as `cancelled(co_await asio::this_coro::cancellation_state)`: unlike co_await on a
    // helper awaitable, that does not throw when the coroutine has been cancelled.
    static bool cancelled(const asio::cancellation_state& state) noexcept {
        return state.cancelled() != asio::cancellation_type::none;
    }

    asio::awaitable<void> poll_loop() {
        co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
        std::chrono::nanoseconds backoff = options_.reconnect_backoff_min;
        bool connected = false;
        for (;;) {
            if (destroyed()) co_return;
            if (!connected) {
                std::exception_ptr failure;
                try {
                    co_await source_->reconnect();
                } catch (...) {
                    failure = std::current_exception();
                }
                if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
                if (!failure) {
                    connected = true;
                    backoff = options_.reconnect_backoff_min;
                    on_connected();
                    continue;
                }
                on_source_failure();
                report_connection(false, failure);
                // Not kickable by add(): new waiters must not shorten the reconnect backoff.
                backoff_timer_.expires_after(backoff);
                co_await backoff_timer_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
                if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
                backoff = std::min(backoff * 2, std::chrono::nanoseconds(options_.reconnect_backoff_max));
                continue;
            }

            bool poll_now = false;
            time_point wake = time_point::max();
            time_point sent;
            lsn target;
            {
                std::lock_guard lock(mutex_);
                if (run_state_ == run_state::destroyed) co_return;
                if (read_started_) {
                    // add() sent the query already (and counted it): collect its answer, even if
                    // the waits it was for are gone.
                    poll_now = true;
                    read_started_ = false;
                    sent = read_started_at_;
                } else if (!by_target_.empty()) {
                    const time_point now = Clock::now();
                    if (next_poll_at_ <= now) {
                        poll_now = true;
                        target = by_target_.top()->target;
                        sent = now;
                        ++stats_.polls;
                    } else {
                        wake = next_poll_at_;
                    }
                }
                poll_sleeping_ = !poll_now;
                poll_sleep_until_ = wake;
            }
            if (!poll_now) {
                // Idle (wake == max) or between two polls; add() cancels the wait to wake us early.
                poll_timer_.expires_at(wake);
                co_await poll_timer_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
                {
                    std::lock_guard lock(mutex_);
                    poll_sleeping_ = false;
                    start_declined_ = false;
                }
                if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
                continue;
            }

            std::exception_ptr failure;
            replay_status status;
            try {
                status = co_await query(target);
            } catch (...) {
                failure = std::current_exception();
            }
            if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
            if (failure) {
                on_source_failure();
                report_connection(false, failure);
                connected = false;
                continue;
            }
            report_connection(true, nullptr);
            apply(status, sent);
        }
    }

    // One read (or long-poll call) bounded by the query timeout, so that a hung connection turns
    // into a reconnect instead of stalling every waiter until its deadline. The read runs under
    // its own cancellation signal, emitted by a watchdog timer when the limit passes and by
    // run()'s own cancellation (forwarded). Racing a timer in a parallel group would cost a trip
    // through the executor's queue after every answer (the group waits for the cancelled timer's
    // completion), which under load is a whole turn of a busy event loop. A read add() started
    // early gets its limit from here, so the starting handler's own run time comes on top.
    asio::awaitable<replay_status> query(lsn target) {
        const auto executor = co_await asio::this_coro::executor;
        std::chrono::nanoseconds limit = options_.query_timeout;
        const bool long_poll = options_.strategy == poll_strategy::long_poll;
        if (long_poll) limit += options_.long_poll_max_wait;
        asio::awaitable<replay_status> operation =
            long_poll ? source_->wait_past(target, options_.long_poll_max_wait, options_.long_poll_step)
                      : source_->read();
        asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
        asio::cancellation_slot stop_slot = state.slot();
        if (stop_slot.is_connected()) stop_slot.template emplace<forward_cancellation>(&query_cancel_);
        query_timed_out_ = false;
        query_watchdog_.expires_after(limit);
        query_watchdog_.async_wait(watchdog_expired{this->weak_from_this(), ++query_generation_});
        replay_status status;
        std::exception_ptr failure;
        try {
            // Spawned so that it takes its cancellation from query_cancel_ (terminal, which a
            // spawned coroutine accepts by default) rather than from this coroutine.
            status = co_await asio::co_spawn(
                executor,
                std::move(operation),
                asio::bind_cancellation_slot(query_cancel_.slot(), asio::use_awaitable));
        } catch (...) {
            failure = std::current_exception();
        }
        ++query_generation_;  // a watchdog that fires from now on is stale
        query_watchdog_.cancel();
        if (stop_slot.is_connected()) stop_slot.clear();
        // An answer that arrived as the watchdog fired is still an answer.
        if (failure && query_timed_out_) throw_query_timeout(limit);
        if (failure) std::rethrow_exception(failure);
        co_return status;
    }

    // Passes run()'s cancellation on to the query in flight.
    class forward_cancellation {
      public:
        explicit forward_cancellation(asio::cancellation_signal* to) noexcept : to_(to) {}
        // Terminal whatever the type: run() stops on any, and coroutines a source spawns
        // accept only terminal unless they say otherwise.
        void operator()(asio::cancellation_type_t) const { to_->emit(asio::cancellation_type::terminal); }

      private:
        asio::cancellation_signal* to_;
    };

    // Cancels the query in flight when its time is up, unless that query has ended meanwhile.
    class watchdog_expired {
      public:
        watchdog_expired(std::weak_ptr<tracker_core> core, std::uint64_t generation) noexcept
            : core_(std::move(core)), generation_(generation) {}
        void operator()(const std::error_code& ec) const {
            const auto core = core_.lock();
            if (ec || !core || core->query_generation_ != generation_) return;
            core->query_timed_out_ = true;
            core->query_cancel_.emit(asio::cancellation_type::terminal);
        }

      private:
        std::weak_ptr<tracker_core> core_;
        std::uint64_t generation_;
    };

    void on_connected() {
        std::lock_guard lock(mutex_);
        ++stats_.reconnects;
        stats_.connected = true;
        // Waiters that arrived while disconnected poll at once.
        next_poll_at_ = Clock::now();
    }

    // Tells options_.on_connection_change about a change of state: down at the first failure, up
    // at the first answer after one (a connection that opens but cannot answer is still down).
    void report_connection(bool up, const std::exception_ptr& failure) {
        if (up == reported_up_) return;
        reported_up_ = up;
        if (!options_.on_connection_change) return;
        std::string detail;
        if (failure) {
            try {
                std::rethrow_exception(failure);
            } catch (const std::exception& e) {
                detail = e.what();
            } catch (...) {
                detail = "unknown failure";
            }
        }
        try {
            options_.on_connection_change(up, detail);
        } catch (...) {
            // A sink that throws must not stop the tracker.
        }
    }

    void on_source_failure() {
        std::lock_guard lock(mutex_);
        ++stats_.source_failures;
        stats_.connected = false;
        // The next connection may reach another server, or this one restarted and is replaying
        // again from an earlier point: what the old connection saw no longer proves anything.
        cached_.reset();
        stats_.replay_position.reset();
    }

    void apply(const replay_status& status, time_point sent) {
        ready_.clear();
        lsn_wait_result result;
        const time_point now = Clock::now();
        {
            std::lock_guard lock(mutex_);
            stats_.poll_latency.record(now - sent);
            if (status.state == replay_state::replaying) {
                const bool progressed = !cached_ || *cached_ != status;
                cached_ = status;
                stats_.replay_position = status.position;
                result.replay_position = status.position;
                if (status.position >= highest_target_) {
                    // Every pending wait is covered, the usual case: one sort instead of a heap
                    // pop and a heap erase per waiter.
                    by_target_.take_all_sorted(ready_);
                    by_deadline_.clear();
                } else {
                    while (!by_target_.empty() && by_target_.top()->target <= status.position) {
                        waiter* w = by_target_.pop();
                        by_deadline_.erase(w);
                        ready_.push_back(w);
                    }
                }
                for (const waiter* w : ready_)
                    stats_.wait_latency.record(now.time_since_epoch() - w->started);
                stats_.replayed += ready_.size();
                interval_.on_poll(progressed);
                // A long-poll call already waited on the server: after progress, ask again at
                // once. Without progress (the server's max wait passed, or a source without a
                // server-side wait) fall back to the adaptive interval.
                const bool again_now = options_.strategy == poll_strategy::long_poll && progressed;
                // Intervals run from one poll's start to the next: that bounds the query rate,
                // and a slow answer does not add its round trip to the interval.
                next_poll_at_ = again_now ? now : std::max(now, sent + interval_.current());
            } else {
                cached_ = status;
                not_replicating_seen_ = now;
                stats_.replay_position.reset();
                ++stats_.not_replicating_polls;
                result.status = wait_status::not_replicating;
                while (!by_target_.empty()) {
                    waiter* w = by_target_.pop();
                    by_deadline_.erase(w);
                    ready_.push_back(w);
                }
                stats_.not_replicating += ready_.size();
                next_poll_at_ = now;
            }
            last_poll_sent_ = sent;
            stats_.waiters = by_target_.size();
        }
        // In LSN order, one posted handler per executor.
        complete_in_order(ready_, result);
    }

    asio::awaitable<void> expiry_loop() {
        co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
        for (;;) {
            expired_.clear();
            std::optional<lsn> replayed;
            time_point wake = time_point::max();
            {
                std::lock_guard lock(mutex_);
                if (run_state_ == run_state::destroyed) co_return;
                const std::chrono::nanoseconds now_ns = Clock::now().time_since_epoch();
                while (!by_deadline_.empty() && by_deadline_.top()->deadline <= now_ns) {
                    waiter* w = by_deadline_.pop();
                    by_target_.erase(w);
                    expired_.push_back(w);
                }
                stats_.timeouts += expired_.size();
                stats_.waiters = by_target_.size();
                if (cached_ && cached_->state == replay_state::replaying) replayed = cached_->position;
                if (!by_deadline_.empty()) wake = from_ns(by_deadline_.top()->deadline);
                expiry_sleeping_ = true;
                expiry_sleep_until_ = wake;
            }
            for (waiter* w : expired_) {
                w->complete(make_timeout_error(w->target, replayed, w->deadline - w->started), {});
            }
            expiry_timer_.expires_at(wake);
            co_await expiry_timer_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
            {
                std::lock_guard lock(mutex_);
                expiry_sleeping_ = false;
            }
            if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
        }
    }

    const tracker_options options_;
    bool reported_up_ = true;  // what on_connection_change was last told (up until a failure)

    mutable std::mutex mutex_;
    // Guarded by mutex_.
    target_heap by_target_;
    deadline_heap by_deadline_;
    std::uint64_t next_sequence_ = 0;
    run_state run_state_ = run_state::not_started;
    std::optional<replay_status> cached_;  // last answer of the current connection
    time_point not_replicating_seen_{};    // when cached_ last said "not a standby"
    lsn highest_target_{};
    poll_interval interval_;
    time_point next_poll_at_{};
    time_point last_poll_sent_{};
    bool poll_sleeping_ = false;
    time_point poll_sleep_until_{};
    bool read_started_ = false;  // add() sent the next poll's query (replay_source::start_read)
    time_point read_started_at_{};
    bool start_declined_ = false;  // the source could not start a read during this sleep
    bool expiry_sleeping_ = false;
    time_point expiry_sleep_until_{};
    tracker_stats stats_;

    // Used only on the tracker's executor.
    asio::any_io_executor executor_;
    std::unique_ptr<replay_source> source_;
    timer_type poll_timer_;
    timer_type expiry_timer_;
    timer_type backoff_timer_;
    timer_type query_watchdog_;
    asio::cancellation_signal query_cancel_;  // cancels the query in flight
    std::uint64_t query_generation_ = 0;      // which query the armed watchdog is for
    bool query_timed_out_ = false;
    std::vector<waiter*> ready_;
    std::vector<waiter*> expired_;
};

}  // namespace flypg::replication::detail
