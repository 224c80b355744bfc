// The calling half of a node: one authenticated outbound connection to a peer.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async.h>

#include <asio.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "rpc/asio_stream.hpp"
#include "rpc/context.hpp"
#include "rpc/kj_bridge.hpp"

namespace flypg::rpc::detail {

/// Why a handshake did not produce a session; the link decides how long to back off.
enum class handshake_failure {
    none,
    transport,         ///< connect or I/O failed, or timed out
    self,              ///< the peer is this node
    version_mismatch,  ///< the peer speaks another protocol version
    unauthenticated,   ///< one side did not prove the secret
};

class peer_connection {
  public:
    peer_connection(std::shared_ptr<node_context> ctx, asio::ip::tcp::socket socket, std::string address);
    ~peer_connection();
    peer_connection(const peer_connection&) = delete;
    peer_connection& operator=(const peer_connection&) = delete;

    /// hello + authenticate. On failure returns the reason and sets `failure_text`.
    asio::awaitable<handshake_failure> handshake(std::chrono::steady_clock::time_point deadline);

    wire::Session::Client& session() noexcept { return session_; }
    asio_stream& stream() noexcept { return stream_; }
    kj::Promise<void> on_disconnect() { return network_.onDisconnect(); }
    void close() noexcept;

    const std::string& address() const noexcept { return address_; }
    const identity& peer() const noexcept { return peer_; }
    const std::string& failure_text() const noexcept { return failure_text_; }

    /// Calls this node has outstanding on the connection.
    std::size_t in_flight = 0;
    /// Not chosen for calls: heartbeat misses, or the connection is going away.
    bool healthy = true;
    bool closed = false;
    std::chrono::microseconds last_round_trip{0};

  private:
    std::shared_ptr<node_context> ctx_;
    std::string address_;
    identity peer_;
    std::string failure_text_;
    std::shared_ptr<frame_guard> guard_;  // lifted once the handshake succeeded
    asio_stream stream_;
    capnp::TwoPartyVatNetwork network_;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
    wire::Bootstrap::Client bootstrap_;
    wire::Session::Client session_;
};

}  // namespace flypg::rpc::detail
