#include "repo/primary_writes.hpp"

#include <chrono>

#include "flypg/replication/commit_lsn.hpp"
#include "repo/rpc_conversion.hpp"

namespace flypg::detail {
namespace {

// An interactive transaction on one pooled primary connection. Giving the connection back
// inside an open transaction makes the pool close it, which rolls the transaction back on the
// server: that is how a dropped session rolls back.
class primary_session final : public rpc::transaction_session {
  public:
    explicit primary_session(pg::pooled_connection conn) : conn_(std::move(conn)) {}

    asio::awaitable<rpc::statement_result> execute(rpc::statement stmt) override {
        pg::result r = co_await conn_->query(std::move(stmt.sql), to_pg_params(stmt.params));
        co_return to_rpc_result(r);
    }

    asio::awaitable<std::uint64_t> commit() override {
        const lsn commit_lsn = co_await commit_and_read_lsn(*conn_);
        co_return commit_lsn.value();
    }

    asio::awaitable<void> rollback() override { co_await conn_->query("ROLLBACK"); }

  private:
    pg::pooled_connection conn_;
};

std::vector<pg::statement> commit_batch() {
    std::vector<pg::statement> batch(2);
    batch[0].sql = "COMMIT";
    batch[0].sync = pg::sync_after::yes;
    batch[1].sql = std::string(replication::commit_lsn_sql);
    return batch;
}

}  // namespace

asio::awaitable<void> begin_synchronous(pg::connection& conn) {
    std::vector<pg::statement> batch(2);
    batch[0].sql = "BEGIN";
    // With synchronous_commit = off, COMMIT returns before its record is flushed and the flush
    // position read after it could be short of it; `local` restores that for this transaction.
    batch[1].sql =
        "SELECT set_config('synchronous_commit', 'local', true) WHERE current_setting('synchronous_commit') "
        "= 'off'";
    std::vector<pg::result> results = co_await conn.pipeline(std::move(batch));
    for (const pg::result& r : results) r.throw_if_error();
}

asio::awaitable<lsn> commit_and_read_lsn(pg::connection& conn) {
    std::vector<pg::result> results = co_await conn.pipeline(commit_batch());
    results[0].throw_if_error();
    results[1].throw_if_error();
    if (results[1].size() != 1 || results[1][0].is_null(0))
        throw_error(errc::protocol_error, "pg_current_wal_flush_lsn() returned no value on the primary");
    co_return lsn::parse(results[1][0].text(0));
}

served_metrics::served_metrics(std::shared_ptr<metrics::registry> r, const std::string& database)
    : registry(std::move(r)),
      writes(registry->counter("flypg_served_writes_total",
                               "Forwarded writes this node committed on its primary for other nodes",
                               {{"database", database}})),
      write_failures(registry->counter("flypg_served_write_failures_total",
                                       "Forwarded writes this node ran for other nodes that failed",
                                       {{"database", database}})),
      write_seconds(registry->histogram("flypg_served_write_seconds",
                                        "Time to run a forwarded write on the primary, connection included",
                                        metrics::latency_buckets(),
                                        {{"database", database}})),
      interactive_transactions(
          registry->counter("flypg_served_transactions_total",
                            "Transactions this node opened on its primary for other nodes",
                            {{"database", database}, {"kind", "interactive"}})),
      named_transactions(registry->counter("flypg_served_transactions_total",
                                           "Transactions this node opened on its primary for other nodes",
                                           {{"database", database}, {"kind", "named"}})),
      named_transaction_failures(registry->counter("flypg_served_transaction_failures_total",
                                                   "Named transactions run for other nodes that failed",
                                                   {{"database", database}, {"kind", "named"}})) {}

asio::awaitable<rpc::write_result> primary_writes::execute(std::vector<rpc::statement> statements) {
    const auto start = std::chrono::steady_clock::now();
    try {
        rpc::write_result out = co_await run(std::move(statements));
        measures_.writes.inc();
        measures_.write_seconds.observe(std::chrono::steady_clock::now() - start);
        co_return out;
    } catch (...) {
        measures_.write_failures.inc();
        throw;
    }
}

asio::awaitable<rpc::write_result> primary_writes::run(std::vector<rpc::statement> statements) {
    // What a peer sends is checked before a connection is taken: an empty write would commit an
    // empty transaction, and SQL text with a NUL byte would be cut short by libpq.
    if (statements.empty()) throw_error(errc::invalid_argument, "the forwarded write holds no statement");
    for (std::size_t i = 0; i < statements.size(); ++i)
        pg::check_sql_text(statements[i].sql, statement_label(i, statements.size()));
    std::vector<pg::statement> batch;
    batch.reserve(statements.size());
    for (rpc::statement& s : statements) batch.push_back({std::move(s.sql), to_pg_params(s.params)});
    pg::pooled_connection conn = co_await primary_->acquire();
    replication::committed_write done = co_await replication::commit_with_lsn(*conn, std::move(batch));
    rpc::write_result out;
    out.commit_lsn = done.commit_lsn.value();
    out.results.reserve(done.results.size());
    for (const pg::result& r : done.results) out.results.push_back(to_rpc_result(r));
    co_return out;
}

asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin_primary_session(pg::pool& primary) {
    pg::pooled_connection conn = co_await primary.acquire();
    co_await begin_synchronous(*conn);
    co_return std::make_unique<primary_session>(std::move(conn));
}

asio::awaitable<std::unique_ptr<rpc::transaction_session>> primary_writes::begin() {
    std::unique_ptr<rpc::transaction_session> session = co_await begin_primary_session(*primary_);
    measures_.interactive_transactions.inc();
    co_return session;
}

}  // namespace flypg::detail
