// The encrypted link between regions: TLS 1.3 keyed by the cluster secret (the default off Fly) or
// by certificates of the cluster's CA. Real nodes on loopback; a delay_proxy on the path tampers
// with a byte.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "delay_proxy_core.hpp"
#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"
#include "memory_executor.hpp"
#include "rpc_harness.hpp"
#include "test_certificates.hpp"

namespace flypg::rpc::test {
namespace {

// The defaults depend on these; each test starts without them and sets what it means to test.
void clean_environment() {
    for (const char* v : {"FLYPG_RPC_TLS",
                          "FLYPG_RPC_TLS_CERT",
                          "FLYPG_RPC_TLS_KEY",
                          "FLYPG_RPC_TLS_CA",
                          "FLY_APP_NAME",
                          "FLYPG_PEERS"})
        ::unsetenv(v);
}

class TlsLink : public ::testing::Test {
  protected:
    void SetUp() override { clean_environment(); }
    void TearDown() override { clean_environment(); }
};

/// A primary-region node (serving writes from memory) and a replica-region node whose only peer
/// is `peer_of_replica(primary)`: the primary itself, or a proxy in front of it.
struct linked_pair {
    harness h;
    std::shared_ptr<memory_executor> db = std::make_shared<memory_executor>();
    std::shared_ptr<procedure_state> procedures = std::make_shared<procedure_state>();
    node* primary = nullptr;
    node* replica = nullptr;

    linked_pair(const std::function<void(node_options&)>& tweak_primary,
                const std::function<void(node_options&)>& tweak_replica,
                const std::function<std::string(node&)>& peer_of_replica = address_of) {
        auto p = fast_options("iad", "iad");
        p.writes = db;
        add_test_procedures(p.procedures, procedures, "primary");
        tweak_primary(p);
        primary = &h.start(std::move(p));
        auto r = fast_options("ord", "iad");
        r.peers = std::vector<std::string>{peer_of_replica(*primary)};
        tweak_replica(r);
        replica = &h.start(std::move(r));
    }

    bool connects() {
        if (h.wait_until([&] { return !replica->peers().empty() && replica->peers()[0].healthy; }, 5s))
            return true;
        ADD_FAILURE() << "the replica's node did not connect\nprimary's log:\n"
                      << h.logs(0).text() << "replica's log:\n"
                      << h.logs(1).text();
        return false;
    }
};

void defaults(node_options&) {}

std::function<void(node_options&)> with_certificate(const certificate_files& files,
                                                    const std::string& node,
                                                    const std::string& ca = "ca.pem") {
    return [&files, node, ca](node_options& o) {
        o.link = link_security::certificates;
        o.tls_certificate_file = files.path(node + ".pem");
        o.tls_private_key_file = files.path(node + ".key");
        o.tls_ca_file = files.path(ca);
    };
}

std::string create_error(node_options options) {
    asio::io_context io;
    try {
        (void)node::create(io, std::move(options));
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), errc::invalid_argument) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "node::create accepted the options";
    return {};
}

TEST_F(TlsLink, APreSharedKeyFromTheSecretIsTheDefaultAndCarriesCallsOfEverySize) {
    linked_pair t(defaults, defaults);
    ASSERT_TRUE(t.connects());
    EXPECT_TRUE(t.h.logs(0).contains("links to peers: TLS 1.3 with a key derived from the cluster secret"));
    // Several MiB: many TLS records per message, partial sends, and reads through the buffer.
    std::string big(3 * 1024 * 1024, 'x');
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
    values args{value(big), value(std::string("small"))};
    EXPECT_EQ(t.h.run(t.replica->call_primary("echo", args)), args);
    std::vector<statement> writes{statement{"INSERT INTO t VALUES (1)", {}}};
    auto result = t.h.run(t.replica->forward_write(std::move(writes)));
    EXPECT_EQ(result.results.at(0).rows.at(0).at(0), "INSERT INTO t VALUES (1)");
}

TEST_F(TlsLink, APeerWithAnotherSecretIsRefusedByTlsBeforeAnyCapability) {
    linked_pair t(defaults, [](node_options& o) { o.cluster_secret = "another-secret-0123456789abcdef"; });
    ASSERT_TRUE(t.h.wait_until([&] {
        return t.h.logs(0).contains("it did not prove the cluster secret: TLS handshake failed");
    })) << t.h.logs(0).text();
    ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(1).contains("did not prove the cluster secret"); }))
        << t.h.logs(1).text();
    // TLS refused it: no byte of the peer's reached Cap'n Proto, so no capability was offered.
    EXPECT_TRUE(t.replica->peers().empty());
    EXPECT_EQ(t.h.run(error_of(t.replica->call_primary("echo", {}))), errc::no_node_in_region);
}

TEST_F(TlsLink, CertificatesOfTheClusterCaConnectAndOthersAreRefused) {
    certificate_files files;
    {
        linked_pair t(with_certificate(files, "node-a"), with_certificate(files, "node-b"));
        ASSERT_TRUE(t.connects()) << t.h.logs(1).text();
        EXPECT_TRUE(t.h.logs(0).contains("TLS 1.3 with certificates"));
        EXPECT_EQ(t.h.run(t.replica->call_primary("echo", values{value(std::int64_t{7})})),
                  values{value(std::int64_t{7})});
    }
    {
        // A certificate from another CA, even one that trusts the cluster's CA itself.
        linked_pair t(with_certificate(files, "node-a"), with_certificate(files, "rogue", "ca.pem"));
        ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(0).contains("certificate verify failed"); }))
            << t.h.logs(0).text();
        EXPECT_TRUE(t.replica->peers().empty());
    }
    {
        // A server whose certificate the client's CA did not sign.
        linked_pair t(with_certificate(files, "rogue", "rogue-ca.pem"), with_certificate(files, "node-b"));
        ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(1).contains("certificate verify failed"); }))
            << t.h.logs(1).text();
        EXPECT_TRUE(t.replica->peers().empty());
    }
}

TEST_F(TlsLink, NodesOfDifferentSettingsDoNotConnectAndSaySo) {
    certificate_files files;
    {
        linked_pair t(defaults, [](node_options& o) { o.link = link_security::clear; });
        ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(0).contains("TLS handshake failed"); }))
            << t.h.logs(0).text();
        EXPECT_TRUE(t.replica->peers().empty());
    }
    {
        linked_pair t(with_certificate(files, "node-a"), defaults);
        ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(1).contains("TLS handshake"); }))
            << t.h.logs(1).text();
        EXPECT_TRUE(t.replica->peers().empty());
    }
}

TEST_F(TlsLink, BadSettingsFailCreateNamingWhatIsWrong) {
    certificate_files files;
    auto options = [&](const std::string& cert, const std::string& key, const std::string& ca) {
        auto o = fast_options("iad", "iad");
        o.link = link_security::certificates;
        o.tls_certificate_file = cert.empty() ? "" : files.path(cert);
        o.tls_private_key_file = key.empty() ? "" : files.path(key);
        o.tls_ca_file = ca.empty() ? "" : files.path(ca);
        return o;
    };
    auto text = create_error(options("missing.pem", "node-a.key", "ca.pem"));
    EXPECT_NE(text.find("cannot use the TLS certificate \"" + files.path("missing.pem") + "\""),
              std::string::npos)
        << text;
    text = create_error(options("node-a.pem", "node-b.key", "ca.pem"));
    EXPECT_NE(
        text.find("cannot use the TLS private key \"" + files.path("node-b.key") + "\": key values mismatch"),
        std::string::npos)
        << text;
    text = create_error(options("node-a.pem", "node-a.key", ""));
    EXPECT_NE(text.find("FLYPG_RPC_TLS_CA"), std::string::npos) << text;
    text = create_error(options("node-a.pem", "node-a.key", "node-a.key"));
    EXPECT_NE(text.find("cannot load the TLS CA certificate"), std::string::npos) << text;

    auto no_secret = fast_options("iad", "iad");
    no_secret.cluster_secret = "";
    no_secret.secret = secret_policy::allow_missing;
    no_secret.link = link_security::pre_shared_key;
    text = create_error(no_secret);
    EXPECT_NE(text.find("needs a cluster secret"), std::string::npos) << text;

    ::setenv("FLYPG_RPC_TLS", "yes\n", 1);
    text = create_error(fast_options("iad", "iad"));
    EXPECT_NE(text.find("FLYPG_RPC_TLS must be off, psk or certificates (got \"yes\\n\")"), std::string::npos)
        << text;
    ::unsetenv("FLYPG_RPC_TLS");
}

TEST_F(TlsLink, TheEnvironmentChoosesTheLink) {
    certificate_files files;
    ::setenv("FLYPG_RPC_TLS", "certificates", 1);
    ::setenv("FLYPG_RPC_TLS_CERT", files.path("node-a.pem").c_str(), 1);
    ::setenv("FLYPG_RPC_TLS_KEY", files.path("node-a.key").c_str(), 1);
    ::setenv("FLYPG_RPC_TLS_CA", files.path("ca.pem").c_str(), 1);
    {
        linked_pair t(defaults, defaults);
        ASSERT_TRUE(t.connects());
        EXPECT_TRUE(t.h.logs(1).contains("TLS 1.3 with certificates"));
    }
    ::setenv("FLYPG_RPC_TLS", "off", 1);
    {
        linked_pair t(defaults, defaults);
        ASSERT_TRUE(t.connects());
        EXPECT_TRUE(t.h.logs(1).contains("links to peers: clear"));
    }
    ::unsetenv("FLYPG_RPC_TLS");
    ::setenv("FLY_APP_NAME", "flypg-test", 1);
    {
        // On Fly, WireGuard already protects the private network: clear by default. (The nodes
        // here listen on loopback, so Fly's address lookup is not used.)
        linked_pair t(defaults, defaults);
        ASSERT_TRUE(t.connects());
        EXPECT_TRUE(t.h.logs(1).contains("links to peers: clear"));
    }
}

// A forwarded write whose bytes are altered on the path: on a clear link the primary runs the
// altered statement (this is what TLS is for); with TLS the record fails its check, the link
// breaks, the write is not run, and the next write, on a new link, arrives intact.
class tampered_path {
  public:
    explicit tampered_path(link_security link)
        : pair_([link](node_options& o) { o.link = link; },
                [link](node_options& o) { o.link = link; },
                [this](node& primary) { return start_proxy(primary); }) {}

    // The proxy's run() refers to the proxy: it must end before the proxy goes, and the proxy
    // before the io_context it was made on (the pair's).
    ~tampered_path() {
        if (!proxy_) return;
        proxy_->close();
        pair_.h.wait_until([&] { return proxy_done_; });
        proxy_.reset();
    }

    linked_pair& pair() { return pair_; }
    flypg::tools::delay_proxy& proxy() { return *proxy_; }

    static std::string statement_text() { return "INSERT INTO t VALUES ('" + std::string(4000, 'a') + "')"; }

  private:
    std::string start_proxy(node& primary) {
        // The proxy runs on the pair's io_context, which the harness drives.
        proxy_ = std::make_unique<flypg::tools::delay_proxy>(
            pair_.h.io.get_executor(),
            flypg::tools::delay_proxy_options{
                .listen = {asio::ip::make_address("127.0.0.1"), 0},
                .target = {asio::ip::make_address("127.0.0.1"), primary.local_endpoint().port()},
                .delay = std::chrono::microseconds(0)});
        asio::co_spawn(pair_.h.io, proxy_->run(), [this](std::exception_ptr) { proxy_done_ = true; });
        return "127.0.0.1:" + std::to_string(proxy_->local_endpoint().port());
    }

    std::unique_ptr<flypg::tools::delay_proxy> proxy_;
    bool proxy_done_ = false;
    linked_pair pair_;  // after the proxy: its constructor starts the proxy through start_proxy()
};

asio::awaitable<std::string> sql_seen_by_primary(node& replica) {
    std::vector<statement> writes{statement{tampered_path::statement_text(), {}}};
    auto result = co_await replica.forward_write(std::move(writes));
    co_return result.results.at(0).rows.at(0).at(0).value_or("");
}

TEST_F(TlsLink, ATamperedByteOnAClearLinkAltersTheStatement) {
    tampered_path path(link_security::clear);
    auto& t = path.pair();
    ASSERT_TRUE(t.connects());
    path.proxy().set_fault(flypg::tools::proxy_fault::corrupt, flypg::tools::proxy_direction::to_target);
    const auto seen = t.h.run(sql_seen_by_primary(*t.replica));
    EXPECT_NE(seen, tampered_path::statement_text());
    EXPECT_EQ(seen.size(), tampered_path::statement_text().size());
}

TEST_F(TlsLink, ATamperedByteBreaksTheTlsLinkInsteadOfAlteringTheStatement) {
    tampered_path path(link_security::pre_shared_key);
    auto& t = path.pair();
    ASSERT_TRUE(t.connects());
    path.proxy().set_fault(flypg::tools::proxy_fault::corrupt, flypg::tools::proxy_direction::to_target);
    std::string message;
    const auto code = t.h.run(error_of(sql_seen_by_primary(*t.replica), &message));
    // The write's fate is unknown to the caller (the link broke after it was sent); it was not run.
    EXPECT_EQ(code, errc::outcome_unknown) << message;
    EXPECT_EQ(t.db->counters().statements, 0);
    ASSERT_TRUE(t.h.wait_until([&] { return t.h.logs(0).contains("TLS: "); })) << t.h.logs(0).text();
    // The replica dials again; the next write arrives exactly as sent.
    t.h.run(t.replica->wait_for_region("iad", 10s));
    EXPECT_EQ(t.h.run(sql_seen_by_primary(*t.replica)), tampered_path::statement_text());
    EXPECT_EQ(t.db->counters().statements, 1);
}

}  // namespace
}  // namespace flypg::rpc::test
