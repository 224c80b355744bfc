// A TCP proxy that delays every byte by a fixed one-way latency in each direction: the demo's and the
// tests' stand-in for the distance between two regions (this machine has no netem).
//
//     asio::io_context io;
//     flypg::tools::delay_proxy proxy(io.get_executor(),
//                                     {.listen = {asio::ip::make_address("127.0.0.1"), 0},
//                                      .target = {asio::ip::make_address("127.0.0.1"), 5432},
//                                      .delay = std::chrono::milliseconds(15)});
//     asio::co_spawn(io, proxy.run(), asio::detached);  // 127.0.0.1:<proxy.local_endpoint().port()>
//     io.run();
//
// Each chunk read from one side is stamped with its read time and written to the other side at
// read time + delay, so a 15 ms delay gives a 30 ms round trip while many chunks are in flight at once
// (throughput is not limited to one chunk per delay). Byte order is kept per direction. An orderly
// close (FIN) travels with the same delay and becomes a half-close on the other side; a reset or a
// read error travels the same way and becomes a reset (SO_LINGER 0). The TCP handshake itself is not
// delayed: connecting to the proxy completes at once, and the proxy connects to the target only then.
//
// Everything runs on the given executor (one thread), including set_delay() and set_fault(), which
// change a running proxy: the fault-injection tests stall, black-hole or reset a path with them.
// Connections own their state and outlive close() and the proxy object; they end when both
// directions have finished.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace flypg::tools {

struct delay_proxy_options {
    asio::ip::tcp::endpoint listen;   ///< Port 0 picks a free port (see local_endpoint()).
    asio::ip::tcp::endpoint target;   ///< Where each accepted connection is forwarded.
    std::chrono::microseconds delay;  ///< One-way delay, applied to each direction.
    /// Bytes read but not yet written, per direction, before the proxy stops reading that side
    /// (back pressure). One chunk may exceed it.
    std::size_t max_buffered_bytes = 16 * 1024 * 1024;
};

/// A fault the proxy injects on top of its delay (the fault-injection tests' network).
enum class proxy_fault {
    none,   ///< Forward everything (after the delay).
    stall,  ///< Hold the bytes (they queue, then back pressure stops the reader); sent on heal.
    drop,   ///< A black hole: bytes are read and thrown away, as a partition that loses packets.
    reset,  ///< Reset every open connection (RST both sides) and every new one while set.
    /// Flip the low bit of the middle byte of the next chunk of at least corrupt_min_chunk_bytes,
    /// once (then the fault heals itself): a tampered byte on the path. Smaller chunks (heartbeats,
    /// acknowledgements) pass untouched, so a test can aim at one large message.
    corrupt,
};

inline constexpr std::size_t corrupt_min_chunk_bytes = 1024;

/// Which way a fault applies.
enum class proxy_direction { both, to_target, to_client };

/// Counters shared with the connections (they may outlive the proxy).
struct delay_proxy_stats {
    std::uint64_t accepted = 0;          ///< Connections accepted.
    std::uint64_t active = 0;            ///< Connections not yet finished.
    std::uint64_t connect_failures = 0;  ///< Connections whose target could not be reached.
    std::uint64_t bytes_to_target = 0;   ///< Bytes written to targets.
    std::uint64_t bytes_to_client = 0;   ///< Bytes written back to clients.
};

class delay_proxy {
  public:
    /// Binds and listens at once, so the port is known and clients may connect before run().
    /// @throws std::system_error when the address cannot be bound.
    delay_proxy(asio::any_io_executor executor, delay_proxy_options options);

    delay_proxy(const delay_proxy&) = delete;
    delay_proxy& operator=(const delay_proxy&) = delete;

    /// The bound address (with the chosen port when listen's port was 0).
    asio::ip::tcp::endpoint local_endpoint() const;

    /// Accepts connections until close() or cancellation; each runs on its own until it ends.
    /// The proxy must outlive run(); the connections need not.
    asio::awaitable<void> run();

    /// Stops accepting. Open connections carry on.
    void close();

    /// The one-way delay of every byte read from now on (bytes already read keep theirs; order
    /// is kept either way).
    void set_delay(std::chrono::microseconds delay);
    /// Injects `fault` in `direction` until the next call (proxy_fault::none heals). A reset
    /// applies to both directions at once.
    void set_fault(proxy_fault fault, proxy_direction direction = proxy_direction::both);

    const delay_proxy_stats& stats() const noexcept { return *stats_; }

    struct control;

  private:
    asio::ip::tcp::acceptor acceptor_;
    delay_proxy_options options_;
    std::shared_ptr<delay_proxy_stats> stats_;
    std::shared_ptr<control> control_;
};

}  // namespace flypg::tools
