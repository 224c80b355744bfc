// The faults, each a scenario: inject, hold, heal, while the workload runs; and the runner that
// plays one and checks what the workload saw.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "fault_world.hpp"
#include "workload.hpp"

namespace flypg::fault {

struct scenario {
    std::string name;
    std::function<void(fault_world&)> inject;
    std::function<void(fault_world&)> heal;
};

/// Every fault kind, in the order the short mode plays them.
const std::vector<scenario>& all_scenarios();
/// The scenario called `name`; throws std::invalid_argument naming the known ones.
const scenario& scenario_named(const std::string& name);

/// Plays `s` once on `world` with the fault held for `hold`: the workload runs a second before the
/// fault, through it, and after the heal until a write is read-your-writes again (30 s at most) and
/// a little longer. Returns what check() found, with the time to recover.
fault_tally play(asio::io_context& io,
                 fault_world& world,
                 independent_checker& checker,
                 const scenario& s,
                 std::chrono::milliseconds hold);

/// Prints one row per fault kind and a total.
void print_table(const std::vector<std::pair<std::string, fault_tally>>& rows);

}  // namespace flypg::fault
