// The state behind pg::connection: a libpq connection in non-blocking mode whose socket is
// watched by the io_context's reactor.
#pragma once

#include <libpq-fe.h>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "flypg/pg/connection.hpp"
#include "pg/result_data.hpp"

namespace flypg::pg {

struct connection::impl {
    impl(asio::any_io_executor ex, connect_options opts);
    ~impl();
    impl(const impl&) = delete;
    impl& operator=(const impl&) = delete;

    asio::any_io_executor executor;
    connect_options options;
    PGconn* conn = nullptr;
    // This connection's options, pinned to the server it reached, for the short-lived connection
    // that cancels a statement (it must reach the server where this backend's pid is ours).
    std::string connected_conninfo;
    // Watches libpq's socket; never owns it (libpq closes it in PQfinish).
    asio::posix::stream_descriptor socket;
    bool busy = false;
    bool broken = false;
    // send_prepared() sent a statement whose answer receive_prepared() has not read yet.
    bool answer_pending = false;
    // Syncs sent in pipeline mode whose PGRES_PIPELINE_SYNC has not been read yet.
    int pending_syncs = 0;
    // The statements prepared on this session, with the parameter types they were prepared with.
    std::map<std::string, std::vector<std::uint32_t>, std::less<>> prepared;

    asio::awaitable<void> establish(std::string conninfo_with_addresses);
    asio::awaitable<result> run_query(const std::string& sql, const params& parameters);
    asio::awaitable<result> run_prepare(const std::string& name,
                                        const std::string& sql,
                                        const params& example);
    asio::awaitable<result> run_prepared(const std::string& name, const params& parameters);
    /// Sends the prepared statement `name` (PQsendQueryPrepared); does not flush.
    void send_prepared(std::string_view name, const params& parameters);
    /// Flushes what is left of the request just sent and reads its result.
    asio::awaitable<result> finish_sent();
    /// Reads the results of the statement just sent: the first failure, else the last result.
    asio::awaitable<result> collect_result();
    asio::awaitable<std::vector<result>> run_pipeline(const std::vector<statement>& statements);

    /// Marks the operation as started; throws busy / not_connected.
    void begin_operation();
    /// Cancels the running statement on the server and reads what is left; closes the connection
    /// when that does not finish within options.cancel_drain_timeout.
    asio::awaitable<void> cancel_and_drain();
    asio::awaitable<void> cancel_then_drain();
    /// pg_cancel_backend() for this connection's backend, from a connection of its own.
    asio::awaitable<void> cancel_on_server();

    asio::awaitable<void> flush();
    asio::awaitable<detail::pgresult_ptr> next_result();
    asio::awaitable<void> drain();

    [[noreturn]] void fail_connection(std::string what);
    void watch_socket();
    void close() noexcept;
};

}  // namespace flypg::pg
