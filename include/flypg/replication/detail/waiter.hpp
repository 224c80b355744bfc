// What tracker::wait_for() needs in a header: the type-erased pending wait and its initiation.
// Not part of the public API.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/associated_allocator.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "flypg/lsn.hpp"
#include "flypg/replication/wait_result.hpp"

namespace flypg::replication::detail {

/// Completion signature of a wait.
using wait_signature = void(std::exception_ptr, lsn_wait_result);

/// One pending wait. The fields belong to the registry (and are guarded by it) from add() until
/// the registry completes it, exactly once: with complete(), or through complete_in_order(),
/// which ends in complete_here() (or discard() if the executor never runs it).
class waiter {
  public:
    static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);

    lsn target{};
    std::uint64_t sequence = 0;           ///< Registration order: FIFO among equal targets.
    std::chrono::nanoseconds started{};   ///< Registry clock, since its epoch.
    std::chrono::nanoseconds deadline{};  ///< Registry clock, since its epoch.
    std::size_t lsn_slot = no_slot;       ///< Position in the registry's LSN heap.
    std::size_t deadline_slot = no_slot;  ///< Position in the registry's deadline heap.

    /// Delivers the outcome to the waiting handler through the handler's own executor (posted,
    /// never inline), then frees the waiter. It only posts, so the registry may call it while
    /// holding its own lock.
    virtual void complete(std::exception_ptr error, lsn_wait_result result) = 0;

    /// The executor the handler runs on, so that waiters sharing one can be completed by a single
    /// posted handler (complete_in_order()); empty when it is not an I/O executor, and then the
    /// waiter is completed on its own with complete().
    virtual asio::any_io_executor completion_executor() const = 0;

    /// Calls the handler now, on the calling thread, then frees the waiter. Only from a handler
    /// running on completion_executor().
    virtual void complete_here(std::exception_ptr error, lsn_wait_result result) = 0;

    /// Frees the waiter without calling its handler (its executor was destroyed first).
    virtual void discard() noexcept = 0;

  protected:
    waiter() = default;
    waiter(const waiter&) = delete;
    waiter& operator=(const waiter&) = delete;
    virtual ~waiter() = default;
};

/// Completes `ready` with `result`, in that order, like calling complete() on each, but with one
/// posted handler per executor rather than one per waiter: a poll that covers a thousand waits
/// costs a thousand resumptions, not a thousand trips through the executor's queue. Waiters on
/// different executors keep their order within each executor. Only posts, so the registry may
/// call it while holding its own lock.
void complete_in_order(const std::vector<waiter*>& ready, lsn_wait_result result);

/// The tracker side of a wait.
class waiter_registry {
  public:
    virtual ~waiter_registry() = default;

    /// Takes a new waiter: completes it at once (answered from the cache, or the tracker has
    /// stopped) or keeps it until its target is replayed, its deadline passes or it is cancelled.
    /// `timeout` empty means the tracker's default replication_timeout. If it throws (out of
    /// memory), it has not kept the waiter.
    virtual void add(waiter& w, std::optional<std::chrono::nanoseconds> timeout) = 0;

    /// Called by a waiter's cancellation slot: completes it with errc::cancelled if it is still
    /// pending, else does nothing (its completion is already on its way).
    virtual void cancel(waiter& w) noexcept = 0;
};

/// A waiter holding the caller's completion handler.
template <class Handler>
class waiter_op final : public waiter {
    using default_executor = asio::any_io_executor;
    using handler_executor = asio::associated_executor_t<Handler, default_executor>;
    // Holding the handler's executor with outstanding_work.tracked keeps its io_context's run()
    // from returning while the wait is pending, as Asio's own operations do.
    using work_executor = std::decay_t<decltype(asio::prefer(std::declval<const handler_executor&>(),
                                                             asio::execution::outstanding_work.tracked))>;
    using allocator_type = typename std::allocator_traits<
        asio::associated_allocator_t<Handler>>::template rebind_alloc<waiter_op>;

  public:
    /// Allocates with the handler's associated allocator.
    static waiter_op* create(Handler handler,
                             const default_executor& fallback,
                             std::shared_ptr<waiter_registry> registry) {
        allocator_type alloc(asio::get_associated_allocator(handler));
        waiter_op* op = std::allocator_traits<allocator_type>::allocate(alloc, 1);
        try {
            std::allocator_traits<allocator_type>::construct(
                alloc, op, std::move(handler), fallback, std::move(registry));
        } catch (...) {
            std::allocator_traits<allocator_type>::deallocate(alloc, op, 1);
            throw;
        }
        return op;
    }

    waiter_op(Handler&& handler, const default_executor& fallback, std::shared_ptr<waiter_registry> registry)
        : handler_(std::move(handler)),
          work_(asio::prefer(asio::get_associated_executor(handler_, fallback),
                             asio::execution::outstanding_work.tracked)),
          registry_(std::move(registry)) {}

    /// Connects the handler's cancellation slot, if it has one, to the registry.
    void connect_cancellation() {
        auto slot = asio::get_associated_cancellation_slot(handler_);
        if (slot.is_connected()) slot.template emplace<cancel_hook>(this);
    }

    /// Frees a waiter that never reached the registry (its add() threw); never completes it.
    void abandon() noexcept {
        asio::get_associated_cancellation_slot(handler_).clear();
        destroy(this);
    }

    void complete(std::exception_ptr error, lsn_wait_result result) override {
        // The op stays alive until the posted completion runs on the handler's executor: a
        // cancellation emitted meanwhile (on that executor) still finds it, and the registry
        // ignores it because the op is no longer pending.
        work_executor ex = work_;
        asio::post(ex, completion(this, std::move(error), result));
    }

    asio::any_io_executor completion_executor() const override {
        if constexpr (std::is_convertible_v<const work_executor&, asio::any_io_executor>) {
            return work_;
        } else {
            return {};  // an executor Asio's I/O objects cannot use (use_future's): posted alone
        }
    }

    void complete_here(std::exception_ptr error, lsn_wait_result result) override {
        // Cleared on the handler's executor, where the slot is emitted from, before the handler
        // can go away: no cancellation reaches a completed wait.
        asio::get_associated_cancellation_slot(handler_).clear();
        Handler handler(std::move(handler_));
        work_executor work(std::move(work_));
        // Memory is released before the upcall, as Asio's own operations do, so the handler may
        // start the next wait in it.
        destroy(this);
        std::move(handler)(std::move(error), result);
    }

    void discard() noexcept override { destroy(this); }

    ~waiter_op() override = default;  // public for allocator_traits::destroy; use complete()

  private:
    class cancel_hook {
      public:
        // A constructor, not an aggregate: slot.emplace() initializes with parentheses, which
        // compilers without C++20 parenthesized aggregate init (clang 14) reject.
        explicit cancel_hook(waiter_op* op) noexcept : op_(op) {}

        void operator()(asio::cancellation_type_t type) const {
            // A wait has no side effects: terminal, partial and total cancellation all apply.
            constexpr auto supported = asio::cancellation_type::terminal | asio::cancellation_type::partial |
                                       asio::cancellation_type::total;
            if ((type & supported) != asio::cancellation_type::none) op_->registry_->cancel(*op_);
        }

      private:
        waiter_op* op_;
    };

    // Posted to the handler's executor. If the executor is destroyed without running it, its
    // destructor frees the op, so nothing leaks.
    class completion {
      public:
        completion(waiter_op* op, std::exception_ptr error, lsn_wait_result result) noexcept
            : op_(op), error_(std::move(error)), result_(result) {}
        completion(completion&& other) noexcept
            : op_(std::exchange(other.op_, nullptr)),
              error_(std::move(other.error_)),
              result_(other.result_) {}
        completion& operator=(completion&&) = delete;
        ~completion() {
            if (op_ != nullptr) destroy(op_);
        }

        void operator()() { std::exchange(op_, nullptr)->complete_here(std::move(error_), result_); }

      private:
        waiter_op* op_;
        std::exception_ptr error_;
        lsn_wait_result result_;
    };

    static void destroy(waiter_op* op) noexcept {
        allocator_type alloc(asio::get_associated_allocator(op->handler_));
        std::allocator_traits<allocator_type>::destroy(alloc, op);
        std::allocator_traits<allocator_type>::deallocate(alloc, op, 1);
    }

    Handler handler_;
    work_executor work_;
    std::shared_ptr<waiter_registry> registry_;  // keeps the registry alive while the wait is pending
};

/// The initiation of tracker::wait_for().
class initiate_wait {
  public:
    using executor_type = asio::any_io_executor;

    initiate_wait(std::shared_ptr<waiter_registry> registry, executor_type executor) noexcept
        : registry_(std::move(registry)), executor_(std::move(executor)) {}

    executor_type get_executor() const noexcept { return executor_; }

    template <class Handler>
    void operator()(Handler&& handler, lsn target, std::optional<std::chrono::nanoseconds> timeout) const {
        auto* op =
            waiter_op<std::decay_t<Handler>>::create(std::forward<Handler>(handler), executor_, registry_);
        op->target = target;
        op->connect_cancellation();
        try {
            registry_->add(*op, timeout);
        } catch (...) {
            op->abandon();  // out of memory in the registry: the initiation itself fails
            throw;
        }
    }

  private:
    std::shared_ptr<waiter_registry> registry_;
    executor_type executor_;
};

}  // namespace flypg::replication::detail
