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

    bool ok() const noexcept { return value.has_value(); }
};

template <class T>
using kj_value_t = std::conditional_t<std::is_void_v<T>, kj_void, T>;

template <class T, class Handler>
class await_op final : public pending_op {
  public:
    using outcome = kj_outcome<T>;

    await_op(kj_runtime& rt, Handler handler)
        : runtime_(rt.weak_from_this()), io_executor_(rt.executor()), handler_(std::move(handler)) {}

    ~await_op() noexcept override {
        if (slot_.is_connected()) slot_.clear();
    }

    template <class Promise>
    void start(Promise promise) {
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
        promise_ = promise
                       .then(
                           [this](auto&&... value) {
                               outcome result;
                               if constexpr (sizeof...(value) == 0) {
                                   result.value.emplace();
                               } else {
                                   result.value.emplace(std::move(value)...);
                               }
                               finish(std::move(result));
                           },
                           [this](kj::Exception&& e) {
                               outcome result;
                               result.error.emplace(std::move(e));
                               finish(std::move(result));
                           })
                       .eagerlyEvaluate(nullptr);
    }

    void abandon() noexcept override {
        // The dying runtime destroys this op (and the promise) right after this call.
        outcome result;
        result.cancelled = true;
        finish(std::move(result));
    }

  private:
    void finish(outcome result) {
        if (done_) return;
        done_ = true;
        Handler handler = std::move(*handler_);
        handler_.reset();
        auto ex = asio::get_associated_executor(handler, io_executor_);
        // Completion is posted, never inline: the promise cannot be destroyed from inside its own
        // continuation, and Asio handlers must not run inside the initiating call. The handler is
        // moved out first, so that a runtime destroyed meanwhile cannot lose it.
        asio::post(ex, [this, runtime = runtime_, h = std::move(handler), r = std::move(result)]() mutable {
            if (auto rt = runtime.lock()) {
                // Still registered: clear the slot before completing, then destroy this op
                // (and its promise) outside any KJ callback.
                if (slot_.is_connected()) slot_.clear();
                rt->remove_pending(*this);
            }
            std::move(h)(std::move(r));
        });
    }

    std::weak_ptr<kj_runtime> runtime_;
    asio::io_context::executor_type io_executor_;
    std::optional<Handler> handler_;
    asio::cancellation_slot slot_;
    kj::Promise<void> promise_ = nullptr;
    bool done_ = false;
};

/// Waits for `promise` from an Asio coroutine running on the runtime's io_context thread.
/// Cancellation: all types; the promise is dropped (for an RPC, a Finish message cancels the call
/// on the peer, which may already have run it).
template <class T>
asio::awaitable<kj_outcome<kj_value_t<T>>> await_kj(kj_runtime& rt, kj::Promise<T> promise) {
    using value_type = kj_value_t<T>;
    using outcome = kj_outcome<value_type>;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(outcome)>(
        [&rt](auto handler, kj::Promise<T> p) {
            using handler_type = decltype(handler);
            auto op = std::make_unique<await_op<value_type, handler_type>>(rt, std::move(handler));
            auto& registered =
                static_cast<await_op<value_type, handler_type>&>(rt.add_pending(std::move(op)));
            registered.start(std::move(p));
        },
        asio::use_awaitable,
        std::move(promise));
}

/// Converts the exception of a finished coroutine into a kj::Exception.
kj::Exception to_kj_exception(std::exception_ptr e);

/// Completion handler of to_kj(): fulfils the KJ side. Members are declared so that the runtime
/// (and its loop) outlives the fulfiller when the handler is destroyed without being invoked.
template <class T>
struct fulfil_from_asio {
    std::shared_ptr<kj_runtime> runtime;
    kj::Own<kj::PromiseFulfiller<T>> fulfiller;
    std::shared_ptr<asio::cancellation_signal> signal;  // must outlive the coroutine's use of its slot

    template <class... Value>
    void operator()(std::exception_ptr failure, Value... value) {
        if (!fulfiller->isWaiting()) return;
        if (failure) {
            fulfiller->reject(to_kj_exception(failure));
        } else {
            fulfiller->fulfill(std::move(value)...);
        }
    }
};

/// A KJ promise for `task`, spawned on the runtime's io_context. Dropping the promise emits
/// terminal cancellation into the coroutine (posted, so never from inside KJ's loop).
template <class T>
kj::Promise<T> to_kj(kj_runtime& rt, asio::awaitable<T> task) {
    auto paf = kj::newPromiseAndFulfiller<T>();
    auto signal = std::make_shared<asio::cancellation_signal>();
    auto slot = signal->slot();
    fulfil_from_asio<T> handler{rt.shared_from_this(), std::move(paf.fulfiller), signal};
    asio::co_spawn(rt.io(), std::move(task), asio::bind_cancellation_slot(slot, std::move(handler)));
    return paf.promise.attach(kj::defer([signal, ex = rt.executor()]() mutable {
        asio::post(ex, [signal] { signal->emit(asio::cancellation_type::terminal); });
    }));
}

}  // namespace flypg::rpc::detail
