// Outcomes of tracker::wait_for(): a result for the two ways a wait can succeed, and the
// exception for "committed but not yet replicated".
//
//     try {
//         auto r = co_await tracker.wait_for(commit_lsn);
//         // r.status == replayed: the replica has the write; read it there.
//         // r.status == not_replicating: the "replica" is a primary (or was promoted); it has
//         //                              every write it will ever have; read it there too.
//     } catch (const flypg::replication::replication_timeout_error& e) {
//         // The write committed; the replica was too slow. Wait again, or read from the primary.
//         retry_later(e.target());
//     }
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "flypg/error.hpp"
#include "flypg/lsn.hpp"

namespace flypg::replication {

/// How a wait ended successfully.
enum class wait_status {
    replayed,         ///< The replica's replay position reached the target.
    not_replicating,  ///< The replica is not a standby (replay LSN NULL, or promoted): nothing
                      ///< will ever be replayed, and its data is as current as it gets.
};

/// What a successful wait_for() gives.
struct lsn_wait_result {
    wait_status status = wait_status::replayed;
    /// The replay position that covered the target (>= the target) when `status == replayed`;
    /// 0/0 when not replicating.
    lsn replay_position{};
};

/// Thrown (through use_awaitable; delivered as the exception_ptr otherwise) when a wait's deadline
/// passes before the replica replays its target: errc::committed_not_replicated. The write is
/// committed on the primary; only the replica is behind. The message names the target LSN, the
/// last replay position seen and the timeout; the accessors give them programmatically.
class replication_timeout_error : public flypg::error {
  public:
    replication_timeout_error(lsn target,
                              std::optional<lsn> replay_position,
                              std::chrono::nanoseconds timeout);

    /// The LSN that was waited for.
    lsn target() const noexcept { return target_; }
    /// The last replay position seen before the deadline (empty if none was known).
    std::optional<lsn> replay_position() const noexcept { return replay_position_; }
    /// The timeout that expired.
    std::chrono::nanoseconds timeout() const noexcept { return timeout_; }

  private:
    lsn target_;
    std::optional<lsn> replay_position_;
    std::chrono::nanoseconds timeout_;
};

}  // namespace flypg::replication
