#include "flypg/lsn.hpp"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <unordered_set>

#include "flypg/error.hpp"

namespace {

using flypg::lsn;

TEST(Lsn, ParsesPostgresTextForm) {
    EXPECT_EQ(lsn::parse("0/17BB660").value(), 24'884'832u);
    EXPECT_EQ(lsn::parse("0/0").value(), 0u);
    EXPECT_EQ(lsn::parse("1/0").value(), std::uint64_t{1} << 32);
    EXPECT_EQ(lsn::parse("16/B374D848").value(), 0x16'B374D848u);
    EXPECT_EQ(lsn::parse("FFFFFFFF/FFFFFFFF").value(), ~std::uint64_t{0});
}

TEST(Lsn, AcceptsLowerCaseAndLeadingZeros) {
    EXPECT_EQ(lsn::parse("0/17bb660"), lsn::parse("0/17BB660"));
    EXPECT_EQ(lsn::parse("00000000/017BB660"), lsn::parse("0/17BB660"));
}

TEST(Lsn, FormatsUpperCaseHexWithoutPadding) {
    EXPECT_EQ(lsn::from_value(24'884'832).to_string(), "0/17BB660");
    EXPECT_EQ(lsn().to_string(), "0/0");
    EXPECT_EQ(lsn::from_value(0x16'B374D848).to_string(), "16/B374D848");
    EXPECT_EQ(lsn::from_value(~std::uint64_t{0}).to_string(), "FFFFFFFF/FFFFFFFF");
    EXPECT_EQ(lsn::parse("00000000/017bb660").to_string(), "0/17BB660");
}

TEST(Lsn, RoundTripsThroughText) {
    for (std::uint64_t v : {std::uint64_t{0},
                            std::uint64_t{1},
                            std::uint64_t{0xF},
                            std::uint64_t{0x10},
                            std::uint64_t{0xFFFFFFFF},
                            std::uint64_t{0x100000000},
                            std::uint64_t{0x123456789ABCDEF0},
                            ~std::uint64_t{0}}) {
        const lsn position = lsn::from_value(v);
        EXPECT_EQ(lsn::parse(position.to_string()), position) << position;
    }
}

TEST(Lsn, RejectsMalformedText) {
    for (const char* text :
         {"",      "/",    "0/",   "/0",          "0",           "17BB660", "0//0",  "0/0/0",
          "1/2/3", "G/0",  "0/1G", "0x0/0",       "+0/0",        "-1/0",    "0/-1",  " 0/0",
          "0/0 ",  "0 /0", "0/ 0", "123456789/0", "0/123456789", "0/0\n",   "0.5/0", "\xff/0"}) {
        EXPECT_FALSE(lsn::try_parse(text).has_value()) << '"' << text << '"';
        EXPECT_THROW(lsn::parse(text), flypg::error) << '"' << text << '"';
    }
    EXPECT_FALSE(lsn::try_parse(std::string_view("0/0\0", 4)).has_value());
}

TEST(Lsn, MalformedTextErrorNamesTheText) {
    try {
        lsn::parse("0/XYZ");
        FAIL() << "no exception";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::malformed_lsn);
        EXPECT_NE(e.diag().library_message.find("\"0/XYZ\""), std::string::npos) << e.diag().library_message;
        EXPECT_NE(std::string(e.what()).find("0/XYZ"), std::string::npos);
    }
}

TEST(Lsn, MalformedTextErrorQuotesUnprintableBytesAndTruncates) {
    try {
        std::string text = "\x01/\"";
        text.append(100, 'A');  // (built in two steps: g++ 12 flags `string + string` with -Warray-bounds)
        lsn::parse(text);
        FAIL() << "no exception";
    } catch (const flypg::error& e) {
        const std::string& message = e.diag().library_message;
        EXPECT_NE(message.find("\\x01/\\x22"), std::string::npos) << message;
        EXPECT_NE(message.find("\"..."), std::string::npos) << message;
        EXPECT_LT(message.size(), 200u);
    }
}

TEST(Lsn, ComparesAsSixtyFourBitNumbers) {
    EXPECT_LT(lsn::parse("0/FFFFFFFF"), lsn::parse("1/0"));
    EXPECT_LT(lsn::parse("0/9"), lsn::parse("0/10"));
    EXPECT_GT(lsn::parse("2/0"), lsn::parse("1/FFFFFFFF"));
    EXPECT_EQ(lsn::parse("A/B"), lsn::from_value(0xA'0000000B));
    EXPECT_LE(lsn(), lsn::from_value(0));
}

TEST(Lsn, DistanceIsSignedBytesFromFirstToSecond) {
    const lsn a = lsn::parse("0/17BB660");
    const lsn b = lsn::parse("1/0");
    EXPECT_EQ(flypg::distance(a, b), std::int64_t{0x100000000} - 24'884'832);
    EXPECT_EQ(flypg::distance(b, a), -(std::int64_t{0x100000000} - 24'884'832));
    EXPECT_EQ(flypg::distance(a, a), 0);
    static_assert(flypg::distance(lsn::from_value(10), lsn::from_value(4)) == -6);
}

TEST(Lsn, StreamsAndHashes) {
    std::ostringstream out;
    out << lsn::parse("0/17BB660");
    EXPECT_EQ(out.str(), "0/17BB660");
    std::unordered_set<lsn> set{lsn::from_value(1), lsn::from_value(1), lsn::from_value(2)};
    EXPECT_EQ(set.size(), 2u);
}

}  // namespace
