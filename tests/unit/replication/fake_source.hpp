// A scripted replay_source: answers with whatever status the test sets, counts its calls, and can
// hold a query in flight until the test releases it, fail, or never answer.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <vector>

#include "flypg/replication/replay_source.hpp"

namespace flypg::test {

/// What the test controls and observes; shared between the test and the source the tracker owns.
struct source_script {
    explicit source_script(asio::any_io_executor executor)
        : gate(executor, asio::steady_timer::time_point::max()) {}

    replication::replay_status status = replication::replay_status::replaying(lsn::from_value(0));
    bool hold = false;        ///< Queries wait for release() before answering.
    int fail_reads = 0;       ///< The next N queries throw.
    int fail_reconnects = 0;  ///< The next N reconnects throw.
    bool can_start = false;   ///< start_read() sends; its answer is held or fails like a read's.

    int reads = 0;
    int starts = 0;          ///< Queries sent by start_read().
    int start_attempts = 0;  ///< Calls of start_read(), sent or not.
    int wait_pasts = 0;
    int reconnects = 0;
    int in_flight = 0;
    int max_in_flight = 0;
    int cancelled_queries = 0;
    std::vector<lsn> wait_past_targets;

    /// Lets the held queries answer (with `status` as it is when they resume).
    void release() { gate.cancel(); }

    asio::steady_timer gate;  // never expires by itself: cancel() opens it
};

class fake_source final : public replication::replay_source {
  public:
    explicit fake_source(std::shared_ptr<source_script> script) : script_(std::move(script)) {}

    bool start_read() override {
        ++script_->start_attempts;
        if (!script_->can_start || started_) return false;
        ++script_->starts;
        started_ = true;
        return true;
    }

    asio::awaitable<replication::replay_status> read() override {
        if (started_) {
            started_ = false;  // the started query's answer: held or failed like any other
        } else {
            ++script_->reads;
        }
        co_return co_await answer();
    }

    asio::awaitable<replication::replay_status> wait_past(lsn target,
                                                          std::chrono::microseconds,
                                                          std::chrono::microseconds) override {
        ++script_->wait_pasts;
        script_->wait_past_targets.push_back(target);
        co_return co_await answer();
    }

    asio::awaitable<void> reconnect() override {
        ++script_->reconnects;
        started_ = false;
        if (script_->fail_reconnects > 0) {
            --script_->fail_reconnects;
            throw std::runtime_error("fake: connection refused");
        }
        co_return;
    }

    std::uint64_t queries_sent() const noexcept override {
        return static_cast<std::uint64_t>(script_->reads + script_->wait_pasts + script_->starts);
    }

  private:
    asio::awaitable<replication::replay_status> answer() {
        source_script& s = *script_;
        ++s.in_flight;
        s.max_in_flight = std::max(s.max_in_flight, s.in_flight);
        struct leave {
            source_script& s;
            ~leave() { --s.in_flight; }
        } guard{s};
        if (s.hold) {
            // Through `||`, as a real source's operations often are: its branches are coroutines
            // of their own that accept only terminal cancellation.
            using namespace asio::experimental::awaitable_operators;
            asio::steady_timer never(s.gate.get_executor(), asio::steady_timer::time_point::max());
            co_await (s.gate.async_wait(asio::experimental::as_tuple(asio::use_awaitable)) ||
                      never.async_wait(asio::experimental::as_tuple(asio::use_awaitable)));
            if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none) {
                ++s.cancelled_queries;
                throw std::runtime_error("fake: query cancelled");
            }
        }
        if (s.fail_reads > 0) {
            --s.fail_reads;
            throw std::runtime_error("fake: connection lost");
        }
        co_return s.status;
    }

    std::shared_ptr<source_script> script_;
    bool started_ = false;  // start_read() sent a query whose answer read() has not taken
};

}  // namespace flypg::test
