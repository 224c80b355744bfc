#include "flypg/lsn.hpp"

#include <ostream>

#include "flypg/error.hpp"

namespace flypg {
namespace {

// PostgreSQL's own pg_lsn input accepts 1 to 8 hex digits per half (pg_lsn_in_internal); so do we,
// but stricter: no leading or trailing blanks either.
constexpr std::size_t max_half_digits = 8;

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

std::optional<std::uint32_t> parse_half(std::string_view digits) noexcept {
    if (digits.empty() || digits.size() > max_half_digits) return std::nullopt;
    std::uint32_t value = 0;
    for (char c : digits) {
        const int digit = hex_digit(c);
        if (digit < 0) return std::nullopt;
        value = (value << 4) | static_cast<std::uint32_t>(digit);
    }
    return value;
}

void append_hex(std::string& out, std::uint32_t value) {
    constexpr char digits[] = "0123456789ABCDEF";
    char buffer[max_half_digits];
    std::size_t length = 0;
    do {
        buffer[length++] = digits[value & 0xF];
        value >>= 4;
    } while (value != 0);
    while (length > 0) out.push_back(buffer[--length]);
}

// Malformed input may be anything (a whole SQL result, binary junk): quote a bounded, printable
// excerpt so the message stays readable.
std::string quote_for_message(std::string_view text) {
    constexpr std::size_t max_quoted = 64;
    std::string quoted = "\"";
    for (char c : text.substr(0, max_quoted)) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte >= 0x20 && byte < 0x7F && c != '"' && c != '\\') {
            quoted.push_back(c);
        } else {
            constexpr char digits[] = "0123456789ABCDEF";
            quoted += "\\x";
            quoted.push_back(digits[byte >> 4]);
            quoted.push_back(digits[byte & 0xF]);
        }
    }
    quoted += text.size() > max_quoted ? "\"..." : "\"";
    return quoted;
}

}  // namespace

std::optional<lsn> lsn::try_parse(std::string_view text) noexcept {
    const std::size_t slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    const auto high = parse_half(text.substr(0, slash));
    const auto low = parse_half(text.substr(slash + 1));  // a second '/' fails as a non-digit
    if (!high || !low) return std::nullopt;
    return lsn((static_cast<std::uint64_t>(*high) << 32) | *low);
}

lsn lsn::parse(std::string_view text) {
    if (auto parsed = try_parse(text)) return *parsed;
    throw_error(errc::malformed_lsn,
                "malformed LSN " + quote_for_message(text) + ": expected two hexadecimal halves X/X");
}

std::string lsn::to_string() const {
    std::string text;
    text.reserve(2 * max_half_digits + 1);
    append_hex(text, static_cast<std::uint32_t>(value_ >> 32));
    text.push_back('/');
    append_hex(text, static_cast<std::uint32_t>(value_));
    return text;
}

std::ostream& operator<<(std::ostream& out, lsn position) {
    return out << position.to_string();
}

}  // namespace flypg
