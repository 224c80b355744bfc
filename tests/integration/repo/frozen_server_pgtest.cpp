// A whole PostgreSQL server frozen (SIGSTOP of the postmaster and every process of it, as a frozen
// host or a path that drops packets looks to its clients) must never freeze the application: a
// 1 ms timer keeps running on the loop, and every call ends by its own deadline. First the
// replica this region reads, then the primary behind the primary-region node.
//
// Disruptive: freezing the primary stops every other test's writes, so ctest runs it alone.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "repo_world.hpp"
#include "support/loop_probe.hpp"

namespace {

using namespace flypg::test::repo_world;
using clock_type = std::chrono::steady_clock;
using flypg::test::loop_probe;

// Freezes a server of the test cluster for `duration`. The thaw comes from a thread of its own,
// so that a loop that does block (the defect this tests) is measured as a long stall instead of
// blocking its own thaw forever; the destructor thaws at the latest.
class frozen_server {
  public:
    frozen_server(std::string server, std::chrono::milliseconds duration) : server_(std::move(server)) {
        EXPECT_EQ(flypg::test::pg_cluster("freeze " + server_), 0);
        thawer_ = std::thread([this, duration] {
            std::unique_lock lock(mutex_);
            woken_.wait_for(lock, duration, [this] { return stop_; });
            EXPECT_EQ(flypg::test::pg_cluster("thaw " + server_), 0);
        });
    }
    ~frozen_server() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        woken_.notify_one();
        thawer_.join();
    }
    frozen_server(const frozen_server&) = delete;
    frozen_server& operator=(const frozen_server&) = delete;

  private:
    std::string server_;
    std::mutex mutex_;
    std::condition_variable woken_;
    bool stop_ = false;
    std::thread thawer_;
};

// Lets the loop run for `d` (the probe and whatever the library does meanwhile).
void run_for(asio::io_context& io, std::chrono::milliseconds d) {
    run(io, [d]() -> asio::awaitable<void> {
        asio::steady_timer t(co_await asio::this_coro::executor, d);
        co_await t.async_wait(asio::use_awaitable);
    }());
}

// How a write ended, and when.
struct outcome {
    std::error_code code;
    clock_type::duration took{};
};

outcome timed_write(asio::io_context& io, flypg::repo& db, const std::string& note) {
    const auto start = clock_type::now();
    outcome out;
    try {
        run(
            io,
            [&]() -> asio::awaitable<void> {
                flypg::sql::column_values row{{"note", note}};
                co_await db.insert(table_name(), std::move(row));
            }(),
            30s);
    } catch (const flypg::error& e) {
        out.code = e.code();
    }
    out.took = clock_type::now() - start;
    return out;
}

class FrozenServer : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        asio::io_context io;
        create_table(io, flypg::test::primary_conninfo(), flypg::test::replica_conninfo(2));
        primary_node = std::make_unique<region_node_process>(primary_node_args());
    }
    static void TearDownTestSuite() { primary_node.reset(); }

    static std::unique_ptr<region_node_process> primary_node;
    asio::io_context io;
};

std::unique_ptr<region_node_process> FrozenServer::primary_node;

TEST_F(FrozenServer, AFrozenReplicaNeitherStallsTheLoopNorHoldsAWritePastItsDeadline) {
    flypg::repo_options options;
    options.local_url = flypg::test::replica_conninfo(2);
    options.replication_timeout = 1s;
    options.tracker.query_timeout = 300ms;
    replica_region world(io, {primary_node->address()}, options);
    run(io, world.node->wait_for_region("ams", 10s));
    const std::string prefix = "frozen replica " + std::to_string(::getpid()) + " ";
    ASSERT_EQ(timed_write(io, *world.db, prefix + "before").code, std::error_code());

    outcome during;
    std::optional<loop_probe> probe;
    {
        frozen_server replica("replica2", 4s);
        // From here on: the freeze command itself ran on this thread, outside the loop.
        probe.emplace(io);
        // The tracker's poll times out and is cancelled while the replica is frozen.
        during = timed_write(io, *world.db, prefix + "during");
        // And the loop keeps running while the cancel and the reconnects wait on the server.
        run_for(io, 2500ms);
        probe->finish(io);  // before the thaw, which runs a command on this thread
    }
    std::printf("frozen replica: loop's longest stall %.2f ms; the write ended after %.0f ms\n",
                probe->worst_ms(),
                std::chrono::duration<double, std::milli>(during.took).count());
    EXPECT_EQ(during.code, flypg::errc::committed_not_replicated);
    EXPECT_LT(during.took, 3s) << "a 1 s replication timeout";
    EXPECT_LT(probe->worst_ms(), 100.0) << "the loop stood still while the replica was frozen";
    // Thawed: the tracker comes back and writes are read-your-writes again.
    const outcome after = timed_write(io, *world.db, prefix + "after");
    EXPECT_EQ(after.code, std::error_code());
}

TEST_F(FrozenServer, AFrozenPrimaryNeitherStallsTheLoopNorTheServingNode) {
    flypg::repo_options options;
    options.local_url = flypg::test::replica_conninfo(2);
    options.rpc_timeout = 1s;
    replica_region world(io, {primary_node->address()}, options);
    run(io, world.node->wait_for_region("ams", 10s));
    const std::string prefix = "frozen primary " + std::to_string(::getpid()) + " ";
    ASSERT_EQ(timed_write(io, *world.db, prefix + "before").code, std::error_code());

    outcome during;
    clock_type::duration serving_node_answer{};
    std::optional<loop_probe> probe;
    {
        frozen_server primary("primary", 4s);
        probe.emplace(io);
        during = timed_write(io, *world.db, prefix + "during");
        // The serving node cancels the abandoned write's statement on a frozen server: its own
        // loop must keep answering calls meanwhile.
        const auto asked = clock_type::now();
        run(io, [&]() -> asio::awaitable<void> {
            flypg::rpc::call_options quick;
            quick.timeout = 1s;
            std::vector<flypg::rpc::value> none;
            co_await world.node->call_primary("test.metrics", std::move(none), quick);
        }());
        serving_node_answer = clock_type::now() - asked;
        run_for(io, 2s);
        probe->finish(io);
    }
    std::printf(
        "frozen primary: loop's longest stall %.2f ms; the write ended after %.0f ms; the serving "
        "node answered a call in %.1f ms\n",
        probe->worst_ms(),
        std::chrono::duration<double, std::milli>(during.took).count(),
        std::chrono::duration<double, std::milli>(serving_node_answer).count());
    EXPECT_TRUE(during.code == flypg::errc::outcome_unknown || during.code == flypg::errc::timeout)
        << during.code.message();
    EXPECT_LT(during.took, 3s) << "a 1 s RPC timeout";
    EXPECT_LT(serving_node_answer, 1s);
    EXPECT_LT(probe->worst_ms(), 100.0);
    EXPECT_TRUE(primary_node->running()) << primary_node->log();
    // Thawed: writes go through again (the serving node's pool replaced what it closed).
    outcome after;
    for (int attempt = 0; attempt < 20; ++attempt) {
        after = timed_write(io, *world.db, prefix + "after " + std::to_string(attempt));
        if (!after.code) break;
    }
    EXPECT_EQ(after.code, std::error_code()) << after.code.message();
}

}  // namespace
