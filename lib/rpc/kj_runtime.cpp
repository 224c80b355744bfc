#include "rpc/kj_runtime.hpp"

#include <kj/debug.h>

#include <cstdio>
#include <exception>
#include <string>

#include "flypg/error.hpp"

namespace flypg::rpc::detail {
namespace {

// KJ keeps its loop in a thread-local; this mirrors it so that nodes of one thread share it.
thread_local std::weak_ptr<kj_runtime> current_runtime;
// The same runtime for handler_scope, which must be cheap (no reference counting).
thread_local kj_runtime* scope_runtime = nullptr;

}  // namespace

std::shared_ptr<kj_runtime> kj_runtime::for_current_thread(asio::io_context& io) {
    if (auto existing = current_runtime.lock()) {
        if (&existing->io() != &io) {
            throw_error(
                errc::invalid_argument,
                "this thread already hosts the RPC runtime of another io_context; KJ allows one "
                "event loop per thread, so run each io_context that hosts RPC nodes on its own thread");
        }
        return existing;
    }
    auto created = std::make_shared<kj_runtime>(io);
    current_runtime = created;
    return created;
}

kj_runtime::kj_runtime(asio::io_context& io)
    : io_(io),
      alive_(std::make_shared<kj_runtime*>(this)),
      port_(*this),
      loop_(port_),
      wait_scope_(loop_),
      tasks_(task_errors_),
      deadline_timer_(io) {
    scope_runtime = this;
}

kj_runtime::~kj_runtime() {
    if (scope_runtime == this) scope_runtime = nullptr;
    deadlines_.clear();
    for (auto& op : pending_) op->has_deadline = false;
    // Waiting Asio coroutines get "cancelled" (posted, never inline) rather than a dangling handler.
    while (!pending_.empty()) {
        std::unique_ptr<pending_op> op = std::move(pending_.front());
        pending_.pop_front();
        op->abandon();
    }
    *alive_ = nullptr;
    // Members go in reverse order: the tasks (and their promises) before the wait scope and loop.
}

pending_op& kj_runtime::add_pending(std::unique_ptr<pending_op> op) {
    pending_.push_front(std::move(op));
    pending_.front()->self = pending_.begin();
    return *pending_.front();
}

void kj_runtime::remove_pending(pending_op& op) noexcept {
    clear_deadline(op);
    pending_.erase(op.self);
}

kj_runtime* kj_runtime::current() noexcept {
    return scope_runtime;
}

void kj_runtime::want_flush(std::shared_ptr<flush_target> target) {
    if (in_loop_) {
        to_flush_.push_back(std::move(target));
    } else {
        target->flush();
    }
}

void kj_runtime::flush_all() noexcept {
    while (!to_flush_.empty()) {
        auto batch = std::move(to_flush_);
        to_flush_.clear();
        for (auto& t : batch) t->flush();
    }
}

void kj_runtime::retire(pending_op& op) noexcept {
    clear_deadline(op);
    retired_.splice(retired_.end(), pending_, op.self);
}

void kj_runtime::destroy_retired() noexcept {
    // Destroying an op drops its promise, and with it KJ objects whose destructors may run code
    // that retires or destroys more ops (a connection torn down with calls in flight): the list
    // being cleared must not be the one they touch.
    while (!retired_.empty()) {
        auto batch = std::move(retired_);
        retired_.clear();
        batch.clear();
    }
}

void kj_runtime::set_deadline(pending_op& op, clock::time_point deadline) {
    clear_deadline(op);
    op.deadline_entry = deadlines_.emplace(deadline, &op);
    op.has_deadline = true;
    // Deadlines of equal timeouts arrive in increasing order: the timer is re-armed only when a
    // new deadline is the earliest. A removed deadline leaves the timer as it is; it then fires
    // early once, finds nothing due and moves on to the earliest remaining one.
    if (deadline < deadline_timer_at_) arm_deadline_timer();
}

void kj_runtime::clear_deadline(pending_op& op) noexcept {
    if (!op.has_deadline) return;
    deadlines_.erase(op.deadline_entry);
    op.has_deadline = false;
}

void kj_runtime::arm_deadline_timer() {
    deadline_timer_at_ = deadlines_.begin()->first;
    deadline_timer_.expires_at(deadline_timer_at_);
    deadline_timer_.async_wait([token = std::weak_ptr<kj_runtime*>(alive_)](std::error_code ec) {
        if (ec) return;
        if (auto alive = token.lock(); alive && *alive != nullptr) (*alive)->on_deadline_timer();
    });
}

void kj_runtime::on_deadline_timer() {
    handler_scope scope;
    deadline_timer_at_ = clock::time_point::max();
    const auto now = clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
        pending_op* op = deadlines_.begin()->second;
        deadlines_.erase(deadlines_.begin());
        op->has_deadline = false;
        op->expire();
    }
    if (!deadlines_.empty()) arm_deadline_timer();
}

void kj_runtime::schedule_pump() {
    if (pump_scheduled_) return;
    pump_scheduled_ = true;
    asio::post(io_, [token = std::weak_ptr<kj_runtime*>(alive_)] {
        if (auto alive = token.lock(); alive && *alive != nullptr) (*alive)->pump();
    });
}

void kj_runtime::pump() noexcept {
    auto keep_alive = shared_from_this();
    pump_scheduled_ = false;
    ++pumps_;
    if (in_loop_) return;  // cannot happen (handlers never run inside the loop); be safe
    if (port_.woken.load(std::memory_order_acquire)) {
        // Another thread used kj::Executor: only WaitScope::poll() asks the port (and then the
        // executor) for cross-thread events. poll() leaves the loop believing it is still
        // runnable, so run(0) follows to announce the true state (0.9.2 hangs otherwise).
        in_loop_ = true;
        try {
            wait_scope_.poll();
            loop_.run(0);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "flypg rpc: KJ event loop failure: %s\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "flypg rpc: KJ event loop failure\n");
        }
        in_loop_ = false;
        destroy_retired();
        flush_all();
        if (loop_.isRunnable()) schedule_pump();
        return;
    }
    run_turns();
}

void kj_runtime::run_turns() noexcept {
    // A coroutine resumed inside a turn may drop the last node, and with it this runtime: it
    // stays alive until this function is done with it.
    auto keep_alive = shared_from_this();
    in_loop_ = true;
    try {
        if (!loop_.isRunnable()) {
            resync_runnable();
        } else {
            // A bounded time (and number of turns), then back to Asio so that timers and sockets
            // are not starved. A turn may be long (it may resume a coroutine that does a whole
            // call's work), so the clock is read after each one; 128 turns of a loaded node took
            // up to milliseconds. The queue of KJ events is never empty under load: only this
            // bound makes the handler end.
            const auto start = clock::now();
            for (unsigned turns = 0; turns < turn_budget_ && loop_.isRunnable(); ++turns) {
                loop_.run(1);
                if (clock::now() - start >= time_budget_) break;
            }
            announced_in_scope_ = false;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "flypg rpc: KJ event loop failure: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "flypg rpc: KJ event loop failure\n");
    }
    in_loop_ = false;
    destroy_retired();
    // Everything the turns wrote leaves now, one send per connection.
    flush_all();
    // run() only reports transitions; when events are left, nothing will call setRunnable(true).
    if (loop_.isRunnable()) schedule_pump();
}

void kj_runtime::resync_runnable() {
    // KJ announces only changes of its runnable state and remembers the last one it announced.
    // An event armed and disarmed again before any turn ran (a promise made and dropped inside
    // one handler, a pump that found the queue empty) leaves it believing it announced "runnable"
    // to a pump that will come: it would announce nothing again, and an idle node would never run
    // the loop for its next connection. run(0) runs no turn and announces the true state.
    loop_.run(0);
    announced_in_scope_ = false;
}

kj_runtime::handler_scope::handler_scope() noexcept : runtime_(scope_runtime) {
    if (runtime_ != nullptr) ++runtime_->scope_depth_;
}

kj_runtime::handler_scope::~handler_scope() {
    if (runtime_ == nullptr || scope_runtime != runtime_) return;  // the runtime went away meanwhile
    if (--runtime_->scope_depth_ != 0 || runtime_->in_loop_) return;
    if (runtime_->loop_.isRunnable() || runtime_->announced_in_scope_) runtime_->run_turns();
}

bool kj_runtime::port::wait() {
    // Never block the io_context: nothing in flypg calls Promise::wait(). A false positive is
    // allowed by the EventPort contract.
    return poll();
}

bool kj_runtime::port::poll() {
    return woken.exchange(false, std::memory_order_acq_rel);
}

void kj_runtime::port::setRunnable(bool runnable) {
    if (!runnable) return;
    // An open handler_scope runs the loop when it closes (even if the event is gone by then, to
    // tell KJ so); otherwise a pump is posted.
    if (owner_.scope_depth_ == 0 || owner_.in_loop_) {
        owner_.schedule_pump();
    } else {
        owner_.announced_in_scope_ = true;
    }
}

void kj_runtime::port::wake() const {
    // May run on any thread: only the atomic flag and asio::post (thread-safe) are touched here.
    woken.store(true, std::memory_order_release);
    asio::post(owner_.io_, [token = std::weak_ptr<kj_runtime*>(owner_.alive_)] {
        if (auto alive = token.lock(); alive && *alive != nullptr) (*alive)->schedule_pump();
    });
}

void kj_runtime::task_error_handler::taskFailed(kj::Exception&& exception) {
    std::fprintf(stderr, "flypg rpc: background task failed: %s\n", exception.getDescription().cStr());
}

}  // namespace flypg::rpc::detail
