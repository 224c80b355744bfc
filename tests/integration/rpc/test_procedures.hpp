// Procedures registered by every RPC test node, in-process and in the test node executable.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/rpc/procedure.hpp"
#include "flypg/rpc/value.hpp"

namespace flypg::rpc::test {

using values = std::vector<value>;

/// Procedures every test node registers.
struct procedure_state {
    int calls = 0;
    bool sleeper_started = false;
    bool sleeper_cancelled = false;
    int blocked = 0;
    std::shared_ptr<asio::steady_timer> gate;  // "block" waits until this is cancelled
};

inline void add_test_procedures(procedure_registry& registry,
                                std::shared_ptr<procedure_state> state,
                                std::string node_label) {
    registry.add("echo", [state](values args) -> asio::awaitable<values> {
        ++state->calls;
        co_return args;
    });
    registry.add("whoami", [state, node_label](values) -> asio::awaitable<values> {
        ++state->calls;
        co_return values{value(node_label)};
    });
    registry.add("sleep_ms", [state](values args) -> asio::awaitable<values> {
        state->sleeper_started = true;
        asio::steady_timer t(co_await asio::this_coro::executor,
                             std::chrono::milliseconds(std::get<std::int64_t>(args.at(0))));
        auto [ec] = co_await t.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
        if (ec) {
            state->sleeper_cancelled = true;
            throw std::system_error(ec);
        }
        co_return values{value(std::string("slept"))};
    });
    registry.add("block", [state](values) -> asio::awaitable<values> {
        ++state->blocked;
        if (!state->gate) {
            state->gate = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor,
                                                               std::chrono::steady_clock::time_point::max());
        }
        auto gate = state->gate;
        co_await gate->async_wait(asio::experimental::as_tuple(asio::use_awaitable));
        --state->blocked;
        co_return values{};
    });
    registry.add("fail", [](values args) -> asio::awaitable<values> {
        throw std::runtime_error("procedure failed on purpose: " + std::get<std::string>(args.at(0)));
        co_return values{};
    });
    registry.add("sql_fail", [](values args) -> asio::awaitable<values> {
        diagnostics diag;
        diag.server_message = "duplicate key value violates unique constraint";
        diag.detail = "Key (id)=(1) already exists.";
        throw flypg::error(flypg::sqlstate(std::get<std::string>(args.at(0))), std::move(diag));
        co_return values{};
    });
    registry.add("big", [](values args) -> asio::awaitable<values> {
        co_return values{
            value(std::string(static_cast<std::size_t>(std::get<std::int64_t>(args.at(0))), 'x'))};
    });
}

}  // namespace flypg::rpc::test
