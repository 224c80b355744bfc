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
      tasks_(task_errors_) {}

kj_runtime::~kj_runtime() {
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
    pending_.erase(op.self);
}

void kj_runtime::schedule_pump() {
    if (pump_scheduled_) return;
    pump_scheduled_ = true;
    asio::post(io_, [token = std::weak_ptr<kj_runtime*>(alive_)] {
        if (auto alive = token.lock(); alive && *alive != nullptr) (*alive)->pump();
    });
}

void kj_runtime::pump() noexcept {
    pump_scheduled_ = false;
    ++pumps_;
    try {
        if (port_.woken.load(std::memory_order_acquire)) {
            // Another thread used kj::Executor: only WaitScope::poll() asks the port (and then the
            // executor) for cross-thread events. poll() leaves the loop believing it is still
            // runnable, so run(0) follows to announce the true state (0.9.2 hangs otherwise).
            wait_scope_.poll();
            loop_.run(0);
        } else {
            // A bounded number of turns, then back to Asio so timers and sockets are not starved.
            loop_.run(turn_budget_);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "flypg rpc: KJ event loop failure: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "flypg rpc: KJ event loop failure\n");
    }
    // run() only reports transitions; when events are left, nothing will call setRunnable(true).
    if (loop_.isRunnable()) schedule_pump();
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
    if (runnable) owner_.schedule_pump();
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
