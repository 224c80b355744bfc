#include "replication/waiter_heap.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "replication/poll_interval.hpp"

namespace {

using flypg::lsn;
using flypg::replication::detail::deadline_heap;
using flypg::replication::detail::poll_interval;
using flypg::replication::detail::target_heap;
using flypg::replication::detail::waiter;
using namespace std::chrono_literals;

struct test_waiter final : waiter {
    test_waiter(std::uint64_t target_value, std::uint64_t seq) {
        target = lsn::from_value(target_value);
        sequence = seq;
        deadline = std::chrono::nanoseconds(static_cast<std::int64_t>(1000 - target_value));
    }
    void complete(std::exception_ptr, flypg::replication::lsn_wait_result) override {}
    asio::any_io_executor completion_executor() const override { return {}; }
    void complete_here(std::exception_ptr, flypg::replication::lsn_wait_result) override {}
    void discard() noexcept override {}
};

std::vector<std::unique_ptr<test_waiter>> make_waiters(const std::vector<std::uint64_t>& targets) {
    std::vector<std::unique_ptr<test_waiter>> out;
    for (std::size_t i = 0; i < targets.size(); ++i)
        out.push_back(std::make_unique<test_waiter>(targets[i], i));
    return out;
}

TEST(WaiterHeap, PopsInLsnOrderAndFifoAmongEqualLsns) {
    auto waiters = make_waiters({30, 10, 20, 10, 30, 10});
    target_heap heap;
    for (auto& w : waiters) heap.push(w.get());
    ASSERT_TRUE(heap.valid());
    std::vector<std::pair<std::uint64_t, std::uint64_t>> popped;
    while (!heap.empty()) {
        waiter* w = heap.pop();
        EXPECT_EQ(w->lsn_slot, waiter::no_slot);
        popped.emplace_back(w->target.value(), w->sequence);
        EXPECT_TRUE(heap.valid());
    }
    const std::vector<std::pair<std::uint64_t, std::uint64_t>> expected{
        {10, 1}, {10, 3}, {10, 5}, {20, 2}, {30, 0}, {30, 4}};
    EXPECT_EQ(popped, expected);
}

TEST(WaiterHeap, TakesEverythingSortedInLsnOrderAndFifoAmongEqualLsns) {
    auto waiters = make_waiters({30, 10, 20, 10, 30, 10});
    target_heap heap;
    for (auto& w : waiters) heap.push(w.get());
    std::vector<waiter*> taken{nullptr};  // appends after what is already there
    heap.take_all_sorted(taken);
    EXPECT_TRUE(heap.empty());
    ASSERT_EQ(taken.size(), 7u);
    EXPECT_EQ(taken.front(), nullptr);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> order;
    for (std::size_t i = 1; i < taken.size(); ++i) {
        EXPECT_EQ(taken[i]->lsn_slot, waiter::no_slot);
        order.emplace_back(taken[i]->target.value(), taken[i]->sequence);
    }
    const std::vector<std::pair<std::uint64_t, std::uint64_t>> expected{
        {10, 1}, {10, 3}, {10, 5}, {20, 2}, {30, 0}, {30, 4}};
    EXPECT_EQ(order, expected);
    heap.push(waiters[0].get());  // still usable afterwards
    EXPECT_TRUE(heap.valid());
    EXPECT_EQ(heap.pop(), waiters[0].get());
}

TEST(WaiterHeap, ErasesAnyElementAndKeepsSlotsConsistent) {
    auto waiters = make_waiters({5, 3, 8, 1, 9, 2, 7, 3, 6, 4});
    target_heap heap;
    for (auto& w : waiters) heap.push(w.get());
    heap.erase(waiters[3].get());  // the least
    heap.erase(waiters[4].get());  // the greatest
    heap.erase(waiters[7].get());  // a duplicate LSN
    EXPECT_TRUE(heap.valid());
    EXPECT_FALSE(heap.contains(waiters[3].get()));
    EXPECT_TRUE(heap.contains(waiters[1].get()));
    EXPECT_EQ(heap.size(), 7u);
    std::vector<std::uint64_t> order;
    while (!heap.empty()) order.push_back(heap.pop()->target.value());
    EXPECT_EQ(order, (std::vector<std::uint64_t>{2, 3, 4, 5, 6, 7, 8}));
}

TEST(WaiterHeap, OneWaiterSitsInBothHeapsIndependently) {
    auto waiters = make_waiters({1, 2, 3});
    target_heap by_target;
    deadline_heap by_deadline;
    for (auto& w : waiters) {
        by_target.push(w.get());
        by_deadline.push(w.get());
    }
    EXPECT_EQ(by_target.top(), waiters[0].get());
    EXPECT_EQ(by_deadline.top(), waiters[2].get());  // deadline = 1000 - target
    by_deadline.erase(waiters[0].get());
    EXPECT_TRUE(by_target.contains(waiters[0].get()));
    EXPECT_TRUE(by_target.valid());
    EXPECT_TRUE(by_deadline.valid());
}

TEST(WaiterHeap, MatchesAnOrderedSetUnderRandomPushPopErase) {
    std::mt19937_64 random(42);
    std::vector<std::unique_ptr<test_waiter>> owned;
    std::set<std::pair<std::uint64_t, std::uint64_t>> reference;
    std::vector<test_waiter*> inside;
    target_heap heap;
    for (int step = 0; step < 20'000; ++step) {
        const auto action = random() % 3;
        if (action == 0 || inside.empty()) {
            owned.push_back(std::make_unique<test_waiter>(random() % 50, owned.size()));
            heap.push(owned.back().get());
            inside.push_back(owned.back().get());
            reference.emplace(owned.back()->target.value(), owned.back()->sequence);
        } else if (action == 1) {
            waiter* w = heap.pop();
            ASSERT_EQ(std::make_pair(w->target.value(), w->sequence), *reference.begin());
            reference.erase(reference.begin());
            std::erase(inside, w);
        } else {
            const std::size_t pick = random() % inside.size();
            test_waiter* w = inside[pick];
            heap.erase(w);
            reference.erase({w->target.value(), w->sequence});
            inside.erase(inside.begin() + static_cast<std::ptrdiff_t>(pick));
        }
        ASSERT_EQ(heap.size(), reference.size());
        if (step % 1000 == 0) {
            ASSERT_TRUE(heap.valid());
        }
    }
    EXPECT_TRUE(heap.valid());
}

TEST(PollInterval, StaysAtFloorForPatiencePollsThenBacksOffGeometrically) {
    poll_interval interval(200us, 50ms, 2.0, 2);
    EXPECT_EQ(interval.current(), 200us);
    interval.on_poll(false);
    interval.on_poll(false);
    EXPECT_EQ(interval.current(), 200us);
    interval.on_poll(false);
    EXPECT_EQ(interval.current(), 400us);
    interval.on_poll(false);
    EXPECT_EQ(interval.current(), 800us);
}

TEST(PollInterval, IsCappedAtTheCeiling) {
    poll_interval interval(200us, 50ms, 2.0, 0);
    for (int i = 0; i < 100; ++i) interval.on_poll(false);
    EXPECT_EQ(interval.current(), 50ms);
}

TEST(PollInterval, SnapsBackToTheFloorWhenTheReplicaMoves) {
    poll_interval interval(1ms, 50ms, 3.0, 0);
    for (int i = 0; i < 5; ++i) interval.on_poll(false);
    EXPECT_GT(interval.current(), 1ms);
    interval.on_poll(true);
    EXPECT_EQ(interval.current(), 1ms);
    interval.on_poll(false);
    EXPECT_EQ(interval.current(), 3ms);
    interval.reset();
    EXPECT_EQ(interval.current(), 1ms);
}

TEST(PollInterval, FractionalFactorStillGrows) {
    poll_interval interval(100us, 1ms, 1.5, 0);
    interval.on_poll(false);
    EXPECT_EQ(interval.current(), 150us);
}

}  // namespace
