// Conversions between flypg's C++ types and the generated protocol types (schema/flypg.capnp),
// and between failures-as-values and flypg::error.
#pragma once

#include <exception>
#include <string>
#include <vector>

#include "flypg.capnp.h"
#include "flypg/error.hpp"
#include "flypg/rpc/value.hpp"
#include "flypg/rpc/write.hpp"

namespace flypg::rpc::detail {

std::string to_string(capnp::Text::Reader text);

void encode(const value& v, wire::Value::Builder out);
/// Throws flypg::error (invalid_argument) for a value kind this build does not know.
value decode(wire::Value::Reader in);

void encode(const std::vector<value>& values, capnp::List<wire::Value>::Builder out);
std::vector<value> decode(capnp::List<wire::Value>::Reader in);

void encode(const statement& s, wire::Statement::Builder out);
statement decode(wire::Statement::Reader in);
std::vector<statement> decode(capnp::List<wire::Statement>::Reader in);

void encode(const statement_result& r, wire::StatementResult::Builder out);
statement_result decode(wire::StatementResult::Reader in);

/// A failure as the protocol carries it.
struct failure {
    wire::Failure::Kind kind = wire::Failure::Kind::INTERNAL;
    std::string sqlstate;
    std::string message;
    std::string detail;
    std::string hint;
};

void encode(const failure& f, wire::Failure::Builder out);
failure decode(wire::Failure::Reader in);

/// Classifies an exception thrown by a procedure or a write_executor: a flypg::error with a
/// sqlstate code becomes kind sql (with its diagnostics); errc::overloaded stays overloaded;
/// anything else becomes `otherwise` with the exception's text.
failure failure_from_exception(std::exception_ptr e, wire::Failure::Kind otherwise);

/// The flypg::error a caller sees for a failure received from a peer. `what` names the operation
/// and the peer, for the library message.
flypg::error error_from_failure(const failure& f, const std::string& what, flypg::origin where);

/// Rough size on the wire, for limits checked before building a message (never below the truth
/// by more than a few words per element).
std::size_t wire_size(const value& v) noexcept;
std::size_t wire_size(const std::vector<value>& values) noexcept;
std::size_t wire_size(const statement_result& r) noexcept;

}  // namespace flypg::rpc::detail
