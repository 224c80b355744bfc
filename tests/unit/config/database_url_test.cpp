#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "flypg/config.hpp"
#include "flypg/error.hpp"

namespace {

using flypg::database_url;
using flypg::rewrite_database_url;
using testing::HasSubstr;
using testing::Not;

// The library message of the flypg::error that `f` throws with errc::invalid_argument.
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

std::string parse_error(const std::string& url) {
    return invalid_argument_message([&] { (void)database_url::parse(url); });
}

// --- rewrite_database_url: fly_postgres's production rules ---

TEST(RewriteDatabaseUrl, PrefixesThePlainHostWithTop1NearestOf) {
    EXPECT_EQ(rewrite_database_url("postgres://app:secret@my-db.internal:5432/app", "fra", "fra"),
              "postgres://app:secret@top1.nearest.of.my-db.internal:5432/app");
}

TEST(RewriteDatabaseUrl, UsesTheReplicaPortOutsideThePrimaryRegion) {
    EXPECT_EQ(rewrite_database_url("postgres://app:secret@my-db.internal:5432/app", "ams", "fra"),
              "postgres://app:secret@top1.nearest.of.my-db.internal:5433/app");
}

TEST(RewriteDatabaseUrl, AddsThePortOutsideThePrimaryRegionEvenWhenAbsent) {
    EXPECT_EQ(rewrite_database_url("postgres://u@db.internal/app", "ams", "fra"),
              "postgres://u@top1.nearest.of.db.internal:5433/app");
}

TEST(RewriteDatabaseUrl, LeavesAnAbsentPortAbsentInThePrimaryRegion) {
    EXPECT_EQ(rewrite_database_url("postgres://u@db.internal/app", "fra", "fra"),
              "postgres://u@top1.nearest.of.db.internal/app");
}

TEST(RewriteDatabaseUrl, LeavesFlycastHostsUnchanged) {
    EXPECT_EQ(rewrite_database_url("postgres://u:p@my-db.flycast:5432/app", "fra", "fra"),
              "postgres://u:p@my-db.flycast:5432/app");
    EXPECT_EQ(rewrite_database_url("postgres://u:p@my-db.flycast:5432/app", "ams", "fra"),
              "postgres://u:p@my-db.flycast:5433/app");
    EXPECT_EQ(rewrite_database_url("postgres://u:p@top2.nearest.of.my-db.flycast/app", "fra", "fra"),
              "postgres://u:p@top2.nearest.of.my-db.flycast/app");
}

TEST(RewriteDatabaseUrl, LeavesTop1HostsUnchanged) {
    EXPECT_EQ(rewrite_database_url("postgres://u:p@top1.nearest.of.my-db.internal:5432/app", "fra", "fra"),
              "postgres://u:p@top1.nearest.of.my-db.internal:5432/app");
    EXPECT_EQ(rewrite_database_url("postgres://u:p@TOP1.NEAREST.OF.my-db.internal/app", "fra", "fra"),
              "postgres://u:p@TOP1.NEAREST.OF.my-db.internal/app");
}

TEST(RewriteDatabaseUrl, ReplacesTop2WithTop1) {
    EXPECT_EQ(rewrite_database_url("postgres://u:p@top2.nearest.of.my-db.internal:5432/app", "ams", "fra"),
              "postgres://u:p@top1.nearest.of.my-db.internal:5433/app");
}

TEST(RewriteDatabaseUrl, KeepsUserinfoDatabaseAndQuery) {
    EXPECT_EQ(
        rewrite_database_url(
            "postgresql://app%40corp:p%2Fw%40rd@db.internal:6000/my%20db?sslmode=require&connect_timeout=3",
            "ams",
            "fra"),
        "postgresql://app%40corp:p%2Fw%40rd@top1.nearest.of.db.internal:5433/my%20db"
        "?sslmode=require&connect_timeout=3");
}

TEST(RewriteDatabaseUrl, MissingUrlGivesFlyPostgresExactMessage) {
    EXPECT_EQ(invalid_argument_message([] { (void)rewrite_database_url("", "ams", "fra"); }),
              "Unable to rewrite database url in fly_postgres. No url was specified.");
}

TEST(RewriteDatabaseUrl, MalformedUrlIsInvalidArgumentNamingTheUrlWithoutThePassword) {
    const std::string message = invalid_argument_message(
        [] { (void)rewrite_database_url("postgres://u:hunter2@db:99999/app", "a", "b"); });
    EXPECT_THAT(message, HasSubstr("postgres://u:****@db:99999/app"));
    EXPECT_THAT(message, HasSubstr("out of range"));
    EXPECT_THAT(message, Not(HasSubstr("hunter2")));
}

TEST(RewriteDatabaseUrl, RefusesHostsNoDnsPrefixCanFix) {
    EXPECT_THAT(
        invalid_argument_message([] { (void)rewrite_database_url("postgres://u:pw@10.0.0.5/db", "a", "a"); }),
        HasSubstr("IP address"));
    EXPECT_THAT(
        invalid_argument_message([] { (void)rewrite_database_url("postgres://u:pw@[::1]/db", "a", "a"); }),
        HasSubstr("IP address"));
    EXPECT_THAT(invalid_argument_message([] { (void)rewrite_database_url("postgres:///db", "a", "a"); }),
                HasSubstr("no host"));
    EXPECT_THAT(invalid_argument_message(
                    [] { (void)rewrite_database_url("postgres://%2Frun%2Fpostgresql/db", "a", "a"); }),
                HasSubstr("Unix socket"));
    EXPECT_THAT(
        invalid_argument_message([] { (void)rewrite_database_url("postgres://u:pw@10.0.0.5/db", "a", "a"); }),
        HasSubstr("postgres://u:****@10.0.0.5/db"));
}

// --- database_url::parse ---

TEST(DatabaseUrl, ParsesEveryPart) {
    const database_url url = database_url::parse(
        "postgresql://app%3Auser:p%40ss%3Aw@db.example.com:6432/my%2Fdb?sslmode=require&x=a%26b");
    EXPECT_EQ(url.scheme, "postgresql");
    EXPECT_EQ(url.user, "app:user");
    EXPECT_EQ(url.password, "p@ss:w");
    EXPECT_EQ(url.host, "db.example.com");
    EXPECT_EQ(url.port, 6432);
    EXPECT_EQ(url.database, "my/db");
    const std::vector<std::pair<std::string, std::string>> options{{"sslmode", "require"}, {"x", "a&b"}};
    EXPECT_EQ(url.options, options);
}

TEST(DatabaseUrl, AcceptsBothSchemesInAnyCase) {
    EXPECT_EQ(database_url::parse("postgres://h/d").scheme, "postgres");
    EXPECT_EQ(database_url::parse("POSTGRESQL://h/d").scheme, "postgresql");
}

TEST(DatabaseUrl, EverythingButTheSchemeIsOptional) {
    const database_url url = database_url::parse("postgres://");
    EXPECT_EQ(url.user, "");
    EXPECT_FALSE(url.password);
    EXPECT_EQ(url.host, "");
    EXPECT_FALSE(url.port);
    EXPECT_EQ(url.database, "");
    EXPECT_TRUE(url.options.empty());
    EXPECT_FALSE(database_url::parse("postgres://db:5432").password);
    EXPECT_EQ(database_url::parse("postgres://u:@h").password, "");
    EXPECT_EQ(database_url::parse("postgres://:5433/d").port, 5433);
}

TEST(DatabaseUrl, ParsesBracketedIpv6Hosts) {
    const database_url loopback = database_url::parse("postgres://u:p@[::1]:5432/db");
    EXPECT_EQ(loopback.host, "::1");
    EXPECT_EQ(loopback.port, 5432);
    EXPECT_TRUE(loopback.host_is_ip_address());
    const database_url zoned = database_url::parse("postgres://[fe80::1%25eth0]/db");
    EXPECT_EQ(zoned.host, "fe80::1%eth0");
    EXPECT_FALSE(zoned.port);
    EXPECT_EQ(zoned.to_string(), "postgres://[fe80::1%25eth0]/db");
}

TEST(DatabaseUrl, ParsesSocketDirectoryHosts) {
    const database_url url = database_url::parse("postgresql://%2Frun%2Fpostgresql/app");
    EXPECT_EQ(url.host, "/run/postgresql");
    EXPECT_FALSE(url.host_is_ip_address());
    EXPECT_EQ(url.to_string(), "postgresql://%2Frun%2Fpostgresql/app");
}

TEST(DatabaseUrl, PasswordMayHoldARawAtSign) {
    const database_url url = database_url::parse("postgres://u:p@ss@h/d");
    EXPECT_EQ(url.password, "p@ss");
    EXPECT_EQ(url.host, "h");
    EXPECT_EQ(url.to_string(), "postgres://u:p%40ss@h/d");
}

TEST(DatabaseUrl, DistinguishesIpAddressesFromNames) {
    EXPECT_TRUE(database_url::parse("postgres://127.0.0.1/d").host_is_ip_address());
    EXPECT_FALSE(database_url::parse("postgres://localhost/d").host_is_ip_address());
    EXPECT_FALSE(database_url::parse("postgres://10.0.0.5.nip.io/d").host_is_ip_address());
}

TEST(DatabaseUrl, ToStringRoundTrips) {
    for (const char* text : {"postgres://u:p@h:1/d?a=b&c=d",
                             "postgresql://h",
                             "postgresql://h?sslmode=disable",
                             "postgres://%C3%A9l%C3%A8ve:p%20w%2F%3F%23@h/d%20b",
                             "postgres://[::1]:5432",
                             "postgres://u@h/d"}) {
        const database_url url = database_url::parse(text);
        EXPECT_EQ(url.to_string(), text);
        EXPECT_EQ(database_url::parse(url.to_string()), url) << text;
    }
}

TEST(DatabaseUrl, RedactedMasksOnlyThePassword) {
    EXPECT_EQ(database_url::parse("postgres://u:secret@h:1/d?sslmode=require").redacted(),
              "postgres://u:****@h:1/d?sslmode=require");
    EXPECT_EQ(database_url::parse("postgres://u@h/d").redacted(), "postgres://u@h/d");
}

TEST(DatabaseUrl, ConvertsToQuotedConninfo) {
    EXPECT_EQ(database_url::parse("postgres://u:it's%5C@[::1]:5433/my%20db?sslmode=require").to_conninfo(),
              "host='::1' port='5433' user='u' password='it\\'s\\\\' dbname='my db' sslmode='require'");
    EXPECT_EQ(database_url::parse("postgres://h").to_conninfo(), "host='h'");
    EXPECT_EQ(database_url::parse("postgres://").to_conninfo(), "");
}

TEST(DatabaseUrl, MalformedUrlsAreInvalidArgumentsNamingTheUrl) {
    EXPECT_THAT(parse_error("db/app"), HasSubstr("not a postgres:// or postgresql:// URL"));
    EXPECT_THAT(parse_error("mysql://h/d"), HasSubstr("scheme"));
    EXPECT_THAT(parse_error("postgres://h:/d"), HasSubstr("empty port"));
    EXPECT_THAT(parse_error("postgres://h:54x/d"), HasSubstr("not a number"));
    EXPECT_THAT(parse_error("postgres://h:0/d"), HasSubstr("out of range"));
    EXPECT_THAT(parse_error("postgres://h:65536/d"), HasSubstr("out of range"));
    EXPECT_THAT(parse_error("postgres://h:99999999999999999999/d"), HasSubstr("out of range"));
    EXPECT_THAT(parse_error("postgres://::1/d"), HasSubstr("brackets"));
    EXPECT_THAT(parse_error("postgres://[::1/d"), HasSubstr("']'"));
    EXPECT_THAT(parse_error("postgres://[db]/d"), HasSubstr("not an IPv6 address"));
    EXPECT_THAT(parse_error("postgres://[::1]x/d"), HasSubstr("after the IPv6 address"));
    EXPECT_THAT(parse_error("postgres://h1,h2/d"), HasSubstr("several hosts"));
    // Found by database_url_fuzz: it printed back as "[my-db:]", which is no IPv6 address.
    EXPECT_THAT(parse_error("postgres://my-db%3a:5342/app"), HasSubstr("must be written in brackets"));
    EXPECT_THAT(parse_error("postgres://h/d#x"), HasSubstr("'#'"));
    EXPECT_THAT(parse_error("postgres://h/d b"), HasSubstr("space"));
    EXPECT_THAT(parse_error("postgres://u:p%zz@h/d"), HasSubstr("percent escape"));
    EXPECT_THAT(parse_error("postgres://u:p%4@h/d"), HasSubstr("percent escape"));
    EXPECT_THAT(parse_error("postgres://h/d%00"), HasSubstr("NUL"));
    EXPECT_THAT(parse_error("postgres://h/d?sslmode"), HasSubstr("not key=value"));
    EXPECT_THAT(parse_error("postgres://h/d?ssl-mode=x"), HasSubstr("connection keyword"));
    EXPECT_THAT(parse_error("postgres://h<x>/d"), HasSubstr("the host contains \"<\""));
    EXPECT_THAT(parse_error("postgres://h:1/d?a=b&c"), HasSubstr("postgres://h:1/d?a=b&c"));
}

// What scripts/pg-cluster prints, and what libpq users write: the keyword/value form, read by libpq's
// own parser and held to the URL's rules.
TEST(DatabaseUrl, AcceptsLibpqsKeywordForm) {
    const database_url url = database_url::parse(
        "host=127.0.0.1 port=5433 dbname=flypg user=app password='it\\'s x' sslmode=require");
    EXPECT_EQ(url.host, "127.0.0.1");
    EXPECT_EQ(url.port, std::optional<std::uint16_t>(5433));
    EXPECT_EQ(url.database, "flypg");
    EXPECT_EQ(url.user, "app");
    EXPECT_EQ(url.password, std::optional<std::string>("it's x"));
    ASSERT_EQ(url.options.size(), 1u);
    EXPECT_EQ(url.options[0], (std::pair<std::string, std::string>("sslmode", "require")));
    // The same connection as its URL form.
    EXPECT_EQ(database_url::parse(url.to_string()), url);
    EXPECT_EQ(database_url::parse("host=/run/postgresql dbname=app").host, "/run/postgresql");
}

TEST(DatabaseUrl, RefusesKeywordFormsItCannotRepresentNamingWhy) {
    EXPECT_THAT(parse_error("host=h port=x"), HasSubstr("port \"x\" is not a number 1-65535"));
    EXPECT_THAT(parse_error("host=h port=70000"), HasSubstr("1-65535"));
    EXPECT_THAT(parse_error("host=h1,h2 dbname=d"), HasSubstr("several hosts"));
    EXPECT_THAT(parse_error("host=h nosuchkeyword=1"), HasSubstr("nosuchkeyword"));
    EXPECT_THAT(parse_error("host=h dbname='unterminated"), HasSubstr("invalid database conninfo"));
    EXPECT_THAT(parse_error(std::string("host=h\0 dbname=d", 16)), HasSubstr("NUL"));
    // libpq quotes what it cannot read; next to a password that could be a piece of it.
    const std::string message = parse_error("host=h password=s3cret tail");
    EXPECT_THAT(message, Not(HasSubstr("s3cret")));
    EXPECT_THAT(message, Not(HasSubstr("tail")));
    EXPECT_THAT(parse_error("host=h password='s3cret"), Not(HasSubstr("s3cret")));
}

TEST(DatabaseUrl, ErrorMessagesNeverShowThePassword) {
    for (const char* text : {"postgres://u:s3cret@h:x/d",
                             "postgres://u:s3cret/with/slash@h/d#",
                             "postgres://u:s3cret#hash@h/d",
                             "postgres://u:s3cret?q@h:0/d",
                             "postgres://u:s3cret@@h:0/d"}) {
        const std::string message = parse_error(text);
        EXPECT_THAT(message, Not(HasSubstr("s3cret"))) << text;
        EXPECT_THAT(message, HasSubstr("****")) << text;
    }
}

TEST(RedactDatabaseUrl, MasksUrlAndKeywordPasswords) {
    EXPECT_EQ(flypg::redact_database_url("postgres://u:pw@h/d"), "postgres://u:****@h/d");
    EXPECT_EQ(flypg::redact_database_url("postgres://h:5432/d"), "postgres://h:5432/d");
    EXPECT_EQ(flypg::redact_database_url("host=h password=secret dbname=d"), "host=h password=**** dbname=d");
    EXPECT_EQ(flypg::redact_database_url("host=h password = 'se cr\\'et' dbname=d"),
              "host=h password = **** dbname=d");
    EXPECT_EQ(flypg::redact_database_url("postgres://h/d?password=x&a=b"),
              "postgres://h/d?password=****&a=b");
}

}  // namespace
