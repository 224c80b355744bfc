// The tracker's contract, driven without a database and without sleeping: a scripted replay
// source and a clock the tests move by hand.
#include <gtest/gtest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <algorithm>
#include <cmath>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fake_source.hpp"
#include "flypg/replication/tracker.hpp"
#include "manual_clock.hpp"
#include "replication/tracker_core.hpp"

namespace {

using namespace std::chrono_literals;
using flypg::lsn;
using flypg::test::fake_source;
using flypg::test::manual_clock;
using flypg::test::manual_timer;
using flypg::test::manual_wait_traits;
using flypg::test::source_script;
namespace replication = flypg::replication;
using replication::lsn_wait_result;
using replication::replay_status;
using replication::tracker_options;
using replication::wait_status;

using core_type = replication::detail::tracker_core<manual_clock, manual_wait_traits>;

lsn at(std::uint64_t value) {
    return lsn::from_value(value);
}

std::error_code code_of(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::system_error& e) {
        return e.code();
    } catch (...) {
        return std::make_error_code(std::errc::invalid_argument);
    }
}

/// What one wait delivered.
struct outcome {
    int calls = 0;
    int order = -1;  ///< Position among all completions of the test.
    std::exception_ptr error;
    lsn_wait_result result;
    bool done() const { return calls > 0; }
    bool replayed() const { return calls == 1 && !error && result.status == wait_status::replayed; }
};

class LsnTracker : public ::testing::Test {
  protected:
    LsnTracker() { manual_clock::reset(); }

    ~LsnTracker() override {
        if (core_ && running_) {
            stop_.emit(asio::cancellation_type::terminal);
            settle();
        }
    }

    void create(tracker_options options = {}) {
        core_ =
            std::make_shared<core_type>(io_.get_executor(), std::make_unique<fake_source>(script_), options);
    }

    void spawn_run() {
        running_ = true;
        run_done_ = false;
        asio::co_spawn(
            io_, core_->run(), asio::bind_cancellation_slot(stop_.slot(), [this](std::exception_ptr e) {
                running_ = false;
                run_done_ = true;
                run_error_ = e;
            }));
    }

    void start(tracker_options options = {}) {
        create(options);
        spawn_run();
        settle();
    }

    /// Runs every handler that is ready now, without moving the clock.
    void settle() {
        io_.restart();
        for (int rounds = 0; io_.poll() != 0; ++rounds) {
            ASSERT_LT(rounds, 1'000'000) << "the tracker keeps itself busy without time passing";
        }
    }

    void advance(std::chrono::nanoseconds d) {
        manual_clock::advance(d);
        settle();
    }

    /// Moves time in `step`s, letting the tracker act at each one, as real time would.
    void advance_in_steps(std::chrono::nanoseconds total, std::chrono::nanoseconds step) {
        for (std::chrono::nanoseconds done{0}; done < total; done += step) advance(step);
    }

    template <class Token>
    auto async_wait(lsn target, std::optional<std::chrono::nanoseconds> timeout, Token&& token) {
        return asio::async_initiate<Token, replication::detail::wait_signature>(
            replication::detail::initiate_wait(core_, io_.get_executor()), token, target, timeout);
    }

    auto recorder(std::shared_ptr<outcome> into) {
        return [this, into](std::exception_ptr error, lsn_wait_result result) {
            ++into->calls;
            into->order = completions_++;
            into->error = error;
            into->result = result;
        };
    }

    std::shared_ptr<outcome> wait(lsn target, std::optional<std::chrono::nanoseconds> timeout = {}) {
        auto result = std::make_shared<outcome>();
        async_wait(target, timeout, recorder(result));
        return result;
    }

    std::shared_ptr<outcome> wait(lsn target, asio::cancellation_slot slot) {
        auto result = std::make_shared<outcome>();
        async_wait(target, std::nullopt, asio::bind_cancellation_slot(slot, recorder(result)));
        return result;
    }

    /// Starts a wait from a handler running on the tracker's executor, where a due poll leaves
    /// from inside the call (early_poll), then runs everything ready.
    std::shared_ptr<outcome> wait_on_tracker_thread(lsn target,
                                                    std::optional<std::chrono::nanoseconds> timeout = {}) {
        std::shared_ptr<outcome> w;
        asio::post(io_, [&] { w = wait(target, timeout); });
        settle();
        return w;
    }

    replication::tracker_stats stats() const { return core_->stats(); }

    asio::io_context io_;
    std::shared_ptr<source_script> script_ = std::make_shared<source_script>(io_.get_executor());
    std::shared_ptr<core_type> core_;
    asio::cancellation_signal stop_;
    bool running_ = false;
    bool run_done_ = false;
    std::exception_ptr run_error_;
    int completions_ = 0;
};

TEST_F(LsnTracker, IdleTrackerSendsNoQueries) {
    start();
    EXPECT_EQ(script_->reconnects, 1);  // connected eagerly, so the first wait finds it ready
    advance_in_steps(10s, 1ms);
    EXPECT_EQ(script_->reads, 0);
    EXPECT_EQ(stats().polls, 0u);
}

TEST_F(LsnTracker, FirstWaiterPollsAtOnce) {
    start();
    advance(1s);
    script_->status = replay_status::replaying(at(100));
    auto w = wait(at(100));
    settle();  // no time passes
    EXPECT_EQ(script_->reads, 1);
    ASSERT_TRUE(w->replayed());
    EXPECT_EQ(w->result.replay_position, at(100));
}

TEST_F(LsnTracker, AnswersFromTheCachedPositionWithoutAQuery) {
    start();
    script_->status = replay_status::replaying(at(200));
    auto first = wait(at(100));
    settle();
    ASSERT_TRUE(first->replayed());
    ASSERT_EQ(script_->reads, 1);

    auto second = wait(at(150));
    EXPECT_FALSE(second->done()) << "completed inline";
    settle();
    ASSERT_TRUE(second->replayed());
    EXPECT_EQ(second->result.replay_position, at(200));
    EXPECT_EQ(script_->reads, 1);
    EXPECT_EQ(stats().cached, 1u);
    EXPECT_EQ(stats().replayed, 2u);
}

TEST_F(LsnTracker, ResumesWaitersInLsnOrderAndFifoAmongEqualLsns) {
    script_->hold = true;
    start();
    auto w50 = wait(at(50));  // starts a poll, held in flight
    settle();
    auto w300 = wait(at(300));
    auto w100a = wait(at(100));
    auto w200 = wait(at(200));
    auto w100b = wait(at(100));
    auto w100c = wait(at(100));
    script_->status = replay_status::replaying(at(1000));
    script_->release();
    settle();
    for (const auto& w : {w50, w300, w100a, w200, w100b, w100c}) ASSERT_TRUE(w->replayed());
    EXPECT_EQ(w50->order, 0);
    EXPECT_EQ(w100a->order, 1);
    EXPECT_EQ(w100b->order, 2);
    EXPECT_EQ(w100c->order, 3);
    EXPECT_EQ(w200->order, 4);
    EXPECT_EQ(w300->order, 5);
    EXPECT_EQ(script_->reads, 1);
}

TEST_F(LsnTracker, BatchesManyWaitersIntoOnePollWithOneQueryInFlight) {
    script_->hold = true;
    start();
    std::vector<std::shared_ptr<outcome>> waiters;
    for (std::uint64_t i = 1; i <= 1000; ++i) waiters.push_back(wait(at(i)));
    settle();
    EXPECT_EQ(stats().waiters, 1000u);
    EXPECT_EQ(stats().peak_waiters, 1000u);
    script_->status = replay_status::replaying(at(1000));
    script_->release();
    settle();
    for (const auto& w : waiters) ASSERT_TRUE(w->replayed());
    EXPECT_EQ(script_->reads, 1);
    EXPECT_EQ(script_->max_in_flight, 1);
    EXPECT_EQ(stats().waiters, 0u);
}

TEST_F(LsnTracker, SendsTheFirstPollFromInsideTheHandlerThatStartsTheWaits) {
    script_->can_start = true;
    start();
    script_->status = replay_status::replaying(at(300));
    std::vector<std::shared_ptr<outcome>> waiters;
    int starts_inside = -1;
    asio::post(io_, [&] {
        for (std::uint64_t i = 1; i <= 3; ++i) waiters.push_back(wait(at(100 * i)));
        // Sent before this handler returns: the tracker's loop could only send it afterwards.
        starts_inside = script_->starts;
    });
    settle();
    EXPECT_EQ(starts_inside, 1);
    for (const auto& w : waiters) ASSERT_TRUE(w->replayed());
    EXPECT_EQ(script_->starts, 1);
    EXPECT_EQ(script_->reads, 0) << "the loop sent a second query instead of taking the answer";
    EXPECT_EQ(stats().polls, 1u);
    EXPECT_EQ(stats().poll_latency.count, 1u);
}

TEST_F(LsnTracker, AStartedPollThatHangsIsCancelledByTheWatchdogAndTheSourceReconnects) {
    script_->can_start = true;
    script_->hold = true;
    start();
    auto w = wait_on_tracker_thread(at(100), 10s);
    ASSERT_EQ(script_->starts, 1);
    ASSERT_EQ(script_->in_flight, 1) << "the loop is not collecting the started query";
    script_->hold = false;  // later queries answer; the started one hangs
    script_->status = replay_status::replaying(at(100));
    advance(tracker_options{}.query_timeout);
    EXPECT_EQ(script_->cancelled_queries, 1);
    EXPECT_EQ(script_->reconnects, 2);
    EXPECT_EQ(stats().source_failures, 1u);
    EXPECT_TRUE(w->replayed());
}

TEST_F(LsnTracker, ASourceThatCannotStartAQueryIsAskedOnceAndTheLoopPolls) {
    start();  // can_start is false
    script_->status = replay_status::replaying(at(300));
    std::vector<std::shared_ptr<outcome>> waiters;
    asio::post(io_, [&] {
        for (std::uint64_t i = 1; i <= 3; ++i) waiters.push_back(wait(at(100 * i)));
    });
    settle();
    for (const auto& w : waiters) ASSERT_TRUE(w->replayed());
    EXPECT_EQ(script_->start_attempts, 1);
    EXPECT_EQ(script_->reads, 1);
    EXPECT_EQ(stats().polls, 1u);
}

TEST_F(LsnTracker, EarlyPollOffLeavesEveryQueryToTheLoop) {
    script_->can_start = true;
    tracker_options options;
    options.early_poll = false;
    start(options);
    script_->status = replay_status::replaying(at(100));
    auto w = wait_on_tracker_thread(at(100));
    EXPECT_TRUE(w->replayed());
    EXPECT_EQ(script_->start_attempts, 0);
    EXPECT_EQ(script_->reads, 1);
}

TEST_F(LsnTracker, StartsNoQueryForAWaitFromAnotherThread) {
    script_->can_start = true;
    start();
    script_->status = replay_status::replaying(at(100));
    auto from_outside = wait(at(100));  // not on the tracker's executor
    EXPECT_EQ(script_->starts, 0);
    settle();
    EXPECT_TRUE(from_outside->replayed());
    EXPECT_EQ(script_->reads, 1);
}

TEST_F(LsnTracker, StartsNoQueryForALongPoll) {
    script_->can_start = true;
    tracker_options options;
    options.strategy = replication::poll_strategy::long_poll;
    start(options);
    script_->status = replay_status::replaying(at(200));
    auto long_polled = wait_on_tracker_thread(at(200));
    EXPECT_TRUE(long_polled->replayed());
    EXPECT_EQ(script_->starts, 0);
    EXPECT_EQ(script_->wait_pasts, 1);
}

TEST_F(LsnTracker, AStartedPollIsCollectedEvenWhenItsWaitIsCancelledFirst) {
    script_->can_start = true;
    start();
    script_->status = replay_status::replaying(at(50));
    asio::cancellation_signal cancel;
    std::shared_ptr<outcome> cancelled;
    asio::post(io_, [&] {
        cancelled = wait(at(100), cancel.slot());
        cancel.emit(asio::cancellation_type::terminal);
    });
    settle();
    EXPECT_EQ(code_of(cancelled->error), flypg::errc::cancelled);
    EXPECT_EQ(script_->starts, 1);
    EXPECT_EQ(script_->reads, 0);
    EXPECT_EQ(stats().replay_position, at(50)) << "the started query's answer was not taken";

    // The connection is free again: the next wait starts its own query, and it covers it.
    script_->status = replay_status::replaying(at(100));
    std::shared_ptr<outcome> next;
    asio::post(io_, [&] { next = wait(at(100)); });
    advance(tracker_options{}.poll_floor);
    EXPECT_TRUE(next->replayed());
    EXPECT_EQ(script_->starts, 2);
    EXPECT_EQ(script_->reads, 0);
}

TEST_F(LsnTracker, TheFloorRunsFromThePollsStartSoASlowAnswerAddsNothing) {
    script_->hold = true;
    start();
    auto w100 = wait(at(100));
    auto w200 = wait(at(200));
    settle();  // the first poll leaves at t0
    ASSERT_EQ(script_->reads, 1);
    advance(150us);  // the replica is slow to answer
    script_->status = replay_status::replaying(at(100));
    script_->hold = false;
    script_->release();
    settle();
    EXPECT_TRUE(w100->replayed());
    EXPECT_FALSE(w200->done());
    script_->status = replay_status::replaying(at(200));
    advance(49us);  // t0 + 199 us: the floor (200 us) has not passed since the first poll started
    EXPECT_EQ(script_->reads, 1);
    advance(1us);  // t0 + 200 us, 50 us after the answer
    EXPECT_EQ(script_->reads, 2);
    EXPECT_TRUE(w200->replayed());
}

TEST_F(LsnTracker, PartialProgressResumesOnlyCoveredWaiters) {
    start();
    script_->status = replay_status::replaying(at(150));
    auto w100 = wait(at(100));
    auto w150 = wait(at(150));
    auto w200 = wait(at(200));
    settle();
    EXPECT_TRUE(w100->replayed());
    EXPECT_TRUE(w150->replayed());
    EXPECT_FALSE(w200->done());
    script_->status = replay_status::replaying(at(200));
    advance(tracker_options{}.poll_floor);
    EXPECT_TRUE(w200->replayed());
}

TEST_F(LsnTracker, WaiterRegisteredDuringAPollIsNotMissed) {
    script_->hold = true;
    start();
    auto early = wait(at(100));
    settle();  // the poll is in flight now
    ASSERT_EQ(script_->reads, 1);
    auto late = wait(at(200));  // registered while the poll runs; its answer will not cover it
    script_->status = replay_status::replaying(at(150));
    script_->release();
    settle();
    EXPECT_TRUE(early->replayed());
    EXPECT_FALSE(late->done());

    script_->hold = false;
    script_->status = replay_status::replaying(at(200));
    advance(tracker_options{}.poll_floor);
    EXPECT_TRUE(late->replayed());
    EXPECT_EQ(script_->reads, 2);
    EXPECT_EQ(stats().timeouts, 0u);
}

TEST_F(LsnTracker, WaiterRegisteredDuringAPollIsCoveredByItsAnswer) {
    script_->hold = true;
    start();
    auto early = wait(at(100));
    settle();
    auto late = wait(at(200));
    script_->status = replay_status::replaying(at(250));
    script_->release();
    settle();
    EXPECT_TRUE(early->replayed());
    EXPECT_TRUE(late->replayed());
    EXPECT_EQ(script_->reads, 1);
}

TEST_F(LsnTracker, TimesOutWithCommittedNotReplicatedCarryingTheLsn) {
    start();
    const lsn target = lsn::parse("0/17BB660");
    script_->status = replay_status::replaying(lsn::parse("0/17BB000"));
    auto w = wait(target);
    advance_in_steps(4990ms, 10ms);
    EXPECT_FALSE(w->done());
    advance_in_steps(10ms, 1ms);
    ASSERT_TRUE(w->done());
    EXPECT_EQ(code_of(w->error), flypg::errc::committed_not_replicated);
    try {
        std::rethrow_exception(w->error);
    } catch (const replication::replication_timeout_error& e) {
        EXPECT_EQ(e.target(), target);
        EXPECT_EQ(e.replay_position(), lsn::parse("0/17BB000"));
        EXPECT_EQ(e.timeout(), 5s);
        EXPECT_NE(std::string(e.what()).find("0/17BB660"), std::string::npos) << e.what();
        EXPECT_NE(e.diag().library_message.find("0/17BB000"), std::string::npos);
        // Durations read as people write them (it said "within 5e+03 ms").
        EXPECT_NE(std::string(e.what()).find("within 5000 ms"), std::string::npos) << e.what();
    }
    EXPECT_EQ(stats().timeouts, 1u);
    EXPECT_EQ(stats().waiters, 0u);

    // No late wake-up once the replica catches up.
    script_->status = replay_status::replaying(target);
    auto other = wait(target);
    advance_in_steps(10ms, 1ms);
    EXPECT_TRUE(other->replayed());
    EXPECT_EQ(w->calls, 1);
}

TEST_F(LsnTracker, ShorterPerWaitTimeoutWakesTheExpiryEarly) {
    start();
    auto long_wait = wait(at(100));         // default 5 s, the expiry loop sleeps until then
    auto short_wait = wait(at(100), 30ms);  // must not wait for the 5 s wake-up
    advance_in_steps(30ms, 1ms);
    ASSERT_TRUE(short_wait->done());
    EXPECT_EQ(code_of(short_wait->error), flypg::errc::committed_not_replicated);
    EXPECT_FALSE(long_wait->done());
}

TEST_F(LsnTracker, CancellationRemovesTheWaiterAtOnceAndNeverWakesItLater) {
    start();
    asio::cancellation_signal cancel;
    auto w = wait(at(100), cancel.slot());
    settle();
    EXPECT_EQ(stats().waiters, 1u);
    cancel.emit(asio::cancellation_type::terminal);
    EXPECT_FALSE(w->done()) << "completed inline from emit()";
    EXPECT_EQ(stats().waiters, 0u);
    settle();
    ASSERT_TRUE(w->done());
    EXPECT_EQ(code_of(w->error), flypg::errc::cancelled);
    EXPECT_EQ(stats().cancellations, 1u);

    script_->status = replay_status::replaying(at(100));
    auto other = wait(at(100));
    advance_in_steps(10ms, 1ms);
    EXPECT_TRUE(other->replayed());
    EXPECT_EQ(w->calls, 1);
    cancel.emit(asio::cancellation_type::terminal);  // the slot was cleared: nothing happens
    settle();
    EXPECT_EQ(w->calls, 1);
}

TEST_F(LsnTracker, EveryCancellationTypeCancels) {
    start();
    for (auto type : {asio::cancellation_type::terminal,
                      asio::cancellation_type::partial,
                      asio::cancellation_type::total}) {
        asio::cancellation_signal cancel;
        auto w = wait(at(100), cancel.slot());
        settle();
        cancel.emit(type);
        settle();
        ASSERT_TRUE(w->done());
        EXPECT_EQ(code_of(w->error), flypg::errc::cancelled);
    }
    EXPECT_EQ(stats().waiters, 0u);
}

TEST_F(LsnTracker, CancelledThroughTheAwaitingCoroutine) {
    start();
    bool lost_race = false;
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
            using namespace asio::experimental::awaitable_operators;
            manual_timer give_up(io_, 20ms);
            auto winner = co_await (async_wait(at(100), std::nullopt, asio::use_awaitable) ||
                                    give_up.async_wait(asio::use_awaitable));
            lost_race = winner.index() == 1;
        },
        asio::detached);
    settle();
    EXPECT_EQ(stats().waiters, 1u);
    advance_in_steps(20ms, 1ms);
    EXPECT_TRUE(lost_race);
    EXPECT_EQ(stats().waiters, 0u);
    EXPECT_EQ(stats().cancellations, 1u);
}

TEST_F(LsnTracker, TimeoutReachesAnAwaitingCoroutineAsItsOwnExceptionType) {
    start();
    std::optional<lsn> reported;
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
            try {
                co_await async_wait(at(7), 10ms, asio::use_awaitable);
            } catch (const replication::replication_timeout_error& e) {
                reported = e.target();
            }
        },
        asio::detached);
    settle();
    advance_in_steps(10ms, 1ms);
    EXPECT_EQ(reported, at(7));
}

TEST_F(LsnTracker, CompletesEveryWaiterWhenTheReplicaIsNotReplicating) {
    script_->hold = true;
    start();
    auto a = wait(at(100));
    auto b = wait(at(200));
    settle();
    script_->status = replay_status::not_replicating();
    script_->release();
    settle();
    for (const auto& w : {a, b}) {
        ASSERT_TRUE(w->done());
        EXPECT_FALSE(w->error);
        EXPECT_EQ(w->result.status, wait_status::not_replicating);
    }
    // Later waits are answered at once, without a query.
    auto c = wait(at(300));
    settle();
    ASSERT_TRUE(c->done());
    EXPECT_EQ(c->result.status, wait_status::not_replicating);
    EXPECT_EQ(script_->reads, 1);
    EXPECT_EQ(stats().not_replicating_polls, 1u);
    EXPECT_EQ(stats().not_replicating, 3u);
    EXPECT_FALSE(stats().replay_position.has_value());
}

// A promoted replica can be rebuilt or restarted as a standby: the cached "not a standby" answer
// lasts not_replicating_recheck, then a wait asks the database again.
TEST_F(LsnTracker, AskAgainWhetherTheReplicaReplicatesOnceTheRecheckIntervalPassed) {
    start();
    script_->status = replay_status::not_replicating();
    auto first = wait(at(100));
    settle();
    ASSERT_TRUE(first->done());
    EXPECT_EQ(first->result.status, wait_status::not_replicating);
    const int reads_when_split = script_->reads;

    advance(tracker_options{}.not_replicating_recheck - 1ms);
    auto cached = wait(at(200));
    settle();
    ASSERT_TRUE(cached->done());
    EXPECT_EQ(cached->result.status, wait_status::not_replicating);
    EXPECT_EQ(script_->reads, reads_when_split) << "answered from the cache, without a query";

    // It follows the primary again.
    script_->status = replay_status::replaying(at(500));
    advance(1ms);
    auto after = wait(at(300));
    settle();
    ASSERT_TRUE(after->done());
    EXPECT_EQ(after->result.status, wait_status::replayed);
    EXPECT_EQ(script_->reads, reads_when_split + 1);
}

TEST_F(LsnTracker, ReconnectsWithBackoffWhileWaitersKeepTheirDeadlines) {
    start();
    ASSERT_EQ(script_->reconnects, 1);
    script_->fail_reads = 1;
    script_->fail_reconnects = 3;
    auto w = wait(at(100), 1s);
    settle();
    EXPECT_EQ(script_->reads, 1);       // failed
    EXPECT_EQ(script_->reconnects, 2);  // at once: failed, backoff 50 ms
    advance(49ms);
    EXPECT_EQ(script_->reconnects, 2);
    advance(1ms);
    EXPECT_EQ(script_->reconnects, 3);  // failed, backoff 100 ms
    advance(100ms);
    EXPECT_EQ(script_->reconnects, 4);  // failed, backoff 200 ms
    advance(200ms);
    EXPECT_EQ(script_->reconnects, 5);  // succeeded, polls at once
    EXPECT_EQ(script_->reads, 2);
    EXPECT_TRUE(stats().connected);
    EXPECT_FALSE(w->done());
    advance_in_steps(650ms, 10ms);  // 1 s after the wait started
    ASSERT_TRUE(w->done());
    EXPECT_EQ(code_of(w->error), flypg::errc::committed_not_replicated);
    EXPECT_EQ(stats().source_failures, 4u);

    script_->status = replay_status::replaying(at(100));
    auto after = wait(at(100));
    settle();
    EXPECT_TRUE(after->replayed());
}

TEST_F(LsnTracker, TellsOnceWhenItsConnectionFailsAndOnceWhenItWorksAgain) {
    std::vector<std::string> events;
    tracker_options options;
    options.on_connection_change = [&events](bool up, std::string_view detail) {
        events.push_back(up ? std::string("up") : "down: " + std::string(detail));
    };
    start(options);
    script_->status = replay_status::replaying(at(100));
    script_->fail_reads = 1;
    script_->fail_reconnects = 2;
    auto w = wait(at(100), 1s);
    settle();
    advance(50ms);   // the second reconnect fails too
    advance(100ms);  // the third works, and the poll answers
    ASSERT_TRUE(w->replayed());
    EXPECT_EQ(events, (std::vector<std::string>{"down: fake: connection lost", "up"}));
}

TEST_F(LsnTracker, DeadlinesHoldWhileTheSourceCannotReconnect) {
    start();
    script_->fail_reads = 1;
    script_->fail_reconnects = 1000;
    auto w = wait(at(100), 300ms);
    advance_in_steps(300ms, 1ms);
    ASSERT_TRUE(w->done());
    EXPECT_EQ(code_of(w->error), flypg::errc::committed_not_replicated);
    EXPECT_FALSE(stats().connected);
}

TEST_F(LsnTracker, AFailureForgetsTheCachedPosition) {
    start();
    script_->status = replay_status::replaying(at(200));
    auto first = wait(at(100));
    settle();
    ASSERT_TRUE(first->replayed());

    script_->fail_reads = 1;
    script_->fail_reconnects = 1;
    auto beyond = wait(at(300));  // polls, fails; the reconnect fails too: 50 ms backoff
    settle();
    EXPECT_FALSE(stats().replay_position.has_value());
    auto below_old_cache = wait(at(150));  // the old connection's 200 proves nothing now
    settle();
    EXPECT_FALSE(below_old_cache->done());

    advance(50ms);  // reconnected, polled: 200 again
    EXPECT_TRUE(below_old_cache->replayed());
    EXPECT_FALSE(beyond->done());
    EXPECT_EQ(stats().cached, 0u);
}

TEST_F(LsnTracker, BacksOffWhileTheReplayPositionStandsStillAndSnapsBack) {
    tracker_options options;
    options.poll_floor = 200us;
    options.poll_ceiling = 50ms;
    options.backoff_factor = 2.0;
    options.backoff_after_polls = 2;
    start(options);
    auto w = wait(at(100), 10s);
    advance_in_steps(1s, 100us);
    const int first_second = script_->reads;
    EXPECT_GE(first_second, 15);
    EXPECT_LE(first_second, 40) << "a stalled replica is polled at the floor rate";
    advance_in_steps(500ms, 100us);
    EXPECT_NEAR(script_->reads - first_second, 10, 1) << "one poll per ceiling interval";

    script_->status = replay_status::replaying(at(50));  // moves, still short of the target
    const int before_move = script_->reads;
    while (script_->reads == before_move) advance(100us);  // the poll that sees the move
    advance_in_steps(1ms, 100us);
    // At the floor again: polls 0.2, 0.4 and 0.6 ms later; the first two see no progress and
    // keep the floor (backoff_after_polls), the third doubles it: next poll at 1.0 ms.
    EXPECT_EQ(script_->reads - before_move, 1 + 4) << "back to the floor once the replica moves";
    EXPECT_FALSE(w->done());
}

TEST_F(LsnTracker, NewHigherTargetCutsTheBackoffShort) {
    start();
    auto stalled = wait(at(100), 10s);
    advance_in_steps(2s, 1ms);  // backed off to the 50 ms ceiling
    const int before = script_->reads;
    advance(1ms);
    auto fresh = wait(at(200), 10s);
    advance(tracker_options{}.poll_floor);
    EXPECT_EQ(script_->reads, before + 1);
    EXPECT_FALSE(fresh->done());
}

TEST_F(LsnTracker, LongPollAsksTheServerToWaitForTheLowestTarget) {
    tracker_options options;
    options.strategy = replication::poll_strategy::long_poll;
    script_->hold = true;
    start(options);
    auto w100 = wait(at(100));
    settle();
    auto w300 = wait(at(300));
    auto w200 = wait(at(200));
    script_->status = replay_status::replaying(at(200));
    script_->release();
    settle();  // progressed: the next call goes out at once
    EXPECT_TRUE(w100->replayed());
    EXPECT_TRUE(w200->replayed());
    EXPECT_FALSE(w300->done());
    ASSERT_EQ(script_->wait_pasts, 2);
    EXPECT_EQ(script_->wait_past_targets, (std::vector<lsn>{at(100), at(300)}));
    EXPECT_EQ(script_->reads, 0);
    script_->status = replay_status::replaying(at(300));
    script_->release();
    settle();
    EXPECT_TRUE(w300->replayed());
}

TEST_F(LsnTracker, HungQueryIsCancelledAfterTheQueryTimeoutAndTheSourceReconnects) {
    script_->hold = true;
    start();
    auto w = wait(at(100), 10s);
    settle();
    ASSERT_EQ(script_->in_flight, 1);
    script_->hold = false;  // the next query answers; this one hangs
    script_->status = replay_status::replaying(at(100));
    advance(tracker_options{}.query_timeout - 1ms);
    EXPECT_FALSE(w->done());
    advance(1ms);
    EXPECT_EQ(script_->cancelled_queries, 1);
    EXPECT_EQ(script_->in_flight, 0);
    EXPECT_EQ(script_->reconnects, 2);
    EXPECT_TRUE(w->replayed());
    EXPECT_EQ(stats().source_failures, 1u);
}

TEST_F(LsnTracker, RunReturnsOnCancellationAndFailsPendingWaits) {
    start();
    auto pending = wait(at(100));
    settle();
    stop_.emit(asio::cancellation_type::terminal);
    settle();
    EXPECT_TRUE(run_done_);
    EXPECT_FALSE(run_error_);
    ASSERT_TRUE(pending->done());
    EXPECT_EQ(code_of(pending->error), flypg::errc::cancelled);

    auto after_stop = wait(at(100));
    settle();
    ASSERT_TRUE(after_stop->done());
    EXPECT_EQ(code_of(after_stop->error), flypg::errc::cancelled);
    EXPECT_EQ(stats().aborted, 2u);

    // It can be run again.
    script_->status = replay_status::replaying(at(100));
    spawn_run();
    settle();
    auto again = wait(at(100));
    settle();
    EXPECT_TRUE(again->replayed());
}

TEST_F(LsnTracker, RunStopsOnTotalCancellationEvenWhilePolling) {
    script_->hold = true;
    start();
    auto pending = wait(at(100));
    settle();
    ASSERT_EQ(script_->in_flight, 1);
    stop_.emit(asio::cancellation_type::total);
    settle();
    EXPECT_TRUE(run_done_);
    EXPECT_FALSE(run_error_);
    EXPECT_EQ(script_->in_flight, 0);
    EXPECT_TRUE(pending->done());
}

TEST_F(LsnTracker, SecondConcurrentRunIsRejected) {
    start();
    std::exception_ptr second;
    asio::co_spawn(io_, core_->run(), [&](std::exception_ptr e) { second = e; });
    settle();
    EXPECT_EQ(code_of(second), flypg::errc::invalid_argument);
    EXPECT_FALSE(run_done_);
}

TEST_F(LsnTracker, ShutdownFailsPendingWaitsAndEndsRun) {
    start();
    auto pending = wait(at(100));
    settle();
    core_->shutdown();
    settle();
    ASSERT_TRUE(pending->done());
    EXPECT_EQ(code_of(pending->error), flypg::errc::cancelled);
    EXPECT_TRUE(run_done_);
    EXPECT_FALSE(run_error_);
    auto late = wait(at(1));
    settle();
    EXPECT_EQ(code_of(late->error), flypg::errc::cancelled);
}

TEST_F(LsnTracker, WaitsRegisteredBeforeRunStartsAreKept) {
    create();
    script_->status = replay_status::replaying(at(100));
    auto early = wait(at(100));
    settle();
    EXPECT_FALSE(early->done());
    spawn_run();
    settle();
    EXPECT_TRUE(early->replayed());
}

TEST_F(LsnTracker, ResumesThroughTheWaitersOwnExecutorNeverInline) {
    start();
    asio::io_context other;
    bool ran_on_other = false;
    bool ran_on_tracker = true;
    int calls = 0;
    async_wait(at(100),
               std::nullopt,
               asio::bind_executor(other.get_executor(), [&](std::exception_ptr e, lsn_wait_result) {
                   ++calls;
                   EXPECT_FALSE(e);
                   ran_on_other = other.get_executor().running_in_this_thread();
                   ran_on_tracker = io_.get_executor().running_in_this_thread();
               }));
    script_->status = replay_status::replaying(at(100));
    settle();
    EXPECT_EQ(calls, 0) << "must wait for its own executor";
    other.poll();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(ran_on_other);
    EXPECT_FALSE(ran_on_tracker);
}

TEST_F(LsnTracker, OnePollResumesWaitersOfEachExecutorInLsnOrderWithOneHandlerPerExecutor) {
    script_->hold = true;
    start();
    auto first = wait(at(1));  // starts a poll, held in flight
    settle();
    asio::io_context other;
    std::vector<std::uint64_t> here_order;
    std::vector<std::uint64_t> other_order;
    // Interleaved executors and descending targets: each executor must see its own waits in
    // LSN order.
    for (std::uint64_t target = 200; target >= 101; --target) {
        auto record = [target](std::vector<std::uint64_t>& into) {
            return [&into, target](std::exception_ptr e, lsn_wait_result r) {
                EXPECT_FALSE(e);
                EXPECT_EQ(r.status, wait_status::replayed);
                into.push_back(target);
            };
        };
        if (target % 2 == 0) {
            async_wait(at(target), std::nullopt, record(here_order));
        } else {
            async_wait(
                at(target), std::nullopt, asio::bind_executor(other.get_executor(), record(other_order)));
        }
    }
    script_->status = replay_status::replaying(at(1000));
    script_->release();
    settle();
    ASSERT_TRUE(first->replayed());
    ASSERT_EQ(here_order.size(), 50u);
    EXPECT_TRUE(std::is_sorted(here_order.begin(), here_order.end()));
    EXPECT_TRUE(other_order.empty()) << "completed on the tracker's executor";
    EXPECT_EQ(other.poll(), 1u) << "fifty waits of one executor, one posted handler";
    ASSERT_EQ(other_order.size(), 50u);
    EXPECT_TRUE(std::is_sorted(other_order.begin(), other_order.end()));
}

TEST_F(LsnTracker, AHandlerThatThrowsLosesNoneOfTheWaitsResumedAfterIt) {
    script_->hold = true;
    start();
    auto first = wait(at(1));
    settle();
    asio::io_context other;
    std::vector<int> resumed;
    for (int i = 0; i < 5; ++i) {
        async_wait(
            at(static_cast<std::uint64_t>(10 + i)),
            std::nullopt,
            asio::bind_executor(other.get_executor(), [&resumed, i](std::exception_ptr, lsn_wait_result) {
                resumed.push_back(i);
                if (i == 1) throw std::runtime_error("handler failure");
            }));
    }
    script_->status = replay_status::replaying(at(100));
    script_->release();
    settle();
    EXPECT_THROW(other.run(), std::runtime_error);
    EXPECT_EQ(resumed, (std::vector<int>{0, 1}));
    other.restart();
    other.run();
    EXPECT_EQ(resumed, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST_F(LsnTracker, WaitsOfAnExecutorDestroyedBeforeItRanThemAreFreed) {
    // Checked by LeakSanitizer (scripts/test --asan): the batch frees what it never completed.
    script_->hold = true;
    start();
    auto first = wait(at(1));
    settle();
    int calls = 0;
    {
        asio::io_context other;
        for (std::uint64_t target = 10; target < 20; ++target) {
            async_wait(at(target),
                       std::nullopt,
                       asio::bind_executor(other.get_executor(),
                                           [&calls](std::exception_ptr, lsn_wait_result) { ++calls; }));
        }
        script_->status = replay_status::replaying(at(100));
        script_->release();
        settle();
        EXPECT_EQ(stats().waiters, 0u);
    }
    EXPECT_EQ(calls, 0);
}

TEST_F(LsnTracker, PendingWaitKeepsItsExecutorsIoContextRunning) {
    start();
    asio::io_context other;
    async_wait(at(100),
               std::nullopt,
               asio::bind_executor(other.get_executor(), [](std::exception_ptr, lsn_wait_result) {}));
    EXPECT_EQ(other.poll(), 0u);
    EXPECT_FALSE(other.stopped()) << "outstanding work is tracked while the wait is pending";
    script_->status = replay_status::replaying(at(100));
    settle();
    EXPECT_EQ(other.poll(), 1u);
    EXPECT_TRUE(other.stopped());
}

TEST_F(LsnTracker, StatsRecordWaitsPollsAndLatency) {
    start();
    auto w = wait(at(100));
    advance_in_steps(3ms, 100us);
    script_->status = replay_status::replaying(at(100));
    advance_in_steps(3ms, 100us);
    ASSERT_TRUE(w->replayed());
    auto s = stats();
    EXPECT_EQ(s.waits, 1u);
    EXPECT_EQ(s.replayed, 1u);
    EXPECT_EQ(s.polls, static_cast<std::uint64_t>(script_->reads));
    EXPECT_EQ(s.replay_position, at(100));
    EXPECT_EQ(s.wait_latency.count, 1u);
    EXPECT_GE(s.wait_latency.sum, 3ms);
    EXPECT_LE(s.wait_latency.sum, 6ms);
    // 3 to 6 ms lands in the (2048 us, 4096 us] or (4096 us, 8192 us] bucket.
    EXPECT_EQ(s.wait_latency.buckets[12] + s.wait_latency.buckets[13], 1u);
    EXPECT_EQ(s.peak_waiters, 1u);
    EXPECT_EQ(s.reconnects, 1u);
    EXPECT_TRUE(s.connected);
}

TEST(WaitInitiation, RegistryFailureFailsTheInitiationWithoutLeakingTheWait) {
    struct failing_registry final : replication::detail::waiter_registry {
        void add(replication::detail::waiter&, std::optional<std::chrono::nanoseconds>) override {
            throw std::bad_alloc();
        }
        void cancel(replication::detail::waiter&) noexcept override {}
    };
    asio::io_context io;
    asio::cancellation_signal cancel;
    bool called = false;
    auto handler = asio::bind_cancellation_slot(cancel.slot(),
                                                [&](std::exception_ptr, lsn_wait_result) { called = true; });
    EXPECT_THROW(
        (asio::async_initiate<decltype(handler), replication::detail::wait_signature>(
            replication::detail::initiate_wait(std::make_shared<failing_registry>(), io.get_executor()),
            handler,
            at(1),
            std::nullopt)),
        std::bad_alloc);
    EXPECT_FALSE(cancel.slot().has_handler()) << "the slot still points at the freed wait";
    io.poll();
    EXPECT_FALSE(called);
}

TEST(LatencyHistogram, BucketsArePowersOfTwoMicroseconds) {
    using replication::latency_histogram;
    EXPECT_EQ(latency_histogram::bucket_of(0ns), 0u);
    EXPECT_EQ(latency_histogram::bucket_of(1us), 0u);
    EXPECT_EQ(latency_histogram::bucket_of(1001ns), 1u);
    EXPECT_EQ(latency_histogram::bucket_of(2us), 1u);
    EXPECT_EQ(latency_histogram::bucket_of(3us), 2u);
    EXPECT_EQ(latency_histogram::bucket_of(1024us), 10u);
    EXPECT_EQ(latency_histogram::bucket_of(1025us), 11u);
    EXPECT_EQ(latency_histogram::bucket_of(1h), latency_histogram::bucket_count - 1);
    EXPECT_DOUBLE_EQ(latency_histogram::upper_bound_seconds(10), 1024e-6);
    EXPECT_TRUE(std::isinf(latency_histogram::upper_bound_seconds(latency_histogram::bucket_count - 1)));
}

TEST(TrackerOptions, InvalidOptionsAreRejectedByName) {
    asio::io_context io;
    auto script = std::make_shared<source_script>(io.get_executor());
    auto expect_rejected = [&](tracker_options options, const std::string& field) {
        try {
            replication::tracker t(io.get_executor(), std::make_unique<fake_source>(script), options);
            ADD_FAILURE() << "accepted invalid " << field;
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
            EXPECT_NE(e.diag().library_message.find(field), std::string::npos) << e.diag().library_message;
        }
    };
    expect_rejected({.poll_floor = 0us}, "poll_floor");
    expect_rejected({.poll_floor = 2ms, .poll_ceiling = 1ms}, "poll_ceiling");
    expect_rejected({.backoff_factor = 0.5}, "backoff_factor");
    expect_rejected({.replication_timeout = -1ms}, "replication_timeout");
    expect_rejected({.query_timeout = 0ms}, "query_timeout");
    expect_rejected({.reconnect_backoff_min = 10ms, .reconnect_backoff_max = 5ms}, "reconnect_backoff_max");
    try {
        replication::tracker t(io.get_executor(), nullptr);
        ADD_FAILURE() << "accepted a null source";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
    }
}

// The public tracker on a real clock: coroutines with the default token, and threads with
// use_future, all against one tracker running on its own thread.
TEST(Tracker, ServesCoroutinesAndOtherThreads) {
    asio::io_context io;
    auto script = std::make_shared<source_script>(io.get_executor());
    script->status = replay_status::replaying(at(1'000'000));
    replication::tracker tracker(io.get_executor(), std::make_unique<fake_source>(script));
    asio::cancellation_signal stop;
    asio::co_spawn(io, tracker.run(), asio::bind_cancellation_slot(stop.slot(), asio::detached));

    int coroutine_waits = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            for (std::uint64_t i = 1; i <= 100; ++i) {
                auto result = co_await tracker.wait_for(at(i * 1000));
                if (result.status == wait_status::replayed) ++coroutine_waits;
            }
        },
        asio::detached);

    std::thread runner([&] { io.run(); });
    std::vector<std::thread> clients;
    std::atomic<int> thread_waits{0};
    for (int t = 0; t < 4; ++t) {
        clients.emplace_back([&, t] {
            for (std::uint64_t i = 0; i < 250; ++i) {
                auto done =
                    tracker.wait_for(at(static_cast<std::uint64_t>(t) * 250 + i), 10s, asio::use_future);
                if (done.get().status == wait_status::replayed) ++thread_waits;
            }
        });
    }
    for (auto& client : clients) client.join();
    asio::post(io, [&] { stop.emit(asio::cancellation_type::terminal); });
    runner.join();
    EXPECT_EQ(coroutine_waits, 100);
    EXPECT_EQ(thread_waits.load(), 1000);
    const auto s = tracker.stats();
    EXPECT_EQ(s.waits, 1100u);
    EXPECT_EQ(s.replayed, 1100u);
    EXPECT_GE(s.polls, 1u);
    EXPECT_EQ(s.waiters, 0u);
}

}  // namespace
