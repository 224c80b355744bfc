// Counters of a replication tracker, read as one consistent snapshot with tracker::stats().
//
// Meant for exporters: every counter only grows (except `waiters` and `replay_position`), and the
// latency histogram has fixed power-of-two bounds, so a Prometheus exporter can publish it as
// cumulative `le` buckets:
//
//     auto s = tracker.stats();
//     std::uint64_t cumulative = 0;
//     for (std::size_t i = 0; i < s.wait_latency.buckets.size(); ++i) {
//         cumulative += s.wait_latency.buckets[i];
//         emit("flypg_wait_seconds_bucket", s.wait_latency.upper_bound_seconds(i), cumulative);
//     }
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

#include "flypg/lsn.hpp"

namespace flypg::replication {

/// Histogram of wait durations with power-of-two microsecond bounds.
struct latency_histogram {
    /// Bucket i < 27 counts durations d with 2^(i-1) us < d <= 2^i us (bucket 0: d <= 1 us);
    /// the last bucket counts everything longer than 2^26 us (about 67 s).
    static constexpr std::size_t bucket_count = 28;
    std::array<std::uint64_t, bucket_count> buckets{};
    std::uint64_t count = 0;          ///< Number of recorded durations.
    std::chrono::nanoseconds sum{0};  ///< Sum of recorded durations.

    /// Inclusive upper bound of bucket `i` in seconds (infinity for the last bucket).
    static constexpr double upper_bound_seconds(std::size_t i) noexcept {
        if (i + 1 >= bucket_count) return std::numeric_limits<double>::infinity();
        return static_cast<double>(std::uint64_t{1} << i) * 1e-6;
    }

    /// Index of the bucket that counts `d`.
    static constexpr std::size_t bucket_of(std::chrono::nanoseconds d) noexcept {
        // ceil(d / 1 us), then the smallest i with 2^i >= that.
        const auto micros = d.count() <= 0 ? 0 : (d.count() + 999) / 1000;
        std::size_t i = 0;
        while (i + 1 < bucket_count && (std::int64_t{1} << i) < micros) ++i;
        return i;
    }

    void record(std::chrono::nanoseconds d) noexcept {
        ++buckets[bucket_of(d)];
        ++count;
        sum += d;
    }
};

/// A snapshot of a tracker's counters.
struct tracker_stats {
    std::size_t waiters = 0;       ///< Waits pending now.
    std::size_t peak_waiters = 0;  ///< Highest number of waits pending at once.

    std::uint64_t waits = 0;     ///< wait_for() calls.
    std::uint64_t cached = 0;    ///< Waits answered from the cached replay position, without a query.
    std::uint64_t replayed = 0;  ///< Waits that ended with wait_status::replayed (cached ones included).
    std::uint64_t not_replicating = 0;  ///< Waits that ended with wait_status::not_replicating.
    std::uint64_t timeouts = 0;         ///< Waits that ended in committed_not_replicated.
    std::uint64_t cancellations = 0;    ///< Waits cancelled through their cancellation slot.
    std::uint64_t aborted = 0;          ///< Waits failed because the tracker stopped or was destroyed.

    std::uint64_t polls = 0;                  ///< Queries sent (reads and long-poll calls).
    std::uint64_t not_replicating_polls = 0;  ///< Polls whose answer was "not replicating".
    std::uint64_t source_failures = 0;        ///< Failed or timed-out queries and reconnects.
    std::uint64_t reconnects = 0;             ///< Successful (re)connections, the first one included.
    bool connected = false;                   ///< Whether the replay source is connected now.

    /// Last replay position seen; empty before the first poll, after a connection failure and
    /// while the replica is not replicating.
    std::optional<lsn> replay_position;

    /// Durations of waits that needed at least one poll and ended replayed (cached waits are
    /// counted in `cached` instead, timeouts in `timeouts`).
    latency_histogram wait_latency;
    /// Round trips of the queries (reads and long-poll calls) that got an answer: how fast the
    /// replica answers, which bounds how soon a replayed write is noticed.
    latency_histogram poll_latency;
};

}  // namespace flypg::replication
