// The guestbook sample's HTTP layer (samples/guestbook/http.hpp) as a client on the network meets
// it: arbitrary bytes, one connection's worth, parsed request by request. The first byte sets the
// size of the pieces the bytes arrive in. Properties checked:
// - every request kept is within the sample's limits (URL, body, Cookie header);
// - a failure is one of the statuses the sample answers (400, 413, 431);
// - the parser makes progress on every piece, and the result does not depend on how the bytes were
//   cut into pieces (TCP may cut them anywhere);
// - what goes back out (JSON strings, the path's metric label, the response head) cannot carry a
//   raw control character.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "guestbook/http.hpp"

namespace {

using namespace guestbook_http;

struct parsed {
    std::vector<std::string> requests;  // each request, summarised
    int error_status = 0;

    bool operator==(const parsed&) const = default;
};

[[noreturn]] void broken(const char* what) {
    std::fprintf(stderr, "guestbook_http_fuzz: %s\n", what);
    std::abort();
}

void check_json_string(std::string_view text) {
    const std::string out = json_string(text);
    if (out.size() < 2 || out.front() != '"' || out.back() != '"') broken("a JSON string is not quoted");
    for (std::size_t i = 1; i + 1 < out.size(); ++i) {
        const auto c = static_cast<unsigned char>(out[i]);
        if (c < 0x20) broken("a JSON string carries a raw control character");
        if (c == '"' && out[i - 1] != '\\') broken("a JSON string carries an unescaped quote");
    }
}

std::string summary(const http_request& r) {
    if (r.url.size() > max_url_bytes) broken("a request's URL is over the limit");
    if (r.body.size() > max_body_bytes) broken("a request's body is over the limit");
    if (r.cookie.size() > max_cookie_bytes) broken("a request's Cookie header is over the limit");
    if (cookie_value(r.cookie, token_cookie).size() >= r.cookie.size() && !r.cookie.empty())
        broken("a cookie's value is longer than the Cookie header");
    const std::string label = path_label(r.url);
    if (label != "/" && label != "/entries" && label != "/metrics" && label != "other")
        broken("a metric label outside the fixed set");
    check_json_string(r.body);
    const std::string head = serialize(text_response(404, "no such page: " + r.url), r.keep_alive, false);
    for (const char c : head) {
        if (static_cast<unsigned char>(c) < 0x20 && c != '\r' && c != '\n')
            broken("a control byte in a head");
    }
    return std::to_string(r.method) + " " + r.url + " cookie=" + r.cookie + " body=" + r.body +
           (r.keep_alive ? " keep-alive" : " close");
}

// Feeds `bytes` in pieces of `piece` bytes, as serve_connection does with what it reads.
parsed parse(std::string_view bytes, std::size_t piece) {
    parsed out;
    request_parser parser;
    std::string buffer;
    std::size_t offset = 0;
    for (;;) {
        if (buffer.empty()) {
            if (offset == bytes.size()) return out;  // the connection ends with no request pending
            const std::string_view next = bytes.substr(offset, piece);
            offset += next.size();
            buffer.append(next);
        }
        const std::size_t used = parser.feed(buffer);
        if (used > buffer.size()) broken("the parser consumed more than it was given");
        buffer.erase(0, used);
        switch (parser.current()) {
            case request_parser::state::complete:
                out.requests.push_back(summary(parser.take()));
                break;
            case request_parser::state::failed:
                out.error_status = parser.error_status();
                if (out.error_status != 400 && out.error_status != 413 && out.error_status != 431)
                    broken("a failure with a status the sample does not answer");
                return out;
            case request_parser::state::incomplete:
                if (!buffer.empty())
                    broken("the parser stopped inside a piece without a request or a failure");
                break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t piece = data[0] == 0 ? 1 : data[0];
    const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
    const parsed whole = parse(bytes, bytes.size() + 1);
    if (parse(bytes, piece) != whole) broken("the bytes cut into pieces parse differently from the whole");
    check_json_string(bytes);
    return 0;
}
