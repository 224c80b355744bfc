// flypg's errors: one std::error_code space for library failures and PostgreSQL SQLSTATEs.
//
// Library failures live in the "flypg" category (flypg::errc). PostgreSQL errors live in the
// "flypg.sqlstate" category, whose value packs the five-character SQLSTATE, so a 23505 raised on
// the primary reaches a caller in another region as the same error_code. Conditions
// (flypg::condition) let callers ask "should I retry?" without listing codes:
//
//     catch (const flypg::error& e) {
//         if (e.code() == flypg::sqlstate("23505")) { /* duplicate key */ }
//         if (e.code() == flypg::condition::retry_transaction) { /* run the transaction again */ }
//         log(e.diag().server_message);
//     }
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace flypg {

/// Failures raised by flypg itself (not by the PostgreSQL server).
enum class errc {
    invalid_argument = 1,      ///< Bad input; diagnostics name it.
    connect_failed,            ///< Could not establish a connection.
    connection_lost,           ///< The connection broke during an operation.
    not_connected,             ///< Operation on a closed or broken connection.
    timeout,                   ///< The per-operation deadline passed.
    cancelled,                 ///< The operation was cancelled through its cancellation slot.
    protocol_error,            ///< The server or libpq answered something unexpected.
    pool_timeout,              ///< No pooled connection became free before the deadline.
    pool_closed,               ///< The pool was shut down.
    type_mismatch,             ///< A value was read as a type its column cannot convert to.
    null_value,                ///< A NULL was read into a non-optional type.
    column_not_found,          ///< No column with that name or index.
    out_of_range,              ///< Row index, or a value outside the target type's range.
    malformed_lsn,             ///< Text that is not an LSN of the form X/X.
    committed_not_replicated,  ///< The write committed but the replica had not replayed it in time.
    not_replicating,           ///< The replica is not a standby (primary or promoted).
    outcome_unknown,           ///< A forwarded request may or may not have run.
    no_node_in_region,         ///< No node is known in the target region.
    overloaded,                ///< A limit was hit (in-flight calls, message size).
    unauthenticated,           ///< The peer did not prove it holds the cluster secret.
    version_mismatch,          ///< The peer speaks another protocol version.
    transport_error,           ///< The RPC transport failed before the request was sent.
    procedure_error,           ///< A named remote procedure failed.
    use_execute_for_writes,    ///< A write was sent to a read operation on a replica.
    pipeline_aborted,          ///< Not run: an earlier statement of its pipeline segment failed.
    busy,                      ///< The connection is already running another operation.
};

/// Conditions that group codes by what a caller should do.
enum class condition {
    retry_call = 1,     ///< Transient: the same call may succeed if retried (connection, timeout, load).
    retry_transaction,  ///< Serialization failure or deadlock: run the whole transaction again.
    replica_read_only,  ///< A write reached a read-only replica (SQLSTATE 25006).
    outcome_unknown,    ///< The request may have run; check before retrying.
    connection_error,   ///< Any connection-level failure, local or SQLSTATE class 08.
};

/// The category of flypg::errc, named "flypg".
const std::error_category& flypg_category() noexcept;
/// The category of PostgreSQL SQLSTATEs, named "flypg.sqlstate".
const std::error_category& sqlstate_category() noexcept;
/// The category of flypg::condition, named "flypg.condition".
const std::error_category& condition_category() noexcept;

std::error_code make_error_code(errc e) noexcept;
std::error_condition make_error_condition(condition c) noexcept;

/// The error_code of a five-character SQLSTATE such as "23505". Text that is not five characters
/// of [0-9A-Z] gives errc::invalid_argument; "00000" (success) gives an empty error_code.
std::error_code sqlstate(std::string_view code) noexcept;

/// The five-character SQLSTATE of an error_code in the sqlstate category, else "".
std::string sqlstate_text(const std::error_code& ec);

/// PostgreSQL's name for a SQLSTATE ("unique_violation" for "23505"), or "" when unknown.
std::string_view sqlstate_name(std::string_view code) noexcept;

/// Where an error was raised.
enum class origin {
    local,    ///< On this node: the local database or the library itself.
    primary,  ///< On a primary-region node, reached over RPC.
    rpc,      ///< In the RPC transport between the two.
};

/// Server text kept apart from library text. Server fields come verbatim from PostgreSQL.
struct diagnostics {
    std::string server_message;   ///< PostgreSQL's primary message, if any.
    std::string detail;           ///< PostgreSQL's DETAIL, if any.
    std::string hint;             ///< PostgreSQL's HINT, if any.
    std::string library_message;  ///< flypg's own explanation (names the bad input, the operation).
    flypg::origin origin = origin::local;
};

/// What flypg throws with use_awaitable: a std::system_error that also carries diagnostics.
class error : public std::system_error {
  public:
    error(std::error_code ec, diagnostics diag);
    const diagnostics& diag() const noexcept { return diag_; }

  private:
    diagnostics diag_;
};

/// Throws flypg::error with the given code and a library message.
[[noreturn]] void throw_error(std::error_code ec, std::string library_message);

}  // namespace flypg

namespace std {
template <>
struct is_error_code_enum<flypg::errc> : true_type {};
template <>
struct is_error_condition_enum<flypg::condition> : true_type {};
}  // namespace std
