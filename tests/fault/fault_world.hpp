// The fault suite's world, all real processes and sockets: the test cluster's primary and its
// replica 2; a primary-region node in its own process (flypg_repo_test_node); two nodes of the
// replica region "syd" in this process, both reading replica 2, so that a write through one can be
// read through the other; and two delay proxies on a network thread of their own: one on the RPC
// path (the "syd" nodes reach the primary-region node only through it) and one on replica 2's WAL
// stream (its primary_conninfo points at the proxy while the world exists).
//
// Fault actions block (they signal processes and run scripts/pg-cluster): call them on a thread
// other than the loop's, as the scenarios do.
#pragma once

#include <asio.hpp>

#include <memory>
#include <string>
#include <thread>

#include "delay_proxy_core.hpp"
#include "independent_checker.hpp"
#include "integration/repo/repo_world.hpp"

namespace flypg::fault {

/// The limits every call is held to.
struct fault_limits {
    std::chrono::milliseconds rpc_timeout{2000};
    std::chrono::milliseconds replication_timeout{2000};
    /// What a call may take beyond its two timeouts (scheduling on a busy 2-core machine).
    std::chrono::milliseconds slack{1000};
    /// The longest the event loop may stand still; FLYPG_FAULT_MAX_STALL_MS overrides it (a
    /// sanitized build runs several times slower).
    double max_stall_ms = 10.0;

    std::chrono::milliseconds call_bound() const { return rpc_timeout + replication_timeout + slack; }
    static fault_limits from_environment();
};

class fault_world {
  public:
    fault_world(asio::io_context& io, fault_limits limits);
    ~fault_world();
    fault_world(const fault_world&) = delete;
    fault_world& operator=(const fault_world&) = delete;

    /// The two "syd" repos; worker i writes through writer(i) and reads through reader(i).
    flypg::repo& writer(int i) { return *(i % 2 == 0 ? first_ : second_)->db; }
    flypg::repo& reader(int i) { return *(i % 2 == 0 ? second_ : first_)->db; }
    const fault_limits& limits() const { return limits_; }

    // Faults (blocking; not on the loop's thread).
    void kill_node();
    void start_node();  ///< On the same port as before, behind the same proxy.
    void signal_node(int signal_number);
    void rpc_fault(tools::proxy_fault fault, tools::proxy_direction direction = tools::proxy_direction::both);
    void rpc_delay(std::chrono::milliseconds one_way);
    void wal_fault(tools::proxy_fault fault);
    /// Points replica 2's WAL stream at the proxy (again, after a rebuild) and waits until it
    /// streams through it.
    void route_wal_through_proxy();

  private:
    void restore_wal_route();
    template <class F>
    void on_network(F f);

    asio::io_context& io_;
    fault_limits limits_;
    blocking_session replica_admin_;
    std::string original_primary_conninfo_;

    asio::io_context network_;
    std::unique_ptr<tools::delay_proxy> rpc_proxy_;
    std::unique_ptr<tools::delay_proxy> wal_proxy_;
    std::thread network_thread_;

    std::uint16_t node_port_;
    std::unique_ptr<test::repo_world::region_node_process> node_;
    std::unique_ptr<test::repo_world::replica_region> first_;
    std::unique_ptr<test::repo_world::replica_region> second_;
};

}  // namespace flypg::fault
