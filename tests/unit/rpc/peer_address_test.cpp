// Peer lists as operators write them (FLYPG_PEERS, node_options::peers).
#include <gtest/gtest.h>

#include "flypg/error.hpp"
#include "rpc/peer_address.hpp"

namespace {

using flypg::rpc::detail::parse_peers;
using flypg::rpc::detail::split_commas;

TEST(PeerAddress, EveryFormWithAndWithoutAPort) {
    const auto peers = parse_peers(
        split_commas(" a.internal:7000,b, [::1]:7001,[fe80::1%eth0],::1,,10.0.0.1:1"), 5000, "FLYPG_PEERS");
    ASSERT_EQ(peers.size(), 6u);
    EXPECT_EQ(peers[0].host, "a.internal");
    EXPECT_EQ(peers[0].port, 7000);
    EXPECT_EQ(peers[1].host, "b");
    EXPECT_EQ(peers[1].port, 5000);
    EXPECT_EQ(peers[2].host, "::1");
    EXPECT_EQ(peers[2].port, 7001);
    EXPECT_EQ(peers[3].host, "fe80::1%eth0");
    EXPECT_EQ(peers[3].port, 5000);
    EXPECT_EQ(peers[4].host, "::1");
    EXPECT_EQ(peers[5].port, 1);
}

TEST(PeerAddress, MistakesAreNamedAndEscaped) {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"host:0", "is not a port"},
        {"host:65536", "is not a port"},
        {"host:7x", "is not a port"},
        {"[::1", "missing ']'"},
        {"[::1]7000", "expected ':' after ']'"},
        {":7000", "no host"},
        {std::string("evil\0host", 9), "the host holds a character"},
        {"two words", "the host holds a character"},
        {"line\nbreak", "the host holds a character"},
    };
    for (const auto& [entry, why] : cases) {
        try {
            (void)parse_peers({entry}, 5000, "FLYPG_PEERS");
            ADD_FAILURE() << "accepted " << entry;
        } catch (const flypg::error& e) {
            const std::string what = e.what();
            EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
            EXPECT_NE(what.find("FLYPG_PEERS entry"), std::string::npos) << what;
            EXPECT_NE(what.find(why), std::string::npos) << what;
            EXPECT_EQ(what.find('\n'), std::string::npos) << what;
            EXPECT_EQ(what.find('\0'), std::string::npos) << "a NUL byte reached the message";
        }
    }
}

}  // namespace
