// The benchmarks' command line: Abseil flags with a real --help. Abseil's --help lists only flags
// defined in a file named after the program; the benches define theirs in bench/, under other
// names, so without this it prints "No flags matched".
#pragma once

#include <absl/flags/parse.h>
#include <absl/flags/usage.h>
#include <absl/flags/usage_config.h>
#include <absl/strings/match.h>

namespace flypg::bench {

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
