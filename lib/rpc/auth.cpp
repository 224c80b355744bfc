#include "rpc/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <vector>

#include "flypg/error.hpp"

namespace flypg::rpc::detail {

challenge random_challenge() {
    challenge c{};
    if (RAND_bytes(c.data(), static_cast<int>(c.size())) != 1) {
        throw_error(errc::unauthenticated, "OpenSSL could not produce random bytes for the RPC handshake");
    }
    return c;
}

proof make_proof(std::string_view secret,
                 std::string_view label,
                 std::span<const std::uint8_t> first,
                 std::span<const std::uint8_t> second) {
    std::vector<std::uint8_t> message;
    message.reserve(label.size() + first.size() + second.size());
    message.insert(message.end(), label.begin(), label.end());
    message.insert(message.end(), first.begin(), first.end());
    message.insert(message.end(), second.begin(), second.end());
    proof out{};
    unsigned int length = 0;
    // An empty key (development without a secret) is valid for HMAC; OpenSSL wants a non-null one.
    static const std::uint8_t empty_key = 0;
    const void* key = secret.empty() ? static_cast<const void*>(&empty_key) : secret.data();
    if (HMAC(EVP_sha256(),
             key,
             static_cast<int>(secret.size()),
             message.data(),
             message.size(),
             out.data(),
             &length) == nullptr ||
        length != out.size()) {
        throw_error(errc::unauthenticated, "OpenSSL HMAC-SHA256 failed in the RPC handshake");
    }
    return out;
}

bool proofs_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace flypg::rpc::detail
