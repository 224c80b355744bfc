// Bridges between Asio coroutines and KJ promises, both running on one thread (kj_runtime.hpp).
//
//   co_await await_kj(rt, promise)  an Asio coroutine waits for a KJ promise. Cancelling the
//                                   coroutine (its cancellation slot) drops the promise, which in
//                                   Cap'n Proto cancels the remote call.
//   to_kj(rt, coroutine)            a KJ promise for an Asio coroutine (capnp server methods run
//                                   coroutines this way). Dropping the promise emits terminal
//                                   cancellation into the coroutine.
//
// Neither direction throws across the boundary: await_kj returns an outcome holding either the
// value, the kj::Exception, or "cancelled"; to_kj turns a C++ exception into a kj::Exception.
#pragma once

#include <kj/async.h>
#include <kj/debug.h>

#include <asio.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "rpc/kj_runtime.hpp"

namespace flypg::rpc::detail {

struct kj_void {};

/// What an awaited KJ promise produced.
template <class T>
struct kj_outcome {
    std::optional<T> value;
    std::optional<kj::Exception> error;  ///< The promise was rejected.
    bool cancelled = false;              ///< The awaiting coroutine was cancelled (or the runtime died).
    bool timed_out = false;              ///< The deadline passed first (the promise was dropped).

    bool ok() const noexcept { return value.has_value(); }
};

template <class T>
using kj_value_t = std::conditional_t<std::is_void_v<T>, kj_void, T>;

template <class T, class Handler>
class await_op final : public pending_op {
  public:
    using outcome = kj_outcome<T>;

    await_op(kj_runtime& rt, Handler handler)
        : runtime_(&rt),
          weak_runtime_(rt.weak_from_this()),
          io_executor_(rt.executor()),
          handler_(std::move(handler)) {}

    // Only an op whose handler was never completed still has a slot here (the runtime abandoned it,
    // and the handler, with the signal it belongs to, waits in a posted completion). Every
    // completion path disconnects the slot first: the op may be destroyed after the coroutine that
    // owned the signal (a retired op dies once the KJ turns are over, and the coroutine it resumed
    // may be gone by then).
    ~await_op() noexcept override { disconnect_slot(); }

    template <class Promise>
    void start(Promise promise, std::optional<std::chrono::steady_clock::time_point> deadline) {
        slot_ = asio::get_associated_cancellation_slot(*handler_);
        if (slot_.is_connected()) {
            // The slot handler only completes the op: the promise itself is dropped by the posted
            // completion, so KJ objects are never destroyed from inside an arbitrary emit() call.
            slot_.assign([this](asio::cancellation_type type) {
                if (type != asio::cancellation_type::none) {
                    outcome result;
                    result.cancelled = true;
                    finish(std::move(result));
                }
            });
        }
        if (deadline) runtime_->set_deadline(*this, *deadline);
        promise_ = promise
                       .then(
                           [this](auto&&... value) {
                               outcome result;
                               // On T, not on the pack: clang checks a branch that does not
                               // depend on the lambda's own parameters when start() is
                               // instantiated, and emplace() with no argument is ill-formed
                               // for a T that is not kj_void.
                               if constexpr (std::is_same_v<T, kj_void>) {
                                   result.value.emplace();
                               } else {
                                   result.value.emplace(std::move(value)...);
                               }
                               finish_from_kj(std::move(result));
                           },
                           [this](kj::Exception&& e) {
                               outcome result;
                               result.error.emplace(std::move(e));
                               finish_from_kj(std::move(result));
                           })
                       .eagerlyEvaluate(nullptr);
    }

    void abandon() noexcept override {
        // The dying runtime destroys this op (and the promise) right after this call.
        outcome result;
        result.cancelled = true;
        finish(std::move(result));
    }

    void expire() noexcept override {
        outcome result;
        result.cancelled = true;
        result.timed_out = true;
        finish(std::move(result));
    }

  private:
    // The promise resolved: we are inside a KJ turn (an Asio handler runs the loop), which is like
    // an I/O completion, so the coroutine resumes right here (dispatch) rather than one posted hop
    // later. The op cannot destroy its own promise from inside the promise's continuation: it is
    // retired, and the runtime destroys it when the KJ turns are over.
    void finish_from_kj(outcome result) {
        if (done_) return;
        done_ = true;
        runtime_->clear_deadline(*this);
        disconnect_slot();
        Handler handler = std::move(*handler_);
        handler_.reset();
        runtime_->retire(*this);
        auto ex = asio::get_associated_executor(handler, io_executor_);
        asio::dispatch(
            ex, [h = std::move(handler), r = std::move(result)]() mutable { std::move(h)(std::move(r)); });
    }

    void finish(outcome result) {
        if (done_) return;
        done_ = true;
        runtime_->clear_deadline(*this);
        Handler handler = std::move(*handler_);
        handler_.reset();
        auto ex = asio::get_associated_executor(handler, io_executor_);
        // Completion is posted, never inline: the promise cannot be destroyed from inside its own
        // continuation, and Asio handlers must not run inside the initiating call. The handler is
        // moved out first, so that a runtime destroyed meanwhile cannot lose it.
        asio::post(ex,
                   [this, runtime = weak_runtime_, h = std::move(handler), r = std::move(result)]() mutable {
                       // KJ work the resumed coroutine starts (requests it sends) runs when this
                       // handler ends, not one posted pump later.
                       kj_runtime::handler_scope scope;
                       if (auto rt = runtime.lock()) {
                           // Still registered: clear the slot before completing, then destroy this op
                           // (and its promise) outside any KJ callback.
                           disconnect_slot();
                           rt->remove_pending(*this);
                       }
                       std::move(h)(std::move(r));
                   });
    }

    // Clears the handler installed in the slot and forgets the slot, whose signal may be freed
    // before this op is.
    void disconnect_slot() noexcept {
        if (slot_.is_connected()) slot_.clear();
        slot_ = asio::cancellation_slot();
    }

    kj_runtime* runtime_;  // outlives this op, which it owns
    std::weak_ptr<kj_runtime> weak_runtime_;
    asio::io_context::executor_type io_executor_;
    std::optional<Handler> handler_;
    asio::cancellation_slot slot_;
    kj::Promise<void> promise_ = nullptr;
    bool done_ = false;
};

/// Waits for `promise` from an Asio coroutine running on the runtime's io_context thread, at most
/// until `deadline` (then the outcome is `timed_out`).
/// Cancellation: all types; the promise is dropped (for an RPC, a Finish message cancels the call
/// on the peer, which may already have run it).
template <class T>
asio::awaitable<kj_outcome<kj_value_t<T>>> await_kj(
    kj_runtime& rt,
    kj::Promise<T> promise,
    std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) {
    using value_type = kj_value_t<T>;
    using outcome = kj_outcome<value_type>;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(outcome)>(
        [&rt, deadline](auto handler, kj::Promise<T> p) {
            using handler_type = decltype(handler);
            auto op = std::make_unique<await_op<value_type, handler_type>>(rt, std::move(handler));
            auto& registered =
                static_cast<await_op<value_type, handler_type>&>(rt.add_pending(std::move(op)));
            registered.start(std::move(p), deadline);
        },
        asio::use_awaitable,
        std::move(promise));
}

/// Converts the exception of a finished coroutine into a kj::Exception.
kj::Exception to_kj_exception(std::exception_ptr e);

/// Owns to_kj()'s fulfiller. It does not keep the runtime alive (a coroutine that ignores
/// cancellation must not pin the event loop). Once the promise is gone (as it is when the runtime
/// has been destroyed), destroying the fulfiller only frees it. A promise still waiting without a
/// runtime would be rejected onto a dead loop: that fulfiller alone is deliberately leaked.
template <class T>
class fulfiller_holder {
  public:
    fulfiller_holder(kj_runtime& rt, kj::Own<kj::PromiseFulfiller<T>> fulfiller)
        : runtime_(rt.weak_from_this()),
          fulfiller_(new kj::Own<kj::PromiseFulfiller<T>>(std::move(fulfiller))) {}
    fulfiller_holder(fulfiller_holder&& other) noexcept
        : runtime_(std::move(other.runtime_)), fulfiller_(std::exchange(other.fulfiller_, nullptr)) {}
    fulfiller_holder(const fulfiller_holder&) = delete;
    fulfiller_holder& operator=(const fulfiller_holder&) = delete;
    fulfiller_holder& operator=(fulfiller_holder&&) = delete;
    ~fulfiller_holder() {
        if (fulfiller_ == nullptr) return;
        if (runtime_.expired() && (*fulfiller_)->isWaiting()) return;
        delete fulfiller_;
    }

    /// The fulfiller, when the runtime lives and the promise is still wanted.
    kj::PromiseFulfiller<T>* get() const noexcept {
        if (fulfiller_ == nullptr || runtime_.expired() || !(*fulfiller_)->isWaiting()) return nullptr;
        return fulfiller_->get();
    }

  private:
    std::weak_ptr<kj_runtime> runtime_;
    kj::Own<kj::PromiseFulfiller<T>>* fulfiller_;
};

/// What to_kj()'s promise and its coroutine share: the coroutine's cancellation signal, and whether
/// the coroutine is done (then dropping the promise has nothing left to cancel).
struct to_kj_control {
    asio::cancellation_signal signal;
    bool done = false;
};

// Runs `task` and fulfils the KJ side from inside the coroutine, as soon as it is done: the KJ
// continuation (say, sending an RPC Return) runs in the same Asio handler, not after co_spawn's
// completion is posted. `control` outlives the coroutine (co_spawn's completion handler owns it).
template <class T>
asio::awaitable<void> run_for_kj(fulfiller_holder<T> holder,
                                 asio::awaitable<T> task,
                                 to_kj_control* control) {
    std::exception_ptr failure;
    std::optional<kj_value_t<T>> value;
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(task);
            value.emplace();
        } else {
            value.emplace(co_await std::move(task));
        }
    } catch (...) {
        failure = std::current_exception();
    }
    // Before the fulfiller runs KJ continuations that may drop the promise: a finished coroutine
    // needs no cancellation.
    control->done = true;
    kj_runtime::handler_scope scope;
    if (auto* f = holder.get()) {
        if (failure) {
            f->reject(to_kj_exception(failure));
        } else if constexpr (std::is_void_v<T>) {
            f->fulfill();
        } else {
            f->fulfill(std::move(*value));
        }
    }
}

/// A KJ promise for `task`, spawned on the runtime's io_context. Dropping the promise before the
/// coroutine is done emits terminal cancellation into it (posted, so never from inside KJ's loop);
/// once it is done, dropping the promise costs nothing (no handler is posted per finished call).
template <class T>
kj::Promise<T> to_kj(kj_runtime& rt, asio::awaitable<T> task) {
    auto paf = kj::newPromiseAndFulfiller<T>();
    auto control = std::make_shared<to_kj_control>();
    auto slot = control->signal.slot();
    asio::co_spawn(
        rt.io(),
        run_for_kj<T>(fulfiller_holder<T>(rt, std::move(paf.fulfiller)), std::move(task), control.get()),
        // Keeps the signal alive as long as the coroutine may use its slot.
        asio::bind_cancellation_slot(slot, [control](std::exception_ptr) {}));
    return paf.promise.attach(kj::defer([control = std::move(control), ex = rt.executor()]() mutable {
        if (control->done) return;
        asio::post(ex, [control = std::move(control)] {
            if (!control->done) control->signal.emit(asio::cancellation_type::terminal);
        });
    }));
}

}  // namespace flypg::rpc::detail
