#include "rpc/server.hpp"

// g++ 12 reports std::optional members of the outcome structs below as maybe-uninitialized when
// KJ moves them through kj::_::ExceptionOr (a known false positive of -O2 with std::optional).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <asio/detached.hpp>

#include <exception>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "rpc/codec.hpp"
#include "rpc/kj_bridge.hpp"

namespace flypg::rpc::detail {
namespace {

using Kind = wire::Failure::Kind;

failure make_failure(Kind kind, std::string message) {
    failure f;
    f.kind = kind;
    f.message = std::move(message);
    return f;
}

std::span<const std::uint8_t> bytes_of(capnp::Data::Reader data) {
    return {data.begin(), data.size()};
}

capnp::Data::Reader data_of(std::span<const std::uint8_t> bytes) {
    return {bytes.data(), bytes.size()};
}

std::string describe(const connection_state& s) {
    std::string text = "peer " + s.peer_address;
    if (!s.peer.node_id.empty()) text += " (node " + s.peer.node_id + ", region " + s.peer.region + ")";
    return text;
}

// Decrements the in-flight count when the call's promise is done or dropped.
kj::Promise<void> counted(std::shared_ptr<connection_state> state, kj::Promise<void> promise) {
    ++state->in_flight;
    return promise.attach(kj::defer([state] { --state->in_flight; }));
}

bool at_limit(const connection_state& state) {
    return state.in_flight >= state.ctx->max_in_flight;
}

std::string over_limit_message(const connection_state& state) {
    return "node " + state.ctx->node_id + " already runs " + std::to_string(state.in_flight) +
           " calls for this peer (limit " + std::to_string(state.ctx->max_in_flight) + ")";
}

// ---------------------------------------------------------------------------------------------
// Procedures and writes run as Asio coroutines; their outcome (values or failure) is a plain
// value, copied into the capnp results by a KJ continuation that only runs if the call is still
// wanted. The coroutine never touches capnp objects, which may be gone when it is cancelled.

struct call_outcome {
    std::vector<value> values;
    std::optional<failure> error;
};

asio::awaitable<call_outcome> run_procedure(std::shared_ptr<node_context> ctx,
                                            const procedure* fn,
                                            std::vector<value> args) {
    call_outcome out;
    try {
        out.values = co_await (*fn)(std::move(args));
    } catch (...) {
        out.error = failure_from_exception(std::current_exception(), Kind::PROCEDURE);
    }
    if (!out.error && wire_size(out.values) > payload_limit_bytes(*ctx)) {
        out.error = make_failure(Kind::OVERLOADED,
                                 "the procedure's result of about " + std::to_string(wire_size(out.values)) +
                                     " bytes exceeds " + message_limit_text(*ctx));
    }
    co_return out;
}

struct write_outcome {
    write_result result;
    std::optional<failure> error;
};

asio::awaitable<write_outcome> run_write(std::shared_ptr<node_context> ctx,
                                         std::string database,
                                         std::vector<statement> statements,
                                         std::string request_id) {
    write_outcome out;
    try {
        if (request_id.empty()) {
            out.result = co_await ctx->writes->execute_on(std::move(database), std::move(statements));
        } else {
            out.result = co_await ctx->writes->execute_once(
                std::move(database), std::move(statements), std::move(request_id));
        }
    } catch (...) {
        out.error = failure_from_exception(std::current_exception(), Kind::INTERNAL);
        co_return out;
    }
    std::size_t size = 64;
    for (const auto& r : out.result.results) size += wire_size(r);
    if (size > payload_limit_bytes(*ctx)) {
        out.error = make_failure(Kind::OVERLOADED,
                                 "the write committed (LSN " + std::to_string(out.result.commit_lsn) +
                                     ") but its result of about " + std::to_string(size) + " bytes exceeds " +
                                     message_limit_text(*ctx));
    }
    co_return out;
}

// ---------------------------------------------------------------------------------------------
// Interactive transactions.

/// The serving side of one transaction: the executor's session, opened once, used in order.
struct tx_state {
    std::shared_ptr<node_context> ctx;
    std::string database;
    std::unique_ptr<transaction_session> session;
    std::optional<failure> begin_failure;
    bool finished = false;
    /// A statement's caller gave up (deadline, cancellation) before it was done: the transaction
    /// rolls back as soon as nothing runs on it, and every later operation is refused.
    bool abandoned = false;

    ~tx_state() { roll_back_in_background(); }

    // The session's connection is given back only once the rollback ran. The coroutine owns the
    // session (and keeps the executor's context) until it is done.
    void roll_back_in_background() {
        if (!session || finished) return;
        finished = true;
        detail::roll_back_in_background(ctx, std::move(session), "an abandoned transaction");
    }
};

asio::awaitable<kj_void> open_transaction(std::shared_ptr<tx_state> tx) {
    try {
        tx->session = co_await tx->ctx->writes->begin_on(tx->database);
    } catch (...) {
        tx->begin_failure = failure_from_exception(std::current_exception(), Kind::INTERNAL);
    }
    if (tx->abandoned) tx->roll_back_in_background();
    co_return kj_void{};
}

struct execute_outcome {
    statement_result result;
    std::optional<failure> error;
};

std::optional<failure> unusable(const tx_state& tx) {
    if (tx.begin_failure) return tx.begin_failure;
    if (tx.abandoned)
        return make_failure(
            Kind::INVALID_ARGUMENT,
            "the transaction was rolled back: a statement's caller gave up before it was done");
    if (tx.finished) return make_failure(Kind::INVALID_ARGUMENT, "the transaction is already finished");
    if (!tx.session) return make_failure(Kind::INTERNAL, "the transaction has no session");
    return std::nullopt;
}

asio::awaitable<execute_outcome> tx_execute(std::shared_ptr<tx_state> tx, statement stmt) {
    execute_outcome out;
    if ((out.error = unusable(*tx))) co_return out;
    try {
        out.result = co_await tx->session->execute(std::move(stmt));
    } catch (...) {
        out.error = failure_from_exception(std::current_exception(), Kind::INTERNAL);
    }
    // Cancelled (the statement was cancelled on the server) or given up while it ran.
    if (tx->abandoned) tx->roll_back_in_background();
    if (!out.error && wire_size(out.result) > payload_limit_bytes(*tx->ctx)) {
        out.error = make_failure(Kind::OVERLOADED,
                                 "the statement's result of about " + std::to_string(wire_size(out.result)) +
                                     " bytes exceeds " + message_limit_text(*tx->ctx));
    }
    co_return out;
}

struct commit_outcome {
    std::uint64_t lsn = 0;
    std::optional<failure> error;
};

asio::awaitable<commit_outcome> tx_commit(std::shared_ptr<tx_state> tx, std::string request_id) {
    commit_outcome out;
    if ((out.error = unusable(*tx))) co_return out;
    tx->finished = true;  // a failed COMMIT leaves nothing to roll back
    try {
        // Two statements, not one ?: with a co_await in each branch: g++ 12 miscompiles that.
        if (request_id.empty())
            out.lsn = co_await tx->session->commit();
        else
            out.lsn = co_await tx->session->commit_once(std::move(request_id));
    } catch (...) {
        out.error = failure_from_exception(std::current_exception(), Kind::INTERNAL);
    }
    co_return out;
}

asio::awaitable<commit_outcome> tx_rollback(std::shared_ptr<tx_state> tx) {
    commit_outcome out;
    // Nothing to undo, or the rollback of an abandoned transaction is already under way.
    if (tx->begin_failure || tx->finished || tx->abandoned || !tx->session) co_return out;
    tx->finished = true;
    try {
        co_await tx->session->rollback();
    } catch (...) {
        out.error = failure_from_exception(std::current_exception(), Kind::INTERNAL);
    }
    co_return out;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"

class transaction_server final : public wire::Transaction::Server {
  public:
    transaction_server(std::shared_ptr<connection_state> conn, std::string database)
        : conn_(std::move(conn)), tx_(std::make_shared<tx_state>()) {
        tx_->ctx = conn_->ctx;
        tx_->database = std::move(database);
        if (!tx_->ctx->writes) {
            tx_->begin_failure = make_failure(Kind::UNAVAILABLE,
                                              "node " + tx_->ctx->node_id + " in region " +
                                                  tx_->ctx->my_region() + " has no write executor");
            tail_ = kj::Promise<void>(kj::READY_NOW).fork();
            return;
        }
        // Every operation waits for the previous one: calls arrive in order but would otherwise
        // run concurrently on the session.
        tail_ = to_kj(*conn_->ctx->runtime, open_transaction(tx_)).ignoreResult().fork();
    }

  private:
    // Runs `step` after every earlier operation finished; later operations wait for this one,
    // or for it to be dropped. Dropping the returned promise cancels the step (its coroutine).
    template <class Step>
    auto then_in_order(Step step) {
        auto done = kj::newPromiseAndFulfiller<void>();
        auto finished = std::make_shared<bool>(false);
        auto run = tail_.addBranch().then(std::move(step)).then([finished](auto out) {
            *finished = true;
            return out;
        });
        // The next operation waits for this one and for every one before it, even when this one
        // is dropped while still waiting its turn.
        tail_ =
            tail_.addBranch().then([mine = kj::mv(done.promise)]() mutable { return kj::mv(mine); }).fork();
        return run.attach(kj::defer([tx = tx_, finished, next = std::move(done.fulfiller)]() mutable {
            // Given up before it was done: the transaction cannot be trusted to be in the state
            // its client believes, so it ends here (operations after this one are refused
            // without touching the session, which a cancelled statement may still be using).
            if (!*finished) tx->abandoned = true;
            next->fulfill();
        }));
    }

  protected:
    kj::Promise<void> execute(ExecuteContext context) override {
        statement stmt;
        try {
            stmt = decode(context.getParams().getStatement());
        } catch (const std::exception& e) {
            encode(make_failure(Kind::INVALID_ARGUMENT, e.what()),
                   context.getResults().initResult().initFailure());
            return kj::READY_NOW;
        }
        context.releaseParams();
        // A caller that gives up (its deadline) cancels the statement on the server, and the
        // transaction rolls back.
        context.allowCancellation();
        auto* rt = conn_->ctx->runtime.get();
        auto run = then_in_order([rt, tx = tx_, s = std::move(stmt)]() mutable {
            return to_kj(*rt, tx_execute(tx, std::move(s)));
        });
        return counted(conn_, run.then([context](execute_outcome out) mutable {
            auto result = context.getResults().initResult();
            if (out.error) {
                encode(*out.error, result.initFailure());
            } else {
                encode(out.result, result.initResult());
            }
        }));
    }

    kj::Promise<void> commit(CommitContext context) override {
        auto* rt = conn_->ctx->runtime.get();
        std::string request_id = to_string(context.getParams().getRequestId());
        if (request_id.size() > max_request_id_bytes) {
            encode(make_failure(Kind::INVALID_ARGUMENT,
                                "the request id is " + std::to_string(request_id.size()) +
                                    " bytes (at most " + std::to_string(max_request_id_bytes) + ")"),
                   context.getResults().initResult().initFailure());
            return kj::READY_NOW;
        }
        context.releaseParams();
        auto run = then_in_order([rt, tx = tx_, id = std::move(request_id)]() mutable {
            return to_kj(*rt, tx_commit(tx, std::move(id)));
        });
        return counted(conn_, run.then([context](commit_outcome out) mutable {
            auto result = context.getResults().initResult();
            if (out.error) {
                encode(*out.error, result.initFailure());
            } else {
                result.setCommitLsn(out.lsn);
            }
        }));
    }

    kj::Promise<void> rollback(RollbackContext context) override {
        auto* rt = conn_->ctx->runtime.get();
        auto run = then_in_order([rt, tx = tx_]() { return to_kj(*rt, tx_rollback(tx)); });
        return counted(conn_, run.then([context](commit_outcome out) mutable {
            auto result = context.getResults().initResult();
            if (out.error) {
                encode(*out.error, result.initFailure());
            } else {
                result.setDone();
            }
        }));
    }

  private:
    std::shared_ptr<connection_state> conn_;
    std::shared_ptr<tx_state> tx_;
    kj::ForkedPromise<void> tail_ = nullptr;
};

class session_server final : public wire::Session::Server {
  public:
    explicit session_server(std::shared_ptr<connection_state> conn) : conn_(std::move(conn)) {}

  protected:
    kj::Promise<void> identity(IdentityContext context) override {
        conn_->ctx->fill(context.getResults().initIdentity());
        return kj::READY_NOW;
    }

    kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }

    kj::Promise<void> call(CallContext context) override {
        auto params = context.getParams();
        auto name = to_string(params.getProcedure());
        auto result = context.getResults().initResult();
        if (at_limit(*conn_)) {
            encode(make_failure(Kind::OVERLOADED, over_limit_message(*conn_)), result.initFailure());
            return kj::READY_NOW;
        }
        const procedure* fn = conn_->ctx->procedures.find(name);
        if (fn == nullptr) {
            encode(make_failure(
                       Kind::UNKNOWN_PROCEDURE,
                       "no procedure named \"" + name + "\" is registered on node " + conn_->ctx->node_id),
                   result.initFailure());
            return kj::READY_NOW;
        }
        std::vector<value> args;
        try {
            args = decode(params.getArgs());
        } catch (const std::exception& e) {
            encode(make_failure(Kind::INVALID_ARGUMENT, e.what()), result.initFailure());
            return kj::READY_NOW;
        }
        context.releaseParams();
        // A caller that gives up (deadline, cancellation) cancels the procedure's coroutine.
        context.allowCancellation();
        auto run = to_kj(*conn_->ctx->runtime, run_procedure(conn_->ctx, fn, std::move(args)));
        return counted(conn_, run.then([context](call_outcome out) mutable {
            auto r = context.getResults().getResult();
            if (out.error) {
                encode(*out.error, r.initFailure());
            } else {
                encode(out.values, r.initValues(static_cast<unsigned>(out.values.size())));
            }
        }));
    }

    kj::Promise<void> write(WriteContext context) override {
        auto result = context.getResults().initResult();
        if (!conn_->ctx->writes) {
            encode(make_failure(Kind::UNAVAILABLE,
                                "node " + conn_->ctx->node_id + " in region " + conn_->ctx->my_region() +
                                    " has no write executor"),
                   result.initFailure());
            return kj::READY_NOW;
        }
        if (at_limit(*conn_)) {
            encode(make_failure(Kind::OVERLOADED, over_limit_message(*conn_)), result.initFailure());
            return kj::READY_NOW;
        }
        std::vector<statement> statements;
        std::string database;
        std::string request_id;
        try {
            statements = decode(context.getParams().getStatements());
            database = to_string(context.getParams().getDatabase());
            request_id = to_string(context.getParams().getRequestId());
            if (request_id.size() > max_request_id_bytes)
                throw std::invalid_argument("the request id is " + std::to_string(request_id.size()) +
                                            " bytes (at most " + std::to_string(max_request_id_bytes) + ")");
        } catch (const std::exception& e) {
            encode(make_failure(Kind::INVALID_ARGUMENT, e.what()), result.initFailure());
            return kj::READY_NOW;
        }
        context.releaseParams();
        // The executor's transaction is cancelled (rolled back unless it already committed) when
        // the caller gives up; the caller reports that the outcome is unknown.
        context.allowCancellation();
        auto run =
            to_kj(*conn_->ctx->runtime,
                  run_write(conn_->ctx, std::move(database), std::move(statements), std::move(request_id)));
        return counted(conn_, run.then([context](write_outcome out) mutable {
            auto r = context.getResults().getResult();
            if (out.error) {
                encode(*out.error, r.initFailure());
                return;
            }
            auto committed = r.initCommitted();
            committed.setCommitLsn(out.result.commit_lsn);
            auto results = committed.initResults(static_cast<unsigned>(out.result.results.size()));
            for (unsigned i = 0; i < out.result.results.size(); ++i)
                encode(out.result.results[i], results[i]);
        }));
    }

    kj::Promise<void> begin(BeginContext context) override {
        // Without an executor, every operation on the transaction reports it (as a value).
        std::string database = to_string(context.getParams().getDatabase());
        context.getResults().setTransaction(kj::heap<transaction_server>(conn_, std::move(database)));
        return kj::READY_NOW;
    }

  private:
    std::shared_ptr<connection_state> conn_;
};

class bootstrap_server final : public wire::Bootstrap::Server {
  public:
    explicit bootstrap_server(std::shared_ptr<connection_state> conn) : conn_(std::move(conn)) {}

  protected:
    kj::Promise<void> hello(HelloContext context) override {
        auto& s = *conn_;
        if (s.hello_done) return refuse_hello("it sent hello twice");
        s.hello_done = true;
        auto params = context.getParams();
        auto theirs = params.getChallenge();
        if (theirs.size() != s.client_challenge.size())
            return refuse_hello("its challenge is " + std::to_string(theirs.size()) + " bytes, not 32");
        identity claimed = decode(params.getIdentity());
        if (auto problem = identity_problem(claimed); !problem.empty()) return refuse_hello(problem);
        std::copy(theirs.begin(), theirs.end(), s.client_challenge.begin());
        s.peer = std::move(claimed);
        s.server_challenge = random_challenge();
        if (s.peer.protocol_version != s.ctx->protocol_version) {
            s.version_mismatch = true;
            s.ctx->log(log_level::warning,
                       "skipping " + describe(s) + ": it speaks protocol version " +
                           std::to_string(s.peer.protocol_version) + ", this node speaks " +
                           std::to_string(s.ctx->protocol_version));
        }
        auto results = context.getResults();
        s.ctx->fill(results.initIdentity());
        results.setChallenge(data_of(s.server_challenge));
        auto p = make_proof(s.ctx->secret, server_proof_label, s.client_challenge, s.server_challenge);
        results.setProof(data_of(p));
        return kj::READY_NOW;
    }

    kj::Promise<void> authenticate(AuthenticateContext context) override {
        auto& s = *conn_;
        auto result = context.getResults().initResult();
        if (!s.hello_done || s.auth_attempted) {
            s.ctx->log(log_level::warning,
                       "refused RPC " + describe(s) + ": it sent authenticate " +
                           (s.hello_done ? "twice" : "before hello"));
            refuse(
                make_failure(Kind::UNAUTHENTICATED, "the handshake allows one authenticate() after hello()"),
                result);
            return kj::READY_NOW;
        }
        s.auth_attempted = true;
        if (s.version_mismatch) {
            refuse(
                make_failure(Kind::VERSION_MISMATCH,
                             "this node speaks protocol version " + std::to_string(s.ctx->protocol_version) +
                                 ", the peer " + std::to_string(s.peer.protocol_version)),
                result);
            return kj::READY_NOW;
        }
        auto expected = make_proof(s.ctx->secret, client_proof_label, s.server_challenge, s.client_challenge);
        if (!proofs_equal(expected, bytes_of(context.getParams().getProof()))) {
            s.ctx->log(log_level::warning,
                       "refused RPC " + describe(s) +
                           ": it did not prove the cluster secret (wrong or missing FLYPG_CLUSTER_SECRET)");
            refuse(make_failure(Kind::UNAUTHENTICATED, "the peer did not prove the cluster secret"), result);
            return kj::READY_NOW;
        }
        s.authenticated = true;
        s.guard->lift();  // from now on the message limit is max_message_bytes (capnp's own check)
        s.ctx->log(log_level::info, "authenticated " + describe(s));
        result.setSession(kj::heap<session_server>(conn_));
        return kj::READY_NOW;
    }

  private:
    void refuse(const failure& f, wire::AuthResult::Builder result) {
        encode(f, result.initFailure());
        mark_refused();
    }

    // A hello that cannot be accepted: logged without the peer's own words, answered with an
    // error, and the connection is closed soon after.
    kj::Promise<void> refuse_hello(const std::string& problem) {
        conn_->ctx->log(log_level::warning, "refused RPC peer " + conn_->peer_address + ": " + problem);
        mark_refused();
        return kj::Exception(
            kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str("hello refused: ", problem));
    }

    void mark_refused() {
        conn_->refusal_sent = true;
        if (conn_->refused && conn_->refused->isWaiting()) conn_->refused->fulfill();
    }

    std::shared_ptr<connection_state> conn_;
};

#pragma GCC diagnostic pop

}  // namespace

server_connection::server_connection(std::shared_ptr<node_context> ctx,
                                     asio::ip::tcp::socket socket,
                                     std::string peer_address)
    : state_(std::make_shared<connection_state>()),
      refused_(nullptr),
      stream_(std::move(socket),
              state_->guard = std::make_shared<frame_guard>(handshake_message_limit),
              make_tls_session(ctx->tls, tls_role::server)),
      network_(stream_, capnp::rpc::twoparty::Side::SERVER, ctx->reader_options()),
      rpc_(capnp::makeRpcServer(network_, kj::heap<bootstrap_server>(state_))) {
    state_->ctx = std::move(ctx);
    state_->peer_address = std::move(peer_address);
    auto paf = kj::newPromiseAndFulfiller<void>();
    state_->refused = std::move(paf.fulfiller);
    refused_ = paf.promise.fork();
    rpc_.setFlowLimit(state_->ctx->flow_limit_words());
}

server_connection::~server_connection() {
    // Capabilities handed out may outlive the connection briefly; they must not keep a fulfiller
    // that points into this connection's promise.
    state_->refused = nullptr;
}

}  // namespace flypg::rpc::detail
