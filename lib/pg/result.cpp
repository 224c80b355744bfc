#include <libpq-fe.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "flypg/pg/result.hpp"
#include "pg/result_data.hpp"
#include "pg/type_oids.hpp"

namespace flypg::pg {
namespace detail {

std::error_code error_of(const PGresult* res) noexcept {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state == nullptr) return errc::connection_lost;
    const std::error_code ec = sqlstate(state);
    return ec ? ec : make_error_code(errc::protocol_error);
}

diagnostics diagnostics_of(const PGresult* res) {
    auto field = [&](int code) {
        const char* text = PQresultErrorField(res, code);
        return std::string(text != nullptr ? text : "");
    };
    diagnostics diag;
    diag.server_message = field(PG_DIAG_MESSAGE_PRIMARY);
    diag.detail = field(PG_DIAG_MESSAGE_DETAIL);
    diag.hint = field(PG_DIAG_MESSAGE_HINT);
    if (diag.server_message.empty()) diag.server_message = PQresultErrorMessage(res);
    return diag;
}

std::shared_ptr<const result_data> make_result_data(pgresult_ptr res) {
    auto data = std::make_shared<result_data>();
    switch (PQresultStatus(res.get())) {
        case PGRES_TUPLES_OK:
        case PGRES_SINGLE_TUPLE:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY: {
            const char* affected = PQcmdTuples(res.get());
            std::from_chars(affected, affected + std::strlen(affected), data->affected_rows);
            break;
        }
        case PGRES_PIPELINE_ABORTED:
            data->error = errc::pipeline_aborted;
            data->diag.library_message = "not run: an earlier statement in the same pipeline segment failed";
            break;
        case PGRES_FATAL_ERROR:
        case PGRES_NONFATAL_ERROR:
        case PGRES_BAD_RESPONSE:
            data->error = error_of(res.get());
            data->diag = diagnostics_of(res.get());
            break;
        default:
            data->error = errc::protocol_error;
            data->diag.library_message =
                std::string("unexpected result status ") + PQresStatus(PQresultStatus(res.get()));
            break;
    }
    data->res = std::move(res);
    return data;
}

std::shared_ptr<const result_data> make_error_result(std::error_code ec, std::string library_message) {
    auto data = std::make_shared<result_data>();
    data->error = ec;
    data->diag.library_message = std::move(library_message);
    return data;
}

std::shared_ptr<const result_data> make_result_data(
    const std::vector<column_description>& columns,
    const std::vector<std::vector<std::optional<std::string>>>& rows,
    std::int64_t affected_rows) {
    pgresult_ptr res(PQmakeEmptyPGresult(nullptr, columns.empty() ? PGRES_COMMAND_OK : PGRES_TUPLES_OK));
    if (!res) throw std::bad_alloc();
    std::vector<PGresAttDesc> attrs(columns.size());
    for (std::size_t i = 0; i < columns.size(); ++i) {
        attrs[i] = PGresAttDesc{};
        attrs[i].name = const_cast<char*>(columns[i].name.c_str());  // copied by PQsetResultAttrs
        attrs[i].typid = columns[i].type_oid;
        attrs[i].typlen = -1;
        attrs[i].atttypmod = -1;
    }
    if (!columns.empty() && PQsetResultAttrs(res.get(), static_cast<int>(attrs.size()), attrs.data()) == 0)
        throw std::bad_alloc();
    for (std::size_t r = 0; r < rows.size(); ++r) {
        if (rows[r].size() != columns.size())
            throw_error(errc::protocol_error,
                        "row " + std::to_string(r) + " has " + std::to_string(rows[r].size()) +
                            " cells for " + std::to_string(columns.size()) + " columns");
        for (std::size_t c = 0; c < columns.size(); ++c) {
            const std::optional<std::string>& cell = rows[r][c];
            // PQsetvalue copies the value; a length of -1 stores NULL.
            if (PQsetvalue(res.get(),
                           static_cast<int>(r),
                           static_cast<int>(c),
                           cell ? const_cast<char*>(cell->data()) : nullptr,
                           cell ? static_cast<int>(cell->size()) : -1) == 0)
                throw std::bad_alloc();
        }
    }
    auto data = std::make_shared<result_data>();
    data->res = std::move(res);
    data->affected_rows = affected_rows;
    return data;
}

}  // namespace detail

namespace {

const PGresult* pg(const detail::result_data* data) noexcept {
    return data ? data->res.get() : nullptr;
}

std::size_t column_count(const detail::result_data* data) noexcept {
    const PGresult* res = pg(data);
    return res ? static_cast<std::size_t>(PQnfields(res)) : 0;
}

std::string describe_column(const PGresult* res, std::size_t column) {
    return "column " + std::to_string(column) + " (\"" + PQfname(res, static_cast<int>(column)) + "\", " +
           std::string(type_name(PQftype(res, static_cast<int>(column)))) + ")";
}

[[noreturn]] void throw_conversion(
    errc code, const PGresult* res, std::size_t column, std::string_view target, std::string_view why) {
    throw_error(code,
                describe_column(res, column) + " read as " + std::string(target) + ": " + std::string(why));
}

template <class Int>
Int parse_integer(const PGresult* res, std::size_t column, std::string_view text, std::string_view target) {
    std::int64_t wide = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), wide);
    if (ec == std::errc::result_out_of_range)
        throw_conversion(
            errc::out_of_range, res, column, target, "value " + std::string(text) + " is out of range");
    if (ec != std::errc() || end != text.data() + text.size())
        throw_conversion(
            errc::type_mismatch, res, column, target, "value " + std::string(text) + " is not an integer");
    if (wide < std::numeric_limits<Int>::min() || wide > std::numeric_limits<Int>::max())
        throw_conversion(
            errc::out_of_range, res, column, target, "value " + std::string(text) + " is out of range");
    return static_cast<Int>(wide);
}

bool is_integer_type(std::uint32_t oid) noexcept {
    return oid == oid::int2 || oid == oid::int4 || oid == oid::int8 || oid == oid::oid_type;
}

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::size_t row::size() const noexcept {
    return column_count(data_);
}

bool row::is_null(std::size_t column) const {
    if (column >= size())
        throw_error(
            errc::column_not_found,
            "no column " + std::to_string(column) + " in a row of " + std::to_string(size()) + " columns");
    return PQgetisnull(pg(data_), static_cast<int>(index_), static_cast<int>(column)) != 0;
}

std::string_view row::text(std::size_t column) const {
    if (is_null(column)) return {};
    const PGresult* res = pg(data_);
    return {PQgetvalue(res, static_cast<int>(index_), static_cast<int>(column)),
            static_cast<std::size_t>(PQgetlength(res, static_cast<int>(index_), static_cast<int>(column)))};
}

std::size_t row::index_of(std::string_view name) const {
    const PGresult* res = pg(data_);
    for (std::size_t i = 0; i < size(); ++i)
        if (name == PQfname(res, static_cast<int>(i))) return i;
    throw_error(errc::column_not_found, "no column named \"" + std::string(name) + "\" in the result");
}

namespace {

// Returns the non-NULL text of a field, or throws null_value naming the column.
std::string_view checked_text(const row& r,
                              const PGresult* res,
                              std::size_t column,
                              std::string_view target) {
    if (r.is_null(column)) throw_conversion(errc::null_value, res, column, target, "the value is NULL");
    return r.text(column);
}

}  // namespace

void row::decode(std::size_t column, bool& out) const {
    const PGresult* res = pg(data_);
    const std::string_view text = checked_text(*this, res, column, "bool");
    if (PQftype(res, static_cast<int>(column)) != oid::boolean)
        throw_conversion(errc::type_mismatch, res, column, "bool", "not a boolean column");
    out = text == "t";
}

void row::decode(std::size_t column, std::int16_t& out) const {
    const PGresult* res = pg(data_);
    const std::string_view text = checked_text(*this, res, column, "int16");
    if (!is_integer_type(PQftype(res, static_cast<int>(column))))
        throw_conversion(errc::type_mismatch, res, column, "int16", "not an integer column");
    out = parse_integer<std::int16_t>(res, column, text, "int16");
}

void row::decode(std::size_t column, std::int32_t& out) const {
    const PGresult* res = pg(data_);
    const std::string_view text = checked_text(*this, res, column, "int32");
    if (!is_integer_type(PQftype(res, static_cast<int>(column))))
        throw_conversion(errc::type_mismatch, res, column, "int32", "not an integer column");
    out = parse_integer<std::int32_t>(res, column, text, "int32");
}

void row::decode(std::size_t column, std::int64_t& out) const {
    const PGresult* res = pg(data_);
    const std::string_view text = checked_text(*this, res, column, "int64");
    const std::uint32_t type = PQftype(res, static_cast<int>(column));
    // numeric is accepted for integral values: count(*) is int8, but sum(int8) is numeric.
    if (!is_integer_type(type) && type != oid::numeric)
        throw_conversion(errc::type_mismatch, res, column, "int64", "not an integer column");
    out = parse_integer<std::int64_t>(res, column, text, "int64");
}

void row::decode(std::size_t column, double& out) const {
    const PGresult* res = pg(data_);
    const std::string_view text = checked_text(*this, res, column, "double");
    const std::uint32_t type = PQftype(res, static_cast<int>(column));
    if (type != oid::float4 && type != oid::float8 && type != oid::numeric && !is_integer_type(type))
        throw_conversion(errc::type_mismatch, res, column, "double", "not a numeric column");
    if (text == "NaN") {
        out = std::numeric_limits<double>::quiet_NaN();
    } else if (text == "Infinity") {
        out = std::numeric_limits<double>::infinity();
    } else if (text == "-Infinity") {
        out = -std::numeric_limits<double>::infinity();
    } else {
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
        if (ec != std::errc() || end != text.data() + text.size())
            throw_conversion(
                errc::out_of_range, res, column, "double", "value " + std::string(text) + " does not fit");
    }
}

void row::decode(std::size_t column, std::string& out) const {
    out = std::string(checked_text(*this, pg(data_), column, "string"));
}

void row::decode(std::size_t column, bytes& out) const {
    const PGresult* res = pg(data_);
    const std::string_view text = checked_text(*this, res, column, "bytes");
    if (PQftype(res, static_cast<int>(column)) != oid::bytea)
        throw_conversion(errc::type_mismatch, res, column, "bytes", "not a bytea column");
    // bytea_output is 'hex' since PostgreSQL 9.0: "\x" then two hex digits per byte.
    if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0)
        throw_conversion(errc::protocol_error, res, column, "bytes", "not in bytea hex format");
    out.data.resize((text.size() - 2) / 2);
    for (std::size_t i = 0; i < out.data.size(); ++i) {
        const int high = hex_digit(text[2 + 2 * i]);
        const int low = hex_digit(text[3 + 2 * i]);
        if (high < 0 || low < 0)
            throw_conversion(errc::protocol_error, res, column, "bytes", "bad hex digit");
        out.data[i] = static_cast<std::byte>(high * 16 + low);
    }
}

result::result() : data_(std::make_shared<detail::result_data>()) {}
result::result(std::shared_ptr<const detail::result_data> data) noexcept : data_(std::move(data)) {}
result::~result() = default;
result::result(const result&) = default;
result::result(result&&) noexcept = default;
result& result::operator=(const result&) = default;
result& result::operator=(result&&) noexcept = default;

std::size_t result::size() const noexcept {
    const PGresult* res = pg(data_.get());
    return res ? static_cast<std::size_t>(PQntuples(res)) : 0;
}

std::size_t result::columns() const noexcept {
    return column_count(data_.get());
}

std::string_view result::column_name(std::size_t column) const {
    if (column >= columns()) throw_error(errc::column_not_found, "no column " + std::to_string(column));
    return PQfname(pg(data_.get()), static_cast<int>(column));
}

std::uint32_t result::column_type(std::size_t column) const {
    if (column >= columns()) throw_error(errc::column_not_found, "no column " + std::to_string(column));
    return PQftype(pg(data_.get()), static_cast<int>(column));
}

std::optional<std::size_t> result::find_column(std::string_view name) const noexcept {
    for (std::size_t i = 0; i < columns(); ++i)
        if (name == PQfname(pg(data_.get()), static_cast<int>(i))) return i;
    return std::nullopt;
}

std::int64_t result::affected_rows() const noexcept {
    return data_->affected_rows;
}

std::string_view result::command_tag() const noexcept {
    const PGresult* res = pg(data_.get());
    return res ? PQcmdStatus(const_cast<PGresult*>(res)) : "";
}

std::error_code result::error() const noexcept {
    return data_->error;
}
const diagnostics& result::diag() const noexcept {
    return data_->diag;
}

void result::throw_if_error() const {
    if (data_->error) throw flypg::error(data_->error, data_->diag);
}

row result::at(std::size_t index) const {
    if (index >= size())
        throw_error(errc::out_of_range,
                    "row " + std::to_string(index) + " of a result with " + std::to_string(size()) + " rows");
    return (*this)[index];
}

}  // namespace flypg::pg
