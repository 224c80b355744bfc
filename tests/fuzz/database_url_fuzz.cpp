// Database URLs and the environment that names them are the operator's input, and a URL's
// password must never reach a message: parse() refuses what it cannot represent, accepts what
// it prints (parse(u.to_string()) == u), and the redacted forms never show the password.
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "flypg/config.hpp"
#include "flypg/error.hpp"

namespace {

void check_url(std::string_view text) {
    flypg::database_url url;
    try {
        url = flypg::database_url::parse(text);
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::invalid_argument) std::abort();
        return;
    }
    const std::string printed = url.to_string();
    if (!(flypg::database_url::parse(printed) == url)) std::abort();
    (void)url.to_conninfo();
    if (url.password) {
        // The redacted form is the same URL with "****" for the password, and nothing else changed.
        flypg::database_url shown = flypg::database_url::parse(url.redacted());
        if (shown.password != std::optional<std::string>("****")) std::abort();
        shown.password = url.password;
        if (!(shown == url)) std::abort();
    }
    try {
        (void)flypg::rewrite_database_url(printed, "ams", "fra");
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::invalid_argument) std::abort();
    }
}

// The input split at its first two NUL bytes: FLYPG_PRIMARY_URL, FLYPG_REPLICA_URL, DATABASE_URL.
void check_environment(std::string_view text) {
    std::map<std::string, std::string, std::less<>> env;
    const char* names[] = {"FLYPG_PRIMARY_URL", "FLYPG_REPLICA_URL", "DATABASE_URL"};
    for (const char* name : names) {
        const std::size_t end = std::min(text.find('\0'), text.size());
        env[name] = std::string(text.substr(0, end));
        text.remove_prefix(std::min(end + 1, text.size()));
    }
    try {
        (void)flypg::resolve_database_config(env, "fra", "ams");
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::invalid_argument) std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    check_url(text);
    check_environment(text);
    (void)flypg::redact_database_url(text);
    return 0;
}
