// TLS 1.3 for the links between nodes, on OpenSSL memory BIOs.
//
// asio_stream keeps its own read-ahead buffer and batches its writes per KJ turn; an
// asio::ssl::stream would take both over and cannot write without an Asio operation. A memory-BIO
// session fits in between instead: ciphertext read from the socket is fed in and plaintext comes
// out for the frame guard and Cap'n Proto; plaintext written by Cap'n Proto is sealed into records
// that the stream sends like any other bytes. The session never touches the socket.
//
// Both sides authenticate each other before any application byte flows: with a key derived from
// the cluster secret (TLS-PSK, forward-secret: the key exchange still runs ECDHE), or with
// certificates signed by the cluster's own CA. The HMAC handshake of the RPC protocol then runs
// inside the encrypted link, unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flypg/rpc/node.hpp"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace flypg::rpc::detail {

/// A node's TLS configuration, built once at node::create (where a bad file fails with an error
/// that names it); every connection's session is made from it.
class tls_context {
  public:
    /// PSK: the key is HMAC-SHA256(secret, "flypg-tls-psk-v1"), so the secret itself never enters
    /// TLS. Certificates: PEM files, checked now (readable, key matches certificate, CA loads).
    /// @throws flypg::error (invalid_argument) naming the setting and OpenSSL's reason.
    static std::shared_ptr<tls_context> with_psk(const std::string& cluster_secret);
    static std::shared_ptr<tls_context> with_certificates(const std::string& certificate_file,
                                                          const std::string& private_key_file,
                                                          const std::string& ca_file);
    ~tls_context();
    tls_context(const tls_context&) = delete;
    tls_context& operator=(const tls_context&) = delete;

    link_security mode() const noexcept { return mode_; }
    /// How the link is protected, for the node's start-up log line.
    std::string description() const;

    /// A failed TLS handshake as a log line's end: with a pre-shared key, "did not prove the
    /// cluster secret: TLS handshake failed (<reason>); ..." with what to check on each side.
    std::string handshake_failure_text(const std::string& reason) const;

    SSL_CTX* native() const noexcept { return ctx_; }
    const std::vector<std::uint8_t>& psk() const noexcept { return psk_; }

  private:
    tls_context(link_security mode, SSL_CTX* ctx) : mode_(mode), ctx_(ctx) {}

    link_security mode_;
    SSL_CTX* ctx_;
    std::vector<std::uint8_t> psk_;
};

enum class tls_role { client, server };

/// One connection's TLS state. Single-threaded, like the stream that owns it.
class tls_session {
  public:
    tls_session(std::shared_ptr<const tls_context> context, tls_role role);
    ~tls_session();
    tls_session(const tls_session&) = delete;
    tls_session& operator=(const tls_session&) = delete;

    /// Ciphertext received from the peer.
    void feed(std::span<const std::uint8_t> ciphertext);
    /// Decrypts into `out`; drives the handshake. Returns the bytes written (0 when it needs more
    /// ciphertext, the peer closed the link, or the session failed: see closed() and failed()).
    std::size_t decrypt(std::uint8_t* out, std::size_t max);
    /// Seals `plaintext` into records once the handshake is done; before, it returns false and
    /// takes nothing (the caller keeps the bytes and retries when established()).
    bool seal(std::span<const std::uint8_t> plaintext);
    /// Appends the ciphertext waiting to be sent (handshake messages, records, alerts) to `out`.
    void take_output(std::vector<std::uint8_t>& out);

    /// Ciphertext is waiting for take_output().
    bool has_output() const noexcept;
    bool established() const noexcept { return established_; }
    bool closed() const noexcept { return closed_; }  ///< the peer sent close_notify
    bool failed() const noexcept { return !failure_.empty(); }
    /// Why the session failed ("certificate verify failed", "decryption failed or bad record mac").
    const std::string& failure() const noexcept { return failure_; }

  private:
    void note_failure(int ssl_error);

    std::shared_ptr<const tls_context> context_;
    SSL* ssl_ = nullptr;
    bool established_ = false;
    bool closed_ = false;
    std::string failure_;
};

/// A session for one connection of a node whose links use `context`; null on clear links.
inline std::unique_ptr<tls_session> make_tls_session(const std::shared_ptr<const tls_context>& context,
                                                     tls_role role) {
    return context ? std::make_unique<tls_session>(context, role) : nullptr;
}

}  // namespace flypg::rpc::detail
