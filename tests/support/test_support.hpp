// Helpers shared by the tests: where the cluster is, and running a coroutine to completion.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <string>

namespace flypg::test {

/// Connection string of the test primary (FLYPG_TEST_PRIMARY, else the CMake-configured cluster).
std::string primary_conninfo();
/// Connection string of replica `index` (1-based; FLYPG_TEST_REPLICA / FLYPG_TEST_REPLICA_<i>).
std::string replica_conninfo(int index = 1);
/// Runs scripts/pg-cluster with `arguments` (for example "delay 1 300"); returns its exit status.
int pg_cluster(const std::string& arguments);

/// Runs `task` on `io` until it finishes and returns its value; rethrows its exception. Other work
/// on `io` (a node, a tracker) runs alongside and stays pending when the task finishes. Fails with
/// an exception when the task has not finished within `limit`, so a hang never stalls the suite.
template <class T>
T run(asio::io_context& io,
      asio::awaitable<T> task,
      std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    std::optional<T> value;
    std::exception_ptr failure;
    bool done = false;
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T v) {
        failure = e;
        if (!e) value.emplace(std::move(v));
        done = true;
    });
    io.restart();
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < deadline) {
        if (io.run_one_until(deadline) == 0 && io.stopped()) io.restart();
    }
    if (!done) throw std::runtime_error("test coroutine did not finish in time");
    if (failure) std::rethrow_exception(failure);
    return std::move(*value);
}

inline void run(asio::io_context& io,
                asio::awaitable<void> task,
                std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    auto wrapped = [](asio::awaitable<void> inner) -> asio::awaitable<bool> {
        co_await std::move(inner);
        co_return true;
    };
    run(io, wrapped(std::move(task)), limit);
}

}  // namespace flypg::test
