// A bounded pool of PostgreSQL connections shared by coroutines on one io_context.
//
//     flypg::pg::pool db(io.get_executor(), {.connection = {.conninfo = url}, .max_size = 16});
//     auto r = co_await db.query("SELECT count(*) FROM t");        // borrow, run, give back
//     {
//         flypg::pg::pooled_connection conn = co_await db.acquire();  // hold one for several statements
//         co_await conn->query("BEGIN");
//         ...
//     }  // returned here, even when the coroutine throws or is cancelled
//
// Connections are opened lazily up to `max_size`. A connection that comes back broken, inside a
// transaction block, or in the middle of an operation is closed rather than reused, and its slot
// is freed for a new one; idle connections are checked before being handed out, so a pool survives
// a server restart (the first acquire after it opens fresh connections). The pool and everything
// it hands out must be used from the io_context's thread (or one strand).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "flypg/pg/connection.hpp"

namespace flypg::pg {

/// Pool configuration.
struct pool_options {
    /// How each connection is opened (conninfo, session settings, timeouts).
    connect_options connection;
    /// Most connections open at once, idle or in use. Must be at least 1.
    std::size_t max_size = 10;
    /// How long acquire() waits for a free connection before failing with errc::pool_timeout.
    std::chrono::milliseconds acquire_timeout{5'000};
};

/// A snapshot of the pool's counters.
struct pool_stats {
    std::size_t size = 0;         ///< Open connections (idle + in use + opening).
    std::size_t idle = 0;         ///< Open connections waiting in the pool.
    std::size_t waiters = 0;      ///< Coroutines waiting in acquire().
    std::uint64_t acquired = 0;   ///< Successful acquires since start.
    std::uint64_t opened = 0;     ///< Connections opened since start.
    std::uint64_t discarded = 0;  ///< Connections closed instead of reused (broken, dirty).
    std::uint64_t timeouts = 0;   ///< acquire() calls that hit acquire_timeout.
};

class pool;
namespace detail {
struct pool_state;
}

/// A connection borrowed from a pool; gives it back when destroyed. Move-only.
class pooled_connection {
  public:
    pooled_connection(pooled_connection&&) noexcept;
    pooled_connection& operator=(pooled_connection&&) noexcept;
    ~pooled_connection();

    connection& operator*() const noexcept { return *conn_; }
    connection* operator->() const noexcept { return conn_.get(); }

  private:
    friend struct detail::pool_state;
    pooled_connection(std::shared_ptr<detail::pool_state> owner, std::unique_ptr<connection> conn) noexcept;
    void give_back() noexcept;

    std::shared_ptr<detail::pool_state> owner_;
    std::unique_ptr<connection> conn_;
};

/// The pool. Destroying it closes idle connections; borrowed ones close when given back.
class pool {
  public:
    /// Throws flypg::error(errc::invalid_argument) when max_size is 0.
    pool(asio::any_io_executor executor, pool_options options);
    ~pool();
    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;

    /// Borrows a connection, opening one if the pool is below max_size, else waiting up to
    /// acquire_timeout (errc::pool_timeout). Supports cancellation (errc::cancelled; nothing is
    /// leaked: a connection handed over at the same moment goes back to the pool). A failure to
    /// open a connection is thrown as the connect error.
    asio::awaitable<pooled_connection> acquire();

    /// Borrows a connection, runs one statement, and gives the connection back.
    asio::awaitable<result> query(std::string sql, params parameters = {}, query_options options = {});

    /// Borrows a connection and runs a pipeline on it.
    asio::awaitable<std::vector<result>> pipeline(std::vector<statement> statements,
                                                  query_options options = {});

    pool_stats stats() const noexcept;
    const pool_options& options() const noexcept;
    /// The executor its connections run on.
    asio::any_io_executor get_executor() const noexcept;

    /// Closes idle connections and fails current and future acquires with errc::pool_closed.
    void close() noexcept;

  private:
    std::shared_ptr<detail::pool_state> state_;
};

}  // namespace flypg::pg
