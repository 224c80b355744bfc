// The state behind flypg::primary_service: the primary pools of this process's repos, by database
// name, and the named transactions.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "flypg/repo.hpp"
#include "repo/primary_writes.hpp"

namespace flypg::detail {

/// The procedure through which other regions run named transactions:
/// args = [database, transaction name, the transaction's own args...];
/// results = [commit LSN as int64, the transaction's own results...].
inline constexpr const char* transaction_procedure = "flypg.transaction";
/// The same at most once: args = [database, transaction name, request id, its own args...]; a
/// repeated id answers with the first committed run's results (write_requests.hpp).
inline constexpr const char* transaction_once_procedure = "flypg.transaction_once";

class primary_service_impl {
  public:
    /// Serves `primary` under `name`, counting what it serves in `metrics`.
    void add_database(const std::string& name,
                      std::shared_ptr<pg::pool> primary,
                      std::shared_ptr<metrics::registry> metrics);
    void remove_database(const std::string& name) noexcept;
    /// The primary writes of `database`; throws errc::invalid_argument naming an unknown database.
    primary_writes& database(const std::string& name);
    /// The only database, for requests that carry no name. Throws when there are none or several.
    primary_writes& only_database();

    void add_transaction(std::string name, primary_transaction_fn fn);
    /// Runs a named transaction on `database`'s primary; returns its results and commit LSN. With
    /// a `request_id`, at most once: a repeat returns the first run's results.
    asio::awaitable<std::pair<std::vector<rpc::value>, std::uint64_t>> run_transaction(
        const std::string& database,
        const std::string& name,
        std::vector<rpc::value> args,
        std::string request_id = {});

    /// Given to every database's primary_writes (see primary_service::set_after_commit_hook).
    std::function<void()> after_commit;

  private:
    std::map<std::string, std::unique_ptr<primary_writes>, std::less<>> databases_;
    std::map<std::string, primary_transaction_fn, std::less<>> transactions_;
};

}  // namespace flypg::detail
