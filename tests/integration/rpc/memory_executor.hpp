// A write_executor kept in memory, standing in for the PostgreSQL primary in RPC tests: the
// database is not what these tests are about (the RPC peers are real).
//
// Statements are not parsed as SQL. A statement whose text starts with "fail " raises the SQLSTATE
// that follows (e.g. "fail 23505"); "sleep <ms>" waits; anything else succeeds and returns one
// row: the statement text and each parameter's type name, with a NULL cell for a null parameter.
#pragma once

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/rpc/write.hpp"

namespace flypg::rpc::test {

struct memory_counters {
    std::uint64_t next_lsn = 0x1000000;
    int commits = 0;
    int rollbacks = 0;
    int statements = 0;
    int sessions_open = 0;
};

inline asio::awaitable<statement_result> run_memory_statement(statement s, memory_counters& counters) {
    ++counters.statements;
    if (s.sql.rfind("fail ", 0) == 0) {
        diagnostics diag;
        diag.server_message = "simulated failure of \"" + s.sql + "\"";
        diag.detail = "detail of the failure";
        diag.hint = "hint for the failure";
        throw flypg::error(flypg::sqlstate(s.sql.substr(5)), std::move(diag));
    }
    if (s.sql.rfind("sleep ", 0) == 0) {
        asio::steady_timer t(co_await asio::this_coro::executor,
                             std::chrono::milliseconds(std::stoi(s.sql.substr(6))));
        co_await t.async_wait(asio::use_awaitable);
    }
    statement_result r;
    r.columns.push_back(column{"sql", 25});
    std::vector<std::optional<std::string>> row;
    row.emplace_back(s.sql);
    for (std::size_t i = 0; i < s.params.size(); ++i) {
        r.columns.push_back(column{"param" + std::to_string(i + 1), 25});
        if (std::holds_alternative<null_value>(s.params[i])) {
            row.emplace_back(std::nullopt);
        } else {
            row.emplace_back(std::string(type_name(s.params[i])));
        }
    }
    r.rows.push_back(std::move(row));
    r.affected_rows = 1;
    co_return r;
}

class memory_session final : public transaction_session {
  public:
    explicit memory_session(std::shared_ptr<memory_counters> counters) : counters_(std::move(counters)) {
        ++counters_->sessions_open;
    }
    ~memory_session() override {
        --counters_->sessions_open;
        if (!done_) ++counters_->rollbacks;  // an abandoned session rolls back
    }

    asio::awaitable<statement_result> execute(statement stmt) override {
        co_return co_await run_memory_statement(std::move(stmt), *counters_);
    }
    asio::awaitable<std::uint64_t> commit() override {
        done_ = true;
        ++counters_->commits;
        counters_->next_lsn += 0x100;
        co_return counters_->next_lsn;
    }
    asio::awaitable<void> rollback() override {
        if (!done_) ++counters_->rollbacks;
        done_ = true;
        co_return;
    }

  private:
    std::shared_ptr<memory_counters> counters_;
    bool done_ = false;
};

class memory_executor final : public write_executor {
  public:
    memory_executor() : counters_(std::make_shared<memory_counters>()) {}

    asio::awaitable<write_result> execute(std::vector<statement> statements) override {
        write_result out;
        for (auto& s : statements)
            out.results.push_back(co_await run_memory_statement(std::move(s), *counters_));
        ++counters_->commits;
        counters_->next_lsn += 0x100;
        out.commit_lsn = counters_->next_lsn;
        co_return out;
    }

    asio::awaitable<std::unique_ptr<transaction_session>> begin() override {
        co_return std::make_unique<memory_session>(counters_);
    }

    const memory_counters& counters() const { return *counters_; }

  private:
    std::shared_ptr<memory_counters> counters_;
};

}  // namespace flypg::rpc::test
