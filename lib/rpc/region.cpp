#include "flypg/rpc/region.hpp"

#include <cstdlib>

namespace flypg::rpc {
namespace {

const char* non_empty_env(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
}

}  // namespace

std::string my_region() {
    if (const char* v = non_empty_env("FLY_REGION")) return v;
    if (const char* v = non_empty_env("MY_REGION")) return v;
    return "local";
}

std::string primary_region() {
    if (const char* v = non_empty_env("PRIMARY_REGION")) return v;
    return "local";
}

bool is_primary() {
    return my_region() == primary_region();
}

}  // namespace flypg::rpc
