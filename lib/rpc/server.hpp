// The serving half of a node: one server_connection per accepted socket, whose bootstrap
// capability offers only the handshake. The Session (procedures, writes, transactions) is handed
// out by Bootstrap.authenticate once the peer proved the cluster secret.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async.h>

#include <asio.hpp>

#include <memory>
#include <string>

#include "rpc/asio_stream.hpp"
#include "rpc/auth.hpp"
#include "rpc/context.hpp"

namespace flypg::rpc::detail {

/// Per-connection state shared by the connection and its capabilities (which capnp may keep a
/// little longer than the connection).
struct connection_state {
    std::shared_ptr<node_context> ctx;
    std::string peer_address;
    bool hello_done = false;
    bool refusal_sent = false;  ///< hello or authenticate was answered with a refusal
    bool auth_attempted = false;
    bool authenticated = false;
    bool version_mismatch = false;
    challenge client_challenge{};
    challenge server_challenge{};
    identity peer;
    std::size_t in_flight = 0;
    /// Bounds the messages of the peer until it authenticates (then lifted).
    std::shared_ptr<frame_guard> guard;
    /// Fulfilled when the handshake failed: the connection is closed soon after.
    kj::Own<kj::PromiseFulfiller<void>> refused;
};

class server_connection {
  public:
    server_connection(std::shared_ptr<node_context> ctx,
                      asio::ip::tcp::socket socket,
                      std::string peer_address);
    ~server_connection();
    server_connection(const server_connection&) = delete;
    server_connection& operator=(const server_connection&) = delete;

    /// Resolves when the peer disconnects (or the stream fails).
    kj::Promise<void> on_disconnect() { return network_.onDisconnect(); }
    /// Resolves when the handshake failed.
    kj::Promise<void> on_refused() { return refused_.addBranch(); }

    const connection_state& state() const noexcept { return *state_; }
    /// Why the stream was closed for a message over the handshake's limit, or empty.
    const std::string& refused_message() const noexcept { return state_->guard->why(); }
    /// Why the TLS handshake or a record failed (a wrong key or certificate, a tampered byte), or empty.
    std::string tls_failure() const { return stream_.tls_failure(); }
    void close() noexcept { stream_.close(); }

  private:
    std::shared_ptr<connection_state> state_;
    kj::ForkedPromise<void> refused_;
    asio_stream stream_;
    capnp::TwoPartyVatNetwork network_;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
};

}  // namespace flypg::rpc::detail
