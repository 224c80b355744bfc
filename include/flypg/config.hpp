// Where this node's databases are: fly_postgres's URL rules, explicit URLs for plain hosts, and a
// read-only local mode for development.
//
// The pure functions come first. `rewrite_database_url` applies fly_postgres's production rules to
// one URL; `database_url` parses, prints and converts `postgres://` / `postgresql://` URLs:
//
//     flypg::rewrite_database_url("postgres://app:secret@my-db.internal:5432/app", "ams", "fra");
//     // "postgres://app:secret@top1.nearest.of.my-db.internal:5433/app"
//
// `resolve_database_config` then decides, from an environment and the two regions, which URL this
// node reads from and which one is the writable primary. The environment is a lookup function or a
// map, so tests stay hermetic; `database_config_from_environment` reads the process environment.
// Pass the regions from flypg::rpc::my_region() and flypg::rpc::primary_region():
//
//     flypg::database_config config = flypg::database_config_from_environment(
//         flypg::rpc::my_region(), flypg::rpc::primary_region());
//     flypg::pg::connect_options read_side{.conninfo = config.replica.to_conninfo(),
//                                          .session_settings = config.replica_session_settings};
//
// Modes (database_mode), chosen from the environment unless database_config_options::mode says:
//
//   plain_hosts  chosen when FLYPG_PRIMARY_URL or FLYPG_REPLICA_URL is set.
//                primary: FLYPG_PRIMARY_URL (required in the primary region; outside it, optional:
//                writes go through a primary-region node); replica: FLYPG_REPLICA_URL (in the
//                primary region it defaults to the primary).
//   fly          chosen when FLY_APP_NAME is set (and neither of those is).
//                primary: DATABASE_URL rewritten as in the primary region (port kept);
//                replica: DATABASE_URL rewritten for this region (port 5433 outside it).
//   local        otherwise. primary: DATABASE_URL, in the primary region only; replica: DATABASE_URL.
//
// FLYPG_READ_ONLY_LOCAL=1 (or database_config_options::read_only) adds
// "SET default_transaction_read_only = on" to replica_session_settings, so the local database acts as
// a replica in development (fly_postgres's make_connection_read_only!).
//
// An empty environment variable counts as unset. Every missing or malformed value throws
// flypg::error with errc::invalid_argument and a message that names the variable; passwords in
// messages are masked as "****".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flypg {

/// A parsed `postgres://` or `postgresql://` URL (libpq's URI form). All text fields are
/// percent-decoded. Regular value type.
struct database_url {
    std::string scheme = "postgresql";    ///< "postgres" or "postgresql" (lower case).
    std::string user;                     ///< Empty when the URL names none.
    std::optional<std::string> password;  ///< Absent when the URL has none; may be empty ("u:@h").
    std::string host;                     ///< A DNS name, an IP address (IPv6 without brackets), a
                                          ///< Unix socket directory ("/run/postgresql"), or empty.
    std::optional<std::uint16_t> port;    ///< Absent when the URL names none (libpq uses 5432).
    std::string database;                 ///< Empty when the URL names none.
    /// Query parameters in order ("sslmode=require&application_name=x"); libpq reads each as a
    /// connection keyword.
    std::vector<std::pair<std::string, std::string>> options;

    /// Parses `url`. Accepted: the scheme in any case, userinfo with percent-encoding (a password may
    /// hold a raw '@'; the last '@' of the authority ends it), one host (a name, an IPv4 address, a
    /// bracketed IPv6 address such as "[::1]" or "[fe80::1%25eth0]", or a percent-encoded socket
    /// directory), an optional port 1-65535, an optional database path and a query string of
    /// key=value pairs. Rejected: other schemes, several hosts ("h1,h2"), unbracketed IPv6, a
    /// fragment ('#', write it as %23 in a password), malformed percent escapes, and NUL bytes.
    /// libpq's keyword/value form ("host=127.0.0.1 port=5433 dbname=app user=app", as
    /// scripts/pg-cluster prints it) is accepted too: text without "://" that holds a '=' is read by
    /// libpq's own parser (no connection is made) and held to the same rules; other keywords
    /// become `options`.
    /// @throws flypg::error with errc::invalid_argument; the message quotes the URL, password masked.
    static database_url parse(std::string_view url);

    /// The URL text, percent-encoding only what has to be (parse(u.to_string()) == u).
    std::string to_string() const;
    /// to_string() with the password replaced by "****": safe for logs and messages.
    std::string redacted() const;
    /// The libpq keyword/value form ("host='h' port='5433' user='u' password='p' dbname='d' ..."),
    /// with the query parameters as further keywords. flypg::pg::connection accepts both forms; use
    /// this one where text is appended to a connection string.
    std::string to_conninfo() const;

    /// Whether `host` is an IPv4 or IPv6 address rather than a name or socket directory.
    bool host_is_ip_address() const;

    friend bool operator==(const database_url&, const database_url&) = default;
};

/// Masks the password of a URL that may be malformed (best effort: everything between the first
/// ':' of the authority and its last '@', and `password=` values of keyword/value strings).
std::string redact_database_url(std::string_view url);

/// fly_postgres's production rewrite of a database URL (Fly.Postgres.config_repo_url):
/// - host: unchanged if it contains ".flycast" or already starts with "top1.nearest.of.";
///   a leading "top2.nearest.of." becomes "top1.nearest.of."; otherwise "top1.nearest.of." is
///   prefixed, so Fly's DNS answers with the nearest instance;
/// - port: 5433 (the replica port of Fly Postgres) when `my_region != primary_region`, else unchanged
///   (including absent);
/// - everything else is kept; the result is database_url::to_string() of the rewritten URL.
/// @throws flypg::error with errc::invalid_argument: an empty `url` gives exactly the message
///   "Unable to rewrite database url in fly_postgres. No url was specified."; a malformed URL, or
///   one whose host is missing, an IP address or a socket directory (the prefixed name could never
///   resolve; fly_postgres would produce it anyway), names the URL with its password masked.
std::string rewrite_database_url(std::string url,
                                 std::string_view my_region,
                                 std::string_view primary_region);

/// How the database URLs were found (see the table at the top of this header).
enum class database_mode {
    local,        ///< DATABASE_URL as given: development.
    fly,          ///< DATABASE_URL with fly_postgres's production rewrite.
    plain_hosts,  ///< FLYPG_PRIMARY_URL and/or FLYPG_REPLICA_URL: any DNS, any ports, off Fly.
};

/// Whether the local database acts as a replica (development).
enum class local_read_only {
    off,
    on,  ///< Reads connect with "SET default_transaction_read_only = on".
};

/// Overrides for what the environment would choose.
struct database_config_options {
    /// The mode; absent: detected from the environment as described above.
    std::optional<database_mode> mode;
    /// Read-only local mode; absent: FLYPG_READ_ONLY_LOCAL ("1"/"true"/"on"/"yes" or
    /// "0"/"false"/"off"/"no", any case; anything else is an error naming it).
    std::optional<local_read_only> read_only;
};

/// The databases of this node.
struct database_config {
    database_mode mode = database_mode::local;
    std::string my_region;
    std::string primary_region;
    /// The writable primary. Absent only outside the primary region when nothing names it (local
    /// mode, or plain hosts with FLYPG_REPLICA_URL alone): this node's writes go to a
    /// primary-region node.
    std::optional<database_url> primary;
    /// The database this node reads from: the replica outside the primary region; in the primary
    /// region the primary itself, unless FLYPG_REPLICA_URL names another database there.
    database_url replica;
    /// Statements to run after connecting to `replica` (pg::connect_options::session_settings).
    /// In read-only local mode: {"SET default_transaction_read_only = on"}; never applied to `primary`.
    std::vector<std::string> replica_session_settings;

    /// Whether this node runs in the primary region (my_region == primary_region).
    bool in_primary_region() const noexcept { return my_region == primary_region; }
};

/// An environment: the value of a variable, or std::nullopt when unset.
using environment_lookup = std::function<std::optional<std::string>(std::string_view name)>;

/// The session setting of read-only local mode.
inline constexpr std::string_view read_only_session_setting = "SET default_transaction_read_only = on";

/// Resolves this node's databases from `environment` (variables DATABASE_URL, FLY_APP_NAME,
/// FLYPG_PRIMARY_URL, FLYPG_REPLICA_URL, FLYPG_READ_ONLY_LOCAL) and the two regions.
/// @throws flypg::error with errc::invalid_argument naming the missing or malformed variable (or
///   the empty region argument).
database_config resolve_database_config(const environment_lookup& environment,
                                        std::string_view my_region,
                                        std::string_view primary_region,
                                        const database_config_options& options = {});

/// As above, with the environment given as a map (variables absent from it are unset).
database_config resolve_database_config(const std::map<std::string, std::string, std::less<>>& environment,
                                        std::string_view my_region,
                                        std::string_view primary_region,
                                        const database_config_options& options = {});

/// As above, reading the process environment (std::getenv).
database_config database_config_from_environment(std::string_view my_region,
                                                 std::string_view primary_region,
                                                 const database_config_options& options = {});

}  // namespace flypg
