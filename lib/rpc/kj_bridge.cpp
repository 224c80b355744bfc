#include "rpc/kj_bridge.hpp"

#include <exception>
#include <string>

#include "flypg/error.hpp"

namespace flypg::rpc::detail {

kj::Exception to_kj_exception(std::exception_ptr e) {
    std::string text = "unknown exception";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        text = ex.what();
    } catch (...) {
    }
    return kj::Exception(
        kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(text.data(), text.size()));
}

}  // namespace flypg::rpc::detail
