// A primary-region node (flypg_repo_test_node, in its own process, on the real primary) under
// hostile and churning peers: raw sockets for garbage and oversized frames, a Cap'n Proto client
// of the test's own for malformed handshakes, real flypg nodes for churn. After each attack the
// node must still run and serve a legitimate replica-region node's forwarded write.
//
// FLYPG_HOSTILE_LONG=1 runs the long mode (10,000 framed-garbage connections, 1,000 authenticated
// peers dropping at once), meant for the AddressSanitizer build.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <asio.hpp>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <list>
#include <random>
#include <sstream>
#include <thread>

#include "flypg.capnp.h"
#include "repo_world.hpp"
#include "rpc/auth.hpp"

namespace {

using namespace flypg::test::repo_world;
namespace wire = flypg::rpc::wire;

bool long_mode() {
    const char* v = std::getenv("FLYPG_HOSTILE_LONG");
    return v != nullptr && std::string(v) == "1";
}

// ---- raw sockets (blocking, on the test's thread; the node is another process) ----------------

class raw_connection {
  public:
    explicit raw_connection(std::uint16_t port) : socket_(io_) {
        socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    }

    /// Sends all of `bytes`; false when the node closed the connection first.
    bool send(const std::vector<std::uint8_t>& bytes) {
        std::error_code ec;
        asio::write(socket_, asio::buffer(bytes), ec);
        return !ec;
    }

    /// Whether the node closed the connection within `limit` (end of stream or reset).
    bool closed_by_node(std::chrono::milliseconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        std::array<char, 4096> sink{};
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{socket_.native_handle(), POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            const auto n = ::recv(socket_.native_handle(), sink.data(), sink.size(), 0);
            if (n <= 0) return true;
        }
        return false;
    }

  private:
    asio::io_context io_;
    asio::ip::tcp::socket socket_;
};

// A Cap'n Proto stream frame: one segment of `words` words (its header only).
std::vector<std::uint8_t> frame_header(std::uint32_t words) {
    std::vector<std::uint8_t> out(8, 0);
    for (int i = 0; i < 4; ++i) out[4 + i] = static_cast<std::uint8_t>(words >> (8 * i));
    return out;
}

// ---- a Cap'n Proto client of the test's own, on a thread with its own KJ event loop ------------

struct hello_fields {
    std::string node_id = "hostile-test-client";
    std::string region = "syd";
    std::string app_version = "test";
};

/// Runs `script` against the node's bootstrap capability on a thread of its own (KJ allows one
/// event loop per thread, and the test's thread hosts flypg's). Returns what the script returned,
/// or the text of the exception it threw.
std::string with_capnp_client(std::uint16_t port,
                              std::function<std::string(wire::Bootstrap::Client&, kj::WaitScope&)> script) {
    std::string outcome;
    std::thread client([&] {
        try {
            auto io = kj::setupAsyncIo();
            auto address = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope);
            auto stream = address->connect().wait(io.waitScope);
            capnp::TwoPartyClient rpc(*stream);
            auto bootstrap = rpc.bootstrap().castAs<wire::Bootstrap>();
            outcome = script(bootstrap, io.waitScope);
        } catch (const kj::Exception& e) {
            outcome = std::string("exception: ") + e.getDescription().cStr();
        } catch (const std::exception& e) {
            outcome = std::string("exception: ") + e.what();
        }
    });
    client.join();
    return outcome;
}

capnp::Data::Reader data_of(std::span<const std::uint8_t> bytes) {
    return {bytes.data(), bytes.size()};
}

// Sends hello with `fields`; returns "ok" or the exception's text.
std::string send_hello(wire::Bootstrap::Client& bootstrap, kj::WaitScope& wait, const hello_fields& fields) {
    auto req = bootstrap.helloRequest();
    auto id = req.initIdentity();
    id.setNodeId(fields.node_id);
    id.setRegion(fields.region);
    id.setAppVersion(fields.app_version);
    id.setProtocolVersion(flypg::rpc::protocol_version());
    const auto challenge = flypg::rpc::detail::random_challenge();
    req.setChallenge(data_of(challenge));
    req.send().wait(wait);
    return "ok";
}

// ---- the node under attack and the legitimate peer ------------------------------------------------

class HostilePeers : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        // The attacks aim at the RPC protocol itself, as it runs on a clear link (Fly's private
        // network); one test repeats the garbage against TLS. Node processes inherit this.
        ::setenv("FLYPG_RPC_TLS", "off", 1);
        asio::io_context io;
        create_table(io, flypg::test::primary_conninfo(), flypg::test::replica_conninfo());
    }

    void start_node(std::vector<std::string> extra = {}) {
        node = std::make_unique<region_node_process>(primary_node_args(std::move(extra)));
    }

    // The node still runs and a legitimate replica-region node completes a forwarded write
    // through it, readable right after.
    void expect_node_serves_a_forwarded_write() {
        ASSERT_TRUE(node->running()) << "the node " << node->how_it_ended() << "\n" << node->log();
        replica_region legit(io, {node->address()});
        const std::string note = std::string("legit after ") +
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name() + " " +
                                 std::to_string(::getpid());
        run(io, [&]() -> asio::awaitable<void> {
            co_await legit.node->wait_for_region("ams", 10s);
            flypg::sql::column_values row{{"note", note}};
            flypg::write_result w = co_await legit.db->insert(table_name(), std::move(row));
            EXPECT_EQ(w.route, flypg::write_route::forwarded);
            EXPECT_TRUE(w.replicated);
            flypg::sql::where filter("note = $1", flypg::pg::params{note});
            EXPECT_EQ(co_await legit.db->count(table_name(), std::move(filter)), 1);
        }());
        EXPECT_TRUE(node->running()) << node->log();
    }

    // Waits (up to 10 s) until the node's log holds `text`.
    bool wait_for_log(const std::string& text) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (node->log().find(text) != std::string::npos) return true;
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }

    void framed_garbage_leaves_the_node_up();

    asio::io_context io;
    std::unique_ptr<region_node_process> node;
};

// Rounds of 50 connections, each sending a well-framed message of random words, while a
// legitimate node writes through the attacked one the whole time.
void HostilePeers::framed_garbage_leaves_the_node_up() {
    start_node();
    const int rounds = long_mode() ? 200 : 10;
    std::atomic<bool> attack_over{false};
    std::string attack_failure;
    int closed = 0;
    std::thread attacker([&] {
        try {
            std::mt19937 rng(42);
            for (int round = 0; round < rounds; ++round) {
                std::list<raw_connection> batch;
                for (int i = 0; i < 50; ++i) {
                    auto bytes = frame_header(8);
                    for (int b = 0; b < 64; ++b) bytes.push_back(static_cast<std::uint8_t>(rng()));
                    batch.emplace_back(node->port()).send(bytes);
                }
                // Half wait for the node to give up on them, half leave at once.
                int i = 0;
                for (auto& c : batch)
                    if (i++ % 2 == 0 && c.closed_by_node(5s)) ++closed;
            }
        } catch (const std::exception& e) {
            attack_failure = e.what();
        }
        attack_over = true;
    });
    int writes = 0;
    std::string write_failure;
    try {
        replica_region legit(io, {node->address()});
        run(
            io,
            [&]() -> asio::awaitable<void> {
                co_await legit.node->wait_for_region("ams", 10s);
                while (!attack_over) {
                    flypg::sql::column_values row{
                        {"note",
                         "beside garbage " + std::to_string(::getpid()) + " " + std::to_string(writes)}};
                    co_await legit.db->insert(table_name(), std::move(row));
                    ++writes;
                }
            }(),
            600s);
    } catch (const std::exception& e) {
        write_failure = e.what();
    }
    attacker.join();
    EXPECT_EQ(attack_failure, "");
    EXPECT_EQ(write_failure, "") << "after " << writes << " writes";
    EXPECT_EQ(closed, rounds * 25);
    EXPECT_GT(writes, 0);
    expect_node_serves_a_forwarded_write();
}

TEST_F(HostilePeers, FramedGarbageBeforeTheHandshakeLeavesTheNodeUp) {
    framed_garbage_leaves_the_node_up();
}

// The same garbage at a node whose links are TLS: OpenSSL refuses it before Cap'n Proto sees it.
TEST_F(HostilePeers, GarbageAtATlsNodeIsRefusedByTlsAndLeavesTheNodeUp) {
    ::setenv("FLYPG_RPC_TLS", "psk", 1);
    framed_garbage_leaves_the_node_up();
    EXPECT_TRUE(wait_for_log("TLS handshake failed")) << node->log();
    ::setenv("FLYPG_RPC_TLS", "off", 1);
}

TEST_F(HostilePeers, AuthenticatedPeersDroppingAtOnceLeaveTheNodeUp) {
    start_node();
    const int rounds = long_mode() ? 20 : 3;
    for (int round = 0; round < rounds; ++round) {
        std::list<flypg::rpc::node> peers;
        std::list<asio::cancellation_signal> stops;
        int stopped = 0;
        for (int i = 0; i < 50; ++i) {
            peers.push_back(flypg::rpc::node::create(io, node_options_in("syd", {node->address()})));
            asio::co_spawn(io,
                           peers.back().run(),
                           asio::bind_cancellation_slot(stops.emplace_back().slot(),
                                                        [&stopped](std::exception_ptr) { ++stopped; }));
        }
        run(io, [&]() -> asio::awaitable<void> {
            for (auto& p : peers) co_await p.wait_for_region("ams", 20s);
        }());
        // All at once, as a rolling restart of a region's nodes does it.
        for (auto& s : stops) s.emit(asio::cancellation_type::terminal);
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (stopped < 50 && std::chrono::steady_clock::now() < deadline) io.run_one_for(50ms);
        ASSERT_EQ(stopped, 50);
        peers.clear();
        io.restart();
        io.poll();
        ASSERT_TRUE(node->running()) << "round " << round << ": the node " << node->how_it_ended() << "\n"
                                     << node->log();
    }
    expect_node_serves_a_forwarded_write();
}

TEST_F(HostilePeers, AHelloThatStallsDoesNotStopLaterHandshakesOfAnIdleNode) {
    start_node({"--handshake_timeout_ms=300"});
    const std::string outcome =
        with_capnp_client(node->port(), [](wire::Bootstrap::Client& bootstrap, kj::WaitScope& wait) {
            send_hello(bootstrap, wait, hello_fields{});
            // Stalls: no authenticate. The node closes the connection at its handshake timeout.
            std::this_thread::sleep_for(1s);
            return std::string("stalled");
        });
    EXPECT_EQ(outcome, "stalled");
    ASSERT_TRUE(wait_for_log("no handshake within")) << node->log();
    // Nothing else talks to the node meanwhile: the next handshake must run on its own.
    expect_node_serves_a_forwarded_write();
}

TEST_F(HostilePeers, AnOversizedMessageBeforeTheHandshakeIsRefusedBeforeItCostsMemory) {
    start_node();
    const long rss_before = node->rss_kib();
    // 32 connections each announce a 16 MiB message and try to send all of it (without the guard,
    // the node would fill 32 buffers of 16 MiB: 512 MiB).
    std::list<raw_connection> batch;
    for (int i = 0; i < 32; ++i) batch.emplace_back(node->port()).send(frame_header(2 * 1024 * 1024));
    int refused = 0;
    const std::vector<std::uint8_t> mebibyte(1024 * 1024, 0x5a);
    for (auto& c : batch) {
        int sent = 0;
        while (sent < 16 && c.send(mebibyte)) ++sent;
        if (sent < 16 || c.closed_by_node(5s)) ++refused;
    }
    EXPECT_EQ(refused, 32);
    const long grown = node->rss_kib() - rss_before;
    std::printf("32 connections announcing 16 MiB each before the handshake: the node grew by %ld KiB\n",
                grown);
    EXPECT_LT(grown, 16 * 1024) << "the node's RSS grew by " << grown << " KiB for 32 refused messages";
    EXPECT_TRUE(wait_for_log("bytes (at most 8192 before the handshake)")) << node->log();
    expect_node_serves_a_forwarded_write();
}

TEST_F(HostilePeers, ConnectionsInTheHandshakeAreCapped) {
    start_node({"--max_unauthenticated=4"});
    std::list<raw_connection> idle;
    for (int i = 0; i < 4; ++i) idle.emplace_back(node->port());
    // The fifth waits in the handshake beside four others: it is closed at once.
    std::this_thread::sleep_for(100ms);
    raw_connection over(node->port());
    EXPECT_TRUE(over.closed_by_node(5s));
    EXPECT_TRUE(wait_for_log("node_options::max_unauthenticated_connections")) << node->log();
    for (auto& c : idle) EXPECT_FALSE(c.closed_by_node(50ms));
    // Once they leave, there is room again.
    idle.clear();
    std::this_thread::sleep_for(200ms);
    expect_node_serves_a_forwarded_write();
}

TEST_F(HostilePeers, WhatAPeerSaysAboutItselfIsCheckedBeforeItReachesTheLog) {
    start_node();
    const std::string forged = "evil\nFAKE-LOG-LINE authenticated peer (node x, region ams)";
    for (const auto& fields : {hello_fields{forged, "syd", "test"},
                               hello_fields{std::string(2000, 'n'), "syd", "test"},
                               hello_fields{"ok-node", "syd\x1b[2J", "test"},
                               hello_fields{"ok-node", "syd", "v1\n2"}}) {
        const std::string outcome =
            with_capnp_client(node->port(), [&](wire::Bootstrap::Client& bootstrap, kj::WaitScope& wait) {
                return send_hello(bootstrap, wait, fields);
            });
        EXPECT_NE(outcome.find("hello refused"), std::string::npos) << outcome;
    }
    // A node id of 4 MiB does not even fit in a handshake message.
    const std::string huge =
        with_capnp_client(node->port(), [](wire::Bootstrap::Client& bootstrap, kj::WaitScope& wait) {
            return send_hello(bootstrap, wait, hello_fields{std::string(4 << 20, 'n'), "syd", "test"});
        });
    EXPECT_NE(huge, "ok");
    // authenticate before hello is refused, and said so.
    const std::string early =
        with_capnp_client(node->port(), [](wire::Bootstrap::Client& bootstrap, kj::WaitScope& wait) {
            auto req = bootstrap.authenticateRequest();
            std::vector<std::uint8_t> proof(32, 1);
            req.setProof(data_of(proof));
            auto answer = req.send().wait(wait);
            return std::string(answer.getResult().isFailure() ? "refused" : "accepted");
        });
    EXPECT_EQ(early, "refused");
    ASSERT_TRUE(wait_for_log("authenticate before hello")) << node->log();
    ASSERT_TRUE(wait_for_log("before the handshake")) << node->log();

    std::istringstream lines(node->log());
    std::string line;
    int refusals = 0;
    while (std::getline(lines, line)) {
        EXPECT_NE(line.rfind("FAKE-LOG-LINE", 0), 0u) << "a peer forged a log line: " << line;
        EXPECT_LT(line.size(), 1024u) << "a peer made a long log line";
        EXPECT_EQ(line.find('\x1b'), std::string::npos) << "a peer put an escape sequence in the log";
        if (line.find("refused RPC peer") != std::string::npos) ++refusals;
    }
    EXPECT_GE(refusals, 4) << node->log();
    expect_node_serves_a_forwarded_write();
}

}  // namespace
