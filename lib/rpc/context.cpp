#include "rpc/context.hpp"

#include <asio/detached.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/log_text.hpp"
#include "flypg/error.hpp"
#include "flypg/rpc/region.hpp"
#include "rpc/codec.hpp"

namespace flypg::rpc::detail {

identity decode(wire::NodeIdentity::Reader in) {
    return identity{to_string(in.getNodeId()),
                    to_string(in.getRegion()),
                    to_string(in.getAppVersion()),
                    in.getProtocolVersion(),
                    in.getRemembersRequestIds()};
}

namespace {

bool name_character(char c, bool colon_allowed) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || (colon_allowed && c == ':');
}

// The problem with one field, or empty. The field's text itself is never quoted: it is what
// could not be trusted.
std::string field_problem(std::string_view field,
                          std::string_view text,
                          std::size_t max_bytes,
                          bool may_be_empty,
                          bool (*allowed)(char)) {
    if (text.size() > max_bytes)
        return "its " + std::string(field) + " is " + std::to_string(text.size()) + " bytes long (at most " +
               std::to_string(max_bytes) + ")";
    if (text.empty() && !may_be_empty) return "its " + std::string(field) + " is empty";
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (!allowed(text[i]))
            return "its " + std::string(field) + " holds a character that is not allowed (byte " +
                   std::to_string(static_cast<unsigned char>(text[i])) + " at offset " + std::to_string(i) +
                   ")";
    }
    return {};
}

}  // namespace

std::string identity_problem(const identity& who) {
    auto node_id_char = [](char c) {
        return name_character(c, true);
    };
    auto region_char = [](char c) {
        return name_character(c, false);
    };
    auto version_char = [](char c) {
        return c >= 0x20 && c <= 0x7e;
    };
    std::string problem = field_problem("node id", who.node_id, max_node_id_bytes, false, node_id_char);
    if (problem.empty()) problem = field_problem("region", who.region, max_region_bytes, false, region_char);
    if (problem.empty())
        problem = field_problem("app version", who.app_version, max_app_version_bytes, true, version_char);
    return problem;
}

std::string node_context::my_region() const {
    return region_override ? *region_override : rpc::my_region();
}

std::string node_context::primary_region() const {
    return primary_override ? *primary_override : rpc::primary_region();
}

identity node_context::self() const {
    return identity{
        node_id, my_region(), app_version, protocol_version, writes && writes->remembers_request_ids()};
}

void node_context::fill(wire::NodeIdentity::Builder out) const {
    out.setNodeId(node_id);
    out.setRegion(my_region());
    out.setAppVersion(app_version);
    out.setProtocolVersion(protocol_version);
    out.setRemembersRequestIds(writes && writes->remembers_request_ids());
}

capnp::ReaderOptions node_context::reader_options() const {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = max_message_bytes / 8 + 1024;
    return options;
}

void node_context::log(log_level level, const std::string& raw) const {
    // Log lines quote what peers said (their node ids, regions, messages): one line each, bounded.
    if (sink) sink(level, flypg::detail::log_safe(raw));  // node::create always sets one
}

}  // namespace flypg::rpc::detail

namespace flypg::rpc {

log_sink stderr_log_sink(std::string prefix) {
    log_level threshold = log_level::warning;
    const char* names[] = {"debug", "info", "warning", "error"};
    if (const char* v = std::getenv("FLYPG_LOG_LEVEL"); v != nullptr && *v != '\0') {
        const std::string_view wanted(v);
        const auto* found = std::find(std::begin(names), std::end(names), wanted);
        if (found == std::end(names))
            throw_error(errc::invalid_argument,
                        "FLYPG_LOG_LEVEL is \"" + flypg::detail::log_safe(wanted, 64) +
                            "\"; use debug, info, warning or error");
        threshold = static_cast<log_level>(found - std::begin(names));
    }
    if (!prefix.empty()) prefix += ' ';
    return [threshold, prefix = std::move(prefix), names](log_level level, std::string_view line) {
        if (level < threshold) return;
        std::fprintf(stderr,
                     "%s%s: %.*s\n",
                     prefix.c_str(),
                     names[static_cast<int>(level)],
                     static_cast<int>(line.size()),
                     line.data());
    };
}

}  // namespace flypg::rpc

namespace flypg::rpc::detail {

std::string message_limit_text(const node_context& ctx) {
    return "the message limit of " + std::to_string(ctx.max_message_bytes) +
           " bytes (node_options::max_message_bytes; raise it on every node, the serving ones included, "
           "to send larger messages)";
}

void roll_back_in_background(std::shared_ptr<node_context> ctx,
                             std::unique_ptr<transaction_session> session,
                             const char* which) {
    auto rollback = [](std::shared_ptr<node_context> keep,
                       std::unique_ptr<transaction_session> s,
                       const char* what) -> asio::awaitable<void> {
        try {
            co_await s->rollback();
        } catch (const std::exception& e) {
            keep->log(log_level::warning, std::string("rolling back ") + what + " failed: " + e.what());
        }
    };
    asio::io_context& io = ctx->runtime->io();
    asio::co_spawn(io, rollback(std::move(ctx), std::move(session), which), asio::detached);
}

}  // namespace flypg::rpc::detail
