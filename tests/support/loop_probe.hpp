// A 1 ms timer on an event loop that records how late it ever fired: how long the loop stood still
// (a blocking call on the loop's thread shows up here as a long stall). It also tells apart the
// part of each stall that the loop's thread spent runnable but waiting for a CPU (the kernel's
// /proc/thread-self/schedstat run-queue time): on a busy 2-core machine the other processes of a
// test (PostgreSQL, scripts) take the CPU for milliseconds at a time, which says nothing about the
// loop; own_worst_ms() is the stall without that part: work or blocking on the loop's thread.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <asio.hpp>

#include <chrono>
#include <cstdio>

namespace flypg::test {

class loop_probe {
  public:
    using clock_type = std::chrono::steady_clock;

    explicit loop_probe(asio::io_context& io) {
        asio::co_spawn(io, tick(), asio::bind_cancellation_slot(stop_.slot(), [this](std::exception_ptr) {
                           done_ = true;
                       }));
    }
    loop_probe(const loop_probe&) = delete;
    loop_probe& operator=(const loop_probe&) = delete;

    /// Stops the timer; runs `io` until it has.
    void finish(asio::io_context& io) {
        stop_.emit(asio::cancellation_type::terminal);
        while (!done_) {
            if (io.stopped()) io.restart();
            io.run_one_for(std::chrono::milliseconds(50));
        }
    }
    /// The longest lateness so far, in milliseconds.
    double worst_ms() const { return ms(worst_); }
    /// The longest lateness without the time the thread waited for a CPU, in milliseconds.
    double own_worst_ms() const { return ms(own_worst_); }
    /// Forgets the lateness so far (a new phase starts).
    void reset() { worst_ = own_worst_ = clock_type::duration::zero(); }

  private:
    static double ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

    // Time this thread has waited on a run queue (runnable, not running); 0 where unknown.
    static std::chrono::nanoseconds run_queue_time(int fd) {
        char text[128];
        const ssize_t n = fd < 0 ? -1 : ::pread(fd, text, sizeof text - 1, 0);
        if (n <= 0) return {};
        text[n] = '\0';
        unsigned long long on_cpu = 0;
        unsigned long long waiting = 0;
        if (std::sscanf(text, "%llu %llu", &on_cpu, &waiting) != 2) return {};
        return std::chrono::nanoseconds(waiting);
    }

    asio::awaitable<void> tick() {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        // Opened here, on the loop's thread, so that thread-self is that thread.
        const int schedstat = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
        struct closer {
            int fd;
            ~closer() {
                if (fd >= 0) ::close(fd);
            }
        } close_it{schedstat};
        auto due = clock_type::now();
        auto queued_before = run_queue_time(schedstat);
        for (;;) {
            due += std::chrono::milliseconds(1);
            timer.expires_at(due);
            co_await timer.async_wait(asio::use_awaitable);
            const auto now = clock_type::now();
            const auto queued = run_queue_time(schedstat);
            const auto late = now - due;
            const auto waited_for_cpu =
                std::chrono::duration_cast<clock_type::duration>(queued - queued_before);
            queued_before = queued;
            if (late > worst_) worst_ = late;
            if (late - waited_for_cpu > own_worst_) own_worst_ = late - waited_for_cpu;
            if (now > due + std::chrono::milliseconds(1)) due = now;  // no catch-up bursts
        }
    }

    asio::cancellation_signal stop_;
    clock_type::duration worst_{0};
    clock_type::duration own_worst_{0};
    bool done_ = false;
};

}  // namespace flypg::test
