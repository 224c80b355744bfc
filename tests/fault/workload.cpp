#include "workload.hpp"

#include <algorithm>
#include <map>
#include <thread>

namespace flypg::fault {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

verdict verdict_of(const std::error_code& code) {
    if (code == flypg::errc::committed_not_replicated || code == flypg::errc::not_replicating)
        return verdict::committed;
    if (code == flypg::errc::outcome_unknown) return verdict::unknown;
    return verdict::failed;
}

double ms(clock_type::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

// Runs one write, recording its outcome and duration; returns the token of a replicated write.
template <class Write>
asio::awaitable<std::string> timed(call_record& record, Write write) {
    record.started = clock_type::now();
    std::string token;
    try {
        token = co_await write();
    } catch (const flypg::error& e) {
        record.outcome = verdict_of(e.code());
        record.error = e.what();
    }
    record.took = clock_type::now() - record.started;
    co_return token;
}

}  // namespace

void create_tables(independent_checker& checker) {
    blocking_session& primary = checker.primary();
    primary.query(std::string("CREATE TABLE IF NOT EXISTS ") + rows_table +
                  " (id bigserial PRIMARY KEY, note text NOT NULL)");
    primary.query(std::string("CREATE INDEX IF NOT EXISTS fault_rows_note ON ") + rows_table + " (note)");
    primary.query(std::string("CREATE TABLE IF NOT EXISTS ") + counters_table +
                  " (id text PRIMARY KEY, n bigint NOT NULL DEFAULT 0)");
    blocking_session replica(test::replica_conninfo(2));
    const auto deadline = clock_type::now() + 30s;
    while (clock_type::now() < deadline) {
        const auto rows =
            replica.query(std::string("SELECT to_regclass('") + counters_table + "') IS NOT NULL");
        if (rows.at(0).at(0) == "t") return;
        std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error("replica 2 never showed the fault suite's tables");
}

void fault_tally::add(const fault_tally& o) {
    runs += o.runs;
    writes += o.writes;
    replicated += o.replicated;
    committed += o.committed;
    unknown += o.unknown;
    failed += o.failed;
    duplicates += o.duplicates;
    stale_reads += o.stale_reads;
    max_call_ms = std::max(max_call_ms, o.max_call_ms);
    max_stall_ms = std::max(max_stall_ms, o.max_stall_ms);
    max_own_stall_ms = std::max(max_own_stall_ms, o.max_own_stall_ms);
    max_recovery_ms = std::max(max_recovery_ms, o.max_recovery_ms);
    violations.insert(violations.end(), o.violations.begin(), o.violations.end());
}

workload::workload(fault_world& world, independent_checker& checker, std::string prefix, int workers)
    : world_(world), checker_(checker), prefix_(std::move(prefix)), workers_(workers) {
    const std::string insert = std::string("INSERT INTO ") + counters_table + " (id) VALUES ($1)";
    for (int i = 0; i < workers_; ++i) {
        std::string id = prefix_ + "counter ";
        id += std::to_string(i);
        checker_.primary().query(insert, {id});
    }
}

asio::awaitable<void> workload::run(const bool& stop) {
    auto executor = co_await asio::this_coro::executor;
    int running = workers_;
    for (int i = 0; i < workers_; ++i)
        asio::co_spawn(executor, worker(i, stop), [&running](std::exception_ptr) { --running; });
    asio::steady_timer poll(executor);
    while (running > 0) {
        poll.expires_after(5ms);
        co_await poll.async_wait(asio::use_awaitable);
    }
}

asio::awaitable<void> workload::worker(int index, const bool& stop) {
    for (int n = 0; !stop; ++n) {
        switch (n % 5) {
            case 3:
                co_await increment(index);
                break;
            case 4:
                co_await pair(index, n);
                break;
            default:
                co_await insert(index, n);
                break;
        }
        // A client backs off after an error instead of spinning on a region that is down.
        if (records_.back().outcome != verdict::replicated) {
            asio::steady_timer pause(co_await asio::this_coro::executor, 20ms);
            co_await pause.async_wait(asio::use_awaitable);
        }
    }
}

asio::awaitable<void> workload::insert(int index, int n) {
    call_record record;
    record.kind = op_kind::insert;
    record.notes = {prefix_ + "w" + std::to_string(index) + " " + std::to_string(n)};
    flypg::repo& db = world_.writer(index);
    const std::string token = co_await timed(record, [&]() -> asio::awaitable<std::string> {
        flypg::sql::column_values row{{"note", record.notes[0]}};
        flypg::write_result w = co_await db.insert(rows_table, std::move(row));
        record.outcome = w.replicated ? verdict::replicated : verdict::committed;
        co_return w.token();
    });
    if (record.outcome == verdict::replicated) co_await read_back(index, record, token);
    records_.push_back(std::move(record));
}

asio::awaitable<void> workload::increment(int index) {
    call_record record;
    record.kind = op_kind::increment;
    record.counter = prefix_ + "counter " + std::to_string(index);
    flypg::repo& db = world_.writer(index);
    co_await timed(record, [&]() -> asio::awaitable<std::string> {
        flypg::pg::params id{record.counter};
        flypg::write_result w = co_await db.execute(
            std::string("UPDATE ") + counters_table + " SET n = n + 1 WHERE id = $1", std::move(id));
        record.outcome = w.replicated ? verdict::replicated : verdict::committed;
        co_return w.token();
    });
    records_.push_back(std::move(record));
}

asio::awaitable<void> workload::pair(int index, int n) {
    call_record record;
    record.kind = op_kind::pair;
    const std::string base = prefix_ + "p" + std::to_string(index) + " " + std::to_string(n);
    record.notes = {base + "a", base + "b"};
    flypg::repo& db = world_.writer(index);
    co_await timed(record, [&]() -> asio::awaitable<std::string> {
        std::vector<flypg::rpc::value> args{std::string(rows_table), record.notes[0], record.notes[1]};
        co_await db.transaction_on_primary("insert_pair", std::move(args));
        record.outcome = verdict::replicated;
        co_return std::string();
    });
    if (record.outcome == verdict::replicated) co_await read_back(index, record, "");
    records_.push_back(std::move(record));
}

asio::awaitable<void> workload::read_back(int index, call_record& record, const std::string& token) {
    for (const std::string& note : record.notes)
        if (co_await checker_.replica_rows(rows_table, note) < 1) record.independent_read_missed = true;
    if (token.empty()) co_return;
    // The other node, handed the token as a client would hand it to the next request.
    try {
        flypg::pg::params note{record.notes.at(0)};
        flypg::pg::result r = co_await world_.reader(index).query(
            std::string("SELECT count(*) FROM ") + rows_table + " WHERE note = $1",
            std::move(note),
            flypg::read_options(token));
        if (r.at(0).get<std::int64_t>(0) < 1) record.token_read_missed = true;
    } catch (const flypg::error&) {
        // The read did not run (replica behind, promoted, unreachable): an error, not a stale read.
    }
}

bool workload::replicated_since(clock_type::time_point t) const {
    return std::any_of(records_.begin(), records_.end(), [t](const call_record& r) {
        return r.started >= t && r.outcome == verdict::replicated;
    });
}

std::string workload::last_error() const {
    for (auto it = records_.rbegin(); it != records_.rend(); ++it)
        if (!it->error.empty()) return it->error;
    return {};
}

fault_tally workload::check(double stall_ms, double own_stall_ms) const {
    fault_tally tally;
    tally.runs = 1;
    tally.max_stall_ms = stall_ms;
    tally.max_own_stall_ms = own_stall_ms;
    if (own_stall_ms > world_.limits().max_stall_ms)
        tally.violations.push_back("the event loop stood still for " + std::to_string(own_stall_ms) +
                                   " ms (not counting " + std::to_string(stall_ms - own_stall_ms) +
                                   " ms of waiting for a CPU)");
    const std::map<std::string, long> rows = checker_.primary_rows(rows_table, prefix_);
    auto rows_of = [&](const std::string& note) {
        auto it = rows.find(note);
        return it == rows.end() ? 0L : it->second;
    };
    std::map<std::string, std::pair<long, long>> counters;  // id -> (sure, maybe)
    const double bound_ms = ms(world_.limits().call_bound());
    for (const call_record& r : records_) {
        ++tally.writes;
        const std::string what = (r.notes.empty() ? r.counter : r.notes[0]) +
                                 (r.error.empty() ? std::string() : " (" + r.error + ")");
        switch (r.outcome) {
            case verdict::replicated:
                ++tally.replicated;
                break;
            case verdict::committed:
                ++tally.committed;
                break;
            case verdict::unknown:
                ++tally.unknown;
                break;
            case verdict::failed:
                ++tally.failed;
                break;
        }
        tally.max_call_ms = std::max(tally.max_call_ms, ms(r.took));
        if (ms(r.took) > bound_ms)
            tally.violations.push_back(what + ": took " + std::to_string(ms(r.took)) + " ms, bound " +
                                       std::to_string(bound_ms) + " ms");
        if (r.independent_read_missed || r.token_read_missed) {
            ++tally.stale_reads;
            tally.violations.push_back(
                what + ": acknowledged as replicated, then read stale " +
                (r.independent_read_missed ? "by the checker" : "through the other node"));
        }
        if (r.kind == op_kind::increment) {
            auto& [sure, maybe] = counters[r.counter];
            if (r.outcome == verdict::replicated || r.outcome == verdict::committed) ++sure;
            if (r.outcome == verdict::unknown) ++maybe;
            continue;
        }
        const long first = rows_of(r.notes[0]);
        for (const std::string& note : r.notes) {
            const long n = rows_of(note);
            if (n > 1) tally.duplicates += n - 1;
            if (n != first) tally.violations.push_back(what + ": half of a transaction is on the primary");
        }
        const bool committed = r.outcome == verdict::replicated || r.outcome == verdict::committed;
        if (committed && first != 1)
            tally.violations.push_back(what + ": acknowledged, on the primary " + std::to_string(first) +
                                       " times");
        if (r.outcome == verdict::unknown && first > 1)
            tally.violations.push_back(what + ": outcome unknown, on the primary " + std::to_string(first) +
                                       " times");
        if (r.outcome == verdict::failed && first != 0)
            tally.violations.push_back(what + ": reported as failed, yet on the primary");
    }
    for (const auto& [id, range] : counters) {
        const long n = checker_.primary_counter(counters_table, id);
        if (n < range.first || n > range.first + range.second) {
            if (n > range.first + range.second) tally.duplicates += n - range.first - range.second;
            tally.violations.push_back(id + " is " + std::to_string(n) + ", expected " +
                                       std::to_string(range.first) + " to " +
                                       std::to_string(range.first + range.second));
        }
    }
    return tally;
}

}  // namespace flypg::fault
