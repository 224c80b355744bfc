#include "support/test_support.hpp"

#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "test_config.hpp"

namespace flypg::test {
namespace {

std::string env_or(const char* name, std::string fallback) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? std::string(value) : std::move(fallback);
}

std::string local_conninfo(int port) {
    return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=flypg user=flypg";
}

}  // namespace

std::string primary_conninfo() {
    return env_or("FLYPG_TEST_PRIMARY", local_conninfo(config::cluster_port));
}

std::string replica_conninfo(int index) {
    std::string fallback = local_conninfo(config::cluster_port + index);
    if (index == 1) return env_or("FLYPG_TEST_REPLICA", fallback);
    return env_or(("FLYPG_TEST_REPLICA_" + std::to_string(index)).c_str(), fallback);
}

int pg_cluster(const std::string& arguments) {
    const std::string command =
        env_or("FLYPG_TEST_PG_CLUSTER", config::pg_cluster_command) + " " + arguments + " >/dev/null";
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace flypg::test
