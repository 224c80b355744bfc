// A 1 ms timer on an event loop that records how late it ever fired: how long the loop stood still
// (a blocking call on the loop's thread shows up here as a long stall). It also tells apart the
// part of each stall that the loop's thread spent runnable but waiting for a CPU (the kernel's
// /proc/thread-self/schedstat run-queue time): on a busy 2-core machine the other processes of a
// test (PostgreSQL, scripts) take the CPU for milliseconds at a time, which says nothing about the
// loop; own_worst_ms() is the stall without that part: work or blocking on the loop's thread.
//
// With FLYPG_STALL_DUMP_MS=N (scripts/chaos sets it), a watchdog thread prints where the loop's
// thread is once a stall passes N ms: its system call and kernel stack from /proc, and its own
// stack (a signal makes the thread print it; `addr2line -f -C -e <binary> <offset>` names the
// frames). Off by default: only the long fault mode hunts stalls this way.
#pragma once

#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

namespace flypg::test {

/// Prints where a thread stands still (see above). One per loop_probe, when asked for.
class stall_watchdog {
  public:
    explicit stall_watchdog(std::chrono::milliseconds threshold)
        : threshold_(threshold), thread_(::pthread_self()), tid_(static_cast<pid_t>(::syscall(SYS_gettid))) {
        void* warm_up[4];
        ::backtrace(warm_up, 4);  // loads what backtrace() needs, outside a signal handler
        struct sigaction action {};
        action.sa_handler = [](int) {
            void* frames[64];
            const int n = ::backtrace(frames, 64);
            ::backtrace_symbols_fd(frames, n, STDERR_FILENO);
        };
        action.sa_flags = SA_RESTART;
        ::sigaction(SIGUSR2, &action, nullptr);
        watcher_ = std::thread([this] { watch(); });
    }
    ~stall_watchdog() {
        stop_ = true;
        watcher_.join();
    }
    stall_watchdog(const stall_watchdog&) = delete;
    stall_watchdog& operator=(const stall_watchdog&) = delete;

    /// The loop turned: a new stall, if any, starts from now.
    void alive() { last_.store(std::chrono::steady_clock::now().time_since_epoch().count()); }

  private:
    void watch() {
        bool dumped = false;
        while (!stop_) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            const auto last =
                std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_.load()));
            const auto still = std::chrono::steady_clock::now() - last;
            if (still < threshold_) {
                dumped = false;
                continue;
            }
            if (dumped) continue;
            dumped = true;
            const std::string task = "/proc/self/task/" + std::to_string(tid_) + "/";
            std::cerr << "stall watchdog: the loop's thread has stood still for "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(still).count()
                      << " ms; syscall: " << slurp(task + "syscall") << "kernel stack:\n"
                      << slurp(task + "stack") << "its stack:" << std::endl;
            ::pthread_kill(thread_, SIGUSR2);
        }
    }
    static std::string slurp(const std::string& path) {
        std::ifstream in(path);
        std::ostringstream text;
        text << in.rdbuf();
        return text.str();
    }

    std::chrono::milliseconds threshold_;
    pthread_t thread_;
    pid_t tid_;
    std::atomic<std::chrono::steady_clock::rep> last_{
        std::chrono::steady_clock::now().time_since_epoch().count()};
    std::atomic<bool> stop_{false};
    std::thread watcher_;
};

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
        std::unique_ptr<stall_watchdog> watchdog;
        if (const char* dump_ms = std::getenv("FLYPG_STALL_DUMP_MS"); dump_ms != nullptr && *dump_ms != '\0')
            watchdog = std::make_unique<stall_watchdog>(std::chrono::milliseconds(std::atoi(dump_ms)));
        auto due = clock_type::now();
        auto queued_before = run_queue_time(schedstat);
        for (;;) {
            due += std::chrono::milliseconds(1);
            timer.expires_at(due);
            co_await timer.async_wait(asio::use_awaitable);
            const auto now = clock_type::now();
            if (watchdog) watchdog->alive();
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
