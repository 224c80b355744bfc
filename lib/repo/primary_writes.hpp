// The database side of forwarded writes: runs statements on the primary and reports the LSN that
// a replica must replay to see them (replication/commit_lsn.hpp explains which LSN, and why).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "flypg/lsn.hpp"
#include "flypg/metrics.hpp"
#include "flypg/pg/pool.hpp"
#include "flypg/rpc/write.hpp"

namespace flypg::detail {

/// What the primary side serves to other nodes, counted in the metrics of the repo whose primary
/// it is (label `database`): the load other regions put on this node.
struct served_metrics {
    served_metrics(std::shared_ptr<metrics::registry> registry, const std::string& database);

    std::shared_ptr<metrics::registry> registry;  // keeps the references below valid
    metrics::counter& writes;
    metrics::counter& write_failures;
    metrics::histogram& write_seconds;
    metrics::counter& interactive_transactions;
    metrics::counter& named_transactions;
    metrics::counter& named_transaction_failures;
    metrics::counter& repeated_writes;
};

/// A write_executor over a pool of connections to the primary database.
class primary_writes final : public rpc::write_executor {
  public:
    primary_writes(std::shared_ptr<pg::pool> primary, served_metrics measures)
        : primary_(std::move(primary)), measures_(std::move(measures)) {}

    /// Runs the statements as one transaction in one round trip, commit LSN included.
    asio::awaitable<rpc::write_result> execute(std::vector<rpc::statement> statements) override;
    asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin() override;
    /// Runs the statements at most once per `request_id` (write_requests.hpp): a repeat answers
    /// with the first run's results and the current flush LSN, which covers that run's commit.
    asio::awaitable<rpc::write_result> execute_at_most_once(std::vector<rpc::statement> statements,
                                                            std::string request_id);

    /// What a request id's first, committed run returned: a named transaction's values, and the
    /// flush LSN when the repeat was seen (it covers the first run's commit).
    struct first_run {
        std::vector<rpc::value> values;
        std::uint64_t commit_lsn = 0;
    };
    /// Opens a synchronous transaction block on `conn` that holds `request_id` (named transactions
    /// run at most once with it). When a committed run already holds the id, rolls back and
    /// returns that run's stored values instead.
    asio::awaitable<std::optional<first_run>> begin_claimed(pg::connection& conn,
                                                            const std::string& request_id);
    /// Stores `stored` (encode_values / encode_results) under the id begin_claimed() took,
    /// commits, and returns the commit LSN; errc::outcome_unknown when the connection failed after
    /// COMMIT was sent.
    asio::awaitable<std::uint64_t> commit_claimed(pg::connection& conn,
                                                  const std::string& request_id,
                                                  std::vector<std::uint8_t> stored);

    /// For fault-injection tests: called after a write with a request id committed, before its
    /// answer leaves (a test makes the serving node die there). Owned by the primary_service.
    const std::function<void()>* after_commit = nullptr;

    pg::pool& pool() noexcept { return *primary_; }
    served_metrics& measures() noexcept { return measures_; }

  private:
    /// Counts `write` in the served metrics.
    asio::awaitable<rpc::write_result> counted(asio::awaitable<rpc::write_result> write);
    asio::awaitable<rpc::write_result> run(std::vector<rpc::statement> statements);
    asio::awaitable<rpc::write_result> run_once(std::vector<rpc::statement> statements,
                                                std::string request_id);
    asio::awaitable<void> prepare_request_table(pg::connection& conn);
    void expire_old_requests();

    bool request_table_ready_ = false;
    std::chrono::steady_clock::time_point last_expiry_{};

    std::shared_ptr<pg::pool> primary_;
    served_metrics measures_;
};

/// An interactive transaction on a connection of `primary`: the session behind
/// primary_writes::begin(), also used directly by a primary-region node for its own transactions.
/// `after_commit` (a test hook, may be null) runs after a commit with a request id.
asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin_primary_session(
    pg::pool& primary, const std::function<void()>* after_commit = nullptr);

/// Opens a transaction block on `conn` whose commit is synchronous even where the server default
/// is not (a precondition for reading a safe commit LSN after it).
asio::awaitable<void> begin_synchronous(pg::connection& conn);

/// Commits the transaction block open on `conn` and reads its commit LSN in the same round trip.
/// Throws flypg::error with the COMMIT's error (the transaction then rolled back).
asio::awaitable<lsn> commit_and_read_lsn(pg::connection& conn);

}  // namespace flypg::detail
