// Conversions between the RPC layer's wire types and the PostgreSQL client's types, and the checks
// that statements pass before either side runs them.
#pragma once

#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/pg/connection.hpp"
#include "flypg/pg/param.hpp"
#include "flypg/pg/result.hpp"
#include "flypg/rpc/value.hpp"
#include "flypg/rpc/write.hpp"

namespace flypg::detail {

pg::param to_pg_param(const rpc::value& v);
pg::params to_pg_params(const std::vector<rpc::value>& values);
rpc::value to_rpc_value(const pg::param& p);
std::vector<rpc::value> to_rpc_values(const pg::params& params);

rpc::statement_result to_rpc_result(const pg::result& r);
pg::result to_pg_result(const rpc::statement_result& r);

/// How errors name statement `index` of a batch of `count`: "the SQL text" when it is alone,
/// "the SQL text of statement 2 of 3" otherwise.
std::string statement_label(std::size_t index, std::size_t count);

/// Statements with their parameters, from one side's types to the other's.
std::vector<rpc::statement> to_rpc_statements(std::vector<pg::statement> statements);
std::vector<pg::statement> to_pg_statements(std::vector<rpc::statement> statements);

/// Refuses (errc::invalid_argument) a write that holds no statement, which would commit an empty
/// transaction, and SQL text that pg::check_sql_text refuses. For pg::statement and rpc::statement.
template <class Statement>
void check_statements(const std::vector<Statement>& statements) {
    if (statements.empty())
        throw_error(errc::invalid_argument, "the write holds no statement; nothing was run");
    for (std::size_t i = 0; i < statements.size(); ++i)
        pg::check_sql_text(statements[i].sql, statement_label(i, statements.size()));
}

}  // namespace flypg::detail
