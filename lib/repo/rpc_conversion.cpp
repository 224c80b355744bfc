#include "repo/rpc_conversion.hpp"

#include <cstring>

#include "pg/result_data.hpp"

namespace flypg::detail {

pg::param to_pg_param(const rpc::value& v) {
    return std::visit(
        [](const auto& x) -> pg::param {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, rpc::null_value>) {
                return nullptr;
            } else if constexpr (std::is_same_v<T, rpc::bytes>) {
                pg::bytes b;
                b.data.resize(x.data.size());
                if (!x.data.empty()) std::memcpy(b.data.data(), x.data.data(), x.data.size());
                return b;
            } else {
                return x;
            }
        },
        v);
}

pg::params to_pg_params(const std::vector<rpc::value>& values) {
    pg::params out;
    out.reserve(values.size());
    for (const rpc::value& v : values) out.push_back(to_pg_param(v));
    return out;
}

rpc::value to_rpc_value(const pg::param& p) {
    return std::visit(
        [](const auto& x) -> rpc::value {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::nullptr_t>) {
                return rpc::null_value{};
            } else if constexpr (std::is_same_v<T, pg::bytes>) {
                rpc::bytes b;
                b.data.resize(x.data.size());
                if (!x.data.empty()) std::memcpy(b.data.data(), x.data.data(), x.data.size());
                return b;
            } else {
                return x;
            }
        },
        p.value());
}

std::vector<rpc::value> to_rpc_values(const pg::params& params) {
    std::vector<rpc::value> out;
    out.reserve(params.size());
    for (const pg::param& p : params) out.push_back(to_rpc_value(p));
    return out;
}

rpc::statement_result to_rpc_result(const pg::result& r) {
    rpc::statement_result out;
    out.columns.reserve(r.columns());
    for (std::size_t c = 0; c < r.columns(); ++c)
        out.columns.push_back({std::string(r.column_name(c)), r.column_type(c)});
    out.rows.reserve(r.size());
    for (pg::row row : r) {
        std::vector<std::optional<std::string>> cells;
        cells.reserve(r.columns());
        for (std::size_t c = 0; c < r.columns(); ++c) {
            if (row.is_null(c))
                cells.emplace_back(std::nullopt);
            else
                cells.emplace_back(std::string(row.text(c)));
        }
        out.rows.push_back(std::move(cells));
    }
    out.affected_rows = static_cast<std::uint64_t>(r.affected_rows());
    return out;
}

pg::result to_pg_result(const rpc::statement_result& r) {
    std::vector<pg::detail::column_description> columns;
    columns.reserve(r.columns.size());
    for (const rpc::column& c : r.columns) columns.push_back({c.name, c.type_oid});
    return pg::result(
        pg::detail::make_result_data(columns, r.rows, static_cast<std::int64_t>(r.affected_rows)));
}

std::string statement_label(std::size_t index, std::size_t count) {
    if (count == 1) return "the SQL text";
    return "the SQL text of statement " + std::to_string(index + 1) + " of " + std::to_string(count);
}

std::vector<rpc::statement> to_rpc_statements(std::vector<pg::statement> statements) {
    std::vector<rpc::statement> out;
    out.reserve(statements.size());
    for (pg::statement& s : statements) out.emplace_back(std::move(s.sql), to_rpc_values(s.params));
    return out;
}

std::vector<pg::statement> to_pg_statements(std::vector<rpc::statement> statements) {
    std::vector<pg::statement> out;
    out.reserve(statements.size());
    for (rpc::statement& s : statements) out.push_back({std::move(s.sql), to_pg_params(s.params)});
    return out;
}

}  // namespace flypg::detail
