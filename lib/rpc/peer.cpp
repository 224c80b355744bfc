#include "rpc/peer.hpp"

#include <utility>

#include "rpc/auth.hpp"
#include "rpc/codec.hpp"

namespace flypg::rpc::detail {
namespace {

capnp::Data::Reader data_of(std::span<const std::uint8_t> bytes) {
    return {bytes.data(), bytes.size()};
}

template <class T>
std::string describe_failure(const kj_outcome<T>& o) {
    if (o.timed_out) return "timed out";
    if (o.cancelled) return "cancelled";
    if (o.error) return o.error->getDescription().cStr();
    return "no answer";
}

wire::Bootstrap::Client bootstrap_of(capnp::RpcSystem<capnp::rpc::twoparty::VatId>& rpc) {
    capnp::word scratch[4]{};
    capnp::MallocMessageBuilder message(scratch);
    auto vat = message.getRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(capnp::rpc::twoparty::Side::SERVER);
    return rpc.bootstrap(vat).castAs<wire::Bootstrap>();
}

}  // namespace

peer_connection::peer_connection(std::shared_ptr<node_context> ctx,
                                 asio::ip::tcp::socket socket,
                                 std::string address)
    : ctx_(std::move(ctx)),
      address_(std::move(address)),
      // A peer that has not proved the secret cannot make this node allocate more than a
      // handshake message either.
      guard_(std::make_shared<frame_guard>(handshake_message_limit)),
      stream_(std::move(socket), guard_, make_tls_session(ctx_->tls, tls_role::client)),
      network_(stream_, capnp::rpc::twoparty::Side::CLIENT, ctx_->reader_options()),
      rpc_(capnp::makeRpcClient(network_)),
      bootstrap_(bootstrap_of(rpc_)),
      session_(nullptr) {
    rpc_.setFlowLimit(ctx_->flow_limit_words());
}

peer_connection::~peer_connection() = default;

void peer_connection::close() noexcept {
    closed = true;
    healthy = false;
    stream_.close();
}

asio::awaitable<handshake_failure> peer_connection::handshake(
    std::chrono::steady_clock::time_point deadline) {
    auto& rt = *ctx_->runtime;
    const challenge ours = random_challenge();
    auto hello = bootstrap_.helloRequest();
    ctx_->fill(hello.initIdentity());
    hello.setChallenge(data_of(ours));
    auto greeted = co_await await_kj(rt, hello.send(), deadline);
    if (!greeted.ok()) {
        if (auto tls = stream_.tls_failure(); !tls.empty()) {
            failure_text_ = "peer " + address_ + " " + ctx_->tls->handshake_failure_text(tls);
            co_return handshake_failure::unauthenticated;
        }
        failure_text_ = "hello to " + address_ + " failed: " + describe_failure(greeted);
        if (stream_.tls_handshaking())
            failure_text_ += " during the TLS handshake (does the peer use TLS too?)";
        co_return handshake_failure::transport;
    }
    identity claimed = decode(greeted.value->getIdentity());
    if (auto problem = identity_problem(claimed); !problem.empty()) {
        failure_text_ = "refused peer " + address_ + ": " + problem;
        co_return handshake_failure::unauthenticated;
    }
    peer_ = std::move(claimed);
    if (peer_.node_id == ctx_->node_id) {
        failure_text_ = address_ + " is this node";
        co_return handshake_failure::self;
    }
    if (peer_.protocol_version != ctx_->protocol_version) {
        failure_text_ = "skipping peer " + address_ + " (node " + peer_.node_id + ", region " + peer_.region +
                        "): it speaks protocol version " + std::to_string(peer_.protocol_version) +
                        ", this node speaks " + std::to_string(ctx_->protocol_version);
        co_return handshake_failure::version_mismatch;
    }
    auto theirs = greeted.value->getChallenge();
    if (theirs.size() != ours.size()) {
        failure_text_ = "peer " + address_ + " sent a malformed challenge";
        co_return handshake_failure::unauthenticated;
    }
    std::span<const std::uint8_t> their_challenge(theirs.begin(), theirs.size());
    // The server proves the secret first, so that no SQL is ever sent to an impostor.
    auto expected = make_proof(ctx_->secret, server_proof_label, ours, their_challenge);
    auto proof_bytes = greeted.value->getProof();
    if (!proofs_equal(expected, std::span<const std::uint8_t>(proof_bytes.begin(), proof_bytes.size()))) {
        failure_text_ = "peer " + address_ + " (node " + peer_.node_id + ", region " + peer_.region +
                        ") did not prove the cluster secret; not using it";
        co_return handshake_failure::unauthenticated;
    }
    auto auth = bootstrap_.authenticateRequest();
    auth.setProof(data_of(make_proof(ctx_->secret, client_proof_label, their_challenge, ours)));
    auto authenticated = co_await await_kj(rt, auth.send(), deadline);
    if (!authenticated.ok()) {
        failure_text_ = "authenticate with " + address_ + " failed: " + describe_failure(authenticated);
        co_return handshake_failure::transport;
    }
    auto result = authenticated.value->getResult();
    if (result.isFailure()) {
        auto f = decode(result.getFailure());
        failure_text_ = "peer " + address_ + " (node " + peer_.node_id + ", region " + peer_.region +
                        ") refused this node: " + f.message;
        co_return f.kind == wire::Failure::Kind::VERSION_MISMATCH ? handshake_failure::version_mismatch
                                                                  : handshake_failure::unauthenticated;
    }
    session_ = result.getSession();
    guard_->lift();
    co_return handshake_failure::none;
}

}  // namespace flypg::rpc::detail
