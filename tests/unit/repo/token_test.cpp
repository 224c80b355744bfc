// Consistency tokens: what a write hands out and what a read accepts back.
#include <gtest/gtest.h>

#include "flypg/error.hpp"
#include "flypg/repo.hpp"

namespace {

TEST(ConsistencyToken, RoundTripsTheCommitLsn) {
    flypg::write_result w;
    w.commit_lsn = flypg::lsn::parse("16/B374D848");
    EXPECT_EQ(w.token(), "1.00000016b374d848");
    EXPECT_EQ(flypg::parse_consistency_token(w.token()), w.commit_lsn);
    w.commit_lsn = flypg::lsn::from_value(~std::uint64_t{0});
    EXPECT_EQ(flypg::parse_consistency_token(w.token()), w.commit_lsn);
}

TEST(ConsistencyToken, AnythingElseIsRefusedWithoutBeingQuoted) {
    for (const std::string bad : {"",
                                  "2.00000016b374d848",
                                  "1.00000016B374D848",
                                  "1.00000016b374d84",
                                  "1.00000016b374d8480",
                                  "1.0000001-b374d848",
                                  "1.zz\n<script>"}) {
        try {
            (void)flypg::parse_consistency_token(bad);
            ADD_FAILURE() << "accepted: " << bad;
        } catch (const flypg::error& e) {
            EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
            if (!bad.empty()) {
                EXPECT_EQ(std::string(e.what()).find(bad), std::string::npos) << e.what();
            }
        }
    }
}

}  // namespace
