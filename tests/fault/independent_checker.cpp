#include "independent_checker.hpp"

#include <stdexcept>
#include <thread>

namespace flypg::fault {

blocking_session::~blocking_session() {
    if (conn_) PQfinish(conn_);
}

blocking_session::rows blocking_session::query(const std::string& sql,
                                               const std::vector<std::string>& params,
                                               std::chrono::seconds patience) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    std::string last_error = "not tried";
    while (std::chrono::steady_clock::now() < deadline) {
        if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
            if (conn_) PQfinish(conn_);
            conn_ = PQconnectdb((conninfo_ + " connect_timeout=2").c_str());
            if (PQstatus(conn_) != CONNECTION_OK) {
                last_error = PQerrorMessage(conn_);
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                continue;
            }
        }
        std::vector<const char*> values;
        for (const std::string& p : params) values.push_back(p.c_str());
        PGresult* result = PQexecParams(
            conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0);
        const ExecStatusType status = PQresultStatus(result);
        if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
            rows out(static_cast<std::size_t>(PQntuples(result)));
            for (int r = 0; r < PQntuples(result); ++r)
                for (int c = 0; c < PQnfields(result); ++c) out[r].emplace_back(PQgetvalue(result, r, c));
            PQclear(result);
            return out;
        }
        last_error = PQresultErrorMessage(result);
        PQclear(result);
        // A broken connection (restart, promotion, rebuild) is tried again; an SQL error is not.
        if (PQstatus(conn_) == CONNECTION_OK) throw std::runtime_error(sql + ": " + last_error);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("the server stayed unreachable: " + last_error);
}

asio::awaitable<long> independent_checker::replica_rows(std::string table, std::string note) {
    // Named, not a temporary inside the co_await: g++ 12 destroys such a temporary twice.
    auto read = [this, table = std::move(table), note = std::move(note)]() -> long {
        const auto rows = replica_.query("SELECT count(*) FROM " + table + " WHERE note = $1", {note});
        return std::stol(rows.at(0).at(0));
    };
    co_return co_await on_thread(reads_, std::move(read));
}

std::map<std::string, long> independent_checker::primary_rows(const std::string& table,
                                                              const std::string& prefix) {
    const auto rows = primary_.query(
        "SELECT note, count(*) FROM " + table + " WHERE starts_with(note, $1) GROUP BY note", {prefix});
    std::map<std::string, long> out;
    for (const auto& row : rows) out[row.at(0)] = std::stol(row.at(1));
    return out;
}

long independent_checker::primary_counter(const std::string& table, const std::string& id) {
    const auto rows = primary_.query("SELECT n FROM " + table + " WHERE id = $1", {id});
    return rows.empty() ? -1 : std::stol(rows.at(0).at(0));
}

}  // namespace flypg::fault
