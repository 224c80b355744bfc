// flypg_delay_proxy: a TCP proxy adding a fixed one-way delay to each direction, to put "another
// region" between two processes on one machine (the kernel here has no netem).
//
//   flypg_delay_proxy --listen=127.0.0.1:6433 --target=127.0.0.1:5433 --delay_ms=15
//
// 15 ms each way gives a 30 ms round trip. Once it accepts connections it prints one line,
// "listening on 127.0.0.1:6433" (the real port when --listen asks for port 0), and flushes stdout,
// so a script can wait for that line. SIGINT or SIGTERM stops it. Errors go to stderr, exit 1.
#include <absl/flags/flag.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>

#include "bench_flags.hpp"
#include "delay_proxy_core.hpp"

ABSL_FLAG(std::string,
          listen,
          "127.0.0.1:0",
          "address to accept on, host:port ([v6]:port); port 0 picks one");
ABSL_FLAG(std::string, target, "", "address to forward each connection to, host:port ([v6]:port)");
ABSL_FLAG(int, delay_ms, 15, "one-way delay in milliseconds, applied to each direction");
ABSL_FLAG(int, max_buffer_kib, 16 * 1024, "bytes in flight per direction before reading pauses, in KiB");

namespace {

using asio::ip::tcp;

// "host:port" or "[v6]:port"; the host may be a name (resolved once, now).
tcp::endpoint parse_endpoint(asio::io_context& io, const std::string& flag, const std::string& text) {
    std::string host;
    std::string port;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            throw std::runtime_error("--" + flag + "=" + text + ": expected [address]:port");
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string::npos || text.find(':') != colon)
            throw std::runtime_error("--" + flag + "=" + text +
                                     ": expected host:port (IPv6 as [address]:port)");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    if (host.empty() || port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
        port.size() > 5 || std::stoi(port) > 65535)
        throw std::runtime_error("--" + flag + "=" + text + ": expected host:port with a port 0-65535");
    tcp::resolver resolver(io);
    asio::error_code ec;
    const auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
    if (ec || results.empty())
        throw std::runtime_error("--" + flag + "=" + text + ": cannot resolve \"" + host +
                                 "\": " + ec.message());
    return results.begin()->endpoint();
}

}  // namespace

int main(int argc, char** argv) {
    flypg::bench::parse_command_line(
        "TCP proxy adding a fixed one-way delay to each direction\n\n"
        "  flypg_delay_proxy --listen=127.0.0.1:6000 --target=127.0.0.1:5432 --delay_ms=15",
        argc,
        argv);
    try {
        if (absl::GetFlag(FLAGS_target).empty()) throw std::runtime_error("--target is required");
        if (absl::GetFlag(FLAGS_delay_ms) < 0) throw std::runtime_error("--delay_ms must not be negative");
        if (absl::GetFlag(FLAGS_max_buffer_kib) <= 0)
            throw std::runtime_error("--max_buffer_kib must be positive");

        asio::io_context io(1);
        flypg::tools::delay_proxy_options options;
        options.listen = parse_endpoint(io, "listen", absl::GetFlag(FLAGS_listen));
        options.target = parse_endpoint(io, "target", absl::GetFlag(FLAGS_target));
        options.delay = std::chrono::milliseconds(absl::GetFlag(FLAGS_delay_ms));
        options.max_buffered_bytes = static_cast<std::size_t>(absl::GetFlag(FLAGS_max_buffer_kib)) * 1024;
        flypg::tools::delay_proxy proxy(io.get_executor(), options);

        asio::signal_set signals(io, SIGINT, SIGTERM);
        signals.async_wait([&io](const asio::error_code&, int) { io.stop(); });
        asio::co_spawn(io, proxy.run(), [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });

        const tcp::endpoint bound = proxy.local_endpoint();
        const std::string address =
            bound.address().is_v6() ? "[" + bound.address().to_string() + "]" : bound.address().to_string();
        std::printf("listening on %s:%u\n", address.c_str(), static_cast<unsigned>(bound.port()));
        std::fflush(stdout);
        std::fprintf(stderr,
                     "flypg_delay_proxy: forwarding to %s:%u with %d ms each way\n",
                     options.target.address().to_string().c_str(),
                     static_cast<unsigned>(options.target.port()),
                     absl::GetFlag(FLAGS_delay_ms));
        io.run();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "flypg_delay_proxy: %s\n", e.what());
        return 1;
    }
}
