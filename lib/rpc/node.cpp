#include "flypg/rpc/node.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <list>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "core/log_text.hpp"
#include "flypg/error.hpp"
#include "rpc/auth.hpp"
#include "rpc/codec.hpp"
#include "rpc/context.hpp"
#include "rpc/kj_bridge.hpp"
#include "rpc/peer.hpp"
#include "rpc/peer_address.hpp"
#include "rpc/server.hpp"
#include "rpc/tls.hpp"

namespace flypg::rpc {

std::uint32_t protocol_version() noexcept {
    return wire::PROTOCOL_VERSION;
}

namespace detail {
namespace {

using clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

std::optional<std::string> env(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
}

flypg::error make_error(errc code, std::string message, flypg::origin where = flypg::origin::rpc) {
    diagnostics diag;
    diag.library_message = std::move(message);
    diag.origin = where;
    return flypg::error(code, std::move(diag));
}

std::string ms(std::chrono::milliseconds d) {
    return std::to_string(d.count()) + " ms";
}

std::string hex(std::span<const std::uint8_t> bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (auto b : bytes) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

std::string endpoint_text(const tcp::endpoint& ep) {
    auto address = ep.address();
    if (address.is_v6()) return "[" + address.to_string() + "]:" + std::to_string(ep.port());
    return address.to_string() + ":" + std::to_string(ep.port());
}

/// Exponential backoff with equal jitter: half the cap, plus a random part of the other half.
class backoff {
  public:
    backoff(std::chrono::milliseconds min, std::chrono::milliseconds max) : min_(min), max_(max) {}

    std::chrono::milliseconds next(std::mt19937_64& rng) {
        auto cap = min_;
        for (unsigned i = 0; i < attempt_ && cap < max_; ++i) cap *= 2;
        cap = std::min(cap, max_);
        if (attempt_ < 32) ++attempt_;
        std::uniform_int_distribution<std::int64_t> jitter(0, cap.count() / 2);
        return std::chrono::milliseconds(cap.count() - cap.count() / 2 + jitter(rng));
    }
    void reset() noexcept { attempt_ = 0; }

  private:
    std::chrono::milliseconds min_, max_;
    unsigned attempt_ = 0;
};

/// Runs `task`, at most until `deadline`: std::nullopt when the deadline came first (the task is
/// then cancelled). The task's exception is rethrown.
template <class T>
asio::awaitable<std::optional<T>> with_deadline(asio::awaitable<T> task, clock::time_point deadline) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex, deadline);
    auto [order, failure, value, timer_ec] =
        co_await asio::experimental::make_parallel_group(
            asio::co_spawn(ex, std::move(task), asio::experimental::deferred),
            timer.async_wait(asio::experimental::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    (void)timer_ec;
    if (order[0] != 0) co_return std::nullopt;
    if (failure) std::rethrow_exception(failure);
    co_return std::optional<T>(std::move(value));
}

/// Coroutines the node spawns (connections, links, loops), cancelled together and awaited on
/// shutdown. The state is shared with the completion handlers, which may run after the group.
class task_group {
  public:
    explicit task_group(asio::any_io_executor ex) : state_(std::make_shared<state>(ex)) {}

    /// Starts `task`; after cancel_all() the group is closed and the task never starts.
    std::shared_ptr<asio::cancellation_signal> spawn(asio::awaitable<void> task) {
        auto signal = std::make_shared<asio::cancellation_signal>();
        auto& s = *state_;
        if (s.closed) return signal;
        s.signals.push_front(signal);
        auto it = s.signals.begin();
        ++s.live;
        auto slot = signal->slot();
        asio::co_spawn(s.executor,
                       std::move(task),
                       asio::bind_cancellation_slot(slot, [st = state_, it, signal](std::exception_ptr) {
                           st->signals.erase(it);
                           if (--st->live == 0) st->idle.cancel();
                       }));
        return signal;
    }

    void cancel_all() {
        state_->closed = true;
        for (auto& s : state_->signals) s->emit(asio::cancellation_type::terminal);
    }

    asio::awaitable<void> wait_idle() {
        auto st = state_;
        while (st->live > 0) {
            st->idle.expires_at(clock::time_point::max());
            co_await st->idle.async_wait(use_tuple);
        }
    }

  private:
    struct state {
        explicit state(asio::any_io_executor ex) : executor(ex), idle(ex) {}
        asio::any_io_executor executor;
        std::list<std::shared_ptr<asio::cancellation_signal>> signals;
        std::size_t live = 0;
        bool closed = false;
        asio::steady_timer idle;
    };
    std::shared_ptr<state> state_;
};

struct in_flight_guard {
    explicit in_flight_guard(peer_connection& p) : peer(p) { ++peer.in_flight; }
    ~in_flight_guard() { --peer.in_flight; }
    in_flight_guard(const in_flight_guard&) = delete;
    in_flight_guard& operator=(const in_flight_guard&) = delete;
    peer_connection& peer;
};

std::string describe(const peer_connection& p) {
    return "node " + p.peer().node_id + " (" + p.address() + ", region " + p.peer().region + ")";
}

}  // namespace

/// Startup configuration that is not part of node_context.
struct node_config {
    std::vector<peer_target> static_peers;
    std::string dns_name;
    std::uint16_t dns_port = default_port;
    std::chrono::milliseconds resolve_interval{0};
    std::chrono::milliseconds reconnect_min{0};
    std::chrono::milliseconds reconnect_max{0};
    std::chrono::milliseconds heartbeat_interval{0};
    std::chrono::milliseconds heartbeat_timeout{0};
};

class transaction_impl {
  public:
    virtual ~transaction_impl() = default;
    virtual asio::awaitable<statement_result> execute(statement stmt) = 0;
    virtual asio::awaitable<std::vector<statement_result>> execute_pipelined(
        std::vector<statement> statements) = 0;
    virtual asio::awaitable<std::uint64_t> commit(std::string request_id) = 0;
    virtual asio::awaitable<void> rollback() = 0;
    virtual bool is_remote() const noexcept = 0;
};

namespace {

// ---------------------------------------------------------------------------------------------
// A transaction in this node's own (primary) region: the executor's session, used directly.
class local_transaction final : public transaction_impl {
  public:
    local_transaction(std::shared_ptr<node_context> ctx,
                      std::unique_ptr<transaction_session> session,
                      call_options options)
        : ctx_(std::move(ctx)), session_(std::move(session)), options_(options) {}

    ~local_transaction() override {
        if (session_ && !finished_)
            roll_back_in_background(ctx_, std::move(session_), "a dropped transaction");
    }

    asio::awaitable<statement_result> execute(statement stmt) override {
        check_open();
        auto r = co_await with_deadline(session_->execute(std::move(stmt)), clock::now() + options_.timeout);
        if (!r) {
            finished_ = true;  // the session's state after a cancelled statement is unknown: roll back
            throw make_error(
                errc::timeout,
                "statement timed out after " + ms(options_.timeout) + "; the transaction is rolled back",
                flypg::origin::local);
        }
        co_return std::move(*r);
    }

    asio::awaitable<std::vector<statement_result>> execute_pipelined(
        std::vector<statement> statements) override {
        std::vector<statement_result> out;
        for (auto& s : statements) out.push_back(co_await execute(std::move(s)));
        co_return out;
    }

    asio::awaitable<std::uint64_t> commit(std::string request_id) override {
        check_open();
        finished_ = true;
        auto commit = request_id.empty() ? session_->commit() : session_->commit_once(std::move(request_id));
        auto r = co_await with_deadline(std::move(commit), clock::now() + options_.timeout);
        if (!r) {
            throw make_error(
                errc::outcome_unknown,
                "commit timed out after " + ms(options_.timeout) + "; the transaction may have committed",
                flypg::origin::local);
        }
        co_return *r;
    }

    asio::awaitable<void> rollback() override {
        if (finished_ || !session_) co_return;
        finished_ = true;
        auto s = std::move(session_);
        co_await s->rollback();
    }

    bool is_remote() const noexcept override { return false; }

  private:
    void check_open() const {
        if (finished_ || !session_)
            throw_error(errc::invalid_argument, "the transaction is already finished");
    }

    std::shared_ptr<node_context> ctx_;
    std::unique_ptr<transaction_session> session_;
    call_options options_;
    bool finished_ = false;
};

// ---------------------------------------------------------------------------------------------
// A transaction on a primary-region peer: the Transaction capability from Session.begin.
class remote_transaction final : public transaction_impl {
  public:
    remote_transaction(std::shared_ptr<node_context> ctx,
                       std::shared_ptr<peer_connection> peer,
                       capnp::RemotePromise<wire::Session::BeginResults> begun,
                       call_options options)
        : ctx_(std::move(ctx)),
          peer_(std::move(peer)),
          cap_(begun.getTransaction()),
          begun_(begun.ignoreResult().eagerlyEvaluate([](kj::Exception&&) {})),
          options_(options) {}

    // Members go in reverse order: the capability is dropped (the peer rolls back an open
    // transaction) before the connection it travels on.
    ~remote_transaction() noexcept override {}

    asio::awaitable<statement_result> execute(statement stmt) override {
        check_open();
        auto req = cap_.executeRequest();
        encode(stmt, req.initStatement());
        check_size(req.totalSize());
        const auto deadline = clock::now() + options_.timeout;
        auto outcome = co_await await_kj(*ctx_->runtime, req.send(), deadline);
        co_return take(outcome, "statement");
    }

    asio::awaitable<std::vector<statement_result>> execute_pipelined(
        std::vector<statement> statements) override {
        check_open();
        // All requests leave at once; the peer runs them in order.
        std::vector<kj::Promise<capnp::Response<wire::Transaction::ExecuteResults>>> sent;
        sent.reserve(statements.size());
        for (const auto& s : statements) {
            auto req = cap_.executeRequest();
            encode(s, req.initStatement());
            check_size(req.totalSize());
            sent.push_back(req.send());
        }
        const auto deadline = clock::now() + options_.timeout;
        std::vector<statement_result> out;
        out.reserve(sent.size());
        for (auto& promise : sent) {
            auto outcome = co_await await_kj(*ctx_->runtime, std::move(promise), deadline);
            out.push_back(take(outcome, "pipelined statement"));
        }
        co_return out;
    }

    asio::awaitable<std::uint64_t> commit(std::string request_id) override {
        check_open();
        if (request_id.size() > max_request_id_bytes)
            throw make_error(errc::invalid_argument,
                             "commit: the request id is " + std::to_string(request_id.size()) +
                                 " bytes (at most " + std::to_string(max_request_id_bytes) +
                                 "); nothing was sent",
                             flypg::origin::local);
        finished_ = true;
        const auto start = peer_->stream().requested_bytes();
        auto request = cap_.commitRequest();
        request.setRequestId(request_id);
        auto outcome = co_await await_kj(*ctx_->runtime, request.send(), clock::now() + options_.timeout);
        if (!outcome.ok()) {
            const bool left = peer_->stream().written_bytes() > start;
            if (outcome.error && !left) {
                throw make_error(errc::transport_error,
                                 "commit on " + describe(*peer_) +
                                     " was never sent (connection lost); the transaction is rolled back: " +
                                     outcome.error->getDescription().cStr());
            }
            std::string why = outcome.timed_out   ? "timed out after " + ms(options_.timeout)
                              : outcome.cancelled ? std::string("was cancelled")
                                                  : std::string("lost its connection (") +
                                                        outcome.error->getDescription().cStr() + ")";
            throw make_error(
                errc::outcome_unknown,
                "commit on " + describe(*peer_) + " " + why + "; the transaction may have committed",
                flypg::origin::primary);
        }
        auto result = outcome.value->getResult();
        if (result.isFailure()) {
            throw error_from_failure(
                decode(result.getFailure()), "commit on " + describe(*peer_), flypg::origin::primary);
        }
        co_return result.getCommitLsn();
    }

    asio::awaitable<void> rollback() override {
        if (finished_) co_return;
        finished_ = true;
        auto outcome =
            co_await await_kj(*ctx_->runtime, cap_.rollbackRequest().send(), clock::now() + options_.timeout);
        if (outcome.ok()) {
            auto result = outcome.value->getResult();
            if (result.isFailure()) {
                throw error_from_failure(
                    decode(result.getFailure()), "rollback on " + describe(*peer_), flypg::origin::primary);
            }
        }
        // Without an answer the transaction is rolled back anyway: the capability is dropped with
        // this object, and a lost connection rolls back on the peer.
    }

    bool is_remote() const noexcept override { return true; }

  private:
    void check_open() const {
        if (finished_) throw_error(errc::invalid_argument, "the transaction is already finished");
    }

    void check_size(capnp::MessageSize size) const {
        const auto bytes = size.wordCount * 8;
        if (bytes > payload_limit_bytes(*ctx_)) {
            throw make_error(errc::overloaded,
                             "the statement of " + std::to_string(bytes) + " bytes exceeds " +
                                 message_limit_text(*ctx_) + "; it was not sent");
        }
    }

    statement_result take(kj_outcome<capnp::Response<wire::Transaction::ExecuteResults>>& outcome,
                          const char* what) {
        if (!outcome.ok()) {
            if (outcome.timed_out) {
                throw make_error(errc::timeout,
                                 std::string(what) + " on " + describe(*peer_) + " timed out after " +
                                     ms(options_.timeout));
            }
            if (outcome.cancelled) {
                throw make_error(errc::cancelled,
                                 std::string(what) + " on " + describe(*peer_) + " was cancelled");
            }
            finished_ = true;
            throw make_error(
                errc::transport_error,
                std::string(what) + " on " + describe(*peer_) +
                    " failed; the transaction is rolled back: " + outcome.error->getDescription().cStr());
        }
        auto result = outcome.value->getResult();
        if (result.isFailure()) {
            throw error_from_failure(decode(result.getFailure()),
                                     std::string(what) + " on " + describe(*peer_),
                                     flypg::origin::primary);
        }
        return decode(result.getResult());
    }

    std::shared_ptr<node_context> ctx_;
    std::shared_ptr<peer_connection> peer_;
    wire::Transaction::Client cap_;
    kj::Promise<void> begun_;
    call_options options_;
    bool finished_ = false;
};

}  // namespace

// =============================================================================================

class node_impl : public std::enable_shared_from_this<node_impl> {
  public:
    node_impl(asio::io_context& io,
              std::shared_ptr<node_context> ctx,
              tcp::acceptor acceptor,
              node_config config)
        : io_(io),
          ctx_(std::move(ctx)),
          acceptor_(std::move(acceptor)),
          config_(std::move(config)),
          tasks_(io.get_executor()),
          stop_timer_(io),
          rng_(std::random_device{}()) {}

    ~node_impl() { close_acceptor(); }

    std::shared_ptr<node_context> ctx() const { return ctx_; }
    asio::io_context& io() { return io_; }
    tcp::endpoint local_endpoint() const { return endpoint_; }

    void bind_endpoint() { endpoint_ = acceptor_.local_endpoint(); }

    // ---- run / stop ---------------------------------------------------------------------------

    asio::awaitable<void> run(std::shared_ptr<node_impl> self) {
        if (running_) throw_error(errc::invalid_argument, "node::run() is already running");
        if (stopped_) throw_error(errc::invalid_argument, "the node was stopped; create a new one");
        running_ = true;
        ctx_->log(log_level::info,
                  "listening on " + endpoint_text(endpoint_) + " in region " + ctx_->my_region() +
                      " (primary " + ctx_->primary_region() + ")");
        tasks_.spawn(accept_loop(self));
        tasks_.spawn(discovery_loop(self));
        stop_timer_.expires_at(clock::time_point::max());
        co_await stop_timer_.async_wait(use_tuple);
        // Cancelled (or stopped): shut everything down and wait for it before returning.
        co_await asio::this_coro::reset_cancellation_state();
        stop();
        co_await tasks_.wait_idle();
        running_ = false;
    }

    void stop() {
        stopped_ = true;
        close_acceptor();
        stop_timer_.cancel();
        for (auto& [key, conn] : connected_) conn->close();
        tasks_.cancel_all();
    }

    // ---- registry -----------------------------------------------------------------------------

    std::vector<peer_info> peers() const {
        std::vector<peer_info> out;
        for (const auto& [key, conn] : connected_) {
            out.push_back(peer_info{conn->peer().node_id,
                                    conn->peer().region,
                                    conn->peer().app_version,
                                    conn->address(),
                                    conn->healthy && !conn->closed,
                                    conn->last_round_trip,
                                    conn->peer().remembers_request_ids});
        }
        return out;
    }

    std::vector<std::shared_ptr<peer_connection>> healthy_in(const std::string& region) {
        std::vector<std::shared_ptr<peer_connection>> out;
        for (auto& [key, conn] : connected_) {
            if (conn->peer().region == region && conn->healthy && !conn->closed) out.push_back(conn);
        }
        std::shuffle(out.begin(), out.end(), rng_);
        return out;
    }

    /// A random healthy peer of `region` not in `tried`, or nullptr. Calls use this rather than
    /// healthy_in(): no list to build and shuffle when the first peer answers, as it almost always
    /// does.
    /// With `needs_request_ids`, only peers that run a write at most once per request id: a
    /// write carrying an id may be a repeat, which any other node would run again.
    std::shared_ptr<peer_connection> pick_healthy(const std::string& region,
                                                  const std::vector<const peer_connection*>& tried,
                                                  bool needs_request_ids = false) {
        auto eligible = [&](const peer_connection& conn) {
            return conn.healthy && !conn.closed && conn.peer().region == region &&
                   (!needs_request_ids || conn.peer().remembers_request_ids) &&
                   std::find(tried.begin(), tried.end(), &conn) == tried.end();
        };
        std::size_t count = 0;
        for (const auto& [key, conn] : connected_) count += eligible(*conn) ? 1 : 0;
        if (count == 0) return nullptr;
        std::size_t chosen = 0;
        if (count > 1) chosen = std::uniform_int_distribution<std::size_t>(0, count - 1)(rng_);
        for (const auto& [key, conn] : connected_) {
            if (eligible(*conn) && chosen-- == 0) return conn;
        }
        return nullptr;
    }

    asio::awaitable<void> wait_for_region(std::string region, std::chrono::milliseconds timeout) {
        const auto deadline = clock::now() + timeout;
        while (healthy_in(region).empty()) {
            if (clock::now() >= deadline) {
                throw make_error(errc::timeout,
                                 "no healthy node found in region \"" + region + "\" within " + ms(timeout));
            }
            asio::steady_timer wake(io_, deadline);
            waiters_.push_back(&wake);
            struct unregister {
                std::list<asio::steady_timer*>& list;
                std::list<asio::steady_timer*>::iterator it;
                ~unregister() { list.erase(it); }
            } guard{waiters_, std::prev(waiters_.end())};
            co_await wake.async_wait(use_tuple);
        }
    }

    // ---- calls --------------------------------------------------------------------------------

    /// `target` empty: the primary region (read when the call starts, as the environment may say).
    /// `self` keeps the node alive while the call runs (the node object may be moved or dropped).
    asio::awaitable<std::vector<value>> call_region(std::shared_ptr<node_impl> self,
                                                    std::optional<std::string> target,
                                                    std::string name,
                                                    std::vector<value> args,
                                                    call_options options) {
        (void)self;  // a coroutine parameter: it lives in the frame until the call is over
        const std::string region = target ? std::move(*target) : ctx_->primary_region();
        if (region.empty()) throw_error(errc::invalid_argument, "call_region needs a region");
        const auto deadline = clock::now() + options.timeout;
        if (region == ctx_->my_region()) {
            co_return co_await call_local(std::move(name), std::move(args), options, deadline);
        }
        const auto where = region == ctx_->primary_region() ? flypg::origin::primary : flypg::origin::rpc;
        // Built only when a failure needs it: a successful call makes no strings.
        auto what = [&] {
            return "call of \"" + name + "\" in region " + region;
        };
        if (wire_size(args) > payload_limit_bytes(*ctx_)) {
            throw make_error(errc::overloaded,
                             what() + ": the arguments of about " + std::to_string(wire_size(args)) +
                                 " bytes exceed " + message_limit_text(*ctx_) + "; nothing was sent");
        }
        auto send = [&](peer_connection& peer) {
            auto req = peer.session().callRequest();
            req.setProcedure(name);
            encode(args, req.initArgs(static_cast<unsigned>(args.size())));
            check_size(req.totalSize(), what);
            return await_kj(*ctx_->runtime, req.send(), deadline);
        };
        auto answer = [&](const peer_connection& peer, auto& response) {
            auto result = response.getResult();
            if (result.isFailure()) {
                throw error_from_failure(
                    decode(result.getFailure()), what() + " on " + describe(peer), where);
            }
            return decode(result.getValues());
        };
        co_return co_await on_some_peer<std::vector<value>>(
            region, what, options, errc::timeout, send, answer);
    }

    asio::awaitable<write_result> forward_write(std::vector<statement> statements, call_options options) {
        const auto deadline = clock::now() + options.timeout;
        const std::string region = ctx_->primary_region();
        if (region == ctx_->my_region()) {
            if (!ctx_->writes) {
                throw make_error(
                    errc::procedure_error,
                    "forward_write in the primary region needs node_options::writes (the primary "
                    "database executor)",
                    flypg::origin::local);
            }
            auto r = co_await with_deadline(
                options.request_id.empty()
                    ? ctx_->writes->execute_on(options.database, std::move(statements))
                    : ctx_->writes->execute_once(options.database, std::move(statements), options.request_id),
                deadline);
            if (!r) {
                throw make_error(errc::outcome_unknown,
                                 "write timed out after " + ms(options.timeout) + "; it may have committed",
                                 flypg::origin::local);
            }
            co_return std::move(*r);
        }
        const std::string what = "write forwarded to region " + region;
        if (options.request_id.size() > max_request_id_bytes) {
            throw make_error(errc::invalid_argument,
                             what + ": call_options::request_id is " +
                                 std::to_string(options.request_id.size()) + " bytes (at most " +
                                 std::to_string(max_request_id_bytes) + "); nothing was sent",
                             flypg::origin::local);
        }
        std::size_t estimate = 64;
        for (const auto& s : statements) estimate += 32 + s.sql.size() + wire_size(s.params);
        if (estimate > payload_limit_bytes(*ctx_)) {
            throw make_error(errc::overloaded,
                             what + ": the statements of about " + std::to_string(estimate) +
                                 " bytes exceed " + message_limit_text(*ctx_) + "; nothing was sent");
        }
        auto what_text = [&] {
            return what;
        };
        auto send = [&](peer_connection& peer) {
            auto req = peer.session().writeRequest();
            req.setDatabase(options.database);
            req.setRequestId(options.request_id);
            auto list = req.initStatements(static_cast<unsigned>(statements.size()));
            for (unsigned i = 0; i < statements.size(); ++i) encode(statements[i], list[i]);
            check_size(req.totalSize(), what_text);
            return await_kj(*ctx_->runtime, req.send(), deadline);
        };
        auto answer = [&](const peer_connection& peer, auto& response) {
            auto result = response.getResult();
            if (result.isFailure()) {
                throw error_from_failure(
                    decode(result.getFailure()), what + " on " + describe(peer), flypg::origin::primary);
            }
            auto committed = result.getCommitted();
            write_result out;
            out.commit_lsn = committed.getCommitLsn();
            for (auto r : committed.getResults()) out.results.push_back(decode(r));
            return out;
        };
        co_return co_await on_some_peer<write_result>(
            region, what_text, options, errc::outcome_unknown, send, answer);
    }

    asio::awaitable<std::unique_ptr<transaction_impl>> begin_transaction(call_options options) {
        const auto deadline = clock::now() + options.timeout;
        const std::string region = ctx_->primary_region();
        if (region == ctx_->my_region()) {
            if (!ctx_->writes) {
                throw make_error(errc::procedure_error,
                                 "begin_transaction in the primary region needs node_options::writes",
                                 flypg::origin::local);
            }
            auto session = co_await with_deadline(ctx_->writes->begin_on(options.database), deadline);
            if (!session) {
                throw make_error(errc::timeout,
                                 "opening a transaction timed out after " + ms(options.timeout),
                                 flypg::origin::local);
            }
            co_return std::make_unique<local_transaction>(ctx_, std::move(*session), options);
        }
        auto candidates = healthy_in(region);
        if (candidates.empty()) throw no_node(region);
        auto peer = candidates.front();
        // No round trip: statements are pipelined onto the capability the begin call will return.
        auto begin_request = peer->session().beginRequest();
        begin_request.setDatabase(options.database);
        auto begun = begin_request.send();
        co_return std::make_unique<remote_transaction>(ctx_, peer, std::move(begun), options);
    }

  private:
    // fly_rpc's message, then what this node does know: the regions it reaches, and why the peers
    // it cannot use failed (a wrong secret, a refused connection), so the error names its cause.
    flypg::error no_node(const std::string& region) const {
        std::string text = "no node found running in region \"" + region + "\"";
        std::set<std::string> reached;
        for (const auto& [key, conn] : connected_)
            if (conn->healthy && !conn->closed) reached.insert(conn->peer().region);
        text += reached.empty() ? "; this node reaches no peer" : "; it reaches regions " + join(reached);
        std::vector<std::string> failing;
        for (const auto& [key, l] : links_)
            if (!l.last_failure.empty() && !l.self)
                failing.push_back(flypg::detail::log_safe(l.last_failure, 256));
        if (!failing.empty()) {
            constexpr std::size_t shown = 3;
            text += "; failing peers: ";
            for (std::size_t i = 0; i < failing.size() && i < shown; ++i)
                text += (i > 0 ? "; " : "") + failing[i];
            if (failing.size() > shown) text += " (and " + std::to_string(failing.size() - shown) + " more)";
        }
        return make_error(errc::no_node_in_region, text);
    }

    static std::string join(const std::set<std::string>& names) {
        std::string out;
        for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
        return out;
    }

    template <class What>
    void check_size(capnp::MessageSize size, const What& what) const {
        const auto bytes = size.wordCount * 8;
        if (bytes > payload_limit_bytes(*ctx_)) {
            throw make_error(errc::overloaded,
                             what() + ": the request of " + std::to_string(bytes) + " bytes exceeds " +
                                 message_limit_text(*ctx_) + "; nothing was sent");
        }
    }

    asio::awaitable<std::vector<value>> call_local(std::string name,
                                                   std::vector<value> args,
                                                   call_options options,
                                                   clock::time_point deadline) {
        const procedure* fn = ctx_->procedures.find(name);
        if (fn == nullptr) {
            throw make_error(errc::procedure_error,
                             "no procedure named \"" + name + "\" is registered on this node",
                             flypg::origin::local);
        }
        std::optional<std::vector<value>> r;
        try {
            r = co_await with_deadline((*fn)(std::move(args)), deadline);
        } catch (const flypg::error&) {
            throw;
        } catch (const std::exception& e) {
            // Same kind as a remote failure, so callers need not care where it ran.
            throw make_error(errc::procedure_error,
                             "procedure \"" + name + "\" failed: " + e.what(),
                             flypg::origin::local);
        }
        if (!r) {
            throw make_error(
                errc::timeout,
                "procedure \"" + name + "\" timed out after " + ms(options.timeout) + " (run locally)",
                flypg::origin::local);
        }
        co_return std::move(*r);
    }

    // Sends a request to one healthy peer of `region` after another, until one answers or a
    // failure shows the request may have run (then that failure is thrown). `send(peer)` builds
    // and sends the request and returns await_kj()'s outcome; `answer(peer, response)` turns the
    // response into the result, or throws the failure it carries.
    template <class Result, class What, class Send, class Answer>
    asio::awaitable<Result> on_some_peer(const std::string& region,
                                         const What& what,
                                         const call_options& options,
                                         errc timeout_code,
                                         Send send,
                                         Answer answer) {
        std::vector<const peer_connection*> tried;
        std::optional<flypg::error> never_left;
        bool found = false;
        while (auto peer = pick_healthy(region, tried, !options.request_id.empty())) {
            found = true;
            if ((never_left = refusal(*peer, what))) {
                tried.push_back(peer.get());
                continue;
            }
            in_flight_guard guard(*peer);
            // Bytes queued before this request: if no more than these ever reached the kernel, the
            // request provably never left this host.
            const auto start = peer->stream().requested_bytes();
            auto outcome = co_await send(*peer);
            if (outcome.ok()) co_return answer(*peer, *outcome.value);
            never_left = classify_failure(outcome, *peer, start, options, what, timeout_code);
            tried.push_back(peer.get());
        }
        if (!found) throw no_node(region);
        throw *never_left;
    }

    // Why a request must not go to `peer` (it provably never leaves), or nothing.
    template <class What>
    std::optional<flypg::error> refusal(const peer_connection& peer, const What& what) const {
        if (peer.closed) {
            return make_error(
                errc::transport_error,
                what() + ": the connection to " + describe(peer) + " is closed; nothing was sent");
        }
        if (peer.in_flight >= ctx_->max_in_flight) {
            return make_error(errc::overloaded,
                              what() + ": " + std::to_string(peer.in_flight) + " calls to " + describe(peer) +
                                  " are already in flight (limit " + std::to_string(ctx_->max_in_flight) +
                                  "); nothing was sent");
        }
        return std::nullopt;
    }

    // A request sent to `peer` got no response: throws the caller's error, or returns the error
    // proving the request never left (so that another peer may be tried). `start` is the stream's
    // requested_bytes() before the request.
    template <class Outcome, class What>
    flypg::error classify_failure(const Outcome& outcome,
                                  peer_connection& peer,
                                  std::uint64_t start,
                                  const call_options& options,
                                  const What& what,
                                  errc timeout_code) {
        if (outcome.timed_out) {
            throw make_error(timeout_code,
                             what() + " timed out after " + ms(options.timeout) + " waiting for " +
                                 describe(peer) + "; the request was sent and may have run");
        }
        if (outcome.cancelled) {
            throw make_error(errc::cancelled,
                             what() + " was cancelled; the request was sent and may have run");
        }
        const auto& e = *outcome.error;
        const std::string text = e.getDescription().cStr();
        if (e.getType() == kj::Exception::Type::DISCONNECTED) {
            peer.healthy = false;
            if (peer.stream().written_bytes() <= start) {
                return make_error(errc::transport_error,
                                  what() + ": the connection to " + describe(peer) +
                                      " failed before the request was sent: " + text);
            }
            throw make_error(errc::outcome_unknown,
                             what() + ": the connection to " + describe(peer) +
                                 " was lost after the request was sent; it may have run (" + text + ")");
        }
        if (e.getType() == kj::Exception::Type::OVERLOADED) {
            throw make_error(errc::overloaded, what() + ": " + describe(peer) + " is overloaded: " + text);
        }
        throw make_error(errc::procedure_error, what() + " on " + describe(peer) + " failed: " + text);
    }

    // ---- serving --------------------------------------------------------------------------------

    void close_acceptor() {
        std::error_code ignored;
        if (acceptor_.is_open()) acceptor_.close(ignored);
    }

    asio::awaitable<void> accept_loop(std::shared_ptr<node_impl> self) {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
            if (ec) {
                if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
                ctx_->log(log_level::warning, "accept failed: " + ec.message());
                asio::steady_timer pause(io_, std::chrono::milliseconds(50));
                co_await pause.async_wait(use_tuple);
                continue;
            }
            std::error_code peer_ec;
            auto remote = socket.remote_endpoint(peer_ec);
            std::string address = peer_ec ? std::string("unknown peer") : endpoint_text(remote);
            if (in_handshake_ >= ctx_->max_unauthenticated) {
                refuse_over_handshake_limit(address);
                std::error_code ignored;
                socket.close(ignored);
                continue;
            }
            tasks_.spawn(serve(self, std::move(socket), std::move(address)));
        }
    }

    // Logs at most once a second, so that a flood of connections cannot flood the log too.
    void refuse_over_handshake_limit(const std::string& address) {
        ++refused_in_handshake_;
        const auto now = clock::now();
        if (now - refusal_logged_at_ < std::chrono::seconds(1)) return;
        ctx_->log(log_level::warning,
                  "refused the connection from " + address + ": " + std::to_string(in_handshake_) +
                      " connections are in the handshake already "
                      "(node_options::max_unauthenticated_connections); " +
                      std::to_string(refused_in_handshake_) + " refused since the last such line");
        refusal_logged_at_ = now;
        refused_in_handshake_ = 0;
    }

    // Counts a connection as in the handshake until it authenticated or ended.
    class handshake_slot {
      public:
        explicit handshake_slot(std::size_t& count) : count_(&count) { ++count; }
        ~handshake_slot() { release(); }
        handshake_slot(const handshake_slot&) = delete;
        handshake_slot& operator=(const handshake_slot&) = delete;
        void release() noexcept {
            if (count_ != nullptr) --*std::exchange(count_, nullptr);
        }

      private:
        std::size_t* count_;
    };

    asio::awaitable<void> serve(std::shared_ptr<node_impl> self, tcp::socket socket, std::string address) {
        auto& rt = *ctx_->runtime;
        handshake_slot in_handshake(in_handshake_);
        auto conn = std::make_unique<server_connection>(ctx_, std::move(socket), address);
        // Until the handshake succeeds the connection has a deadline; a refused peer is given a
        // moment to read the refusal, then the connection is closed.
        auto first = co_await await_kj(rt,
                                       conn->on_disconnect().exclusiveJoin(conn->on_refused()),
                                       clock::now() + ctx_->handshake_timeout);
        if (first.cancelled && !first.timed_out) co_return;
        if (!conn->state().authenticated) {
            const auto& st = conn->state();
            if (first.timed_out) {
                ctx_->log(log_level::warning,
                          "closing the connection from " + address + ": no handshake within " +
                              ms(ctx_->handshake_timeout));
            } else if (auto tls = conn->tls_failure(); !tls.empty()) {
                ctx_->log(log_level::warning,
                          "refused RPC peer " + address + ": it " + ctx_->tls->handshake_failure_text(tls));
            } else if (!conn->refused_message().empty()) {
                ctx_->log(log_level::warning,
                          "closed the connection from " + address + ": it sent " + conn->refused_message());
            } else if (st.refusal_sent) {
                // Time to read the refusal; then the connection closes.
                co_await await_kj(rt, conn->on_disconnect(), clock::now() + std::chrono::seconds(1));
            } else if (st.hello_done && !st.version_mismatch && st.peer.node_id != ctx_->node_id) {
                // The peer checked this node's proof and left: its secret differs from this one.
                ctx_->log(log_level::warning,
                          "refused RPC peer " + address + " (node " + st.peer.node_id + ", region " +
                              st.peer.region +
                              "): it left the handshake without proving the cluster secret (wrong or missing "
                              "FLYPG_CLUSTER_SECRET on one side)");
            }
            co_return;
        }
        in_handshake.release();
        co_await await_kj(rt, conn->on_disconnect());
        if (auto tls = conn->tls_failure(); !tls.empty()) {
            // A record that fails its check was altered on the path (or the peer is broken).
            ctx_->log(log_level::warning, "closed the connection from " + address + ": TLS: " + tls);
        }
        (void)self;
    }

    // ---- discovery ------------------------------------------------------------------------------

    struct link {
        std::shared_ptr<asio::cancellation_signal> stop;
        std::string source;  // the host name it was resolved from
        bool self = false;
        std::string last_failure;  // why the last attempt failed; empty while connected
    };

    asio::awaitable<void> discovery_loop(std::shared_ptr<node_impl> self) {
        tcp::resolver resolver(io_);
        for (;;) {
            std::map<std::string, std::pair<tcp::endpoint, std::string>> found;
            std::set<std::string> failed_sources;
            auto resolve = [&](const std::string& host, std::uint16_t port) -> asio::awaitable<void> {
                auto [ec, results] = co_await resolver.async_resolve(host, std::to_string(port), use_tuple);
                if (ec) {
                    if (ec == asio::error::operation_aborted) throw std::system_error(ec);
                    failed_sources.insert(host);
                    ctx_->log(log_level::warning,
                              "cannot resolve peer host \"" + host + "\": " + ec.message());
                    co_return;
                }
                for (const auto& r : results) {
                    auto ep = r.endpoint();
                    found.emplace(endpoint_text(ep), std::make_pair(ep, host));
                }
            };
            for (const auto& target : config_.static_peers) co_await resolve(target.host, target.port);
            if (!config_.dns_name.empty()) co_await resolve(config_.dns_name, config_.dns_port);

            const std::string own = endpoint_text(endpoint_);
            for (const auto& [key, entry] : found) {
                if (key == own || links_.contains(key)) continue;
                links_[key] = link{tasks_.spawn(run_link(self, entry.first, key)), entry.second, false};
            }
            for (auto it = links_.begin(); it != links_.end();) {
                const bool gone = !found.contains(it->first) && !failed_sources.contains(it->second.source);
                if (gone) {
                    ctx_->log(log_level::info, "peer " + it->first + " is no longer listed; disconnecting");
                    if (it->second.stop) it->second.stop->emit(asio::cancellation_type::terminal);
                    it = links_.erase(it);
                } else {
                    ++it;
                }
            }
            asio::steady_timer next(io_, config_.resolve_interval);
            co_await next.async_wait(asio::use_awaitable);
        }
    }

    asio::awaitable<void> run_link(std::shared_ptr<node_impl> self, tcp::endpoint endpoint, std::string key) {
        backoff delays(config_.reconnect_min, config_.reconnect_max);
        bool reported = false;
        try {
            for (;;) {
                // Cancellation reported as a value (await_kj) must end the link too.
                if ((co_await asio::this_coro::cancellation_state).cancelled() !=
                    asio::cancellation_type::none) {
                    co_return;
                }
                auto failure = handshake_failure::transport;
                std::string text;
                std::shared_ptr<peer_connection> conn;
                const auto deadline = clock::now() + ctx_->handshake_timeout;
                {
                    tcp::socket socket(io_);
                    asio::steady_timer limit(io_, deadline);
                    auto [order, connect_ec, limit_ec] =
                        co_await asio::experimental::make_parallel_group(
                            socket.async_connect(endpoint, asio::experimental::deferred),
                            limit.async_wait(asio::experimental::deferred))
                            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
                    (void)limit_ec;
                    if (order[0] != 0) {
                        text = "connecting to " + key + " timed out";
                    } else if (connect_ec) {
                        text = "cannot connect to " + key + ": " + connect_ec.message();
                    } else {
                        conn = std::make_shared<peer_connection>(ctx_, std::move(socket), key);
                        failure = co_await conn->handshake(deadline);
                        if (failure != handshake_failure::none) {
                            text = conn->failure_text();
                            conn.reset();
                        }
                    }
                }
                if (auto it = links_.find(key); it != links_.end())
                    it->second.last_failure = conn ? "" : text;
                if (conn) {
                    delays.reset();
                    reported = false;
                    co_await serve_link(conn);
                    delays.reset();
                } else {
                    switch (failure) {
                        case handshake_failure::self:
                            ctx_->log(log_level::debug, text);
                            links_[key].self = true;
                            co_return;
                        case handshake_failure::version_mismatch:
                        case handshake_failure::unauthenticated:
                            ctx_->log(log_level::warning, text);
                            break;
                        default:
                            ctx_->log(reported ? log_level::debug : log_level::info, text);
                            reported = true;
                            break;
                    }
                }
                // A peer that refused this node, or speaks another version, changes only when it
                // is redeployed: retry it slowly.
                const auto delay = failure == handshake_failure::version_mismatch ||
                                           failure == handshake_failure::unauthenticated
                                       ? config_.reconnect_max
                                       : delays.next(rng_);
                asio::steady_timer wait(io_, delay);
                co_await wait.async_wait(asio::use_awaitable);
            }
        } catch (const std::system_error&) {
            // Cancelled: the node stops or the peer is no longer listed.
        }
        (void)self;
    }

    // Keeps `conn` in the registry until it disconnects (or the link is cancelled).
    asio::awaitable<void> serve_link(std::shared_ptr<peer_connection> conn) {
        const std::string key = conn->address();
        connected_[key] = conn;
        registry_changed();
        ctx_->log(log_level::info, "connected to " + describe(*conn));
        struct unregister {
            node_impl& node;
            std::shared_ptr<peer_connection> conn;
            ~unregister() {
                auto it = node.connected_.find(conn->address());
                if (it != node.connected_.end() && it->second == conn) node.connected_.erase(it);
                conn->close();
                node.registry_changed();
            }
        } guard{*this, conn};
        // The heartbeat runs beside this coroutine (a task of its own, so that stopping the node
        // stops it too) and ends with the connection.
        auto beat = tasks_.spawn(heartbeat(conn));
        auto ended = co_await await_kj(*ctx_->runtime, conn->on_disconnect());
        beat->emit(asio::cancellation_type::terminal);
        if (ended.cancelled) throw std::system_error(asio::error::operation_aborted);  // the link is stopped
        ctx_->log(log_level::info, "lost the connection to " + describe(*conn));
    }

    asio::awaitable<void> heartbeat(std::shared_ptr<peer_connection> conn) {
        int misses = 0;
        auto answered_at = clock::now();
        while (!conn->closed) {
            asio::steady_timer wait(io_, config_.heartbeat_interval);
            co_await wait.async_wait(asio::use_awaitable);
            const auto start = clock::now();
            auto pong = co_await await_kj(
                *ctx_->runtime, conn->session().pingRequest().send(), start + config_.heartbeat_interval);
            // await_kj reports cancellation as a value: the loop ends here.
            if (pong.cancelled && !pong.timed_out) co_return;
            if (pong.ok()) {
                answered_at = clock::now();
                conn->last_round_trip =
                    std::chrono::duration_cast<std::chrono::microseconds>(answered_at - start);
                misses = 0;
                if (!conn->healthy && !conn->closed) {
                    conn->healthy = true;
                    ctx_->log(log_level::info, describe(*conn) + " answers again");
                    registry_changed();
                }
            } else if (pong.timed_out) {
                if (++misses >= 2 && conn->healthy) {
                    conn->healthy = false;
                    ctx_->log(log_level::warning, describe(*conn) + " missed two heartbeats; not using it");
                    registry_changed();
                }
                // Closing ends serve_link's wait for the disconnect, and the link dials again.
                if (clock::now() - answered_at >= config_.heartbeat_timeout) {
                    ctx_->log(log_level::warning,
                              describe(*conn) + " answered no heartbeat for " +
                                  ms(config_.heartbeat_timeout) +
                                  "; closing the connection and connecting again");
                    conn->close();
                    co_return;
                }
            }
        }
    }

    void registry_changed() {
        for (auto* w : waiters_) w->cancel();
    }

    asio::io_context& io_;
    std::shared_ptr<node_context> ctx_;
    tcp::acceptor acceptor_;
    tcp::endpoint endpoint_;
    std::size_t in_handshake_ = 0;          // accepted connections not yet authenticated
    std::size_t refused_in_handshake_ = 0;  // refused over the limit since the last log line
    clock::time_point refusal_logged_at_{};
    node_config config_;
    task_group tasks_;
    asio::steady_timer stop_timer_;
    std::mt19937_64 rng_;
    std::map<std::string, link> links_;
    std::map<std::string, std::shared_ptr<peer_connection>> connected_;
    std::list<asio::steady_timer*> waiters_;
    bool running_ = false;
    bool stopped_ = false;
};

}  // namespace detail

// =============================================================================================
// Public API.

namespace {

using detail::env;
using detail::node_config;
using detail::node_context;

asio::ip::address listen_address_for(const node_options& options) {
    std::string text = options.listen_address;
    std::string source = "node_options::listen_address";
    if (text.empty()) {
        if (auto v = env("FLYPG_RPC_ADDRESS")) {
            text = *v;
            source = "FLYPG_RPC_ADDRESS";
        }
    }
    if (text.empty() && env("FLY_APP_NAME")) {
        // Fly puts the machine's private IPv6 (6PN) address in /etc/hosts as fly-local-6pn.
        asio::io_context scratch;
        asio::ip::tcp::resolver resolver(scratch);
        std::error_code ec;
        auto results = resolver.resolve(asio::ip::tcp::v6(), "fly-local-6pn", "0", ec);
        if (ec || results.empty()) {
            throw_error(errc::invalid_argument,
                        "FLY_APP_NAME is set but the host name fly-local-6pn does not resolve (" +
                            ec.message() + "); set FLYPG_RPC_ADDRESS to the address to listen on");
        }
        return results.begin()->endpoint().address();
    }
    if (text.empty()) return asio::ip::make_address("127.0.0.1");
    std::error_code ec;
    auto address = asio::ip::make_address(text, ec);
    if (ec) throw_error(errc::invalid_argument, source + ": \"" + text + "\" is not an IP address");
    return address;
}

std::uint16_t listen_port_for(const node_options& options) {
    if (options.listen_port) return *options.listen_port;
    if (auto v = env("FLYPG_RPC_PORT")) return detail::parse_port(*v, "FLYPG_RPC_PORT");
    return default_port;
}

std::string secret_for(const node_options& options, const std::function<void(const std::string&)>& warn) {
    std::string secret;
    if (options.cluster_secret) {
        secret = *options.cluster_secret;
    } else if (auto v = env("FLYPG_CLUSTER_SECRET")) {
        secret = *v;
    }
    const auto flypg_env = env("FLYPG_ENV");
    const bool development = options.secret == secret_policy::allow_missing ||
                             (flypg_env && (*flypg_env == "dev" || *flypg_env == "development"));
    if (secret.empty()) {
        if (!development) {
            throw_error(
                errc::unauthenticated,
                "FLYPG_CLUSTER_SECRET is not set: refusing to start an RPC node without a cluster secret. "
                "Set the same random value (at least 16 characters) on every node, or set FLYPG_ENV=dev "
                "(node_options::secret = secret_policy::allow_missing) for local development");
        }
        warn("running without a cluster secret (local development): any peer without a secret is accepted");
    } else if (secret.size() < 16 && !development) {
        throw_error(errc::invalid_argument,
                    "the cluster secret is " + std::to_string(secret.size()) +
                        " characters long; use at least 16 random characters");
    }
    return secret;
}

link_security link_for(const node_options& options, const std::string& secret) {
    if (options.link) return *options.link;
    if (auto v = env("FLYPG_RPC_TLS")) {
        if (*v == "off") return link_security::clear;
        if (*v == "psk") return link_security::pre_shared_key;
        if (*v == "certificates") return link_security::certificates;
        throw_error(errc::invalid_argument,
                    "FLYPG_RPC_TLS must be off, psk or certificates (got \"" +
                        flypg::detail::log_safe(*v, 64) + "\")");
    }
    return env("FLY_APP_NAME") || secret.empty() ? link_security::clear : link_security::pre_shared_key;
}

std::shared_ptr<const detail::tls_context> tls_for(const node_options& options, const std::string& secret) {
    auto file = [](const std::string& set, const char* variable) {
        if (!set.empty()) return set;
        return env(variable).value_or(std::string());
    };
    switch (link_for(options, secret)) {
        case link_security::clear:
            return nullptr;
        case link_security::pre_shared_key:
            return detail::tls_context::with_psk(secret);
        case link_security::certificates:
            return detail::tls_context::with_certificates(
                file(options.tls_certificate_file, "FLYPG_RPC_TLS_CERT"),
                file(options.tls_private_key_file, "FLYPG_RPC_TLS_KEY"),
                file(options.tls_ca_file, "FLYPG_RPC_TLS_CA"));
    }
    return nullptr;
}

void check_positive(std::chrono::milliseconds d, const char* name) {
    if (d.count() <= 0)
        throw_error(errc::invalid_argument, std::string("node_options::") + name + " must be positive");
}

}  // namespace

node node::create(asio::io_context& io, node_options options) {
    auto ctx = std::make_shared<node_context>();
    ctx->runtime = detail::kj_runtime::for_current_thread(io);
    ctx->node_id = detail::hex(detail::random_challenge()).substr(0, 24);
    ctx->sink = options.log ? options.log : stderr_log_sink("flypg rpc [" + ctx->node_id + "]");
    ctx->secret = secret_for(options, [&](const std::string& text) { ctx->log(log_level::warning, text); });
    ctx->tls = tls_for(options, ctx->secret);
    ctx->log(log_level::info,
             "links to peers: " + (ctx->tls ? ctx->tls->description() : std::string("clear (no TLS)")));
    ctx->region_override = options.region;
    ctx->primary_override = options.primary_region;
    if (ctx->region_override && ctx->region_override->empty()) {
        throw_error(errc::invalid_argument, "node_options::region is empty");
    }
    if (ctx->primary_override && ctx->primary_override->empty()) {
        throw_error(errc::invalid_argument, "node_options::primary_region is empty");
    }
    ctx->app_version = options.app_version;
    ctx->protocol_version =
        options.advertised_protocol_version != 0 ? options.advertised_protocol_version : protocol_version();
    ctx->procedures = std::move(options.procedures);
    ctx->writes = std::move(options.writes);
    if (options.max_message_bytes < 4096) {
        throw_error(errc::invalid_argument,
                    "node_options::max_message_bytes is " + std::to_string(options.max_message_bytes) +
                        "; it must be at least 4096");
    }
    if (options.max_in_flight_per_peer == 0) {
        throw_error(errc::invalid_argument, "node_options::max_in_flight_per_peer must be at least 1");
    }
    ctx->max_message_bytes = options.max_message_bytes;
    ctx->max_in_flight = options.max_in_flight_per_peer;
    if (options.max_unauthenticated_connections == 0) {
        throw_error(errc::invalid_argument,
                    "node_options::max_unauthenticated_connections must be at least 1");
    }
    ctx->max_unauthenticated = options.max_unauthenticated_connections;
    check_positive(options.handshake_timeout, "handshake_timeout");
    check_positive(options.resolve_interval, "resolve_interval");
    check_positive(options.reconnect_min, "reconnect_min");
    check_positive(options.heartbeat_interval, "heartbeat_interval");
    if (options.heartbeat_timeout < 2 * options.heartbeat_interval) {
        throw_error(errc::invalid_argument,
                    "node_options::heartbeat_timeout (" + std::to_string(options.heartbeat_timeout.count()) +
                        " ms) is below twice heartbeat_interval (" +
                        std::to_string(options.heartbeat_interval.count()) + " ms)");
    }
    if (options.reconnect_max < options.reconnect_min) {
        throw_error(errc::invalid_argument, "node_options::reconnect_max is below reconnect_min");
    }
    ctx->handshake_timeout = options.handshake_timeout;

    const auto address = listen_address_for(options);
    const auto port = listen_port_for(options);
    const std::uint16_t peer_port = port != 0 ? port : default_port;

    node_config config;
    if (options.peers) {
        config.static_peers = detail::parse_peers(*options.peers, peer_port, "node_options::peers");
    } else if (auto v = env("FLYPG_PEERS")) {
        config.static_peers = detail::parse_peers(detail::split_commas(*v), peer_port, "FLYPG_PEERS");
    }
    config.dns_name = options.peer_dns_name;
    if (config.dns_name.empty() && !options.peers && !env("FLYPG_PEERS")) {
        if (auto app = env("FLY_APP_NAME")) config.dns_name = *app + ".internal";
    }
    config.dns_port = peer_port;
    config.resolve_interval = options.resolve_interval;
    config.reconnect_min = options.reconnect_min;
    config.reconnect_max = options.reconnect_max;
    config.heartbeat_interval = options.heartbeat_interval;
    config.heartbeat_timeout = options.heartbeat_timeout;

    asio::ip::tcp::acceptor acceptor(io);
    const asio::ip::tcp::endpoint endpoint(address, port);
    std::error_code ec;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        throw_error(errc::transport_error,
                    "cannot listen on " + detail::endpoint_text(endpoint) + ": " + ec.message());
    }
    auto impl =
        std::make_shared<detail::node_impl>(io, std::move(ctx), std::move(acceptor), std::move(config));
    impl->bind_endpoint();
    return node(std::move(impl));
}

node::node(std::shared_ptr<detail::node_impl> impl) : impl_(std::move(impl)) {}
node::node(node&&) noexcept = default;
node& node::operator=(node&& other) noexcept {
    if (this != &other) {
        if (impl_) impl_->stop();
        impl_ = std::move(other.impl_);
    }
    return *this;
}
node::~node() {
    if (impl_) impl_->stop();
}

asio::awaitable<void> node::run() {
    return impl_->run(impl_);
}
asio::ip::tcp::endpoint node::local_endpoint() const {
    return impl_->local_endpoint();
}
const std::string& node::node_id() const noexcept {
    return impl_->ctx()->node_id;
}
std::string node::my_region() const {
    return impl_->ctx()->my_region();
}
std::string node::primary_region() const {
    return impl_->ctx()->primary_region();
}
bool node::is_primary() const {
    return my_region() == primary_region();
}
std::vector<peer_info> node::peers() const {
    return impl_->peers();
}
bool node::remembers_request_ids(const std::string& region) const {
    bool any = false;
    for (const peer_info& p : impl_->peers()) {
        if (p.region != region || !p.healthy) continue;
        if (!p.remembers_request_ids) return false;
        any = true;
    }
    return any;
}
asio::any_io_executor node::executor() const {
    return impl_->io().get_executor();
}

asio::awaitable<void> node::wait_for_region(std::string region, std::chrono::milliseconds timeout) {
    auto impl = impl_;
    co_await impl->wait_for_region(std::move(region), timeout);
}

// Not coroutines themselves: the implementation's frame (which holds the node alive) is the only
// one a call allocates here.
asio::awaitable<std::vector<value>> node::call_region(std::string region,
                                                      std::string procedure_name,
                                                      std::vector<value> args,
                                                      call_options options) {
    return impl_->call_region(impl_,
                              std::optional<std::string>(std::move(region)),
                              std::move(procedure_name),
                              std::move(args),
                              options);
}

asio::awaitable<std::vector<value>> node::call_primary(std::string procedure_name,
                                                       std::vector<value> args,
                                                       call_options options) {
    return impl_->call_region(impl_, std::nullopt, std::move(procedure_name), std::move(args), options);
}

asio::awaitable<write_result> node::forward_write(std::vector<statement> statements, call_options options) {
    auto impl = impl_;
    co_return co_await impl->forward_write(std::move(statements), options);
}

asio::awaitable<transaction> node::begin_transaction(call_options options) {
    auto impl = impl_;
    co_return transaction(co_await impl->begin_transaction(options));
}

// ---- transaction ---------------------------------------------------------------------------------

transaction::transaction(std::unique_ptr<detail::transaction_impl> impl) : impl_(std::move(impl)) {}
transaction::transaction(transaction&&) noexcept = default;
transaction& transaction::operator=(transaction&&) noexcept = default;
transaction::~transaction() = default;

namespace {
detail::transaction_impl& open(const std::unique_ptr<detail::transaction_impl>& impl) {
    if (!impl) throw_error(errc::invalid_argument, "use of a moved-from transaction");
    return *impl;
}
}  // namespace

asio::awaitable<statement_result> transaction::execute(statement stmt) {
    co_return co_await open(impl_).execute(std::move(stmt));
}

asio::awaitable<std::vector<statement_result>> transaction::execute_pipelined(
    std::vector<statement> statements) {
    co_return co_await open(impl_).execute_pipelined(std::move(statements));
}

asio::awaitable<std::uint64_t> transaction::commit(std::string request_id) {
    co_return co_await open(impl_).commit(std::move(request_id));
}

asio::awaitable<void> transaction::rollback() {
    co_await open(impl_).rollback();
}

bool transaction::is_remote() const noexcept {
    return impl_ && impl_->is_remote();
}

}  // namespace flypg::rpc
