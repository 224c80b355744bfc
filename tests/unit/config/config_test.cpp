#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "flypg/config.hpp"
#include "flypg/error.hpp"
#include "flypg/repo.hpp"

namespace {

using flypg::database_config;
using flypg::database_config_options;
using flypg::database_mode;
using flypg::local_read_only;
using flypg::resolve_database_config;
using testing::HasSubstr;
using testing::Not;
using testing::StartsWith;

using environment = std::map<std::string, std::string, std::less<>>;

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

std::string resolve_error(const environment& env,
                          std::string_view my_region,
                          std::string_view primary_region,
                          const database_config_options& options = {}) {
    return invalid_argument_message(
        [&] { (void)resolve_database_config(env, my_region, primary_region, options); });
}

// --- fly mode: FLY_APP_NAME set ---

TEST(DatabaseConfig, FlyModeRewritesDatabaseUrlForAReplicaRegion) {
    const environment env{{"FLY_APP_NAME", "app"},
                          {"DATABASE_URL", "postgres://u:p@my-db.internal:5432/app"}};
    const database_config config = resolve_database_config(env, "ams", "fra");
    EXPECT_EQ(config.mode, database_mode::fly);
    EXPECT_FALSE(config.in_primary_region());
    EXPECT_EQ(config.replica.to_string(), "postgres://u:p@top1.nearest.of.my-db.internal:5433/app");
    ASSERT_TRUE(config.primary);
    EXPECT_EQ(config.primary->to_string(), "postgres://u:p@top1.nearest.of.my-db.internal:5432/app");
    EXPECT_TRUE(config.replica_session_settings.empty());
}

TEST(DatabaseConfig, FlyModeReadsAndWritesThePrimaryInThePrimaryRegion) {
    const environment env{{"FLY_APP_NAME", "app"}, {"DATABASE_URL", "postgres://u:p@my-db.flycast:5432/app"}};
    const database_config config = resolve_database_config(env, "fra", "fra");
    EXPECT_TRUE(config.in_primary_region());
    EXPECT_EQ(config.replica.to_string(), "postgres://u:p@my-db.flycast:5432/app");
    EXPECT_EQ(config.primary, config.replica);
}

TEST(DatabaseConfig, FlyModeCanBeChosenWithoutFlyAppName) {
    const environment env{{"DATABASE_URL", "postgres://db.internal/app"}};
    database_config_options options;
    options.mode = database_mode::fly;
    EXPECT_EQ(resolve_database_config(env, "ams", "fra", options).replica.to_string(),
              "postgres://top1.nearest.of.db.internal:5433/app");
}

TEST(DatabaseConfig, FlyModeWithoutDatabaseUrlGivesFlyPostgresMessageAndNamesTheVariable) {
    const std::string message = resolve_error({{"FLY_APP_NAME", "app"}}, "ams", "fra");
    EXPECT_THAT(message, StartsWith("Unable to rewrite database url in fly_postgres. No url was specified."));
    EXPECT_THAT(message, HasSubstr("DATABASE_URL"));
    EXPECT_THAT(resolve_error({{"FLY_APP_NAME", "app"}, {"DATABASE_URL", ""}}, "ams", "fra"),
                HasSubstr("DATABASE_URL"));
}

TEST(DatabaseConfig, FlyModeMalformedDatabaseUrlNamesTheVariableNotThePassword) {
    const std::string message = resolve_error(
        {{"FLY_APP_NAME", "app"}, {"DATABASE_URL", "postgres://u:hunter2@h:x/app"}}, "ams", "fra");
    EXPECT_THAT(message, StartsWith("DATABASE_URL: "));
    EXPECT_THAT(message, HasSubstr("postgres://u:****@h:x/app"));
    EXPECT_THAT(message, Not(HasSubstr("hunter2")));
    EXPECT_THAT(
        resolve_error({{"FLY_APP_NAME", "app"}, {"DATABASE_URL", "postgres://10.0.0.1/app"}}, "ams", "fra"),
        StartsWith("DATABASE_URL: "));
}

// --- plain-host mode: FLYPG_PRIMARY_URL set ---

TEST(DatabaseConfig, PlainHostModeUsesExplicitUrlsUnchanged) {
    const environment env{{"FLYPG_PRIMARY_URL", "postgres://u:p@10.0.0.1:5432/app"},
                          {"FLYPG_REPLICA_URL", "postgres://u:p@[fd00::2]:6543/app"},
                          {"DATABASE_URL", "postgres://ignored/app"},
                          {"FLY_APP_NAME", "app"}};
    const database_config config = resolve_database_config(env, "ams", "fra");
    EXPECT_EQ(config.mode, database_mode::plain_hosts);
    ASSERT_TRUE(config.primary);
    EXPECT_EQ(config.primary->to_string(), "postgres://u:p@10.0.0.1:5432/app");
    EXPECT_EQ(config.replica.to_string(), "postgres://u:p@[fd00::2]:6543/app");
}

// scripts/pg-cluster prints the keyword form; it is the same connection as the URL.
TEST(DatabaseConfig, PlainHostModeTakesLibpqsKeywordForm) {
    const environment env{{"FLYPG_PRIMARY_URL", "host=127.0.0.1 port=55432 dbname=flypg user=flypg"},
                          {"FLYPG_REPLICA_URL", "host=127.0.0.1 port=55433 dbname=flypg user=flypg"}};
    const database_config config = resolve_database_config(env, "ams", "fra");
    EXPECT_EQ(config.mode, database_mode::plain_hosts);
    ASSERT_TRUE(config.primary);
    EXPECT_EQ(config.primary->to_string(), "postgresql://flypg@127.0.0.1:55432/flypg");
    EXPECT_EQ(config.replica.to_string(), "postgresql://flypg@127.0.0.1:55433/flypg");
}

TEST(DatabaseConfig, PlainHostReplicaDefaultsToThePrimaryInThePrimaryRegion) {
    const environment env{{"FLYPG_PRIMARY_URL", "postgres://primary.example.com/app"}};
    const database_config config = resolve_database_config(env, "fra", "fra");
    EXPECT_EQ(config.replica.host, "primary.example.com");
    EXPECT_EQ(config.primary, config.replica);
}

TEST(DatabaseConfig, PlainHostReplicaIsRequiredOutsideThePrimaryRegion) {
    const std::string message =
        resolve_error({{"FLYPG_PRIMARY_URL", "postgres://primary.example.com/app"}}, "ams", "fra");
    EXPECT_THAT(message, HasSubstr("FLYPG_REPLICA_URL"));
    EXPECT_THAT(message, HasSubstr("\"ams\""));
    EXPECT_THAT(message, HasSubstr("\"fra\""));
}

TEST(DatabaseConfig, PlainHostMalformedUrlsNameTheirVariable) {
    EXPECT_THAT(resolve_error({{"FLYPG_PRIMARY_URL", "primary:5432"}}, "fra", "fra"),
                StartsWith("FLYPG_PRIMARY_URL: "));
    EXPECT_THAT(resolve_error(
                    {{"FLYPG_PRIMARY_URL", "postgres://p/app"}, {"FLYPG_REPLICA_URL", "postgres://r:0/app"}},
                    "ams",
                    "fra"),
                StartsWith("FLYPG_REPLICA_URL: "));
}

TEST(DatabaseConfig, AReplicaUrlAloneIsPlainHostModeOutsideThePrimaryRegion) {
    const database_config config = resolve_database_config(
        environment{{"FLYPG_REPLICA_URL", "postgres://r.example.com/app"}}, "ams", "fra");
    EXPECT_EQ(config.mode, database_mode::plain_hosts);
    EXPECT_EQ(config.replica.host, "r.example.com");
    EXPECT_FALSE(config.primary.has_value());  // writes go through a primary-region node
}

TEST(DatabaseConfig, ThePrimaryRegionNeedsThePrimaryUrl) {
    const std::string message = resolve_error({{"FLYPG_REPLICA_URL", "postgres://r/app"}}, "fra", "fra");
    EXPECT_THAT(message,
                HasSubstr("FLYPG_PRIMARY_URL is not set; in the primary region it must name the primary"));
    EXPECT_THAT(message, HasSubstr("\"fra\""));
    database_config_options options;
    options.mode = database_mode::plain_hosts;
    EXPECT_THAT(resolve_error({{"DATABASE_URL", "postgres://h/app"}}, "fra", "fra", options),
                HasSubstr("FLYPG_PRIMARY_URL is not set"));
}

// --- local mode: neither ---

TEST(DatabaseConfig, LocalModeUsesDatabaseUrlAsGiven) {
    const environment env{{"DATABASE_URL", "postgres://postgres@localhost:5432/app_dev"}};
    const database_config config = resolve_database_config(env, "local", "local");
    EXPECT_EQ(config.mode, database_mode::local);
    EXPECT_EQ(config.replica.to_string(), "postgres://postgres@localhost:5432/app_dev");
    EXPECT_EQ(config.primary, config.replica);
}

TEST(DatabaseConfig, LocalModeOutsideThePrimaryRegionHasNoPrimaryUrl) {
    const environment env{{"DATABASE_URL", "postgres://localhost:5433/app"}};
    const database_config config = resolve_database_config(env, "ams", "fra");
    EXPECT_EQ(config.replica.port, 5433);
    EXPECT_FALSE(config.primary);
}

TEST(DatabaseConfig, LocalModeWithoutDatabaseUrlNamesIt) {
    EXPECT_THAT(resolve_error({}, "local", "local"), HasSubstr("DATABASE_URL is not set"));
    EXPECT_THAT(resolve_error({{"DATABASE_URL", "not a url"}}, "local", "local"),
                StartsWith("DATABASE_URL: "));
}

// --- read-only local mode ---

TEST(DatabaseConfig, ReadOnlyLocalMakesReplicaConnectionsReadOnly) {
    const environment env{{"DATABASE_URL", "postgres://localhost/app"}, {"FLYPG_READ_ONLY_LOCAL", "1"}};
    const database_config config = resolve_database_config(env, "local", "local");
    EXPECT_THAT(config.replica_session_settings,
                testing::ElementsAre("SET default_transaction_read_only = on"));
    EXPECT_EQ(config.primary, config.replica);
}

TEST(DatabaseConfig, RepoOptionsTakeTheUrlsAndTheReadOnlyMode) {
    const environment plain{{"DATABASE_URL", "postgres://localhost/app"}};
    const database_config writable = resolve_database_config(plain, "local", "local");
    const flypg::repo_options options = flypg::repo_options_for(writable);
    EXPECT_EQ(options.local_url, writable.replica.to_conninfo());
    ASSERT_TRUE(writable.primary.has_value());
    EXPECT_EQ(options.primary_url, writable.primary->to_conninfo());
    EXPECT_EQ(options.local, flypg::local_mode::as_is);

    const environment read_only{{"DATABASE_URL", "postgres://localhost/app"}, {"FLYPG_READ_ONLY_LOCAL", "1"}};
    EXPECT_EQ(flypg::repo_options_for(resolve_database_config(read_only, "local", "local")).local,
              flypg::local_mode::read_only);
}

TEST(DatabaseConfig, ReadOnlyLocalAcceptsCommonBooleanSpellings) {
    for (const char* on : {"1", "true", "TRUE", "on", "yes"}) {
        const environment env{{"DATABASE_URL", "postgres://localhost/app"}, {"FLYPG_READ_ONLY_LOCAL", on}};
        EXPECT_EQ(resolve_database_config(env, "local", "local").replica_session_settings.size(), 1u) << on;
    }
    for (const char* off : {"0", "false", "Off", "no", ""}) {
        const environment env{{"DATABASE_URL", "postgres://localhost/app"}, {"FLYPG_READ_ONLY_LOCAL", off}};
        EXPECT_TRUE(resolve_database_config(env, "local", "local").replica_session_settings.empty()) << off;
    }
}

TEST(DatabaseConfig, ReadOnlyLocalRejectsOtherValuesNamingTheVariable) {
    EXPECT_THAT(
        resolve_error({{"DATABASE_URL", "postgres://localhost/app"}, {"FLYPG_READ_ONLY_LOCAL", "maybe"}},
                      "local",
                      "local"),
        HasSubstr("FLYPG_READ_ONLY_LOCAL: \"maybe\""));
}

TEST(DatabaseConfig, ReadOnlyOptionOverridesTheEnvironment) {
    const environment env{{"DATABASE_URL", "postgres://localhost/app"}, {"FLYPG_READ_ONLY_LOCAL", "1"}};
    database_config_options options;
    options.read_only = local_read_only::off;
    EXPECT_TRUE(resolve_database_config(env, "local", "local", options).replica_session_settings.empty());
    options.read_only = local_read_only::on;
    EXPECT_EQ(resolve_database_config({{"DATABASE_URL", "postgres://h/a"}}, "local", "local", options)
                  .replica_session_settings.size(),
              1u);
}

// --- the environment itself ---

TEST(DatabaseConfig, EmptyVariablesCountAsUnset) {
    const environment env{
        {"FLYPG_PRIMARY_URL", ""}, {"FLY_APP_NAME", ""}, {"DATABASE_URL", "postgres://h/app"}};
    EXPECT_EQ(resolve_database_config(env, "local", "local").mode, database_mode::local);
}

TEST(DatabaseConfig, EmptyRegionsAreRejected) {
    EXPECT_THAT(resolve_error({{"DATABASE_URL", "postgres://h/app"}}, "", "fra"), HasSubstr("my_region"));
    EXPECT_THAT(resolve_error({{"DATABASE_URL", "postgres://h/app"}}, "ams", ""),
                HasSubstr("primary_region"));
}

TEST(DatabaseConfig, TakesALookupFunction) {
    std::vector<std::string> asked;
    const flypg::environment_lookup lookup = [&asked](std::string_view name) -> std::optional<std::string> {
        asked.emplace_back(name);
        if (name == "DATABASE_URL") return "postgres://h/app";
        return std::nullopt;
    };
    EXPECT_EQ(resolve_database_config(lookup, "local", "local").replica.host, "h");
    EXPECT_THAT(asked, testing::Contains("DATABASE_URL"));
}

TEST(DatabaseConfig, ReadsTheProcessEnvironment) {
    const char* previous = std::getenv("FLYPG_PRIMARY_URL");
    const std::optional<std::string> saved = previous ? std::optional<std::string>(previous) : std::nullopt;
    ::setenv("FLYPG_PRIMARY_URL", "postgres://from-process-env/app", 1);
    const database_config config = flypg::database_config_from_environment("fra", "fra");
    if (saved)
        ::setenv("FLYPG_PRIMARY_URL", saved->c_str(), 1);
    else
        ::unsetenv("FLYPG_PRIMARY_URL");
    EXPECT_EQ(config.mode, database_mode::plain_hosts);
    EXPECT_EQ(config.replica.host, "from-process-env");
}

}  // namespace
