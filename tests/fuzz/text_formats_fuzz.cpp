// Text that comes from outside: LSNs (from the server, from a caller), consistency tokens (from an
// HTTP client's cookie), and what log_safe() makes of anything before it reaches a log line.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/log_text.hpp"
#include "flypg/error.hpp"
#include "flypg/lsn.hpp"
#include "flypg/repo.hpp"

namespace {

void check_lsn(std::string_view text) {
    const std::optional<flypg::lsn> parsed = flypg::lsn::try_parse(text);
    if (!parsed) return;
    // Whatever is accepted prints in a form that is accepted again as the same position.
    if (flypg::lsn::try_parse(parsed->to_string()) != parsed) std::abort();
}

void check_token(std::string_view text) {
    try {
        const flypg::lsn position = flypg::parse_consistency_token(text);
        flypg::write_result w;
        w.commit_lsn = position;
        // One spelling per position: a token is accepted only in the form the library writes.
        if (w.token() != text) std::abort();
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::invalid_argument) std::abort();
    }
}

void check_log_safe(std::string_view text, std::size_t limit) {
    const std::string line = flypg::detail::log_safe(text, limit);
    for (const char c : line) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7f) std::abort();  // no control character survives
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    check_lsn(text);
    check_token(text);
    check_log_safe(text, std::size_t{data[0]} * 4 + 1);
    return 0;
}
