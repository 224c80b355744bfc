#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <utility>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "pg/connection_impl.hpp"
#include "pg/param_encoding.hpp"
#include "pg/timeout.hpp"

namespace flypg::pg {
namespace {

using asio::use_awaitable;
using asio::experimental::as_tuple;
using wait_type = asio::posix::stream_descriptor::wait_type;

void ignore_notice(void*, const char*) {}

struct conninfo_deleter {
    void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};
using conninfo_ptr = std::unique_ptr<PQconninfoOption, conninfo_deleter>;

conninfo_ptr parse_conninfo(const std::string& conninfo) {
    char* message = nullptr;
    conninfo_ptr options(PQconninfoParse(conninfo.c_str(), &message));
    if (!options) {
        std::string why = message != nullptr ? message : "out of memory";
        PQfreemem(message);
        while (!why.empty() && why.back() == '\n') why.pop_back();
        // libpq's message names the bad part; the string itself may hold a password, so it stays out.
        throw_error(errc::invalid_argument, "malformed connection string: " + why);
    }
    return options;
}

std::string option_value(const PQconninfoOption* options, std::string_view keyword) {
    for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o)
        if (keyword == o->keyword && o->val != nullptr) return o->val;
    return {};
}

std::string quote_conninfo_value(std::string_view value) {
    std::string quoted = "'";
    for (char c : value) {
        if (c == '\'' || c == '\\') quoted += '\\';
        quoted += c;
    }
    return quoted + "'";
}

// The parsed options in keyword/value form, whichever form (URI or keywords) they came in, so
// more keywords can be appended.
std::string to_keyword_form(const PQconninfoOption* options) {
    std::string out;
    for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
        if (o->val == nullptr) continue;
        if (!out.empty()) out += ' ';
        out += o->keyword;
        out += '=';
        out += quote_conninfo_value(o->val);
    }
    return out;
}

// libpq resolves host names with a blocking getaddrinfo inside PQconnectStart. Resolve them here
// with Asio's resolver and hand libpq numeric `hostaddr`s, keeping `host` for TLS and messages.
asio::awaitable<std::string> resolve_hosts(const std::string& conninfo) {
    conninfo_ptr options = parse_conninfo(conninfo);
    const std::string host = option_value(options.get(), "host");
    if (host.empty() || !option_value(options.get(), "hostaddr").empty()) co_return conninfo;
    const std::string port = option_value(options.get(), "port");
    const std::vector<std::string> hosts = absl::StrSplit(host, ',');
    const std::vector<std::string> ports = absl::StrSplit(port, ',');
    std::vector<std::string> addresses;
    asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        const std::string& name = hosts[i];
        std::error_code ec;
        asio::ip::make_address(name, ec);
        if (!ec || name.empty() || name.front() == '/') {
            addresses.push_back(name.empty() || name.front() == '/' ? std::string() : name);
            continue;
        }
        const std::string service = ports.size() > i && !ports[i].empty() ? ports[i] : "5432";
        auto [resolve_ec, endpoints] =
            co_await resolver.async_resolve(name, service, as_tuple(use_awaitable));
        if (resolve_ec || endpoints.empty())
            throw_error(errc::connect_failed,
                        "could not resolve host \"" + name + "\": " + resolve_ec.message());
        addresses.push_back(endpoints.begin()->endpoint().address().to_string());
    }
    co_return to_keyword_form(options.get()) +
        " hostaddr=" + quote_conninfo_value(absl::StrJoin(addresses, ","));
}

std::string libpq_error(PGconn* conn) {
    std::string message = conn != nullptr ? PQerrorMessage(conn) : "out of memory";
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    return message;
}

// The live connection's options, pinned to the one server it reached (of several hosts, the one
// that answered): the connection that cancels a statement must reach that server, where the
// backend's pid means this session. In a keyword string a later keyword wins over an earlier one.
std::string pinned_conninfo(PGconn* conn) {
    conninfo_ptr options(PQconninfo(conn));
    std::string out = options ? to_keyword_form(options.get()) : std::string();
    for (auto [keyword, value] : {std::pair{"host", PQhost(conn)},
                                  std::pair{"hostaddr", PQhostaddr(conn)},
                                  std::pair{"port", PQport(conn)}}) {
        if (value != nullptr && *value != '\0')
            out += std::string(" ") + keyword + "=" + quote_conninfo_value(value);
    }
    return out;
}

// Keeps the connection's busy flag set for exactly one operation.
class operation_scope {
  public:
    /// `begun`: the operation began earlier (send_prepared() set the busy flag), only its end is
    /// left to mark.
    explicit operation_scope(connection::impl& c, bool begun = false) : c_(c) {
        if (!begun) c_.begin_operation();
    }
    ~operation_scope() { c_.busy = false; }
    operation_scope(const operation_scope&) = delete;
    operation_scope& operator=(const operation_scope&) = delete;

  private:
    connection::impl& c_;
};

bool is_cancellation(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const flypg::error& err) {
        return err.code() == errc::cancelled;
    } catch (const std::system_error& err) {
        return err.code() == asio::error::operation_aborted;
    } catch (...) {
        return false;
    }
}

}  // namespace

connection::impl::impl(asio::any_io_executor ex, connect_options opts)
    : executor(std::move(ex)), options(std::move(opts)), socket(executor) {}

connection::impl::~impl() {
    close();
}

void connection::impl::close() noexcept {
    if (socket.is_open()) {
        std::error_code ignored;
        socket.cancel(ignored);
        (void)socket.release();
    }
    if (conn != nullptr) PQfinish(conn);
    conn = nullptr;
    broken = true;
}

void connection::impl::watch_socket() {
    if (socket.is_open()) (void)socket.release();
    const int fd = PQsocket(conn);
    if (fd < 0) fail_connection("the connection has no socket");
    socket.assign(fd);
}

void connection::impl::fail_connection(std::string what) {
    const std::string message = what + (conn != nullptr ? ": " + libpq_error(conn) : "");
    close();
    throw_error(errc::connection_lost, message);
}

void connection::impl::begin_operation() {
    // Closed first: a connection closed while busy (or with an answer pending) is not coming back.
    if (broken || conn == nullptr || PQstatus(conn) != CONNECTION_OK)
        throw_error(errc::not_connected, "the connection is closed or broken; open a new one");
    if (busy) throw_error(errc::busy, "the connection is already running another operation");
    busy = true;
}

asio::awaitable<void> connection::impl::establish(std::string conninfo) {
    conn = PQconnectStart(conninfo.c_str());
    if (conn == nullptr || PQstatus(conn) == CONNECTION_BAD)
        throw_error(errc::connect_failed, "could not start connecting: " + libpq_error(conn));
    // libpq's documented start state: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING.
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (state != PGRES_POLLING_OK) {
        if (state == PGRES_POLLING_FAILED) throw_error(errc::connect_failed, libpq_error(conn));
        // The socket can change between polls (several hosts, SSL fallback): watch it afresh.
        watch_socket();
        auto [ec] = co_await socket.async_wait(
            state == PGRES_POLLING_READING ? wait_type::wait_read : wait_type::wait_write,
            as_tuple(use_awaitable));
        if (ec == asio::error::operation_aborted) throw_error(errc::cancelled, "connect was cancelled");
        if (ec) throw_error(errc::connect_failed, "waiting on the connection socket: " + ec.message());
        state = PQconnectPoll(conn);
    }
    watch_socket();
    if (PQsetnonblocking(conn, 1) != 0) throw_error(errc::connect_failed, libpq_error(conn));
    PQsetNoticeProcessor(conn, ignore_notice, nullptr);
    connected_conninfo = pinned_conninfo(conn);
    broken = false;
}

asio::awaitable<void> connection::impl::flush() {
    for (;;) {
        const int pending = PQflush(conn);
        if (pending == 0) co_return;
        if (pending < 0) fail_connection("sending to the server failed");
        // The server may be blocked writing results to us while we write: read when readable.
        using namespace asio::experimental::awaitable_operators;
        co_await (socket.async_wait(wait_type::wait_write, use_awaitable) ||
                  socket.async_wait(wait_type::wait_read, use_awaitable));
        if (PQconsumeInput(conn) == 0) fail_connection("reading from the server failed");
    }
}

asio::awaitable<detail::pgresult_ptr> connection::impl::next_result() {
    while (PQisBusy(conn) != 0) {
        auto [ec] = co_await socket.async_wait(wait_type::wait_read, as_tuple(use_awaitable));
        if (ec == asio::error::operation_aborted) throw_error(errc::cancelled, "the operation was cancelled");
        if (ec) fail_connection("waiting on the connection socket: " + ec.message());
        if (PQconsumeInput(conn) == 0) fail_connection("the connection to the server was lost");
    }
    detail::pgresult_ptr res(PQgetResult(conn));
    if (!res && PQstatus(conn) == CONNECTION_BAD) fail_connection("the connection to the server was lost");
    co_return res;
}

asio::awaitable<result> connection::impl::run_query(const std::string& sql, const params& parameters) {
    const detail::encoded_params encoded = detail::encode_params(parameters);
    if (PQsendQueryParams(conn,
                          sql.c_str(),
                          encoded.count(),
                          encoded.types.data(),
                          encoded.values.data(),
                          encoded.lengths.data(),
                          encoded.formats.data(),
                          0) == 0)
        fail_connection("sending the query failed");
    co_await flush();
    co_return co_await collect_result();
}

asio::awaitable<result> connection::impl::collect_result() {
    // One statement gives one result; keep the first failure if a statement yields several.
    std::shared_ptr<const detail::result_data> kept;
    while (detail::pgresult_ptr res = co_await next_result()) {
        auto data = detail::make_result_data(std::move(res));
        if (!kept || (data->error && !kept->error)) kept = std::move(data);
    }
    if (!kept) throw_error(errc::protocol_error, "the server sent no result");
    if (kept->error == errc::connection_lost) fail_connection(kept->diag.server_message);
    co_return result(std::move(kept));
}

asio::awaitable<result> connection::impl::run_prepare(const std::string& name,
                                                      const std::string& sql,
                                                      const params& example) {
    const detail::encoded_params encoded = detail::encode_params(example);
    if (PQsendPrepare(conn, name.c_str(), sql.c_str(), encoded.count(), encoded.types.data()) == 0)
        fail_connection("sending the statement to prepare failed");
    co_await flush();
    result r = co_await collect_result();
    if (!r.error()) prepared.insert_or_assign(name, encoded.types);
    co_return r;
}

void connection::impl::send_prepared(std::string_view name, const params& parameters) {
    const auto found = prepared.find(name);
    if (found == prepared.end()) {
        throw_error(errc::invalid_argument,
                    "no statement named \"" + std::string(name) + "\" was prepared on this connection");
    }
    const detail::encoded_params encoded = detail::encode_params(parameters);
    if (encoded.types != found->second) {
        // The server parses binary parameters by the types the statement was prepared with.
        throw_error(errc::invalid_argument,
                    "prepared statement \"" + std::string(name) + "\" takes " +
                        std::to_string(found->second.size()) +
                        " parameters of the types it was prepared with; got " +
                        std::to_string(encoded.types.size()) + " of other types");
    }
    if (PQsendQueryPrepared(conn,
                            found->first.c_str(),
                            encoded.count(),
                            encoded.values.data(),
                            encoded.lengths.data(),
                            encoded.formats.data(),
                            0) == 0)
        fail_connection("sending the prepared statement failed");
}

asio::awaitable<result> connection::impl::finish_sent() {
    co_await flush();
    co_return co_await collect_result();
}

asio::awaitable<result> connection::impl::run_prepared(const std::string& name, const params& parameters) {
    send_prepared(name, parameters);
    co_return co_await finish_sent();
}

asio::awaitable<std::vector<result>> connection::impl::run_pipeline(
    const std::vector<statement>& statements) {
    if (PQenterPipelineMode(conn) == 0) fail_connection("entering pipeline mode failed");
    pending_syncs = 0;
    for (std::size_t i = 0; i < statements.size(); ++i) {
        const statement& s = statements[i];
        // libpq copies the parameters into its output buffer here, so `encoded` may die right after.
        const detail::encoded_params encoded = detail::encode_params(s.params);
        if (PQsendQueryParams(conn,
                              s.sql.c_str(),
                              encoded.count(),
                              encoded.types.data(),
                              encoded.values.data(),
                              encoded.lengths.data(),
                              encoded.formats.data(),
                              0) == 0)
            fail_connection("queueing a pipelined statement failed");
        if (s.sync == sync_after::yes || i + 1 == statements.size()) {
            if (PQpipelineSync(conn) == 0) fail_connection("queueing a pipeline sync failed");
            ++pending_syncs;
        }
    }
    co_await flush();
    std::vector<result> results;
    results.reserve(statements.size());
    for (std::size_t i = 0; i < statements.size(); ++i) {
        std::shared_ptr<const detail::result_data> kept;
        while (detail::pgresult_ptr res = co_await next_result()) {
            auto data = detail::make_result_data(std::move(res));
            if (!kept || (data->error && !kept->error)) kept = std::move(data);
        }
        if (!kept) fail_connection("the server sent no result for a pipelined statement");
        if (kept->error == errc::connection_lost) fail_connection(kept->diag.server_message);
        results.emplace_back(std::move(kept));
        if (statements[i].sync == sync_after::yes || i + 1 == statements.size()) {
            detail::pgresult_ptr sync = co_await next_result();
            if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC)
                fail_connection("the pipeline lost its synchronisation");
            --pending_syncs;
        }
    }
    if (PQexitPipelineMode(conn) == 0) fail_connection("leaving pipeline mode failed");
    co_return results;
}

asio::awaitable<void> connection::impl::drain() {
    if (PQpipelineStatus(conn) == PQ_PIPELINE_OFF) {
        while (co_await next_result()) {
        }
        co_return;
    }
    while (pending_syncs > 0) {
        detail::pgresult_ptr res = co_await next_result();
        if (res && PQresultStatus(res.get()) == PGRES_PIPELINE_SYNC) --pending_syncs;
    }
    if (PQexitPipelineMode(conn) == 0) fail_connection("leaving pipeline mode failed");
}

asio::awaitable<void> connection::impl::cancel_and_drain() {
    if (conn == nullptr || broken) co_return;
    // PQflush may still hold part of the request: the server cannot finish reading it, so the
    // connection cannot be brought back to a known state. Close it.
    if (PQflush(conn) != 0) {
        close();
        co_return;
    }
    // Cancelling and reading what is left share one deadline: a server that does not answer (a
    // frozen host, a path that drops packets) costs cancel_drain_timeout, never a blocked thread.
    try {
        co_await with_timeout(cancel_then_drain(), options.cancel_drain_timeout);
    } catch (const std::exception&) {
        close();
    }
}

asio::awaitable<void> connection::impl::cancel_then_drain() {
    co_await cancel_on_server();
    co_await drain();
}

asio::awaitable<void> connection::impl::cancel_on_server() {
    // libpq 15's PQcancel connects and waits for the server on the calling thread, and the
    // CancelRequest's secret key is not exposed; pg_cancel_backend() on a short-lived connection
    // of our own (asynchronous like every other) cancels the statement the same way.
    connect_options side;
    side.conninfo = connected_conninfo;
    side.connect_timeout = options.cancel_drain_timeout;
    auto canceller = std::make_unique<impl>(executor, side);
    co_await canceller->establish(side.conninfo);
    {
        operation_scope scope(*canceller);
        params pid{std::int32_t{PQbackendPID(conn)}};
        result r = co_await canceller->run_query("SELECT pg_cancel_backend($1)", pid);
        r.throw_if_error();
    }
}

connection::connection(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

void check_no_nul(std::string_view text, std::string_view what) {
    const auto nul = text.find('\0');
    if (nul == std::string_view::npos) return;
    throw_error(errc::invalid_argument,
                std::string(what) + " holds a NUL byte at offset " + std::to_string(nul) +
                    "; libpq takes C strings and would cut it there, so nothing was sent");
}

bool same_database(std::string_view a, std::string_view b) {
    if (a.find('\0') != std::string_view::npos || b.find('\0') != std::string_view::npos) return false;
    try {
        const conninfo_ptr x = parse_conninfo(std::string(a));
        const conninfo_ptr y = parse_conninfo(std::string(b));
        for (const char* keyword : {"host", "hostaddr", "port", "dbname", "user"}) {
            if (option_value(x.get(), keyword) != option_value(y.get(), keyword)) return false;
        }
        return true;
    } catch (const flypg::error&) {
        return false;
    }
}

std::string database_label(std::string_view conninfo) {
    if (conninfo.find('\0') != std::string_view::npos) return "(malformed connection string)";
    try {
        const conninfo_ptr options = parse_conninfo(std::string(conninfo));
        std::string host = option_value(options.get(), "host");
        if (host.empty()) host = option_value(options.get(), "hostaddr");
        std::string port = option_value(options.get(), "port");
        std::string label = "host " + (host.empty() ? std::string("(default)") : host);
        if (!port.empty()) label += " port " + port;
        if (const std::string db = option_value(options.get(), "dbname"); !db.empty())
            label += " database " + db;
        return label;
    } catch (const flypg::error&) {
        return "(malformed connection string)";
    }
}

void check_sql_text(std::string_view sql, std::string_view what) {
    check_no_nul(sql, what);
    if (sql.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos)
        throw_error(errc::invalid_argument, std::string(what) + " is empty; nothing was sent");
}

asio::awaitable<connection> connection::connect(asio::any_io_executor executor, connect_options options) {
    check_no_nul(options.conninfo, "the connection string");
    for (const std::string& setting : options.session_settings) check_sql_text(setting, "a session setting");
    auto state = std::make_unique<impl>(executor, options);
    auto open = [](impl& c) -> asio::awaitable<void> {
        std::string conninfo = co_await resolve_hosts(c.options.conninfo);
        co_await c.establish(std::move(conninfo));
        for (const std::string& setting : c.options.session_settings) {
            operation_scope scope(c);
            result r = co_await c.run_query(setting, params());
            r.throw_if_error();
        }
    };
    co_await with_timeout(open(*state), options.connect_timeout);
    co_return connection(std::move(state));
}

namespace {

// Runs one operation of a connection. Asio's coroutines throw on every co_await once their
// caller has been cancelled (throw_if_cancelled), which would stop the cleanup below from
// cancelling the statement on the server and reading what is left. So that flag is off while
// the operation runs and restored before returning: the caller sees errc::cancelled, and its own
// later co_awaits still throw as Asio intends.
template <class T>
asio::awaitable<T> run_operation(connection::impl& c,
                                 asio::awaitable<T> op,
                                 std::chrono::milliseconds timeout,
                                 bool begun = false) {
    operation_scope scope(c, begun);
    const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    std::optional<T> value;
    std::exception_ptr failure;
    try {
        value.emplace(co_await with_timeout(std::move(op), timeout));
    } catch (...) {
        failure = std::current_exception();
    }
    if (failure && (is_cancellation(failure) || is_timeout(failure))) co_await c.cancel_and_drain();
    co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    if (failure && is_cancellation(failure)) throw_error(errc::cancelled, "the statement was cancelled");
    if (failure) std::rethrow_exception(failure);
    co_return std::move(*value);
}

}  // namespace

asio::awaitable<result> connection::query(std::string sql, params parameters, query_options options) {
    check_sql_text(sql);
    result r = co_await run_operation(*impl_, impl_->run_query(sql, parameters), options.timeout);
    r.throw_if_error();
    co_return r;
}

asio::awaitable<void> connection::prepare(std::string name,
                                          std::string sql,
                                          params example,
                                          query_options options) {
    check_no_nul(name, "the statement name");
    check_sql_text(sql);
    result r = co_await run_operation(*impl_, impl_->run_prepare(name, sql, example), options.timeout);
    r.throw_if_error();
}

asio::awaitable<result> connection::query_prepared(std::string name,
                                                   params parameters,
                                                   query_options options) {
    result r = co_await run_operation(*impl_, impl_->run_prepared(name, parameters), options.timeout);
    r.throw_if_error();
    co_return r;
}

void connection::send_prepared(std::string_view name, const params& parameters) {
    impl_->begin_operation();
    try {
        impl_->send_prepared(name, parameters);
        // One attempt that cannot block: a short request leaves now, and receive_prepared()
        // flushes whatever the socket did not take.
        if (PQflush(impl_->conn) < 0) impl_->fail_connection("sending to the server failed");
    } catch (...) {
        impl_->busy = false;
        throw;
    }
    impl_->answer_pending = true;
}

asio::awaitable<result> connection::receive_prepared(query_options options) {
    if (!impl_->answer_pending) {
        throw_error(errc::invalid_argument, "receive_prepared: no statement was sent with send_prepared()");
    }
    impl_->answer_pending = false;
    // send_prepared() left the connection busy: it is free again however this ends, even if the
    // operation below cannot start.
    struct end_of_operation {
        connection::impl& c;
        ~end_of_operation() { c.busy = false; }
    } free_again{*impl_};
    if (!is_open()) throw_error(errc::not_connected, "the connection is closed or broken; open a new one");
    result r = co_await run_operation(*impl_, impl_->finish_sent(), options.timeout, true);
    r.throw_if_error();
    co_return r;
}

asio::awaitable<std::vector<result>> connection::pipeline(std::vector<statement> statements,
                                                          query_options options) {
    if (statements.empty()) co_return std::vector<result>();
    for (std::size_t i = 0; i < statements.size(); ++i)
        check_sql_text(statements[i].sql, "the SQL text of statement " + std::to_string(i + 1));
    co_return co_await run_operation(*impl_, impl_->run_pipeline(statements), options.timeout);
}

bool connection::is_open() const noexcept {
    return impl_ && impl_->conn != nullptr && !impl_->broken && PQstatus(impl_->conn) == CONNECTION_OK;
}

bool connection::is_idle() const noexcept {
    return is_open() && !impl_->busy && PQtransactionStatus(impl_->conn) == PQTRANS_IDLE;
}

bool connection::check_alive() noexcept {
    if (!is_open()) return false;
    if (impl_->busy) return true;
    // Two reads: the first may return a shutdown notice, the second the end of the stream.
    for (int i = 0; i < 2; ++i) {
        if (PQconsumeInput(impl_->conn) == 0 || PQstatus(impl_->conn) != CONNECTION_OK) {
            impl_->close();
            return false;
        }
        (void)PQisBusy(impl_->conn);  // parses what arrived
    }
    return is_open();
}

int connection::backend_pid() const noexcept {
    return is_open() ? PQbackendPID(impl_->conn) : 0;
}

void connection::close() noexcept {
    if (impl_) impl_->close();
}

asio::any_io_executor connection::get_executor() const noexcept {
    return impl_->executor;
}

}  // namespace flypg::pg
