#include "flypg/repo.hpp"
#include "repo/primary_service_impl.hpp"
#include "repo/write_requests.hpp"

namespace flypg {
namespace detail {

void primary_service_impl::add_database(const std::string& name,
                                        std::shared_ptr<pg::pool> primary,
                                        std::shared_ptr<metrics::registry> metrics) {
    if (databases_.contains(name))
        throw_error(errc::invalid_argument,
                    "database \"" + name + "\" is already registered in this process");
    auto writes =
        std::make_unique<primary_writes>(std::move(primary), served_metrics(std::move(metrics), name));
    writes->after_commit = &after_commit;
    databases_.emplace(name, std::move(writes));
}

void primary_service_impl::remove_database(const std::string& name) noexcept {
    databases_.erase(name);
}

primary_writes& primary_service_impl::database(const std::string& name) {
    auto found = databases_.find(name);
    if (found == databases_.end())
        throw_error(
            errc::invalid_argument,
            "no primary database \"" + name + "\" on this node (is its repo created with a primary_url?)");
    return *found->second;
}

primary_writes& primary_service_impl::only_database() {
    if (databases_.size() != 1)
        throw_error(errc::invalid_argument,
                    "this node serves " + std::to_string(databases_.size()) +
                        " primary databases; a forwarded write must name one");
    return *databases_.begin()->second;
}

void primary_service_impl::add_transaction(std::string name, primary_transaction_fn fn) {
    if (name.empty() || !fn)
        throw_error(errc::invalid_argument, "a named transaction needs a name and a function");
    if (transactions_.contains(name))
        throw_error(errc::invalid_argument, "transaction \"" + name + "\" is already registered");
    transactions_.emplace(std::move(name), std::move(fn));
}

asio::awaitable<std::pair<std::vector<rpc::value>, std::uint64_t>> primary_service_impl::run_transaction(
    const std::string& database_name,
    const std::string& name,
    std::vector<rpc::value> args,
    std::string request_id) {
    auto found = transactions_.find(name);
    if (found == transactions_.end())
        throw_error(errc::procedure_error,
                    "no transaction named \"" + name + "\" is registered on the primary node");
    primary_writes& db = database(database_name);
    db.measures().named_transactions.inc();
    try {
        pg::pooled_connection conn = co_await db.pool().acquire();
        // If the body throws, the connection goes back inside the transaction; the pool closes it
        // and the server rolls the transaction back (and with it the claim of the id).
        if (request_id.empty()) {
            co_await begin_synchronous(*conn);
            std::vector<rpc::value> results = co_await found->second(*conn, std::move(args));
            const lsn commit_lsn = co_await commit_and_read_lsn(*conn);
            co_return std::make_pair(std::move(results), commit_lsn.value());
        }
        std::optional<primary_writes::first_run> first = co_await db.begin_claimed(*conn, request_id);
        if (first) co_return std::make_pair(std::move(first->values), first->commit_lsn);
        std::vector<rpc::value> results = co_await found->second(*conn, std::move(args));
        const std::uint64_t commit_lsn =
            co_await db.commit_claimed(*conn, request_id, encode_values(results));
        co_return std::make_pair(std::move(results), commit_lsn);
    } catch (...) {
        db.measures().named_transaction_failures.inc();
        throw;
    }
}

}  // namespace detail

primary_service::primary_service() : impl_(std::make_unique<detail::primary_service_impl>()) {}
primary_service::~primary_service() = default;

void primary_service::add_transaction(std::string name, primary_transaction_fn fn) {
    impl_->add_transaction(std::move(name), std::move(fn));
}

namespace {

// The database and transaction names first, then (with `with_request_id`) the request id.
struct named_call {
    std::string database;
    std::string name;
    std::string request_id;
};

named_call take_call_header(std::vector<rpc::value>& args, bool with_request_id) {
    const std::size_t header = with_request_id ? 3 : 2;
    const char* procedure =
        with_request_id ? detail::transaction_once_procedure : detail::transaction_procedure;
    bool well_formed = args.size() >= header;
    for (std::size_t i = 0; well_formed && i < header; ++i)
        well_formed = std::holds_alternative<std::string>(args[i]);
    if (!well_formed)
        throw_error(errc::invalid_argument,
                    std::string(procedure) + " takes the database and transaction names first" +
                        (with_request_id ? ", then the request id" : ""));
    named_call call{std::get<std::string>(args[0]), std::get<std::string>(args[1]), {}};
    if (with_request_id) {
        call.request_id = std::get<std::string>(args[2]);
        if (call.request_id.empty() || call.request_id.size() > rpc::max_request_id_bytes)
            throw_error(errc::invalid_argument,
                        "the request id of a named transaction is " + std::to_string(call.request_id.size()) +
                            " bytes (1 to " + std::to_string(rpc::max_request_id_bytes) + ")");
    }
    args.erase(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(header));
    return call;
}

// A free coroutine, not a capturing lambda: its frame owns copies of its arguments, so it does not
// depend on the lifetime of the std::function that started it.
asio::awaitable<std::vector<rpc::value>> serve_transaction(detail::primary_service_impl* impl,
                                                           std::vector<rpc::value> args,
                                                           bool with_request_id) {
    named_call call = take_call_header(args, with_request_id);
    auto [results, commit_lsn] =
        co_await impl->run_transaction(call.database, call.name, std::move(args), std::move(call.request_id));
    std::vector<rpc::value> reply;
    reply.reserve(results.size() + 1);
    reply.emplace_back(std::in_place_type<std::int64_t>, static_cast<std::int64_t>(commit_lsn));
    for (rpc::value& v : results) reply.push_back(std::move(v));
    co_return reply;
}

}  // namespace

void primary_service::add_procedures(rpc::procedure_registry& procedures) {
    detail::primary_service_impl* impl = impl_.get();
    procedures.add(detail::transaction_procedure, [impl](std::vector<rpc::value> args) {
        return serve_transaction(impl, std::move(args), false);
    });
    procedures.add(detail::transaction_once_procedure, [impl](std::vector<rpc::value> args) {
        return serve_transaction(impl, std::move(args), true);
    });
}

asio::awaitable<rpc::write_result> primary_service::execute(std::vector<rpc::statement> statements) {
    co_return co_await impl_->only_database().execute(std::move(statements));
}

asio::awaitable<std::unique_ptr<rpc::transaction_session>> primary_service::begin() {
    co_return co_await impl_->only_database().begin();
}

asio::awaitable<rpc::write_result> primary_service::execute_on(std::string database,
                                                               std::vector<rpc::statement> statements) {
    detail::primary_writes& target = database.empty() ? impl_->only_database() : impl_->database(database);
    co_return co_await target.execute(std::move(statements));
}

asio::awaitable<rpc::write_result> primary_service::execute_once(std::string database,
                                                                 std::vector<rpc::statement> statements,
                                                                 std::string request_id) {
    detail::primary_writes& target = database.empty() ? impl_->only_database() : impl_->database(database);
    co_return co_await target.execute_at_most_once(std::move(statements), std::move(request_id));
}

void primary_service::set_after_commit_hook(std::function<void()> hook) {
    impl_->after_commit = std::move(hook);
}

asio::awaitable<std::unique_ptr<rpc::transaction_session>> primary_service::begin_on(std::string database) {
    detail::primary_writes& target = database.empty() ? impl_->only_database() : impl_->database(database);
    co_return co_await target.begin();
}

}  // namespace flypg
