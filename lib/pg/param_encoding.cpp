#include "pg/param_encoding.hpp"

#include <bit>
#include <cstring>
#include <type_traits>

#include "pg/type_oids.hpp"

namespace flypg::pg {

std::string type_name(std::uint32_t type_oid) {
    switch (type_oid) {
        case oid::boolean:
            return "bool";
        case oid::bytea:
            return "bytea";
        case oid::int8:
            return "int8";
        case oid::int2:
            return "int2";
        case oid::int4:
            return "int4";
        case oid::text:
            return "text";
        case oid::oid_type:
            return "oid";
        case oid::float4:
            return "float4";
        case oid::float8:
            return "float8";
        case oid::numeric:
            return "numeric";
        default:
            return "oid " + std::to_string(type_oid);
    }
}

namespace detail {
namespace {

constexpr std::size_t max_field_size = std::size_t{1} << 30;

template <class U>
U byteswap(U value) noexcept {
    U swapped = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) {
        swapped = static_cast<U>((swapped << 8) | (value & 0xff));
        value = static_cast<U>(value >> 8);
    }
    return swapped;
}

template <class T>
void append_big_endian(std::vector<char>& storage, T value) {
    using unsigned_type = std::make_unsigned_t<T>;
    auto bits = static_cast<unsigned_type>(value);
    if constexpr (std::endian::native == std::endian::little) bits = byteswap(bits);
    const std::size_t at = storage.size();
    storage.resize(at + sizeof(bits));
    std::memcpy(storage.data() + at, &bits, sizeof(bits));
}

// Per-parameter offsets into storage; pointers are fixed up once storage stops growing.
struct pending_binary {
    std::size_t index;
    std::size_t offset;
};

}  // namespace

encoded_params encode_params(const params& values) {
    encoded_params out;
    const std::size_t n = values.size();
    out.types.resize(n);
    out.values.resize(n, nullptr);
    out.lengths.resize(n, 0);
    out.formats.resize(n, 1);
    std::vector<pending_binary> binary;
    binary.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t offset = out.storage.size();
        std::visit(
            [&](const auto& v) {
                using V = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<V, std::nullptr_t>) {
                    // Unknown type: the server infers it from the placeholder's context.
                    out.types[i] = 0;
                } else if constexpr (std::is_same_v<V, bool>) {
                    out.types[i] = oid::boolean;
                    out.storage.push_back(v ? 1 : 0);
                } else if constexpr (std::is_same_v<V, std::int16_t>) {
                    out.types[i] = oid::int2;
                    append_big_endian(out.storage, v);
                } else if constexpr (std::is_same_v<V, std::int32_t>) {
                    out.types[i] = oid::int4;
                    append_big_endian(out.storage, v);
                } else if constexpr (std::is_same_v<V, std::int64_t>) {
                    out.types[i] = oid::int8;
                    append_big_endian(out.storage, v);
                } else if constexpr (std::is_same_v<V, double>) {
                    out.types[i] = oid::float8;
                    append_big_endian(out.storage, std::bit_cast<std::int64_t>(v));
                } else if constexpr (std::is_same_v<V, std::string>) {
                    if (v.size() >= max_field_size)
                        throw_error(errc::invalid_argument,
                                    "text parameter $" + std::to_string(i + 1) + " is " +
                                        std::to_string(v.size()) + " bytes, over 1 GiB");
                    out.types[i] = oid::text;
                    out.values[i] = v.data();
                    out.lengths[i] = static_cast<int>(v.size());
                } else {
                    if (v.data.size() >= max_field_size)
                        throw_error(errc::invalid_argument,
                                    "bytes parameter $" + std::to_string(i + 1) + " is " +
                                        std::to_string(v.data.size()) + " bytes, over 1 GiB");
                    out.types[i] = oid::bytea;
                    // libpq never reads past length; an empty value still needs a non-null pointer.
                    out.values[i] = v.data.empty() ? "" : reinterpret_cast<const char*>(v.data.data());
                    out.lengths[i] = static_cast<int>(v.data.size());
                }
            },
            values[i].value());
        if (out.storage.size() != offset) binary.push_back({i, offset});
    }
    for (const pending_binary& b : binary) {
        out.values[b.index] = out.storage.data() + b.offset;
        const std::size_t end = (&b == &binary.back())
                                    ? out.storage.size()
                                    : binary[static_cast<std::size_t>(&b - binary.data()) + 1].offset;
        out.lengths[b.index] = static_cast<int>(end - b.offset);
    }
    return out;
}

}  // namespace detail
}  // namespace flypg::pg
