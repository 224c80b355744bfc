// The KJ guest loop on an io_context and the two bridges between KJ promises and Asio coroutines.
// No sockets, no sleeps: everything is driven by posted handlers and already-expired timers.
#include <kj/async.h>

#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "flypg/error.hpp"
#include "rpc/kj_bridge.hpp"
#include "rpc/kj_runtime.hpp"
#include "support/test_support.hpp"

namespace flypg::rpc::detail {
namespace {

using namespace std::chrono_literals;

// Counts KJ turns: a chain of `remaining` evalLater steps.
kj::Promise<int> count_down(int remaining, int& turns) {
    ++turns;
    if (remaining == 0) return 0;
    return kj::evalLater([remaining, &turns] { return count_down(remaining - 1, turns); });
}

// The same, each turn taking at least `turn_time` of CPU, like a turn that resumes a coroutine
// which then does a whole call's work. (Busy, not sleeping: the point is a long handler.)
kj::Promise<int> slow_count_down(int remaining, int& turns, std::chrono::microseconds turn_time) {
    const auto until = std::chrono::steady_clock::now() + turn_time;
    while (std::chrono::steady_clock::now() < until) {
    }
    ++turns;
    if (remaining == 0) return 0;
    return kj::evalLater(
        [remaining, &turns, turn_time] { return slow_count_down(remaining - 1, turns, turn_time); });
}

// Sets a flag when KJ drops the promise it belongs to.
class drop_probe {
  public:
    drop_probe(kj::PromiseFulfiller<int>&, bool& dropped) : dropped_(dropped) {}
    ~drop_probe() { dropped_ = true; }

  private:
    bool& dropped_;
};

TEST(KjRuntime, RunsKjContinuationsFromTheIoContext) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    int turns = 0;
    int result = test::run(io, [&]() -> asio::awaitable<int> {
        auto outcome = co_await await_kj(*rt, count_down(100, turns));
        co_return outcome.value.value_or(-1);
    }());
    EXPECT_EQ(result, 0);
    EXPECT_EQ(turns, 101);
}

TEST(KjRuntime, SharedByNodesOfOneThreadAndRefusesASecondIoContext) {
    asio::io_context io;
    auto first = kj_runtime::for_current_thread(io);
    EXPECT_EQ(kj_runtime::for_current_thread(io), first);
    asio::io_context other;
    try {
        (void)kj_runtime::for_current_thread(other);
        FAIL() << "a second io_context on one thread must be refused";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
    }
}

TEST(KjRuntime, YieldsToAsioHandlersWhileKjHasWork) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    rt->set_turn_budget(16);
    int turns = 0;
    int turns_when_timer_fired = -1;
    asio::steady_timer expired(io, std::chrono::steady_clock::now());
    test::run(io, [&]() -> asio::awaitable<void> {
        // An already-expired timer must fire long before a 10,000-turn KJ chain finishes.
        expired.async_wait([&](std::error_code) { turns_when_timer_fired = turns; });
        auto outcome = co_await await_kj(*rt, count_down(10'000, turns));
        EXPECT_TRUE(outcome.ok());
    }());
    EXPECT_EQ(turns, 10'001);
    EXPECT_GE(turns_when_timer_fired, 0);
    EXPECT_LT(turns_when_timer_fired, 1'000);
}

TEST(KjRuntime, YieldsToAsioHandlersAfterItsTimeBudgetWhateverTheTurnBudget) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    rt->set_turn_budget(1'000'000);
    rt->set_time_budget(50us);
    int turns = 0;
    int turns_when_timer_fired = -1;
    asio::steady_timer expired(io, std::chrono::steady_clock::now());
    test::run(io, [&]() -> asio::awaitable<void> {
        expired.async_wait([&](std::error_code) { turns_when_timer_fired = turns; });
        auto outcome = co_await await_kj(*rt, slow_count_down(200, turns, 100us));
        EXPECT_TRUE(outcome.ok());
    }());
    EXPECT_EQ(turns, 201);
    // Every turn outlasts the time budget, so the loop yields after each one and the (already
    // expired) timer runs within a pass or two through the io_context; a turn budget alone would
    // have kept it waiting for all 200 turns.
    EXPECT_GE(turns_when_timer_fired, 0);
    EXPECT_LT(turns_when_timer_fired, 20);
}

TEST(KjRuntime, AnEventArmedAndDroppedInOneHandlerDoesNotSilenceTheLoop) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    asio::post(io, [] {
        kj_runtime::handler_scope scope;
        // Armed (KJ announces "runnable"), then dropped before any turn ran.
        auto dropped = kj::evalLater([] {}).eagerlyEvaluate(nullptr);
    });
    io.run();
    // Later, outside any handler: a new event must still be run, as for a new connection to an
    // idle node.
    bool ran = false;
    auto later = kj::evalLater([&ran] { ran = true; }).eagerlyEvaluate(nullptr);
    io.restart();
    for (int i = 0; i < 10 && !ran; ++i) io.poll();
    EXPECT_TRUE(ran) << "KJ had work that no pump ran";
}

TEST(KjBridge, ReportsARejectedPromiseAsAValue) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    auto outcome = test::run(io, [&]() -> asio::awaitable<kj_outcome<int>> {
        co_return co_await await_kj(*rt, kj::Promise<int>(KJ_EXCEPTION(FAILED, "boom")));
    }());
    ASSERT_TRUE(outcome.error.has_value());
    EXPECT_FALSE(outcome.ok());
    EXPECT_NE(std::string(outcome.error->getDescription().cStr()).find("boom"), std::string::npos);
}

TEST(KjBridge, AwaitsAVoidPromise) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    bool ok = test::run(io, [&]() -> asio::awaitable<bool> {
        auto outcome = co_await await_kj(*rt, kj::evalLater([] {}));
        co_return outcome.ok();
    }());
    EXPECT_TRUE(ok);
}

TEST(KjBridge, CancellingTheAwaitingCoroutineDropsThePromise) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    bool dropped = false;
    asio::cancellation_signal cancel;
    std::optional<kj_outcome<int>> seen;
    asio::co_spawn(
        io,
        // Everything the coroutine uses is a parameter: the lambda object dies before it runs.
        [](kj_runtime& runtime, bool& flag) -> asio::awaitable<kj_outcome<int>> {
            co_return co_await await_kj(runtime, kj::newAdaptedPromise<int, drop_probe>(flag));
        }(*rt, dropped),
        asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, kj_outcome<int> outcome) {
            EXPECT_FALSE(e);
            seen.emplace(std::move(outcome));
        }));
    io.poll();
    EXPECT_FALSE(dropped);
    cancel.emit(asio::cancellation_type::terminal);
    io.poll();
    ASSERT_TRUE(seen.has_value());
    EXPECT_TRUE(seen->cancelled);
    EXPECT_TRUE(dropped);
}

TEST(KjBridge, KjAwaitsAnAsioCoroutine) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    int result = test::run(io, [&]() -> asio::awaitable<int> {
        auto promise = to_kj(*rt, []() -> asio::awaitable<int> {
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::steady_clock::now());
            co_await t.async_wait(asio::use_awaitable);
            co_return 42;
        }());
        auto outcome = co_await await_kj(*rt, promise.then([](int v) { return v + 1; }));
        co_return outcome.value.value_or(-1);
    }());
    EXPECT_EQ(result, 43);
}

TEST(KjBridge, AnExceptionInTheCoroutineRejectsThePromise) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    auto outcome = test::run(io, [&]() -> asio::awaitable<kj_outcome<int>> {
        auto promise = to_kj(*rt, []() -> asio::awaitable<int> {
            throw std::runtime_error("procedure exploded");
            co_return 1;
        }());
        co_return co_await await_kj(*rt, std::move(promise));
    }());
    ASSERT_TRUE(outcome.error.has_value());
    EXPECT_NE(std::string(outcome.error->getDescription().cStr()).find("procedure exploded"),
              std::string::npos);
}

TEST(KjBridge, DroppingThePromiseCancelsTheCoroutine) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    bool started = false;
    std::error_code seen;
    {
        // State reaches the coroutine as parameters: the lambda object dies before it runs.
        auto promise = to_kj(*rt, [](bool& started_flag, std::error_code& result) -> asio::awaitable<int> {
            started_flag = true;
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::hours(1));
            auto [ec] = co_await t.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
            result = ec;
            co_return 0;
        }(started, seen));
        io.poll();
        EXPECT_TRUE(started);
    }
    io.restart();
    io.poll();
    EXPECT_EQ(seen, asio::error::operation_aborted);
}

// A call's coroutine can end after the node's runtime is gone (the node stopped mid-call). Its
// promise went with the runtime, so the fulfiller it still holds is freed, not leaked: the
// sanitized build's leak checker fails this test otherwise.
TEST(KjBridge, ACoroutineEndingAfterItsRuntimeIsGoneEndsCleanly) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    bool ended = false;
    {
        auto promise = to_kj(*rt, [](bool& ended_flag) -> asio::awaitable<int> {
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::hours(1));
            co_await t.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
            ended_flag = true;
            co_return 0;
        }(ended));
        io.poll();
    }
    rt.reset();
    io.restart();
    io.poll();
    EXPECT_TRUE(ended);
}

TEST(KjRuntime, AnotherThreadWakesTheLoopThroughKjExecutor) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    const kj::Executor& executor = kj::getCurrentThreadExecutor();
    std::atomic<bool> ran{false};
    auto guard = asio::make_work_guard(io);
    std::thread other([&] {
        // Blocks this thread until the io_context's thread ran the function.
        executor.executeSync([&] { ran = true; });
        asio::post(io, [&] { guard.reset(); });
    });
    io.run_for(10s);
    other.join();
    EXPECT_TRUE(ran);
}

TEST(KjRuntime, DestroyingTheRuntimeCompletesWaitersAsCancelled) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    auto paf = kj::newPromiseAndFulfiller<int>();
    std::optional<kj_outcome<int>> seen;
    // Everything the coroutine uses is a parameter: the lambda object dies before it runs.
    asio::co_spawn(
        io,
        [](kj_runtime& runtime, kj::Promise<int> p) -> asio::awaitable<kj_outcome<int>> {
            co_return co_await await_kj(runtime, std::move(p));
        }(*rt, std::move(paf.promise)),
        [&](std::exception_ptr, kj_outcome<int> outcome) { seen.emplace(std::move(outcome)); });
    io.poll();
    paf.fulfiller = nullptr;  // would reject; the runtime goes first below
    rt.reset();
    io.restart();
    io.poll();
    ASSERT_TRUE(seen.has_value());
    EXPECT_TRUE(seen->cancelled || seen->error.has_value());
}

}  // namespace
}  // namespace flypg::rpc::detail
