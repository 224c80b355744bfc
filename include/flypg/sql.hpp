// SQL statements built from table and column names, with every value bound as a parameter.
//
// Names are quoted as PostgreSQL identifiers (so "my table", "Order" or `x"; DROP TABLE t; --` are
// just names), and values travel as `$n` parameters, never as SQL text. Each builder returns a
// pg::statement (sql + params) ready for pg::connection::query or pipeline:
//
//     flypg::sql::column_values row{{"name", "ada"}, {"born", 1815}};
//     flypg::pg::statement insert = flypg::sql::insert("people", std::move(row));
//     // INSERT INTO "people" ("name", "born") VALUES ($1, $2) RETURNING *
//     auto result = co_await conn.query(std::move(insert.sql), std::move(insert.params));
//
//     flypg::pg::params since{1800};
//     flypg::sql::where born_since("born >= $1", std::move(since));
//     flypg::pg::statement n = flypg::sql::count("people", std::move(born_since));
//     // SELECT count(*) FROM "people" WHERE born >= $1
//
// Build the statement before the co_await: g++ 12 miscompiles braced temporaries inside a co_await
// expression (see the toolchain notes).
//
// The SQL of a `where` is the caller's own trusted text: its values belong in its parameters,
// which the builders renumber after their own. Every failure throws flypg::error with
// errc::invalid_argument and a message naming the offending name, row or parameter. All functions
// are pure; they are safe to call from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flypg/pg/connection.hpp"
#include "flypg/pg/param.hpp"

namespace flypg::sql {

/// PostgreSQL's limit on the parameters of one statement (the protocol counts them in 16 bits).
inline constexpr std::size_t max_parameters = 65535;

/// PostgreSQL's limit on identifier length in bytes (NAMEDATALEN - 1); longer names would be
/// truncated silently by the server, so they are rejected here.
inline constexpr std::size_t max_identifier_bytes = 63;

/// A table name, optionally qualified by its schema. A dot inside a name is part of the name:
/// `"public.users"` is one table called "public.users"; write `qualified_name("public", "users")`
/// for table users of schema public. Converts implicitly from a single name.
struct qualified_name {
    qualified_name(const char* table) : name(table) {}
    qualified_name(std::string table) : name(std::move(table)) {}
    qualified_name(std::string_view table) : name(table) {}
    qualified_name(std::string schema_name, std::string table)
        : schema(std::move(schema_name)), name(std::move(table)) {}

    std::string schema;  ///< Empty: unqualified (the search_path decides).
    std::string name;
};

/// `name` as a PostgreSQL quoted identifier: in double quotes, embedded double quotes doubled;
/// `"schema"."name"` when qualified. quote_identifier("my table") == "\"my table\"".
/// @throws flypg::error (errc::invalid_argument) for an empty name, a NUL byte, or more than
///   max_identifier_bytes bytes; the message names it.
std::string quote_identifier(const qualified_name& name);
/// quote_identifier(qualified_name(schema, name)).
std::string quote_identifier(std::string_view schema, std::string_view name);

/// Column names with their values, in order (the SQL lists them in this order).
using column_values = std::vector<std::pair<std::string, pg::param>>;

/// A caller-written condition, without the WHERE keyword, with its own `$1..$n` parameters. A
/// default-constructed (or empty) `where` matches every row.
struct where {
    where() = default;
    where(std::string condition, pg::params parameters = {})
        : sql(std::move(condition)), params(std::move(parameters)) {}

    std::string sql;
    pg::params params;
};

/// `sql` with each placeholder `$k` (1 <= k <= parameter_count) renumbered to `$(k + offset)`.
/// Placeholders inside string literals ('...', E'...'), quoted identifiers, dollar-quoted strings
/// and comments are left alone, as is `$` inside an identifier (`a$1`). Assumes
/// standard_conforming_strings = on (PostgreSQL's default).
/// @throws flypg::error (errc::invalid_argument) for `$0`, a placeholder above parameter_count,
///   or an unterminated literal, identifier or comment.
std::string renumber_parameters(std::string_view sql, std::size_t parameter_count, std::size_t offset);

/// INSERT INTO table (columns...) VALUES ($1, ...) RETURNING *. An empty `row` inserts
/// DEFAULT VALUES.
pg::statement insert(const qualified_name& table, column_values row);

/// One INSERT of many rows: VALUES ($1, $2), ($3, $4), ... without RETURNING (the result's
/// affected_rows() counts them). Every row has one value per column.
/// @throws flypg::error (errc::invalid_argument) for no columns or rows, a ragged row (naming its
///   index), a duplicate column, or more than max_parameters parameters (rows x columns); use
///   insert_many_batches then.
pg::statement insert_many(const qualified_name& table,
                          std::vector<std::string> columns,
                          std::vector<pg::params> rows);

/// insert_many split into as few statements as keep each within max_parameters, in row order.
/// Only the last ends its pipeline segment (sync_after::yes), so run through
/// pg::connection::pipeline they commit or fail together. No rows gives no statements.
std::vector<pg::statement> insert_many_batches(const qualified_name& table,
                                               std::vector<std::string> columns,
                                               std::vector<pg::params> rows);

/// UPDATE table SET a = $1, ... WHERE key1 = $n [AND key2 = $m ...] RETURNING *.
/// @throws flypg::error (errc::invalid_argument) for an empty `set` or `key`, or a NULL key value
///   (it would match nothing).
pg::statement update_by_key(const qualified_name& table, column_values key, column_values set);

/// UPDATE table SET a = $1, ... [WHERE <filter, renumbered>], without RETURNING.
pg::statement update_many(const qualified_name& table, column_values set, where filter);

/// DELETE FROM table WHERE key1 = $1 [AND ...] RETURNING *.
pg::statement delete_by_key(const qualified_name& table, column_values key);

/// DELETE FROM table [WHERE <filter>], without RETURNING. An empty filter deletes every row.
pg::statement delete_many(const qualified_name& table, where filter);

/// INSERT INTO table (columns...) VALUES (...) ON CONFLICT (conflict_columns...)
/// DO UPDATE SET c = EXCLUDED.c, ... RETURNING *.
/// `update_columns` empty: every column of `row` outside `conflict_columns`. When that leaves
/// nothing to update, the statement says DO NOTHING, and then returns no row on a conflict.
/// @throws flypg::error (errc::invalid_argument) for no conflict columns, or an update column
///   that `row` does not set.
pg::statement upsert(const qualified_name& table,
                     column_values row,
                     std::vector<std::string> conflict_columns,
                     std::vector<std::string> update_columns = {});

/// SELECT * FROM table WHERE key1 = $1 [AND ...].
pg::statement select_by_key(const qualified_name& table, column_values key);

/// SELECT EXISTS (SELECT 1 FROM table [WHERE <filter>]): one boolean.
pg::statement exists(const qualified_name& table, where filter = {});

/// SELECT count(*) FROM table [WHERE <filter>]: one int8.
pg::statement count(const qualified_name& table, where filter = {});

}  // namespace flypg::sql
