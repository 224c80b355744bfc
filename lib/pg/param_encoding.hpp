// Binary encoding of query parameters into the four arrays PQsendQueryParams takes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flypg/pg/param.hpp"

namespace flypg::pg::detail {

/// The arrays libpq needs. `values` points into `storage` (fixed-size binary encodings) or into the
/// caller's params (text and bytes, not copied), so both must outlive the send.
struct encoded_params {
    std::vector<std::uint32_t> types;
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    std::vector<char> storage;

    int count() const noexcept { return static_cast<int>(types.size()); }
};

/// Encodes `values` in PostgreSQL's binary format, big-endian, each with its type OID.
/// Text and bytes longer than 1 GiB (the server's limit) are rejected with errc::invalid_argument.
encoded_params encode_params(const params& values);

}  // namespace flypg::pg::detail
