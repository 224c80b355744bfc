// The statement builders against the real test primary: every statement they make is valid SQL,
// does what it says, and names or values shaped like SQL injection stay names and values.
#include <unistd.h>

#include <gtest/gtest.h>

#include <asio.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "flypg/pg/connection.hpp"
#include "flypg/sql.hpp"
#include "support/test_support.hpp"

namespace {

namespace pg = flypg::pg;
namespace sql = flypg::sql;
using flypg::test::run;

asio::awaitable<pg::connection> open_primary() {
    pg::connect_options options;
    options.conninfo = flypg::test::primary_conninfo();
    co_return co_await pg::connection::connect(co_await asio::this_coro::executor, options);
}

asio::awaitable<pg::result> execute(pg::connection& conn, pg::statement statement) {
    co_return co_await conn.query(std::move(statement.sql), std::move(statement.params));
}

asio::awaitable<std::int64_t> count_rows(pg::connection& conn,
                                         const sql::qualified_name& table,
                                         sql::where filter = {}) {
    pg::result r = co_await execute(conn, sql::count(table, std::move(filter)));
    co_return r.at(0).get<std::int64_t>(0);
}

// A table whose own name and column names look like injection attempts; unique per process.
class SqlBuilders : public ::testing::Test {
  protected:
    void SetUp() override {
        run(io, [this]() -> asio::awaitable<void> {
            pg::connection conn = co_await open_primary();
            co_await conn.query("CREATE TABLE " + sql::quote_identifier(table) + " (id int8 PRIMARY KEY, " +
                                sql::quote_identifier("my name") + " text, " +
                                sql::quote_identifier("Weird\"Col; DROP TABLE x; --") + " int4, note text)");
        }());
    }
    void TearDown() override {
        run(io, [this]() -> asio::awaitable<void> {
            pg::connection conn = co_await open_primary();
            co_await conn.query("DROP TABLE IF EXISTS " + sql::quote_identifier(table));
        }());
    }

    asio::io_context io;
    const sql::qualified_name table{"public",
                                    "flypg sql \"test\"; DROP TABLE t; -- " + std::to_string(::getpid())};
    const std::string weird = "Weird\"Col; DROP TABLE x; --";
    // Named here: g++ 12 rejects a braced list inside a co_await expression.
    const std::vector<std::string> id_and_name{"id", "my name"};
    const std::vector<std::string> by_id{"id"};
    const std::vector<std::string> only_name{"my name"};
};

TEST_F(SqlBuilders, InsertReturnsTheRowWithValuesVerbatim) {
    run(io, [this]() -> asio::awaitable<void> {
        pg::connection conn = co_await open_primary();
        const std::string evil = "Robert'); DROP TABLE students;--";
        sql::column_values row{{"id", std::int64_t{1}}, {"my name", evil}, {weird, 7}};
        pg::result r = co_await execute(conn, sql::insert(table, std::move(row)));
        EXPECT_EQ(r.size(), 1u);
        EXPECT_EQ(r.at(0).get<std::string>("my name"), evil);
        EXPECT_EQ(r.at(0).get<std::int32_t>(weird), 7);
        EXPECT_TRUE(r.at(0).is_null("note"));
        EXPECT_EQ(co_await count_rows(conn, table), 1);
    }());
}

TEST_F(SqlBuilders, InsertManyAndBatchesCommitTogether) {
    run(io, [this]() -> asio::awaitable<void> {
        pg::connection conn = co_await open_primary();
        std::vector<pg::params> rows{
            {std::int64_t{1}, "a"}, {std::int64_t{2}, "b"}, {std::int64_t{3}, nullptr}};
        pg::result r = co_await execute(conn, sql::insert_many(table, id_and_name, std::move(rows)));
        EXPECT_EQ(r.affected_rows(), 3);

        std::vector<pg::params> many;
        for (std::int64_t id = 10; id < 40'010; ++id)
            many.push_back(pg::params{id, "row " + std::to_string(id)});
        std::vector<pg::statement> batches = sql::insert_many_batches(table, id_and_name, std::move(many));
        EXPECT_EQ(batches.size(), 2u);
        std::vector<pg::result> results = co_await conn.pipeline(std::move(batches));
        for (const pg::result& each : results) EXPECT_FALSE(each.error()) << each.diag().server_message;
        EXPECT_EQ(co_await count_rows(conn, table), 40'003);

        // A duplicate key in the last batch rolls back the first batch too: one pipeline segment.
        std::vector<pg::params> clash;
        for (std::int64_t id = 100'000; id < 140'000; ++id) clash.push_back(pg::params{id, "x"});
        clash.push_back(pg::params{std::int64_t{1}, "duplicate"});
        std::vector<pg::statement> failing = sql::insert_many_batches(table, id_and_name, std::move(clash));
        EXPECT_EQ(failing.size(), 2u);
        std::vector<pg::result> outcome = co_await conn.pipeline(std::move(failing));
        EXPECT_EQ(outcome.back().error(), flypg::sqlstate("23505"));
        EXPECT_EQ(co_await count_rows(conn, table), 40'003);
    }());
}

TEST_F(SqlBuilders, UpdatesByKeyAndByFilter) {
    run(io, [this]() -> asio::awaitable<void> {
        pg::connection conn = co_await open_primary();
        std::vector<pg::params> rows{{std::int64_t{1}, "$1"}, {std::int64_t{2}, "b"}, {std::int64_t{3}, "c"}};
        co_await execute(conn, sql::insert_many(table, id_and_name, std::move(rows)));

        sql::column_values key{{"id", std::int64_t{2}}};
        sql::column_values set{{"note", "updated"}, {weird, 42}};
        pg::result one = co_await execute(conn, sql::update_by_key(table, std::move(key), std::move(set)));
        EXPECT_EQ(one.size(), 1u);
        if (one.size() != 1) co_return;
        EXPECT_EQ(one.at(0).get<std::string>("note"), "updated");
        EXPECT_EQ(one.at(0).get<std::int32_t>(weird), 42);

        // The filter's own $1 is renumbered after the SET value; the '$1' literal is left alone.
        sql::column_values bulk{{"note", "bulk"}};
        pg::params filter_params{std::int64_t{3}};
        pg::result many = co_await execute(
            conn,
            sql::update_many(table,
                             std::move(bulk),
                             sql::where("\"my name\" = '$1' OR id = $1", std::move(filter_params))));
        EXPECT_EQ(many.affected_rows(), 2);
        pg::params bulk_params{"bulk"};
        EXPECT_EQ(co_await count_rows(conn, table, sql::where("note = $1", std::move(bulk_params))), 2);
    }());
}

TEST_F(SqlBuilders, UpsertUpdatesOrDoesNothing) {
    run(io, [this]() -> asio::awaitable<void> {
        pg::connection conn = co_await open_primary();
        sql::column_values first{{"id", std::int64_t{1}}, {"my name", "first"}, {"note", "kept"}};
        pg::result inserted = co_await execute(conn, sql::upsert(table, std::move(first), by_id));
        EXPECT_EQ(inserted.at(0).get<std::string>("my name"), "first");

        sql::column_values second{{"id", std::int64_t{1}}, {"my name", "second"}, {"note", "not kept"}};
        pg::result updated = co_await execute(conn, sql::upsert(table, std::move(second), by_id, only_name));
        EXPECT_EQ(updated.size(), 1u);
        if (updated.size() != 1) co_return;
        EXPECT_EQ(updated.at(0).get<std::string>("my name"), "second");
        EXPECT_EQ(updated.at(0).get<std::string>("note"), "kept");

        sql::column_values only_key{{"id", std::int64_t{1}}};
        pg::result nothing = co_await execute(conn, sql::upsert(table, std::move(only_key), by_id));
        EXPECT_EQ(nothing.size(), 0u);
        EXPECT_EQ(co_await count_rows(conn, table), 1);
    }());
}

TEST_F(SqlBuilders, SelectsExistsCountsAndDeletes) {
    run(io, [this]() -> asio::awaitable<void> {
        pg::connection conn = co_await open_primary();
        std::vector<pg::params> rows{{std::int64_t{1}, "a"}, {std::int64_t{2}, "b"}, {std::int64_t{3}, "c"}};
        co_await execute(conn, sql::insert_many(table, id_and_name, std::move(rows)));

        sql::column_values key{{"id", std::int64_t{2}}};
        pg::result found = co_await execute(conn, sql::select_by_key(table, std::move(key)));
        EXPECT_EQ(found.size(), 1u);
        if (found.size() != 1) co_return;
        EXPECT_EQ(found.at(0).get<std::string>("my name"), "b");

        pg::params yes{"c"};
        pg::params no{"z"};
        EXPECT_TRUE(
            (co_await execute(conn, sql::exists(table, sql::where("\"my name\" = $1", std::move(yes)))))
                .at(0)
                .get<bool>(0));
        EXPECT_FALSE(
            (co_await execute(conn, sql::exists(table, sql::where("\"my name\" = $1", std::move(no)))))
                .at(0)
                .get<bool>(0));

        sql::column_values gone{{"id", std::int64_t{2}}};
        pg::result deleted = co_await execute(conn, sql::delete_by_key(table, std::move(gone)));
        EXPECT_EQ(deleted.size(), 1u);
        if (deleted.size() != 1) co_return;
        EXPECT_EQ(deleted.at(0).get<std::int64_t>("id"), 2);

        pg::params from{std::int64_t{3}};
        pg::result rest =
            co_await execute(conn, sql::delete_many(table, sql::where("id >= $1", std::move(from))));
        EXPECT_EQ(rest.affected_rows(), 1);
        EXPECT_EQ(co_await count_rows(conn, table), 1);
        const sql::where everything;
        co_await execute(conn, sql::delete_many(table, everything));
        EXPECT_EQ(co_await count_rows(conn, table), 0);
    }());
}

}  // namespace
