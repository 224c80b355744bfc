// Peer addresses as an operator writes them (node_options::peers, FLYPG_PEERS, FLYPG_RPC_PORT).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flypg::rpc::detail {

struct peer_target {
    std::string host;
    std::uint16_t port = 0;
};

/// A port 1-65535, else flypg::error (invalid_argument) naming `what`.
std::uint16_t parse_port(std::string_view text, const std::string& what);

/// Each of "host:port", "host", "[v6]:port", "[v6]" or a bare IPv6 literal; entries without a port
/// get `fallback_port`; blank entries are skipped. Throws flypg::error (invalid_argument) naming
/// `source` and the entry (escaped) for anything else.
std::vector<peer_target> parse_peers(const std::vector<std::string>& entries,
                                     std::uint16_t fallback_port,
                                     const std::string& source);

/// "a,b,,c" as {"a", "b", "", "c"}.
std::vector<std::string> split_commas(const std::string& list);

}  // namespace flypg::rpc::detail
