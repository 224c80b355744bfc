// Resolution of this node's databases from an environment (see flypg/config.hpp for the rules).
#include <absl/strings/ascii.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "flypg/config.hpp"
#include "flypg/error.hpp"

namespace flypg {
namespace {

constexpr std::string_view database_url_variable = "DATABASE_URL";
constexpr std::string_view fly_app_name_variable = "FLY_APP_NAME";
constexpr std::string_view primary_url_variable = "FLYPG_PRIMARY_URL";
constexpr std::string_view replica_url_variable = "FLYPG_REPLICA_URL";
constexpr std::string_view read_only_variable = "FLYPG_READ_ONLY_LOCAL";

[[noreturn]] void fail(std::string message) {
    throw_error(errc::invalid_argument, std::move(message));
}

// Runs `f`, prefixing the message of any flypg::error it throws with the variable it came from.
template <class F>
auto naming(std::string_view variable, F&& f) {
    try {
        return f();
    } catch (const error& e) {
        throw_error(e.code(), std::string(variable) + ": " + e.diag().library_message);
    }
}

class environment_reader {
  public:
    explicit environment_reader(const environment_lookup& lookup) : lookup_(lookup) {}

    // An empty value counts as unset.
    std::optional<std::string> get(std::string_view name) const {
        std::optional<std::string> value = lookup_(name);
        if (value && value->empty()) value.reset();
        return value;
    }

  private:
    const environment_lookup& lookup_;
};

local_read_only parse_read_only(const std::optional<std::string>& value) {
    if (!value) return local_read_only::off;
    const std::string lower = absl::AsciiStrToLower(*value);
    if (lower == "1" || lower == "true" || lower == "on" || lower == "yes") return local_read_only::on;
    if (lower == "0" || lower == "false" || lower == "off" || lower == "no") return local_read_only::off;
    fail(std::string(read_only_variable) + ": \"" + *value + "\" is not a boolean (use 1 or 0)");
}

database_url parse_variable(std::string_view variable, const std::string& value) {
    return naming(variable, [&] { return database_url::parse(value); });
}

std::string region_text(const database_config& config) {
    return "my region \"" + config.my_region + "\", primary region \"" + config.primary_region + "\"";
}

}  // namespace

database_config resolve_database_config(const environment_lookup& environment,
                                        std::string_view my_region,
                                        std::string_view primary_region,
                                        const database_config_options& options) {
    if (my_region.empty()) fail("my_region is empty");
    if (primary_region.empty()) fail("primary_region is empty");
    const environment_reader env(environment);

    database_config config;
    config.my_region = std::string(my_region);
    config.primary_region = std::string(primary_region);

    const std::optional<std::string> primary_url = env.get(primary_url_variable);
    const std::optional<std::string> replica_url = env.get(replica_url_variable);
    if (options.mode) {
        config.mode = *options.mode;
    } else if (primary_url || replica_url) {
        // Either one says "plain hosts"; outside the primary region the replica's is enough (writes
        // reach the primary through a primary-region node).
        config.mode = database_mode::plain_hosts;
    } else {
        config.mode = env.get(fly_app_name_variable) ? database_mode::fly : database_mode::local;
    }

    switch (config.mode) {
        case database_mode::plain_hosts: {
            if (primary_url) {
                config.primary = parse_variable(primary_url_variable, *primary_url);
            } else if (config.in_primary_region()) {
                fail(std::string(primary_url_variable) +
                     " is not set; in the primary region it must name the primary (" + region_text(config) +
                     ")");
            }
            if (replica_url) {
                config.replica = parse_variable(replica_url_variable, *replica_url);
            } else if (config.in_primary_region()) {
                config.replica = *config.primary;
            } else {
                fail(std::string(replica_url_variable) +
                     " is not set; outside the primary region it must name this region's replica (" +
                     region_text(config) + ")");
            }
            break;
        }
        case database_mode::fly: {
            const std::optional<std::string> url = env.get(database_url_variable);
            if (!url)
                fail("Unable to rewrite database url in fly_postgres. No url was specified. (" +
                     std::string(database_url_variable) + " is not set)");
            config.replica = naming(database_url_variable, [&] {
                return database_url::parse(rewrite_database_url(*url, my_region, primary_region));
            });
            config.primary = naming(database_url_variable, [&] {
                return database_url::parse(rewrite_database_url(*url, primary_region, primary_region));
            });
            break;
        }
        case database_mode::local: {
            const std::optional<std::string> url = env.get(database_url_variable);
            if (!url)
                fail(std::string(database_url_variable) + " is not set (or set " +
                     std::string(primary_url_variable) + " and " + std::string(replica_url_variable) + ")");
            config.replica = parse_variable(database_url_variable, *url);
            if (config.in_primary_region()) config.primary = config.replica;
            break;
        }
    }

    const local_read_only read_only =
        options.read_only ? *options.read_only : parse_read_only(env.get(read_only_variable));
    if (read_only == local_read_only::on)
        config.replica_session_settings.emplace_back(read_only_session_setting);
    return config;
}

database_config resolve_database_config(const std::map<std::string, std::string, std::less<>>& environment,
                                        std::string_view my_region,
                                        std::string_view primary_region,
                                        const database_config_options& options) {
    const environment_lookup lookup = [&environment](std::string_view name) -> std::optional<std::string> {
        const auto found = environment.find(name);
        if (found == environment.end()) return std::nullopt;
        return found->second;
    };
    return resolve_database_config(lookup, my_region, primary_region, options);
}

database_config database_config_from_environment(std::string_view my_region,
                                                 std::string_view primary_region,
                                                 const database_config_options& options) {
    const environment_lookup lookup = [](std::string_view name) -> std::optional<std::string> {
        const char* value = std::getenv(std::string(name).c_str());
        if (value == nullptr) return std::nullopt;
        return std::string(value);
    };
    return resolve_database_config(lookup, my_region, primary_region, options);
}

}  // namespace flypg
