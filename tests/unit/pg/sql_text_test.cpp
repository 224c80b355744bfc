// SQL text and other strings that libpq takes as C strings: refused before anything is sent
// when libpq would cut them short, or when there is no statement at all.
#include <gtest/gtest.h>

#include <string>

#include "flypg/error.hpp"
#include "flypg/pg/connection.hpp"

namespace {

std::string message_of(std::string_view sql, std::string_view what = "the SQL text") {
    try {
        flypg::pg::check_sql_text(sql, what);
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        return e.what();
    }
    return "accepted";
}

TEST(SqlText, ANulByteIsRefusedWithItsOffset) {
    const std::string cut("DELETE FROM t\0 WHERE id = 1", 27);
    const std::string message = message_of(cut);
    EXPECT_NE(message.find("the SQL text holds a NUL byte at offset 13"), std::string::npos) << message;
    EXPECT_NE(message.find("nothing was sent"), std::string::npos) << message;
    EXPECT_NE(message_of(std::string("SELECT 1\0", 9), "statement 2 of 3").find("statement 2 of 3 holds"),
              std::string::npos);
}

TEST(SqlText, EmptyTextIsRefused) {
    EXPECT_NE(message_of("").find("the SQL text is empty"), std::string::npos);
    EXPECT_NE(message_of(" \n\t ").find("is empty"), std::string::npos);
}

TEST(SqlText, StatementsPass) {
    EXPECT_EQ(message_of("SELECT 1"), "accepted");
    EXPECT_EQ(message_of("  UPDATE t SET a = 'ü' WHERE id = $1"), "accepted");
}

TEST(SqlText, CStringsWithANulAreRefused) {
    EXPECT_NO_THROW(flypg::pg::check_no_nul("host=db port=5432", "the connection string"));
    try {
        flypg::pg::check_no_nul(std::string("host=db\0 port=1", 15), "the connection string");
        ADD_FAILURE() << "accepted";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        EXPECT_NE(std::string(e.what()).find("the connection string holds a NUL byte at offset 7"),
                  std::string::npos);
    }
}

}  // namespace
