#include "rpc/codec.hpp"

#include <type_traits>
#include <utility>

namespace flypg::rpc::detail {
namespace {

capnp::Text::Reader text_of(const std::string& s) {
    return capnp::Text::Reader(s.data(), s.size());
}

// A word per pointer plus the payload rounded up to words, in bytes.
std::size_t text_size(std::size_t n) noexcept {
    return 8 + ((n + 1 + 7) / 8) * 8;
}

}  // namespace

std::string to_string(capnp::Text::Reader text) {
    return std::string(text.begin(), text.size());
}

void encode(const value& v, wire::Value::Builder out) {
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, null_value>) {
                out.setNull();
            } else if constexpr (std::is_same_v<T, bool>) {
                out.setBool(x);
            } else if constexpr (std::is_same_v<T, std::int16_t>) {
                out.setInt16(x);
            } else if constexpr (std::is_same_v<T, std::int32_t>) {
                out.setInt32(x);
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
                out.setInt64(x);
            } else if constexpr (std::is_same_v<T, double>) {
                out.setFloat64(x);
            } else if constexpr (std::is_same_v<T, std::string>) {
                out.setText(text_of(x));
            } else {
                out.setBytes(capnp::Data::Reader(x.data.data(), x.data.size()));
            }
        },
        v);
}

value decode(wire::Value::Reader in) {
    switch (in.which()) {
        case wire::Value::NULL_:
            return null_value{};
        case wire::Value::BOOL:
            return in.getBool();
        case wire::Value::INT16:
            return in.getInt16();
        case wire::Value::INT32:
            return in.getInt32();
        case wire::Value::INT64:
            return in.getInt64();
        case wire::Value::FLOAT64:
            return in.getFloat64();
        case wire::Value::TEXT:
            return to_string(in.getText());
        case wire::Value::BYTES: {
            auto data = in.getBytes();
            return bytes{std::vector<std::uint8_t>(data.begin(), data.end())};
        }
    }
    throw_error(errc::invalid_argument,
                "received a value of unknown kind " + std::to_string(static_cast<unsigned>(in.which())) +
                    " (a newer protocol revision?)");
}

void encode(const std::vector<value>& values, capnp::List<wire::Value>::Builder out) {
    for (unsigned i = 0; i < values.size(); ++i) encode(values[i], out[i]);
}

std::vector<value> decode(capnp::List<wire::Value>::Reader in) {
    std::vector<value> out;
    out.reserve(in.size());
    for (auto v : in) out.push_back(decode(v));
    return out;
}

void encode(const statement& s, wire::Statement::Builder out) {
    out.setSql(text_of(s.sql));
    encode(s.params, out.initParams(static_cast<unsigned>(s.params.size())));
}

statement decode(wire::Statement::Reader in) {
    return statement{to_string(in.getSql()), decode(in.getParams())};
}

std::vector<statement> decode(capnp::List<wire::Statement>::Reader in) {
    std::vector<statement> out;
    out.reserve(in.size());
    for (auto s : in) out.push_back(decode(s));
    return out;
}

void encode(const statement_result& r, wire::StatementResult::Builder out) {
    auto columns = out.initColumns(static_cast<unsigned>(r.columns.size()));
    for (unsigned i = 0; i < r.columns.size(); ++i) {
        columns[i].setName(text_of(r.columns[i].name));
        columns[i].setTypeOid(r.columns[i].type_oid);
    }
    auto rows = out.initRows(static_cast<unsigned>(r.rows.size()));
    for (unsigned i = 0; i < r.rows.size(); ++i) {
        const auto& row = r.rows[i];
        auto cells = rows[i].initCells(static_cast<unsigned>(row.size()));
        bool any_null = false;
        for (unsigned j = 0; j < row.size(); ++j) {
            if (row[j]) {
                cells.set(j, text_of(*row[j]));
            } else {
                any_null = true;
            }
        }
        if (any_null) {
            auto nulls = rows[i].initNulls(static_cast<unsigned>(row.size()));
            for (unsigned j = 0; j < row.size(); ++j) nulls.set(j, !row[j].has_value());
        }
    }
    out.setAffectedRows(r.affected_rows);
}

statement_result decode(wire::StatementResult::Reader in) {
    statement_result r;
    r.columns.reserve(in.getColumns().size());
    for (auto c : in.getColumns()) r.columns.push_back(column{to_string(c.getName()), c.getTypeOid()});
    r.rows.reserve(in.getRows().size());
    for (auto row : in.getRows()) {
        auto cells = row.getCells();
        auto nulls = row.getNulls();
        if (nulls.size() != 0 && nulls.size() != cells.size()) {
            throw_error(errc::invalid_argument,
                        "received a row with " + std::to_string(cells.size()) + " cells but " +
                            std::to_string(nulls.size()) + " null flags");
        }
        std::vector<std::optional<std::string>> out;
        out.reserve(cells.size());
        for (unsigned j = 0; j < cells.size(); ++j) {
            if (nulls.size() != 0 && nulls[j]) {
                out.emplace_back(std::nullopt);
            } else {
                out.emplace_back(to_string(cells[j]));
            }
        }
        r.rows.push_back(std::move(out));
    }
    r.affected_rows = in.getAffectedRows();
    return r;
}

void encode(const failure& f, wire::Failure::Builder out) {
    out.setKind(f.kind);
    if (!f.sqlstate.empty()) out.setSqlstate(text_of(f.sqlstate));
    out.setMessage(text_of(f.message));
    if (!f.detail.empty()) out.setDetail(text_of(f.detail));
    if (!f.hint.empty()) out.setHint(text_of(f.hint));
}

failure decode(wire::Failure::Reader in) {
    return failure{in.getKind(),
                   to_string(in.getSqlstate()),
                   to_string(in.getMessage()),
                   to_string(in.getDetail()),
                   to_string(in.getHint())};
}

failure failure_from_exception(std::exception_ptr e, wire::Failure::Kind otherwise) {
    failure f;
    f.kind = otherwise;
    try {
        std::rethrow_exception(e);
    } catch (const flypg::error& err) {
        if (err.code().category() == sqlstate_category()) {
            f.kind = wire::Failure::Kind::SQL;
            f.sqlstate = sqlstate_text(err.code());
            f.message = err.diag().server_message.empty() ? err.what() : err.diag().server_message;
            f.detail = err.diag().detail;
            f.hint = err.diag().hint;
        } else {
            if (err.code() == errc::overloaded) f.kind = wire::Failure::Kind::OVERLOADED;
            // The caller sent something the serving side refused before running it: it keeps
            // its meaning (and is not mistaken for a failure of the peer).
            if (err.code() == errc::invalid_argument) f.kind = wire::Failure::Kind::INVALID_ARGUMENT;
            // The serving node cannot tell whether its commit happened: neither can the caller.
            if (err.code() == errc::outcome_unknown) f.kind = wire::Failure::Kind::OUTCOME_UNKNOWN;
            f.message = err.what();
        }
    } catch (const std::system_error& err) {
        f.message = err.what();
    } catch (const std::exception& err) {
        f.message = err.what();
    } catch (...) {
        f.message = "unknown exception";
    }
    return f;
}

flypg::error error_from_failure(const failure& f, const std::string& what, flypg::origin where) {
    diagnostics diag;
    diag.origin = where;
    std::error_code code;
    switch (f.kind) {
        case wire::Failure::Kind::SQL: {
            code = sqlstate(f.sqlstate);
            if (!code || code == errc::invalid_argument) {
                // An SQL failure without a valid SQLSTATE is the peer's bug; keep its text.
                code = errc::procedure_error;
                diag.library_message =
                    what + ": SQL failure with malformed SQLSTATE \"" + f.sqlstate + "\": " + f.message;
            }
            diag.server_message = f.message;
            diag.detail = f.detail;
            diag.hint = f.hint;
            return flypg::error(code, std::move(diag));
        }
        case wire::Failure::Kind::PROCEDURE:
            code = errc::procedure_error;
            break;
        case wire::Failure::Kind::OVERLOADED:
            code = errc::overloaded;
            break;
        case wire::Failure::Kind::UNAUTHENTICATED:
            code = errc::unauthenticated;
            break;
        case wire::Failure::Kind::VERSION_MISMATCH:
            code = errc::version_mismatch;
            break;
        case wire::Failure::Kind::INVALID_ARGUMENT:
            code = errc::invalid_argument;
            break;
        case wire::Failure::Kind::UNKNOWN_PROCEDURE:
            code = errc::procedure_error;
            break;
        case wire::Failure::Kind::UNAVAILABLE:
            code = errc::procedure_error;
            break;
        case wire::Failure::Kind::INTERNAL:
            code = errc::procedure_error;
            break;
        case wire::Failure::Kind::OUTCOME_UNKNOWN:
            code = errc::outcome_unknown;
            break;
        default:
            code = errc::procedure_error;
            break;
    }
    diag.library_message = what + ": " + f.message;
    return flypg::error(code, std::move(diag));
}

std::size_t wire_size(const value& v) noexcept {
    if (const auto* s = std::get_if<std::string>(&v)) return 16 + text_size(s->size());
    if (const auto* b = std::get_if<bytes>(&v)) return 16 + text_size(b->data.size());
    return 16;
}

std::size_t wire_size(const std::vector<value>& values) noexcept {
    std::size_t total = 8;
    for (const auto& v : values) total += wire_size(v);
    return total;
}

std::size_t wire_size(const statement_result& r) noexcept {
    std::size_t total = 32;
    for (const auto& c : r.columns) total += 24 + text_size(c.name.size());
    for (const auto& row : r.rows) {
        total += 24 + row.size() / 8 + 8;
        for (const auto& cell : row) total += cell ? text_size(cell->size()) : 8;
    }
    return total;
}

}  // namespace flypg::rpc::detail
