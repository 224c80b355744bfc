// The kj::AsyncIoStream over Asio TCP sockets, and Cap'n Proto RPC over it, in one process on
// loopback. Deterministic: no sleeps, no timing assertions.
#include <capnp/rpc-twoparty.h>
#include <kj/async.h>

#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "flypg.capnp.h"
#include "rpc/asio_stream.hpp"
#include "rpc/kj_bridge.hpp"
#include "rpc/kj_runtime.hpp"
#include "support/test_support.hpp"

namespace flypg::rpc::detail {
namespace {

using tcp = asio::ip::tcp;

struct socket_pair {
    tcp::socket client;
    tcp::socket server;
};

asio::awaitable<socket_pair> connect_loopback() {
    auto ex = co_await asio::this_coro::executor;
    tcp::acceptor acceptor(ex, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    tcp::socket client(ex);
    co_await client.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    tcp::socket server = co_await acceptor.async_accept(asio::use_awaitable);
    co_return socket_pair{std::move(client), std::move(server)};
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
// A session that only answers ping, counting the calls.
class ping_server final : public wire::Session::Server {
  public:
    explicit ping_server(int& pings) : pings_(pings) {}

  protected:
    kj::Promise<void> ping(PingContext) override {
        ++pings_;
        return kj::READY_NOW;
    }

  private:
    int& pings_;
};
#pragma GCC diagnostic pop

// Both ends of a two-party capnp connection over asio_stream.
struct rpc_pair {
    rpc_pair(socket_pair sockets, int& pings)
        : client_stream(std::move(sockets.client)),
          server_stream(std::move(sockets.server)),
          client_network(client_stream, capnp::rpc::twoparty::Side::CLIENT),
          server_network(server_stream, capnp::rpc::twoparty::Side::SERVER),
          client_rpc(capnp::makeRpcClient(client_network)),
          server_rpc(capnp::makeRpcServer(server_network, kj::heap<ping_server>(pings))) {
        capnp::word scratch[4]{};
        capnp::MallocMessageBuilder message(scratch);
        auto vat = message.getRoot<capnp::rpc::twoparty::VatId>();
        vat.setSide(capnp::rpc::twoparty::Side::SERVER);
        session = client_rpc.bootstrap(vat).castAs<wire::Session>();
    }

    asio_stream client_stream;
    asio_stream server_stream;
    capnp::TwoPartyVatNetwork client_network;
    capnp::TwoPartyVatNetwork server_network;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> client_rpc;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> server_rpc;
    wire::Session::Client session = nullptr;
};

TEST(AsioStream, CarriesBytesBothWays) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    std::string received = test::run(io, [&]() -> asio::awaitable<std::string> {
        auto sockets = co_await connect_loopback();
        asio_stream a(std::move(sockets.client));
        asio_stream b(std::move(sockets.server));
        const char hello[] = "hello, primary";
        auto wrote = co_await await_kj(*rt, a.write(hello, sizeof hello));
        EXPECT_TRUE(wrote.ok());
        char buffer[64] = {};
        auto read = co_await await_kj(*rt, b.tryRead(buffer, sizeof hello, sizeof buffer));
        EXPECT_EQ(read.value.value_or(0), sizeof hello);
        EXPECT_EQ(a.written_bytes(), sizeof hello);
        co_return std::string(buffer);
    }());
    EXPECT_EQ(received, "hello, primary");
}

TEST(AsioStream, ReportsEndOfStreamAsAShortRead) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    size_t n = test::run(io, [&]() -> asio::awaitable<size_t> {
        auto sockets = co_await connect_loopback();
        asio_stream a(std::move(sockets.client));
        asio_stream b(std::move(sockets.server));
        auto wrote = co_await await_kj(*rt, a.write("ab", 2));
        EXPECT_TRUE(wrote.ok());
        a.shutdownWrite();
        char buffer[8];
        auto read = co_await await_kj(*rt, b.tryRead(buffer, 8, 8));
        co_return read.value.value_or(99);
    }());
    EXPECT_EQ(n, 2u);
}

TEST(AsioStream, CancellingAReadLeavesTheOtherDirectionWorking) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    std::string echoed = test::run(io, [&]() -> asio::awaitable<std::string> {
        auto sockets = co_await connect_loopback();
        asio_stream a(std::move(sockets.client));
        asio_stream b(std::move(sockets.server));
        char stray[8];
        {
            // Start a read on `a` that nothing will satisfy, then drop it.
            auto pending = a.tryRead(stray, 1, sizeof stray);
            asio::steady_timer next(co_await asio::this_coro::executor, std::chrono::steady_clock::now());
            co_await next.async_wait(asio::use_awaitable);
        }
        // `a` still writes and, with a fresh read, still reads.
        auto wrote = co_await await_kj(*rt, a.write("ping", 4));
        EXPECT_TRUE(wrote.ok());
        char buffer[4];
        auto got = co_await await_kj(*rt, b.tryRead(buffer, 4, 4));
        EXPECT_EQ(got.value.value_or(0), 4u);
        auto back = co_await await_kj(*rt, b.write("pong", 4));
        EXPECT_TRUE(back.ok());
        auto reply = co_await await_kj(*rt, a.tryRead(buffer, 4, 4));
        EXPECT_EQ(reply.value.value_or(0), 4u);
        co_return std::string(buffer, 4);
    }());
    EXPECT_EQ(echoed, "pong");
}

TEST(CapnpOverAsio, PingsOverLoopbackInOneProcess) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    int pings = 0;
    test::run(io, [&]() -> asio::awaitable<void> {
        rpc_pair rpc(co_await connect_loopback(), pings);
        for (int i = 0; i < 100; ++i) {
            auto reply = co_await await_kj(*rt, rpc.session.pingRequest().send());
            EXPECT_TRUE(reply.ok());
        }
    }());
    EXPECT_EQ(pings, 100);
}

TEST(CapnpOverAsio, CancellingACallReportsCancelledAndTheConnectionStaysUsable) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    int pings = 0;
    test::run(io, [&]() -> asio::awaitable<void> {
        rpc_pair rpc(co_await connect_loopback(), pings);
        asio::cancellation_signal cancel;
        auto ex = co_await asio::this_coro::executor;
        std::optional<bool> cancelled;
        asio::co_spawn(ex,
                       await_kj(*rt, rpc.session.pingRequest().send()),
                       asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr, auto outcome) {
                           cancelled = outcome.cancelled;
                       }));
        cancel.emit(asio::cancellation_type::terminal);
        while (!cancelled) {
            asio::steady_timer next(ex, std::chrono::steady_clock::now());
            co_await next.async_wait(asio::use_awaitable);
        }
        EXPECT_TRUE(*cancelled);
        auto reply = co_await await_kj(*rt, rpc.session.pingRequest().send());
        EXPECT_TRUE(reply.ok());
    }());
}

TEST(CapnpOverAsio, AnExpiredTimerFiresWhileAThousandCallsAreInFlight) {
    asio::io_context io;
    auto rt = kj_runtime::for_current_thread(io);
    int pings = 0;
    int pings_when_timer_fired = -1;
    test::run(io, [&]() -> asio::awaitable<void> {
        rpc_pair rpc(co_await connect_loopback(), pings);
        kj::Vector<kj::Promise<void>> calls;
        for (int i = 0; i < 1000; ++i) calls.add(rpc.session.pingRequest().send().ignoreResult());
        asio::steady_timer expired(co_await asio::this_coro::executor, std::chrono::steady_clock::now());
        expired.async_wait([&](std::error_code) { pings_when_timer_fired = pings; });
        auto all = co_await await_kj(*rt, kj::joinPromises(calls.releaseAsArray()));
        EXPECT_TRUE(all.ok());
    }());
    EXPECT_EQ(pings, 1000);
    EXPECT_GE(pings_when_timer_fired, 0);
    EXPECT_LT(pings_when_timer_fired, 1000);
}

}  // namespace
}  // namespace flypg::rpc::detail
