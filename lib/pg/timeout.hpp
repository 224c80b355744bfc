// Runs an awaitable operation against a deadline.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <type_traits>

#include "flypg/error.hpp"

namespace flypg::pg {

/// Awaits `op`, cancelling it when `timeout` passes first (then throws errc::timeout). A zero
/// timeout awaits `op` directly. Cancelling the caller cancels `op` (errc::cancelled).
namespace detail {

// Runs `op` to completion and keeps its value or exception, so that a failure ends a `||` race
// (Asio's operator|| waits for the first *success*; a failing operation alone would leave the
// race running until the timer fires).
template <class T>
struct settled {
    std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
    std::exception_ptr failure;
};

template <class T>
asio::awaitable<settled<T>> settle(asio::awaitable<T> op) {
    settled<T> out;
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(op);
            out.value.emplace(true);
        } else {
            out.value.emplace(co_await std::move(op));
        }
    } catch (...) {
        out.failure = std::current_exception();
    }
    co_return out;
}

}  // namespace detail

/// Awaits `op`, cancelling it when `timeout` passes first (then throws errc::timeout). A zero
/// timeout awaits `op` directly. Cancelling the caller cancels `op` (errc::cancelled).
template <class T>
asio::awaitable<T> with_timeout(asio::awaitable<T> op, std::chrono::milliseconds timeout) {
    if (timeout.count() <= 0) co_return co_await std::move(op);
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timer(co_await asio::this_coro::executor, timeout);
    auto outcome = co_await (detail::settle(std::move(op)) ||
                             timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable)));
    if (outcome.index() == 1) {
        const auto [ec] = std::get<1>(outcome);
        if (ec) throw_error(errc::cancelled, "the operation was cancelled");
        throw_error(errc::timeout,
                    "the operation did not finish within " + std::to_string(timeout.count()) + " ms");
    }
    detail::settled<T>& done = std::get<0>(outcome);
    if (done.failure) std::rethrow_exception(done.failure);
    if constexpr (!std::is_void_v<T>) co_return std::move(*done.value);
}

/// True when `e` holds a flypg::error with errc::timeout.
inline bool is_timeout(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const flypg::error& err) {
        return err.code() == errc::timeout;
    } catch (...) {
        return false;
    }
}

}  // namespace flypg::pg
