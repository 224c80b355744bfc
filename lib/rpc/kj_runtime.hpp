// KJ's event loop as a guest of an asio::io_context, on the io_context's own thread.
//
// Cap'n Proto needs a kj::EventLoop. Rather than giving it a thread of its own (which costs a
// thread hop per message), the loop is driven from the application's io_context: a custom
// kj::EventPort posts a "pump" handler whenever KJ has runnable events, and the pump runs KJ turns
// for a bounded time (and at most a bounded number of turns), then yields back to Asio: the pump
// is posted again behind the handlers (timers, other sockets) that became ready meanwhile. No thread is
// started and io_context::run() is never called here.
//
// Completion handlers of flypg's own Asio operations (socket reads and writes, coroutines run for
// capnp servers) open a `handler_scope`: KJ events they make runnable run when the handler ends,
// in the same Asio handler, instead of one posted pump later. Each post costs a trip through the
// io_context's queue (and an epoll_wait), which matters at tens of microseconds per call.
//
// KJ allows one EventLoop per thread and keeps it in a thread-local, so every node on a thread
// shares one runtime (for_current_thread()). Every object that touches KJ or capnp must be created,
// used and destroyed on that thread; a strand is not enough.
#pragma once

#include <kj/async.h>

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <vector>

namespace flypg::rpc::detail {

/// Base of the pending Asio-awaits-KJ operations (kj_bridge.hpp), so that a runtime being destroyed
/// can complete them (as cancelled) instead of leaving their handlers dangling, and so that one
/// runtime-wide timer serves all their deadlines.
class pending_op {
  public:
    virtual ~pending_op() = default;
    /// The runtime is going away: complete the handler (posted) as cancelled.
    virtual void abandon() noexcept = 0;
    /// The deadline passed: complete the handler (posted) as timed out.
    virtual void expire() noexcept = 0;

    std::list<std::unique_ptr<pending_op>>::iterator self;
    std::multimap<std::chrono::steady_clock::time_point, pending_op*>::iterator deadline_entry;
    bool has_deadline = false;
};

/// Something with output to send once the current KJ turns are over (asio_stream: all messages
/// of a turn leave in one send).
class flush_target {
  public:
    virtual void flush() noexcept = 0;

  protected:
    ~flush_target() = default;
};

// KJ's interfaces (EventPort, TaskSet::ErrorHandler, ...) have no virtual destructors: they are
// never deleted through the base.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class kj_runtime final : public std::enable_shared_from_this<kj_runtime> {
  public:
    using clock = std::chrono::steady_clock;

    /// The runtime hosted by `io` on the calling thread, created on first use and shared by every
    /// node of the thread. Throws flypg::error (invalid_argument) when this thread already hosts a
    /// runtime for another io_context: KJ allows one event loop per thread.
    static std::shared_ptr<kj_runtime> for_current_thread(asio::io_context& io);

    /// Prefer for_current_thread(). Must be called on the thread that runs `io`, and owned by a
    /// std::shared_ptr.
    explicit kj_runtime(asio::io_context& io);
    ~kj_runtime();
    kj_runtime(const kj_runtime&) = delete;
    kj_runtime& operator=(const kj_runtime&) = delete;

    asio::io_context& io() noexcept { return io_; }
    asio::io_context::executor_type executor() noexcept { return io_.get_executor(); }
    kj::WaitScope& wait_scope() noexcept { return wait_scope_; }

    /// Detached KJ tasks owned by the runtime (failures are logged, never thrown).
    kj::TaskSet& tasks() noexcept { return tasks_; }

    /// Registry of pending Asio-awaits-KJ operations; see pending_op.
    pending_op& add_pending(std::unique_ptr<pending_op> op);
    void remove_pending(pending_op& op) noexcept;
    /// Moves a finished op out of the pending list; it is destroyed once the current KJ turns
    /// are over (its promise may be the one whose continuation is running).
    void retire(pending_op& op) noexcept;
    void set_deadline(pending_op& op, clock::time_point deadline);
    void clear_deadline(pending_op& op) noexcept;

    /// Maximum KJ turns per Asio handler before yielding to other Asio handlers (timers, sockets).
    void set_turn_budget(unsigned turns) noexcept { turn_budget_ = turns == 0 ? 1 : turns; }
    /// Maximum time spent in KJ turns per Asio handler before yielding (at least one turn runs).
    /// Turns are not of equal cost (one may resume a coroutine that sends the next call), so the
    /// turn budget alone does not bound how long timers and sockets wait.
    void set_time_budget(std::chrono::microseconds budget) noexcept { time_budget_ = budget; }

    /// Counters for tests and benchmarks.
    std::uint64_t pumps() const noexcept { return pumps_; }

    /// The runtime of the calling thread, or nullptr.
    static kj_runtime* current() noexcept;

    /// Calls target->flush() when the KJ turns now running are over; at once when none runs.
    void want_flush(std::shared_ptr<flush_target> target);

    /// Opened by a completion handler of one of flypg's Asio operations (on the loop's thread):
    /// KJ work made runnable inside the scope runs when the outermost scope closes.
    class handler_scope {
      public:
        handler_scope() noexcept;
        ~handler_scope();
        handler_scope(const handler_scope&) = delete;
        handler_scope& operator=(const handler_scope&) = delete;

      private:
        kj_runtime* runtime_;
    };

  private:
    class port final : public kj::EventPort {
      public:
        explicit port(kj_runtime& owner) : owner_(owner) {}
        bool wait() override;
        bool poll() override;
        void setRunnable(bool runnable) override;
        void wake() const override;

        mutable std::atomic<bool> woken{false};

      private:
        kj_runtime& owner_;
    };

    class task_error_handler final : public kj::TaskSet::ErrorHandler {
      public:
        void taskFailed(kj::Exception&& exception) override;
    };

    void schedule_pump();
    void pump() noexcept;
    void run_turns() noexcept;
    void flush_all() noexcept;
    void destroy_retired() noexcept;
    void resync_runnable();
    void arm_deadline_timer();
    void on_deadline_timer();

    asio::io_context& io_;
    // Handlers posted to the io_context may outlive the runtime: they hold this token and check it.
    std::shared_ptr<kj_runtime*> alive_;
    port port_;
    kj::EventLoop loop_;
    kj::WaitScope wait_scope_;
    task_error_handler task_errors_;
    kj::TaskSet tasks_;
    std::list<std::unique_ptr<pending_op>> pending_;
    std::list<std::unique_ptr<pending_op>> retired_;
    std::vector<std::shared_ptr<flush_target>> to_flush_;
    // All deadlines of pending operations, served by one timer (a timer per call would cost an
    // Asio operation, a posted cancellation and often a timerfd update each).
    std::multimap<clock::time_point, pending_op*> deadlines_;
    asio::steady_timer deadline_timer_;
    clock::time_point deadline_timer_at_ = clock::time_point::max();
    bool pump_scheduled_ = false;
    // KJ announced "runnable" while a handler_scope was open: the scope must run the loop when it
    // closes, even if the event is gone by then (see resync_runnable()).
    bool announced_in_scope_ = false;
    bool in_loop_ = false;
    unsigned scope_depth_ = 0;
    unsigned turn_budget_ = 128;
    // 100 us: at 64 calls in flight, 50 us cost 10-20% of the calls/s (more yields, smaller sends)
    // for little gain in timer lateness; 200 us gave back the p99.
    std::chrono::microseconds time_budget_{100};
    std::uint64_t pumps_ = 0;
};
#pragma GCC diagnostic pop

}  // namespace flypg::rpc::detail
