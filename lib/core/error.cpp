#include "flypg/error.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <utility>

namespace flypg {
namespace {

// SQLSTATE characters are [0-9A-Z]: five base-36 digits fit an int, and "00000" packs to 0,
// which std::error_code reads as success, as PostgreSQL does.
constexpr int sqlstate_radix = 36;

int sqlstate_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    return -1;
}

char sqlstate_char(int digit) noexcept {
    return static_cast<char>(digit < 10 ? '0' + digit : 'A' + (digit - 10));
}

std::string unpack_sqlstate(int value) {
    std::string text(5, '0');
    for (int i = 4; i >= 0; --i) {
        text[static_cast<std::size_t>(i)] = sqlstate_char(value % sqlstate_radix);
        value /= sqlstate_radix;
    }
    return text;
}

struct sqlstate_entry {
    std::string_view code;
    std::string_view name;
};

constexpr sqlstate_entry sqlstate_table[] = {
#include "sqlstate_table.inc"
};

class flypg_category_impl final : public std::error_category {
  public:
    const char* name() const noexcept override { return "flypg"; }

    std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
            case errc::invalid_argument:
                return "invalid argument";
            case errc::connect_failed:
                return "could not connect to the database";
            case errc::connection_lost:
                return "the database connection was lost";
            case errc::not_connected:
                return "the connection is closed or broken";
            case errc::timeout:
                return "the operation timed out";
            case errc::cancelled:
                return "the operation was cancelled";
            case errc::protocol_error:
                return "unexpected answer from the database";
            case errc::pool_timeout:
                return "no pooled connection became free in time";
            case errc::pool_closed:
                return "the connection pool is closed";
            case errc::type_mismatch:
                return "the column's type cannot be read as the requested type";
            case errc::null_value:
                return "NULL read into a non-optional value";
            case errc::column_not_found:
                return "no such column";
            case errc::out_of_range:
                return "value or index out of range";
            case errc::malformed_lsn:
                return "malformed LSN";
            case errc::committed_not_replicated:
                return "committed but not yet replicated";
            case errc::not_replicating:
                return "the replica is not replicating";
            case errc::outcome_unknown:
                return "outcome unknown: the request may have run";
            case errc::no_node_in_region:
                return "no node found running in the region";
            case errc::overloaded:
                return "overloaded";
            case errc::unauthenticated:
                return "the peer did not prove the cluster secret";
            case errc::version_mismatch:
                return "the peer speaks another protocol version";
            case errc::transport_error:
                return "RPC transport error";
            case errc::procedure_error:
                return "the remote procedure failed";
            case errc::use_execute_for_writes:
                return "a write was sent to a read operation on a replica; use execute()";
            case errc::pipeline_aborted:
                return "not run: an earlier statement in the same pipeline segment failed";
            case errc::busy:
                return "the connection is already running another operation";
        }
        return "unknown flypg error " + std::to_string(value);
    }

    std::error_condition default_error_condition(int value) const noexcept override { return {value, *this}; }

    bool equivalent(int value, const std::error_condition& cond) const noexcept override;
};

class sqlstate_category_impl final : public std::error_category {
  public:
    const char* name() const noexcept override { return "flypg.sqlstate"; }

    std::string message(int value) const override {
        std::string code = unpack_sqlstate(value);
        std::string_view known = sqlstate_name(code);
        return "SQLSTATE " + code + (known.empty() ? std::string() : " (" + std::string(known) + ")");
    }

    bool equivalent(int value, const std::error_condition& cond) const noexcept override;
};

class condition_category_impl final : public std::error_category {
  public:
    const char* name() const noexcept override { return "flypg.condition"; }

    std::string message(int value) const override {
        switch (static_cast<condition>(value)) {
            case condition::retry_call:
                return "transient failure: retry the call";
            case condition::retry_transaction:
                return "serialization failure: retry the transaction";
            case condition::replica_read_only:
                return "write sent to a read-only replica";
            case condition::outcome_unknown:
                return "the request may have run";
            case condition::connection_error:
                return "connection failure";
        }
        return "unknown flypg condition " + std::to_string(value);
    }
};

const flypg_category_impl flypg_category_instance;
const sqlstate_category_impl sqlstate_category_instance;
const condition_category_impl condition_category_instance;

bool flypg_category_impl::equivalent(int value, const std::error_condition& cond) const noexcept {
    if (cond.category() != condition_category_instance) return false;
    switch (static_cast<condition>(cond.value())) {
        case condition::retry_call:
            return value == int(errc::connection_lost) || value == int(errc::connect_failed) ||
                   value == int(errc::timeout) || value == int(errc::pool_timeout) ||
                   value == int(errc::overloaded) || value == int(errc::transport_error) ||
                   value == int(errc::no_node_in_region);
        case condition::outcome_unknown:
            return value == int(errc::outcome_unknown);
        case condition::connection_error:
            return value == int(errc::connection_lost) || value == int(errc::connect_failed) ||
                   value == int(errc::not_connected);
        case condition::retry_transaction:
        case condition::replica_read_only:
            return false;
    }
    return false;
}

bool sqlstate_category_impl::equivalent(int value, const std::error_condition& cond) const noexcept {
    if (cond.category() != condition_category_instance) return false;
    const int sqlstate_class = value / (sqlstate_radix * sqlstate_radix * sqlstate_radix);
    auto class_of = [](char a, char b) {
        return sqlstate_digit(a) * sqlstate_radix + sqlstate_digit(b);
    };
    switch (static_cast<condition>(cond.value())) {
        case condition::retry_transaction:
            return value == sqlstate("40001").value() || value == sqlstate("40P01").value();
        case condition::replica_read_only:
            return value == sqlstate("25006").value();
        case condition::connection_error:
            return sqlstate_class == class_of('0', '8');
        case condition::retry_call:
            // Connection exceptions, insufficient resources, and an administrator shutting the
            // server down (the restart that a later call will find finished).
            return sqlstate_class == class_of('0', '8') || sqlstate_class == class_of('5', '3') ||
                   value == sqlstate("57P01").value() || value == sqlstate("57P03").value();
        case condition::outcome_unknown:
            return false;
    }
    return false;
}

}  // namespace

const std::error_category& flypg_category() noexcept {
    return flypg_category_instance;
}
const std::error_category& sqlstate_category() noexcept {
    return sqlstate_category_instance;
}
const std::error_category& condition_category() noexcept {
    return condition_category_instance;
}

std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), flypg_category()};
}

std::error_condition make_error_condition(condition c) noexcept {
    return {static_cast<int>(c), condition_category()};
}

std::error_code sqlstate(std::string_view code) noexcept {
    if (code.size() != 5) return errc::invalid_argument;
    int value = 0;
    for (char c : code) {
        const int digit = sqlstate_digit(c);
        if (digit < 0) return errc::invalid_argument;
        value = value * sqlstate_radix + digit;
    }
    if (value == 0) return {};
    return {value, sqlstate_category()};
}

std::string sqlstate_text(const std::error_code& ec) {
    if (ec.category() != sqlstate_category()) return {};
    return unpack_sqlstate(ec.value());
}

std::string_view sqlstate_name(std::string_view code) noexcept {
    const auto* found = std::find_if(std::begin(sqlstate_table),
                                     std::end(sqlstate_table),
                                     [&](const sqlstate_entry& entry) { return entry.code == code; });
    return found == std::end(sqlstate_table) ? std::string_view() : found->name;
}

error::error(std::error_code ec, diagnostics diag)
    : std::system_error(ec, diag.library_message.empty() ? diag.server_message : diag.library_message),
      diag_(std::move(diag)) {}

void throw_error(std::error_code ec, std::string library_message) {
    diagnostics diag;
    diag.library_message = std::move(library_message);
    throw error(ec, std::move(diag));
}

}  // namespace flypg
