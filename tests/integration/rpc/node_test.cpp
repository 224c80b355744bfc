// RPC nodes in one process, talking over real loopback sockets: calls, regions, security, limits,
// cancellation, forwarded writes and transactions. No database: primary-region nodes use the
// in-memory executor.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>

#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"
#include "flypg/rpc/region.hpp"
#include "memory_executor.hpp"
#include "rpc_harness.hpp"

namespace flypg::rpc::test {
namespace {

using clock_type = std::chrono::steady_clock;

struct two_regions {
    harness h;
    std::shared_ptr<procedure_state> primary_state = std::make_shared<procedure_state>();
    std::shared_ptr<procedure_state> replica_state = std::make_shared<procedure_state>();
    std::shared_ptr<memory_executor> db = std::make_shared<memory_executor>();
    node* primary = nullptr;  // region iad, the primary region
    node* replica = nullptr;  // region ord, peers: the primary

    explicit two_regions(std::function<void(node_options&)> tweak_primary = {},
                         std::function<void(node_options&)> tweak_replica = {}) {
        auto p = fast_options("iad", "iad");
        add_test_procedures(p.procedures, primary_state, "primary");
        p.writes = db;
        if (tweak_primary) tweak_primary(p);
        primary = &h.start(std::move(p));
        auto r = fast_options("ord", "iad");
        add_test_procedures(r.procedures, replica_state, "replica");
        r.peers = std::vector<std::string>{address_of(*primary)};
        if (tweak_replica) tweak_replica(r);
        replica = &h.start(std::move(r));
    }

    void connect() { h.run(replica->wait_for_region("iad", 10s)); }
};

TEST(RpcNode, CallsAProcedureInThePrimaryRegionWithTypedValues) {
    two_regions t;
    t.connect();
    values args{value(null_value{}),
                value(true),
                value(std::int16_t{-7}),
                value(std::int32_t{70000}),
                value(std::int64_t{1} << 40),
                value(2.5),
                value(std::string("text with \0 nul", 15)),
                value(bytes{{0, 1, 255}})};
    auto reply = t.h.run(t.replica->call_primary("echo", args));
    EXPECT_EQ(reply, args);
    EXPECT_EQ(t.primary_state->calls, 1);
    EXPECT_EQ(t.replica_state->calls, 0);
}

TEST(RpcNode, CarriesLargeMessagesBothWays) {
    // Several MiB: partial sends, Asio writes of the rest, reads straight into capnp's buffers.
    two_regions t;
    t.connect();
    std::string big(6 * 1024 * 1024, 'x');
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
    values args{value(big), value(big)};
    auto reply = t.h.run(t.replica->call_primary("echo", args));
    EXPECT_EQ(reply, args);
    reply = t.h.run(t.replica->call_primary("big", values{value(std::int64_t{3 * 1024 * 1024})}));
    EXPECT_EQ(std::get<std::string>(reply.at(0)).size(), 3u * 1024 * 1024);
}

TEST(RpcNode, RunsLocallyWhenTheTargetRegionIsItsOwn) {
    two_regions t;
    // No connection needed: the primary region is the node's own.
    auto reply = t.h.run(t.primary->call_primary("whoami", {}));
    EXPECT_EQ(std::get<std::string>(reply.at(0)), "primary");
    reply = t.h.run(t.replica->call_region("ord", "whoami", {}));
    EXPECT_EQ(std::get<std::string>(reply.at(0)), "replica");
    EXPECT_EQ(t.replica_state->calls, 1);
}

// An executor that says it remembers request ids (as flypg's primary_service does).
class remembering_executor final : public write_executor {
  public:
    asio::awaitable<write_result> execute(std::vector<statement>) override { co_return write_result{}; }
    asio::awaitable<std::unique_ptr<transaction_session>> begin() override { co_return nullptr; }
    bool remembers_request_ids() const noexcept override { return true; }
};

TEST(RpcNode, PeersTellWhetherTheyRememberRequestIdsAndIdsGoOnlyToThoseWhoDo) {
    {
        two_regions plain;  // its executor cannot remember ids, as a node of an older version
        plain.connect();
        EXPECT_FALSE(plain.replica->remembers_request_ids("iad"));
        EXPECT_FALSE(plain.replica->peers().at(0).remembers_request_ids);
        // A write with an id is not sent to a node that would run a repeat again.
        std::vector<statement> writes;
        writes.push_back(statement{"INSERT 1", {}});
        call_options with_id(500ms);
        with_id.request_id = "r:0123";
        EXPECT_EQ(plain.h.run(error_of(plain.replica->forward_write(std::move(writes), with_id))),
                  errc::no_node_in_region);
    }
    two_regions remembering([](node_options& o) { o.writes = std::make_shared<remembering_executor>(); });
    remembering.connect();
    EXPECT_TRUE(remembering.replica->remembers_request_ids("iad"));
    EXPECT_FALSE(remembering.replica->remembers_request_ids("syd")) << "no node there at all";
}

TEST(RpcNode, ReportsNoNodeInAnUnknownRegion) {
    two_regions t;
    std::string message;
    auto code = t.h.run(error_of(t.replica->call_region("syd", "echo", {}), &message));
    EXPECT_EQ(code, errc::no_node_in_region);
    // fly_rpc's message first, then what the node knows: the regions it reaches.
    EXPECT_EQ(message.rfind("no node found running in region \"syd\"; ", 0), 0u) << message;
}

TEST(RpcNode, RemoteFailuresKeepTheirKind) {
    two_regions t;
    t.connect();
    try {
        t.h.run(t.replica->call_primary("sql_fail", values{value(std::string("23505"))}));
        FAIL() << "expected a SQL error";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::sqlstate("23505"));
        EXPECT_EQ(e.diag().server_message, "duplicate key value violates unique constraint");
        EXPECT_EQ(e.diag().detail, "Key (id)=(1) already exists.");
        EXPECT_EQ(e.diag().origin, flypg::origin::primary);
    }
    std::string message;
    auto code =
        t.h.run(error_of(t.replica->call_primary("fail", values{value(std::string("boom"))}), &message));
    EXPECT_EQ(code, errc::procedure_error);
    EXPECT_NE(message.find("procedure failed on purpose: boom"), std::string::npos) << message;
    code = t.h.run(error_of(t.replica->call_primary("no_such_procedure", {}), &message));
    EXPECT_EQ(code, errc::procedure_error);
    EXPECT_NE(message.find("no_such_procedure"), std::string::npos) << message;
}

TEST(RpcNode, TimesOutAfterTheDeadline) {
    two_regions t;
    t.connect();
    const auto start = clock_type::now();
    auto code = t.h.run(
        error_of(t.replica->call_primary("sleep_ms", values{value(std::int64_t{5000})}, within(200ms))));
    const auto elapsed = clock_type::now() - start;
    EXPECT_EQ(code, errc::timeout);
    EXPECT_GE(elapsed, 200ms);
    EXPECT_LT(elapsed, 2s);
    // The dropped call is cancelled on the primary too.
    EXPECT_TRUE(t.h.wait_until([&] { return t.primary_state->sleeper_cancelled; }));
}

TEST(RpcNode, CancellingAPendingCallCancelsItOnThePeer) {
    two_regions t;
    t.connect();
    asio::cancellation_signal cancel;
    std::optional<std::error_code> seen;
    asio::co_spawn(t.h.io,
                   error_of(t.replica->call_primary("sleep_ms", values{value(std::int64_t{10'000})})),
                   asio::bind_cancellation_slot(cancel.slot(),
                                                [&](std::exception_ptr, std::error_code ec) { seen = ec; }));
    ASSERT_TRUE(t.h.wait_until([&] { return t.primary_state->sleeper_started; }));
    cancel.emit(asio::cancellation_type::terminal);
    ASSERT_TRUE(t.h.wait_until([&] { return seen.has_value(); }, 2s));
    EXPECT_EQ(*seen, errc::cancelled);
    EXPECT_TRUE(t.h.wait_until([&] { return t.primary_state->sleeper_cancelled; }, 2s));
    // The connection stays usable.
    auto reply = t.h.run(t.replica->call_primary("whoami", {}));
    EXPECT_EQ(std::get<std::string>(reply.at(0)), "primary");
}

TEST(RpcNode, ForwardsWritesAndReturnsRowsAndTheCommitLsn) {
    two_regions t;
    t.connect();
    std::vector<statement> writes;
    writes.push_back(
        statement{"INSERT INTO t VALUES ($1, $2)", values{value(std::int64_t{1}), value(null_value{})}});
    writes.push_back(statement{"UPDATE t SET x = 1", {}});
    auto result = t.h.run(t.replica->forward_write(std::move(writes)));
    ASSERT_EQ(result.results.size(), 2u);
    EXPECT_EQ(result.results[0].columns.size(), 3u);
    EXPECT_EQ(result.results[0].columns[0].name, "sql");
    EXPECT_EQ(result.results[0].columns[0].type_oid, 25u);
    ASSERT_EQ(result.results[0].rows.size(), 1u);
    EXPECT_EQ(result.results[0].rows[0][0], "INSERT INTO t VALUES ($1, $2)");
    EXPECT_EQ(result.results[0].rows[0][1], "int64");
    EXPECT_EQ(result.results[0].rows[0][2], std::nullopt);
    EXPECT_EQ(result.results[1].affected_rows, 1u);
    EXPECT_EQ(result.commit_lsn, t.db->counters().next_lsn);
    EXPECT_EQ(t.db->counters().commits, 1);
}

TEST(RpcNode, ForwardedSqlFailuresArriveWithTheirSqlstate) {
    two_regions t;
    t.connect();
    std::vector<statement> writes;
    writes.push_back(statement{"fail 23505", {}});
    try {
        t.h.run(t.replica->forward_write(std::move(writes)));
        FAIL() << "expected a SQL error";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::sqlstate("23505"));
        EXPECT_EQ(e.diag().server_message, "simulated failure of \"fail 23505\"");
        EXPECT_EQ(e.diag().detail, "detail of the failure");
        EXPECT_EQ(e.diag().hint, "hint for the failure");
        EXPECT_EQ(e.diag().origin, flypg::origin::primary);
    }
    EXPECT_EQ(t.db->counters().commits, 0);
}

TEST(RpcNode, RemoteTransactionCommitsAndReturnsTheLsn) {
    two_regions t;
    t.connect();
    auto lsn = t.h.run([&]() -> asio::awaitable<std::uint64_t> {
        auto tx = co_await t.replica->begin_transaction();
        EXPECT_TRUE(tx.is_remote());
        auto first = co_await tx.execute(statement{"INSERT 1", {}});
        EXPECT_EQ(first.rows.at(0).at(0), "INSERT 1");
        std::vector<statement> more;
        more.push_back(statement{"INSERT 2", {}});
        more.push_back(statement{"INSERT 3", {value(true)}});
        auto rest = co_await tx.execute_pipelined(std::move(more));
        EXPECT_EQ(rest.size(), 2u);
        EXPECT_EQ(rest.at(1).rows.at(0).at(1), "bool");
        co_return co_await tx.commit();
    }());
    EXPECT_EQ(lsn, t.db->counters().next_lsn);
    EXPECT_EQ(t.db->counters().commits, 1);
    EXPECT_EQ(t.db->counters().statements, 3);
}

TEST(RpcNode, DroppingARemoteTransactionRollsItBack) {
    two_regions t;
    t.connect();
    t.h.run([&]() -> asio::awaitable<void> {
        auto tx = co_await t.replica->begin_transaction();
        co_await tx.execute(statement{"INSERT 1", {}});
        EXPECT_EQ(t.db->counters().sessions_open, 1);
    }());
    EXPECT_TRUE(t.h.wait_until([&] { return t.db->counters().rollbacks == 1; }));
    EXPECT_EQ(t.db->counters().sessions_open, 0);
    EXPECT_EQ(t.db->counters().commits, 0);
}

TEST(RpcNode, ASqlErrorInATransactionArrivesWithItsSqlstate) {
    two_regions t;
    t.connect();
    auto code = t.h.run([&]() -> asio::awaitable<std::error_code> {
        auto tx = co_await t.replica->begin_transaction();
        co_return co_await error_of(tx.execute(statement{"fail 40001", {}}));
    }());
    EXPECT_EQ(code, flypg::sqlstate("40001"));
    EXPECT_EQ(code, flypg::condition::retry_transaction);
}

TEST(RpcNode, LocalTransactionInThePrimaryRegion) {
    two_regions t;
    auto lsn = t.h.run([&]() -> asio::awaitable<std::uint64_t> {
        auto tx = co_await t.primary->begin_transaction();
        EXPECT_FALSE(tx.is_remote());
        co_await tx.execute(statement{"INSERT 1", {}});
        co_return co_await tx.commit();
    }());
    EXPECT_EQ(lsn, t.db->counters().next_lsn);
}

// The RPC handshake's own check of the secret, on clear links (Fly's private network); with TLS
// keyed by the secret, the TLS handshake refuses first (tls_test.cpp).
void clear_link(node_options& o) {
    o.link = link_security::clear;
}

TEST(RpcNode, WrongSecretIsRefusedAndLogged) {
    two_regions t(clear_link, [](node_options& o) {
        clear_link(o);
        o.cluster_secret = "another-secret-0123456789abcdef";
    });
    // The primary refuses the replica; the replica sees that the primary does not prove its secret.
    ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(1).contains("did not prove the cluster secret"); }));
    EXPECT_TRUE(t.replica->peers().empty());
    auto code = t.h.run(error_of(t.replica->call_primary("echo", {})));
    EXPECT_EQ(code, errc::no_node_in_region);
}

TEST(RpcNode, APeerWithoutTheSecretIsRefusedByTheServer) {
    // Both sides in development mode would accept each other; here only the client lacks the
    // secret, so the server logs the refusal.
    two_regions t(clear_link, [](node_options& o) {
        clear_link(o);
        o.cluster_secret = "";
        o.secret = secret_policy::allow_missing;
    });
    ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(1).contains("did not prove"); }));
    auto code = t.h.run(error_of(t.replica->call_primary("echo", {})));
    EXPECT_EQ(code, errc::no_node_in_region);
}

TEST(RpcNode, RefusesToStartWithoutASecretOutsideDevelopment) {
    asio::io_context io;
    ::unsetenv("FLYPG_CLUSTER_SECRET");
    ::unsetenv("FLYPG_ENV");
    auto options = fast_options("iad", "iad");
    options.cluster_secret.reset();
    try {
        (void)node::create(io, options);
        FAIL() << "a node without a secret must not start";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), errc::unauthenticated);
        EXPECT_NE(std::string(e.what()).find("FLYPG_CLUSTER_SECRET"), std::string::npos);
    }
    ::setenv("FLYPG_ENV", "dev", 1);
    EXPECT_NO_THROW((void)node::create(io, options));
    ::unsetenv("FLYPG_ENV");
    options.cluster_secret = "short";
    EXPECT_THROW((void)node::create(io, options), flypg::error);
}

TEST(RpcNode, RefusesARequestOverTheMessageLimitBeforeSendingIt) {
    two_regions t({}, [](node_options& o) { o.max_message_bytes = 64 * 1024; });
    t.connect();
    std::string message;
    auto code = t.h.run(
        error_of(t.replica->call_primary("echo", values{value(std::string(100 * 1024, 'x'))}), &message));
    EXPECT_EQ(code, errc::overloaded);
    EXPECT_NE(message.find("nothing was sent"), std::string::npos) << message;
    EXPECT_EQ(t.primary_state->calls, 0);
    // A result over the limit is refused by the peer that would send it.
    code = t.h.run(error_of(t.replica->call_primary("big", values{value(std::int64_t{20 * 1024 * 1024})})));
    EXPECT_EQ(code, errc::overloaded);
}

TEST(RpcNode, APeerDisconnectsAMessageOverItsLimitAndKeepsServing) {
    // The primary accepts at most 64 KiB; the replica's own limit is larger, so it sends.
    two_regions t([](node_options& o) { o.max_message_bytes = 64 * 1024; });
    t.connect();
    auto code =
        t.h.run(error_of(t.replica->call_primary("echo", values{value(std::string(200 * 1024, 'x'))})));
    EXPECT_TRUE(code == errc::outcome_unknown || code == errc::transport_error) << code.message();
    EXPECT_EQ(t.primary_state->calls, 0);
    // The replica reconnects and small calls work again.
    ASSERT_TRUE(t.h.wait_until([&] {
        auto peers = t.replica->peers();
        return !peers.empty() && peers.front().healthy;
    }));
    t.connect();
    auto reply = t.h.run(t.replica->call_primary("whoami", {}));
    EXPECT_EQ(std::get<std::string>(reply.at(0)), "primary");
}

TEST(RpcNode, AnswersOverloadedPastTheInFlightLimit) {
    two_regions t([](node_options& o) { o.max_in_flight_per_peer = 2; });
    t.connect();
    std::vector<std::optional<std::error_code>> results(3);
    for (int i = 0; i < 2; ++i) {
        asio::co_spawn(
            t.h.io,
            error_of(t.replica->call_primary("block", {})),
            [&, i](std::exception_ptr, std::error_code ec) { results[static_cast<std::size_t>(i)] = ec; });
    }
    ASSERT_TRUE(t.h.wait_until([&] { return t.primary_state->blocked == 2; }));
    auto code = t.h.run(error_of(t.replica->call_primary("echo", {})));
    EXPECT_EQ(code, errc::overloaded);
    EXPECT_EQ(code, flypg::condition::retry_call);
    t.primary_state->gate->cancel();
    ASSERT_TRUE(t.h.wait_until([&] { return results[0] && results[1]; }));
    EXPECT_FALSE(*results[0]);
    EXPECT_FALSE(*results[1]);
    // Below the limit again.
    EXPECT_NO_THROW(t.h.run(t.replica->call_primary("echo", {})));
}

TEST(RpcNode, SkipsAPeerOfAnotherProtocolVersionWithALogLine) {
    two_regions t([](node_options& o) { o.advertised_protocol_version = protocol_version() + 1; });
    ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(1).contains("speaks protocol version"); }));
    EXPECT_TRUE(t.h.logs(1).contains("skipping peer"));
    EXPECT_TRUE(t.replica->peers().empty());
    auto code = t.h.run(error_of(t.replica->call_primary("echo", {})));
    EXPECT_EQ(code, errc::no_node_in_region);
}

TEST(RpcNode, DiscoversRegionsAmongThreeNodesInTwoRegions) {
    harness h;
    auto a_state = std::make_shared<procedure_state>();
    auto b_state = std::make_shared<procedure_state>();
    auto c_state = std::make_shared<procedure_state>();
    auto b_options = fast_options("iad", "iad");
    add_test_procedures(b_options.procedures, b_state, "b");
    node& b = h.start(std::move(b_options));
    auto c_options = fast_options("ord", "iad");
    add_test_procedures(c_options.procedures, c_state, "c");
    c_options.peers = std::vector<std::string>{address_of(b)};
    node& c = h.start(std::move(c_options));
    auto a_options = fast_options("ord", "iad");
    add_test_procedures(a_options.procedures, a_state, "a");
    a_options.peers = std::vector<std::string>{address_of(b), address_of(c)};
    node& a = h.start(std::move(a_options));

    h.run(a.wait_for_region("iad", 10s));
    h.run(a.wait_for_region("ord", 10s));
    auto peers = a.peers();
    ASSERT_EQ(peers.size(), 2u);
    std::map<std::string, std::string> region_of;
    for (const auto& p : peers) region_of[p.node_id] = p.region;
    EXPECT_EQ(region_of[b.node_id()], "iad");
    EXPECT_EQ(region_of[c.node_id()], "ord");
    // The primary region is reached over RPC; a's own region runs locally even though c is there.
    EXPECT_EQ(std::get<std::string>(h.run(a.call_primary("whoami", {})).at(0)), "b");
    EXPECT_EQ(std::get<std::string>(h.run(a.call_region("ord", "whoami", {})).at(0)), "a");
    EXPECT_EQ(c_state->calls, 0);
    // c found b by itself.
    h.run(c.wait_for_region("iad", 10s));
}

TEST(RpcNode, ForgetsALostPeerAndReconnectsWhenItReturns) {
    harness h;
    auto state = std::make_shared<procedure_state>();
    auto p_options = fast_options("iad", "iad");
    add_test_procedures(p_options.procedures, state, "p1");
    node& p = h.start(std::move(p_options));
    const auto port = p.local_endpoint().port();
    auto r_options = fast_options("ord", "iad");
    r_options.peers = std::vector<std::string>{address_of(p)};
    node& r = h.start(std::move(r_options));
    h.run(r.wait_for_region("iad", 10s));

    h.stop(0);
    ASSERT_TRUE(h.wait_until([&] { return r.peers().empty(); }));
    auto code = h.run(error_of(r.call_primary("whoami", {})));
    EXPECT_EQ(code, errc::no_node_in_region);

    auto again = fast_options("iad", "iad");
    again.listen_port = port;
    add_test_procedures(again.procedures, state, "p2");
    h.start(std::move(again));
    h.run(r.wait_for_region("iad", 10s));
    EXPECT_EQ(std::get<std::string>(h.run(r.call_primary("whoami", {})).at(0)), "p2");
}

TEST(RpcNode, RecognisesItselfAmongItsPeers) {
    // Listening on every address, a node reached through 127.0.0.1 cannot tell by address that
    // the peer is itself; the handshake's node id does.
    std::uint16_t port = 0;
    {
        asio::io_context scratch;
        asio::ip::tcp::acceptor probe(scratch,
                                      asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        port = probe.local_endpoint().port();
    }
    harness h;
    auto options = fast_options("iad", "iad");
    options.listen_address = "0.0.0.0";
    options.listen_port = port;
    options.peers = std::vector<std::string>{"127.0.0.1:" + std::to_string(port)};
    node& n = h.start(std::move(options));
    ASSERT_TRUE(h.wait_until([&] { return h.logs(0).contains("is this node"); }));
    EXPECT_TRUE(n.peers().empty());
}

TEST(RpcNode, ResolvesPeerHostNamesAndReadsPeersFromTheEnvironment) {
    harness h;
    auto state = std::make_shared<procedure_state>();
    auto p_options = fast_options("iad", "iad");
    add_test_procedures(p_options.procedures, state, "p");
    node& p = h.start(std::move(p_options));
    // A host name (resolved with Asio's resolver, again every resolve_interval) from FLYPG_PEERS.
    ::setenv("FLYPG_PEERS", (" localhost:" + std::to_string(p.local_endpoint().port()) + ",").c_str(), 1);
    auto r_options = fast_options("ord", "iad");
    r_options.peers.reset();
    node& r = h.start(std::move(r_options));
    ::unsetenv("FLYPG_PEERS");
    h.run(r.wait_for_region("iad", 10s));
    EXPECT_EQ(std::get<std::string>(h.run(r.call_primary("whoami", {})).at(0)), "p");
}

TEST(RpcNode, RejectsBadOptionsNamingThem) {
    asio::io_context io;
    auto options = fast_options("iad", "iad");
    options.peers = std::vector<std::string>{"127.0.0.1:notaport"};
    try {
        (void)node::create(io, options);
        FAIL();
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), errc::invalid_argument);
        EXPECT_NE(std::string(e.what()).find("127.0.0.1:notaport"), std::string::npos) << e.what();
    }
    options = fast_options("iad", "iad");
    options.listen_address = "not-an-address";
    EXPECT_THROW((void)node::create(io, options), flypg::error);
    options = fast_options("iad", "iad");
    options.max_message_bytes = 10;
    EXPECT_THROW((void)node::create(io, options), flypg::error);
    options = fast_options("iad", "iad");
    options.heartbeat_timeout = options.heartbeat_interval;
    try {
        (void)node::create(io, options);
        FAIL();
    } catch (const flypg::error& e) {
        EXPECT_NE(std::string(e.what()).find("heartbeat_timeout (200 ms) is below twice"), std::string::npos)
            << e.what();
    }
    options = fast_options("iad", "iad");
    options.peers.reset();
    ::setenv("FLYPG_PEERS", "[::1", 1);
    try {
        (void)node::create(io, options);
        FAIL();
    } catch (const flypg::error& e) {
        EXPECT_NE(std::string(e.what()).find("FLYPG_PEERS entry \"[::1\""), std::string::npos) << e.what();
    }
    ::unsetenv("FLYPG_PEERS");
}

// A node that has run for a while (its heartbeat timers armed at the default 2 s interval, its
// reconnect backoff grown) stops promptly: run() returns once its own work is cancelled, without
// waiting out a timer. Before, it took up to a heartbeat interval (0.9-3 s in applications).
TEST(RpcNode, StopsPromptlyWithPeersConnectedAfterRunningAWhile) {
    auto defaults = [](node_options& o) {
        const node_options d;
        o.heartbeat_interval = d.heartbeat_interval;
        o.reconnect_min = d.reconnect_min;
        o.reconnect_max = d.reconnect_max;
        o.resolve_interval = d.resolve_interval;
    };
    two_regions t(defaults, defaults);
    t.connect();
    asio::steady_timer a_while(t.h.io, 2500ms);
    t.h.run(a_while.async_wait(asio::use_awaitable));
    for (std::size_t index : {std::size_t{1}, std::size_t{0}}) {
        const auto asked = clock_type::now();
        t.h.stop(index);
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - asked);
        std::printf(
            "node %zu stopped %lld ms after cancellation\n", index, static_cast<long long>(took.count()));
        // The 100 ms goal is checked by the figure printed above; the bound here only catches a
        // wait for a timer (seconds), not a slow machine.
        EXPECT_LT(took, 1000ms) << "node " << index << " waited for something after cancellation";
    }
}

TEST(Regions, ReadTheEnvironmentOnEveryCall) {
    ::unsetenv("FLY_REGION");
    ::unsetenv("MY_REGION");
    ::unsetenv("PRIMARY_REGION");
    EXPECT_EQ(my_region(), "local");
    EXPECT_EQ(primary_region(), "local");
    EXPECT_TRUE(is_primary());
    ::setenv("MY_REGION", "ord", 1);
    EXPECT_EQ(my_region(), "ord");
    ::setenv("FLY_REGION", "fra", 1);
    EXPECT_EQ(my_region(), "fra");
    ::setenv("PRIMARY_REGION", "fra", 1);
    EXPECT_TRUE(is_primary());
    ::setenv("PRIMARY_REGION", "iad", 1);
    EXPECT_FALSE(is_primary());
    ::unsetenv("FLY_REGION");
    ::unsetenv("MY_REGION");
    ::unsetenv("PRIMARY_REGION");
}

}  // namespace
}  // namespace flypg::rpc::test
