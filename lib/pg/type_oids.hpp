// PostgreSQL built-in type OIDs used by parameter encoding and result decoding (pg_type.dat).
#pragma once

#include <cstdint>
#include <string_view>

namespace flypg::pg {

namespace oid {
inline constexpr std::uint32_t boolean = 16;
inline constexpr std::uint32_t bytea = 17;
inline constexpr std::uint32_t int8 = 20;
inline constexpr std::uint32_t int2 = 21;
inline constexpr std::uint32_t int4 = 23;
inline constexpr std::uint32_t text = 25;
inline constexpr std::uint32_t oid_type = 26;
inline constexpr std::uint32_t float4 = 700;
inline constexpr std::uint32_t float8 = 701;
inline constexpr std::uint32_t numeric = 1700;
}  // namespace oid

/// A readable name for error messages ("int8", "text", or "oid 3220").
std::string type_name(std::uint32_t type_oid);

}  // namespace flypg::pg
