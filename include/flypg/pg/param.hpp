// Typed query parameters.
//
// A `param` holds one value bound to a `$n` placeholder: NULL, bool, 16/32/64-bit integers,
// double, text or bytes. Values are sent in PostgreSQL's binary format with their type OID, so
// no value is ever spliced into SQL text:
//
//     flypg::pg::params values{std::int64_t{42}, "ada", flypg::pg::bytes{{std::byte{0xff}}}};
//     co_await conn.query("INSERT INTO t (id, name, photo) VALUES ($1, $2, $3)", std::move(values));
//
// Name the parameter vector before the co_await: g++ 12 rejects a braced list inside a co_await
// expression (see the toolchain notes in the README).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "flypg/error.hpp"

namespace flypg::pg {

/// Binary data, bound as and read from `bytea`.
struct bytes {
    std::vector<std::byte> data;
    friend bool operator==(const bytes&, const bytes&) = default;
};

/// One query parameter. Integers are sized by their C++ type: `std::int16_t` binds an int2,
/// `int` an int4, `std::int64_t` an int8; unsigned values bind the next larger signed type
/// (an unsigned 64-bit value above INT64_MAX is rejected with errc::out_of_range).
class param {
  public:
    using value_type = std::
        variant<std::nullptr_t, bool, std::int16_t, std::int32_t, std::int64_t, double, std::string, bytes>;

    param(std::nullptr_t) noexcept : value_(nullptr) {}
    param(bool v) noexcept : value_(v) {}
    template <std::integral I>
    requires(!std::same_as<I, bool> && !std::same_as<I, char>) param(I v) : value_(from_integer(v)) {}
    param(double v) noexcept : value_(v) {}
    param(float v) noexcept : value_(static_cast<double>(v)) {}
    param(std::string v) noexcept : value_(std::move(v)) {}
    param(std::string_view v) : value_(std::string(v)) {}
    param(const char* v) : value_(std::string(v)) {}
    param(bytes v) noexcept : value_(std::move(v)) {}
    /// An empty optional binds NULL.
    template <class T>
    param(std::optional<T> v) : value_(nullptr) {
        if (v) *this = param(std::move(*v));
    }

    const value_type& value() const noexcept { return value_; }
    bool is_null() const noexcept { return std::holds_alternative<std::nullptr_t>(value_); }
    friend bool operator==(const param&, const param&) = default;

  private:
    template <class I>
    static value_type from_integer(I v) {
        if constexpr (std::is_signed_v<I>) {
            if constexpr (sizeof(I) <= 2)
                return static_cast<std::int16_t>(v);
            else if constexpr (sizeof(I) == 4)
                return static_cast<std::int32_t>(v);
            else
                return static_cast<std::int64_t>(v);
        } else {
            if constexpr (sizeof(I) == 1)
                return static_cast<std::int16_t>(v);
            else if constexpr (sizeof(I) == 2)
                return static_cast<std::int32_t>(v);
            else {
                if (static_cast<std::uint64_t>(v) >
                    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                    throw_error(
                        errc::out_of_range,
                        "unsigned parameter " + std::to_string(v) + " does not fit a PostgreSQL int8");
                return static_cast<std::int64_t>(v);
            }
        }
    }

    value_type value_;
};

/// The parameters of one statement.
using params = std::vector<param>;

}  // namespace flypg::pg
