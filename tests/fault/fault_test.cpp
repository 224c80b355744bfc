// The fault-injection suite (label `fault`): each fault kind once, while forwarded writes and
// reads run, judged by the independent checker (workload.hpp). Chaos.RandomFaults plays random
// faults for FLYPG_CHAOS_MINUTES minutes (scripts/chaos --minutes N) and prints a table per kind.
//
// Disruptive (it freezes, restarts and promotes the cluster's servers): ctest runs it alone.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <cstdlib>
#include <map>
#include <random>

#include "scenarios.hpp"

namespace {

using namespace std::chrono_literals;
using namespace flypg::fault;

// Scenario names as gtest names: letters and digits only.
std::string test_name(const std::string& scenario) {
    std::string out;
    bool upper = true;
    for (char c : scenario) {
        if (!std::isalnum(static_cast<unsigned char>(c))) {
            upper = true;
            continue;
        }
        out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
        upper = false;
    }
    return out;
}

std::vector<std::string> scenario_names() {
    std::vector<std::string> names;
    for (const scenario& s : all_scenarios()) names.push_back(s.name);
    return names;
}

void expect_no_violations(const fault_tally& t) {
    std::string listed;
    for (std::size_t i = 0; i < t.violations.size() && i < 20; ++i) listed += "\n  " + t.violations[i];
    EXPECT_TRUE(t.violations.empty()) << t.violations.size() << " violations:" << listed;
}

class Fault : public ::testing::TestWithParam<std::string> {};

TEST_P(Fault, AcknowledgedWritesAreThereOnceAndReadableAndNoCallOutlivesItsDeadline) {
    asio::io_context io;
    independent_checker checker(flypg::test::primary_conninfo(), flypg::test::replica_conninfo(2));
    create_tables(checker);
    fault_world world(io, fault_limits::from_environment());
    const fault_tally t = play(io, world, checker, scenario_named(GetParam()), 2s);
    print_table({{GetParam(), t}});
    expect_no_violations(t);
    EXPECT_GT(t.replicated, 0) << "no write got through at all";
}

std::string gtest_name(const ::testing::TestParamInfo<std::string>& param) {
    return test_name(param.param);
}

INSTANTIATE_TEST_SUITE_P(EachOnce, Fault, ::testing::ValuesIn(scenario_names()), gtest_name);

TEST(Chaos, RandomFaults) {
    const char* minutes_text = std::getenv("FLYPG_CHAOS_MINUTES");
    if (!minutes_text) GTEST_SKIP() << "the long mode runs with FLYPG_CHAOS_MINUTES set (scripts/chaos)";
    const double minutes = std::stod(minutes_text);
    const char* seed_text = std::getenv("FLYPG_CHAOS_SEED");
    const unsigned seed = seed_text ? static_cast<unsigned>(std::stoul(seed_text)) : std::random_device{}();
    std::printf("chaos: %.1f minutes, seed %u (FLYPG_CHAOS_SEED repeats the sequence)\n", minutes, seed);
    std::mt19937 random(seed);

    asio::io_context io;
    independent_checker checker(flypg::test::primary_conninfo(), flypg::test::replica_conninfo(2));
    create_tables(checker);
    fault_world world(io, fault_limits::from_environment());
    std::map<std::string, fault_tally> by_kind;
    const auto end =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               std::chrono::duration<double, std::ratio<60>>(minutes));
    std::uniform_int_distribution<std::size_t> pick(0, all_scenarios().size() - 1);
    std::uniform_int_distribution<int> hold_ms(300, 4000);
    while (std::chrono::steady_clock::now() < end) {
        const scenario& s = all_scenarios()[pick(random)];
        const std::chrono::milliseconds hold(hold_ms(random));
        const fault_tally t = play(io, world, checker, s, hold);
        std::printf("chaos: %-18s held %5lld ms: %ld writes, %ld violations\n",
                    s.name.c_str(),
                    static_cast<long long>(hold.count()),
                    t.writes,
                    static_cast<long>(t.violations.size()));
        std::fflush(stdout);
        by_kind[s.name].add(t);
    }
    std::vector<std::pair<std::string, fault_tally>> rows(by_kind.begin(), by_kind.end());
    print_table(rows);
    fault_tally total;
    for (const auto& [name, t] : rows) total.add(t);
    expect_no_violations(total);
}

}  // namespace
