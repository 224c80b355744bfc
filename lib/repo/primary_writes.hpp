// The database side of forwarded writes: runs statements on the primary and reports the LSN that
// a replica must replay to see them (replication/commit_lsn.hpp explains which LSN, and why).
#pragma once

#include <memory>

#include "flypg/lsn.hpp"
#include "flypg/pg/pool.hpp"
#include "flypg/rpc/write.hpp"

namespace flypg::detail {

/// A write_executor over a pool of connections to the primary database.
class primary_writes final : public rpc::write_executor {
  public:
    explicit primary_writes(std::shared_ptr<pg::pool> primary) : primary_(std::move(primary)) {}

    /// Runs the statements as one transaction in one round trip, commit LSN included.
    asio::awaitable<rpc::write_result> execute(std::vector<rpc::statement> statements) override;
    asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin() override;

    pg::pool& pool() noexcept { return *primary_; }

  private:
    std::shared_ptr<pg::pool> primary_;
};

/// Opens a transaction block on `conn` whose commit is synchronous even where the server default
/// is not (a precondition for reading a safe commit LSN after it).
asio::awaitable<void> begin_synchronous(pg::connection& conn);

/// Commits the transaction block open on `conn` and reads its commit LSN in the same round trip.
/// Throws flypg::error with the COMMIT's error (the transaction then rolled back).
asio::awaitable<lsn> commit_and_read_lsn(pg::connection& conn);

}  // namespace flypg::detail
