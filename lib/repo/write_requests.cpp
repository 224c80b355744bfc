#include "repo/write_requests.hpp"

#include <bit>
#include <cstring>
#include <limits>

#include "flypg/error.hpp"

namespace flypg::detail {
namespace {

// Little endian, lengths before contents.
class writer {
  public:
    void u8(std::uint8_t v) { out.push_back(v); }
    void u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void u64(std::uint64_t v) {
        for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void text(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out.insert(out.end(), s.begin(), s.end());
    }
    void blob(const std::vector<std::uint8_t>& b) {
        u32(static_cast<std::uint32_t>(b.size()));
        out.insert(out.end(), b.begin(), b.end());
    }
    std::vector<std::uint8_t> out;
};

// Also what a forwarded write finds under an id that a named transaction used, and back: one id
// space, two encodings, and a clear refusal instead of a misread.
[[noreturn]] void throw_malformed() {
    throw_error(errc::protocol_error,
                "the results stored under this request id are malformed, or were stored by another kind of "
                "request (a forwarded write, a named transaction or an interactive transaction)");
}

// A stored 64-bit number as the narrower type it was written from; refused when it does not fit
// (encode_values never writes such a number, so it is damage, not a value to cut down).
template <class Int>
Int narrow(std::int64_t stored) {
    if (stored < std::numeric_limits<Int>::min() || stored > std::numeric_limits<Int>::max())
        throw_malformed();
    return static_cast<Int>(stored);
}

class reader {
  public:
    explicit reader(std::span<const std::uint8_t> in) : in_(in) {}
    std::uint8_t u8() { return take(1)[0]; }
    /// A byte that encode_*() writes as 0 or 1 only.
    bool flag() {
        const std::uint8_t b = u8();
        if (b > 1) fail();
        return b == 1;
    }
    std::uint32_t u32() {
        const auto b = take(4);
        std::uint32_t v = 0;
        for (int i = 3; i >= 0; --i) v = (v << 8) | b[static_cast<std::size_t>(i)];
        return v;
    }
    std::uint64_t u64() {
        const auto b = take(8);
        std::uint64_t v = 0;
        for (int i = 7; i >= 0; --i) v = (v << 8) | b[static_cast<std::size_t>(i)];
        return v;
    }
    std::string text() {
        const auto b = take(u32());
        return {reinterpret_cast<const char*>(b.data()), b.size()};
    }
    std::vector<std::uint8_t> blob() {
        const auto b = take(u32());
        return {b.begin(), b.end()};
    }
    /// A count of items that take at least `min_bytes` each: bounded by what is left.
    std::uint32_t count(std::size_t min_bytes) {
        const std::uint32_t n = u32();
        if (n > (in_.size() - at_) / min_bytes) fail();
        return n;
    }
    bool done() const noexcept { return at_ == in_.size(); }

  private:
    std::span<const std::uint8_t> take(std::size_t n) {
        if (n > in_.size() - at_) fail();
        const auto b = in_.subspan(at_, n);
        at_ += n;
        return b;
    }
    [[noreturn]] static void fail() { throw_malformed(); }
    std::span<const std::uint8_t> in_;
    std::size_t at_ = 0;
};

}  // namespace

std::vector<std::uint8_t> encode_results(const std::vector<rpc::statement_result>& results) {
    writer w;
    w.u32(static_cast<std::uint32_t>(results.size()));
    for (const rpc::statement_result& r : results) {
        w.u64(r.affected_rows);
        w.u32(static_cast<std::uint32_t>(r.columns.size()));
        for (const rpc::column& c : r.columns) {
            w.text(c.name);
            w.u32(c.type_oid);
        }
        w.u32(static_cast<std::uint32_t>(r.rows.size()));
        for (const auto& row : r.rows) {
            for (const auto& cell : row) {
                w.u8(cell ? 1 : 0);
                if (cell) w.text(*cell);
            }
        }
    }
    return std::move(w.out);
}

std::vector<rpc::statement_result> decode_results(std::span<const std::uint8_t> bytes) {
    reader r(bytes);
    std::vector<rpc::statement_result> out(r.count(16));
    for (rpc::statement_result& result : out) {
        result.affected_rows = r.u64();
        result.columns.resize(r.count(8));
        for (rpc::column& c : result.columns) {
            c.name = r.text();
            c.type_oid = r.u32();
        }
        // A row takes a byte per cell at least; rows of no column take none, and are bounded apart.
        const std::uint32_t rows = result.columns.empty() ? r.u32() : r.count(result.columns.size());
        if (result.columns.empty() && rows > (1u << 20)) throw_malformed();
        result.rows.resize(rows);
        for (auto& row : result.rows) {
            row.resize(result.columns.size());
            for (auto& cell : row)
                if (r.flag()) cell = r.text();
        }
    }
    if (!r.done()) throw_malformed();
    return out;
}

// A value is its variant index, then its content: fixed-width numbers, counted text and bytes.
// decode_values() spells the indices out; a new alternative must be added there too.
static_assert(std::variant_size_v<rpc::value> == 8 &&
              std::is_same_v<std::variant_alternative_t<0, rpc::value>, rpc::null_value> &&
              std::is_same_v<std::variant_alternative_t<5, rpc::value>, double> &&
              std::is_same_v<std::variant_alternative_t<7, rpc::value>, rpc::bytes>);
std::vector<std::uint8_t> encode_values(const std::vector<rpc::value>& values) {
    writer w;
    w.u32(static_cast<std::uint32_t>(values.size()));
    for (const rpc::value& v : values) {
        w.u8(static_cast<std::uint8_t>(v.index()));
        std::visit(
            [&w](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, bool>) {
                    w.u8(x ? 1 : 0);
                } else if constexpr (std::is_same_v<T, std::int16_t> || std::is_same_v<T, std::int32_t> ||
                                     std::is_same_v<T, std::int64_t>) {
                    w.u64(static_cast<std::uint64_t>(static_cast<std::int64_t>(x)));
                } else if constexpr (std::is_same_v<T, double>) {
                    w.u64(std::bit_cast<std::uint64_t>(x));
                } else if constexpr (std::is_same_v<T, std::string>) {
                    w.text(x);
                } else if constexpr (std::is_same_v<T, rpc::bytes>) {
                    w.blob(x.data);
                }
            },
            v);
    }
    return std::move(w.out);
}

std::vector<rpc::value> decode_values(std::span<const std::uint8_t> bytes) {
    reader r(bytes);
    std::vector<rpc::value> out(r.count(1));
    for (rpc::value& v : out) {
        switch (r.u8()) {
            case 0:
                v = rpc::null_value{};
                break;
            case 1:
                v = r.flag();
                break;
            case 2:
                v = narrow<std::int16_t>(static_cast<std::int64_t>(r.u64()));
                break;
            case 3:
                v = narrow<std::int32_t>(static_cast<std::int64_t>(r.u64()));
                break;
            case 4:
                v = static_cast<std::int64_t>(r.u64());
                break;
            case 5:
                v = std::bit_cast<double>(r.u64());
                break;
            case 6:
                v = r.text();
                break;
            case 7:
                v = rpc::bytes(r.blob());
                break;
            default:
                throw_malformed();
        }
    }
    if (!r.done()) throw_malformed();
    return out;
}

}  // namespace flypg::detail
