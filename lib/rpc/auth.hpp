// The handshake's cryptography: random challenges and HMAC-SHA256 proofs of the cluster secret.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace flypg::rpc::detail {

using challenge = std::array<std::uint8_t, 32>;
using proof = std::array<std::uint8_t, 32>;

/// Labels that bind a proof to its direction, so a proof can never be reflected back.
inline constexpr std::string_view server_proof_label = "flypg-server-v1";
inline constexpr std::string_view client_proof_label = "flypg-client-v1";

/// 32 bytes from OpenSSL's CSPRNG. Throws flypg::error when it fails.
challenge random_challenge();

/// HMAC-SHA256(secret, label | first | second).
proof make_proof(std::string_view secret,
                 std::string_view label,
                 std::span<const std::uint8_t> first,
                 std::span<const std::uint8_t> second);

/// Constant-time comparison; false when the sizes differ.
bool proofs_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept;

}  // namespace flypg::rpc::detail
