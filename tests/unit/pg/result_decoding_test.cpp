// Decoding is tested on results built in memory with libpq's own PGresult constructors, so no
// server is needed.
#include <libpq-fe.h>

#include <gtest/gtest.h>

#include <cmath>

#include "flypg/pg/result.hpp"
#include "pg/result_data.hpp"
#include "pg/type_oids.hpp"

namespace {

namespace oid = flypg::pg::oid;
using flypg::pg::result;

struct column_spec {
    const char* name;
    std::uint32_t type;
};

// Builds a one-row result; a nullptr cell is NULL.
result make_result(const std::vector<column_spec>& columns, const std::vector<const char*>& cells) {
    flypg::pg::detail::pgresult_ptr res(PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK));
    std::vector<PGresAttDesc> attrs(columns.size());
    for (std::size_t i = 0; i < columns.size(); ++i) {
        attrs[i] = PGresAttDesc{};
        attrs[i].name = const_cast<char*>(columns[i].name);
        attrs[i].typid = columns[i].type;
        attrs[i].typlen = -1;
        attrs[i].atttypmod = -1;
    }
    EXPECT_EQ(PQsetResultAttrs(res.get(), static_cast<int>(attrs.size()), attrs.data()), 1);
    for (std::size_t i = 0; i < cells.size(); ++i) {
        const char* cell = cells[i];
        EXPECT_EQ(PQsetvalue(res.get(),
                             0,
                             static_cast<int>(i),
                             const_cast<char*>(cell),
                             cell ? static_cast<int>(std::strlen(cell)) : -1),
                  1);
    }
    return result(flypg::pg::detail::make_result_data(std::move(res)));
}

template <class F>
std::error_code error_of(F&& f) {
    try {
        f();
    } catch (const flypg::error& e) {
        return e.code();
    }
    return {};
}

TEST(ResultDecoding, ReadsEachSupportedType) {
    const result r =
        make_result({{"b", oid::boolean},
                     {"s", oid::int2},
                     {"i", oid::int4},
                     {"l", oid::int8},
                     {"d", oid::float8},
                     {"t", oid::text},
                     {"x", oid::bytea}},
                    {"t", "-32768", "2147483647", "-9223372036854775808", "2.5", "hi", "\\x00ff10"});
    ASSERT_EQ(r.size(), 1u);
    ASSERT_EQ(r.columns(), 7u);
    const auto row = r.at(0);
    EXPECT_TRUE(row.get<bool>(0));
    EXPECT_EQ(row.get<std::int16_t>(1), -32768);
    EXPECT_EQ(row.get<std::int32_t>(2), 2147483647);
    EXPECT_EQ(row.get<std::int64_t>("l"), std::numeric_limits<std::int64_t>::min());
    EXPECT_DOUBLE_EQ(row.get<double>("d"), 2.5);
    EXPECT_EQ(row.get<std::string>("t"), "hi");
    const flypg::pg::bytes expected{{std::byte{0}, std::byte{0xff}, std::byte{0x10}}};
    EXPECT_EQ(row.get<flypg::pg::bytes>("x"), expected);
}

TEST(ResultDecoding, IntegersWidenAndNarrowWithRangeCheck) {
    const result r = make_result({{"small", oid::int2}, {"big", oid::int8}}, {"7", "70000"});
    EXPECT_EQ(r[0].get<std::int64_t>(0), 7);
    EXPECT_EQ(r[0].get<std::int32_t>(1), 70000);
    EXPECT_EQ(error_of([&] { (void)r[0].get<std::int16_t>(1); }), flypg::errc::out_of_range);
}

TEST(ResultDecoding, DoublesReadSpecialValuesAndIntegers) {
    const result r =
        make_result({{"a", oid::float8}, {"b", oid::float4}, {"c", oid::int4}, {"d", oid::numeric}},
                    {"NaN", "-Infinity", "3", "1.25"});
    EXPECT_TRUE(std::isnan(r[0].get<double>(0)));
    EXPECT_EQ(r[0].get<double>(1), -std::numeric_limits<double>::infinity());
    EXPECT_DOUBLE_EQ(r[0].get<double>(2), 3.0);
    EXPECT_DOUBLE_EQ(r[0].get<double>(3), 1.25);
}

TEST(ResultDecoding, NullNeedsAnOptional) {
    const result r = make_result({{"n", oid::int4}}, {nullptr});
    EXPECT_TRUE(r[0].is_null(0));
    EXPECT_EQ(r[0].get<std::optional<std::int32_t>>(0), std::nullopt);
    EXPECT_EQ(error_of([&] { (void)r[0].get<std::int32_t>(0); }), flypg::errc::null_value);
}

TEST(ResultDecoding, TypeMismatchNamesTheColumn) {
    const result r = make_result({{"name", oid::text}}, {"ada"});
    try {
        (void)r[0].get<std::int64_t>("name");
        FAIL() << "text read as an integer";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::type_mismatch);
        EXPECT_NE(std::string(e.what()).find("\"name\""), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("text"), std::string::npos) << e.what();
    }
    EXPECT_EQ(error_of([&] { (void)r[0].get<bool>(0); }), flypg::errc::type_mismatch);
    EXPECT_EQ(error_of([&] { (void)r[0].get<flypg::pg::bytes>(0); }), flypg::errc::type_mismatch);
}

TEST(ResultDecoding, StringReadsAnyColumnsTextForm) {
    const result r = make_result({{"n", oid::int8}, {"lsn", 3220}}, {"42", "0/17BB660"});
    EXPECT_EQ(r[0].get<std::string>(0), "42");
    EXPECT_EQ(r[0].get<std::string>("lsn"), "0/17BB660");
}

TEST(ResultDecoding, BadIndexesAndNamesAreErrors) {
    const result r = make_result({{"a", oid::int4}}, {"1"});
    EXPECT_EQ(error_of([&] { (void)r[0].get<std::int32_t>(1); }), flypg::errc::column_not_found);
    EXPECT_EQ(error_of([&] { (void)r[0].get<std::int32_t>("missing"); }), flypg::errc::column_not_found);
    EXPECT_EQ(error_of([&] { (void)r.at(1); }), flypg::errc::out_of_range);
    EXPECT_EQ(r.find_column("a"), 0u);
    EXPECT_EQ(r.find_column("b"), std::nullopt);
    EXPECT_EQ(r.column_type(0), oid::int4);
}

TEST(ResultDecoding, MalformedIntegerTextIsAnError) {
    const result r = make_result({{"a", oid::int4}}, {"12x"});
    EXPECT_EQ(error_of([&] { (void)r[0].get<std::int32_t>(0); }), flypg::errc::type_mismatch);
}

TEST(ResultDecoding, IteratesRows) {
    flypg::pg::detail::pgresult_ptr res(PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK));
    PGresAttDesc attr{};
    attr.name = const_cast<char*>("v");
    attr.typid = oid::int4;
    ASSERT_EQ(PQsetResultAttrs(res.get(), 1, &attr), 1);
    for (int i = 0; i < 5; ++i) {
        std::string text = std::to_string(i * 10);
        ASSERT_EQ(PQsetvalue(res.get(), i, 0, text.data(), static_cast<int>(text.size())), 1);
    }
    const result r(flypg::pg::detail::make_result_data(std::move(res)));
    std::int32_t sum = 0;
    for (flypg::pg::row row : r) sum += row.get<std::int32_t>(0);
    EXPECT_EQ(sum, 100);
}

TEST(ResultDecoding, ErrorResultsKeepSqlstateAndServerText) {
    const result r(flypg::pg::detail::make_error_result(flypg::sqlstate("23505"), "library text"));
    EXPECT_EQ(r.error(), flypg::sqlstate("23505"));
    EXPECT_EQ(r.diag().library_message, "library text");
    EXPECT_EQ(error_of([&] { r.throw_if_error(); }), flypg::sqlstate("23505"));
}

}  // namespace
