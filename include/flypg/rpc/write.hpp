// Forwarded writes: statements sent to a node of the primary region, run there on the primary
// database, answered with rows, affected counts and the commit LSN.
//
// The RPC layer does not talk to PostgreSQL itself. A node that serves writes is given a
// `write_executor` (implemented over flypg's PostgreSQL client); the RPC layer carries statements to
// it and results back. SQL failures cross the wire as values (SQLSTATE + message, detail, hint) and
// reach the caller as a flypg::error with the same sqlstate error_code:
//
//     std::vector<flypg::rpc::statement> writes;
//     writes.push_back({"INSERT INTO users(name) VALUES ($1) RETURNING id", {flypg::rpc::value("alice")}});
//     flypg::rpc::write_result r = co_await node.forward_write(std::move(writes));
//     // r.results[0].rows[0][0] == "1", r.commit_lsn: wait for the local replica to replay it.
#pragma once

#include <asio/awaitable.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/rpc/value.hpp"

namespace flypg::rpc {

/// One SQL statement with positional parameters ($1, $2, ...).
///
/// It has constructors (it is not an aggregate) on purpose: g++ 12 destroys a braced aggregate
/// temporary twice when it appears inside a co_await expression, and
/// `co_await tx.execute(statement{"...", {}})` is exactly how it gets used.
struct statement {
    statement() = default;
    statement(std::string sql_text, std::vector<value> parameters = {})
        : sql(std::move(sql_text)), params(std::move(parameters)) {}

    std::string sql;
    std::vector<value> params;
};

/// A result column: its name and PostgreSQL type OID.
struct column {
    std::string name;
    std::uint32_t type_oid = 0;
};

/// What one statement produced. Cells are PostgreSQL's text form; std::nullopt is SQL NULL.
struct statement_result {
    std::vector<column> columns;
    std::vector<std::vector<std::optional<std::string>>> rows;
    std::uint64_t affected_rows = 0;
};

/// A committed write: one result per statement, and the WAL position to wait for on a replica.
struct write_result {
    std::vector<statement_result> results;
    std::uint64_t commit_lsn = 0;
};

/// An interactive transaction on the primary database, as seen by the serving node.
/// Destroying a session that was neither committed nor rolled back must roll it back.
class transaction_session {
  public:
    virtual ~transaction_session() = default;
    /// Runs one statement inside the transaction. SQL failures: throw flypg::error whose code is
    /// flypg::sqlstate(...) and whose diagnostics carry the server's message, detail and hint.
    virtual asio::awaitable<statement_result> execute(statement stmt) = 0;
    /// Commits; returns the LSN a replica must replay to see the transaction (see fly-semantics:
    /// the flush LSN read after a synchronous commit, not the insert LSN).
    virtual asio::awaitable<std::uint64_t> commit() = 0;
    /// commit(), recording `request_id` in the transaction (write_executor::remembers_request_ids
    /// says whether sessions implement it). The default refuses with errc::invalid_argument.
    virtual asio::awaitable<std::uint64_t> commit_once(std::string request_id) {
        (void)request_id;
        throw_error(errc::invalid_argument, "this transaction session cannot record request ids");
        co_return 0;
    }
    virtual asio::awaitable<void> rollback() = 0;
};

/// The database side of forwarded writes, provided by the application on primary-region nodes.
/// Called on the io_context's thread. Errors are reported by throwing flypg::error: a sqlstate code
/// for SQL failures (sent to the caller as such), anything else as a failure of the serving node.
class write_executor {
  public:
    virtual ~write_executor() = default;
    /// Runs `statements` in order as one transaction and commits it.
    virtual asio::awaitable<write_result> execute(std::vector<statement> statements) = 0;
    /// execute() on the database named `database` (call_options::database; empty when the caller
    /// named none). The default ignores the name: an executor that serves several databases
    /// overrides it.
    virtual asio::awaitable<write_result> execute_on(std::string database,
                                                     std::vector<statement> statements) {
        (void)database;
        co_return co_await execute(std::move(statements));
    }
    /// Whether execute_once() really runs a write at most once per id. Peers learn it in the
    /// handshake; a caller sends a write again after a lost answer only to nodes that do.
    virtual bool remembers_request_ids() const noexcept { return false; }
    /// execute_on() at most once per `request_id` (never empty here; see call_options::request_id):
    /// an id seen before answers with the results of the run that committed under it, without
    /// running again. The default cannot remember ids and runs every attempt.
    virtual asio::awaitable<write_result> execute_once(std::string database,
                                                       std::vector<statement> statements,
                                                       std::string request_id) {
        (void)request_id;
        co_return co_await execute_on(std::move(database), std::move(statements));
    }
    /// Opens an interactive transaction.
    virtual asio::awaitable<std::unique_ptr<transaction_session>> begin() = 0;
    /// begin() on the database named `database`; the default ignores the name.
    virtual asio::awaitable<std::unique_ptr<transaction_session>> begin_on(std::string database) {
        (void)database;
        co_return co_await begin();
    }
};

}  // namespace flypg::rpc
