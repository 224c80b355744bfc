#include "flypg/replication/detail/waiter.hpp"

#include <asio/post.hpp>

#include <cstddef>
#include <utility>
#include <vector>

namespace flypg::replication::detail {
namespace {

// One posted handler that completes several waiters of one executor, in order. If the executor is
// destroyed before it runs, the waiters it still holds are freed without completion, like Asio's
// own queued operations.
class completion_batch {
  public:
    completion_batch(asio::any_io_executor executor, std::vector<waiter*> waiters, lsn_wait_result result)
        : executor_(std::move(executor)), waiters_(std::move(waiters)), result_(result) {}
    completion_batch(completion_batch&& other) noexcept
        : executor_(std::move(other.executor_)),
          waiters_(std::move(other.waiters_)),
          next_(std::exchange(other.next_, 0)),
          result_(other.result_) {
        other.waiters_.clear();
    }
    completion_batch& operator=(completion_batch&&) = delete;
    ~completion_batch() {
        for (std::size_t i = next_; i < waiters_.size(); ++i) waiters_[i]->discard();
    }

    void operator()() {
        while (next_ < waiters_.size()) {
            waiter* w = waiters_[next_++];
            try {
                w->complete_here(nullptr, result_);
            } catch (...) {
                // A handler threw out of the io_context's run(): the waiters after it must not be
                // lost, so they go back to the executor's queue before the exception leaves.
                repost_rest();
                throw;
            }
        }
    }

  private:
    void repost_rest() {
        std::vector<waiter*> rest(waiters_.begin() + static_cast<std::ptrdiff_t>(next_), waiters_.end());
        waiters_.resize(next_);
        if (!rest.empty()) asio::post(executor_, completion_batch(executor_, std::move(rest), result_));
    }

    asio::any_io_executor executor_;
    std::vector<waiter*> waiters_;
    std::size_t next_ = 0;
    lsn_wait_result result_;
};

struct executor_group {
    asio::any_io_executor executor;
    std::vector<waiter*> waiters;
};

// The group of `executor` among the last few groups, or nullptr. Waiters of one poll usually share
// one executor (or alternate between a few), so a short look-back finds it without making the
// grouping quadratic when every waiter has an executor of its own (a strand each).
executor_group* recent_group(std::vector<executor_group>& groups, const asio::any_io_executor& executor) {
    constexpr std::size_t look_back = 4;
    const std::size_t stop = groups.size() > look_back ? groups.size() - look_back : 0;
    for (std::size_t i = groups.size(); i > stop; --i) {
        if (groups[i - 1].executor == executor) return &groups[i - 1];
    }
    return nullptr;
}

}  // namespace

void complete_in_order(const std::vector<waiter*>& ready, lsn_wait_result result) {
    if (ready.size() == 1) {
        ready.front()->complete(nullptr, result);
        return;
    }
    std::vector<executor_group> groups;
    for (waiter* w : ready) {
        asio::any_io_executor executor = w->completion_executor();
        if (!executor) {
            w->complete(nullptr, result);
            continue;
        }
        if (executor_group* group = recent_group(groups, executor)) {
            group->waiters.push_back(w);
        } else {
            groups.push_back(executor_group{std::move(executor), std::vector<waiter*>{w}});
        }
    }
    for (executor_group& group : groups) {
        asio::any_io_executor executor = group.executor;
        asio::post(executor, completion_batch(std::move(group.executor), std::move(group.waiters), result));
    }
}

}  // namespace flypg::replication::detail
