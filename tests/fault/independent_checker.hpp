// The fault suite's judge: its own libpq connections, blocking, on a thread of its own, never the
// library's pools or connections, so that a defect there cannot hide itself from the checks.
#pragma once

#include <libpq-fe.h>

#include <asio.hpp>

#include <chrono>
#include <exception>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

namespace flypg::fault {

/// One blocking libpq connection that reconnects while its server cannot be reached (restarted,
/// rebuilt, frozen), for up to `patience` per query.
class blocking_session {
  public:
    explicit blocking_session(std::string conninfo) : conninfo_(std::move(conninfo)) {}
    ~blocking_session();
    blocking_session(const blocking_session&) = delete;
    blocking_session& operator=(const blocking_session&) = delete;

    using rows = std::vector<std::vector<std::string>>;
    /// Runs `sql` with text parameters and returns its rows as text (NULL as ""). Throws
    /// std::runtime_error with the server's message for an SQL error, or when the server stayed
    /// unreachable for `patience`.
    rows query(const std::string& sql,
               const std::vector<std::string>& params = {},
               std::chrono::seconds patience = std::chrono::seconds(60));

  private:
    std::string conninfo_;
    PGconn* conn_ = nullptr;
};

/// Runs `f` on `pool` and resumes the calling coroutine on its own executor with the result (or
/// exception), without blocking the caller's loop meanwhile.
template <class F>
asio::awaitable<std::invoke_result_t<F>> on_thread(asio::thread_pool& pool, F f) {
    using R = std::invoke_result_t<F>;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
        [&pool](auto handler, F work) {
            asio::post(pool, [handler = std::move(handler), work = std::move(work)]() mutable {
                std::exception_ptr failure;
                R value{};
                try {
                    value = work();
                } catch (...) {
                    failure = std::current_exception();
                }
                auto back = asio::get_associated_executor(handler);
                asio::post(back, [handler = std::move(handler), failure, value = std::move(value)]() mutable {
                    std::move(handler)(failure, std::move(value));
                });
            });
        },
        asio::use_awaitable,
        std::move(f));
}

class independent_checker {
  public:
    independent_checker(std::string primary_conninfo, std::string replica_conninfo)
        : primary_(std::move(primary_conninfo)), replica_(std::move(replica_conninfo)) {}
    ~independent_checker() { reads_.join(); }

    /// Rows with `note` in `table` on the replica, now (read on the checker's own thread).
    asio::awaitable<long> replica_rows(std::string table, std::string note);

    /// Rows per note on the primary for the notes starting with `prefix` (blocking).
    std::map<std::string, long> primary_rows(const std::string& table, const std::string& prefix);
    /// A counter's value on the primary (blocking).
    long primary_counter(const std::string& table, const std::string& id);
    /// Statements on the primary, for the suite's own setup (blocking).
    blocking_session& primary() { return primary_; }

  private:
    blocking_session primary_;
    blocking_session replica_;  ///< Used only on reads_'s thread.
    asio::thread_pool reads_{1};
};

}  // namespace flypg::fault
