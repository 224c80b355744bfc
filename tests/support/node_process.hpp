// The child side of child_process.hpp: a test node program announces itself and serves until the
// test closes its stdin (or it gets SIGTERM/SIGINT).
#pragma once

#include <unistd.h>

#include <asio.hpp>

#include <array>
#include <cstdio>
#include <functional>

#include "flypg/rpc/node.hpp"

namespace flypg::test {

/// Runs `node` on `io`: prints "LISTENING <port> <node id>" once it listens, and returns after the
/// node has stopped, which it does when stdin closes or a SIGTERM/SIGINT arrives.
inline void serve_until_stdin_closes(asio::io_context& io, rpc::node& node) {
    asio::cancellation_signal stop;
    bool finished = false;
    asio::co_spawn(io, node.run(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) {
                       finished = true;
                   }));
    asio::signal_set signals(io, SIGTERM, SIGINT);
    signals.async_wait([&](std::error_code ec, int) {
        if (!ec) stop.emit(asio::cancellation_type::terminal);
    });
    asio::posix::stream_descriptor input(io, ::dup(STDIN_FILENO));
    std::array<char, 64> sink{};
    std::function<void(std::error_code, std::size_t)> on_input = [&](std::error_code ec, std::size_t) {
        if (ec) {
            stop.emit(asio::cancellation_type::terminal);
            return;
        }
        input.async_read_some(asio::buffer(sink), on_input);
    };
    input.async_read_some(asio::buffer(sink), on_input);
    std::printf(
        "LISTENING %u %s\n", static_cast<unsigned>(node.local_endpoint().port()), node.node_id().c_str());
    std::fflush(stdout);
    while (!finished) io.run_one();
    signals.cancel();
    input.cancel();
    io.poll();
}

}  // namespace flypg::test
