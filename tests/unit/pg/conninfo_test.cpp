// Connection strings compared and described without connecting.
#include <gtest/gtest.h>

#include "flypg/pg/connection.hpp"

namespace {

using flypg::pg::database_label;
using flypg::pg::same_database;

TEST(Conninfo, TheSameDatabaseInEitherForm) {
    EXPECT_TRUE(
        same_database("host=10.0.0.5 port=5433 dbname=app user=u", "postgresql://u@10.0.0.5:5433/app"));
    EXPECT_TRUE(same_database("host=db port=5432 dbname=app", "dbname=app port=5432 host=db"));
}

TEST(Conninfo, AnotherHostPortDatabaseOrUserIsAnotherDatabase) {
    const char* base = "host=db port=5432 dbname=app user=u";
    EXPECT_FALSE(same_database(base, "host=db2 port=5432 dbname=app user=u"));
    EXPECT_FALSE(same_database(base, "host=db port=5433 dbname=app user=u"));
    EXPECT_FALSE(same_database(base, "host=db port=5432 dbname=other user=u"));
    EXPECT_FALSE(same_database(base, "host=db port=5432 dbname=app user=v"));
    EXPECT_FALSE(same_database(base, "host=db nonsense=1"));
}

TEST(Conninfo, TheLabelNamesTheServerAndNeverThePassword) {
    EXPECT_EQ(database_label("postgresql://u:secret@10.0.0.5:5433/app"),
              "host 10.0.0.5 port 5433 database app");
    EXPECT_EQ(database_label("host=db password=secret"), "host db");
    EXPECT_EQ(database_label("nonsense=1"), "(malformed connection string)");
}

}  // namespace
