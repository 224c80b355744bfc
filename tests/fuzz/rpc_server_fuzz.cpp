// The RPC server as a peer on the network meets it. One primary-region node serves every input on
// loopback; the first byte says how the rest reaches it:
//   even: as the first bytes of a fresh connection (the handshake: the frame guard, Cap'n Proto's
//         reader, hello and authenticate with whatever they carry);
//   odd:  after a real client completed the handshake, so the bytes reach the Session (calls,
//         forwarded writes, transactions) of an authenticated peer.
// Either way the client then half-closes and waits for the server to end the connection. The node
// must keep serving: every odd input starts with a handshake that must succeed, and a server that
// holds a half-closed connection past its budget is a finding too.
#include <sys/socket.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flypg/rpc/node.hpp"
#include "flypg/rpc/write.hpp"
#include "rpc/context.hpp"
#include "rpc/kj_bridge.hpp"
#include "rpc/kj_runtime.hpp"
#include "rpc/peer.hpp"

namespace {

using namespace std::chrono_literals;
using tcp = asio::ip::tcp;
namespace rpc = flypg::rpc;
namespace detail = flypg::rpc::detail;
using namespace asio::experimental::awaitable_operators;

using wire_session = flypg::rpc::wire::Session::Client;

constexpr const char* secret = "fuzz-cluster-secret-0123456789abcdef";
constexpr auto budget = 2s;  // for one input, from connect to the server closing the connection

// Answers every statement with one empty result and commits at once: what is fuzzed is the
// server's handling of requests, not a database.
class instant_session final : public rpc::transaction_session {
  public:
    asio::awaitable<rpc::statement_result> execute(rpc::statement) override {
        co_return rpc::statement_result{};
    }
    asio::awaitable<std::uint64_t> commit() override { co_return 0x1000; }
    asio::awaitable<void> rollback() override { co_return; }
};

class instant_writes final : public rpc::write_executor {
  public:
    asio::awaitable<rpc::write_result> execute(std::vector<rpc::statement> statements) override {
        rpc::write_result out;
        out.results.resize(statements.size());
        out.commit_lsn = 0x1000;
        co_return out;
    }
    asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin() override {
        co_return std::make_unique<instant_session>();
    }
};

[[noreturn]] void broken(const char* what) {
    std::fprintf(stderr, "rpc_server_fuzz: %s\n", what);
    std::abort();
}

struct world {
    asio::io_context io;
    std::optional<rpc::node> server;
    tcp::endpoint endpoint;
    std::shared_ptr<detail::node_context> client = std::make_shared<detail::node_context>();

    world() {
        rpc::node_options o;
        o.listen_address = "127.0.0.1";
        o.listen_port = 0;
        o.region = "iad";
        o.primary_region = "iad";
        o.cluster_secret = secret;
        // The RPC protocol itself, as a clear link (Fly's network) exposes it; with TLS the bytes
        // would meet OpenSSL's record layer first, which OpenSSL's own fuzzers cover.
        o.link = rpc::link_security::clear;
        o.peers = std::vector<std::string>{};
        o.app_version = "fuzz";
        o.handshake_timeout = 1s;
        o.max_message_bytes = 1 << 20;
        o.writes = std::make_shared<instant_writes>();
        o.procedures.add(
            "echo",
            [](std::vector<rpc::value> args) -> asio::awaitable<std::vector<rpc::value>> { co_return args; });
        o.log = [](rpc::log_level, std::string_view) {
        };
        server.emplace(rpc::node::create(io, std::move(o)));
        asio::co_spawn(io, server->run(), asio::detached);
        endpoint = server->local_endpoint();

        client->runtime = detail::kj_runtime::for_current_thread(io);
        client->node_id = "fuzz-client";
        client->region_override = "ord";
        client->primary_override = "iad";
        client->app_version = "fuzz";
        client->protocol_version = rpc::protocol_version();
        client->secret = secret;
        client->max_message_bytes = 1 << 20;
        client->handshake_timeout = 1s;
        client->sink = [](rpc::log_level, std::string_view) {
        };
    }
};

world& the_world() {
    static world w;
    return w;
}

// Writes `bytes` on `fd` (blocking: loopback, and the server reads while we wait), then half-closes.
void send_and_half_close(int fd, const std::uint8_t* bytes, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::send(fd, bytes, size, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server closed the connection: it refused what it read
        bytes += n;
        size -= static_cast<std::size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
}

// Raw bytes on a fresh connection; then reads until the server closes it.
asio::awaitable<void> before_handshake(world& w, const std::uint8_t* bytes, std::size_t size) {
    tcp::socket socket(w.io);
    co_await socket.async_connect(w.endpoint, asio::use_awaitable);
    send_and_half_close(socket.native_handle(), bytes, size);
    std::vector<char> sink(4096);
    for (;;) {
        auto [ec, n] = co_await socket.async_read_some(asio::buffer(sink),
                                                       asio::experimental::as_tuple(asio::use_awaitable));
        if (ec) co_return;
    }
}

// The client's half of a real handshake, then raw bytes on the authenticated connection.
asio::awaitable<void> after_handshake(world& w, const std::uint8_t* bytes, std::size_t size) {
    tcp::socket socket(w.io);
    co_await socket.async_connect(w.endpoint, asio::use_awaitable);
    const int fd = socket.native_handle();
    auto conn = std::make_shared<detail::peer_connection>(w.client, std::move(socket), "fuzz server");
    if (co_await conn->handshake(std::chrono::steady_clock::now() + 1s) != detail::handshake_failure::none)
        broken("the server refused a correct handshake: it stopped serving");
    send_and_half_close(fd, bytes, size);
    (void)co_await detail::await_kj(*w.client->runtime, conn->on_disconnect());
}

// ---- seeds -------------------------------------------------------------------------------------
// FLYPG_RPC_FUZZ_SEEDS=<dir> rpc_server_fuzz records what a real client sends: its handshake (an
// even seed) and, after it, each kind of Session request (odd seeds), through a relay that keeps
// the client's bytes. tests/fuzz/corpus/rpc_server_fuzz was made this way.

// Accepts one connection on `relay`, connects it to the server and copies both ways; the client's
// bytes are appended to *into (which the recorder switches once the handshake is done).
asio::awaitable<void> relay_one(world& w, tcp::acceptor& relay, std::string** into) {
    tcp::socket client = co_await relay.async_accept(asio::use_awaitable);
    tcp::socket server(w.io);
    co_await server.async_connect(w.endpoint, asio::use_awaitable);
    auto pump = [](tcp::socket& from, tcp::socket& to, std::string** keep) -> asio::awaitable<void> {
        std::vector<char> buffer(4096);
        for (;;) {
            auto [ec, n] = co_await from.async_read_some(asio::buffer(buffer),
                                                         asio::experimental::as_tuple(asio::use_awaitable));
            if (ec) break;
            if (keep != nullptr) (*keep)->append(buffer.data(), n);
            co_await asio::async_write(to, asio::buffer(buffer.data(), n), asio::use_awaitable);
        }
        std::error_code ignored;
        to.shutdown(tcp::socket::shutdown_send, ignored);
    };
    auto up = pump(client, server, into);
    auto down = pump(server, client, nullptr);
    co_await (std::move(up) && std::move(down));
}

asio::awaitable<void> one_request(world& w, wire_session& session, const std::string& kind) {
    detail::kj_runtime& rt = *w.client->runtime;
    if (kind == "ping") {
        co_await detail::await_kj(rt, session.pingRequest().send().ignoreResult());
    } else if (kind == "call") {
        auto request = session.callRequest();
        request.setProcedure("echo");
        auto args = request.initArgs(4);
        args[0].setText("text");
        args[1].setInt64(-7);
        args[2].setNull();
        args[3].setFloat64(2.5);
        co_await detail::await_kj(rt, request.send().ignoreResult());
    } else if (kind == "write") {
        auto request = session.writeRequest();
        auto statement = request.initStatements(1)[0];
        statement.setSql("INSERT INTO t (a, b) VALUES ($1, $2)");
        auto params = statement.initParams(2);
        params[0].setInt32(1);
        params[1].setText("b");
        request.setDatabase("main");
        request.setRequestId("fuzz-request-1");
        co_await detail::await_kj(rt, request.send().ignoreResult());
    } else {
        auto begin = session.beginRequest();
        begin.setDatabase("main");
        auto transaction = begin.send().getTransaction();
        auto execute = transaction.executeRequest();
        execute.initStatement().setSql("UPDATE t SET a = a + 1");
        co_await detail::await_kj(rt, execute.send().ignoreResult());
        auto commit = transaction.commitRequest();
        commit.setRequestId("fuzz-request-2");
        co_await detail::await_kj(rt, commit.send().ignoreResult());
    }
}

void write_seed(const std::string& dir, const std::string& name, char mode, const std::string& bytes) {
    const std::string path = dir + "/" + name;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) broken("cannot write a seed file");
    std::fputc(mode, f);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    std::printf("rpc_server_fuzz: wrote %s (%zu bytes)\n", path.c_str(), bytes.size() + 1);
}

asio::awaitable<void> record(world& w, std::string dir) {
    for (const std::string kind : {"ping", "call", "write", "transaction"}) {
        tcp::acceptor relay(w.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        std::string handshake;
        std::string session;
        std::string* into = &handshake;
        asio::co_spawn(w.io, relay_one(w, relay, &into), asio::detached);
        tcp::socket socket(w.io);
        co_await socket.async_connect(relay.local_endpoint(), asio::use_awaitable);
        auto conn = std::make_shared<detail::peer_connection>(w.client, std::move(socket), "relay");
        if (co_await conn->handshake(std::chrono::steady_clock::now() + 1s) !=
            detail::handshake_failure::none)
            broken("the handshake failed while recording seeds");
        into = &session;
        co_await one_request(w, conn->session(), kind);
        conn->close();
        if (kind == "ping") write_seed(dir, "handshake", '\0', handshake);
        write_seed(dir, "session_" + kind, '\1', session);
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const char* dir = std::getenv("FLYPG_RPC_FUZZ_SEEDS");
    if (dir == nullptr) return 0;
    world& w = the_world();
    bool done = false;
    asio::co_spawn(w.io, record(w, dir), [&](std::exception_ptr e) {
        done = true;
        if (e) std::rethrow_exception(e);
    });
    while (!done) w.io.run_one_for(10ms);
    std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    world& w = the_world();
    bool done = false;
    auto input =
        (data[0] & 1) == 0 ? before_handshake(w, data + 1, size - 1) : after_handshake(w, data + 1, size - 1);
    asio::co_spawn(w.io, std::move(input), [&](std::exception_ptr e) {
        done = true;
        if (e) std::rethrow_exception(e);
    });
    const auto deadline = std::chrono::steady_clock::now() + budget;
    while (!done) {
        if (std::chrono::steady_clock::now() > deadline)
            broken("the server kept a half-closed connection open");
        w.io.run_one_for(10ms);
    }
    return 0;
}
