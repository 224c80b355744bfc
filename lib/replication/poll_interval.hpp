// The adaptive interval between two polls of the replay position.
#pragma once

#include <algorithm>
#include <chrono>

namespace flypg::replication::detail {

/// Starts at `floor`. After `patience` polls in a row that saw no progress, each further such poll
/// multiplies the interval by `factor`, up to `ceiling`. A poll that sees progress (or reset())
/// snaps it back to `floor`. Polling fast while the replica moves keeps waits short; backing off
/// while it stands still (a lagging replica, a recovery_min_apply_delay) keeps a stalled replica
/// from being asked thousands of times a second for nothing.
class poll_interval {
  public:
    poll_interval(std::chrono::nanoseconds floor,
                  std::chrono::nanoseconds ceiling,
                  double factor,
                  unsigned patience) noexcept
        : floor_(floor),
          ceiling_(std::max(floor, ceiling)),
          factor_(std::max(factor, 1.0)),
          patience_(patience),
          current_(floor) {}

    std::chrono::nanoseconds current() const noexcept { return current_; }
    std::chrono::nanoseconds floor() const noexcept { return floor_; }
    std::chrono::nanoseconds ceiling() const noexcept { return ceiling_; }

    /// Records one poll: `progressed` is whether the replay position moved since the poll before.
    void on_poll(bool progressed) noexcept {
        if (progressed) {
            reset();
            return;
        }
        if (idle_polls_ < patience_) {
            ++idle_polls_;
            return;
        }
        // Computed in double: factor may be fractional, and the product never overflows before
        // being clamped to the ceiling.
        const double next = static_cast<double>(current_.count()) * factor_;
        current_ = next >= static_cast<double>(ceiling_.count())
                       ? ceiling_
                       : std::max(floor_,
                                  std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(next)));
    }

    /// Back to the floor (new work arrived, or the replica moved).
    void reset() noexcept {
        current_ = floor_;
        idle_polls_ = 0;
    }

  private:
    std::chrono::nanoseconds floor_;
    std::chrono::nanoseconds ceiling_;
    double factor_;
    unsigned patience_;
    unsigned idle_polls_ = 0;
    std::chrono::nanoseconds current_;
};

}  // namespace flypg::replication::detail
