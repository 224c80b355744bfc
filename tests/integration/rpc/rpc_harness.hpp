// Helpers for RPC tests: nodes running on one io_context, test procedures, captured logs.
#pragma once

#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"
#include "test_procedures.hpp"

namespace flypg::rpc::test {

using namespace std::chrono_literals;

inline const std::string cluster_secret = "test-cluster-secret-0123456789abcdef";

/// Log lines of one node, kept for assertions.
struct log_capture {
    std::vector<std::string> lines;
    bool contains(const std::string& needle) const {
        for (const auto& l : lines) {
            if (l.find(needle) != std::string::npos) return true;
        }
        return false;
    }
    std::string text() const {
        std::string all;
        for (const auto& l : lines) all += l + "\n";
        return all;
    }
};

/// Options with short intervals, so tests wait milliseconds rather than seconds.
inline node_options fast_options(std::string region, std::string primary) {
    node_options o;
    o.listen_address = "127.0.0.1";
    o.listen_port = 0;
    o.cluster_secret = cluster_secret;
    o.region = std::move(region);
    o.primary_region = std::move(primary);
    o.app_version = "test";
    o.peers = std::vector<std::string>{};
    o.resolve_interval = 500ms;
    o.reconnect_min = 20ms;
    o.reconnect_max = 200ms;
    o.handshake_timeout = 2s;
    o.heartbeat_interval = 200ms;
    return o;
}

inline call_options within(std::chrono::milliseconds timeout) {
    call_options o;
    o.timeout = timeout;
    return o;
}

inline std::string address_of(const node& n) {
    return "127.0.0.1:" + std::to_string(n.local_endpoint().port());
}

/// Nodes running on one io_context, stopped (and awaited) when the harness goes away.
class harness {
  public:
    harness() = default;
    harness(const harness&) = delete;
    harness& operator=(const harness&) = delete;

    ~harness() {
        for (auto& s : stops_) s->emit(asio::cancellation_type::terminal);
        const auto limit = std::chrono::steady_clock::now() + 10s;
        while (running_ > 0 && std::chrono::steady_clock::now() < limit) io.run_one_for(100ms);
        EXPECT_EQ(running_, 0) << "node::run() did not return after cancellation";
        nodes_.clear();
        io.restart();
        io.poll();
    }

    /// Creates a node and starts its run(). Logs go to logs(index).
    node& start(node_options options) {
        auto capture = std::make_shared<log_capture>();
        logs_.push_back(capture);
        auto user_log = options.log;
        options.log = [capture, user_log](log_level level, std::string_view text) {
            capture->lines.emplace_back(text);
            if (user_log) user_log(level, text);
        };
        nodes_.push_back(std::make_unique<node>(node::create(io, std::move(options))));
        launch(*nodes_.back());
        return *nodes_.back();
    }

    /// Stops node `index` (its run() returns), keeping its log.
    void stop(std::size_t index) {
        stops_[index]->emit(asio::cancellation_type::terminal);
        const auto limit = std::chrono::steady_clock::now() + 10s;
        while (!finished_[index] && std::chrono::steady_clock::now() < limit) io.run_one_for(100ms);
        ASSERT_TRUE(finished_[index]);
        nodes_[index].reset();
    }

    log_capture& logs(std::size_t index) { return *logs_.at(index); }

    /// Runs `task` until it finishes or `limit` passes; rethrows its exception.
    template <class T>
    T run(asio::awaitable<T> task, std::chrono::milliseconds limit = 30s) {
        std::optional<T> result;
        std::exception_ptr failure;
        bool done = false;
        asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T v) {
            failure = e;
            if (!e) result.emplace(std::move(v));
            done = true;
        });
        drive(done, limit);
        if (failure) std::rethrow_exception(failure);
        return std::move(*result);
    }

    void run(asio::awaitable<void> task, std::chrono::milliseconds limit = 30s) {
        std::exception_ptr failure;
        bool done = false;
        asio::co_spawn(io, std::move(task), [&](std::exception_ptr e) {
            failure = e;
            done = true;
        });
        drive(done, limit);
        if (failure) std::rethrow_exception(failure);
    }

    /// Runs the io_context until `condition` holds (checked every few ms) or `limit` passes.
    bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (!condition()) {
            if (std::chrono::steady_clock::now() >= end) return false;
            io.run_one_for(5ms);
        }
        return true;
    }

    asio::io_context io;

  private:
    void launch(node& n) {
        auto signal = std::make_shared<asio::cancellation_signal>();
        stops_.push_back(signal);
        finished_.push_back(false);
        const std::size_t index = finished_.size() - 1;
        ++running_;
        asio::co_spawn(
            io, n.run(), asio::bind_cancellation_slot(signal->slot(), [this, index](std::exception_ptr e) {
                finished_[index] = true;
                --running_;
                if (e) {
                    try {
                        std::rethrow_exception(e);
                    } catch (const std::exception& ex) {
                        ADD_FAILURE() << "node::run() failed: " << ex.what();
                    }
                }
            }));
    }

    void drive(bool& done, std::chrono::milliseconds limit) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (!done && std::chrono::steady_clock::now() < end) io.run_one_for(50ms);
        if (!done) throw std::runtime_error("test coroutine did not finish in time");
    }

    std::vector<std::unique_ptr<node>> nodes_;
    std::vector<std::shared_ptr<asio::cancellation_signal>> stops_;
    std::deque<bool> finished_;
    std::vector<std::shared_ptr<log_capture>> logs_;
    int running_ = 0;
};

/// The flypg::errc of an awaitable's failure, or a failure of the test when it did not fail.
template <class T>
asio::awaitable<std::error_code> error_of(asio::awaitable<T> task, std::string* message = nullptr) {
    try {
        co_await std::move(task);
    } catch (const flypg::error& e) {
        if (message) *message = e.diag().library_message.empty() ? e.what() : e.diag().library_message;
        co_return e.code();
    } catch (const std::system_error& e) {
        if (message) *message = e.what();
        co_return e.code();
    }
    co_return std::error_code{};
}

}  // namespace flypg::rpc::test
