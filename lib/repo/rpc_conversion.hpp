// Conversions between the RPC layer's wire types and the PostgreSQL client's types.
#pragma once

#include <vector>

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

}  // namespace flypg::detail
