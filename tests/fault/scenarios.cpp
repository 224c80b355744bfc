#include "scenarios.hpp"

#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <stdexcept>

#include "support/loop_probe.hpp"

namespace flypg::fault {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using tools::proxy_direction;
using tools::proxy_fault;

void cluster(const std::string& command) {
    if (test::pg_cluster(command) != 0) throw std::runtime_error("scripts/pg-cluster " + command + " failed");
}

void nothing(fault_world&) {}

// A fault of the RPC path, healed by forwarding everything again.
scenario rpc_path(std::string name, proxy_fault fault, proxy_direction direction = proxy_direction::both) {
    return {std::move(name),
            [fault, direction](fault_world& w) { w.rpc_fault(fault, direction); },
            [](fault_world& w) {
                w.rpc_fault(proxy_fault::none);
            }};
}

std::string slug(const std::string& name) {
    std::string out;
    for (char c : name) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
    return out;
}

asio::awaitable<void> sleep_for(clock_type::duration d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
}

}  // namespace

const std::vector<scenario>& all_scenarios() {
    static const std::vector<scenario> scenarios{
        {"node SIGKILL",
         [](fault_world& w) { w.kill_node(); },
         [](fault_world& w) {
             w.start_node();
         }},
        {"node SIGSTOP",
         [](fault_world& w) { w.signal_node(SIGSTOP); },
         [](fault_world& w) {
             w.signal_node(SIGCONT);
         }},
        {"replica frozen",
         [](fault_world&) { cluster("freeze replica2"); },
         [](fault_world&) {
             cluster("thaw replica2");
         }},
        {"primary frozen",
         [](fault_world&) { cluster("freeze primary"); },
         [](fault_world&) {
             cluster("thaw primary");
         }},
        {"replica restart", [](fault_world&) { cluster("restart-replica 2"); }, nothing},
        {"primary restart", [](fault_world&) { cluster("restart-primary"); }, nothing},
        {"replica promoted",
         [](fault_world&) { cluster("promote 2"); },
         [](fault_world& w) {
             cluster("start --replicas 2");  // rebuilds replica 2 as a standby
             w.route_wal_through_proxy();
         }},
        rpc_path("RPC partition", proxy_fault::drop),
        rpc_path("RPC answers lost", proxy_fault::drop, proxy_direction::to_client),
        rpc_path("RPC stall", proxy_fault::stall),
        rpc_path("RPC reset", proxy_fault::reset),
        {"WAL partition",
         [](fault_world& w) { w.wal_fault(proxy_fault::drop); },
         [](fault_world& w) {
             // A partition long enough for TCP to give up: the stream is reset, the replica
             // reconnects.
             w.wal_fault(proxy_fault::reset);
             w.wal_fault(proxy_fault::none);
         }},
        {"WAL stall",
         [](fault_world& w) { w.wal_fault(proxy_fault::stall); },
         [](fault_world& w) {
             w.wal_fault(proxy_fault::none);
         }},
        {"1 s RTT spike",
         [](fault_world& w) { w.rpc_delay(500ms); },
         [](fault_world& w) {
             w.rpc_delay(0ms);
         }},
    };
    return scenarios;
}

const scenario& scenario_named(const std::string& name) {
    std::string known;
    for (const scenario& s : all_scenarios()) {
        if (s.name == name || slug(s.name) == name) return s;
        known += (known.empty() ? "" : ", ") + slug(s.name);
    }
    throw std::invalid_argument("no fault scenario '" + name + "' (known: " + known + ")");
}

fault_tally play(asio::io_context& io,
                 fault_world& world,
                 independent_checker& checker,
                 const scenario& s,
                 std::chrono::milliseconds hold) {
    static int played = 0;
    const std::string prefix =
        "fault " + std::to_string(::getpid()) + " " + std::to_string(++played) + " " + slug(s.name) + " ";
    workload load(world, checker, prefix);
    asio::thread_pool fault_thread(1);
    bool stop = false;
    clock_type::time_point healed{};
    double recovery_ms = -1;
    test::loop_probe probe(io);
    // A failed run must not leave the cluster frozen or promoted for the next one.
    bool injected = false;
    bool heal_ran = false;
    struct heal_on_failure {
        std::function<void()> heal;
        ~heal_on_failure() { heal(); }
    } guard{[&] {
        if (injected && !heal_ran) s.heal(world);
    }};
    test::run(
        io,
        [&]() -> asio::awaitable<void> {
            auto executor = co_await asio::this_coro::executor;
            bool load_done = false;
            asio::co_spawn(executor, load.run(stop), [&](std::exception_ptr) { load_done = true; });
            co_await sleep_for(1s);
            // Named, not temporaries inside the co_await (g++ 12).
            auto inject = [&] {
                s.inject(world);
                return true;
            };
            auto heal = [&] {
                s.heal(world);
                return true;
            };
            injected = true;
            co_await on_thread(fault_thread, inject);
            co_await sleep_for(hold);
            heal_ran = true;
            co_await on_thread(fault_thread, heal);
            healed = clock_type::now();
            while (!load.replicated_since(healed) && clock_type::now() - healed < 30s)
                co_await sleep_for(10ms);
            if (load.replicated_since(healed))
                recovery_ms = std::chrono::duration<double, std::milli>(clock_type::now() - healed).count();
            co_await sleep_for(500ms);
            stop = true;
            while (!load_done) co_await sleep_for(5ms);
        }(),
        120s);
    probe.finish(io);
    fault_tally tally = load.check(probe.worst_ms(), probe.own_worst_ms());
    tally.max_recovery_ms = recovery_ms;
    if (recovery_ms < 0)
        tally.violations.push_back(
            "no write was read-your-writes again within 30 s of the heal (last error: " + load.last_error() +
            ")");
    for (std::string& v : tally.violations) v = s.name + ": " + v;
    return tally;
}

void print_table(const std::vector<std::pair<std::string, fault_tally>>& rows) {
    std::printf("%-18s %5s %7s %7s %7s %7s %7s %5s %5s %9s %9s %9s %9s\n",
                "fault",
                "runs",
                "writes",
                "acked",
                "commit",
                "unknown",
                "failed",
                "dups",
                "stale",
                "max call",
                "max stall",
                "own stall",
                "recovery");
    fault_tally total;
    auto row = [](const std::string& name, const fault_tally& t) {
        std::printf("%-18s %5ld %7ld %7ld %7ld %7ld %7ld %5ld %5ld %6.0f ms %6.1f ms %6.1f ms %6.0f ms\n",
                    name.c_str(),
                    t.runs,
                    t.writes,
                    t.replicated,
                    t.committed,
                    t.unknown,
                    t.failed,
                    t.duplicates,
                    t.stale_reads,
                    t.max_call_ms,
                    t.max_stall_ms,
                    t.max_own_stall_ms,
                    t.max_recovery_ms);
    };
    for (const auto& [name, t] : rows) {
        row(name, t);
        total.add(t);
    }
    row("all", total);
    std::printf(
        "(acked: replicated; commit: committed, not readable locally yet; recovery: heal to the first "
        "write read-your-writes again)\n");
}

}  // namespace flypg::fault
