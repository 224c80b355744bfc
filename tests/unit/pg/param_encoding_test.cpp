#include "pg/param_encoding.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "pg/type_oids.hpp"

namespace {

using flypg::pg::bytes;
using flypg::pg::param;
using flypg::pg::params;
using flypg::pg::detail::encode_params;

std::vector<unsigned char> field(const flypg::pg::detail::encoded_params& e, std::size_t i) {
    const auto* p = reinterpret_cast<const unsigned char*>(e.values[i]);
    return {p, p + e.lengths[i]};
}

TEST(ParamEncoding, IntegersAreBigEndianWithTheirSizedType) {
    const params values{std::int16_t{0x0102}, std::int32_t{-2}, std::int64_t{0x0102030405060708}};
    const auto e = encode_params(values);
    ASSERT_EQ(e.count(), 3);
    EXPECT_EQ(e.types[0], flypg::pg::oid::int2);
    EXPECT_EQ(e.types[1], flypg::pg::oid::int4);
    EXPECT_EQ(e.types[2], flypg::pg::oid::int8);
    EXPECT_EQ(field(e, 0), (std::vector<unsigned char>{0x01, 0x02}));
    EXPECT_EQ(field(e, 1), (std::vector<unsigned char>{0xff, 0xff, 0xff, 0xfe}));
    EXPECT_EQ(field(e, 2), (std::vector<unsigned char>{1, 2, 3, 4, 5, 6, 7, 8}));
    for (int format : e.formats) EXPECT_EQ(format, 1);
}

TEST(ParamEncoding, DoubleIsIeeeBigEndian) {
    const params values{1.5};
    const auto e = encode_params(values);
    EXPECT_EQ(e.types[0], flypg::pg::oid::float8);
    EXPECT_EQ(field(e, 0), (std::vector<unsigned char>{0x3f, 0xf8, 0, 0, 0, 0, 0, 0}));
}

TEST(ParamEncoding, BoolTextBytesAndNull) {
    const params values{true, "héllo", bytes{{std::byte{0}, std::byte{0xff}}}, nullptr, std::optional<int>()};
    const auto e = encode_params(values);
    EXPECT_EQ(e.types[0], flypg::pg::oid::boolean);
    EXPECT_EQ(field(e, 0), (std::vector<unsigned char>{1}));
    EXPECT_EQ(e.types[1], flypg::pg::oid::text);
    EXPECT_EQ(std::string(e.values[1], static_cast<std::size_t>(e.lengths[1])), "héllo");
    EXPECT_EQ(e.types[2], flypg::pg::oid::bytea);
    EXPECT_EQ(field(e, 2), (std::vector<unsigned char>{0, 0xff}));
    EXPECT_EQ(e.values[3], nullptr);
    EXPECT_EQ(e.types[3], 0u);
    EXPECT_EQ(e.values[4], nullptr);
}

TEST(ParamEncoding, EmptyBytesAreNotNull) {
    const params values{bytes{}, std::string()};
    const auto e = encode_params(values);
    EXPECT_NE(e.values[0], nullptr);
    EXPECT_EQ(e.lengths[0], 0);
    EXPECT_NE(e.values[1], nullptr);
}

TEST(ParamEncoding, CppIntegerTypesMapToPostgresSizes) {
    EXPECT_TRUE(std::holds_alternative<std::int32_t>(param(42).value()));
    EXPECT_TRUE(std::holds_alternative<std::int64_t>(param(42L).value()));
    EXPECT_TRUE(std::holds_alternative<std::int64_t>(param(42LL).value()));
    EXPECT_TRUE(std::holds_alternative<std::int64_t>(param(42U).value()));
    EXPECT_TRUE(std::holds_alternative<std::int32_t>(param(std::uint16_t{7}).value()));
    EXPECT_TRUE(std::holds_alternative<std::int64_t>(param(std::uint64_t{7}).value()));
}

TEST(ParamEncoding, UnsignedAboveInt8RangeIsRejected) {
    try {
        param p(std::numeric_limits<std::uint64_t>::max());
        FAIL() << "accepted an unsigned value PostgreSQL cannot hold";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::out_of_range);
        EXPECT_NE(std::string(e.what()).find("18446744073709551615"), std::string::npos);
    }
}

TEST(ParamEncoding, ManyBinaryValuesKeepTheirOwnBytes) {
    params values;
    for (std::int64_t i = 0; i < 100; ++i) values.emplace_back(i);
    const auto e = encode_params(values);
    for (std::size_t i = 0; i < 100; ++i) {
        ASSERT_EQ(e.lengths[i], 8);
        EXPECT_EQ(field(e, i).back(), static_cast<unsigned char>(i));
    }
}

}  // namespace
