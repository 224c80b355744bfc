// The storage behind pg::result: a libpq PGresult plus the statement's error, if any.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "flypg/error.hpp"

namespace flypg::pg::detail {

struct pgresult_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pgresult_ptr = std::unique_ptr<PGresult, pgresult_deleter>;

struct result_data {
    pgresult_ptr res;  // null for an empty result or a statement that never ran
    std::error_code error;
    diagnostics diag;
    std::int64_t affected_rows = 0;
};

/// Wraps a libpq result: tuples and commands become rows, errors become error + diagnostics.
std::shared_ptr<const result_data> make_result_data(pgresult_ptr res);

/// A result for a statement that failed before or without a server answer.
std::shared_ptr<const result_data> make_error_result(std::error_code ec, std::string library_message);

/// The error a libpq error result stands for: its SQLSTATE, or connection_lost when libpq
/// produced it locally without one (the connection died).
std::error_code error_of(const PGresult* res) noexcept;
diagnostics diagnostics_of(const PGresult* res);

}  // namespace flypg::pg::detail

namespace flypg::pg::detail {

/// A column of a result built from data that did not come from libpq (an RPC reply).
struct column_description {
    std::string name;
    std::uint32_t type_oid = 0;
};

/// Builds a result from columns and text cells (std::nullopt is NULL), as libpq would have
/// returned it, so remote results read exactly like local ones.
std::shared_ptr<const result_data> make_result_data(
    const std::vector<column_description>& columns,
    const std::vector<std::vector<std::optional<std::string>>>& rows,
    std::int64_t affected_rows);

}  // namespace flypg::pg::detail
