#include "flypg/replication/commit_lsn.hpp"

#include <string>
#include <string_view>
#include <utility>

#include "flypg/error.hpp"

namespace flypg::replication {
namespace {

pg::statement plain(std::string_view sql, pg::sync_after sync = pg::sync_after::no) {
    pg::statement s;
    s.sql.assign(sql.data(), sql.size());
    s.sync = sync;
    return s;
}

// One pipeline segment (the statements between two Syncs run as one implicit transaction, which
// the Sync commits), then the LSN read in a segment of its own, so it runs after the commit has
// returned. No explicit BEGIN: after a failure an explicit block would stay open (aborted) past
// the Sync, while an implicit one is rolled back there and leaves the session clean. Built
// outside the coroutine: g++ 12 reports a false -Warray-bounds for these string temporaries in a
// coroutine frame.
std::vector<pg::statement> transaction_batch(std::vector<pg::statement> statements) {
    std::vector<pg::statement> batch;
    batch.reserve(statements.size() + 2);
    batch.push_back(plain(keep_commit_synchronous_sql));
    for (pg::statement& s : statements) {
        s.sync = pg::sync_after::no;
        batch.push_back(std::move(s));
    }
    batch.back().sync = pg::sync_after::yes;  // commits
    batch.push_back(plain(commit_lsn_sql, pg::sync_after::yes));
    return batch;
}

}  // namespace

bool leaves_commit_unknown(const std::error_code& code) noexcept {
    return code == condition::connection_error || code == errc::timeout || code == errc::cancelled ||
           code == sqlstate("57P01") || code == sqlstate("57P02") || code == sqlstate("57P05");
}

void throw_if_commit_unknown(const flypg::error& e) {
    if (!leaves_commit_unknown(e.code())) return;
    diagnostics diag = e.diag();
    diag.library_message = "the commit's outcome is unknown (it may have committed)" +
                           (diag.library_message.empty() ? std::string() : ": " + diag.library_message);
    throw flypg::error(errc::outcome_unknown, std::move(diag));
}

asio::awaitable<committed_write> commit_with_lsn(pg::connection& primary,
                                                 std::vector<pg::statement> statements) {
    const std::size_t count = statements.size();
    std::vector<pg::statement> batch = transaction_batch(std::move(statements));
    std::vector<pg::result> results;
    try {
        results = co_await primary.pipeline(std::move(batch));
        if (results.size() != count + 2) {
            throw_error(errc::protocol_error,
                        "commit_with_lsn: " + std::to_string(results.size()) + " results for " +
                            std::to_string(count + 2) + " statements");
        }
        // The first failure is the cause; the statements after it in the segment were skipped
        // (errc::pipeline_aborted) and the transaction rolled back.
        for (std::size_t i = 0; i < results.size(); ++i) results[i].throw_if_error();
    } catch (const flypg::error& e) {
        throw_if_commit_unknown(e);
        throw;
    }
    const pg::result& read = results.back();
    if (read.size() != 1) throw_error(errc::protocol_error, "commit_with_lsn: the LSN query returned no row");

    committed_write done;
    done.commit_lsn = lsn::parse(read[0].get<std::string>(0));
    done.results.reserve(count);
    for (std::size_t i = 0; i < count; ++i) done.results.push_back(std::move(results[i + 1]));
    co_return done;
}

}  // namespace flypg::replication
