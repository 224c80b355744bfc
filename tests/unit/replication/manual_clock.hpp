// A clock the test moves by hand, and wait traits that make Asio re-check its timers on every
// io_context::poll(), so tests advance time instead of sleeping.
#pragma once

#include <asio/basic_waitable_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace flypg::test {

struct manual_clock {
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<manual_clock>;
    static constexpr bool is_steady = true;

    static time_point now() noexcept { return time_point(duration(ticks_.load())); }
    static void advance(duration d) noexcept { ticks_ += d.count(); }
    /// Back to the start (an hour past the epoch, so "now minus a little" stays positive).
    static void reset() noexcept { ticks_ = std::chrono::nanoseconds(std::chrono::hours(1)).count(); }

  private:
    static inline std::atomic<rep> ticks_{std::chrono::nanoseconds(std::chrono::hours(1)).count()};
};

/// The reactor asks how long it may sleep before the next timer: "not at all", so every poll()
/// compares the expiries with manual_clock::now().
struct manual_wait_traits {
    static manual_clock::duration to_wait_duration(const manual_clock::duration&) { return {}; }
    static manual_clock::duration to_wait_duration(const manual_clock::time_point&) { return {}; }
};

using manual_timer = asio::basic_waitable_timer<manual_clock, manual_wait_traits>;

}  // namespace flypg::test
