#include "flypg/rpc/procedure.hpp"

#include <utility>

#include "flypg/error.hpp"
#include "flypg/rpc/value.hpp"

namespace flypg::rpc {

const char* type_name(const value& v) noexcept {
    static constexpr const char* names[] = {
        "null", "bool", "int16", "int32", "int64", "float64", "text", "bytes"};
    return names[v.index()];
}

void procedure_registry::add(std::string name, procedure fn) {
    if (name.empty()) throw_error(errc::invalid_argument, "a procedure needs a non-empty name");
    if (!fn) throw_error(errc::invalid_argument, "procedure \"" + name + "\" has no function");
    if (procedures_.contains(name)) {
        throw_error(errc::invalid_argument, "procedure \"" + name + "\" is already registered");
    }
    procedures_.emplace(std::move(name), std::move(fn));
}

const procedure* procedure_registry::find(const std::string& name) const noexcept {
    auto it = procedures_.find(name);
    return it == procedures_.end() ? nullptr : &it->second;
}

}  // namespace flypg::rpc
