// What the server and client halves of a node share: configuration, identity, limits, the log.
#pragma once

#include <capnp/message.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "flypg.capnp.h"
#include "flypg/rpc/node.hpp"
#include "flypg/rpc/procedure.hpp"
#include "flypg/rpc/write.hpp"
#include "rpc/kj_runtime.hpp"

namespace flypg::rpc::detail {

class tls_context;

/// A node as it introduces itself in the handshake.
struct identity {
    std::string node_id;
    std::string region;
    std::string app_version;
    std::uint32_t protocol_version = 0;
    bool remembers_request_ids = false;
};

identity decode(wire::NodeIdentity::Reader in);

/// What a node may say about itself in the handshake. Node ids and regions are names (letters,
/// digits, '.', '_', '-', and ':' in node ids); the version is printable ASCII. Anything else is
/// refused before it reaches a log line or a registry.
inline constexpr std::size_t max_node_id_bytes = 64;
inline constexpr std::size_t max_region_bytes = 64;
inline constexpr std::size_t max_app_version_bytes = 128;

/// Why `who` cannot be accepted ("its node id is 4194304 bytes long (at most 64)"), or empty.
std::string identity_problem(const identity& who);

/// Shared, immutable after start-up (except through the environment for regions).
class node_context {
  public:
    std::shared_ptr<kj_runtime> runtime;
    std::string node_id;
    std::optional<std::string> region_override;
    std::optional<std::string> primary_override;
    std::string app_version;
    std::uint32_t protocol_version = 0;
    std::string secret;
    std::shared_ptr<const tls_context> tls;  // null: clear links
    procedure_registry procedures;
    std::shared_ptr<write_executor> writes;
    log_sink sink;
    std::size_t max_message_bytes = 0;
    std::size_t max_in_flight = 0;
    std::size_t max_unauthenticated = 0;
    std::chrono::milliseconds handshake_timeout{0};

    std::string my_region() const;
    std::string primary_region() const;
    identity self() const;
    void fill(wire::NodeIdentity::Builder out) const;

    /// Limits for messages read from peers: the traversal limit is the message limit (plus room
    /// for the RPC envelope), which capnp 0.9.2 also checks against a message's declared size
    /// before reading it.
    capnp::ReaderOptions reader_options() const;
    /// Words of unanswered calls per connection before capnp stops reading from it.
    std::size_t flow_limit_words() const { return (max_message_bytes / 8) * 4; }

    void log(log_level level, const std::string& message) const;
};

/// Rolls `session` back in a coroutine of its own (the caller is gone or going): the session's
/// connection goes back only once the rollback ran. A failure is logged, naming `which`.
void roll_back_in_background(std::shared_ptr<node_context> ctx,
                             std::unique_ptr<transaction_session> session,
                             const char* which);

/// Ends every "too large" error: the limit, the setting that raises it and where it must be raised.
std::string message_limit_text(const node_context& ctx);

/// The message budget for a request or response payload, leaving room for the RPC envelope.
inline std::size_t payload_limit_bytes(const node_context& ctx) {
    return ctx.max_message_bytes > 4096 ? ctx.max_message_bytes - 1024 : ctx.max_message_bytes;
}

}  // namespace flypg::rpc::detail
