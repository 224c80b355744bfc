// Statement builders: quoted names, bound values (see flypg/sql.hpp).
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/sql.hpp"

namespace flypg::sql {
namespace {

// Builds the message by appending (operator+ on temporaries trips g++ 12's -Warray-bounds at -O2).
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    std::string message;
    (message.append(std::string_view(parts)), ...);
    throw_error(errc::invalid_argument, std::move(message));
}

// A name as it may appear in a message: NUL bytes made visible.
std::string printable(std::string_view name) {
    std::string text;
    for (char c : name) {
        if (c == '\0')
            text += "\\0";
        else
            text += c;
    }
    return text;
}

std::string quote_one(std::string_view name, std::string_view what) {
    if (name.empty()) fail("empty ", what, " name");
    if (name.find('\0') != std::string_view::npos)
        fail(what, " name \"", printable(name), "\" contains a NUL byte");
    if (name.size() > max_identifier_bytes)
        fail(what,
             " name \"",
             name,
             "\" is longer than ",
             std::to_string(max_identifier_bytes),
             " bytes (PostgreSQL would truncate it)");
    std::string quoted = "\"";
    for (char c : name) {
        if (c == '"') quoted += '"';
        quoted += c;
    }
    return quoted + '"';
}

std::string quote_table(const qualified_name& table) {
    if (table.schema.empty()) return quote_one(table.name, "table");
    return quote_one(table.schema, "schema") + "." + quote_one(table.name, "table");
}

std::string quote_column(std::string_view column) {
    return quote_one(column, "column");
}

void check_unique(const std::vector<std::string>& columns) {
    for (std::size_t i = 0; i < columns.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (columns[i] == columns[j]) fail("column \"", printable(columns[i]), "\" appears twice");
}

std::vector<std::string> names_of(const column_values& values) {
    std::vector<std::string> names;
    names.reserve(values.size());
    for (const auto& entry : values) names.push_back(entry.first);
    check_unique(names);
    return names;
}

void check_parameter_count(std::size_t count, std::string_view operation) {
    if (count > max_parameters)
        fail(operation,
             " needs ",
             std::to_string(count),
             " parameters; PostgreSQL allows at most ",
             std::to_string(max_parameters),
             " in one statement");
}

// Appends "$n" for the next parameter and moves the value into the statement.
void bind(pg::statement& statement, pg::param value) {
    statement.params.push_back(std::move(value));
    statement.sql += '$';
    statement.sql += std::to_string(statement.params.size());
}

// "a" = $1, "b" = $2 (separator ", ") or "k1" = $1 AND "k2" = $2 (separator " AND ").
void append_assignments(pg::statement& statement, column_values values, std::string_view separator) {
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i > 0) statement.sql += separator;
        statement.sql += quote_column(values[i].first);
        statement.sql += " = ";
        bind(statement, std::move(values[i].second));
    }
}

void append_key(pg::statement& statement, column_values key, std::string_view operation) {
    if (key.empty()) fail(operation, ": no key columns");
    (void)names_of(key);
    for (const auto& [column, value] : key)
        if (value.is_null())
            fail(operation,
                 ": key column \"",
                 printable(column),
                 "\" is NULL, which equals nothing (use a where filter with IS NULL)");
    statement.sql += " WHERE ";
    append_assignments(statement, std::move(key), " AND ");
}

void append_filter(pg::statement& statement, where filter) {
    if (filter.sql.empty()) {
        if (!filter.params.empty())
            fail("a where filter without SQL has ", std::to_string(filter.params.size()), " parameters");
        return;
    }
    statement.sql += " WHERE ";
    statement.sql += renumber_parameters(filter.sql, filter.params.size(), statement.params.size());
    for (pg::param& value : filter.params) statement.params.push_back(std::move(value));
}

std::string column_list(const std::vector<std::string>& columns) {
    std::string list = "(";
    for (std::size_t i = 0; i < columns.size(); ++i) {
        if (i > 0) list += ", ";
        list += quote_column(columns[i]);
    }
    return list + ")";
}

bool is_identifier_char(char c) {
    const auto byte = static_cast<unsigned char>(c);
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || byte >= 0x80;
}

bool is_identifier_start(char c) {
    return is_identifier_char(c) && c != '$' && !(c >= '0' && c <= '9');
}

}  // namespace

std::string quote_identifier(const qualified_name& name) {
    if (name.schema.empty()) return quote_one(name.name, "identifier");
    return quote_one(name.schema, "schema") + "." + quote_one(name.name, "identifier");
}

std::string quote_identifier(std::string_view schema, std::string_view name) {
    return quote_one(schema, "schema") + "." + quote_one(name, "identifier");
}

std::string renumber_parameters(std::string_view sql, std::size_t parameter_count, std::size_t offset) {
    std::string out;
    out.reserve(sql.size() + 16);
    std::size_t i = 0;
    auto copy_until = [&](std::string_view terminator, std::string_view what) {
        const std::size_t end = sql.find(terminator, i);
        if (end == std::string_view::npos) fail("unterminated ", what, " in where filter \"", sql, "\"");
        out.append(sql.substr(i, end + terminator.size() - i));
        i = end + terminator.size();
    };
    while (i < sql.size()) {
        const char c = sql[i];
        const bool after_identifier = i > 0 && is_identifier_char(sql[i - 1]);
        if (c == '\'') {
            // '...' with '' inside; E'...' (the E was copied already) also allows backslash escapes.
            const bool escapes = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                                 !(i > 1 && is_identifier_char(sql[i - 2]));
            std::size_t j = i + 1;
            for (;; ++j) {
                if (j >= sql.size()) fail("unterminated string literal in where filter \"", sql, "\"");
                if (escapes && sql[j] == '\\') {
                    ++j;
                } else if (sql[j] == '\'') {
                    if (j + 1 < sql.size() && sql[j + 1] == '\'')
                        ++j;
                    else
                        break;
                }
            }
            out.append(sql.substr(i, j + 1 - i));
            i = j + 1;
        } else if (c == '"') {
            std::size_t j = i + 1;
            for (;; ++j) {
                if (j >= sql.size()) fail("unterminated quoted identifier in where filter \"", sql, "\"");
                if (sql[j] == '"') {
                    if (j + 1 < sql.size() && sql[j + 1] == '"')
                        ++j;
                    else
                        break;
                }
            }
            out.append(sql.substr(i, j + 1 - i));
            i = j + 1;
        } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
            const std::size_t end = sql.find('\n', i);
            const std::size_t stop = end == std::string_view::npos ? sql.size() : end;
            out.append(sql.substr(i, stop - i));
            i = stop;
        } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
            // Block comments nest in PostgreSQL.
            std::size_t depth = 0;
            std::size_t j = i;
            for (;;) {
                if (j + 1 >= sql.size()) fail("unterminated comment in where filter \"", sql, "\"");
                if (sql[j] == '/' && sql[j + 1] == '*') {
                    ++depth;
                    j += 2;
                } else if (sql[j] == '*' && sql[j + 1] == '/') {
                    j += 2;
                    if (--depth == 0) break;
                } else {
                    ++j;
                }
            }
            out.append(sql.substr(i, j - i));
            i = j;
        } else if (c == '$' && !after_identifier && i + 1 < sql.size() && sql[i + 1] >= '0' &&
                   sql[i + 1] <= '9') {
            std::size_t j = i + 1;
            std::size_t number = 0;
            while (j < sql.size() && sql[j] >= '0' && sql[j] <= '9') {
                number = std::min<std::size_t>(number * 10 + static_cast<std::size_t>(sql[j] - '0'),
                                               max_parameters + 1);
                ++j;
            }
            if (number == 0 || number > parameter_count)
                fail("where filter \"",
                     sql,
                     "\" refers to ",
                     sql.substr(i, j - i),
                     " but has ",
                     std::to_string(parameter_count),
                     " parameters");
            out += '$';
            out += std::to_string(number + offset);
            i = j;
        } else if (c == '$' && !after_identifier) {
            // A dollar quote: $$ or $tag$ ... the same tag again.
            std::size_t j = i + 1;
            if (j < sql.size() && is_identifier_start(sql[j]))
                while (j < sql.size() && is_identifier_char(sql[j]) && sql[j] != '$') ++j;
            if (j < sql.size() && sql[j] == '$') {
                const std::string_view tag = sql.substr(i, j + 1 - i);
                out.append(tag);
                i = j + 1;
                copy_until(tag, "dollar-quoted string");
            } else {
                out += c;
                ++i;
            }
        } else {
            out += c;
            ++i;
        }
    }
    return out;
}

pg::statement insert(const qualified_name& table, column_values row) {
    pg::statement statement;
    statement.sql = "INSERT INTO " + quote_table(table);
    if (row.empty()) {
        statement.sql += " DEFAULT VALUES RETURNING *";
        return statement;
    }
    check_parameter_count(row.size(), "insert");
    statement.sql += " " + column_list(names_of(row)) + " VALUES (";
    for (std::size_t i = 0; i < row.size(); ++i) {
        if (i > 0) statement.sql += ", ";
        bind(statement, std::move(row[i].second));
    }
    statement.sql += ") RETURNING *";
    return statement;
}

namespace {

// The checks insert_many and insert_many_batches share.
void check_rows(const std::vector<std::string>& columns, const std::vector<pg::params>& rows) {
    if (columns.empty()) fail("insert_many: no columns");
    check_unique(columns);
    for (std::size_t r = 0; r < rows.size(); ++r)
        if (rows[r].size() != columns.size())
            fail("insert_many: row ",
                 std::to_string(r),
                 " has ",
                 std::to_string(rows[r].size()),
                 " values for ",
                 std::to_string(columns.size()),
                 " columns");
}

pg::statement insert_rows(const qualified_name& table,
                          const std::vector<std::string>& columns,
                          std::vector<pg::params>::iterator first,
                          std::vector<pg::params>::iterator last) {
    pg::statement statement;
    statement.sql = "INSERT INTO " + quote_table(table) + " " + column_list(columns) + " VALUES ";
    statement.params.reserve(static_cast<std::size_t>(last - first) * columns.size());
    for (auto row = first; row != last; ++row) {
        statement.sql += row == first ? "(" : ", (";
        for (std::size_t c = 0; c < columns.size(); ++c) {
            if (c > 0) statement.sql += ", ";
            bind(statement, std::move((*row)[c]));
        }
        statement.sql += ')';
    }
    return statement;
}

}  // namespace

pg::statement insert_many(const qualified_name& table,
                          std::vector<std::string> columns,
                          std::vector<pg::params> rows) {
    check_rows(columns, rows);
    if (rows.empty()) fail("insert_many: no rows");
    // rows.size() is checked first so that the product cannot overflow.
    if (rows.size() > max_parameters || rows.size() * columns.size() > max_parameters)
        fail("insert_many: ",
             std::to_string(rows.size()),
             " rows of ",
             std::to_string(columns.size()),
             " columns need ",
             std::to_string(rows.size() * columns.size()),
             " parameters; PostgreSQL allows at most ",
             std::to_string(max_parameters),
             " in one statement (use insert_many_batches)");
    return insert_rows(table, columns, rows.begin(), rows.end());
}

std::vector<pg::statement> insert_many_batches(const qualified_name& table,
                                               std::vector<std::string> columns,
                                               std::vector<pg::params> rows) {
    check_rows(columns, rows);
    std::vector<pg::statement> statements;
    if (rows.empty()) return statements;
    if (columns.size() > max_parameters)
        fail("insert_many: one row of ",
             std::to_string(columns.size()),
             " columns exceeds ",
             std::to_string(max_parameters),
             " parameters");
    const std::size_t rows_per_batch = max_parameters / columns.size();
    for (std::size_t first = 0; first < rows.size(); first += rows_per_batch) {
        const std::size_t last = std::min(rows.size(), first + rows_per_batch);
        statements.push_back(insert_rows(table,
                                         columns,
                                         rows.begin() + static_cast<std::ptrdiff_t>(first),
                                         rows.begin() + static_cast<std::ptrdiff_t>(last)));
    }
    statements.back().sync = pg::sync_after::yes;
    return statements;
}

pg::statement update_by_key(const qualified_name& table, column_values key, column_values set) {
    if (set.empty()) fail("update_by_key: no columns to set");
    check_parameter_count(set.size() + key.size(), "update_by_key");
    (void)names_of(set);
    pg::statement statement;
    statement.sql = "UPDATE " + quote_table(table) + " SET ";
    append_assignments(statement, std::move(set), ", ");
    append_key(statement, std::move(key), "update_by_key");
    statement.sql += " RETURNING *";
    return statement;
}

pg::statement update_many(const qualified_name& table, column_values set, where filter) {
    if (set.empty()) fail("update_many: no columns to set");
    check_parameter_count(set.size() + filter.params.size(), "update_many");
    (void)names_of(set);
    pg::statement statement;
    statement.sql = "UPDATE " + quote_table(table) + " SET ";
    append_assignments(statement, std::move(set), ", ");
    append_filter(statement, std::move(filter));
    return statement;
}

pg::statement delete_by_key(const qualified_name& table, column_values key) {
    check_parameter_count(key.size(), "delete_by_key");
    pg::statement statement;
    statement.sql = "DELETE FROM " + quote_table(table);
    append_key(statement, std::move(key), "delete_by_key");
    statement.sql += " RETURNING *";
    return statement;
}

pg::statement delete_many(const qualified_name& table, where filter) {
    check_parameter_count(filter.params.size(), "delete_many");
    pg::statement statement;
    statement.sql = "DELETE FROM " + quote_table(table);
    append_filter(statement, std::move(filter));
    return statement;
}

pg::statement upsert(const qualified_name& table,
                     column_values row,
                     std::vector<std::string> conflict_columns,
                     std::vector<std::string> update_columns) {
    if (row.empty()) fail("upsert: no columns");
    if (conflict_columns.empty()) fail("upsert: no conflict columns");
    check_unique(conflict_columns);
    check_unique(update_columns);
    const std::vector<std::string> names = names_of(row);
    const auto sets = [&names](const std::string& column) {
        return std::find(names.begin(), names.end(), column) != names.end();
    };
    if (update_columns.empty()) {
        for (const std::string& column : names)
            if (std::find(conflict_columns.begin(), conflict_columns.end(), column) == conflict_columns.end())
                update_columns.push_back(column);
    } else {
        for (const std::string& column : update_columns)
            if (!sets(column))
                fail("upsert: update column \"", printable(column), "\" is not among the inserted columns");
    }
    const std::string conflict_target = column_list(conflict_columns);
    pg::statement statement = insert(table, std::move(row));
    const std::string returning = " RETURNING *";
    statement.sql.resize(statement.sql.size() - returning.size());
    statement.sql += " ON CONFLICT " + conflict_target;
    if (update_columns.empty()) {
        statement.sql += " DO NOTHING";
    } else {
        statement.sql += " DO UPDATE SET ";
        for (std::size_t i = 0; i < update_columns.size(); ++i) {
            if (i > 0) statement.sql += ", ";
            const std::string column = quote_column(update_columns[i]);
            statement.sql += column + " = EXCLUDED." + column;
        }
    }
    statement.sql += returning;
    return statement;
}

pg::statement select_by_key(const qualified_name& table, column_values key) {
    check_parameter_count(key.size(), "select_by_key");
    pg::statement statement;
    statement.sql = "SELECT * FROM " + quote_table(table);
    append_key(statement, std::move(key), "select_by_key");
    return statement;
}

pg::statement exists(const qualified_name& table, where filter) {
    check_parameter_count(filter.params.size(), "exists");
    pg::statement statement;
    statement.sql = "SELECT EXISTS (SELECT 1 FROM " + quote_table(table);
    append_filter(statement, std::move(filter));
    statement.sql += ')';
    return statement;
}

pg::statement count(const qualified_name& table, where filter) {
    check_parameter_count(filter.params.size(), "count");
    pg::statement statement;
    statement.sql = "SELECT count(*) FROM " + quote_table(table);
    append_filter(statement, std::move(filter));
    return statement;
}

}  // namespace flypg::sql
