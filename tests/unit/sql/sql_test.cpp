#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/sql.hpp"

namespace {

namespace sql = flypg::sql;
namespace pg = flypg::pg;
using testing::HasSubstr;
using testing::Not;

template <class F>
std::string invalid_argument_message(F&& f) {
    try {
        f();
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        return e.diag().library_message;
    }
    ADD_FAILURE() << "no flypg::error was thrown";
    return {};
}

// --- quote_identifier ---

TEST(QuoteIdentifier, QuotesAndDoublesEmbeddedQuotes) {
    EXPECT_EQ(sql::quote_identifier("my table"), "\"my table\"");
    EXPECT_EQ(sql::quote_identifier("Order"), "\"Order\"");
    EXPECT_EQ(sql::quote_identifier("say \"hi\""), "\"say \"\"hi\"\"\"");
    EXPECT_EQ(sql::quote_identifier("\""), "\"\"\"\"");
    EXPECT_EQ(sql::quote_identifier("Straße"), "\"Straße\"");
}

TEST(QuoteIdentifier, InjectionAttemptStaysOneName) {
    EXPECT_EQ(sql::quote_identifier("users\"; DROP TABLE users; --"), "\"users\"\"; DROP TABLE users; --\"");
}

TEST(QuoteIdentifier, QualifiesWithASchema) {
    EXPECT_EQ(sql::quote_identifier("public", "users"), "\"public\".\"users\"");
    EXPECT_EQ(sql::quote_identifier(sql::qualified_name{"my schema", "my\"table"}),
              "\"my schema\".\"my\"\"table\"");
    // A dot inside a single name is part of the name.
    EXPECT_EQ(sql::quote_identifier("public.users"), "\"public.users\"");
}

TEST(QuoteIdentifier, RejectsEmptyNulAndOverlongNamesNamingThem) {
    EXPECT_THAT(invalid_argument_message([] { (void)sql::quote_identifier(""); }), HasSubstr("empty"));
    EXPECT_THAT(invalid_argument_message([] { (void)sql::quote_identifier("", "t"); }),
                HasSubstr("empty schema"));
    const std::string with_nul("ab\0cd", 5);
    EXPECT_THAT(invalid_argument_message([&] { (void)sql::quote_identifier(with_nul); }),
                HasSubstr("\"ab\\0cd\" contains a NUL byte"));
    EXPECT_EQ(sql::quote_identifier(std::string(63, 'x')), "\"" + std::string(63, 'x') + "\"");
    EXPECT_THAT(invalid_argument_message([] { (void)sql::quote_identifier(std::string(64, 'x')); }),
                HasSubstr("longer than 63 bytes"));
}

// --- insert ---

TEST(Insert, BindsEveryValueInColumnOrder) {
    sql::column_values row{{"name", "ada"}, {"born", 1815}, {"note", nullptr}};
    const pg::statement s = sql::insert("people", std::move(row));
    EXPECT_EQ(s.sql, "INSERT INTO \"people\" (\"name\", \"born\", \"note\") VALUES ($1, $2, $3) RETURNING *");
    EXPECT_EQ(s.params, (pg::params{"ada", 1815, nullptr}));
}

TEST(Insert, QualifiedTable) {
    sql::column_values row{{"id", std::int64_t{7}}};
    EXPECT_EQ(sql::insert(sql::qualified_name("app", "users"), std::move(row)).sql,
              "INSERT INTO \"app\".\"users\" (\"id\") VALUES ($1) RETURNING *");
}

TEST(Insert, EmptyRowInsertsDefaults) {
    const pg::statement s = sql::insert("events", {});
    EXPECT_EQ(s.sql, "INSERT INTO \"events\" DEFAULT VALUES RETURNING *");
    EXPECT_TRUE(s.params.empty());
}

TEST(Insert, ValuesAreNeverSplicedIntoSql) {
    const std::string evil = "'); DROP TABLE people; --";
    sql::column_values row{{"name", evil}, {"x\"); DROP TABLE t; --", "$1"}};
    const pg::statement s = sql::insert("people", std::move(row));
    EXPECT_THAT(s.sql, Not(HasSubstr("');")));
    EXPECT_EQ(s.sql,
              "INSERT INTO \"people\" (\"name\", \"x\"\"); DROP TABLE t; --\") VALUES ($1, $2) RETURNING *");
    EXPECT_EQ(s.params, (pg::params{evil, "$1"}));
}

TEST(Insert, RejectsDuplicateAndInvalidColumns) {
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values row{{"a", 1}, {"a", 2}};
                    (void)sql::insert("t", std::move(row));
                }),
                HasSubstr("column \"a\" appears twice"));
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values row{{"", 1}};
                    (void)sql::insert("t", std::move(row));
                }),
                HasSubstr("empty column name"));
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values row{{"a", 1}};
                    (void)sql::insert("", std::move(row));
                }),
                HasSubstr("empty table name"));
}

// --- insert_many ---

TEST(InsertMany, NumbersParametersRowByRow) {
    std::vector<pg::params> rows{{1, "a"}, {2, "b"}, {3, nullptr}};
    const pg::statement s = sql::insert_many("t", {"id", "name"}, std::move(rows));
    EXPECT_EQ(s.sql, "INSERT INTO \"t\" (\"id\", \"name\") VALUES ($1, $2), ($3, $4), ($5, $6)");
    EXPECT_EQ(s.params, (pg::params{1, "a", 2, "b", 3, nullptr}));
}

TEST(InsertMany, RejectsRaggedRowsNamingTheRow) {
    std::vector<pg::params> rows{{1, "a"}, {2}, {3, "c"}};
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)sql::insert_many("t", {"id", "name"}, std::move(rows));
                }),
                HasSubstr("row 1 has 1 values for 2 columns"));
}

TEST(InsertMany, RejectsNoRowsNoColumnsAndDuplicates) {
    EXPECT_THAT(invalid_argument_message([] { (void)sql::insert_many("t", {"a"}, {}); }),
                HasSubstr("no rows"));
    EXPECT_THAT(invalid_argument_message([] { (void)sql::insert_many("t", {}, {pg::params{}}); }),
                HasSubstr("no columns"));
    EXPECT_THAT(invalid_argument_message([] {
                    (void)sql::insert_many("t", {"a", "a"}, {pg::params{1, 2}});
                }),
                HasSubstr("appears twice"));
}

TEST(InsertMany, AcceptsExactlyTheParameterLimit) {
    std::vector<pg::params> rows(65535 / 5, pg::params{1, 2, 3, 4, 5});
    const pg::statement s = sql::insert_many("t", {"a", "b", "c", "d", "e"}, std::move(rows));
    EXPECT_EQ(s.params.size(), 65535u);
    EXPECT_THAT(s.sql, testing::EndsWith("($65531, $65532, $65533, $65534, $65535)"));
}

TEST(InsertMany, RejectsMoreThanTheParameterLimitWithAClearError) {
    std::vector<pg::params> rows(32768, pg::params{1, 2});
    const std::string message = invalid_argument_message([&] {
        (void)sql::insert_many("t", {"a", "b"}, std::move(rows));
    });
    EXPECT_THAT(message, HasSubstr("65536 parameters"));
    EXPECT_THAT(message, HasSubstr("at most 65535"));
    EXPECT_THAT(message, HasSubstr("insert_many_batches"));
}

TEST(InsertManyBatches, SplitsAtTheParameterLimitKeepingRowOrder) {
    std::vector<pg::params> rows;
    for (int i = 0; i < 40000; ++i) rows.push_back(pg::params{i, -i});
    const std::vector<pg::statement> batches = sql::insert_many_batches("t", {"a", "b"}, std::move(rows));
    ASSERT_EQ(batches.size(), 2u);
    EXPECT_EQ(batches[0].params.size(), 65534u);  // 32767 whole rows of 2
    EXPECT_EQ(batches[1].params.size(), 80000u - 65534u);
    EXPECT_EQ(batches[0].params.front(), pg::param(0));
    EXPECT_EQ(batches[1].params[0], pg::param(32767));
    EXPECT_EQ(batches[1].params[1], pg::param(-32767));
    EXPECT_THAT(batches[1].sql,
                testing::StartsWith("INSERT INTO \"t\" (\"a\", \"b\") VALUES ($1, $2), ($3, $4)"));
    // One pipeline segment: only the last statement is followed by a Sync.
    EXPECT_EQ(batches[0].sync, pg::sync_after::no);
    EXPECT_EQ(batches[1].sync, pg::sync_after::yes);
}

TEST(InsertManyBatches, SmallInputIsOneStatementAndNoRowsIsNone) {
    std::vector<pg::params> rows{{1}, {2}};
    const std::vector<pg::statement> one = sql::insert_many_batches("t", {"a"}, std::move(rows));
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].sql, "INSERT INTO \"t\" (\"a\") VALUES ($1), ($2)");
    EXPECT_TRUE(sql::insert_many_batches("t", {"a"}, {}).empty());
}

TEST(InsertManyBatches, RejectsRaggedRowsNamingTheCallersIndex) {
    std::vector<pg::params> rows(70000, pg::params{1});
    rows[69999] = pg::params{};
    EXPECT_THAT(
        invalid_argument_message([&] { (void)sql::insert_many_batches("t", {"a"}, std::move(rows)); }),
        HasSubstr("row 69999 has 0 values"));
}

// --- update ---

TEST(UpdateByKey, SetsThenMatchesTheKey) {
    sql::column_values key{{"id", std::int64_t{42}}};
    sql::column_values set{{"name", "grace"}, {"born", 1906}};
    const pg::statement s = sql::update_by_key("people", std::move(key), std::move(set));
    EXPECT_EQ(s.sql, "UPDATE \"people\" SET \"name\" = $1, \"born\" = $2 WHERE \"id\" = $3 RETURNING *");
    EXPECT_EQ(s.params, (pg::params{"grace", 1906, std::int64_t{42}}));
}

TEST(UpdateByKey, CompositeKey) {
    sql::column_values key{{"tenant", 1}, {"id", 2}};
    sql::column_values set{{"v", true}};
    EXPECT_EQ(sql::update_by_key("t", std::move(key), std::move(set)).sql,
              "UPDATE \"t\" SET \"v\" = $1 WHERE \"tenant\" = $2 AND \"id\" = $3 RETURNING *");
}

TEST(UpdateByKey, RejectsEmptySetEmptyKeyAndNullKey) {
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values key{{"id", 1}};
                    (void)sql::update_by_key("t", std::move(key), {});
                }),
                HasSubstr("no columns to set"));
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values set{{"v", 1}};
                    (void)sql::update_by_key("t", {}, std::move(set));
                }),
                HasSubstr("no key columns"));
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values key{{"id", nullptr}};
                    sql::column_values set{{"v", 1}};
                    (void)sql::update_by_key("t", std::move(key), std::move(set));
                }),
                HasSubstr("key column \"id\" is NULL"));
}

TEST(UpdateMany, RenumbersTheFiltersParametersAfterTheSetValues) {
    sql::column_values set{{"state", "done"}, {"attempts", 0}};
    pg::params filter_params{"running", 3};
    const pg::statement s = sql::update_many(
        "jobs", std::move(set), sql::where("state = $1 AND attempts > $2", std::move(filter_params)));
    EXPECT_EQ(s.sql,
              "UPDATE \"jobs\" SET \"state\" = $1, \"attempts\" = $2 WHERE state = $3 AND attempts > $4");
    EXPECT_EQ(s.params, (pg::params{"done", 0, "running", 3}));
}

TEST(UpdateMany, WithoutFilterUpdatesEveryRow) {
    sql::column_values set{{"flag", false}};
    EXPECT_EQ(sql::update_many("t", std::move(set), {}).sql, "UPDATE \"t\" SET \"flag\" = $1");
}

TEST(UpdateMany, RejectsParametersWithoutFilterSql) {
    sql::column_values set{{"flag", false}};
    pg::params stray{1};
    EXPECT_THAT(invalid_argument_message(
                    [&] { (void)sql::update_many("t", std::move(set), sql::where("", std::move(stray))); }),
                HasSubstr("without SQL has 1 parameters"));
}

// --- delete ---

TEST(DeleteByKey, ReturnsTheDeletedRow) {
    sql::column_values key{{"id", 5}};
    const pg::statement s = sql::delete_by_key("t", std::move(key));
    EXPECT_EQ(s.sql, "DELETE FROM \"t\" WHERE \"id\" = $1 RETURNING *");
    EXPECT_EQ(s.params, (pg::params{5}));
}

TEST(DeleteMany, WithAndWithoutFilter) {
    pg::params before{"2024-01-01"};
    const pg::statement filtered = sql::delete_many("log", sql::where("at < $1::date", std::move(before)));
    EXPECT_EQ(filtered.sql, "DELETE FROM \"log\" WHERE at < $1::date");
    EXPECT_EQ(filtered.params, (pg::params{"2024-01-01"}));
    EXPECT_EQ(sql::delete_many("log", {}).sql, "DELETE FROM \"log\"");
}

// --- upsert ---

TEST(Upsert, UpdatesEveryNonConflictColumnByDefault) {
    sql::column_values row{{"id", 1}, {"name", "ada"}, {"born", 1815}};
    const pg::statement s = sql::upsert("people", std::move(row), {"id"});
    EXPECT_EQ(s.sql,
              "INSERT INTO \"people\" (\"id\", \"name\", \"born\") VALUES ($1, $2, $3) ON CONFLICT (\"id\") "
              "DO UPDATE SET \"name\" = EXCLUDED.\"name\", \"born\" = EXCLUDED.\"born\" RETURNING *");
    EXPECT_EQ(s.params, (pg::params{1, "ada", 1815}));
}

TEST(Upsert, UpdatesOnlyTheNamedColumns) {
    sql::column_values row{{"tenant", 1}, {"id", 2}, {"name", "x"}, {"created", "now"}};
    EXPECT_EQ(sql::upsert("t", std::move(row), {"tenant", "id"}, {"name"}).sql,
              "INSERT INTO \"t\" (\"tenant\", \"id\", \"name\", \"created\") VALUES ($1, $2, $3, $4) "
              "ON CONFLICT (\"tenant\", \"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\" RETURNING *");
}

TEST(Upsert, DoesNothingWhenOnlyConflictColumnsAreInserted) {
    sql::column_values row{{"a", 1}, {"b", 2}};
    EXPECT_EQ(sql::upsert("pairs", std::move(row), {"a", "b"}).sql,
              "INSERT INTO \"pairs\" (\"a\", \"b\") VALUES ($1, $2) ON CONFLICT (\"a\", \"b\") DO NOTHING "
              "RETURNING *");
}

TEST(Upsert, RejectsMissingConflictColumnsAndUnknownUpdateColumns) {
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values row{{"a", 1}};
                    (void)sql::upsert("t", std::move(row), {});
                }),
                HasSubstr("no conflict columns"));
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values row{{"a", 1}, {"b", 2}};
                    (void)sql::upsert("t", std::move(row), {"a"}, {"c"});
                }),
                HasSubstr("update column \"c\" is not among the inserted columns"));
    EXPECT_THAT(invalid_argument_message([] {
                    sql::column_values row{{"a", 1}};
                    (void)sql::upsert("t", std::move(row), {"bad\"name", ""});
                }),
                HasSubstr("empty column name"));
}

// --- reads ---

TEST(SelectByKey, SelectsTheRow) {
    sql::column_values key{{"email", "a@b.c"}};
    const pg::statement s = sql::select_by_key(sql::qualified_name("auth", "users"), std::move(key));
    EXPECT_EQ(s.sql, "SELECT * FROM \"auth\".\"users\" WHERE \"email\" = $1");
    EXPECT_EQ(s.params, (pg::params{"a@b.c"}));
}

TEST(ExistsAndCount, WithAndWithoutFilter) {
    EXPECT_EQ(sql::exists("t").sql, "SELECT EXISTS (SELECT 1 FROM \"t\")");
    EXPECT_EQ(sql::count("t").sql, "SELECT count(*) FROM \"t\"");
    pg::params p1{7};
    const pg::statement e = sql::exists("t", sql::where("owner = $1", std::move(p1)));
    EXPECT_EQ(e.sql, "SELECT EXISTS (SELECT 1 FROM \"t\" WHERE owner = $1)");
    EXPECT_EQ(e.params, (pg::params{7}));
    pg::params p2{7, "x"};
    EXPECT_EQ(sql::count("t", sql::where("owner = $1 OR name = $2", std::move(p2))).sql,
              "SELECT count(*) FROM \"t\" WHERE owner = $1 OR name = $2");
}

// --- renumber_parameters ---

TEST(RenumberParameters, ShiftsEveryPlaceholder) {
    EXPECT_EQ(sql::renumber_parameters("a = $1 AND b = $2 OR c = $1", 2, 3), "a = $4 AND b = $5 OR c = $4");
    EXPECT_EQ(sql::renumber_parameters("x IN ($10, $2)", 12, 5), "x IN ($15, $7)");
    EXPECT_EQ(sql::renumber_parameters("a=$1", 1, 0), "a=$1");
    EXPECT_EQ(sql::renumber_parameters("f($1::int,$2)", 2, 1), "f($2::int,$3)");
}

TEST(RenumberParameters, LeavesLiteralsIdentifiersAndCommentsAlone) {
    EXPECT_EQ(sql::renumber_parameters("note = '$1' AND x = $1", 1, 1), "note = '$1' AND x = $2");
    EXPECT_EQ(sql::renumber_parameters("note = 'it''s $1' AND x = $1", 1, 1), "note = 'it''s $1' AND x = $2");
    EXPECT_EQ(sql::renumber_parameters("note = E'\\' $1' AND x = $1", 1, 1), "note = E'\\' $1' AND x = $2");
    EXPECT_EQ(sql::renumber_parameters("\"col$1\" = $1", 1, 1), "\"col$1\" = $2");
    EXPECT_EQ(sql::renumber_parameters("\"a\"\"$1\" = $1", 1, 1), "\"a\"\"$1\" = $2");
    EXPECT_EQ(sql::renumber_parameters("a$1 = $1", 1, 1), "a$1 = $2");
    EXPECT_EQ(sql::renumber_parameters("x = $$ $1 $$ AND y = $1", 1, 1), "x = $$ $1 $$ AND y = $2");
    EXPECT_EQ(sql::renumber_parameters("x = $q$ $1 $$ $q$ AND y = $1", 1, 1), "x = $q$ $1 $$ $q$ AND y = $2");
    EXPECT_EQ(sql::renumber_parameters("x = $1 -- $1\nAND y = $1", 1, 1), "x = $2 -- $1\nAND y = $2");
    EXPECT_EQ(sql::renumber_parameters("x = $1 /* $1 /* $1 */ $1 */ AND y = $1", 1, 1),
              "x = $2 /* $1 /* $1 */ $1 */ AND y = $2");
    // Standard strings: a backslash is an ordinary character, so the quote ends the literal.
    EXPECT_EQ(sql::renumber_parameters("a = 'x\\' AND b = $1", 1, 1), "a = 'x\\' AND b = $2");
}

TEST(RenumberParameters, RejectsUnknownPlaceholdersNamingThem) {
    EXPECT_THAT(invalid_argument_message([] { (void)sql::renumber_parameters("a = $3", 2, 0); }),
                HasSubstr("refers to $3 but has 2 parameters"));
    EXPECT_THAT(invalid_argument_message([] { (void)sql::renumber_parameters("a = $0", 2, 0); }),
                HasSubstr("refers to $0"));
    EXPECT_THAT(
        invalid_argument_message([] { (void)sql::renumber_parameters("a = $99999999999999999999", 2, 0); }),
        HasSubstr("refers to $99999999999999999999"));
}

TEST(RenumberParameters, RejectsUnterminatedText) {
    EXPECT_THAT(invalid_argument_message([] { (void)sql::renumber_parameters("a = 'x", 0, 0); }),
                HasSubstr("unterminated string literal"));
    EXPECT_THAT(invalid_argument_message([] { (void)sql::renumber_parameters("\"a = 1", 0, 0); }),
                HasSubstr("unterminated quoted identifier"));
    EXPECT_THAT(invalid_argument_message([] { (void)sql::renumber_parameters("a = $t$ x", 0, 0); }),
                HasSubstr("unterminated dollar-quoted string"));
    EXPECT_THAT(invalid_argument_message([] { (void)sql::renumber_parameters("a /* /* */", 0, 0); }),
                HasSubstr("unterminated comment"));
}

TEST(Builders, RejectMoreThanTheParameterLimitInAnyStatement) {
    pg::params many(65535, pg::param(1));
    sql::column_values set{{"a", 1}};
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)sql::update_many("t", std::move(set), sql::where("a = $1", std::move(many)));
                }),
                HasSubstr("needs 65536 parameters"));
}

}  // namespace
