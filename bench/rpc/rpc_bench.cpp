// RPC benchmark: two processes on loopback, one node each, next to two baselines measured in the
// same run (the machine is noisy: figures are compared as ratios, never across runs).
//
//   flypg_rpc_bench [--calls N] [--rounds R] [--seconds S] [--in-flight K] [--in-process]
//
// Starts itself again as the serving processes and measures from the calling process:
//   1. call round trip, one call at a time, N calls of each kind in R interleaved rounds:
//        raw Asio TCP ping-pong of a message of about the size of a call (the physical floor),
//        bare Cap'n Proto ping on KJ's own event loop (kj::setupAsyncIo + TwoPartyClient/Server,
//        bench_ping.capnp: what Cap'n Proto costs without flypg),
//        flypg call_primary("echo", [int64]) on a clear link (target: p50 <= 60 us),
//        the same over TLS 1.3 keyed by the cluster secret;
//      with the ratios of flypg to both baselines and of TLS to clear;
//   1b. a 256 KiB echo, clear and TLS: the cost of TLS per byte;
//   2. calls per second with K calls in flight (default 64), clear and TLS, and raw Asio round trips per
//   second
//      with K ping-pongs in flight (one connection each);
//   3. lateness of an unrelated 1 ms Asio timer on the caller's io_context, idle and during both
//      loads of (2), and the ratio flypg / raw:
//      the KJ guest loop must not starve other Asio work.
// Prints the figures; exits non-zero only when the benchmark could not run.
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_ping.capnp.h"
#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"
#include "support/child_process.hpp"
#include "support/node_process.hpp"

namespace {

using namespace flypg::rpc;
using clock_type = std::chrono::steady_clock;
using values = std::vector<value>;

const std::string secret = "benchmark-cluster-secret-0123456789";

node_options base_options(std::string region, link_security link = link_security::clear) {
    node_options o;
    o.link = link;
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

int serve(link_security link) {
    asio::io_context io;
    auto options = base_options("iad", link);
    options.procedures.add("echo", [](values args) -> asio::awaitable<values> { co_return args; });
    auto n = node::create(io, std::move(options));
    flypg::test::serve_until_stdin_closes(io, n);
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

double micros_since(clock_type::time_point start) {
    return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
}

// ---- baseline 1: raw Asio TCP ping-pong ---------------------------------------------------------

// About the size of the Call message of call_primary("echo", [int64]) with its segment table.
constexpr std::size_t raw_message_bytes = 160;

asio::awaitable<void> raw_echo(asio::ip::tcp::socket socket) {
    constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
    socket.set_option(asio::ip::tcp::no_delay(true));
    std::array<char, raw_message_bytes> buffer{};
    for (;;) {
        auto [read_ec, n] = co_await asio::async_read(socket, asio::buffer(buffer), use_tuple);
        if (read_ec) co_return;
        auto [write_ec, m] = co_await asio::async_write(socket, asio::buffer(buffer), use_tuple);
        if (write_ec) co_return;
    }
}

int serve_raw() {
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    auto accept_loop = [&]() -> asio::awaitable<void> {
        for (;;) {
            auto socket = co_await acceptor.async_accept(asio::use_awaitable);
            asio::co_spawn(io, raw_echo(std::move(socket)), asio::detached);
        }
    };
    asio::co_spawn(io, accept_loop(), asio::detached);
    asio::posix::stream_descriptor input(io, ::dup(STDIN_FILENO));
    std::array<char, 16> buffer{};
    input.async_read_some(asio::buffer(buffer), [&](std::error_code, std::size_t) { io.stop(); });
    std::printf("LISTENING %u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
    std::fflush(stdout);
    io.run();
    return 0;
}

asio::awaitable<void> raw_pings(asio::ip::tcp::socket& socket, int calls, std::vector<double>& out) {
    std::array<char, raw_message_bytes> buffer{};
    for (int i = 0; i < calls; ++i) {
        const auto start = clock_type::now();
        co_await asio::async_write(socket, asio::buffer(buffer), asio::use_awaitable);
        co_await asio::async_read(socket, asio::buffer(buffer), asio::use_awaitable);
        out.push_back(micros_since(start));
    }
}

// ---- baseline 2: bare Cap'n Proto on KJ's own event loop ----------------------------------------

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class bench_ping_server final : public BenchPing::Server {
  protected:
    kj::Promise<void> echo(EchoContext context) override {
        auto args = context.getParams().getArgs();
        auto out = context.getResults().initValues(args.size());
        for (unsigned i = 0; i < args.size(); ++i) out.set(i, args[i]);
        return kj::READY_NOW;
    }
};
#pragma GCC diagnostic pop

int serve_capnp() {
    auto io = kj::setupAsyncIo();
    capnp::TwoPartyServer server(kj::heap<bench_ping_server>());
    auto address = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
    auto listener = address->listen();
    auto listening = server.listen(*listener).eagerlyEvaluate(nullptr);
    std::printf("LISTENING %u\n", listener->getPort());
    std::fflush(stdout);
    // Serves until stdin closes.
    auto input = io.lowLevelProvider->wrapInputFd(::dup(STDIN_FILENO));
    char c = 0;
    input->tryRead(&c, 1, 1).wait(io.waitScope);
    return 0;
}

// The calling side runs on a thread of its own: KJ allows one event loop per thread, and the main
// thread hosts flypg's. The thread measures blocks of calls when asked, so that its rounds
// interleave with the other kinds'.
class capnp_client {
  public:
    explicit capnp_client(unsigned port) : thread_([this, port] { run(port); }) {}
    ~capnp_client() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        changed_.notify_all();
        thread_.join();
    }
    capnp_client(const capnp_client&) = delete;
    capnp_client& operator=(const capnp_client&) = delete;

    /// Makes `calls` calls one at a time and appends their round trips to `out`; throws when the
    /// client failed.
    void measure(int calls, std::vector<double>& out) {
        std::unique_lock lock(mutex_);
        out_ = &out;
        todo_ = calls;
        changed_.notify_all();
        changed_.wait(lock, [&] { return todo_ == 0 || !failure_.empty(); });
        if (!failure_.empty()) throw std::runtime_error("bare Cap'n Proto client: " + failure_);
    }

  private:
    void run(unsigned port) {
        try {
            auto io = kj::setupAsyncIo();
            auto& ws = io.waitScope;
            auto address = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(ws);
            auto stream = address->connect().wait(ws);
            capnp::TwoPartyClient client(*stream);
            auto cap = client.bootstrap().castAs<BenchPing>();
            auto call = [&] {
                auto request = cap.echoRequest();
                request.setProcedure("echo");
                request.initArgs(1).set(0, 42);
                auto response = request.send().wait(ws);
                if (response.getValues().size() != 1) throw std::runtime_error("bad echo");
            };
            for (int i = 0; i < 1000; ++i) call();  // warm-up
            for (;;) {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return stop_ || todo_ > 0; });
                if (stop_) return;
                const int calls = todo_;
                auto* out = out_;
                lock.unlock();
                for (int i = 0; i < calls; ++i) {
                    const auto start = clock_type::now();
                    call();
                    out->push_back(micros_since(start));
                }
                lock.lock();
                todo_ = 0;
                changed_.notify_all();
            }
        } catch (const std::exception& e) {
            std::lock_guard lock(mutex_);
            failure_ = e.what();
            if (failure_.empty()) failure_ = "unknown failure";
            changed_.notify_all();
        } catch (const kj::Exception& e) {
            std::lock_guard lock(mutex_);
            failure_ = e.getDescription().cStr();
            changed_.notify_all();
        }
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    int todo_ = 0;
    std::vector<double>* out_ = nullptr;
    bool stop_ = false;
    std::string failure_;
    std::thread thread_;
};

// ---- the serving processes ----------------------------------------------------------------------

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

// A node of the calling process, running until the object goes (its run() has returned then).
class running_node {
  public:
    running_node(asio::io_context& io, node_options options)
        : io_(io), node_(node::create(io, std::move(options))) {
        asio::co_spawn(
            io, node_.run(), asio::bind_cancellation_slot(stop_.slot(), [this](std::exception_ptr) {
                finished_ = true;
            }));
    }
    ~running_node() {
        stop_.emit(asio::cancellation_type::terminal);
        while (!finished_) io_.run_one();
    }
    running_node(const running_node&) = delete;
    running_node& operator=(const running_node&) = delete;
    node& get() { return node_; }

  private:
    asio::io_context& io_;
    node node_;
    asio::cancellation_signal stop_;
    bool finished_ = false;
};

// Both nodes on one io_context (one thread): the round trip without process wake-ups, i.e. the
// CPU cost of a call through both halves of flypg, Cap'n Proto and the loopback stack.
int run_in_process(int calls) {
    asio::io_context io;
    auto server_options = base_options("iad");
    server_options.procedures.add("echo", [](values args) -> asio::awaitable<values> { co_return args; });
    running_node server(io, std::move(server_options));
    auto client_options = base_options("ord");
    client_options.peers =
        std::vector<std::string>{"127.0.0.1:" + std::to_string(server.get().local_endpoint().port())};
    running_node running_client(io, std::move(client_options));
    node& client = running_client.get();
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
    return 0;
}

void print_lateness(const std::string& name, const percentiles& p, std::size_t ticks) {
    std::printf("  %-44s p50 %6.1f us, p90 %6.1f us, p99 %6.1f us, max %7.1f us (%zu ticks)\n",
                name.c_str(),
                p.p50,
                p.p90,
                p.p99,
                p.max,
                ticks);
}

asio::awaitable<void> flypg_caller(node& n, const values& args, const bool& stop, long& completed) {
    while (!stop) {
        co_await n.call_primary("echo", args);
        ++completed;
    }
}

asio::awaitable<void> raw_caller(asio::ip::tcp::socket& socket, const bool& stop, long& completed) {
    std::array<char, raw_message_bytes> buffer{};
    while (!stop) {
        co_await asio::async_write(socket, asio::buffer(buffer), asio::use_awaitable);
        co_await asio::async_read(socket, asio::buffer(buffer), asio::use_awaitable);
        ++completed;
    }
}

struct load_result {
    long completed = 0;
    double elapsed = 0;
    std::vector<double> late_us;
    double per_second() const { return static_cast<double>(completed) / elapsed; }
    void add(const load_result& other) {
        completed += other.completed;
        elapsed += other.elapsed;
        late_us.insert(late_us.end(), other.late_us.begin(), other.late_us.end());
    }
};

// Runs `in_flight` callers (make_caller(stop, completed) -> awaitable<void>) for `seconds`, with
// the 1 ms timer probe on the same io_context.
template <class MakeCaller>
load_result run_load(asio::io_context& io, double seconds, int in_flight, MakeCaller make_caller) {
    load_result out;
    bool stop = false;
    int callers_left = in_flight;
    const auto start = clock_type::now();
    for (int i = 0; i < in_flight; ++i) {
        asio::co_spawn(io, make_caller(stop, out.completed), [&](std::exception_ptr e) {
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
    asio::co_spawn(io, timer_probe(out.late_us, stop), [&](std::exception_ptr) { probe_done = true; });
    asio::steady_timer end(
        io, std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds)));
    end.async_wait([&](std::error_code) { stop = true; });
    while (callers_left > 0 || !probe_done) io.run_one();
    out.elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
    return out;
}

void print_round_trip(const char* name, const percentiles& p) {
    std::printf(
        "  %-44s p50 %6.1f us, p90 %6.1f us, p99 %6.1f us, max %7.1f us\n", name, p.p50, p.p90, p.p99, p.max);
}

void print_ratio(const char* name, const percentiles& flypg, const percentiles& baseline) {
    std::printf(
        "  %-44s p50 %5.2f x, p99 %5.2f x\n", name, flypg.p50 / baseline.p50, flypg.p99 / baseline.p99);
}

int run_two_processes(int calls, int rounds, double seconds, int in_flight) {
    // This program again, as each kind of server; each exits when its stdin closes.
    flypg::test::child_process flypg_server("/proc/self/exe", {"serve"});
    flypg::test::child_process tls_server("/proc/self/exe", {"serve-tls"});
    flypg::test::child_process raw_server("/proc/self/exe", {"serve-raw"});
    flypg::test::child_process capnp_server("/proc/self/exe", {"serve-capnp"});

    // Two calling nodes, each knowing only its own server: a clear link (Fly's private network)
    // and TLS keyed by the cluster secret (the default elsewhere).
    asio::io_context io;
    auto clear_options = base_options("ord");
    clear_options.peers = std::vector<std::string>{flypg_server.address()};
    running_node clear_node(io, std::move(clear_options));
    auto tls_options = base_options("ord", link_security::pre_shared_key);
    tls_options.peers = std::vector<std::string>{tls_server.address()};
    running_node tls_node(io, std::move(tls_options));
    node& local = clear_node.get();

    run_to_completion(io, [&]() -> asio::awaitable<bool> {
        co_await local.wait_for_region("iad", std::chrono::seconds(10));
        co_await tls_node.get().wait_for_region("iad", std::chrono::seconds(10));
        co_return true;
    }());

    // 1. Round trip, one call at a time, the kinds in interleaved rounds (each round of each
    // kind sees about the same machine).
    asio::ip::tcp::socket raw(io);
    raw.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), raw_server.port()));
    raw.set_option(asio::ip::tcp::no_delay(true));
    capnp_client bare(capnp_server.port());
    std::vector<double> raw_us, capnp_us, flypg_us, tls_us, warm_up;
    raw_us.reserve(static_cast<std::size_t>(calls));
    capnp_us.reserve(static_cast<std::size_t>(calls));
    flypg_us.reserve(static_cast<std::size_t>(calls));
    tls_us.reserve(static_cast<std::size_t>(calls));
    const values args{value(std::int64_t{42})};
    auto flypg_calls =
        [&](node& n, int count, const values& a, std::vector<double>& out) -> asio::awaitable<bool> {
        for (int i = 0; i < count; ++i) {
            const auto start = clock_type::now();
            co_await n.call_primary("echo", a);
            out.push_back(micros_since(start));
        }
        co_return true;
    };
    run_to_completion(io, flypg_calls(local, 1000, args, warm_up));
    run_to_completion(io, flypg_calls(tls_node.get(), 1000, args, warm_up));
    run_to_completion(io, [&]() -> asio::awaitable<bool> {
        co_await raw_pings(raw, 1000, warm_up);
        co_return true;
    }());
    for (int r = 0; r < rounds; ++r) {
        const int n = calls / rounds;
        run_to_completion(io, [&]() -> asio::awaitable<bool> {
            co_await raw_pings(raw, n, raw_us);
            co_return true;
        }());
        bare.measure(n, capnp_us);
        run_to_completion(io, flypg_calls(local, n, args, flypg_us));
        run_to_completion(io, flypg_calls(tls_node.get(), n, args, tls_us));
    }
    const auto raw_rtt = summarize(raw_us);
    const auto capnp_rtt = summarize(capnp_us);
    const auto flypg_rtt = summarize(flypg_us);
    const auto tls_rtt = summarize(tls_us);
    std::printf("call round trip, 2 processes, loopback, 1 in flight, %zu calls of each kind in %d rounds:\n",
                flypg_us.size(),
                rounds);
    print_round_trip("raw Asio TCP ping-pong (160 B each way)", raw_rtt);
    print_round_trip("bare Cap'n Proto ping (KJ's own loop)", capnp_rtt);
    print_round_trip("flypg call_primary(\"echo\", [int64]), clear", flypg_rtt);
    print_round_trip("the same over TLS 1.3 (PSK)", tls_rtt);
    print_ratio("flypg / raw Asio TCP", flypg_rtt, raw_rtt);
    print_ratio("flypg / bare Cap'n Proto", flypg_rtt, capnp_rtt);
    print_ratio("flypg TLS / flypg clear", tls_rtt, flypg_rtt);
    raw.close();

    // 1b. What TLS costs per byte: a 256 KiB argument echoed back (512 KiB sealed and opened on
    // each side per call), clear and TLS interleaved.
    const values big{value(std::string(256 * 1024, 'x'))};
    std::vector<double> big_clear_us, big_tls_us;
    const int big_calls = std::max(rounds, calls / 40);
    for (int r = 0; r < rounds; ++r) {
        run_to_completion(io, flypg_calls(local, big_calls / rounds, big, big_clear_us));
        run_to_completion(io, flypg_calls(tls_node.get(), big_calls / rounds, big, big_tls_us));
    }
    const auto big_clear = summarize(big_clear_us);
    const auto big_tls = summarize(big_tls_us);
    std::printf("256 KiB echo round trip, %zu calls of each kind:\n", big_clear_us.size());
    print_round_trip("flypg, clear", big_clear);
    print_round_trip("flypg, TLS 1.3 (PSK)", big_tls);
    print_ratio("TLS / clear", big_tls, big_clear);

    // 3a. Timer lateness with no load.
    std::vector<double> idle_late;
    bool stop_probe = false;
    run_to_completion(io, [&]() -> asio::awaitable<bool> {
        asio::steady_timer end(co_await asio::this_coro::executor, std::chrono::seconds(1));
        end.async_wait([&](std::error_code) { stop_probe = true; });
        co_await timer_probe(idle_late, stop_probe);
        co_return true;
    }());

    // 2 + 3b. Throughput with K calls in flight, and the timer meanwhile; the same with K raw Asio
    // ping-pongs (one connection each), whose timer lateness is what a busy two-core machine
    // gives any Asio program (CPU contention, preemption).
    std::vector<asio::ip::tcp::socket> raw_connections;
    for (int i = 0; i < in_flight; ++i) {
        raw_connections.emplace_back(io);
        raw_connections.back().connect(
            asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), raw_server.port()));
        raw_connections.back().set_option(asio::ip::tcp::no_delay(true));
    }
    // Interleaved rounds, as for the round trips: both loads see about the same machine.
    load_result flypg_load;
    load_result tls_load;
    load_result raw_load;
    const double round_seconds = seconds / rounds;
    for (int r = 0; r < rounds; ++r) {
        flypg_load.add(run_load(io, round_seconds, in_flight, [&](const bool& stop, long& completed) {
            return flypg_caller(local, args, stop, completed);
        }));
        tls_load.add(run_load(io, round_seconds, in_flight, [&](const bool& stop, long& completed) {
            return flypg_caller(tls_node.get(), args, stop, completed);
        }));
        std::size_t next_connection = 0;
        raw_load.add(run_load(io, round_seconds, in_flight, [&](const bool& stop, long& completed) {
            return raw_caller(raw_connections[next_connection++], stop, completed);
        }));
    }
    raw_connections.clear();

    std::printf(
        "throughput, %d in flight: flypg %.0f calls/s (%ld in %.2f s), over TLS %.0f calls/s (%.2f x); "
        "raw Asio TCP %.0f round trips/s\n",
        in_flight,
        flypg_load.per_second(),
        flypg_load.completed,
        flypg_load.elapsed,
        tls_load.per_second(),
        tls_load.per_second() / flypg_load.per_second(),
        raw_load.per_second());
    const auto idle = summarize(idle_late);
    const auto raw_loaded = summarize(raw_load.late_us);
    const auto loaded = summarize(flypg_load.late_us);
    std::printf("1 ms Asio timer lateness (same io_context as the load):\n");
    print_lateness("idle", idle, idle_late.size());
    print_lateness(std::to_string(in_flight) + " raw Asio TCP ping-pongs in flight",
                   raw_loaded,
                   raw_load.late_us.size());
    print_lateness(std::to_string(in_flight) + " flypg calls in flight", loaded, flypg_load.late_us.size());
    print_ratio("loaded lateness, flypg / raw Asio TCP", loaded, raw_loaded);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "serve") return serve(link_security::clear);
    if (argc > 1 && std::string(argv[1]) == "serve-tls") return serve(link_security::pre_shared_key);
    if (argc > 1 && std::string(argv[1]) == "serve-raw") return serve_raw();
    if (argc > 1 && std::string(argv[1]) == "serve-capnp") return serve_capnp();
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
            std::printf(
                "Usage: flypg_rpc_bench [--calls N] [--rounds R] [--seconds S] [--in-flight K] "
                "[--in-process]\n"
                "\n"
                "Two processes on loopback: call round trips next to a raw Asio TCP ping-pong and a bare\n"
                "Cap'n Proto ping, clear and TLS links side by side (small calls and a 256 KiB echo),\n"
                "calls per second with K in flight, and 1 ms timer lateness under load. Defaults: 20000\n"
                "calls in 4 interleaved rounds, 3 s of load, 64 in flight. --in-process: both nodes in\n"
                "one thread, round trips only. Needs no database.\n");
            return 0;
        }
    }
    int calls = 20000;
    int rounds = 4;
    double seconds = 3.0;
    int in_flight = 64;
    bool in_process = false;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--in-process") in_process = true;
    }
    for (int i = 1; i + 1 < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--calls") calls = std::atoi(argv[i + 1]);
        if (flag == "--rounds") rounds = std::max(1, std::atoi(argv[i + 1]));
        if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
        if (flag == "--in-flight") in_flight = std::atoi(argv[i + 1]);
    }
    if (calls < rounds) calls = rounds;

    try {
        if (in_process) return run_in_process(calls);
        return run_two_processes(calls, rounds, seconds, in_flight);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "benchmark failed: %s\n", e.what());
        return 1;
    }
}
