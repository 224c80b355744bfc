// RPC benchmark: two processes on loopback, one node each.
//
//   flypg_rpc_bench [--calls N] [--seconds S] [--in-flight K]
//
// Starts itself again as the serving node (region "iad", the primary region) and measures from
// the calling node (region "ord"):
//   1. call round trip, one call at a time: p50 / p90 / p99 (target: p50 <= 60 us);
//   2. calls per second with K calls in flight (default 64);
//   3. lateness of an unrelated 1 ms Asio timer on the caller's io_context, idle and during (2):
//      the KJ guest loop must not starve other Asio work.
// Prints the figures; exits non-zero only when the benchmark could not run.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"

extern char** environ;

namespace {

using namespace flypg::rpc;
using clock_type = std::chrono::steady_clock;
using values = std::vector<value>;

const std::string secret = "benchmark-cluster-secret-0123456789";

node_options base_options(std::string region) {
    node_options o;
    o.listen_address = "127.0.0.1";
    o.listen_port = 0;
    o.cluster_secret = secret;
    o.region = std::move(region);
    o.primary_region = "iad";
    o.peers = std::vector<std::string>{};
    o.reconnect_min = std::chrono::milliseconds(20);
    o.reconnect_max = std::chrono::milliseconds(200);
    o.log = [](log_level level, std::string_view text) {
        if (level >= log_level::warning)
            std::fprintf(stderr, "%.*s\n", static_cast<int>(text.size()), text.data());
    };
    return o;
}

int serve() {
    asio::io_context io;
    auto options = base_options("iad");
    options.procedures.add("echo", [](values args) -> asio::awaitable<values> { co_return args; });
    auto n = node::create(io, std::move(options));
    asio::cancellation_signal stop;
    bool finished = false;
    asio::co_spawn(
        io, n.run(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) { finished = true; }));
    asio::posix::stream_descriptor input(io, ::dup(STDIN_FILENO));
    std::array<char, 16> buffer{};
    input.async_read_some(asio::buffer(buffer), [&](std::error_code, std::size_t) {
        stop.emit(asio::cancellation_type::terminal);
    });
    std::printf("%u\n", static_cast<unsigned>(n.local_endpoint().port()));
    std::fflush(stdout);
    while (!finished) io.run_one();
    return 0;
}

struct percentiles {
    double p50, p90, p99, max;
};

percentiles summarize(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
    };
    return {at(0.50), at(0.90), at(0.99), v.back()};
}

// Measures how late a 1 ms periodic timer fires until `stop` is set.
asio::awaitable<void> timer_probe(std::vector<double>& late_us, const bool& stop) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    auto next = clock_type::now();
    while (!stop) {
        next += std::chrono::milliseconds(1);
        t.expires_at(next);
        co_await t.async_wait(asio::use_awaitable);
        late_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - next).count());
    }
}

template <class T>
T run_to_completion(asio::io_context& io, asio::awaitable<T> task) {
    std::optional<T> out;
    std::exception_ptr failure;
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T v) {
        failure = e;
        if (!e) out.emplace(std::move(v));
    });
    while (!out && !failure) io.run_one();
    if (failure) std::rethrow_exception(failure);
    return std::move(*out);
}

// Both nodes on one io_context (one thread): the round trip without process wake-ups, i.e. the
// CPU cost of a call through both halves of flypg, Cap'n Proto and the loopback stack.
int run_in_process(int calls) {
    asio::io_context io;
    auto server_options = base_options("iad");
    server_options.procedures.add("echo", [](values args) -> asio::awaitable<values> { co_return args; });
    auto server = node::create(io, std::move(server_options));
    auto client_options = base_options("ord");
    client_options.peers =
        std::vector<std::string>{"127.0.0.1:" + std::to_string(server.local_endpoint().port())};
    auto client = node::create(io, std::move(client_options));
    asio::cancellation_signal stop;
    int running = 2;
    asio::cancellation_signal stop_client;
    asio::co_spawn(
        io, server.run(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) { --running; }));
    asio::co_spawn(io,
                   client.run(),
                   asio::bind_cancellation_slot(stop_client.slot(), [&](std::exception_ptr) { --running; }));
    std::vector<double> rtt_us;
    run_to_completion(io, [&]() -> asio::awaitable<bool> {
        co_await client.wait_for_region("iad", std::chrono::seconds(10));
        values args{value(std::int64_t{42})};
        for (int i = 0; i < 1000; ++i) co_await client.call_primary("echo", args);
        for (int i = 0; i < calls; ++i) {
            const auto start = clock_type::now();
            co_await client.call_primary("echo", args);
            rtt_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
        }
        co_return true;
    }());
    const auto rtt = summarize(rtt_us);
    std::printf(
        "call round trip, both nodes in one thread (%d calls): p50 %.1f us, p90 %.1f us, p99 %.1f us\n",
        calls,
        rtt.p50,
        rtt.p90,
        rtt.p99);
    // Stop both nodes and let their run() return before the io_context goes away.
    stop.emit(asio::cancellation_type::terminal);
    stop_client.emit(asio::cancellation_type::terminal);
    while (running > 0) io.run_one();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "serve") return serve();
    int calls = 20000;
    double seconds = 3.0;
    int in_flight = 64;
    bool in_process = false;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--in-process") in_process = true;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--calls") calls = std::atoi(argv[i + 1]);
        if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
        if (flag == "--in-flight") in_flight = std::atoi(argv[i + 1]);
    }

    if (in_process) return run_in_process(calls);

    // The serving node, in its own process.
    int to_child[2];
    int from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return 1;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, to_child[1]);
    posix_spawn_file_actions_addclose(&actions, from_child[0]);
    char serve_arg[] = "serve";
    char* child_argv[] = {argv[0], serve_arg, nullptr};
    pid_t child = 0;
    if (::posix_spawn(&child, "/proc/self/exe", &actions, nullptr, child_argv, environ) != 0) return 1;
    ::close(to_child[0]);
    ::close(from_child[1]);
    std::string port_text;
    char c = 0;
    while (::read(from_child[0], &c, 1) == 1 && c != '\n') port_text += c;

    asio::io_context io;
    auto options = base_options("ord");
    options.peers = std::vector<std::string>{"127.0.0.1:" + port_text};
    auto local = node::create(io, std::move(options));
    asio::cancellation_signal stop_node;
    bool node_finished = false;
    asio::co_spawn(io, local.run(), asio::bind_cancellation_slot(stop_node.slot(), [&](std::exception_ptr) {
                       node_finished = true;
                   }));

    try {
        run_to_completion(io, [&]() -> asio::awaitable<bool> {
            co_await local.wait_for_region("iad", std::chrono::seconds(10));
            co_return true;
        }());

        // 1. Round trip, one call at a time.
        std::vector<double> rtt_us;
        rtt_us.reserve(static_cast<std::size_t>(calls));
        run_to_completion(io, [&]() -> asio::awaitable<bool> {
            values args{value(std::int64_t{42})};
            for (int i = 0; i < 1000; ++i) co_await local.call_primary("echo", args);  // warm-up
            for (int i = 0; i < calls; ++i) {
                const auto start = clock_type::now();
                co_await local.call_primary("echo", args);
                rtt_us.push_back(
                    std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
            }
            co_return true;
        }());
        const auto rtt = summarize(rtt_us);
        std::printf(
            "call round trip, 2 processes, loopback, 1 in flight (%d calls): p50 %.1f us, p90 %.1f us, "
            "p99 %.1f us, max %.1f us\n",
            calls,
            rtt.p50,
            rtt.p90,
            rtt.p99,
            rtt.max);

        // 3a. Timer lateness with no RPC load.
        std::vector<double> idle_late;
        bool stop_probe = false;
        run_to_completion(io, [&]() -> asio::awaitable<bool> {
            asio::steady_timer end(co_await asio::this_coro::executor, std::chrono::seconds(1));
            end.async_wait([&](std::error_code) { stop_probe = true; });
            co_await timer_probe(idle_late, stop_probe);
            co_return true;
        }());

        // 2 + 3b. Throughput with K calls in flight, and the timer meanwhile.
        std::vector<double> loaded_late;
        long completed = 0;
        bool stop_load = false;
        int callers_left = in_flight;
        const auto load_start = clock_type::now();
        // Named, so that the closure outlives the coroutines that refer to its captures.
        auto caller = [&]() -> asio::awaitable<void> {
            values args{value(std::int64_t{42})};
            while (!stop_load) {
                co_await local.call_primary("echo", args);
                ++completed;
            }
        };
        for (int i = 0; i < in_flight; ++i) {
            asio::co_spawn(io, caller(), [&](std::exception_ptr e) {
                --callers_left;
                if (e) {
                    try {
                        std::rethrow_exception(e);
                    } catch (const std::exception& ex) {
                        std::fprintf(stderr, "caller failed: %s\n", ex.what());
                    }
                }
            });
        }
        bool probe_done = false;
        asio::co_spawn(
            io, timer_probe(loaded_late, stop_load), [&](std::exception_ptr) { probe_done = true; });
        asio::steady_timer end(
            io, std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds)));
        end.async_wait([&](std::error_code) { stop_load = true; });
        while (callers_left > 0 || !probe_done) io.run_one();
        const double elapsed = std::chrono::duration<double>(clock_type::now() - load_start).count();
        std::printf("throughput, %d in flight: %.0f calls/s (%ld calls in %.2f s)\n",
                    in_flight,
                    static_cast<double>(completed) / elapsed,
                    completed,
                    elapsed);
        const auto idle = summarize(idle_late);
        const auto loaded = summarize(loaded_late);
        std::printf(
            "1 ms Asio timer lateness, idle:                p50 %.1f us, p99 %.1f us, max %.1f us (%zu "
            "ticks)\n",
            idle.p50,
            idle.p99,
            idle.max,
            idle_late.size());
        std::printf(
            "1 ms Asio timer lateness, %d calls in flight:  p50 %.1f us, p99 %.1f us, max %.1f us (%zu "
            "ticks)\n",
            in_flight,
            loaded.p50,
            loaded.p99,
            loaded.max,
            loaded_late.size());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "benchmark failed: %s\n", e.what());
        ::close(to_child[1]);
        ::waitpid(child, nullptr, 0);
        return 1;
    }

    stop_node.emit(asio::cancellation_type::terminal);
    while (!node_finished) io.run_one();
    ::close(to_child[1]);  // the serving node exits when its stdin closes
    ::waitpid(child, nullptr, 0);
    return 0;
}
