// Regions, read from the environment exactly as fly_rpc does, again on every call (a test or a
// supervisor may change them while the process runs):
//
//     my_region()       FLY_REGION, else MY_REGION, else "local"
//     primary_region()  PRIMARY_REGION, else "local"
//     is_primary()      my_region() == primary_region()
//
// An empty variable counts as unset.
#pragma once

#include <string>

namespace flypg::rpc {

/// The region this process runs in.
std::string my_region();
/// The region of the writable primary database.
std::string primary_region();
/// Whether this process runs in the primary region.
bool is_primary();

}  // namespace flypg::rpc
