#include "flypg/repo.hpp"

#include <asio/steady_timer.hpp>

#include <algorithm>

#include "core/log_text.hpp"
#include "flypg/replication/commit_lsn.hpp"
#include "flypg/replication/pg_replay_source.hpp"
#include "flypg/replication/tracker.hpp"
#include "repo/primary_service_impl.hpp"
#include "repo/rpc_conversion.hpp"
#include "repo/write_requests.hpp"
#include "rpc/auth.hpp"

namespace flypg {
namespace detail {

// The repo's own metrics; references into the registry, resolved once.
struct repo_metrics {
    repo_metrics(metrics::registry& r, const std::string& database);

    metrics::registry& registry;
    metrics::labels labels;
    metrics::counter& writes_local;
    metrics::counter& writes_forwarded;
    metrics::histogram& write_seconds_local;
    metrics::histogram& write_seconds_forwarded;
    metrics::histogram& rpc_seconds;
    metrics::counter& write_retries;
    metrics::histogram& wait_seconds;

    /// Counts a write or token read that found the replica behind at its deadline, by what the
    /// policy made of it.
    void count_slow_replica(std::string_view operation, slow_replica_policy policy);
    /// Counts a failed write by kind: what a dashboard needs to tell "the SQL was wrong" from
    /// "the primary region is unreachable" from "the replica is slow".
    void count_failure(const std::error_code& ec);
    /// Sets a counter that mirrors a snapshot total.
    void mirror(std::string_view name, std::string_view help, std::uint64_t total);
    void gauge(std::string_view name, std::string_view help, double value);
};

class repo_impl {
  public:
    repo_impl(asio::any_io_executor ex,
              rpc::node& node,
              std::shared_ptr<primary_service> service,
              repo_options opts);
    ~repo_impl();

    asio::any_io_executor executor;
    rpc::node& node;
    std::shared_ptr<primary_service> service;
    repo_options options;
    rpc::log_sink sink;  // options.log, else stderr at FLYPG_LOG_LEVEL
    std::shared_ptr<pg::pool> local;
    std::shared_ptr<pg::pool> primary;  // null on nodes that were given no primary_url
    replication::tracker tracker;
    std::shared_ptr<metrics::registry> registry;
    repo_metrics measures;
    // The local database is the primary itself (local development's read-only mode, or the same
    // server and database as primary_url): when it is not a standby, it still has every write.
    bool local_is_primary = false;
    // The last state of the local database a wait saw, for one log line per change.
    bool local_was_replicating = true;

    struct effective_options {
        await_replication await;
        std::chrono::milliseconds rpc_timeout;
        std::chrono::milliseconds replication_timeout;
        slow_replica_policy if_replica_slow;
    };
    effective_options resolve(const write_options& o) const {
        return {o.await.value_or(options.await),
                o.rpc_timeout.value_or(options.rpc_timeout),
                o.replication_timeout.value_or(options.replication_timeout),
                o.if_replica_slow.value_or(options.if_replica_slow)};
    }

    void log(rpc::log_level level, const std::string& message) const {
        // Messages may quote what the primary region's node or the server said: one line each.
        sink(level, log_safe("flypg repo \"" + options.name + "\": " + message));
    }

    /// Runs a write where it belongs and waits as asked; records it in the metrics.
    asio::awaitable<write_result> write(std::vector<pg::statement> statements, write_options o);
    asio::awaitable<write_result> route_write(std::vector<pg::statement> statements, write_options o);
    /// Waits until the local database has `target`. Throws committed_not_replicated when it is
    /// too slow, and not_replicating when it is not a standby and not the primary itself.
    asio::awaitable<void> wait(lsn target, std::chrono::milliseconds timeout);
    std::string not_replicating_text(lsn target) const;
    /// wait(), with the slow-replica policy applied: false when the replica was still behind at
    /// `timeout` and the policy lets the caller go on (it throws committed_not_replicated under
    /// `fail`). `operation` ("write", "read") labels the metric.
    asio::awaitable<bool> caught_up_in_time(lsn target,
                                            std::chrono::milliseconds timeout,
                                            slow_replica_policy policy,
                                            std::string_view operation);
    /// Waits for a forwarded write's commit LSN as `eff` asks and records the outcome in `out`.
    asio::awaitable<void> await_write(write_result& out, const effective_options& eff);
    /// A read on the local database; a write sent there is errc::use_execute_for_writes.
    asio::awaitable<pg::result> read_locally(std::string sql, pg::params parameters);
    /// A read on the primary, in a read-only transaction: on this node's primary pool in the
    /// primary region, else through a primary-region node.
    asio::awaitable<pg::result> read_on_primary(std::string sql, pg::params parameters);
    /// Forwards a write under call.request_id, again and again while its outcome is unknown,
    /// until `deadline`.
    asio::awaitable<rpc::write_result> forward_at_most_once(std::vector<rpc::statement> statements,
                                                            rpc::call_options call,
                                                            std::chrono::steady_clock::time_point deadline);
    /// The request id of a forwarded write or remote commit: the caller's key, else a fresh id
    /// when every primary-region node remembers ids, else none.
    std::string request_id_for(const write_options& o);
    /// request_id_for() for a transaction, which cannot avoid nodes that forget ids: an
    /// idempotency key is then refused (errc::invalid_argument).
    std::string transaction_request_id_for(const write_options& o);
    /// Runs `attempt` (given the time left) until it succeeds, fails for good, or `deadline`
    /// passes. With a request id, an attempt whose answer was lost (outcome_unknown, no node, a
    /// transport error) is made again; without one, the first failure is final.
    asio::awaitable<void> retry_at_most_once(
        const std::string& request_id,
        std::chrono::steady_clock::time_point deadline,
        std::function<asio::awaitable<void>(std::chrono::milliseconds left)> attempt);
    /// After a remote commit under `request_id` lost its answer: fences the id (fence_request_sql)
    /// until `deadline` and returns an LSN covering the commit if it happened; throws
    /// errc::connection_lost when it did not (nothing was written).
    asio::awaitable<lsn> settle_lost_commit(const std::string& request_id,
                                            std::chrono::steady_clock::time_point deadline,
                                            const std::string& lost);
    /// 128 random bits in hex: unique across nodes without coordination.
    static std::string new_request_id();
    pg::pool& primary_pool();
};

}  // namespace detail

namespace {

pg::pool_options pool_options_for(const std::string& url,
                                  std::size_t size,
                                  std::vector<std::string> settings) {
    pg::pool_options o;
    o.connection.conninfo = url;
    o.connection.session_settings = std::move(settings);
    o.max_size = size;
    return o;
}

std::vector<std::string> local_settings(local_mode mode) {
    if (mode == local_mode::read_only) return {"SET default_transaction_read_only = on"};
    return {};
}

void validate(const repo_options& o) {
    if (o.name.empty()) throw_error(errc::invalid_argument, "repo_options.name is empty");
    if (o.local_url.empty())
        throw_error(errc::invalid_argument, "repo_options.local_url is empty (database \"" + o.name + "\")");
    if (o.pool_size == 0) throw_error(errc::invalid_argument, "repo_options.pool_size must be at least 1");
}

std::unique_ptr<replication::replay_source> replay_source_for(const asio::any_io_executor& ex,
                                                              const repo_options& o) {
    replication::pg_replay_source_options source;
    source.connect.conninfo = o.local_url;
    source.prepare_poll = o.prepare_poll;
    return replication::make_pg_replay_source(ex, std::move(source));
}

// The repo's tracker options: the application's, and a log line when the tracker loses its
// connection to the local database and when it has it back.
replication::tracker_options tracker_options_for(const repo_options& o) {
    replication::tracker_options t = o.tracker;
    t.on_connection_change = [theirs = t.on_connection_change,
                              log = o.log,
                              prefix = "flypg repo \"" + o.name +
                                       "\": the replication tracker's connection to the "
                                       "local database " +
                                       pg::database_label(o.local_url)](bool up, std::string_view why) {
        if (theirs) theirs(up, why);
        if (!log) return;
        if (up) {
            log(rpc::log_level::info, detail::log_safe(prefix + " works again"));
        } else {
            log(rpc::log_level::warning,
                detail::log_safe(
                    prefix + " failed: " + std::string(why) +
                    "; writes from other regions wait for it, and fail with committed_not_replicated "
                    "at their deadline, until it is back"));
        }
    };
    return t;
}

}  // namespace

namespace detail {

repo_impl::repo_impl(asio::any_io_executor ex,
                     rpc::node& n,
                     std::shared_ptr<primary_service> s,
                     repo_options opts)
    : executor(ex),
      node(n),
      service(std::move(s)),
      options((validate(opts), std::move(opts))),
      sink(options.log ? options.log : rpc::stderr_log_sink("")),
      local(std::make_shared<pg::pool>(
          executor, pool_options_for(options.local_url, options.pool_size, local_settings(options.local)))),
      tracker(executor, replay_source_for(executor, options), tracker_options_for(options)),
      registry(options.metrics ? options.metrics : std::make_shared<metrics::registry>()),
      measures(*registry, options.name) {
    if (options.primary_url.empty() && node.is_primary()) options.primary_url = options.local_url;
    local_is_primary =
        options.local == local_mode::read_only ||
        (!options.primary_url.empty() && pg::same_database(options.local_url, options.primary_url));
    if (!options.primary_url.empty()) {
        primary = std::make_shared<pg::pool>(executor,
                                             pool_options_for(options.primary_url, options.pool_size, {}));
        if (service) service->impl().add_database(options.name, primary, registry);
    }
}

repo_impl::~repo_impl() {
    if (primary && service) service->impl().remove_database(options.name);
}

pg::pool& repo_impl::primary_pool() {
    if (!primary)
        throw_error(errc::invalid_argument,
                    "database \"" + options.name +
                        "\": this node is in the primary region but its repo has no "
                        "primary_url");
    return *primary;
}

asio::awaitable<void> repo_impl::wait(lsn target, std::chrono::milliseconds timeout) {
    const std::optional<replication::tracker::duration> deadline(timeout);
    const auto started = std::chrono::steady_clock::now();
    const replication::lsn_wait_result r = co_await tracker.wait_for(target, deadline);
    measures.wait_seconds.observe(std::chrono::steady_clock::now() - started);
    const bool replicating = r.status == replication::wait_status::replayed || local_is_primary;
    if (replicating != local_was_replicating) {
        local_was_replicating = replicating;
        if (replicating) {
            log(rpc::log_level::info,
                "the local database " + pg::database_label(options.local_url) +
                    " is a replicating standby again");
        } else {
            log(rpc::log_level::warning,
                not_replicating_text(target) +
                    "; every write will fail this way until it follows the primary again");
        }
    }
    if (!replicating) throw_error(errc::not_replicating, not_replicating_text(target));
}

asio::awaitable<bool> repo_impl::caught_up_in_time(lsn target,
                                                   std::chrono::milliseconds timeout,
                                                   slow_replica_policy policy,
                                                   std::string_view operation) {
    try {
        co_await wait(target, timeout);
        co_return true;
    } catch (const flypg::error& e) {
        if (e.code() != errc::committed_not_replicated) throw;
        measures.count_slow_replica(operation, policy);
        if (policy == slow_replica_policy::fail) throw;
    }
    co_return false;
}

asio::awaitable<void> repo_impl::await_write(write_result& out, const effective_options& eff) {
    if (eff.await == await_replication::no) co_return;
    out.replicated =
        co_await caught_up_in_time(out.commit_lsn, eff.replication_timeout, eff.if_replica_slow, "write");
    out.replica_behind = !out.replicated;
    if (out.replica_behind)
        log(rpc::log_level::info,
            "write committed at " + out.commit_lsn.to_string() +
                " returned unreplicated: the local database " + pg::database_label(options.local_url) +
                " had not replayed it within " + std::to_string(eff.replication_timeout.count()) + " ms");
}

asio::awaitable<pg::result> repo_impl::read_locally(std::string sql, pg::params parameters) {
    std::optional<diagnostics> write_on_replica;
    try {
        co_return co_await local->query(std::move(sql), std::move(parameters));
    } catch (const flypg::error& e) {
        if (e.code() != sqlstate("25006") || node.is_primary()) throw;
        write_on_replica = e.diag();
    }
    // fly_postgres runs raw writes given to its query() on the replica, where they fail obscurely.
    log(rpc::log_level::warning, "a write was sent to query() on the replica; use execute()");
    diagnostics diag = std::move(*write_on_replica);
    diag.library_message = "database \"" + options.name +
                           "\": query() runs on the local replica, which is read-only; send writes with "
                           "execute() (or insert/update/remove), which run them on the primary";
    throw flypg::error(errc::use_execute_for_writes, std::move(diag));
}

asio::awaitable<pg::result> repo_impl::read_on_primary(std::string sql, pg::params parameters) {
    // The primary runs statements as one transaction; the first makes it read-only, so a write
    // slipped into a read fails there (25006) instead of running outside the write path.
    std::vector<pg::statement> statements(2);
    statements[0].sql = "SELECT set_config('transaction_read_only', 'on', true)";
    statements[1].sql = std::move(sql);
    statements[1].params = std::move(parameters);
    if (node.is_primary()) {
        pg::pooled_connection conn = co_await primary_pool().acquire();
        replication::committed_write done =
            co_await replication::commit_with_lsn(*conn, std::move(statements));
        co_return std::move(done.results.back());
    }
    // Sent once, without a request id: a read may run twice.
    rpc::call_options call;
    call.database = options.name;
    call.timeout = options.rpc_timeout;
    rpc::write_result reply = co_await node.forward_write(to_rpc_statements(std::move(statements)), call);
    if (reply.results.size() != 2)
        throw_error(errc::protocol_error,
                    "a read forwarded to the primary region came back with " +
                        std::to_string(reply.results.size()) + " results instead of 2");
    co_return to_pg_result(reply.results.back());
}

std::string repo_impl::not_replicating_text(lsn target) const {
    return "the write committed on the primary (LSN " + target.to_string() + ") but the local database " +
           pg::database_label(options.local_url) +
           " is not a standby (it was promoted, or is a separate primary): a read there will not see the "
           "write. Read from the primary region, or make it follow the primary again";
}

repo_metrics::repo_metrics(metrics::registry& r, const std::string& database)
    : registry(r),
      labels{{"database", database}},
      writes_local(r.counter("flypg_writes_total",
                             "Acknowledged writes, by where they ran",
                             {{"database", database}, {"route", "local_primary"}})),
      writes_forwarded(r.counter("flypg_writes_total",
                                 "Acknowledged writes, by where they ran",
                                 {{"database", database}, {"route", "forwarded"}})),
      write_seconds_local(r.histogram("flypg_write_seconds",
                                      "Write latency as the caller sees it, wait included",
                                      metrics::latency_buckets(),
                                      {{"database", database}, {"route", "local_primary"}})),
      write_seconds_forwarded(r.histogram("flypg_write_seconds",
                                          "Write latency as the caller sees it, wait included",
                                          metrics::latency_buckets(),
                                          {{"database", database}, {"route", "forwarded"}})),
      rpc_seconds(r.histogram("flypg_rpc_seconds",
                              "Round trip of forwarded writes to the primary region",
                              metrics::latency_buckets(),
                              {{"database", database}})),
      write_retries(r.counter("flypg_write_retries_total",
                              "Forwarded writes sent again under their request id after an unknown outcome",
                              {{"database", database}})),
      wait_seconds(r.histogram("flypg_replication_wait_seconds",
                               "Time from the primary's answer until the local replica replayed the write",
                               metrics::latency_buckets(),
                               {{"database", database}})) {}

void repo_metrics::count_slow_replica(std::string_view operation, slow_replica_policy policy) {
    const char* name = "fail";
    if (policy == slow_replica_policy::read_from_primary) name = "read_from_primary";
    if (policy == slow_replica_policy::allow_stale) name = "allow_stale";
    metrics::labels by = labels;
    by.emplace_back("operation", std::string(operation));
    by.emplace_back("policy", name);
    registry
        .counter("flypg_slow_replica_total",
                 "Writes and token reads that found the local replica behind at their deadline, by policy",
                 by)
        .inc();
}

void repo_metrics::count_failure(const std::error_code& ec) {
    const char* kind = "other";
    if (ec.category() == sqlstate_category())
        kind = "sql";
    else if (ec == errc::outcome_unknown)
        kind = "outcome_unknown";
    else if (ec == errc::committed_not_replicated)
        kind = "committed_not_replicated";
    else if (ec == errc::not_replicating)
        kind = "not_replicating";
    else if (ec == errc::no_node_in_region)
        kind = "no_primary_node";
    else if (ec == errc::timeout)
        kind = "timeout";
    else if (ec == condition::connection_error || ec == errc::transport_error)
        kind = "connection";
    metrics::labels by_kind = labels;
    by_kind.emplace_back("kind", kind);
    registry.counter("flypg_write_failures_total", "Writes that failed, by kind", by_kind).inc();
}

void repo_metrics::mirror(std::string_view name, std::string_view help, std::uint64_t total) {
    metrics::counter& c = registry.counter(name, help, labels);
    const double now = static_cast<double>(total);
    if (now > c.value()) c.inc(now - c.value());
}

void repo_metrics::gauge(std::string_view name, std::string_view help, double value) {
    registry.gauge(name, help, labels).set(value);
}

asio::awaitable<write_result> repo_impl::write(std::vector<pg::statement> statements, write_options o) {
    check_statements(statements);
    const auto started = std::chrono::steady_clock::now();
    std::exception_ptr failure;
    std::error_code code;
    std::string what;
    try {
        write_result out = co_await route_write(std::move(statements), o);
        const auto elapsed = std::chrono::steady_clock::now() - started;
        const bool forwarded = out.route == write_route::forwarded;
        (forwarded ? measures.writes_forwarded : measures.writes_local).inc();
        (forwarded ? measures.write_seconds_forwarded : measures.write_seconds_local).observe(elapsed);
        if (options.verbose)
            log(rpc::log_level::debug,
                std::string(forwarded ? "forwarded" : "local") + " write committed at " +
                    out.commit_lsn.to_string() + " in " +
                    std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()) +
                    " us" + (out.replicated ? ", replicated" : ""));
        co_return out;
    } catch (const std::system_error& e) {
        code = e.code();
        what = e.what();
        failure = std::current_exception();
    }
    measures.count_failure(code);
    // not_replicating is logged by wait(), once per change of state.
    if (code == errc::committed_not_replicated || code == errc::outcome_unknown ||
        code == errc::no_node_in_region)
        log(rpc::log_level::warning, "write failed: " + what);
    std::rethrow_exception(failure);
}

asio::awaitable<write_result> repo_impl::route_write(std::vector<pg::statement> statements, write_options o) {
    const effective_options eff = resolve(o);
    write_result out;
    if (node.is_primary() && o.idempotency_key) {
        if (!service)
            throw_error(
                errc::invalid_argument,
                "write_options::idempotency_key in the primary region needs the repo's primary_service");
        // The caller's key is kept here too, so that a repeat from any region finds it.
        rpc::write_result done =
            co_await service->impl()
                .database(options.name)
                .execute_at_most_once(to_rpc_statements(std::move(statements)), "k:" + *o.idempotency_key);
        for (const rpc::statement_result& r : done.results) out.results.push_back(to_pg_result(r));
        out.commit_lsn = lsn::from_value(done.commit_lsn);
        out.route = write_route::local_primary;
        out.replicated = true;
        co_return out;
    }
    if (node.is_primary()) {
        // In the primary region: run here, and nothing to wait for (reads go to the primary too).
        pg::pooled_connection conn = co_await primary_pool().acquire();
        replication::committed_write done =
            co_await replication::commit_with_lsn(*conn, std::move(statements));
        out.results = std::move(done.results);
        out.commit_lsn = done.commit_lsn;
        out.route = write_route::local_primary;
        out.replicated = true;
        co_return out;
    }
    std::vector<rpc::statement> forwarded = to_rpc_statements(std::move(statements));
    rpc::call_options call;
    call.database = options.name;
    call.request_id = request_id_for(o);
    const auto sent = std::chrono::steady_clock::now();
    rpc::write_result reply =
        co_await forward_at_most_once(std::move(forwarded), call, sent + eff.rpc_timeout);
    measures.rpc_seconds.observe(std::chrono::steady_clock::now() - sent);
    out.results.reserve(reply.results.size());
    for (const rpc::statement_result& r : reply.results) out.results.push_back(to_pg_result(r));
    out.commit_lsn = lsn::from_value(reply.commit_lsn);
    out.route = write_route::forwarded;
    co_await await_write(out, eff);
    co_return out;
}

asio::awaitable<rpc::write_result> repo_impl::forward_at_most_once(
    std::vector<rpc::statement> statements,
    rpc::call_options call,
    std::chrono::steady_clock::time_point deadline) {
    rpc::write_result reply;
    co_await retry_at_most_once(
        call.request_id, deadline, [&](std::chrono::milliseconds left) -> asio::awaitable<void> {
            call.timeout = left;
            reply = co_await node.forward_write(statements, call);
        });
    co_return reply;
}

asio::awaitable<void> repo_impl::retry_at_most_once(
    const std::string& request_id,
    std::chrono::steady_clock::time_point deadline,
    std::function<asio::awaitable<void>(std::chrono::milliseconds left)> attempt) {
    // The request id makes every attempt after the first safe: the serving node runs the request
    // at most once and answers a repeat with the first run's results. So a request whose answer
    // was lost (a node died, a connection broke) is sent again, to the same or another
    // primary-region node, until the deadline; outcome_unknown is left only once that has passed.
    std::chrono::milliseconds pause{10};
    // Once an attempt's answer was lost, the request may have run: a later attempt that is not
    // even sent (no node, a broken connection, a full peer) does not make it "not sent".
    std::string lost_answer;
    for (int attempt_number = 1;; ++attempt_number) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        std::error_code code;
        std::string what;
        try {
            co_await attempt(std::max(left, std::chrono::milliseconds(1)));
            co_return;
        } catch (const flypg::error& e) {
            code = e.code();
            what = e.what();
            if (code == errc::outcome_unknown) lost_answer = what;
            // Without an id, the first answer is final, as it always was. With one, any attempt
            // that may not have run (a lost answer, a connection or server that failed or was
            // restarting) is sent again: a repeat runs at most once.
            const bool may_try_again =
                !request_id.empty() && (code == errc::outcome_unknown || code == errc::no_node_in_region ||
                                        code == errc::transport_error || code == condition::retry_call);
            if (!may_try_again || std::chrono::steady_clock::now() + pause >= deadline) {
                if (attempt_number == 1) throw;
                const std::string attempts = " (after " + std::to_string(attempt_number) +
                                             " attempts with request id " + request_id + ")";
                // Only an SQL error of the statements themselves shows that the request ran under
                // its id (and so that the earlier attempt did not commit); any other failure of the
                // last attempt leaves the earlier one's outcome open.
                const bool last_ran = code.category() == sqlstate_category() &&
                                      !replication::leaves_commit_unknown(code) && code != sqlstate("57P03");
                if (!lost_answer.empty() && !last_ran)
                    throw_error(errc::outcome_unknown,
                                "the answer to an earlier attempt was lost (" + lost_answer +
                                    ") and the last attempt did not settle it (" + what + ")" + attempts);
                throw_error(code, what + attempts);
            }
        }
        measures.write_retries.inc();
        asio::steady_timer wait_a_moment(executor, pause);
        co_await wait_a_moment.async_wait(asio::use_awaitable);
        pause = std::min(pause * 2, std::chrono::milliseconds(200));
    }
}

std::string repo_impl::request_id_for(const write_options& o) {
    // Sent again after a lost answer only when every primary-region node would recognise the
    // repeat; an application's own key is always sent (the node then uses only nodes that do).
    if (o.idempotency_key) return "k:" + *o.idempotency_key;
    if (node.remembers_request_ids(node.primary_region())) return new_request_id();
    return {};
}

std::string repo_impl::transaction_request_id_for(const write_options& o) {
    const bool remembered = node.remembers_request_ids(node.primary_region());
    if (o.idempotency_key && !remembered)
        throw_error(errc::invalid_argument,
                    "write_options::idempotency_key on a transaction needs every node of the primary region "
                    "to remember request ids (a flypg version that does)");
    return request_id_for(o);
}

asio::awaitable<lsn> repo_impl::settle_lost_commit(const std::string& request_id,
                                                   std::chrono::steady_clock::time_point deadline,
                                                   const std::string& lost) {
    std::vector<rpc::statement> fence(1);
    fence[0].sql = std::string(fence_request_sql);
    fence[0].params.emplace_back(request_id);
    rpc::call_options call;
    call.database = options.name;
    call.request_id = new_request_id();  // the fence itself may be sent again
    rpc::write_result settled;
    std::string failed;
    try {
        settled = co_await forward_at_most_once(std::move(fence), call, deadline);
    } catch (const flypg::error& e) {
        failed = e.what();
    }
    if (!failed.empty())
        throw_error(errc::outcome_unknown, lost + "; finding out whether it committed failed too: " + failed);
    const std::vector<rpc::statement_result>& r = settled.results;
    if (r.size() != 1 || r[0].rows.size() != 1 || r[0].rows[0].size() != 1 || !r[0].rows[0][0])
        throw_error(errc::protocol_error, "the fence of a lost commit answered with no row");
    if (*r[0].rows[0][0] == "t") {
        log(rpc::log_level::warning, lost + "; it did not commit (its request id is now fenced)");
        throw_error(errc::connection_lost,
                    lost +
                        "; flypg made sure it did not commit and never will: the transaction is rolled "
                        "back, run it again");
    }
    log(rpc::log_level::info, lost + "; it did commit (found under its request id)");
    co_return lsn::from_value(settled.commit_lsn);
}

std::string repo_impl::new_request_id() {
    // 128 bits from the operating system's generator for every id: ids of other processes cannot
    // collide with these or be guessed from the ones seen. "r:" keeps them apart from the keys
    // applications choose ("k:").
    static constexpr char hex[] = "0123456789abcdef";
    const rpc::detail::challenge bits = rpc::detail::random_challenge();
    std::string id = "r:";
    for (std::size_t i = 0; i < 16; ++i) {
        id += hex[bits[i] >> 4];
        id += hex[bits[i] & 0xf];
    }
    return id;
}

}  // namespace detail

std::int64_t write_result::affected_rows() const noexcept {
    std::int64_t total = 0;
    for (const pg::result& r : results) total += r.affected_rows();
    return total;
}

namespace {
constexpr std::string_view token_version = "1.";
}  // namespace

std::string write_result::token() const {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(token_version);
    const std::uint64_t v = commit_lsn.value();
    for (int shift = 60; shift >= 0; shift -= 4) out += hex[(v >> shift) & 0xf];
    return out;
}

lsn parse_consistency_token(std::string_view token) {
    auto refuse = [&](const char* why) {
        throw_error(errc::invalid_argument,
                    "not a consistency token (" + std::string(why) + ", " + std::to_string(token.size()) +
                        " characters); pass on what write_result::token() gave");
    };
    if (!token.starts_with(token_version)) refuse("unknown version");
    const std::string_view digits = token.substr(token_version.size());
    if (digits.size() != 16) refuse("wrong length");
    std::uint64_t v = 0;
    for (char c : digits) {
        int d = -1;
        if (c >= '0' && c <= '9') d = c - '0';
        if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        if (d < 0) refuse("not hexadecimal");
        v = (v << 4) | static_cast<std::uint64_t>(d);
    }
    return lsn::from_value(v);
}

repo::repo(asio::any_io_executor executor,
           rpc::node& node,
           std::shared_ptr<primary_service> service,
           repo_options options)
    : impl_(std::make_unique<detail::repo_impl>(
          std::move(executor), node, std::move(service), std::move(options))) {}

repo::~repo() = default;

asio::awaitable<void> repo::run() {
    co_await impl_->tracker.run();
}

asio::awaitable<read_result> repo::read(std::string sql, pg::params parameters, read_options options) {
    read_result out;
    // A local database that is the primary itself has every token's write already.
    if (!options.at_least.empty() && !impl_->local_is_primary) {
        const lsn target = parse_consistency_token(options.at_least);
        const slow_replica_policy policy = options.if_replica_slow.value_or(impl_->options.if_replica_slow);
        const bool caught_up = co_await impl_->caught_up_in_time(
            target, options.timeout.value_or(impl_->options.replication_timeout), policy, "read");
        if (!caught_up && policy == slow_replica_policy::read_from_primary) {
            out.rows = co_await impl_->read_on_primary(std::move(sql), std::move(parameters));
            out.source = read_source::primary;
            co_return out;
        }
        out.stale = !caught_up;
    }
    out.rows = co_await impl_->read_locally(std::move(sql), std::move(parameters));
    co_return out;
}

asio::awaitable<pg::result> repo::query(std::string sql, pg::params parameters, read_options options) {
    read_result r = co_await read(std::move(sql), std::move(parameters), std::move(options));
    co_return std::move(r.rows);
}

asio::awaitable<std::optional<pg::result>> repo::query_one(std::string sql,
                                                           pg::params parameters,
                                                           read_options options) {
    pg::result r = co_await query(sql, std::move(parameters), std::move(options));
    if (r.size() > 1)
        throw_error(errc::out_of_range,
                    "query_one expected at most one row, got " + std::to_string(r.size()) + ": " + sql);
    if (r.empty()) co_return std::nullopt;
    co_return r;
}

asio::awaitable<pg::result> repo::get(sql::qualified_name table,
                                      sql::column_values key,
                                      read_options options) {
    pg::statement s = sql::select_by_key(table, std::move(key));
    co_return co_await query(std::move(s.sql), std::move(s.params), std::move(options));
}

asio::awaitable<bool> repo::exists(sql::qualified_name table, sql::where filter, read_options options) {
    pg::statement s = sql::exists(table, std::move(filter));
    pg::result r = co_await query(std::move(s.sql), std::move(s.params), std::move(options));
    co_return r.at(0).get<bool>(0);
}

asio::awaitable<std::int64_t> repo::count(sql::qualified_name table,
                                          sql::where filter,
                                          read_options options) {
    pg::statement s = sql::count(table, std::move(filter));
    pg::result r = co_await query(std::move(s.sql), std::move(s.params), std::move(options));
    co_return r.at(0).get<std::int64_t>(0);
}

asio::awaitable<pg::pooled_connection> repo::begin_read_transaction() {
    pg::pooled_connection conn = co_await impl_->local->acquire();
    co_await conn->query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    co_return conn;
}

namespace {

std::vector<pg::statement> one(pg::statement s) {
    std::vector<pg::statement> v;
    v.push_back(std::move(s));
    return v;
}

}  // namespace

asio::awaitable<write_result> repo::insert(sql::qualified_name table,
                                           sql::column_values row,
                                           write_options options) {
    co_return co_await impl_->write(one(sql::insert(table, std::move(row))), options);
}

asio::awaitable<write_result> repo::insert_many(sql::qualified_name table,
                                                std::vector<std::string> columns,
                                                std::vector<pg::params> rows,
                                                write_options options) {
    co_return co_await impl_->write(sql::insert_many_batches(table, std::move(columns), std::move(rows)),
                                    options);
}

asio::awaitable<write_result> repo::update(sql::qualified_name table,
                                           sql::column_values key,
                                           sql::column_values set,
                                           write_options options) {
    co_return co_await impl_->write(one(sql::update_by_key(table, std::move(key), std::move(set))), options);
}

asio::awaitable<write_result> repo::update_many(sql::qualified_name table,
                                                sql::column_values set,
                                                sql::where filter,
                                                write_options options) {
    co_return co_await impl_->write(one(sql::update_many(table, std::move(set), std::move(filter))), options);
}

asio::awaitable<write_result> repo::remove(sql::qualified_name table,
                                           sql::column_values key,
                                           write_options options) {
    co_return co_await impl_->write(one(sql::delete_by_key(table, std::move(key))), options);
}

asio::awaitable<write_result> repo::remove_many(sql::qualified_name table,
                                                sql::where filter,
                                                write_options options) {
    co_return co_await impl_->write(one(sql::delete_many(table, std::move(filter))), options);
}

asio::awaitable<write_result> repo::upsert(sql::qualified_name table,
                                           sql::column_values row,
                                           std::vector<std::string> conflict_columns,
                                           write_options options) {
    co_return co_await impl_->write(one(sql::upsert(table, std::move(row), std::move(conflict_columns))),
                                    options);
}

asio::awaitable<write_result> repo::execute(std::string sql, pg::params parameters, write_options options) {
    pg::statement s{std::move(sql), std::move(parameters)};
    co_return co_await impl_->write(one(std::move(s)), options);
}

asio::awaitable<write_result> repo::execute_all(std::vector<pg::statement> statements,
                                                write_options options) {
    co_return co_await impl_->write(std::move(statements), options);
}

namespace {

// A procedure call that timed out had been sent (a call never sent fails otherwise): for a
// transaction that means it may have committed, which is outcome_unknown, as for a forwarded
// write, and not a plain timeout that reads as "it did not run".
asio::awaitable<std::vector<rpc::value>> call_transaction(rpc::node& node,
                                                          const char* procedure,
                                                          const std::vector<rpc::value>& args,
                                                          rpc::call_options call) {
    try {
        co_return co_await node.call_primary(procedure, args, call);
    } catch (const flypg::error& e) {
        if (e.code() != errc::timeout) throw;
        diagnostics diag = e.diag();
        throw flypg::error(errc::outcome_unknown, std::move(diag));
    }
}

}  // namespace

asio::awaitable<std::vector<rpc::value>> repo::transaction_on_primary(std::string name,
                                                                      std::vector<rpc::value> args,
                                                                      write_options options) {
    const auto eff = impl_->resolve(options);
    if (is_primary()) {
        // A key is recorded here too, so that it means one transaction whichever region sends it.
        std::string key = options.idempotency_key ? "k:" + *options.idempotency_key : std::string();
        auto [results, commit_lsn] = co_await impl_->service->impl().run_transaction(
            impl_->options.name, name, std::move(args), std::move(key));
        (void)commit_lsn;
        co_return results;
    }
    // With a request id the call is sent again after a lost answer, until rpc_timeout: the
    // serving node runs it at most once and answers a repeat with the first run's results.
    const std::string request_id = impl_->transaction_request_id_for(options);
    std::vector<rpc::value> header{rpc::value(impl_->options.name), rpc::value(name)};
    if (!request_id.empty()) header.emplace_back(request_id);
    args.insert(args.begin(), header.begin(), header.end());
    const char* procedure =
        request_id.empty() ? detail::transaction_procedure : detail::transaction_once_procedure;
    std::vector<rpc::value> reply;
    co_await impl_->retry_at_most_once(request_id,
                                       std::chrono::steady_clock::now() + eff.rpc_timeout,
                                       [&](std::chrono::milliseconds left) -> asio::awaitable<void> {
                                           rpc::call_options call;
                                           call.timeout = left;
                                           reply =
                                               co_await call_transaction(impl_->node, procedure, args, call);
                                       });
    if (reply.empty() || !std::holds_alternative<std::int64_t>(reply.front()))
        throw_error(errc::protocol_error, "flypg.transaction answered without a commit LSN");
    const lsn commit = lsn::from_value(static_cast<std::uint64_t>(std::get<std::int64_t>(reply.front())));
    reply.erase(reply.begin());
    // The values returned carry no write_result to flag a replica that is behind: under a permissive
    // policy the call returns, and the metric and the log line say the replica was behind.
    write_result waited;
    waited.commit_lsn = commit;
    co_await impl_->await_write(waited, eff);
    co_return reply;
}

struct primary_transaction::state {
    detail::repo_impl* repo = nullptr;
    write_options options;
    std::unique_ptr<rpc::transaction_session> local;  // in the primary region
    std::optional<rpc::transaction> remote;           // elsewhere
    std::string request_id;                           // of a remote commit; empty: none
    bool finished = false;
};

primary_transaction::primary_transaction(std::unique_ptr<state> s) : state_(std::move(s)) {}
primary_transaction::primary_transaction(primary_transaction&&) noexcept = default;
primary_transaction& primary_transaction::operator=(primary_transaction&&) noexcept = default;
// An unfinished transaction rolls back by itself: a local session gives its connection back inside
// the transaction (the pool closes it), a remote one drops its capability (the peer rolls back).
primary_transaction::~primary_transaction() = default;

asio::awaitable<pg::result> primary_transaction::execute(std::string sql, pg::params parameters) {
    if (state_->finished) throw_error(errc::invalid_argument, "the transaction is already finished");
    pg::check_sql_text(sql);
    rpc::statement stmt{std::move(sql), detail::to_rpc_values(parameters)};
    // Two statements, not one ?: with a co_await in each branch: g++ 12 miscompiles that.
    rpc::statement_result r;
    if (state_->local)
        r = co_await state_->local->execute(std::move(stmt));
    else
        r = co_await state_->remote->execute(std::move(stmt));
    co_return detail::to_pg_result(r);
}

asio::awaitable<write_result> primary_transaction::commit() {
    if (state_->finished) throw_error(errc::invalid_argument, "the transaction is already finished");
    state_->finished = true;
    write_result out;
    if (state_->local) {
        // Two statements, not one ?: with a co_await in each branch: g++ 12 miscompiles that.
        std::uint64_t committed = 0;
        if (state_->request_id.empty())
            committed = co_await state_->local->commit();
        else
            committed = co_await state_->local->commit_once(state_->request_id);
        out.commit_lsn = lsn::from_value(committed);
        out.route = write_route::local_primary;
        out.replicated = true;
        co_return out;
    }
    const auto eff = state_->repo->resolve(state_->options);
    const auto deadline = std::chrono::steady_clock::now() + eff.rpc_timeout;
    std::string lost;
    try {
        out.commit_lsn = lsn::from_value(co_await state_->remote->commit(state_->request_id));
    } catch (const flypg::error& e) {
        if (e.code() != errc::outcome_unknown || state_->request_id.empty()) throw;
        lost = e.what();
    }
    // The answer was lost: whether it committed is settled under its request id.
    if (!lost.empty())
        out.commit_lsn = co_await state_->repo->settle_lost_commit(state_->request_id, deadline, lost);
    out.route = write_route::forwarded;
    co_await state_->repo->await_write(out, eff);
    co_return out;
}

asio::awaitable<void> primary_transaction::rollback() {
    if (state_->finished) co_return;
    state_->finished = true;
    if (state_->local)
        co_await state_->local->rollback();
    else
        co_await state_->remote->rollback();
}

asio::awaitable<primary_transaction> repo::begin_on_primary(write_options options) {
    auto s = std::make_unique<primary_transaction::state>();
    s->repo = impl_.get();
    s->options = options;
    if (is_primary()) {
        // A key is recorded here too, so that it means one transaction whichever region sends it.
        if (options.idempotency_key) s->request_id = "k:" + *options.idempotency_key;
        s->local = co_await detail::begin_primary_session(impl_->primary_pool());
    } else {
        rpc::call_options call;
        call.timeout = impl_->resolve(options).rpc_timeout;
        call.database = impl_->options.name;
        s->request_id = impl_->transaction_request_id_for(options);
        s->remote.emplace(co_await impl_->node.begin_transaction(call));
    }
    co_return primary_transaction(std::move(s));
}

asio::awaitable<void> repo::wait_for_replication(lsn target,
                                                 std::optional<std::chrono::milliseconds> timeout) {
    co_await impl_->wait(target, timeout.value_or(impl_->options.replication_timeout));
}

const repo_options& repo::options() const noexcept {
    return impl_->options;
}
bool repo::is_primary() const {
    return impl_->node.is_primary();
}
pg::pool& repo::local_pool() noexcept {
    return *impl_->local;
}

repo_options repo_options_for(const database_config& config) {
    repo_options options;
    options.local_url = config.replica.to_conninfo();
    if (config.primary) options.primary_url = config.primary->to_conninfo();
    if (!config.replica_session_settings.empty()) options.local = local_mode::read_only;
    return options;
}

replication::tracker_stats repo::tracker_stats() const {
    return impl_->tracker.stats();
}
asio::any_io_executor repo::executor() const noexcept {
    return impl_->executor;
}

}  // namespace flypg

namespace flypg {

void repo::update_metrics() {
    detail::repo_metrics& m = impl_->measures;
    const replication::tracker_stats t = impl_->tracker.stats();
    m.gauge("flypg_replication_waiters",
            "Waits pending on the replication tracker",
            static_cast<double>(t.waiters));
    m.gauge(
        "flypg_replication_waiters_peak", "Most waits pending at once", static_cast<double>(t.peak_waiters));
    m.mirror("flypg_replication_waits_total", "Waits for the local replica", t.waits);
    m.mirror("flypg_replication_cached_waits_total", "Waits answered without a query", t.cached);
    m.mirror("flypg_replication_timeouts_total", "Waits that ended committed but not replicated", t.timeouts);
    m.mirror("flypg_replication_not_replicating_total",
             "Waits that found the local database not replicating",
             t.not_replicating);
    m.mirror("flypg_replication_polls_total", "Replay-position queries sent to the local replica", t.polls);
    m.mirror("flypg_replication_source_failures_total",
             "Failed tracker queries and reconnects",
             t.source_failures);
    m.gauge(
        "flypg_replication_connected", "Whether the tracker's replica connection is up", t.connected ? 1 : 0);
    const pg::pool_stats p = impl_->local->stats();
    m.gauge("flypg_pool_connections", "Open connections of the local read pool", static_cast<double>(p.size));
    m.gauge("flypg_pool_idle_connections",
            "Idle connections of the local read pool",
            static_cast<double>(p.idle));
    m.gauge("flypg_pool_waiters",
            "Coroutines waiting for a local read connection",
            static_cast<double>(p.waiters));
    m.mirror("flypg_pool_acquires_total", "Connections lent by the local read pool", p.acquired);
    m.mirror(
        "flypg_pool_acquire_timeouts_total", "Acquires of the local read pool that timed out", p.timeouts);
    m.mirror("flypg_pool_discarded_total",
             "Broken or dirty connections closed by the local read pool",
             p.discarded);
}

std::string repo::render_metrics() {
    update_metrics();
    return impl_->registry->render_prometheus();
}

metrics::registry& repo::metrics() noexcept {
    return *impl_->registry;
}

}  // namespace flypg
