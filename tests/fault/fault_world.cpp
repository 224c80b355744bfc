#include "fault_world.hpp"

#include <signal.h>

#include <cstdlib>
#include <future>
#include <stdexcept>

namespace flypg::fault {
namespace {

using namespace std::chrono_literals;

std::uint16_t port_in(const std::string& conninfo) {
    const auto at = conninfo.find("port=");
    if (at == std::string::npos) throw std::runtime_error("no port= in " + conninfo);
    return static_cast<std::uint16_t>(std::stoi(conninfo.substr(at + 5)));
}

asio::ip::tcp::endpoint loopback(std::uint16_t port) {
    return {asio::ip::make_address("127.0.0.1"), port};
}

std::string sql_literal(const std::string& text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
}

std::unique_ptr<tools::delay_proxy> proxy_to(asio::io_context& network, std::uint16_t target) {
    tools::delay_proxy_options options;
    options.listen = loopback(0);
    options.target = loopback(target);
    options.delay = 0us;
    return std::make_unique<tools::delay_proxy>(network.get_executor(), options);
}

}  // namespace

fault_limits fault_limits::from_environment() {
    fault_limits limits;
    if (const char* stall = std::getenv("FLYPG_FAULT_MAX_STALL_MS")) limits.max_stall_ms = std::stod(stall);
    return limits;
}

fault_world::fault_world(asio::io_context& io, fault_limits limits)
    : io_(io), limits_(limits), replica_admin_(test::replica_conninfo(2)), node_port_(test::free_port()) {
    // Every failed write under a fault would log a warning; the checker's table says more.
    ::setenv("FLYPG_LOG_LEVEL", "error", 0);
    rpc_proxy_ = proxy_to(network_, node_port_);
    wal_proxy_ = proxy_to(network_, port_in(test::primary_conninfo()));
    asio::co_spawn(network_, rpc_proxy_->run(), asio::detached);
    asio::co_spawn(network_, wal_proxy_->run(), asio::detached);
    network_thread_ = std::thread([this] {
        auto busy = asio::make_work_guard(network_);
        network_.run();
    });
    route_wal_through_proxy();
    start_node();

    flypg::repo_options options;
    options.local_url = test::replica_conninfo(2);
    options.rpc_timeout = limits_.rpc_timeout;
    options.replication_timeout = limits_.replication_timeout;
    options.tracker.query_timeout = 300ms;
    const std::string via_proxy = "127.0.0.1:" + std::to_string(rpc_proxy_->local_endpoint().port());
    first_ = std::make_unique<test::repo_world::replica_region>(io_, std::vector{via_proxy}, options);
    second_ = std::make_unique<test::repo_world::replica_region>(io_, std::vector{via_proxy}, options);
    test::run(io_, first_->node->wait_for_region("ams", 10s));
    test::run(io_, second_->node->wait_for_region("ams", 10s));
}

fault_world::~fault_world() {
    first_.reset();
    second_.reset();
    if (node_) node_->send_signal(SIGCONT);
    node_.reset();
    test::pg_cluster("thaw primary");
    test::pg_cluster("thaw replica2");
    restore_wal_route();
    on_network([this] {
        rpc_proxy_->close();
        wal_proxy_->close();
    });
    network_.stop();
    network_thread_.join();
}

template <class F>
void fault_world::on_network(F f) {
    std::promise<void> done;
    asio::post(network_, [&] {
        f();
        done.set_value();
    });
    done.get_future().wait();
}

void fault_world::kill_node() {
    node_->kill_hard();
    node_.reset();
}

void fault_world::start_node() {
    node_ = std::make_unique<test::repo_world::region_node_process>(
        test::repo_world::primary_node_args({"--port=" + std::to_string(node_port_)}));
}

void fault_world::signal_node(int signal_number) {
    node_->send_signal(signal_number);
}

void fault_world::rpc_fault(tools::proxy_fault fault, tools::proxy_direction direction) {
    on_network([&] { rpc_proxy_->set_fault(fault, direction); });
}

void fault_world::rpc_delay(std::chrono::milliseconds one_way) {
    on_network([&] { rpc_proxy_->set_delay(one_way); });
}

void fault_world::wal_fault(tools::proxy_fault fault) {
    on_network([&] { wal_proxy_->set_fault(fault); });
}

void fault_world::route_wal_through_proxy() {
    const std::string proxy_port = std::to_string(wal_proxy_->local_endpoint().port());
    const std::string current = replica_admin_.query("SHOW primary_conninfo").at(0).at(0);
    // Whatever port it follows now (a run that crashed may have left a dead proxy's port there).
    const auto at = current.find("port=");
    if (at == std::string::npos) throw std::runtime_error("replica 2 follows no port: " + current);
    const auto digits = current.find_first_not_of("0123456789", at + 5);
    auto with_port = [&](const std::string& port) {
        return current.substr(0, at) + "port=" + port +
               (digits == std::string::npos ? std::string() : current.substr(digits));
    };
    original_primary_conninfo_ = with_port(std::to_string(port_in(test::primary_conninfo())));
    const std::string routed = with_port(proxy_port);
    replica_admin_.query("ALTER SYSTEM SET primary_conninfo = " + sql_literal(routed));
    replica_admin_.query("SELECT pg_reload_conf()");
    // The WAL receiver restarts with the new setting.
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
        const auto rows =
            replica_admin_.query("SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'");
        if (!rows.empty() && rows[0][0] == proxy_port) return;
        std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error("replica 2 does not stream through the WAL proxy");
}

void fault_world::restore_wal_route() {
    if (original_primary_conninfo_.empty()) return;
    try {
        replica_admin_.query(
            "ALTER SYSTEM SET primary_conninfo = " + sql_literal(original_primary_conninfo_), {}, 10s);
        replica_admin_.query("SELECT pg_reload_conf()", {}, 10s);
    } catch (const std::exception& e) {
        // The next scripts/pg-cluster start rebuilds a replica that follows another port.
        std::fprintf(stderr, "could not restore replica 2's primary_conninfo: %s\n", e.what());
    }
}

}  // namespace flypg::fault
