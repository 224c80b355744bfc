// What a primary-region node stores under a request id, so that a repeat gets the first run's
// answer: a forwarded write's statement results and a named transaction's values. The bytes come
// back from the database, so every malformed or cut-short encoding must be refused, not misread.
#include <gtest/gtest.h>

#include <limits>

#include "flypg/error.hpp"
#include "repo/write_requests.hpp"

namespace {

using flypg::rpc::value;

std::vector<value> every_kind_of_value() {
    flypg::rpc::bytes raw;
    raw.data = {0x00, 0xff, 0x10};
    return {value(flypg::rpc::null_value{}),
            value(true),
            value(false),
            value(std::int16_t{-32768}),
            value(std::int32_t{-7}),
            value(std::numeric_limits<std::int64_t>::min()),
            value(-0.5),
            value(std::string("text with a \0 inside", 20)),
            value(std::string()),
            value(raw)};
}

void expect_refused(std::span<const std::uint8_t> bytes, bool as_values) {
    try {
        if (as_values) {
            (void)flypg::detail::decode_values(bytes);
        } else {
            (void)flypg::detail::decode_results(bytes);
        }
        ADD_FAILURE() << "accepted " << bytes.size() << " malformed bytes";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::protocol_error);
        EXPECT_NE(std::string(e.what()).find("request id"), std::string::npos) << e.what();
    }
}

TEST(StoredValues, RoundTripEveryTypeExactly) {
    const std::vector<value> values = every_kind_of_value();
    const std::vector<std::uint8_t> bytes = flypg::detail::encode_values(values);
    const std::vector<value> back = flypg::detail::decode_values(bytes);
    ASSERT_EQ(back.size(), values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
        EXPECT_EQ(back[i].index(), values[i].index()) << "value " << i;
        EXPECT_TRUE(back[i] == values[i]) << "value " << i;
    }
    EXPECT_TRUE(flypg::detail::decode_values(flypg::detail::encode_values({})).empty());
}

TEST(StoredValues, EveryCutShortEncodingAndUnknownTagIsRefused) {
    const std::vector<std::uint8_t> bytes = flypg::detail::encode_values(every_kind_of_value());
    for (std::size_t size = 0; size < bytes.size(); ++size)
        expect_refused(std::span<const std::uint8_t>(bytes.data(), size), true);
    std::vector<std::uint8_t> longer = bytes;
    longer.push_back(0);
    expect_refused(longer, true);
    // An int16 holding a number an int16 cannot (found by stored_requests_fuzz).
    expect_refused(std::vector<std::uint8_t>{1, 0, 0, 0, 2, 0, 0x32, 0, 0, 0, 2, 0, 0}, true);
    // A boolean that is neither 0 nor 1: one encoding per value.
    expect_refused(std::vector<std::uint8_t>{1, 0, 0, 0, 1, 2}, true);
    // One value whose tag names no type.
    expect_refused(std::vector<std::uint8_t>{1, 0, 0, 0, 8}, true);
    // A count far beyond what the bytes could hold is refused before it allocates.
    expect_refused(std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0xff, 0}, true);
}

TEST(StoredResults, RoundTripColumnsRowsAndNulls) {
    flypg::rpc::statement_result r;
    r.affected_rows = 2;
    r.columns = {{"id", 20}, {"note", 25}};
    r.rows = {{std::string("1"), std::nullopt}, {std::string("2"), std::string("two")}};
    flypg::rpc::statement_result none;
    none.affected_rows = 5;
    const std::vector<flypg::rpc::statement_result> results{r, none};
    const auto back = flypg::detail::decode_results(flypg::detail::encode_results(results));
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back[0].affected_rows, 2u);
    ASSERT_EQ(back[0].columns.size(), 2u);
    EXPECT_EQ(back[0].columns[1].name, "note");
    EXPECT_EQ(back[0].columns[1].type_oid, 25u);
    EXPECT_EQ(back[0].rows, r.rows);
    EXPECT_EQ(back[1].affected_rows, 5u);
    EXPECT_TRUE(back[1].rows.empty());
}

TEST(StoredResults, EveryCutShortEncodingIsRefused) {
    flypg::rpc::statement_result r;
    r.columns = {{"id", 20}};
    r.rows = {{std::string("1")}, {std::nullopt}};
    const std::vector<std::uint8_t> bytes = flypg::detail::encode_results({r});
    for (std::size_t size = 0; size < bytes.size(); ++size)
        expect_refused(std::span<const std::uint8_t>(bytes.data(), size), false);
    // What an interactive transaction's fence stores is not a write's results.
    const std::string fenced = "flypg:fenced";
    expect_refused(
        std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(fenced.data()), fenced.size()),
        false);
}

}  // namespace
