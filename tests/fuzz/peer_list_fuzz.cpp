// FLYPG_PEERS as an operator (or a templating mistake) writes it: every entry is a host and a
// port, or the list is refused with invalid_argument; an accepted host never holds a character
// that would cut or forge a name on its way to the resolver or a log line.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "flypg/error.hpp"
#include "rpc/peer_address.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string list(reinterpret_cast<const char*>(data), size);
    try {
        for (const auto& peer :
             flypg::rpc::detail::parse_peers(flypg::rpc::detail::split_commas(list), 5000, "FLYPG_PEERS")) {
            if (peer.host.empty() || peer.port == 0) std::abort();
            for (const char c : peer.host)
                if (static_cast<unsigned char>(c) <= 0x20 || c == ',') std::abort();
        }
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::invalid_argument) std::abort();
    }
    return 0;
}
