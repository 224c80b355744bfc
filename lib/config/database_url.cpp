// Parsing and printing of postgres:// URLs, and fly_postgres's production rewrite.
#include <arpa/inet.h>

#include <absl/strings/ascii.h>
#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "core/log_text.hpp"
#include "flypg/config.hpp"
#include "flypg/error.hpp"

namespace flypg {
namespace {

constexpr std::string_view password_mask = "****";
constexpr std::string_view no_url_message =
    "Unable to rewrite database url in fly_postgres. No url was specified.";

bool is_unreserved(char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~';
}

bool is_sub_delim(char c) {
    return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Percent-encodes every byte of `in` that is neither unreserved nor in `allowed`.
std::string percent_encode(std::string_view in, std::string_view allowed) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(in.size());
    for (char c : in) {
        if (is_unreserved(c) || allowed.find(c) != std::string_view::npos) {
            out += c;
        } else {
            const auto byte = static_cast<unsigned char>(c);
            out += '%';
            out += hex[byte >> 4];
            out += hex[byte & 0x0f];
        }
    }
    return out;
}

bool is_ipv4(const std::string& text) {
    std::array<unsigned char, 4> address{};
    return inet_pton(AF_INET, text.c_str(), address.data()) == 1;
}

// An IPv6 address, optionally with a non-empty zone ("fe80::1%eth0").
bool is_ipv6(const std::string& text) {
    const std::size_t percent = text.find('%');
    if (percent + 1 == text.size()) return false;
    const std::string address = text.substr(0, percent);
    std::array<unsigned char, 16> bytes{};
    return inet_pton(AF_INET6, address.c_str(), bytes.data()) == 1;
}

// Where a password would be in `text`, best effort even for malformed URLs: from the first ':' of
// the authority to the last '@' of the authority. When the authority has no '@', a password holding
// a raw '/', '?' or '#' may have cut it short, so the last '@' anywhere ends it. Empty when there is
// no password.
std::optional<std::pair<std::size_t, std::size_t>> password_range(std::string_view text) {
    const std::size_t separator = text.find("://");
    const std::size_t start = separator == std::string_view::npos ? 0 : separator + 3;
    const std::size_t authority_end = text.find_first_of("/?#", start);
    std::size_t at =
        text.rfind('@', authority_end == std::string_view::npos ? std::string_view::npos : authority_end);
    if (at == std::string_view::npos || at < start) at = text.rfind('@');
    if (at == std::string_view::npos || at < start) return std::nullopt;
    const std::size_t colon = text.find(':', start);
    if (colon == std::string_view::npos || colon > at) return std::nullopt;
    return std::pair(colon + 1, at);
}

// Parses one URL; on failure leaves the reason in why(). Pieces of the text quoted in the reason
// are masked when they overlap where the password would be, so no message ever carries it.
class url_parser {
  public:
    explicit url_parser(std::string_view text) : text_(text) {
        if (const auto range = password_range(text)) std::tie(secret_begin_, secret_end_) = *range;
    }

    bool parse(database_url& url) {
        const std::size_t separator = text_.find("://");
        if (separator == std::string_view::npos) return fail("not a postgres:// or postgresql:// URL");
        url.scheme = absl::AsciiStrToLower(std::string(text_.substr(0, separator)));
        if (url.scheme != "postgres" && url.scheme != "postgresql")
            return fail("the scheme must be postgres:// or postgresql://");
        for (char c : text_) {
            const auto byte = static_cast<unsigned char>(c);
            if (byte <= 0x20 || byte == 0x7f)
                return fail("the URL contains a space or control character (percent-encode it)");
        }
        if (text_.find('#') != std::string_view::npos)
            return fail("the URL contains '#' (write it as %23 in a password)");
        const std::string_view rest = text_.substr(separator + 3);
        const std::size_t authority_end = rest.find_first_of("/?");
        const std::string_view authority = rest.substr(0, authority_end);
        std::string_view host_port = authority;
        if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
            const std::string_view userinfo = authority.substr(0, at);
            host_port = authority.substr(at + 1);
            const std::size_t colon = userinfo.find(':');
            if (!decode(userinfo.substr(0, colon), "user name", url.user)) return false;
            if (colon != std::string_view::npos) {
                std::string password;
                in_password_ = true;
                if (!decode(userinfo.substr(colon + 1), "password", password)) return false;
                in_password_ = false;
                url.password = std::move(password);
            }
        }
        if (!parse_host(host_port, url)) return false;
        if (authority_end == std::string_view::npos) return true;
        const std::string_view tail = rest.substr(authority_end);
        const std::size_t question = tail.find('?');
        if (tail.front() == '/') {
            const std::string_view path =
                tail.substr(1, question == std::string_view::npos ? question : question - 1);
            if (!decode(path, "database name", url.database)) return false;
        }
        if (question == std::string_view::npos) return true;
        return parse_query(tail.substr(question + 1), url);
    }

    const std::string& why() const noexcept { return why_; }

  private:
    bool fail(std::string why) {
        why_ = std::move(why);
        // A password seen where a port or host should be: a raw delimiter cut the userinfo short.
        if (masked_piece_) why_ += " (percent-encode '/', '?', '#' and '@' in a password)";
        return false;
    }

    // `piece` (a view into the text) in quotes, or "****" when it overlaps the password.
    std::string quote(std::string_view piece) {
        const auto begin = static_cast<std::size_t>(piece.data() - text_.data());
        const std::size_t end = begin + piece.size();
        if (begin < secret_end_ && secret_begin_ < end) {
            masked_piece_ = !in_password_;
            return "\"" + std::string(password_mask) + "\"";
        }
        return "\"" + std::string(piece) + "\"";
    }

    // Percent-decodes `in`; fails on a malformed escape or a decoded NUL, which no libpq string can
    // carry.
    bool decode(std::string_view in, std::string_view what, std::string& out) {
        out.clear();
        for (std::size_t i = 0; i < in.size(); ++i) {
            if (in[i] != '%') {
                out += in[i];
                continue;
            }
            const int high = i + 1 < in.size() ? hex_value(in[i + 1]) : -1;
            const int low = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
            if (high < 0 || low < 0)
                return fail("malformed percent escape " + quote(in.substr(i, 3)) + " in the " +
                            std::string(what));
            const char decoded = static_cast<char>(high * 16 + low);
            if (decoded == '\0')
                return fail("the " + std::string(what) + " contains an encoded NUL byte (%00)");
            out += decoded;
            i += 2;
        }
        return true;
    }

    // Decimal 1-65535.
    bool parse_port(std::string_view text, database_url& url) {
        if (text.empty()) return fail("empty port after ':'");
        std::uint32_t value = 0;
        for (char c : text) {
            if (c < '0' || c > '9') return fail("port " + quote(text) + " is not a number");
            value = value * 10 + static_cast<std::uint32_t>(c - '0');
            if (value > 65535) break;
        }
        if (value == 0 || value > 65535) return fail("port " + quote(text) + " is out of range 1-65535");
        url.port = static_cast<std::uint16_t>(value);
        return true;
    }

    bool parse_host(std::string_view raw, database_url& url) {
        if (!raw.empty() && raw.front() == '[') {
            const std::size_t close = raw.find(']');
            if (close == std::string_view::npos) return fail("'[' without a closing ']' in the host");
            const std::string_view inside = raw.substr(1, close - 1);
            if (!decode(inside, "host", url.host)) return false;
            if (!is_ipv6(url.host)) return fail(quote(inside) + " in brackets is not an IPv6 address");
            const std::string_view after = raw.substr(close + 1);
            if (after.empty()) return true;
            if (after.front() != ':') return fail("unexpected " + quote(after) + " after the IPv6 address");
            return parse_port(after.substr(1), url);
        }
        const std::size_t colon = raw.find(':');
        if (colon != std::string_view::npos && raw.find(':', colon + 1) != std::string_view::npos)
            return fail("an IPv6 address must be written in brackets, as in postgres://[::1]:5432/db");
        const std::string_view name = raw.substr(0, colon);
        for (std::size_t i = 0; i < name.size(); ++i) {
            if (name[i] == ',') return fail("several hosts (" + quote(name) + ") are not supported");
            if (!is_unreserved(name[i]) && !is_sub_delim(name[i]) && name[i] != '%')
                return fail("the host contains " + quote(name.substr(i, 1)));
        }
        if (!decode(name, "host", url.host)) return false;
        if (url.host.find(',') != std::string::npos)
            return fail("several hosts (" + quote(name) + ") are not supported");
        // An encoded ':' ("%3a") would print back as a bracketed IPv6 address it is not.
        if (url.host.find(':') != std::string::npos)
            return fail("the host " + quote(name) +
                        " holds a ':'; an IPv6 address must be written in brackets");
        return colon == std::string_view::npos || parse_port(raw.substr(colon + 1), url);
    }

    bool parse_query(std::string_view query, database_url& url) {
        while (!query.empty()) {
            const std::size_t amp = query.find('&');
            const std::string_view pair = query.substr(0, amp);
            query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
            if (pair.empty()) continue;  // "a=1&&b=2" or a trailing '&'
            const std::size_t equals = pair.find('=');
            if (equals == std::string_view::npos || equals == 0)
                return fail("query parameter " + quote(pair) + " is not key=value");
            std::string key;
            std::string value;
            if (!decode(pair.substr(0, equals), "query", key) ||
                !decode(pair.substr(equals + 1), "query", value))
                return false;
            for (char c : key) {
                if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_')
                    return fail("query parameter name " + quote(pair.substr(0, equals)) +
                                " is not a connection keyword");
            }
            url.options.emplace_back(std::move(key), std::move(value));
        }
        return true;
    }

    std::string_view text_;
    std::size_t secret_begin_ = 0;
    std::size_t secret_end_ = 0;
    std::string why_;
    bool in_password_ = false;
    bool masked_piece_ = false;
};

std::string quote_conninfo(std::string_view value) {
    std::string quoted = "'";
    for (char c : value) {
        if (c == '\'' || c == '\\') quoted += '\\';
        quoted += c;
    }
    return quoted + "'";
}

std::string to_text(const database_url& url, bool mask) {
    std::string text = url.scheme + "://";
    if (!url.user.empty() || url.password) {
        text += percent_encode(url.user, "!$&'()*+,;=");
        if (url.password)
            text += ":" + (mask ? std::string(password_mask) : percent_encode(*url.password, "!$&'()*+,;=:"));
        text += '@';
    }
    if (url.host.find(':') != std::string::npos)
        text += "[" + percent_encode(url.host, ":") + "]";
    else
        text += percent_encode(url.host, "!$&'()*+;=");
    if (url.port) text += ":" + std::to_string(*url.port);
    if (!url.database.empty()) text += "/" + percent_encode(url.database, "!$&'()*+,;=:@");
    for (std::size_t i = 0; i < url.options.size(); ++i) {
        text += i == 0 ? '?' : '&';
        text += percent_encode(url.options[i].first, "") + "=" +
                percent_encode(url.options[i].second, "!$'()*+,;:@/?");
    }
    return text;
}

// Whether `text` is meant as libpq's keyword/value form ("host=h port=5433 dbname=d") rather than
// a URL: no scheme, and a keyword's '='.
bool is_keyword_form(std::string_view text) {
    return text.find("://") == std::string_view::npos && text.find('=') != std::string_view::npos;
}

// The text is quoted (password masked) only when it holds no password: a value libpq could not
// read (an unquoted space, a stray quote) may have cut the password short, and its rest would show.
[[noreturn]] void keyword_form_error(std::string_view text, const std::string& why) {
    const std::string shown = text.find("password") == std::string_view::npos
                                  ? "\"" + redact_database_url(text) + "\""
                                  : "(not shown: it holds a password)";
    throw_error(errc::invalid_argument, "invalid database conninfo " + shown + ": " + why);
}

// The keyword/value form read by libpq's own parser (pure: no connection, no DNS), then held to the
// URL's rules by printing it as one and parsing that, so both forms accept the same connections.
database_url parse_keyword_form(std::string_view text) {
    if (text.find('\0') != std::string_view::npos) keyword_form_error(text, "it contains a NUL byte");
    char* libpq_error = nullptr;
    std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(
        PQconninfoParse(std::string(text).c_str(), &libpq_error), &PQconninfoFree);
    if (!options) {
        std::string why = libpq_error != nullptr ? libpq_error : "libpq ran out of memory";
        PQfreemem(libpq_error);
        // libpq quotes the words it could not read, which may be a piece of a password.
        if (text.find("password") != std::string_view::npos)
            why = "libpq cannot read it as keyword=value pairs";
        while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
        keyword_form_error(text, detail::log_safe(why, 200));
    }
    database_url url;
    for (const PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
        if (o->val == nullptr) continue;
        const std::string_view keyword = o->keyword;
        std::string value = o->val;
        if (keyword == "host") {
            url.host = std::move(value);
        } else if (keyword == "port") {
            const bool digits =
                !value.empty() && value.size() <= 5 &&
                std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
            const int number = digits ? std::stoi(value) : 0;
            if (number < 1 || number > 65535)
                keyword_form_error(text,
                                   "port \"" + detail::log_safe(value, 40) + "\" is not a number 1-65535");
            url.port = static_cast<std::uint16_t>(number);
        } else if (keyword == "dbname") {
            url.database = std::move(value);
        } else if (keyword == "user") {
            url.user = std::move(value);
        } else if (keyword == "password") {
            url.password = std::move(value);
        } else {
            url.options.emplace_back(keyword, std::move(value));
        }
    }
    const std::string as_url = to_text(url, false);
    url_parser check(as_url);
    database_url parsed;
    if (!check.parse(parsed)) keyword_form_error(text, check.why());
    return parsed;
}

}  // namespace

database_url database_url::parse(std::string_view url) {
    if (is_keyword_form(url)) return parse_keyword_form(url);
    database_url parsed;
    url_parser parser(url);
    if (!parser.parse(parsed))
        throw_error(errc::invalid_argument,
                    "invalid database URL \"" + redact_database_url(url) + "\": " + parser.why());
    return parsed;
}

std::string database_url::to_string() const {
    return to_text(*this, false);
}

std::string database_url::redacted() const {
    return to_text(*this, true);
}

std::string database_url::to_conninfo() const {
    std::string conninfo;
    auto add = [&conninfo](std::string_view keyword, std::string_view value) {
        if (!conninfo.empty()) conninfo += ' ';
        conninfo += keyword;
        conninfo += '=';
        conninfo += quote_conninfo(value);
    };
    if (!host.empty()) add("host", host);
    if (port) add("port", std::to_string(*port));
    if (!user.empty()) add("user", user);
    if (password) add("password", *password);
    if (!database.empty()) add("dbname", database);
    for (const auto& [keyword, value] : options) add(keyword, value);
    return conninfo;
}

bool database_url::host_is_ip_address() const {
    return is_ipv4(host) || (host.find(':') != std::string::npos && is_ipv6(host));
}

std::string redact_database_url(std::string_view url) {
    std::string text(url);
    if (const auto range = password_range(text))
        text.replace(range->first, range->second - range->first, password_mask);
    // Keyword/value strings: password=secret or password='se cret'.
    for (std::size_t pos = text.find("password"); pos != std::string::npos;
         pos = text.find("password", pos + 1)) {
        std::size_t value = pos + 8;
        while (value < text.size() && text[value] == ' ') ++value;
        if (value >= text.size() || text[value] != '=') continue;
        ++value;
        while (value < text.size() && text[value] == ' ') ++value;
        std::size_t end = value;
        if (end < text.size() && text[end] == '\'') {
            for (++end; end < text.size() && text[end] != '\''; ++end)
                if (text[end] == '\\') ++end;
            end = std::min(end + 1, text.size());
        } else {
            while (end < text.size() && text[end] != ' ' && text[end] != '&') ++end;
        }
        text.replace(value, end - value, password_mask);
    }
    return text;
}

std::string rewrite_database_url(std::string url,
                                 std::string_view my_region,
                                 std::string_view primary_region) {
    if (url.empty()) throw_error(errc::invalid_argument, std::string(no_url_message));
    database_url parsed = database_url::parse(url);
    auto refuse = [&parsed](std::string_view why) {
        throw_error(errc::invalid_argument,
                    "cannot apply the Fly rewrite to database URL \"" + parsed.redacted() +
                        "\": " + std::string(why));
    };
    if (parsed.host.empty()) refuse("it has no host");
    if (parsed.host.front() == '/') refuse("its host is a Unix socket directory");
    if (parsed.host_is_ip_address())
        refuse(
            "its host is an IP address, and \"top1.nearest.of.<address>\" would never resolve (use explicit "
            "primary and replica URLs off Fly)");

    // DNS names compare case-insensitively; fly_postgres compares case-sensitively, which only
    // differs for upper-case hosts, where it would prefix a name that is already prefixed.
    constexpr std::string_view top1 = "top1.nearest.of.";
    constexpr std::string_view top2 = "top2.nearest.of.";
    const std::string lower_host = absl::AsciiStrToLower(parsed.host);
    if (lower_host.find(".flycast") != std::string::npos || lower_host.starts_with(top1)) {
        // Fly's private proxy address, or already the nearest instance: unchanged.
    } else if (lower_host.starts_with(top2)) {
        parsed.host.replace(0, top2.size(), top1);
    } else {
        parsed.host.insert(0, top1);
    }
    if (my_region != primary_region) parsed.port = 5433;
    return parsed.to_string();
}

}  // namespace flypg
