// The guestbook's HTTP layer: requests parsed with Debian's http-parser (libhttp-parser-dev),
// responses, and JSON strings. Everything here sees bytes from the network, so it is bounded and
// fuzzed (tests/fuzz/guestbook_http_fuzz.cpp); it has no state beyond one connection's parser.
#pragma once

#include <http_parser.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace guestbook_http {

constexpr std::size_t max_body_bytes = 4096;  // one guestbook message; more is 413
constexpr std::size_t max_url_bytes = 2048;

// ---- HTTP messages ------------------------------------------------------------------------------

struct http_request {
    http_method method = HTTP_GET;
    std::string url;
    std::string cookie;  // the Cookie header, if any
    std::string body;
    bool keep_alive = false;
};

constexpr std::size_t max_cookie_bytes = 4096;
constexpr std::string_view token_cookie = "flypg_token";

// The value of cookie `name` in a Cookie header ("a=1; flypg_token=1.00...; b=2"), or empty.
inline std::string cookie_value(std::string_view header, std::string_view name) {
    while (!header.empty()) {
        const std::size_t end = header.find(';');
        std::string_view pair = header.substr(0, end);
        header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
        while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
        if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=')
            return std::string(pair.substr(name.size() + 1));
    }
    return {};
}

struct http_response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // beyond the standard ones
};

inline http_response text_response(int status, std::string body) {
    http_response r;
    r.status = status;
    r.body = std::move(body);
    r.body += '\n';
    return r;
}

inline http_response json_response(int status, std::string body) {
    http_response r;
    r.status = status;
    r.content_type = "application/json";
    r.body = std::move(body);
    r.body += '\n';
    return r;
}

inline http_response method_not_allowed(std::string allow) {
    http_response r = text_response(405, "method not allowed here; use " + allow);
    r.headers.emplace_back("Allow", std::move(allow));
    return r;
}

inline const char* reason_phrase(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 201:
            return "Created";
        case 202:
            return "Accepted";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 413:
            return "Content Too Large";
        case 431:
            return "Request Header Fields Too Large";
        case 503:
            return "Service Unavailable";
        default:
            return "Internal Server Error";
    }
}

// A response to HEAD has the headers of the GET response and no body.
inline std::string serialize(const http_response& r, bool keep_alive, bool with_body) {
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
    out += "Content-Type: " + r.content_type + "\r\n";
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    for (const auto& [name, value] : r.headers) out += name + ": " + value + "\r\n";
    out += "\r\n";
    if (with_body) out += r.body;
    return out;
}

// Parses requests with http-parser, one at a time: the parser pauses at the end of each message,
// so a pipelined request waits in the caller's buffer until the previous response is written.
class request_parser {
  public:
    enum class state { incomplete, complete, failed };

    request_parser() {
        http_parser_settings_init(&settings_);
        settings_.on_url = on_url;
        settings_.on_header_field = on_header_field;
        settings_.on_header_value = on_header_value;
        settings_.on_headers_complete = on_headers_complete;
        settings_.on_body = on_body;
        settings_.on_message_complete = on_message_complete;
        http_parser_init(&parser_, HTTP_REQUEST);
        parser_.data = this;
    }
    request_parser(const request_parser&) = delete;
    request_parser& operator=(const request_parser&) = delete;

    /// Parses as much of `data` as belongs to the current request; returns the bytes consumed.
    std::size_t feed(std::string_view data) {
        const std::size_t used = http_parser_execute(&parser_, &settings_, data.data(), data.size());
        const auto error = HTTP_PARSER_ERRNO(&parser_);
        if (error == HPE_PAUSED) {
            state_ = state::complete;
        } else if (error != HPE_OK) {
            fail(error == HPE_HEADER_OVERFLOW ? 431 : 400,
                 std::string("malformed HTTP request: ") + http_errno_description(error));
        } else if (parser_.upgrade) {
            fail(400, "protocol upgrades are not supported");
        }
        return used;
    }

    state current() const noexcept { return state_; }
    /// The status and reason of a failed request.
    int error_status() const noexcept { return error_status_; }
    const std::string& error_message() const noexcept { return error_message_; }

    /// The complete request; the parser then continues with the next one.
    http_request take() {
        http_request out = std::move(request_);
        request_ = {};
        field_.clear();
        in_value_ = false;
        state_ = state::incomplete;
        http_parser_pause(&parser_, 0);
        return out;
    }

  private:
    static request_parser& self(http_parser* p) { return *static_cast<request_parser*>(p->data); }

    // A failure noted in a callback (returning non-zero stops the parser); the first one counts.
    int fail(int status, std::string message) {
        if (state_ != state::failed) {
            state_ = state::failed;
            error_status_ = status;
            error_message_ = std::move(message);
        }
        return -1;
    }

    static int on_url(http_parser* p, const char* at, std::size_t length) {
        request_parser& s = self(p);
        if (s.request_.url.size() + length > max_url_bytes)
            return s.fail(400, "the URL is longer than " + std::to_string(max_url_bytes) + " bytes");
        s.request_.url.append(at, length);
        return 0;
    }
    // A header's name and value may each arrive in pieces; only the Cookie header is kept.
    static int on_header_field(http_parser* p, const char* at, std::size_t length) {
        request_parser& s = self(p);
        if (s.in_value_) s.field_.clear();
        s.in_value_ = false;
        // Enough of the name to tell "cookie" from any other: a longer name never compares equal,
        // however the bytes were cut (keeping only whole pieces once let "cookieXXX..." through).
        s.field_.append(at, std::min(length, max_kept_name - std::min(s.field_.size(), max_kept_name)));
        return 0;
    }
    static int on_header_value(http_parser* p, const char* at, std::size_t length) {
        request_parser& s = self(p);
        s.in_value_ = true;
        if (s.field_.size() != 6 || !equals_ignoring_case(s.field_, "cookie")) return 0;
        if (s.request_.cookie.size() + length > max_cookie_bytes)
            return s.fail(431,
                          "the Cookie header is longer than " + std::to_string(max_cookie_bytes) + " bytes");
        s.request_.cookie.append(at, length);
        return 0;
    }
    static bool equals_ignoring_case(std::string_view a, std::string_view b) {
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (std::tolower(static_cast<unsigned char>(a[i])) != b[i]) return false;
        return true;
    }
    static int on_headers_complete(http_parser* p) {
        // Refuse a declared body that is too large before reading it.
        if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > max_body_bytes)
            return self(p).fail(413, too_large_message());
        return 0;
    }
    static int on_body(http_parser* p, const char* at, std::size_t length) {
        request_parser& s = self(p);
        if (s.request_.body.size() + length > max_body_bytes) return s.fail(413, too_large_message());
        s.request_.body.append(at, length);
        return 0;
    }
    static int on_message_complete(http_parser* p) {
        request_parser& s = self(p);
        s.request_.method = static_cast<http_method>(p->method);
        s.request_.keep_alive = http_should_keep_alive(p) != 0;
        http_parser_pause(p, 1);
        return 0;
    }
    static std::string too_large_message() {
        return "the request body is larger than " + std::to_string(max_body_bytes) + " bytes";
    }

    http_parser parser_{};
    http_parser_settings settings_{};
    http_request request_;
    static constexpr std::size_t max_kept_name = 7;
    std::string field_;      // the header name being read (its first max_kept_name bytes)
    bool in_value_ = false;  // its value has started
    state state_ = state::incomplete;
    int error_status_ = 0;
    std::string error_message_;
};

// ---- JSON ---------------------------------------------------------------------------------------

inline std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (const char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char escaped[8];
                    std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
                    out += escaped;
                } else {
                    out += c;  // UTF-8 passes through: PostgreSQL only stores valid UTF-8
                }
        }
    }
    out += '"';
    return out;
}

// The route a URL counts under in the metrics (a bounded set of labels).
inline std::string path_label(std::string_view url) {
    const std::string_view path = url.substr(0, url.find('?'));
    if (path == "/" || path == "/entries" || path == "/metrics") return std::string(path);
    return "other";
}

}  // namespace guestbook_http
