// The delay proxy over real loopback sockets, in one process (and once as its own executable).
// Timing is measured, never waited for: lower bounds are exact (a timer never fires early); upper
// bounds leave room for a busy machine while still catching a proxy that serializes its delays.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "delay_proxy_core.hpp"

extern char** environ;

namespace {

using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace asio::experimental::awaitable_operators;
using flypg::tools::delay_proxy;
using flypg::tools::delay_proxy_options;
constexpr auto no_throw = asio::experimental::as_tuple(asio::use_awaitable);

double ms(clock_type::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

tcp::endpoint loopback(std::uint16_t port = 0) {
    return {asio::ip::make_address("127.0.0.1"), port};
}

// Echoes every byte back until the client half-closes, then half-closes too.
asio::awaitable<void> echo_connection(tcp::socket socket) {
    std::vector<char> buffer(64 * 1024);
    for (;;) {
        auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer), no_throw);
        if (ec) break;
        auto [write_ec, written] =
            co_await asio::async_write(socket, asio::buffer(buffer.data(), n), no_throw);
        if (write_ec) co_return;
    }
    asio::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
}

// An echo server on a free loopback port, accepting until closed.
class echo_server {
  public:
    explicit echo_server(asio::io_context& io) : acceptor_(io, loopback()) {
        asio::co_spawn(io, accept_loop(), asio::detached);
    }
    ~echo_server() {
        asio::error_code ignored;
        acceptor_.close(ignored);
    }
    tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }

  private:
    asio::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(no_throw);
            if (ec) co_return;
            asio::co_spawn(acceptor_.get_executor(), echo_connection(std::move(socket)), asio::detached);
        }
    }
    tcp::acceptor acceptor_;
};

// A proxy in front of `target`, running on `io` until the fixture ends.
struct running_proxy {
    running_proxy(asio::io_context& io, tcp::endpoint target, std::chrono::milliseconds delay) {
        delay_proxy_options options;
        options.listen = loopback();
        options.target = target;
        options.delay = delay;
        proxy = std::make_unique<delay_proxy>(io.get_executor(), options);
        asio::co_spawn(io, proxy->run(), asio::detached);
    }
    ~running_proxy() { proxy->close(); }
    tcp::endpoint endpoint() const { return proxy->local_endpoint(); }

    std::unique_ptr<delay_proxy> proxy;
};

// Runs `task` until it finishes and returns its value (rethrowing its exception). Unlike
// flypg::test::run it stops the io_context as soon as the task is done: the proxy and the servers
// keep accepting, so the io_context never runs out of work by itself.
template <class T>
T run_task(asio::io_context& io,
           asio::awaitable<T> task,
           std::chrono::seconds limit = std::chrono::seconds(30)) {
    std::optional<T> value;
    std::exception_ptr failure;
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T v) {
        failure = e;
        if (!e) value.emplace(std::move(v));
        io.stop();
    });
    io.restart();
    io.run_for(limit);
    if (failure) std::rethrow_exception(failure);
    if (!value) throw std::runtime_error("test coroutine did not finish in time");
    return std::move(*value);
}

void run_task(asio::io_context& io,
              asio::awaitable<void> task,
              std::chrono::seconds limit = std::chrono::seconds(30)) {
    auto wrapped = [](asio::awaitable<void> inner) -> asio::awaitable<bool> {
        co_await std::move(inner);
        co_return true;
    };
    (void)run_task(io, wrapped(std::move(task)), limit);
}

asio::awaitable<tcp::socket> connect_to(tcp::endpoint endpoint) {
    tcp::socket socket(co_await asio::this_coro::executor);
    co_await socket.async_connect(endpoint, asio::use_awaitable);
    socket.set_option(tcp::no_delay(true));
    co_return socket;
}

TEST(DelayProxy, RoundTripTakesTwiceTheOneWayDelay) {
    asio::io_context io;
    echo_server server(io);
    running_proxy proxy(io, server.endpoint(), std::chrono::milliseconds(15));
    const std::vector<double> round_trips = run_task(io, [&]() -> asio::awaitable<std::vector<double>> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        std::vector<double> times;
        char byte = 'x';
        for (int i = 0; i < 7; ++i) {
            const auto start = clock_type::now();
            co_await asio::async_write(socket, asio::buffer(&byte, 1), asio::use_awaitable);
            co_await asio::async_read(socket, asio::buffer(&byte, 1), asio::use_awaitable);
            times.push_back(ms(clock_type::now() - start));
        }
        co_return times;
    }());
    for (double t : round_trips) EXPECT_GE(t, 30.0);
    std::vector<double> sorted = round_trips;
    std::sort(sorted.begin(), sorted.end());
    // Far from the 60 ms of a proxy that waited twice per direction; loose enough for a busy machine.
    EXPECT_LT(sorted[sorted.size() / 2], 50.0) << "median round trip through a 15 ms proxy";
}

TEST(DelayProxy, DelaysEachChunkFromItsOwnReadTime) {
    // 30 messages 1 ms apart through a 30 ms proxy: each arrives about 30 ms after it was sent,
    // about 1 ms after the one before. A proxy that read, waited the delay, wrote and only then
    // read again would deliver them in one or two batches (one to 30 ms late). Counting the reads
    // that delivered them tells the two apart without a timing ceiling, which a busy machine breaks.
    asio::io_context io;
    tcp::acceptor acceptor(io, loopback());
    running_proxy proxy(io, acceptor.local_endpoint(), std::chrono::milliseconds(30));
    constexpr int messages = 30;
    std::vector<clock_type::time_point> sent(messages);
    std::vector<clock_type::time_point> arrived(messages);
    int deliveries = 0;
    run_task(io, [&]() -> asio::awaitable<void> {
        auto send = [&]() -> asio::awaitable<void> {
            tcp::socket socket = co_await connect_to(proxy.endpoint());
            asio::steady_timer spacing(socket.get_executor());
            for (int i = 0; i < messages; ++i) {
                const char byte = static_cast<char>(i);
                sent[i] = clock_type::now();
                co_await asio::async_write(socket, asio::buffer(&byte, 1), asio::use_awaitable);
                spacing.expires_after(std::chrono::milliseconds(1));
                co_await spacing.async_wait(asio::use_awaitable);
            }
            socket.shutdown(tcp::socket::shutdown_send);
            char end;
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(&end, 1), no_throw);
            EXPECT_EQ(ec, asio::error::eof);
        };
        auto receive = [&]() -> asio::awaitable<void> {
            tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
            for (int i = 0; i < messages;) {
                char bytes[messages];
                const std::size_t n =
                    co_await socket.async_read_some(asio::buffer(bytes), asio::use_awaitable);
                ++deliveries;
                for (std::size_t k = 0; k < n; ++k, ++i) {
                    EXPECT_EQ(bytes[k], static_cast<char>(i));
                    arrived[i] = clock_type::now();
                }
            }
            socket.shutdown(tcp::socket::shutdown_send);
        };
        co_await (send() && receive());
    }());
    for (int i = 0; i < messages; ++i) EXPECT_GE(ms(arrived[i] - sent[i]), 30.0) << "message " << i;
    EXPECT_GE(deliveries, messages / 3) << "the messages arrived in batches";
}

TEST(DelayProxy, ThroughputIsNotOneChunkPerDelay) {
    // 4 MiB echoed through a 50 ms proxy: one 64 KiB chunk per delay would take over 3 s each way.
    asio::io_context io;
    echo_server server(io);
    running_proxy proxy(io, server.endpoint(), std::chrono::milliseconds(50));
    std::vector<char> data(4 * 1024 * 1024);
    std::mt19937 random(7);
    for (char& c : data) c = static_cast<char>(random());
    std::vector<char> echoed(data.size());
    const auto start = clock_type::now();
    run_task(io, [&]() -> asio::awaitable<void> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        auto write = [&]() -> asio::awaitable<void> {
            co_await asio::async_write(socket, asio::buffer(data), asio::use_awaitable);
            socket.shutdown(tcp::socket::shutdown_send);
        };
        auto read = [&]() -> asio::awaitable<void> {
            co_await asio::async_read(socket, asio::buffer(echoed), asio::use_awaitable);
        };
        co_await (write() && read());
    }());
    const double elapsed = ms(clock_type::now() - start);
    EXPECT_TRUE(echoed == data) << "bytes changed or reordered";
    EXPECT_GE(elapsed, 100.0);
    EXPECT_LT(elapsed, 1500.0);
}

TEST(DelayProxy, KeepsByteOrderOnManyConcurrentConnections) {
    asio::io_context io;
    echo_server server(io);
    running_proxy proxy(io, server.endpoint(), std::chrono::milliseconds(1));
    constexpr int connections = 24;
    int matched = 0;
    run_task(io, [&]() -> asio::awaitable<void> {
        auto one = [&](int id) -> asio::awaitable<void> {
            std::mt19937 random(static_cast<unsigned>(id));
            std::vector<char> data(100'000 + 997 * id);
            for (char& c : data) c = static_cast<char>(random());
            std::vector<char> echoed(data.size());
            tcp::socket socket = co_await connect_to(proxy.endpoint());
            auto write = [&]() -> asio::awaitable<void> {
                // Uneven writes, so chunks cross the proxy in many sizes.
                for (std::size_t offset = 0; offset < data.size();) {
                    const std::size_t n = std::min<std::size_t>(data.size() - offset, 1 + random() % 9000);
                    co_await asio::async_write(
                        socket, asio::buffer(data.data() + offset, n), asio::use_awaitable);
                    offset += n;
                }
                socket.shutdown(tcp::socket::shutdown_send);
            };
            auto read = [&]() -> asio::awaitable<void> {
                co_await asio::async_read(socket, asio::buffer(echoed), asio::use_awaitable);
                char extra;
                auto [ec, n] = co_await socket.async_read_some(asio::buffer(&extra, 1), no_throw);
                EXPECT_EQ(ec, asio::error::eof) << "connection " << id;
            };
            co_await (write() && read());
            if (echoed == data) ++matched;
        };
        auto ex = co_await asio::this_coro::executor;
        int finished = 0;
        asio::steady_timer done(ex, clock_type::time_point::max());
        for (int id = 0; id < connections; ++id)
            asio::co_spawn(ex, one(id), [&](std::exception_ptr e) {
                EXPECT_FALSE(e) << "connection failed";
                if (++finished == connections) done.cancel();
            });
        co_await done.async_wait(no_throw);
    }());
    EXPECT_EQ(matched, connections);
    EXPECT_EQ(proxy.proxy->stats().accepted, static_cast<std::uint64_t>(connections));
}

TEST(DelayProxy, ForwardsHalfCloseAfterTheDataAndKeepsTheOtherDirection) {
    asio::io_context io;
    tcp::acceptor acceptor(io, loopback());
    running_proxy proxy(io, acceptor.local_endpoint(), std::chrono::milliseconds(10));
    clock_type::time_point client_shutdown;
    clock_type::time_point server_saw_eof;
    std::string request;
    std::string response;
    asio::error_code client_end;
    run_task(io, [&]() -> asio::awaitable<void> {
        auto client = [&]() -> asio::awaitable<void> {
            tcp::socket socket = co_await connect_to(proxy.endpoint());
            const std::string text = "request";
            co_await asio::async_write(socket, asio::buffer(text), asio::use_awaitable);
            client_shutdown = clock_type::now();
            socket.shutdown(tcp::socket::shutdown_send);
            auto [ec, n] = co_await asio::async_read(socket, asio::dynamic_buffer(response), no_throw);
            client_end = ec;
        };
        auto server = [&]() -> asio::awaitable<void> {
            tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
            auto [ec, n] = co_await asio::async_read(socket, asio::dynamic_buffer(request), no_throw);
            EXPECT_EQ(ec, asio::error::eof);
            server_saw_eof = clock_type::now();
            // The half-closed client still reads: answer after its FIN arrived.
            const std::string text = "response";
            co_await asio::async_write(socket, asio::buffer(text), asio::use_awaitable);
            socket.shutdown(tcp::socket::shutdown_send);
        };
        co_await (client() && server());
    }());
    EXPECT_EQ(request, "request");
    EXPECT_EQ(response, "response");
    EXPECT_EQ(client_end, asio::error::eof);
    EXPECT_GE(ms(server_saw_eof - client_shutdown), 10.0) << "the FIN travels with the delay";
}

TEST(DelayProxy, TargetResetReachesTheClientAsAReset) {
    asio::io_context io;
    tcp::acceptor acceptor(io, loopback());
    running_proxy proxy(io, acceptor.local_endpoint(), std::chrono::milliseconds(5));
    asio::error_code client_error;
    std::string received;
    run_task(io, [&]() -> asio::awaitable<void> {
        auto client = [&]() -> asio::awaitable<void> {
            tcp::socket socket = co_await connect_to(proxy.endpoint());
            auto [ec, n] = co_await asio::async_read(socket, asio::dynamic_buffer(received), no_throw);
            client_error = ec;
        };
        auto server = [&]() -> asio::awaitable<void> {
            tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
            const std::string text = "partial";
            co_await asio::async_write(socket, asio::buffer(text), asio::use_awaitable);
            socket.set_option(asio::socket_base::linger(true, 0));
            socket.close();
        };
        co_await (client() && server());
    }());
    EXPECT_EQ(received, "partial") << "data sent before the reset still arrives";
    EXPECT_EQ(client_error, asio::error::connection_reset);
}

TEST(DelayProxy, UnreachableTargetClosesTheClient) {
    asio::io_context io;
    tcp::endpoint nothing_there;
    {
        tcp::acceptor reserve(io, loopback());  // a port that was free a moment ago, now closed
        nothing_there = reserve.local_endpoint();
    }
    running_proxy proxy(io, nothing_there, std::chrono::milliseconds(5));
    const asio::error_code ec = run_task(io, [&]() -> asio::awaitable<asio::error_code> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        char byte;
        auto [read_ec, n] = co_await socket.async_read_some(asio::buffer(&byte, 1), no_throw);
        co_return read_ec;
    }());
    EXPECT_TRUE(ec == asio::error::connection_reset || ec == asio::error::eof) << ec.message();
    EXPECT_EQ(proxy.proxy->stats().connect_failures, 1u);
}

// What arrives on `socket` within `window` (a lower bound: nothing is read after it).
asio::awaitable<std::string> read_within(tcp::socket& socket, std::chrono::milliseconds window) {
    std::string got;
    asio::steady_timer timer(socket.get_executor(), window);
    char buffer[256];
    for (;;) {
        auto outcome =
            co_await (socket.async_read_some(asio::buffer(buffer), no_throw) || timer.async_wait(no_throw));
        if (outcome.index() == 1) co_return got;
        auto [ec, n] = std::get<0>(outcome);
        if (ec) co_return got;
        got.append(buffer, n);
    }
}

asio::awaitable<std::string> send_and_read(tcp::socket& socket,
                                           const std::string& text,
                                           std::chrono::milliseconds window) {
    co_await asio::async_write(socket, asio::buffer(text), asio::use_awaitable);
    co_return co_await read_within(socket, window);
}

// An echo server behind a proxy without delay, for the fault modes.
class DelayProxyFaults : public ::testing::Test {
  protected:
    asio::io_context io;
    echo_server server{io};
    running_proxy proxy{io, server.endpoint(), std::chrono::milliseconds(0)};
};

TEST_F(DelayProxyFaults, AStallHoldsTheBytesAndDeliversThemInOrderOnHeal) {
    run_task(io, [&]() -> asio::awaitable<void> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        EXPECT_EQ(co_await send_and_read(socket, "before", std::chrono::milliseconds(100)), "before");
        proxy.proxy->set_fault(flypg::tools::proxy_fault::stall);
        EXPECT_EQ(co_await send_and_read(socket, "one ", std::chrono::milliseconds(100)), "");
        EXPECT_EQ(co_await send_and_read(socket, "two", std::chrono::milliseconds(20)), "");
        proxy.proxy->set_fault(flypg::tools::proxy_fault::none);
        EXPECT_EQ(co_await read_within(socket, std::chrono::milliseconds(200)), "one two");
    }());
}

TEST_F(DelayProxyFaults, AStallOfOneDirectionLetsTheOtherThrough) {
    run_task(io, [&]() -> asio::awaitable<void> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        proxy.proxy->set_fault(flypg::tools::proxy_fault::stall, flypg::tools::proxy_direction::to_client);
        EXPECT_EQ(co_await send_and_read(socket, "held", std::chrono::milliseconds(100)), "");
        // The request reached the server (only its answer is held).
        EXPECT_EQ(proxy.proxy->stats().bytes_to_target, 4u);
        EXPECT_EQ(proxy.proxy->stats().bytes_to_client, 0u);
        proxy.proxy->set_fault(flypg::tools::proxy_fault::none);
        EXPECT_EQ(co_await read_within(socket, std::chrono::milliseconds(200)), "held");
    }());
}

TEST_F(DelayProxyFaults, ADropLosesWhatWasSentDuringIt) {
    run_task(io, [&]() -> asio::awaitable<void> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        proxy.proxy->set_fault(flypg::tools::proxy_fault::drop);
        EXPECT_EQ(co_await send_and_read(socket, "lost", std::chrono::milliseconds(100)), "");
        proxy.proxy->set_fault(flypg::tools::proxy_fault::none);
        EXPECT_EQ(co_await send_and_read(socket, "kept", std::chrono::milliseconds(200)), "kept");
        EXPECT_EQ(proxy.proxy->stats().bytes_to_target, 4u);
    }());
}

TEST_F(DelayProxyFaults, AResetEndsOpenConnectionsAndRefusesNewOnesUntilHealed) {
    run_task(io, [&]() -> asio::awaitable<void> {
        tcp::socket open = co_await connect_to(proxy.endpoint());
        EXPECT_EQ(co_await send_and_read(open, "up", std::chrono::milliseconds(100)), "up");
        proxy.proxy->set_fault(flypg::tools::proxy_fault::reset);
        char byte;
        auto [open_ec, n] = co_await open.async_read_some(asio::buffer(&byte, 1), no_throw);
        EXPECT_EQ(open_ec, asio::error::connection_reset);
        tcp::socket refused = co_await connect_to(proxy.endpoint());
        auto [refused_ec, m] = co_await refused.async_read_some(asio::buffer(&byte, 1), no_throw);
        EXPECT_EQ(refused_ec, asio::error::connection_reset);
        proxy.proxy->set_fault(flypg::tools::proxy_fault::none);
        tcp::socket healed = co_await connect_to(proxy.endpoint());
        EXPECT_EQ(co_await send_and_read(healed, "back", std::chrono::milliseconds(200)), "back");
    }());
}

TEST_F(DelayProxyFaults, AResetAfterADropEndsTheConnection) {
    run_task(io, [&]() -> asio::awaitable<void> {
        tcp::socket open = co_await connect_to(proxy.endpoint());
        EXPECT_EQ(co_await send_and_read(open, "up", std::chrono::milliseconds(100)), "up");
        proxy.proxy->set_fault(flypg::tools::proxy_fault::drop);
        EXPECT_EQ(co_await send_and_read(open, "lost", std::chrono::milliseconds(100)), "");
        proxy.proxy->set_fault(flypg::tools::proxy_fault::reset);
        proxy.proxy->set_fault(flypg::tools::proxy_fault::none);
        char byte;
        auto [ec, n] = co_await open.async_read_some(asio::buffer(&byte, 1), no_throw);
        EXPECT_EQ(ec, asio::error::connection_reset);
    }());
}

TEST_F(DelayProxyFaults, ANewDelayAppliesToBytesReadFromThenOn) {
    const double round_trip = run_task(io, [&]() -> asio::awaitable<double> {
        tcp::socket socket = co_await connect_to(proxy.endpoint());
        proxy.proxy->set_delay(std::chrono::milliseconds(40));
        const auto start = clock_type::now();
        char byte = 'x';
        co_await asio::async_write(socket, asio::buffer(&byte, 1), asio::use_awaitable);
        co_await asio::async_read(socket, asio::buffer(&byte, 1), asio::use_awaitable);
        co_return ms(clock_type::now() - start);
    }());
    EXPECT_GE(round_trip, 80.0);
}

TEST(DelayProxy, CloseEndsRun) {
    asio::io_context io;
    delay_proxy_options options;
    options.listen = loopback();
    options.target = loopback(1);
    options.delay = std::chrono::milliseconds(1);
    delay_proxy proxy(io.get_executor(), options);
    bool ended = false;
    asio::co_spawn(io, proxy.run(), [&](std::exception_ptr e) {
        EXPECT_FALSE(e);
        ended = true;
    });
    io.poll();
    EXPECT_FALSE(ended);
    proxy.close();
    io.run_for(std::chrono::seconds(5));
    EXPECT_TRUE(ended);
}

#ifdef FLYPG_DELAY_PROXY_EXECUTABLE
TEST(DelayProxyExecutable, PrintsItsAddressOnceReadyThenForwardsWithTheDelay) {
    asio::io_context io;
    echo_server server(io);
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    const std::string target = "--target=127.0.0.1:" + std::to_string(server.endpoint().port());
    std::vector<std::string> args{
        FLYPG_DELAY_PROXY_EXECUTABLE, "--listen=127.0.0.1:0", target, "--delay_ms=15"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);

    asio::posix::stream_descriptor output(io, out[0]);
    std::string line;
    double round_trip = 0;
    EXPECT_NO_THROW(run_task(
        io,
        [&]() -> asio::awaitable<void> {
            const std::size_t n = co_await asio::async_read_until(
                output, asio::dynamic_buffer(line), '\n', asio::use_awaitable);
            line.resize(n - 1);
            const std::string prefix = "listening on 127.0.0.1:";
            EXPECT_EQ(line.rfind(prefix, 0), 0u) << line;
            const auto port = static_cast<std::uint16_t>(std::stoi(line.substr(prefix.size())));
            tcp::socket socket = co_await connect_to(loopback(port));
            char byte = 'x';
            const auto start = clock_type::now();
            co_await asio::async_write(socket, asio::buffer(&byte, 1), asio::use_awaitable);
            co_await asio::async_read(socket, asio::buffer(&byte, 1), asio::use_awaitable);
            round_trip = ms(clock_type::now() - start);
        }(),
        std::chrono::seconds(30)));
    ::kill(pid, SIGTERM);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    EXPECT_GE(round_trip, 30.0);
    EXPECT_LT(round_trip, 60.0);
}
#endif

}  // namespace
