// Text from outside (what a peer says about itself, its error messages) made safe for a log line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace flypg::detail {

/// `text` as one log line: control characters (newline, carriage return, escape, ...), DEL and a
/// backslash are written as C escapes (`\n`, `\x1b`, `\\`), C1 controls as `\u0080`..`\u009f`,
/// and bytes that are not well-formed UTF-8 as `\xNN`, so a peer cannot start a forged line or
/// drive a terminal; other UTF-8 passes (names stay readable). Text longer than `max_bytes` is cut
/// there (a sequence cut in two is escaped) and the cut says how much was left out.
std::string log_safe(std::string_view text, std::size_t max_bytes = 4096);

}  // namespace flypg::detail
