#include "core/log_text.hpp"

namespace flypg::detail {
namespace {

constexpr char hex[] = "0123456789abcdef";

void escape_byte(std::string& out, unsigned char c) {
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 0xf];
}

// The length of the well-formed UTF-8 sequence at text[i] (2 to 4), or 0. Overlong forms,
// surrogates and code points above U+10FFFF are not well formed.
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
    const auto byte = [&](std::size_t k) {
        return static_cast<unsigned char>(text[k]);
    };
    const unsigned char lead = byte(i);
    std::size_t length = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3;
        if (lead == 0xe0) low = 0xa0;
        if (lead == 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4;
        if (lead == 0xf0) low = 0x90;
        if (lead == 0xf4) high = 0x8f;
    } else {
        return 0;
    }
    if (i + length > text.size()) return 0;
    if (byte(i + 1) < low || byte(i + 1) > high) return 0;
    for (std::size_t k = 2; k < length; ++k)
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
    return length;
}

}  // namespace

std::string log_safe(std::string_view text, std::size_t max_bytes) {
    std::string out;
    const std::size_t kept = text.size() > max_bytes ? max_bytes : text.size();
    out.reserve(kept + 16);
    std::size_t i = 0;
    while (i < kept) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x80) {
            const std::size_t length = utf8_sequence(text.substr(0, kept), i);
            if (length == 0) {
                escape_byte(out, c);  // not UTF-8: shown, never passed to the terminal
                ++i;
            } else if (length == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
                // C1 controls (U+0080 to U+009F), such as the CSI some terminals obey.
                const auto code_point = static_cast<unsigned char>(text[i + 1]);  // 0x80 to 0x9f
                out += "\\u00";
                out += hex[code_point >> 4];
                out += hex[code_point & 0xf];
                i += 2;
            } else {
                out.append(text.substr(i, length));
                i += length;
            }
            continue;
        }
        switch (c) {
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\\':
                out += "\\\\";
                break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    escape_byte(out, c);
                } else {
                    out += static_cast<char>(c);
                }
        }
        ++i;
    }
    if (kept < text.size()) out += "... (" + std::to_string(text.size() - kept) + " more bytes)";
    return out;
}

}  // namespace flypg::detail
