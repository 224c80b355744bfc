// Named procedures: the C++ counterpart of fly_rpc's module/function/args.
//
// Every node registers the same procedures by name at start-up; a caller names one and passes typed
// arguments, and the node that serves the call runs it and returns typed results:
//
//     flypg::rpc::procedure_registry procedures;
//     procedures.add("accounts.credit", [&](std::vector<flypg::rpc::value> args)
//                        -> asio::awaitable<std::vector<flypg::rpc::value>> {
//         auto amount = std::get<std::int64_t>(args.at(1));
//         co_return std::vector<flypg::rpc::value>{co_await credit(std::get<std::string>(args.at(0)),
//         amount)};
//     });
//
// A procedure reports failure by throwing. A flypg::error with a sqlstate code reaches the caller
// as that SQL error; anything else reaches it as errc::procedure_error with the exception's text.
#pragma once

#include <asio/awaitable.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "flypg/rpc/value.hpp"

namespace flypg::rpc {

/// A named procedure. Runs on the serving node's io_context thread.
using procedure = std::function<asio::awaitable<std::vector<value>>(std::vector<value> args)>;

/// Procedures by name, fixed before the node starts.
class procedure_registry {
  public:
    /// Registers `fn` as `name`. Throws flypg::error (invalid_argument) for an empty name, a name
    /// already registered or an empty function.
    void add(std::string name, procedure fn);

    /// The procedure registered as `name`, or nullptr.
    const procedure* find(const std::string& name) const noexcept;

    bool empty() const noexcept { return procedures_.empty(); }
    std::size_t size() const noexcept { return procedures_.size(); }

  private:
    std::map<std::string, procedure, std::less<>> procedures_;
};

}  // namespace flypg::rpc
