// The fault suite's workload and its checks. Workers write through one "syd" node (inserts with
// unique notes, counter increments, two-row named transactions) and, after each write the library
// acknowledged as replicated, read it back twice: through the independent checker's own replica
// connection, and through the other "syd" node with the write's consistency token. Every call's
// outcome and duration is recorded; check() then compares the records with the primary.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "fault_world.hpp"
#include "independent_checker.hpp"

namespace flypg::fault {

inline constexpr const char* rows_table = "fault_rows";
inline constexpr const char* counters_table = "fault_counters";

/// Creates the suite's tables on the primary once and waits until replica 2 has them.
void create_tables(independent_checker& checker);

enum class op_kind { insert, increment, pair };

/// What the caller was told.
enum class verdict {
    replicated,  ///< Success: committed, and the local replica shows it.
    committed,   ///< Committed for sure, not (yet) readable locally: committed_not_replicated,
                 ///< not_replicating.
    unknown,     ///< outcome_unknown: committed at most once, or not at all.
    failed,      ///< Any other error: must not have run.
};

struct call_record {
    op_kind kind = op_kind::insert;
    std::vector<std::string> notes;  ///< insert: one; pair: two.
    std::string counter;             ///< increment: the counter's id.
    verdict outcome = verdict::failed;
    std::string error;
    std::chrono::steady_clock::duration took{};
    std::chrono::steady_clock::time_point started{};
    bool independent_read_missed = false;  ///< The checker's replica read did not see it.
    bool token_read_missed = false;        ///< The other node's token read ran and did not see it.
};

/// What one run of the workload under one fault found.
struct fault_tally {
    long runs = 0;
    long writes = 0;
    long replicated = 0;
    long committed = 0;
    long unknown = 0;
    long failed = 0;
    long duplicates = 0;
    long stale_reads = 0;
    double max_call_ms = 0;
    double max_stall_ms = 0;      ///< The loop's longest stall.
    double max_own_stall_ms = 0;  ///< The same without the time its thread waited for a CPU.
    double max_recovery_ms = 0;   ///< From the heal to the first write replicated again.
    std::vector<std::string> violations;

    void add(const fault_tally& other);
};

class workload {
  public:
    workload(fault_world& world, independent_checker& checker, std::string prefix, int workers = 8);

    /// Runs the workers until `stop` is set; returns when the last one has finished its call.
    asio::awaitable<void> run(const bool& stop);
    /// Whether a write that started after `t` was acknowledged as replicated.
    bool replicated_since(std::chrono::steady_clock::time_point t) const;

    /// The error of the latest call that failed, or "".
    std::string last_error() const;

    /// Compares the records with the primary (blocking; after run()).
    /// `stall_ms` and `own_stall_ms`: the loop probe's worst_ms() and own_worst_ms().
    fault_tally check(double stall_ms, double own_stall_ms) const;

  private:
    asio::awaitable<void> worker(int index, const bool& stop);
    asio::awaitable<void> insert(int index, int n);
    asio::awaitable<void> increment(int index);
    asio::awaitable<void> pair(int index, int n);
    asio::awaitable<void> read_back(int index, call_record& record, const std::string& token);

    fault_world& world_;
    independent_checker& checker_;
    std::string prefix_;
    int workers_;
    std::vector<call_record> records_;
};

}  // namespace flypg::fault
