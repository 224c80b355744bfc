// The benchmarks' command line: Abseil flags with a real --help. Abseil's --help lists only flags
// defined in a file named after the program; the benches define theirs in bench/, under other
// names, so without this it prints "No flags matched".
#pragma once

#include <absl/flags/parse.h>
#include <absl/flags/usage.h>
#include <absl/flags/usage_config.h>
#include <absl/strings/match.h>

#include <cstdlib>
#include <string>

namespace flypg::bench {

/// The variable's value, or `fallback` when it is unset or empty (the database flags' defaults
/// come from what `scripts/pg-cluster env` exports).
inline std::string env_or(const char* name, const char* fallback) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? value : fallback;
}

/// Sets the usage text `--help` prints above the flags, then parses the command line (exits on a
/// bad flag, or after printing the help).
inline void parse_command_line(const char* usage, int argc, char** argv) {
    absl::SetProgramUsageMessage(usage);
    absl::FlagsUsageConfig config;
    config.contains_help_flags = [](absl::string_view file) {
        return absl::StrContains(file, "bench/");
    };
    config.contains_helpshort_flags = config.contains_help_flags;
    absl::SetFlagsUsageConfig(config);
    absl::ParseCommandLine(argc, argv);
}

}  // namespace flypg::bench
