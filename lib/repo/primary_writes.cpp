#include "repo/primary_writes.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include <chrono>
#include <cstring>
#include <optional>
#include <span>

#include "flypg/replication/commit_lsn.hpp"
#include "repo/rpc_conversion.hpp"
#include "repo/write_requests.hpp"

namespace flypg::detail {
namespace {

std::vector<pg::statement> commit_batch() {
    std::vector<pg::statement> batch(2);
    batch[0].sql = "COMMIT";
    batch[0].sync = pg::sync_after::yes;
    batch[1].sql = std::string(replication::commit_lsn_sql);
    return batch;
}

// BEGIN, the synchronous-commit guarantee (see begin_synchronous), the claim of the id, then the
// statements; one Sync at the end, so the block stays open for the second round trip.
std::vector<pg::statement> claimed_batch(std::vector<rpc::statement> statements,
                                         const std::string& request_id) {
    std::vector<pg::statement> batch;
    batch.reserve(statements.size() + 3);
    batch.push_back({"BEGIN"});
    batch.push_back({std::string(replication::keep_commit_synchronous_sql)});
    pg::params id{request_id};
    batch.push_back({std::string(claim_request_sql), std::move(id)});
    for (pg::statement& s : to_pg_statements(std::move(statements))) batch.push_back(std::move(s));
    batch.back().sync = pg::sync_after::yes;
    return batch;
}

// The commit LSN from the answers of commit_batch() starting at `at`. An answer that leaves the
// commit open (the server ended the session: it may have committed first) is outcome_unknown.
lsn read_commit_lsn(const std::vector<pg::result>& results, std::size_t at) {
    try {
        results[at].throw_if_error();
        results[at + 1].throw_if_error();
    } catch (const flypg::error& e) {
        replication::throw_if_commit_unknown(e);
        throw;
    }
    if (results[at + 1].size() != 1 || results[at + 1][0].is_null(0))
        throw_error(errc::protocol_error, "pg_current_wal_flush_lsn() returned no value on the primary");
    return lsn::parse(results[at + 1][0].text(0));
}

// An interactive transaction on one pooled primary connection. Giving the connection back
// inside an open transaction makes the pool close it, which rolls the transaction back on the
// server: that is how a dropped session rolls back.
class primary_session final : public rpc::transaction_session {
  public:
    primary_session(pg::pooled_connection conn, const std::function<void()>* after_commit)
        : conn_(std::move(conn)), after_commit_(after_commit) {}

    asio::awaitable<rpc::statement_result> execute(rpc::statement stmt) override {
        pg::result r = co_await conn_->query(std::move(stmt.sql), to_pg_params(stmt.params));
        co_return to_rpc_result(r);
    }

    asio::awaitable<std::uint64_t> commit() override {
        const lsn commit_lsn = co_await commit_and_read_lsn(*conn_);
        co_return commit_lsn.value();
    }

    // The id is claimed in the transaction itself, in the commit's round trip: if a caller that
    // lost the answer fences the id first (repo.cpp), the claim fails and nothing commits.
    asio::awaitable<std::uint64_t> commit_once(std::string request_id) override {
        std::vector<pg::statement> batch(1);
        batch[0].sql = std::string(claim_request_sql);
        batch[0].params.emplace_back(std::move(request_id));
        for (pg::statement& s : commit_batch()) batch.push_back(std::move(s));
        std::vector<pg::result> results;
        try {
            results = co_await conn_->pipeline(std::move(batch));
        } catch (const flypg::error& e) {
            replication::throw_if_commit_unknown(e);
            throw;
        }
        if (results[0].error()) {
            co_await conn_->query("ROLLBACK");
            if (results[0].error() != sqlstate("23505")) results[0].throw_if_error();
            // The hint, unlike a library message, travels back over RPC with the SQL error.
            diagnostics diag = results[0].diag();
            diag.hint =
                "the transaction is rolled back: its request id is already taken (by an earlier "
                "transaction with the same idempotency key, or by its caller settling a lost answer)";
            throw flypg::error(sqlstate("23505"), std::move(diag));
        }
        const lsn committed = read_commit_lsn(results, 1);
        if (after_commit_ != nullptr && *after_commit_) (*after_commit_)();
        co_return committed.value();
    }

    asio::awaitable<void> rollback() override { co_await conn_->query("ROLLBACK"); }

  private:
    pg::pooled_connection conn_;
    const std::function<void()>* after_commit_;  // a test hook, see primary_writes::after_commit
};

// The first statement of the batch that failed, if any.
const pg::result* first_failure(const std::vector<pg::result>& results) {
    for (const pg::result& r : results)
        if (r.error()) return &r;
    return nullptr;
}

// A repeat: what the run that committed under the id answered, and the current flush LSN, which
// is at or past that run's commit.
// What a committed run stored under its id, and the current flush LSN (which covers that run's
// commit), in one round trip.
struct stored_request {
    std::vector<std::uint8_t> bytes;
    std::uint64_t flush_lsn = 0;
};

asio::awaitable<stored_request> read_stored(pg::connection& conn, const std::string& request_id) {
    std::vector<pg::statement> reads(2);
    reads[0].sql = std::string(stored_results_sql);
    reads[0].params = pg::params{request_id};
    reads[1].sql = std::string(replication::commit_lsn_sql);
    std::vector<pg::result> answers = co_await conn.pipeline(std::move(reads));
    for (const pg::result& r : answers) r.throw_if_error();
    if (answers[0].size() != 1)
        throw_error(errc::protocol_error, "a request id vanished while its stored results were looked up");
    const auto blob = answers[0][0].get<pg::bytes>(0);
    stored_request out;
    out.bytes.resize(blob.data.size());
    if (!blob.data.empty()) std::memcpy(out.bytes.data(), blob.data.data(), blob.data.size());
    out.flush_lsn = lsn::parse(answers[1][0].text(0)).value();
    co_return out;
}

}  // namespace

asio::awaitable<void> begin_synchronous(pg::connection& conn) {
    std::vector<pg::statement> batch(2);
    batch[0].sql = "BEGIN";
    batch[1].sql = std::string(replication::keep_commit_synchronous_sql);
    std::vector<pg::result> results = co_await conn.pipeline(std::move(batch));
    for (const pg::result& r : results) r.throw_if_error();
}

asio::awaitable<lsn> commit_and_read_lsn(pg::connection& conn) {
    std::vector<pg::result> results;
    try {
        results = co_await conn.pipeline(commit_batch());
    } catch (const flypg::error& e) {
        replication::throw_if_commit_unknown(e);
        throw;
    }
    co_return read_commit_lsn(results, 0);
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
                                                   {{"database", database}, {"kind", "named"}})),
      repeated_writes(registry->counter("flypg_served_repeated_writes_total",
                                        "Forwarded writes sent again under a request id that had committed: "
                                        "answered with the first run's results, not run again",
                                        {{"database", database}})) {}

asio::awaitable<rpc::write_result> primary_writes::execute(std::vector<rpc::statement> statements) {
    co_return co_await counted(run(std::move(statements)));
}

asio::awaitable<rpc::write_result> primary_writes::execute_at_most_once(
    std::vector<rpc::statement> statements, std::string request_id) {
    co_return co_await counted(run_once(std::move(statements), std::move(request_id)));
}

asio::awaitable<rpc::write_result> primary_writes::counted(asio::awaitable<rpc::write_result> write) {
    const auto start = std::chrono::steady_clock::now();
    try {
        rpc::write_result out = co_await std::move(write);
        measures_.writes.inc();
        measures_.write_seconds.observe(std::chrono::steady_clock::now() - start);
        co_return out;
    } catch (...) {
        measures_.write_failures.inc();
        throw;
    }
}

asio::awaitable<rpc::write_result> primary_writes::run(std::vector<rpc::statement> statements) {
    // What a peer sends is checked before a connection is taken.
    check_statements(statements);
    std::vector<pg::statement> batch = to_pg_statements(std::move(statements));
    pg::pooled_connection conn = co_await primary_->acquire();
    replication::committed_write done = co_await replication::commit_with_lsn(*conn, std::move(batch));
    rpc::write_result out;
    out.commit_lsn = done.commit_lsn.value();
    out.results.reserve(done.results.size());
    for (const pg::result& r : done.results) out.results.push_back(to_rpc_result(r));
    co_return out;
}

asio::awaitable<void> primary_writes::prepare_request_table(pg::connection& conn) {
    if (request_table_ready_) co_return;
    try {
        // Concurrent first writes (of this node or of several) would race on the catalogs; under
        // one advisory lock the later ones wait and then find the table.
        std::vector<pg::statement> ddl(2);
        ddl[0].sql = std::string(request_table_lock_sql);
        ddl[1].sql = std::string(write_requests_ddl);
        const std::vector<pg::result> results = co_await conn.pipeline(std::move(ddl));
        if (const pg::result* failed = first_failure(results)) failed->throw_if_error();
    } catch (const flypg::error& e) {
        // A session without the lock (a migration run by hand) created it meanwhile: the loser
        // meets the winner's committed row in one of three catalogs (the index of pg_type or of
        // pg_class: 23505; the relation: 42P07; its row type: 42710), and the table is there.
        if (e.code() == sqlstate("23505") || e.code() == sqlstate("42P07") || e.code() == sqlstate("42710")) {
            request_table_ready_ = true;
            co_return;
        }
        // Typically a role that may not create tables: the hint (which travels to the caller with
        // the SQL error) says what to do.
        diagnostics diag = e.diag();
        diag.hint =
            "forwarded writes need the table flypg_write_requests on the primary; create it once "
            "as the flypg README's \"Exactly-once writes\" shows";
        throw flypg::error(e.code(), std::move(diag));
    }
    request_table_ready_ = true;
}

void primary_writes::expire_old_requests() {
    const auto now = std::chrono::steady_clock::now();
    if (last_expiry_ != std::chrono::steady_clock::time_point{} && now - last_expiry_ < std::chrono::hours(1))
        return;
    last_expiry_ = now;
    auto expire = [](std::shared_ptr<pg::pool> primary) -> asio::awaitable<void> {
        try {
            pg::pooled_connection conn = co_await primary->acquire();
            pg::params age{static_cast<double>(std::chrono::seconds(write_request_retention).count())};
            co_await conn->query(std::string(expire_requests_sql), std::move(age));
        } catch (const std::exception&) {
            // Tried again in an hour; old ids cost a little space, nothing else.
        }
    };
    asio::co_spawn(primary_->get_executor(), expire(primary_), asio::detached);
}

asio::awaitable<rpc::write_result> primary_writes::run_once(std::vector<rpc::statement> statements,
                                                            std::string request_id) {
    // What a peer sends is checked before a connection is taken.
    check_statements(statements);
    pg::pooled_connection conn = co_await primary_->acquire();
    co_await prepare_request_table(*conn);
    expire_old_requests();

    // One round trip: the claim first (a repeat fails there, and the statements after it are
    // skipped), then the statements, in an open transaction block.
    const std::size_t count = statements.size();
    std::vector<pg::statement> batch = claimed_batch(std::move(statements), request_id);
    std::vector<pg::result> results = co_await conn->pipeline(std::move(batch));
    const pg::result& claim = results[2];
    const bool repeat = claim.error() == sqlstate("23505");
    if (const pg::result* failed = first_failure(results)) {
        co_await conn->query("ROLLBACK");
        if (!repeat) failed->throw_if_error();
        const stored_request first = co_await read_stored(*conn, request_id);
        measures_.repeated_writes.inc();
        rpc::write_result out;
        out.results = decode_results(first.bytes);
        out.commit_lsn = first.flush_lsn;
        co_return out;
    }
    rpc::write_result out;
    out.results.reserve(count);
    for (std::size_t i = 0; i < count; ++i) out.results.push_back(to_rpc_result(results[3 + i]));
    out.commit_lsn = co_await commit_claimed(*conn, request_id, encode_results(out.results));
    co_return out;
}

asio::awaitable<std::optional<primary_writes::first_run>> primary_writes::begin_claimed(
    pg::connection& conn, const std::string& request_id) {
    co_await prepare_request_table(conn);
    expire_old_requests();
    std::vector<pg::statement> batch(3);
    batch[0].sql = "BEGIN";
    batch[1].sql = std::string(replication::keep_commit_synchronous_sql);
    batch[2].sql = std::string(claim_request_sql);
    batch[2].params = pg::params{request_id};
    std::vector<pg::result> results = co_await conn.pipeline(std::move(batch));
    if (const pg::result* failed = first_failure(results)) {
        co_await conn.query("ROLLBACK");
        if (results[2].error() != sqlstate("23505")) failed->throw_if_error();
        const stored_request first = co_await read_stored(conn, request_id);
        measures_.repeated_writes.inc();
        first_run repeat{decode_values(first.bytes), first.flush_lsn};
        co_return repeat;
    }
    co_return std::nullopt;
}

asio::awaitable<std::uint64_t> primary_writes::commit_claimed(pg::connection& conn,
                                                              const std::string& request_id,
                                                              std::vector<std::uint8_t> stored) {
    pg::bytes blob;
    blob.data.resize(stored.size());
    if (!stored.empty()) std::memcpy(blob.data.data(), stored.data(), stored.size());
    pg::params store{request_id, std::move(blob)};
    std::vector<pg::statement> finish(1);
    finish[0].sql = std::string(store_results_sql);
    finish[0].params = std::move(store);
    for (pg::statement& s : commit_batch()) finish.push_back(std::move(s));
    std::vector<pg::result> done;
    try {
        done = co_await conn.pipeline(std::move(finish));
        done[0].throw_if_error();
    } catch (const flypg::error& e) {
        // The server refused the commit (an SQL error: it rolled back), or the session ended with
        // COMMIT sent, and then nobody here knows: the caller may send the request again under
        // its id, which finds the answer if the commit happened.
        replication::throw_if_commit_unknown(e);
        throw;
    }
    const lsn committed = read_commit_lsn(done, 1);
    if (after_commit != nullptr && *after_commit) (*after_commit)();
    co_return committed.value();
}

asio::awaitable<std::unique_ptr<rpc::transaction_session>> begin_primary_session(
    pg::pool& primary, const std::function<void()>* after_commit) {
    pg::pooled_connection conn = co_await primary.acquire();
    co_await begin_synchronous(*conn);
    co_return std::make_unique<primary_session>(std::move(conn), after_commit);
}

asio::awaitable<std::unique_ptr<rpc::transaction_session>> primary_writes::begin() {
    if (!request_table_ready_) {
        // Other regions commit with a request id (primary_session::commit_once), which needs the
        // table; where it cannot be created, that commit reports why.
        pg::pooled_connection conn = co_await primary_->acquire();
        try {
            co_await prepare_request_table(*conn);
        } catch (const flypg::error&) {
        }
    }
    std::unique_ptr<rpc::transaction_session> session =
        co_await begin_primary_session(*primary_, after_commit);
    measures_.interactive_transactions.inc();
    co_return session;
}

}  // namespace flypg::detail
