// Replication tracker benchmark: prints figures, asserts nothing.
//
//   eval "$(scripts/pg-cluster start)"; build/bench/replication/flypg_tracker_bench
//   flypg_tracker_bench --primary="host=... port=55432 ..." --replica="host=... port=55433 ..."
//
// 1. Wait overhead above the true replay time, with 1, 100 and 1,000 waits at once, for both
//    strategies, and under sustained load from 1 and 100 writer coroutines. The true time comes from an
//    oracle: a separate thread with its own connection busy-polling pg_last_wal_replay_lsn() on the replica
//    (synchronous libpq, so the benchmark's io_context cannot delay it). For each write, the oracle time is
//    when the oracle first saw a position at or past the write's commit LSN; overhead = wait end - oracle
//    time. Waits are issued as callbacks (the tracker's own cost) and as one coroutine each (what
//    an application sees, including starting N coroutines); the "+cached" rows are the same-run
//    baselines of each with no polling at all.
//
//    flypg_tracker_bench --parts=overhead --shapes=waits,cached --strategies=poll --writes=3000
//
// 2. Polls per second with 1, 100 and 10,000 waits pending, on a replica that keeps moving (a
//    background writer) and on one that stands still.
// 3. Memory per pending wait, 100,000 of them (mallinfo2 before and after): the tracker's own
//    bookkeeping (callback waits), and the whole cost of one coroutine per wait.
// 4. Queries per second while nobody waits.
#include <libpq-fe.h>
#include <malloc.h>

#include <absl/flags/flag.h>

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_flags.hpp"
#include "flypg/lsn.hpp"
#include "flypg/pg/connection.hpp"
#include "flypg/pg/pool.hpp"
#include "flypg/replication/pg_replay_source.hpp"
#include "flypg/replication/tracker.hpp"

ABSL_FLAG(std::string,
          primary,
          flypg::bench::env_or("FLYPG_TEST_PRIMARY", "host=127.0.0.1 port=55432 dbname=flypg user=flypg"),
          "the primary (default: $FLYPG_TEST_PRIMARY)");
ABSL_FLAG(std::string,
          replica,
          flypg::bench::env_or("FLYPG_TEST_REPLICA", "host=127.0.0.1 port=55433 dbname=flypg user=flypg"),
          "the replica the tracker watches (default: $FLYPG_TEST_REPLICA)");
ABSL_FLAG(int, writes, 3000, "writes per overhead measurement");
ABSL_FLAG(double, seconds, 2.0, "length of each polls-per-second and idle measurement");
ABSL_FLAG(int, pool_size, 64, "primary connections used by the writers");
ABSL_FLAG(int,
          oracle_pause_us,
          0,
          "pause between two oracle polls (0: busy-poll; on a small machine a pause leaves CPU to the rest)");
ABSL_FLAG(std::string, parts, "overhead,polls,memory,idle", "which parts to run");
ABSL_FLAG(std::string,
          shapes,
          "waits,coroutines,cached,sustained",
          "which overhead shapes to run (cached adds the cached baseline of waits and coroutines)");
ABSL_FLAG(std::string, waits, "1,100,1000", "numbers of simultaneous waits the overhead part measures");
ABSL_FLAG(int, poll_floor_us, 0, "tracker_options::poll_floor for the overhead part (0: the default)");
ABSL_FLAG(int, poll_ceiling_us, 0, "tracker_options::poll_ceiling for the overhead part (0: the default)");
ABSL_FLAG(bool, early_poll, true, "tracker_options::early_poll for the overhead part");
ABSL_FLAG(std::string, strategies, "poll,long_poll", "which tracker strategies the overhead part runs");

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using flypg::lsn;
namespace replication = flypg::replication;

double micros(clock_type::duration d) {
    return std::chrono::duration<double, std::micro>(d).count();
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// Whether the comma-separated `list` names `item` exactly.
bool listed(const std::string& list, std::string_view item) {
    std::string_view rest = list;
    for (;;) {
        const auto comma = rest.find(',');
        if (rest.substr(0, comma) == item) return true;
        if (comma == std::string_view::npos) return false;
        rest.remove_prefix(comma + 1);
    }
}

bool wanted(const char* part) {
    return listed(absl::GetFlag(FLAGS_parts), part);
}

// The oracle: busy-polls the replay position on its own thread and records when each new
// position was first seen.
class oracle {
  public:
    explicit oracle(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
        if (PQstatus(conn_) != CONNECTION_OK) {
            std::fprintf(stderr, "oracle: cannot connect: %s", PQerrorMessage(conn_));
            std::exit(1);
        }
        thread_ = std::thread([this] { loop(); });
    }
    ~oracle() {
        stop_ = true;
        thread_.join();
        PQfinish(conn_);
    }

    /// When the oracle first saw a position >= target (nullopt if never).
    std::optional<clock_type::time_point> seen(lsn target) {
        std::lock_guard lock(mutex_);
        auto it = std::lower_bound(
            seen_.begin(), seen_.end(), target, [](const sample& s, lsn t) { return s.position < t; });
        if (it == seen_.end()) return std::nullopt;
        return it->at;
    }

    std::uint64_t polls() const { return polls_; }
    /// Mean round trip of the oracle's queries so far.
    double mean_rtt_us() const {
        return polls_ == 0 ? 0.0 : static_cast<double>(busy_ns_) / 1e3 / static_cast<double>(polls_);
    }
    void reset() {
        std::lock_guard lock(mutex_);
        seen_.clear();
    }

  private:
    struct sample {
        lsn position;
        clock_type::time_point at;
    };

    void loop() {
        while (!stop_) {
            const auto sent = clock_type::now();
            PGresult* r = PQexec(conn_, "SELECT pg_last_wal_replay_lsn()::text");
            const auto now = clock_type::now();
            ++polls_;
            busy_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent).count();
            if (PQresultStatus(r) == PGRES_TUPLES_OK && !PQgetisnull(r, 0, 0)) {
                const lsn position = lsn::parse(PQgetvalue(r, 0, 0));
                std::lock_guard lock(mutex_);
                if (seen_.empty() || seen_.back().position < position) seen_.push_back({position, now});
            }
            PQclear(r);
            if (pause_.count() > 0) std::this_thread::sleep_for(pause_);
        }
    }

    PGconn* conn_;
    const std::chrono::microseconds pause_{absl::GetFlag(FLAGS_oracle_pause_us)};
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> polls_{0};
    std::atomic<std::int64_t> busy_ns_{0};
    std::mutex mutex_;
    std::vector<sample> seen_;
    std::thread thread_;
};

std::unique_ptr<replication::replay_source> replica_source(asio::any_io_executor ex) {
    replication::pg_replay_source_options options;
    options.connect.conninfo = absl::GetFlag(FLAGS_replica);
    return replication::make_pg_replay_source(std::move(ex), std::move(options));
}

asio::awaitable<lsn> insert_row(flypg::pg::connection& primary, std::int64_t id) {
    std::vector<flypg::pg::statement> batch(2);
    batch[0].sql = "INSERT INTO flypg_tracker_bench (id) VALUES ($1)";
    batch[0].params.emplace_back(id);
    batch[0].sync = flypg::pg::sync_after::yes;
    batch[1].sql = "SELECT pg_current_wal_flush_lsn()::text";
    std::vector<flypg::pg::result> results = co_await primary.pipeline(std::move(batch));
    results[0].throw_if_error();
    results[1].throw_if_error();
    co_return lsn::parse(results[1][0].get<std::string>(0));
}

// Runs `body` beside `t.run()` and stops the tracker when `body` returns.
asio::awaitable<void> with_tracker(replication::tracker& t, asio::awaitable<void> body) {
    using namespace asio::experimental::awaitable_operators;
    co_await (t.run() || std::move(body));
}

// Commits `count` rows in one round trip, each its own transaction (a Sync after each INSERT),
// and returns their commit LSNs (flush position read right after each commit, same session).
asio::awaitable<std::vector<lsn>> commit_rows(flypg::pg::connection& primary,
                                              std::int64_t first_id,
                                              int count) {
    std::vector<flypg::pg::statement> batch(static_cast<std::size_t>(2 * count));
    for (int i = 0; i < count; ++i) {
        auto& insert = batch[static_cast<std::size_t>(2 * i)];
        insert.sql = "INSERT INTO flypg_tracker_bench (id) VALUES ($1)";
        insert.params.emplace_back(first_id + i);
        insert.sync = flypg::pg::sync_after::yes;
        auto& read = batch[static_cast<std::size_t>(2 * i + 1)];
        read.sql = "SELECT pg_current_wal_flush_lsn()::text";
        read.sync = flypg::pg::sync_after::yes;
    }
    std::vector<flypg::pg::result> results = co_await primary.pipeline(std::move(batch));
    std::vector<lsn> commits;
    for (int i = 0; i < count; ++i) {
        results[static_cast<std::size_t>(2 * i)].throw_if_error();
        const auto& read = results[static_cast<std::size_t>(2 * i + 1)];
        read.throw_if_error();
        commits.push_back(lsn::parse(read[0].get<std::string>(0)));
    }
    co_return commits;
}

// Mean of the durations recorded between two snapshots of a histogram.
double mean_us(const replication::latency_histogram& before, const replication::latency_histogram& after) {
    const auto count = after.count - before.count;
    return count == 0 ? 0.0 : micros(after.sum - before.sum) / static_cast<double>(count);
}

struct overhead_result {
    std::vector<double> overhead_us;
    std::vector<double> wait_us;
    std::vector<double> insert_us;  // sustained only: the writers' INSERT + commit round trip
    std::uint64_t polls = 0;
    double seconds = 0;
    std::size_t peak_waiters = 0;
    double poll_rtt_us = 0;  // mean round trip of the tracker's queries
    double issue_us = 0;     // mean time to issue one round's N waits (all in one handler)
    // Overhead counted from when the round's last wait was issued: what is left once the
    // application's own handler, which no completion can overtake, has returned.
    std::vector<double> after_issue_us;
    int missing = 0;
};

// Rounds of `concurrency` simultaneous waits: one pipeline commits `concurrency` transactions,
// then each commit's LSN is waited for. The writers cost one round trip per round, so the figures
// are the tracker's, not the load generator's.
struct round_shape {
    /// One coroutine per wait (what an application with a coroutine per request sees), or plain
    /// callbacks issued in one loop (the tracker's own cost, without starting N coroutines).
    bool coroutine_per_wait = false;
    /// Baseline: the tracker already knows every commit is replayed, so the waits take the cached
    /// path: what registering and resuming N waits costs on one thread, which no polling removes.
    bool replayed_first = false;
};

asio::awaitable<void> measure_overhead(replication::tracker& t,
                                       flypg::pg::connection& primary,
                                       oracle& truth,
                                       int concurrency,
                                       int writes,
                                       overhead_result& out,
                                       round_shape shape) {
    auto ex = co_await asio::this_coro::executor;
    struct sample {
        lsn commit;
        clock_type::time_point done;
        clock_type::duration waited;
        clock_type::time_point round_issued;  // when the round's last wait was issued
    };
    std::vector<sample> samples;
    samples.reserve(static_cast<std::size_t>(writes));
    static std::int64_t next_id = 0;
    const auto polls_before = t.stats().polls;
    const auto poll_latency_before = t.stats().poll_latency;
    clock_type::duration issue_total{};
    int rounds = 0;
    const auto start = clock_type::now();
    for (int done = 0; done < writes; done += concurrency) {
        const std::vector<lsn> commits = co_await commit_rows(primary, next_id, concurrency);
        next_id += concurrency;
        if (shape.replayed_first) co_await t.wait_for(commits.back());
        int remaining = concurrency;
        clock_type::time_point last_issued;
        asio::steady_timer round_done(ex, clock_type::time_point::max());
        // The round waits for every wait, so the references stay valid. Every wait of a round is
        // issued before any completes (completions are posted after the issuing handlers).
        auto record = [&samples, &remaining, &round_done, &last_issued](lsn target,
                                                                        clock_type::time_point begin) {
            const auto end = clock_type::now();
            samples.push_back({target, end, end - begin, last_issued});
            if (--remaining == 0) round_done.cancel();
        };
        const auto issue_start = clock_type::now();
        for (const lsn commit : commits) {
            if (shape.coroutine_per_wait) {
                auto waiter = [&t, &record, &last_issued](lsn target) -> asio::awaitable<void> {
                    const auto begin = clock_type::now();
                    last_issued = begin;
                    co_await t.wait_for(target);
                    record(target, begin);
                };
                asio::co_spawn(ex, waiter(commit), asio::detached);
            } else {
                last_issued = clock_type::now();
                t.wait_for(commit,
                           [&record, commit, begin = last_issued](std::exception_ptr e,
                                                                  replication::lsn_wait_result) {
                               if (e) std::rethrow_exception(e);
                               record(commit, begin);
                           });
            }
        }
        issue_total += clock_type::now() - issue_start;
        ++rounds;
        co_await round_done.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    }
    out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    out.polls = t.stats().polls - polls_before;
    out.peak_waiters = t.stats().peak_waiters;
    out.poll_rtt_us = mean_us(poll_latency_before, t.stats().poll_latency);
    out.issue_us = rounds == 0 ? 0.0 : micros(issue_total) / rounds;
    // Let the oracle catch up with the last writes before reading it.
    asio::steady_timer settle(ex, 20ms);
    co_await settle.async_wait(asio::use_awaitable);
    for (const sample& s : samples) {
        out.wait_us.push_back(micros(s.waited));
        if (auto seen = truth.seen(s.commit)) {
            // No mechanism can release a wait before it starts, nor before the replay.
            const auto earliest = std::max(*seen, s.done - s.waited);
            out.overhead_us.push_back(micros(s.done - earliest));
            out.after_issue_us.push_back(micros(s.done - std::max(*seen, s.round_issued)));
        } else {
            ++out.missing;
        }
    }
}

// Sustained load: `writers` coroutines, each committing one row and waiting for it, over a pool.
// Here the load generator shares the thread (and, on a small machine, the CPU) with the tracker.
asio::awaitable<void> measure_sustained(replication::tracker& t,
                                        flypg::pg::pool& primary,
                                        oracle& truth,
                                        int writers,
                                        int writes,
                                        overhead_result& out) {
    auto ex = co_await asio::this_coro::executor;
    struct sample {
        lsn commit;
        clock_type::time_point done;
        clock_type::duration waited;
    };
    std::vector<sample> samples;
    int next = 0;
    int remaining = writers;
    static std::int64_t next_id = 1'000'000'000;
    asio::steady_timer all_done(ex, clock_type::time_point::max());
    const auto polls_before = t.stats().polls;
    const auto poll_latency_before = t.stats().poll_latency;
    const auto start = clock_type::now();
    auto writer = [&]() -> asio::awaitable<void> {
        while (next < writes) {
            ++next;
            lsn commit;
            {
                auto conn = co_await primary.acquire();
                const auto sent = clock_type::now();
                commit = co_await insert_row(*conn, ++next_id);
                out.insert_us.push_back(micros(clock_type::now() - sent));
            }
            const auto begin = clock_type::now();
            co_await t.wait_for(commit);
            const auto end = clock_type::now();
            samples.push_back({commit, end, end - begin});
        }
    };
    for (int i = 0; i < writers; ++i) {
        asio::co_spawn(ex, writer(), [&](std::exception_ptr) {
            if (--remaining == 0) all_done.cancel();
        });
    }
    co_await all_done.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    out.polls = t.stats().polls - polls_before;
    out.peak_waiters = t.stats().peak_waiters;
    out.poll_rtt_us = mean_us(poll_latency_before, t.stats().poll_latency);
    asio::steady_timer settle(ex, 20ms);
    co_await settle.async_wait(asio::use_awaitable);
    for (const sample& s : samples) {
        out.wait_us.push_back(micros(s.waited));
        if (auto seen = truth.seen(s.commit)) {
            // No mechanism can release a wait before it starts, nor before the replay.
            const auto earliest = std::max(*seen, s.done - s.waited);
            out.overhead_us.push_back(micros(s.done - earliest));
        } else {
            ++out.missing;
        }
    }
}

void print_row(
    const char* strategy, const char* shape, int concurrency, const overhead_result& r, int writes) {
    char issue[32] = "      -";
    if (!r.insert_us.empty()) {
        std::snprintf(issue, sizeof issue, "%5.0fus", percentile(r.insert_us, 0.5));
    } else if (r.issue_us > 0) {
        std::snprintf(issue, sizeof issue, "%5.0fus", r.issue_us);
    }
    char after[32] = "        -        -";
    if (!r.after_issue_us.empty()) {
        std::snprintf(after,
                      sizeof after,
                      "%7.0fus %7.0fus",
                      percentile(r.after_issue_us, 0.5),
                      percentile(r.after_issue_us, 0.99));
    }
    std::printf("   %-9s %-18s %6d %7.0fus %7.0fus %7.0fus %7.0fus %9.0f %7.0fus %9.0f %7zu %s %s%s\n",
                strategy,
                shape,
                concurrency,
                percentile(r.overhead_us, 0.5),
                percentile(r.overhead_us, 0.99),
                percentile(r.wait_us, 0.5),
                percentile(r.wait_us, 0.99),
                static_cast<double>(r.polls) / r.seconds,
                r.poll_rtt_us,
                static_cast<double>(writes) / r.seconds,
                r.peak_waiters,
                issue,
                after,
                r.missing > 0 ? " (oracle missed some)" : "");
    std::fflush(stdout);
}

asio::awaitable<void> overhead_part(asio::any_io_executor ex) {
    flypg::pg::connect_options connect;
    connect.conninfo = absl::GetFlag(FLAGS_primary);
    flypg::pg::connection primary = co_await flypg::pg::connection::connect(ex, connect);
    flypg::pg::pool_options pool_options;
    pool_options.connection.conninfo = absl::GetFlag(FLAGS_primary);
    pool_options.max_size = static_cast<std::size_t>(absl::GetFlag(FLAGS_pool_size));
    flypg::pg::pool pool(ex, pool_options);
    oracle truth(absl::GetFlag(FLAGS_replica));
    const int writes = absl::GetFlag(FLAGS_writes);

    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    std::printf("1. wait overhead above the oracle (%d writes each; load average %.2f on %u CPUs)\n",
                writes,
                load[0],
                std::thread::hardware_concurrency());
    std::printf(
        "   waits: N waits at once (one pipeline commits N rows, then N callback waits are issued)\n"
        "   coroutines: the same with one coroutine per wait\n"
        "   +cached: the same rounds with every commit already known replayed: the cost of registering\n"
        "     and resuming N waits (or starting N coroutines) on one thread, which no polling removes\n"
        "   sustained: N writer coroutines in a loop of insert + wait over a %d-connection pool\n"
        "   issue: time to issue a round's N waits in one handler (sustained: a writer's insert round "
        "trip)\n"
        "   aft: overhead counted from the round's last wait instead of each wait's own start: what is\n"
        "     left after the issuing handler returns (no completion can run before it does)\n",
        absl::GetFlag(FLAGS_pool_size));
    std::printf("   %-9s %-18s %6s %9s %9s %9s %9s %9s %9s %9s %7s %7s %9s %9s\n",
                "strategy",
                "shape",
                "N",
                "ovh p50",
                "ovh p99",
                "wait p50",
                "wait p99",
                "polls/s",
                "poll rtt",
                "writes/s",
                "peak",
                "issue",
                "aft p50",
                "aft p99");
    for (auto strategy : {replication::poll_strategy::poll, replication::poll_strategy::long_poll}) {
        replication::tracker_options options;
        options.strategy = strategy;
        options.early_poll = absl::GetFlag(FLAGS_early_poll);
        if (absl::GetFlag(FLAGS_poll_floor_us) > 0) {
            options.poll_floor = std::chrono::microseconds(absl::GetFlag(FLAGS_poll_floor_us));
        }
        if (absl::GetFlag(FLAGS_poll_ceiling_us) > 0) {
            options.poll_ceiling = std::chrono::microseconds(absl::GetFlag(FLAGS_poll_ceiling_us));
        }
        const char* name = strategy == replication::poll_strategy::poll ? "poll" : "long_poll";
        if (!listed(absl::GetFlag(FLAGS_strategies), name)) continue;
        const std::string shapes = absl::GetFlag(FLAGS_shapes);
        for (int concurrency : {1, 100, 1000}) {
            if (!listed(absl::GetFlag(FLAGS_waits), std::to_string(concurrency))) continue;
            replication::tracker t(ex, replica_source(ex), options);
            overhead_result warm;
            co_await with_tracker(
                t, measure_overhead(t, primary, truth, concurrency, concurrency, warm, round_shape{}));
            for (const char* shape : {"waits", "waits+cached", "coroutines", "coroutines+cached"}) {
                const std::string_view text = shape;
                const bool cached = text.ends_with("+cached");
                if (!listed(shapes, text.substr(0, text.find('+'))) ||
                    (cached && !listed(shapes, "cached"))) {
                    continue;
                }
                if (cached && strategy != replication::poll_strategy::poll) continue;  // no poll involved
                round_shape how;
                how.coroutine_per_wait = text.starts_with("coroutines");
                how.replayed_first = cached;
                truth.reset();
                overhead_result result;
                co_await with_tracker(t,
                                      measure_overhead(t, primary, truth, concurrency, writes, result, how));
                print_row(name, shape, concurrency, result, writes);
            }
        }
        for (int writers : {1, 100}) {
            if (!listed(shapes, "sustained")) break;
            replication::tracker t(ex, replica_source(ex), options);
            truth.reset();
            overhead_result result;
            co_await with_tracker(t, measure_sustained(t, pool, truth, writers, writes, result));
            print_row(name, "sustained", writers, result, writes);
        }
    }
    std::printf("   oracle: %llu polls, mean round trip %.0f us\n\n",
                static_cast<unsigned long long>(truth.polls()),
                truth.mean_rtt_us());
}

asio::awaitable<void> polls_part(asio::any_io_executor ex) {
    const double seconds = absl::GetFlag(FLAGS_seconds);
    flypg::pg::connect_options connect;
    connect.conninfo = absl::GetFlag(FLAGS_primary);
    flypg::pg::connection writer_conn = co_await flypg::pg::connection::connect(ex, connect);
    std::printf(
        "2. polls per second against pending waits (%.1f s each; targets far ahead, so none "
        "completes)\n",
        seconds);
    std::printf("   %8s %16s %16s\n", "waiters", "moving replica", "still replica");
    for (int waiters : {1, 100, 10'000}) {
        double rates[2] = {0, 0};
        for (int moving = 1; moving >= 0; --moving) {
            replication::tracker t(ex, replica_source(ex));
            auto body = [&]() -> asio::awaitable<void> {
                const lsn now = co_await insert_row(writer_conn, -1 - waiters * 2 - moving);
                const lsn far = lsn::from_value(now.value() + (std::uint64_t{1} << 40));
                const auto length =
                    std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
                for (int i = 0; i < waiters; ++i) {
                    t.wait_for(far, length + 1s, [](std::exception_ptr, replication::lsn_wait_result) {});
                }
                // Let the first polls (and the backoff, to its ceiling) settle before counting.
                asio::steady_timer pause(ex, 500ms);
                co_await pause.async_wait(asio::use_awaitable);
                const auto polls_before = t.stats().polls;
                const auto start = clock_type::now();
                const auto end = start + length;
                std::int64_t id = 1'000'000'000 + waiters * 10'000'000;
                while (clock_type::now() < end) {
                    if (moving) {
                        co_await insert_row(writer_conn, id++);  // WAL keeps arriving
                    } else {
                        pause.expires_at(end);
                        co_await pause.async_wait(asio::use_awaitable);
                    }
                }
                rates[moving] = static_cast<double>(t.stats().polls - polls_before) /
                                std::chrono::duration<double>(clock_type::now() - start).count();
            };
            co_await with_tracker(t, body());
        }
        std::printf("   %8d %14.0f/s %14.0f/s\n", waiters, rates[1], rates[0]);
        std::fflush(stdout);
    }
    std::printf("\n");
}

// Small blocks come from the arena (uordblks), large ones (the heaps' arrays) are mmapped (hblkhd).
std::size_t heap_in_use() {
    const auto info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

asio::awaitable<void> memory_part(asio::any_io_executor ex) {
    constexpr int waiters = 100'000;
    std::printf("3. memory per pending wait (%d waits, mallinfo2 before/after)\n", waiters);
    {
        replication::tracker t(ex, replica_source(ex));
        auto body = [&]() -> asio::awaitable<void> {
            // One wait first, so the connection and the caches exist before measuring.
            co_await t.wait_for(lsn::from_value(1));
            const lsn far = lsn::from_value(std::uint64_t{1} << 62);
            int completed = 0;
            malloc_trim(0);
            const std::size_t before = heap_in_use();
            for (int i = 0; i < waiters; ++i) {
                t.wait_for(
                    far, 1h, [&completed](std::exception_ptr, replication::lsn_wait_result) { ++completed; });
            }
            const std::size_t after = heap_in_use();
            std::printf("   tracker bookkeeping (callback waits): %6.1f bytes per wait  (%zu pending)\n",
                        static_cast<double>(after - before) / waiters,
                        t.stats().waiters);
        };
        co_await with_tracker(t, body());
    }
    {
        replication::tracker t(ex, replica_source(ex));
        auto body = [&]() -> asio::awaitable<void> {
            co_await t.wait_for(lsn::from_value(1));
            const lsn far = lsn::from_value(std::uint64_t{1} << 62);
            malloc_trim(0);
            const std::size_t before = heap_in_use();
            for (int i = 0; i < waiters; ++i) {
                asio::co_spawn(
                    ex,
                    [&t, far]() -> asio::awaitable<void> { co_await t.wait_for(far, std::chrono::hours(1)); },
                    asio::detached);
            }
            // Let every coroutine reach its wait.
            asio::steady_timer pause(ex, 0ms);
            while (t.stats().waiters < static_cast<std::size_t>(waiters)) {
                pause.expires_after(1ms);
                co_await pause.async_wait(asio::use_awaitable);
            }
            const std::size_t after = heap_in_use();
            std::printf("   whole cost, one coroutine per wait:  %6.1f bytes per wait  (%zu pending)\n\n",
                        static_cast<double>(after - before) / waiters,
                        t.stats().waiters);
        };
        co_await with_tracker(t, body());
    }
}

asio::awaitable<void> idle_part(asio::any_io_executor ex) {
    const double seconds = absl::GetFlag(FLAGS_seconds);
    replication::tracker t(ex, replica_source(ex));
    std::uint64_t polls = 0;
    auto body = [&]() -> asio::awaitable<void> {
        co_await t.wait_for(lsn::from_value(1));  // connected and polled once
        const auto before = t.stats().polls;
        asio::steady_timer pause(
            ex, std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds)));
        co_await pause.async_wait(asio::use_awaitable);
        polls = t.stats().polls - before;
    };
    co_await with_tracker(t, body());
    std::printf("4. idle: %llu queries in %.1f s = %.2f queries/s\n",
                static_cast<unsigned long long>(polls),
                seconds,
                static_cast<double>(polls) / seconds);
}

asio::awaitable<void> run_all() {
    auto ex = co_await asio::this_coro::executor;
    {
        flypg::pg::connect_options connect;
        connect.conninfo = absl::GetFlag(FLAGS_primary);
        flypg::pg::connection primary = co_await flypg::pg::connection::connect(ex, connect);
        co_await primary.query("DROP TABLE IF EXISTS flypg_tracker_bench");
        co_await primary.query("CREATE TABLE flypg_tracker_bench (id bigint PRIMARY KEY)");
        co_await replication::install_long_poll_function(primary);
    }
    if (wanted("overhead")) co_await overhead_part(ex);
    if (wanted("polls")) co_await polls_part(ex);
    if (wanted("memory")) co_await memory_part(ex);
    if (wanted("idle")) co_await idle_part(ex);
    flypg::pg::connect_options connect;
    connect.conninfo = absl::GetFlag(FLAGS_primary);
    flypg::pg::connection primary = co_await flypg::pg::connection::connect(ex, connect);
    co_await primary.query("DROP TABLE IF EXISTS flypg_tracker_bench");
}

}  // namespace

int main(int argc, char** argv) {
    flypg::bench::parse_command_line(
        "The replication tracker's wait overhead above an oracle busy-polling the replica, polls per "
        "second against waiters, memory per waiter and idle queries, on a primary and a streaming "
        "replica (default: $FLYPG_TEST_PRIMARY and $FLYPG_TEST_REPLICA, as scripts/pg-cluster env "
        "sets them)",
        argc,
        argv);
    asio::io_context io;
    int status = 0;
    asio::co_spawn(io, run_all(), [&](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "benchmark failed: %s\n", ex.what());
            status = 1;
        }
    });
    io.run();
    return status;
}
