#include "rpc/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string_view>

#include "flypg/error.hpp"
#include "rpc/auth.hpp"

namespace flypg::rpc::detail {
namespace {

// Both ends name the key the same way; it is not secret, it only tells the server which key.
constexpr std::string_view psk_identity = "flypg-cluster-v1";
constexpr std::string_view psk_label = "flypg-tls-psk-v1";

// OpenSSL's queued reasons for the last failure, oldest first, then the queue is empty.
std::string openssl_reasons() {
    std::string text;
    while (unsigned long code = ERR_get_error()) {
        char line[256];
        ERR_error_string_n(code, line, sizeof line);
        // "error:0A000086:SSL routines::certificate verify failed": keep what follows the last "::"
        // or ':' so that the log says the reason, not OpenSSL's coordinates.
        std::string_view reason(line);
        if (auto pos = reason.rfind(':'); pos != std::string_view::npos) reason.remove_prefix(pos + 1);
        if (!text.empty()) text += "; ";
        text += reason;
    }
    return text.empty() ? "unknown reason" : text;
}

[[noreturn]] void fail_setting(const std::string& what) {
    throw_error(errc::invalid_argument, what + ": " + openssl_reasons());
}

const tls_context& context_of(SSL* ssl) {
    return *static_cast<const tls_context*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

unsigned int copy_psk(const tls_context& context, unsigned char* out, unsigned int room) {
    const auto& key = context.psk();
    if (key.size() > room) return 0;
    std::memcpy(out, key.data(), key.size());
    return static_cast<unsigned int>(key.size());
}

unsigned int client_psk(SSL* ssl,
                        const char* /*hint*/,
                        char* identity,
                        unsigned int identity_room,
                        unsigned char* key,
                        unsigned int key_room) {
    if (psk_identity.size() + 1 > identity_room) return 0;
    std::memcpy(identity, psk_identity.data(), psk_identity.size());
    identity[psk_identity.size()] = '\0';
    return copy_psk(context_of(ssl), key, key_room);
}

unsigned int server_psk(SSL* ssl, const char* identity, unsigned char* key, unsigned int key_room) {
    // An unknown identity gets no key: the handshake fails as for a wrong key.
    if (identity == nullptr || psk_identity != identity) return 0;
    return copy_psk(context_of(ssl), key, key_room);
}

SSL_CTX* new_tls13_context() {
    SSL_CTX* ctx = SSL_CTX_new(TLS_method());
    if (ctx == nullptr) fail_setting("cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    // Links are long-lived and reconnect rarely: no tickets, no session cache, nothing to resume.
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

}  // namespace

std::shared_ptr<tls_context> tls_context::with_psk(const std::string& cluster_secret) {
    if (cluster_secret.empty()) {
        throw_error(errc::invalid_argument,
                    "TLS with a pre-shared key needs a cluster secret (FLYPG_CLUSTER_SECRET); set one, or "
                    "use certificates (FLYPG_RPC_TLS=certificates)");
    }
    std::shared_ptr<tls_context> context(new tls_context(link_security::pre_shared_key, new_tls13_context()));
    const proof key = make_proof(cluster_secret, psk_label, {}, {});
    context->psk_.assign(key.begin(), key.end());
    SSL_CTX_set_app_data(context->ctx_, context.get());
    SSL_CTX_set_psk_client_callback(context->ctx_, client_psk);
    SSL_CTX_set_psk_server_callback(context->ctx_, server_psk);
    return context;
}

std::shared_ptr<tls_context> tls_context::with_certificates(const std::string& certificate_file,
                                                            const std::string& private_key_file,
                                                            const std::string& ca_file) {
    auto require = [](const std::string& value, const char* setting) {
        if (value.empty()) {
            throw_error(errc::invalid_argument,
                        std::string("TLS with certificates needs ") + setting + " (a PEM file)");
        }
    };
    require(certificate_file, "a certificate: node_options::tls_certificate_file or FLYPG_RPC_TLS_CERT");
    require(private_key_file, "a private key: node_options::tls_private_key_file or FLYPG_RPC_TLS_KEY");
    require(ca_file, "the cluster's CA certificate: node_options::tls_ca_file or FLYPG_RPC_TLS_CA");
    std::shared_ptr<tls_context> context(new tls_context(link_security::certificates, new_tls13_context()));
    SSL_CTX* ctx = context->ctx_;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, certificate_file.c_str()) != 1)
        fail_setting("cannot use the TLS certificate \"" + certificate_file + "\"");
    if (SSL_CTX_use_PrivateKey_file(ctx, private_key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        fail_setting("cannot use the TLS private key \"" + private_key_file + "\"");
    if (SSL_CTX_check_private_key(ctx) != 1)
        fail_setting("the TLS private key \"" + private_key_file + "\" does not match the certificate \"" +
                     certificate_file + "\"");
    if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1)
        fail_setting("cannot load the TLS CA certificate \"" + ca_file + "\"");
    // Mutual: each side presents its certificate and accepts only one the cluster's CA signed.
    // Peers are addressed by IP or by discovery names, so the CA, not a host name, is the check.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // OpenSSL requires it of a server that asks for the peer's certificate, cache or not.
    static constexpr unsigned char session_context[] = "flypg";
    SSL_CTX_set_session_id_context(ctx, session_context, sizeof session_context - 1);
    return context;
}

tls_context::~tls_context() {
    SSL_CTX_free(ctx_);
}

std::string tls_context::description() const {
    return mode_ == link_security::pre_shared_key
               ? "TLS 1.3 with a key derived from the cluster secret"
               : "TLS 1.3 with certificates (mutual, checked against the cluster's CA)";
}

std::string tls_context::handshake_failure_text(const std::string& reason) const {
    if (mode_ == link_security::pre_shared_key) {
        return "did not prove the cluster secret: TLS handshake failed (" + reason +
               "); wrong or missing FLYPG_CLUSTER_SECRET, or another FLYPG_RPC_TLS, on one side";
    }
    return "TLS handshake failed (" + reason +
           "); every node needs FLYPG_RPC_TLS=certificates and a certificate the cluster's CA signed";
}

tls_session::tls_session(std::shared_ptr<const tls_context> context, tls_role role)
    : context_(std::move(context)), ssl_(SSL_new(context_->native())) {
    if (ssl_ == nullptr)
        throw_error(errc::transport_error, "cannot create a TLS session: " + openssl_reasons());
    SSL_set_bio(ssl_, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    if (role == tls_role::client) {
        // A server without the key could still offer a certificate; with no CA to check it
        // against, a PSK client refuses every certificate, so only the key establishes a link.
        if (context_->mode() == link_security::pre_shared_key) SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
        SSL_set_connect_state(ssl_);
        SSL_do_handshake(ssl_);  // writes the ClientHello into the output BIO
    } else {
        SSL_set_accept_state(ssl_);
    }
}

tls_session::~tls_session() {
    SSL_free(ssl_);
}

void tls_session::feed(std::span<const std::uint8_t> ciphertext) {
    // A memory BIO takes everything; the stream reads the socket only when it needs more bytes, so
    // what waits here is at most one read and one partial record.
    if (!ciphertext.empty())
        BIO_write(SSL_get_rbio(ssl_), ciphertext.data(), static_cast<int>(ciphertext.size()));
}

std::size_t tls_session::decrypt(std::uint8_t* out, std::size_t max) {
    if (failed() || closed_) return 0;
    // Nothing new to work on: OpenSSL would only say so, after allocating its record buffers
    // (about 50 KiB for a connection that has sent nothing yet).
    if (BIO_ctrl_pending(SSL_get_rbio(ssl_)) == 0 && SSL_has_pending(ssl_) == 0) return 0;
    ERR_clear_error();
    if (!established_) {
        const int r = SSL_do_handshake(ssl_);
        if (r != 1) {
            const int e = SSL_get_error(ssl_, r);
            if (e != SSL_ERROR_WANT_READ) note_failure(e);
            return 0;
        }
        established_ = true;
    }
    if (max == 0) return 0;
    const int n = SSL_read(ssl_, out, static_cast<int>(std::min<std::size_t>(max, INT_MAX)));
    if (n > 0) return static_cast<std::size_t>(n);
    const int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_ZERO_RETURN) {
        closed_ = true;
    } else if (e != SSL_ERROR_WANT_READ) {
        note_failure(e);
    }
    return 0;
}

bool tls_session::seal(std::span<const std::uint8_t> plaintext) {
    if (!established_ || failed()) return false;
    ERR_clear_error();
    std::size_t done = 0;
    while (done < plaintext.size()) {
        const int chunk = static_cast<int>(std::min<std::size_t>(plaintext.size() - done, INT_MAX));
        const int n = SSL_write(ssl_, plaintext.data() + done, chunk);
        if (n <= 0) {
            note_failure(SSL_get_error(ssl_, n));
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

bool tls_session::has_output() const noexcept {
    return BIO_ctrl_pending(SSL_get_wbio(ssl_)) > 0;
}

void tls_session::take_output(std::vector<std::uint8_t>& out) {
    BIO* wbio = SSL_get_wbio(ssl_);
    const std::size_t pending = BIO_ctrl_pending(wbio);
    if (pending == 0) return;
    const std::size_t at = out.size();
    out.resize(at + pending);
    const int n = BIO_read(wbio, out.data() + at, static_cast<int>(pending));
    out.resize(at + static_cast<std::size_t>(std::max(n, 0)));
}

void tls_session::note_failure(int ssl_error) {
    std::string reason =
        ssl_error == SSL_ERROR_SSL ? openssl_reasons() : "TLS error " + std::to_string(ssl_error);
    if (const long verify = SSL_get_verify_result(ssl_); verify != X509_V_OK) {
        reason += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
    }
    failure_ = std::move(reason);
}

}  // namespace flypg::rpc::detail
