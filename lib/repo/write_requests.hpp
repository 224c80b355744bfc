// Forwarded writes run at most once: the primary-region node records each write's request id in
// the transaction of the write itself, in a small table of the primary database, with the write's
// results. A repeated id (the caller lost the answer and tried again) finds the row and gets the
// first run's results instead of a second run.
//
//     CREATE TABLE IF NOT EXISTS flypg_write_requests (
//         id text PRIMARY KEY, results bytea NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT
//         now())
//
// The library creates it on first use (the migration: run that statement once, by hand or in your
// migrations, where the application's role may not create tables). Rows older than
// write_request_retention are deleted, at most once an hour per serving node.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flypg/rpc/write.hpp"

namespace flypg::detail {

inline constexpr std::string_view write_requests_ddl =
    "CREATE TABLE IF NOT EXISTS flypg_write_requests (id text PRIMARY KEY, results bytea NOT NULL DEFAULT "
    "'', created_at timestamptz NOT NULL DEFAULT now())";
/// Taken in the transaction that creates the table, so that concurrent creators wait in turn.
inline constexpr std::string_view request_table_lock_sql =
    "SELECT pg_advisory_xact_lock(hashtext('flypg_write_requests'))";
/// Claims an id inside the write's transaction. A unique violation (23505) means a committed write
/// has it: the statements after the claim are then skipped (the pipeline segment is aborted), so a
/// repeat never runs them. An uncommitted holder makes the claim wait until it ends.
inline constexpr std::string_view claim_request_sql = "INSERT INTO flypg_write_requests (id) VALUES ($1)";
inline constexpr std::string_view store_results_sql =
    "UPDATE flypg_write_requests SET results = $2 WHERE id = $1";
inline constexpr std::string_view stored_results_sql =
    "SELECT results FROM flypg_write_requests WHERE id = $1";
/// Settles an interactive transaction's commit whose answer was lost (its caller runs this as a
/// forwarded write): takes the id when nobody holds it, so the commit, whose claim needs the id,
/// can never happen; else waits for the holder to end. Returns true when this fence holds the id
/// (the transaction did not commit), false when the transaction committed under it.
inline constexpr std::string_view fence_request_sql =
    "INSERT INTO flypg_write_requests (id, results) VALUES ($1, 'flypg:fenced'::bytea) ON CONFLICT (id) DO "
    "UPDATE SET created_at = flypg_write_requests.created_at RETURNING results = 'flypg:fenced'::bytea";
inline constexpr std::string_view expire_requests_sql =
    "DELETE FROM flypg_write_requests WHERE created_at < now() - make_interval(secs => $1)";

/// How long an id is remembered: a caller retries for seconds, not days.
inline constexpr std::chrono::hours write_request_retention{24};

/// The statements' results as stored with their id, and back.
std::vector<std::uint8_t> encode_results(const std::vector<rpc::statement_result>& results);
/// Throws flypg::error (errc::protocol_error) for bytes encode_results() did not make.
std::vector<rpc::statement_result> decode_results(std::span<const std::uint8_t> bytes);

/// A named transaction's returned values as stored with its id, and back (types kept).
std::vector<std::uint8_t> encode_values(const std::vector<rpc::value>& values);
/// Throws flypg::error (errc::protocol_error) for bytes encode_values() did not make.
std::vector<rpc::value> decode_values(std::span<const std::uint8_t> bytes);

}  // namespace flypg::detail
