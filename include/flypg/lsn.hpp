// A position in PostgreSQL's write-ahead log (WAL): the 64-bit value behind the `pg_lsn` type.
//
// The text form is PostgreSQL's: two upper-case hexadecimal halves without padding, "%X/%X", the
// high 32 bits first. Comparison is numeric, so a replica has replayed a write once its replay
// position compares greater than or equal to the write's commit LSN.
//
//     flypg::lsn commit = flypg::lsn::parse("0/17BB660");  // 24'884'832
//     if (replayed >= commit) { /* the replica has the write */ }
//     std::int64_t behind = flypg::distance(replayed, commit);  // bytes still to replay
//
// Malformed text throws flypg::error with errc::malformed_lsn, and the message quotes the text.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

namespace flypg {

/// A WAL position. Regular value type; the default value is 0/0 (PostgreSQL's InvalidXLogRecPtr).
class lsn {
  public:
    constexpr lsn() noexcept = default;

    /// The LSN whose 64-bit value is `value` (as `pg_lsn` stores it).
    static constexpr lsn from_value(std::uint64_t value) noexcept { return lsn(value); }

    /// Parses PostgreSQL's text form "X/X": 1 to 8 hexadecimal digits (either case) on each side of
    /// one slash, nothing else (no signs, spaces or prefixes).
    /// @throws flypg::error with errc::malformed_lsn; its library message quotes `text`.
    static lsn parse(std::string_view text);

    /// Like parse(), but returns std::nullopt for malformed text instead of throwing.
    static std::optional<lsn> try_parse(std::string_view text) noexcept;

    /// The 64-bit value.
    constexpr std::uint64_t value() const noexcept { return value_; }

    /// PostgreSQL's text form: upper-case hexadecimal, no padding ("0/17BB660").
    std::string to_string() const;

    friend constexpr auto operator<=>(const lsn&, const lsn&) noexcept = default;
    friend constexpr bool operator==(const lsn&, const lsn&) noexcept = default;

  private:
    constexpr explicit lsn(std::uint64_t value) noexcept : value_(value) {}

    std::uint64_t value_ = 0;
};

/// Bytes of WAL from `from` to `to`: `to - from`, negative when `to` is before `from`. Like
/// std::distance(first, last), and the opposite argument order of SQL's pg_wal_lsn_diff(a, b) = a - b.
constexpr std::int64_t distance(lsn from, lsn to) noexcept {
    // Unsigned subtraction wraps, and C++20 defines the conversion to signed as modular, so this
    // is exact for every pair less than 2^63 bytes apart (every pair a real WAL can produce).
    return static_cast<std::int64_t>(to.value() - from.value());
}

/// Writes to_string() (used by test frameworks and logs).
std::ostream& operator<<(std::ostream& out, lsn position);

}  // namespace flypg

template <>
struct std::hash<flypg::lsn> {
    std::size_t operator()(flypg::lsn position) const noexcept {
        return std::hash<std::uint64_t>{}(position.value());
    }
};
