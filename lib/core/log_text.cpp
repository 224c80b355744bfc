#include "core/log_text.hpp"

namespace flypg::detail {

std::string log_safe(std::string_view text, std::size_t max_bytes) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    const std::size_t kept = text.size() > max_bytes ? max_bytes : text.size();
    out.reserve(kept + 16);
    for (std::size_t i = 0; i < kept; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        switch (c) {
            case '\n':
                out += "\\n";
                continue;
            case '\r':
                out += "\\r";
                continue;
            case '\t':
                out += "\\t";
                continue;
            case '\\':
                out += "\\\\";
                continue;
            default:
                break;
        }
        if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (kept < text.size()) out += "... (" + std::to_string(text.size() - kept) + " more bytes)";
    return out;
}

}  // namespace flypg::detail
