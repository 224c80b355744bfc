// Typed values that cross the RPC boundary: procedure arguments and results, statement parameters.
//
// A value is SQL NULL, a bool, a 16/32/64-bit integer, a float64, text or bytes; each keeps its
// type on the wire, so an int16 sent is an int16 received:
//
//     std::vector<flypg::rpc::value> args{flypg::rpc::value(std::int64_t{42}), flypg::rpc::value("alice")};
//     auto results = co_await node.call_primary("users.create", std::move(args));
//     std::int64_t id = std::get<std::int64_t>(results.at(0));
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace flypg::rpc {

/// SQL NULL (or "no value").
struct null_value {
    friend bool operator==(null_value, null_value) noexcept = default;
};

/// Binary data (PostgreSQL bytea), distinct from text. Not an aggregate, for the same g++ 12
/// reason as flypg::rpc::statement.
struct bytes {
    bytes() = default;
    explicit bytes(std::vector<std::uint8_t> content) : data(std::move(content)) {}

    std::vector<std::uint8_t> data;
    friend bool operator==(const bytes&, const bytes&) = default;
};

/// One typed value. The alternatives are exactly those the protocol carries.
using value =
    std::variant<null_value, bool, std::int16_t, std::int32_t, std::int64_t, double, std::string, bytes>;

/// The name of the value's type, for messages: "null", "bool", "int16", ..., "text", "bytes".
const char* type_name(const value& v) noexcept;

}  // namespace flypg::rpc
