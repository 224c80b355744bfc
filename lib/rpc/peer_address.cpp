#include "rpc/peer_address.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "core/log_text.hpp"
#include "flypg/error.hpp"

namespace flypg::rpc::detail {

std::uint16_t parse_port(std::string_view text, const std::string& what) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
        throw_error(errc::invalid_argument,
                    what + ": \"" + flypg::detail::log_safe(text, 64) + "\" is not a port (1-65535)");
    }
    return static_cast<std::uint16_t>(value);
}

namespace {

// "host:port", "host", "[v6]:port", "[v6]", or a bare IPv6 literal (no port).
peer_target parse_peer(std::string_view entry, std::uint16_t fallback_port, const std::string& source) {
    const std::string what = source + " entry \"" + flypg::detail::log_safe(entry, 256) + "\"";
    peer_target t;
    if (entry.empty()) throw_error(errc::invalid_argument, what + " is empty");
    if (entry.front() == '[') {
        auto close = entry.find(']');
        if (close == std::string_view::npos) throw_error(errc::invalid_argument, what + ": missing ']'");
        t.host = std::string(entry.substr(1, close - 1));
        auto rest = entry.substr(close + 1);
        if (rest.empty()) {
            t.port = fallback_port;
        } else if (rest.front() == ':') {
            t.port = parse_port(rest.substr(1), what);
        } else {
            throw_error(errc::invalid_argument, what + ": expected ':' after ']'");
        }
    } else if (std::count(entry.begin(), entry.end(), ':') > 1) {
        t.host = std::string(entry);  // a bare IPv6 literal
        t.port = fallback_port;
    } else if (auto colon = entry.find(':'); colon != std::string_view::npos) {
        t.host = std::string(entry.substr(0, colon));
        t.port = parse_port(entry.substr(colon + 1), what);
    } else {
        t.host = std::string(entry);
        t.port = fallback_port;
    }
    if (t.host.empty()) throw_error(errc::invalid_argument, what + ": no host");
    // A DNS name or an IP literal (with an IPv6 zone): anything else (a space, a control
    // character, a NUL byte the resolver's C API would cut the name at) is a mistake.
    const bool host_ok = std::all_of(t.host.begin(), t.host.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_' ||
               c == ':' || c == '%';
    });
    if (!host_ok)
        throw_error(errc::invalid_argument,
                    what + ": the host holds a character no host name or address has");
    return t;
}

}  // namespace

std::vector<peer_target> parse_peers(const std::vector<std::string>& entries,
                                     std::uint16_t fallback_port,
                                     const std::string& source) {
    std::vector<peer_target> out;
    for (const auto& raw : entries) {
        std::string_view e = raw;
        while (!e.empty() && e.front() == ' ') e.remove_prefix(1);
        while (!e.empty() && e.back() == ' ') e.remove_suffix(1);
        if (e.empty()) continue;
        out.push_back(parse_peer(e, fallback_port, source));
    }
    return out;
}

std::vector<std::string> split_commas(const std::string& list) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= list.size()) {
        auto comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        out.push_back(list.substr(start, comma - start));
        start = comma + 1;
    }
    return out;
}

}  // namespace flypg::rpc::detail
