#include "flypg/replication/pg_replay_source.hpp"

#include <optional>
#include <string>
#include <utility>

#include "flypg/error.hpp"
#include "flypg/lsn.hpp"

namespace flypg::replication {
namespace {

// `::text` so that the client reads the LSN in PostgreSQL's own "X/X" form.
constexpr std::string_view read_sql = "SELECT pg_last_wal_replay_lsn()::text, pg_is_in_recovery()";
constexpr std::string_view read_statement = "flypg_replay_position";

bool is_identifier_part(std::string_view part) noexcept {
    if (part.empty() || part.size() > 63) return false;  // NAMEDATALEN - 1
    const auto word_start = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    };
    if (!word_start(part.front())) return false;
    for (char c : part) {
        if (!word_start(c) && !(c >= '0' && c <= '9')) return false;
    }
    return true;
}

// The name is spliced into SQL text (function names cannot be parameters), so only plain
// identifiers, optionally schema-qualified, are accepted.
void check_function_name(std::string_view name) {
    const std::size_t dot = name.find('.');
    const bool valid = dot == std::string_view::npos ? is_identifier_part(name)
                                                     : is_identifier_part(name.substr(0, dot)) &&
                                                           is_identifier_part(name.substr(dot + 1));
    if (!valid) {
        throw_error(errc::invalid_argument,
                    "long-poll function name \"" + std::string(name) +
                        "\" is not an identifier (letters, digits, _; optionally schema.name)");
    }
}

// Milliseconds as a float8 parameter: the function's arguments are fractional milliseconds.
double to_millis(std::chrono::microseconds d) {
    return static_cast<double>(d.count()) / 1000.0;
}

replay_status to_status(const pg::result& result, std::string_view what) {
    if (result.size() != 1 || result.columns() != 2) {
        throw_error(errc::protocol_error,
                    std::string(what) + " returned " + std::to_string(result.size()) + " rows of " +
                        std::to_string(result.columns()) + " columns, expected 1 row of 2");
    }
    const pg::row row = result[0];
    const auto replayed = row.get<std::optional<std::string>>(0);
    const bool in_recovery = row.get<bool>(1);
    if (!replayed || !in_recovery) return replay_status::not_replicating();
    return replay_status::replaying(lsn::parse(*replayed));
}

class pg_replay_source final : public replay_source {
  public:
    pg_replay_source(asio::any_io_executor executor, pg_replay_source_options options)
        : executor_(std::move(executor)), options_(std::move(options)) {
        check_function_name(options_.long_poll_function);
        wait_sql_ =
            "SELECT replay_lsn, in_recovery FROM " + options_.long_poll_function + "($1::pg_lsn, $2, $3)";
    }

    bool start_read() override {
        if (read_started_ || !options_.prepare_poll || !connection_ || !connection_->is_idle()) return false;
        try {
            connection_->send_prepared(read_statement);
        } catch (...) {
            return false;  // the tracker's loop sends its query itself (and finds a broken connection)
        }
        ++queries_;
        read_started_ = true;
        return true;
    }

    asio::awaitable<replay_status> read() override {
        pg::connection& conn = open_connection();
        if (read_started_) {
            read_started_ = false;
            pg::result result = co_await conn.receive_prepared(query_options_);
            co_return to_status(result, "pg_last_wal_replay_lsn()");
        }
        ++queries_;
        // Arguments named, not braced, inside the co_await (g++ 12 coroutine bugs).
        pg::params no_params;
        if (!options_.prepare_poll) {
            std::string sql(read_sql);
            pg::result result = co_await conn.query(std::move(sql), std::move(no_params), query_options_);
            co_return to_status(result, "pg_last_wal_replay_lsn()");
        }
        std::string name(read_statement);
        pg::result result =
            co_await conn.query_prepared(std::move(name), std::move(no_params), query_options_);
        co_return to_status(result, "pg_last_wal_replay_lsn()");
    }

    asio::awaitable<replay_status> wait_past(lsn target,
                                             std::chrono::microseconds max_wait,
                                             std::chrono::microseconds step) override {
        if (read_started_) co_return co_await read();  // a fresh answer either way: take it
        pg::connection& conn = open_connection();
        ++queries_;
        pg::params args;
        args.emplace_back(target.to_string());
        args.emplace_back(to_millis(max_wait));
        args.emplace_back(to_millis(step));
        std::string sql = wait_sql_;
        pg::result result = co_await conn.query(std::move(sql), std::move(args), query_options_);
        co_return to_status(result, options_.long_poll_function);
    }

    asio::awaitable<void> reconnect() override {
        connection_.reset();  // closes the old one, if any
        read_started_ = false;
        pg::connect_options connect = options_.connect;
        pg::connection fresh = co_await pg::connection::connect(executor_, std::move(connect));
        // Prepared once per connection: a poll then costs the server no parsing or planning,
        // which was about 40 % of its round trip on loopback.
        if (options_.prepare_poll) {
            std::string name(read_statement);
            std::string sql(read_sql);
            pg::params no_params;
            co_await fresh.prepare(std::move(name), std::move(sql), std::move(no_params), query_options_);
        }
        connection_.emplace(std::move(fresh));
    }

    std::uint64_t queries_sent() const noexcept override { return queries_; }

  private:
    pg::connection& open_connection() {
        if (!connection_ || !connection_->is_open()) {
            throw_error(errc::not_connected, "replay source: no open connection to the replica");
        }
        return *connection_;
    }

    asio::any_io_executor executor_;
    pg_replay_source_options options_;
    std::string wait_sql_;
    // No timeout of its own: the tracker bounds every query and cancels it when it expires.
    pg::query_options query_options_;
    std::optional<pg::connection> connection_;
    std::uint64_t queries_ = 0;
    bool read_started_ = false;  // start_read() sent a query whose answer read() has not taken
};

}  // namespace

std::unique_ptr<replay_source> make_pg_replay_source(asio::any_io_executor executor,
                                                     pg_replay_source_options options) {
    return std::make_unique<pg_replay_source>(std::move(executor), std::move(options));
}

std::string long_poll_function_sql(std::string_view name) {
    check_function_name(name);
    // The loop reads shared-memory positions, so it sees replay progress without a new snapshot.
    // It exits at once on a server that is not replicating: waiters must not hang on a primary.
    std::string sql = "CREATE OR REPLACE FUNCTION ";
    sql += name;
    sql += R"sql((target pg_lsn, max_wait_ms double precision, step_ms double precision)
RETURNS TABLE (replay_lsn text, in_recovery boolean)
LANGUAGE plpgsql VOLATILE AS $flypg$
DECLARE
    deadline timestamptz := clock_timestamp() + max_wait_ms * interval '1 millisecond';
    replayed pg_lsn;
    recovering boolean;
BEGIN
    LOOP
        recovering := pg_is_in_recovery();
        replayed := pg_last_wal_replay_lsn();
        EXIT WHEN NOT recovering OR replayed IS NULL OR replayed >= target
                  OR clock_timestamp() >= deadline;
        PERFORM pg_sleep(step_ms / 1000.0);
    END LOOP;
    replay_lsn := replayed::text;
    in_recovery := recovering;
    RETURN NEXT;
END
$flypg$)sql";
    return sql;
}

asio::awaitable<void> install_long_poll_function(pg::connection& primary, std::string name) {
    std::string sql = long_poll_function_sql(name);
    pg::params no_params;
    pg::query_options options;
    co_await primary.query(std::move(sql), std::move(no_params), options);
}

}  // namespace flypg::replication
