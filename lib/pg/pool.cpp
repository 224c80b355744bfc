#include "flypg/pg/pool.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <deque>
#include <utility>

namespace flypg::pg {
namespace detail {

// A coroutine parked in acquire(). Whoever frees something hands it over here and cancels the
// timer to wake the coroutine; the timer expiring on its own means the wait timed out.
struct pool_waiter {
    explicit pool_waiter(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::unique_ptr<connection> handed;  // a connection given over directly
    bool slot_granted = false;           // leave to open a new connection (the slot is counted)
};

struct pool_state : std::enable_shared_from_this<pool_state> {
    pool_state(asio::any_io_executor ex, pool_options opts)
        : executor(std::move(ex)), options(std::move(opts)) {}

    asio::any_io_executor executor;
    pool_options options;
    std::vector<std::unique_ptr<connection>> idle;
    std::deque<std::shared_ptr<pool_waiter>> waiters;
    std::size_t open_count = 0;  // idle + borrowed + being opened
    bool closed = false;
    pool_stats counters;

    pooled_connection lend(std::unique_ptr<connection> conn) {
        ++counters.acquired;
        return pooled_connection(shared_from_this(), std::move(conn));
    }

    void discard(std::unique_ptr<connection> conn) noexcept {
        conn.reset();
        ++counters.discarded;
        --open_count;
        grant_slot();
    }

    // A slot freed up: let the longest waiter open a connection of its own.
    void grant_slot() noexcept {
        if (closed || waiters.empty() || open_count >= options.max_size) return;
        std::shared_ptr<pool_waiter> next = std::move(waiters.front());
        waiters.pop_front();
        ++open_count;
        next->slot_granted = true;
        next->timer.cancel();
    }

    void give_back(std::unique_ptr<connection> conn) noexcept {
        if (closed || !conn->is_idle()) {
            discard(std::move(conn));
            return;
        }
        if (!waiters.empty()) {
            std::shared_ptr<pool_waiter> next = std::move(waiters.front());
            waiters.pop_front();
            next->handed = std::move(conn);
            next->timer.cancel();
            return;
        }
        idle.push_back(std::move(conn));
    }

    // Takes the most recently used idle connection that is still alive.
    std::unique_ptr<connection> take_idle() noexcept {
        while (!idle.empty()) {
            std::unique_ptr<connection> conn = std::move(idle.back());
            idle.pop_back();
            if (conn->check_alive()) return conn;
            discard(std::move(conn));
        }
        return nullptr;
    }

    asio::awaitable<pooled_connection> open_in_slot() {
        std::unique_ptr<connection> conn;
        try {
            conn = std::make_unique<connection>(co_await connection::connect(executor, options.connection));
        } catch (...) {
            --open_count;
            grant_slot();
            throw;
        }
        ++counters.opened;
        co_return lend(std::move(conn));
    }

    void remove_waiter(const std::shared_ptr<pool_waiter>& w) noexcept {
        auto found = std::find(waiters.begin(), waiters.end(), w);
        if (found != waiters.end()) waiters.erase(found);
    }
};

}  // namespace detail

pooled_connection::pooled_connection(std::shared_ptr<detail::pool_state> owner,
                                     std::unique_ptr<connection> conn) noexcept
    : owner_(std::move(owner)), conn_(std::move(conn)) {}

pooled_connection::pooled_connection(pooled_connection&&) noexcept = default;

pooled_connection& pooled_connection::operator=(pooled_connection&& other) noexcept {
    if (this != &other) {
        give_back();
        owner_ = std::move(other.owner_);
        conn_ = std::move(other.conn_);
    }
    return *this;
}

pooled_connection::~pooled_connection() {
    give_back();
}

void pooled_connection::give_back() noexcept {
    if (owner_ && conn_) owner_->give_back(std::move(conn_));
    owner_.reset();
}

pool::pool(asio::any_io_executor executor, pool_options options) {
    if (options.max_size == 0)
        throw_error(errc::invalid_argument, "pool_options.max_size must be at least 1");
    state_ = std::make_shared<detail::pool_state>(std::move(executor), std::move(options));
}

pool::~pool() {
    close();
}

asio::awaitable<pooled_connection> pool::acquire() {
    std::shared_ptr<detail::pool_state> st = state_;
    if (st->closed) throw_error(errc::pool_closed, "the connection pool is closed");
    if (std::unique_ptr<connection> conn = st->take_idle()) co_return st->lend(std::move(conn));
    if (st->open_count < st->options.max_size) {
        ++st->open_count;
        co_return co_await st->open_in_slot();
    }
    auto waiter = std::make_shared<detail::pool_waiter>(st->executor);
    waiter->timer.expires_after(st->options.acquire_timeout);
    st->waiters.push_back(waiter);
    auto [ec] = co_await waiter->timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    st->remove_waiter(waiter);
    // Check what was handed over before how the wait ended: a hand-over and a cancellation can
    // meet, and neither the connection nor its slot may be lost.
    if (waiter->handed) {
        if (waiter->handed->check_alive()) co_return st->lend(std::move(waiter->handed));
        waiter->handed.reset();
        ++st->counters.discarded;
        waiter->slot_granted = true;  // keep the dead connection's slot for a new one
    }
    if (waiter->slot_granted) {
        const auto state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() == asio::cancellation_type::none) co_return co_await st->open_in_slot();
        --st->open_count;
        st->grant_slot();
        throw_error(errc::cancelled, "acquire was cancelled");
    }
    if (st->closed) throw_error(errc::pool_closed, "the connection pool was closed while waiting");
    if (!ec) {
        ++st->counters.timeouts;
        throw_error(errc::pool_timeout,
                    "no connection became free within " +
                        std::to_string(st->options.acquire_timeout.count()) + " ms (max_size " +
                        std::to_string(st->options.max_size) + ")");
    }
    throw_error(errc::cancelled, "acquire was cancelled");
}

asio::awaitable<result> pool::query(std::string sql, params parameters, query_options options) {
    pooled_connection conn = co_await acquire();
    co_return co_await conn->query(std::move(sql), std::move(parameters), options);
}

asio::awaitable<std::vector<result>> pool::pipeline(std::vector<statement> statements,
                                                    query_options options) {
    pooled_connection conn = co_await acquire();
    co_return co_await conn->pipeline(std::move(statements), options);
}

pool_stats pool::stats() const noexcept {
    pool_stats s = state_->counters;
    s.size = state_->open_count;
    s.idle = state_->idle.size();
    s.waiters = state_->waiters.size();
    return s;
}

const pool_options& pool::options() const noexcept {
    return state_->options;
}

void pool::close() noexcept {
    if (!state_ || state_->closed) return;
    state_->closed = true;
    state_->open_count -= state_->idle.size();
    state_->idle.clear();
    for (const auto& w : state_->waiters) w->timer.cancel();
    state_->waiters.clear();
}

asio::any_io_executor pool::get_executor() const noexcept {
    return state_->executor;
}

}  // namespace flypg::pg
