#include "flypg/error.hpp"

#include <gtest/gtest.h>

namespace {

TEST(Sqlstate, RoundTripsThroughErrorCode) {
    const std::error_code ec = flypg::sqlstate("23505");
    EXPECT_EQ(ec.category(), flypg::sqlstate_category());
    EXPECT_EQ(flypg::sqlstate_text(ec), "23505");
    EXPECT_EQ(flypg::sqlstate_text(flypg::sqlstate("40P01")), "40P01");
    EXPECT_NE(flypg::sqlstate("23505"), flypg::sqlstate("23503"));
}

TEST(Sqlstate, MessageNamesTheCodeAndItsPostgresName) {
    EXPECT_EQ(flypg::sqlstate("23505").message(), "SQLSTATE 23505 (unique_violation)");
    EXPECT_EQ(flypg::sqlstate("25006").message(), "SQLSTATE 25006 (read_only_sql_transaction)");
    EXPECT_EQ(flypg::sqlstate_name("ZZZZZ"), "");
}

TEST(Sqlstate, SuccessIsAnEmptyCode) {
    EXPECT_FALSE(flypg::sqlstate("00000"));
}

TEST(Sqlstate, MalformedTextIsInvalidArgument) {
    EXPECT_EQ(flypg::sqlstate("2350"), flypg::errc::invalid_argument);
    EXPECT_EQ(flypg::sqlstate("2350a"), flypg::errc::invalid_argument);
    EXPECT_EQ(flypg::sqlstate_text(flypg::errc::timeout), "");
}

TEST(Conditions, GroupSqlstatesByWhatTheCallerShouldDo) {
    EXPECT_EQ(flypg::sqlstate("40001"), flypg::condition::retry_transaction);
    EXPECT_EQ(flypg::sqlstate("40P01"), flypg::condition::retry_transaction);
    EXPECT_NE(flypg::sqlstate("23505"), flypg::condition::retry_transaction);
    EXPECT_EQ(flypg::sqlstate("25006"), flypg::condition::replica_read_only);
    EXPECT_EQ(flypg::sqlstate("08006"), flypg::condition::connection_error);
    EXPECT_EQ(flypg::sqlstate("08006"), flypg::condition::retry_call);
    EXPECT_EQ(flypg::sqlstate("57P01"), flypg::condition::retry_call);
    EXPECT_NE(flypg::sqlstate("42P01"), flypg::condition::retry_call);
}

TEST(Conditions, GroupLibraryErrors) {
    EXPECT_EQ(make_error_code(flypg::errc::connection_lost), flypg::condition::retry_call);
    EXPECT_EQ(make_error_code(flypg::errc::connection_lost), flypg::condition::connection_error);
    EXPECT_EQ(make_error_code(flypg::errc::outcome_unknown), flypg::condition::outcome_unknown);
    EXPECT_NE(make_error_code(flypg::errc::outcome_unknown), flypg::condition::retry_call);
    EXPECT_NE(make_error_code(flypg::errc::type_mismatch), flypg::condition::retry_call);
}

TEST(Error, KeepsServerTextApartFromLibraryText) {
    flypg::diagnostics diag;
    diag.server_message = "duplicate key value violates unique constraint \"t_pkey\"";
    diag.detail = "Key (id)=(1) already exists.";
    diag.origin = flypg::origin::primary;
    const flypg::error e(flypg::sqlstate("23505"), diag);
    EXPECT_EQ(e.code(), flypg::sqlstate("23505"));
    EXPECT_EQ(e.diag().detail, "Key (id)=(1) already exists.");
    EXPECT_EQ(e.diag().origin, flypg::origin::primary);
    EXPECT_NE(std::string(e.what()).find("duplicate key"), std::string::npos);
}

}  // namespace
