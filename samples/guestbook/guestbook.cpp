// guestbook: a small multi-region HTTP service on flypg. Every region serves the same four routes;
// reads come from the region's own database, and writes go through the repo, which runs them on
// the primary (forwarded over RPC from other regions) and returns once the local replica has
// them, so the writer sees its own entry in the very next GET.
//
//   GET  /          a tiny HTML page with a form
//   POST /entries   body = the message (text, at most 4 KiB); 201 with the new id and the region
//                   that served the request, as JSON
//   GET  /entries   the latest 20 entries, from the local database, as JSON; with the
//                   flypg_token cookie that POST sets, it first waits until that database has
//                   the writer's last entry (read-your-writes across instances of a region)
//   GET  /metrics   Prometheus text: the repo's metrics (writes, RPC, replication waits, pool) and
//                   the service's own HTTP metrics, from one registry
//
// HTTP is parsed by Debian's http-parser (libhttp-parser-dev); keep-alive and pipelined requests
// are served in order; bad requests get 400/404/405/413/431 with a plain-text reason.
//
// Needs: PostgreSQL (a primary, and a streaming replica per other region: scripts/pg-cluster start
// prints them), and per process:
//   MY_REGION / PRIMARY_REGION (or FLY_REGION on Fly)       this region and the primary region
//   FLYPG_PRIMARY_URL, FLYPG_REPLICA_URL (or DATABASE_URL)  see include/flypg/config.hpp
//   FLYPG_CLUSTER_SECRET (16+ characters, the same everywhere; or FLYPG_ENV=dev)
//   FLYPG_RPC_PORT (default 7878), FLYPG_PEERS=host:port,...  (on Fly: found through DNS)
//   GUESTBOOK_ADDRESS (default 0.0.0.0), GUESTBOOK_PORT (default 8080)
// Run two regions locally: see README.md next to this file. Stops cleanly on SIGINT or SIGTERM.
#include <array>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <list>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flypg/config.hpp"
#include "flypg/error.hpp"
#include "flypg/metrics.hpp"
#include "flypg/repo.hpp"
#include "flypg/rpc/node.hpp"
#include "flypg/rpc/region.hpp"
#include "http.hpp"

namespace {

using namespace guestbook_http;
using namespace std::chrono_literals;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr auto idle_timeout = 30s;  // a keep-alive connection with no request for this long is closed
constexpr int latest_entries = 20;

void log(const std::string& text) {
    std::fprintf(stderr, "[guestbook %s] %s\n", flypg::rpc::my_region().c_str(), text.c_str());
}

// ---- The application ----------------------------------------------------------------------------

constexpr std::string_view create_table_sql =
    "CREATE TABLE IF NOT EXISTS guestbook_entries ("
    " id bigserial PRIMARY KEY,"
    " region text NOT NULL,"
    " message text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())";

constexpr std::string_view latest_entries_sql =
    "SELECT id, region, message,"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at"
    " FROM guestbook_entries ORDER BY id DESC LIMIT $1";

constexpr std::string_view index_html = R"html(<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>flypg guestbook</title></head>
<body>
<h1>Guestbook</h1>
<p id="region"></p>
<form id="sign">
  <textarea id="message" rows="3" cols="60" maxlength="1000" required></textarea><br>
  <button>Sign the guestbook</button>
</form>
<p id="status"></p>
<ul id="entries"></ul>
<script>
async function load() {
  const data = await (await fetch('/entries')).json();
  document.getElementById('region').textContent = 'Read from the database in region ' + data.region;
  const list = document.getElementById('entries');
  list.replaceChildren();
  for (const e of data.entries) {
    const item = document.createElement('li');
    item.textContent = e.created_at + ' [' + e.region + '] ' + e.message;
    list.append(item);
  }
}
document.getElementById('sign').addEventListener('submit', async (event) => {
  event.preventDefault();
  const message = document.getElementById('message');
  const r = await fetch('/entries', {method: 'POST', body: message.value,
                                     headers: {'Content-Type': 'text/plain; charset=utf-8'}});
  document.getElementById('status').textContent = r.status + ' ' + await r.text();
  if (r.ok) { message.value = ''; await load(); }
});
load();
</script>
</body>
</html>
)html";

struct guestbook {
    flypg::rpc::node& node;
    flypg::repo& db;
    // Shared with the repo (repo_options::metrics), which records its writes, RPC round trips,
    // replication waits and failures here; the guestbook adds its HTTP metrics.
    flypg::metrics::registry& metrics;
    bool schema_ready = false;
    std::string schema_problem = "the table is being created";  // why writes cannot run yet
};

// The repo renders the shared registry: its own metrics (writes, RPC, replication waits, the
// tracker and the read pool) and the guestbook's HTTP counters.
std::string render_metrics(guestbook& g) {
    return g.db.render_metrics();
}

// What a failed read means to the client.
http_response read_failure(const guestbook& g, const flypg::error& e) {
    http_response r;
    if (e.code() == flypg::errc::committed_not_replicated) {
        r = text_response(503,
                          "your last entry is saved, but this region's replica has not replayed it yet; "
                          "try again in a moment");
    } else if (e.code() == flypg::sqlstate("42P01")) {
        r = text_response(
            503,
            "the guestbook table does not exist yet; it is created through the primary region (" +
                g.schema_problem + ")");
    } else {
        log(std::string("read failed: ") + e.what());
        r = text_response(503, std::string("cannot read this region's database: ") + e.what());
    }
    r.headers.emplace_back("Retry-After", "1");
    return r;
}

// What a failed write means to the client.
http_response write_failure(const flypg::error& e) {
    if (e.code() == flypg::errc::committed_not_replicated)
        return text_response(202,
                             "saved on the primary, but this region's replica has not replayed it yet; "
                             "it will appear in GET /entries shortly");
    if (e.code() == flypg::condition::outcome_unknown)
        return text_response(503,
                             "the primary region did not answer in time: the entry may or may not have "
                             "been saved; check GET /entries before posting it again");
    if (e.code() == flypg::condition::retry_call) {
        http_response r =
            text_response(503, std::string("cannot reach the primary region now, try again: ") + e.what());
        r.headers.emplace_back("Retry-After", "1");
        return r;
    }
    // Class 22 (data exception): for example bytes that are not UTF-8. The SQLSTATE is the same
    // whether the primary is local or in another region.
    if (flypg::sqlstate_text(e.code()).starts_with("22"))
        return text_response(400, "the database rejected the message: " + e.diag().server_message);
    log(std::string("write failed: ") + e.what());
    return text_response(500, std::string("could not save the entry: ") + e.what());
}

asio::awaitable<http_response> add_entry(guestbook& g, std::string message) {
    if (message.find_first_not_of(" \t\r\n") == std::string::npos)
        co_return text_response(400, "the request body is the message, and it is empty");
    flypg::sql::column_values row{{"region", g.node.my_region()}, {"message", std::move(message)}};
    std::optional<http_response> failure;
    try {
        flypg::write_result written = co_await g.db.insert("guestbook_entries", std::move(row));
        const std::string route =
            written.route == flypg::write_route::forwarded ? "forwarded" : "local_primary";
        const auto id = written.rows().at(0).get<std::int64_t>("id");
        http_response r = json_response(
            201,
            "{\"id\":" + std::to_string(id) + ",\"region\":" + json_string(g.node.my_region()) +
                ",\"primary_region\":" + json_string(g.node.primary_region()) + ",\"route\":\"" + route +
                "\",\"replicated\":" + (written.replicated ? "true" : "false") + "}");
        r.headers.emplace_back("Location", "/entries/" + std::to_string(id));
        // The writer's next GET may land on another instance of this region, reading another
        // replica: the token makes that read wait until it has this entry.
        r.headers.emplace_back("Set-Cookie",
                               std::string(token_cookie) + "=" + written.token() +
                                   "; Path=/; Max-Age=300; SameSite=Lax; HttpOnly");
        co_return r;
    } catch (const flypg::error& e) {
        failure = write_failure(e);
    }
    co_return std::move(*failure);
}

// A read answers whenever the local database does: it needs neither the primary region nor the
// table's creation to have finished, and each failure says what is wrong.
asio::awaitable<http_response> list_entries(guestbook& g, const std::string& cookie) {
    flypg::read_options options;
    if (std::string token = cookie_value(cookie, token_cookie); !token.empty()) {
        try {
            (void)flypg::parse_consistency_token(token);
        } catch (const flypg::error& e) {
            http_response r = text_response(400,
                                            "the flypg_token cookie is not ours (" + std::string(e.what()) +
                                                "); it was cleared, load the page again");
            r.headers.emplace_back("Set-Cookie", std::string(token_cookie) + "=; Path=/; Max-Age=0");
            co_return r;
        }
        options = flypg::read_options(std::move(token));
    }
    flypg::pg::params limit{latest_entries};
    std::optional<http_response> failure;
    try {
        flypg::pg::result rows =
            co_await g.db.query(std::string(latest_entries_sql), std::move(limit), std::move(options));
        std::string body = "{\"region\":" + json_string(g.node.my_region()) + ",\"entries\":[";
        bool first = true;
        for (flypg::pg::row row : rows) {
            if (!first) body += ',';
            first = false;
            body += "{\"id\":" + std::to_string(row.get<std::int64_t>("id")) +
                    ",\"region\":" + json_string(row.get<std::string>("region")) +
                    ",\"message\":" + json_string(row.get<std::string>("message")) +
                    ",\"created_at\":" + json_string(row.get<std::string>("created_at")) + "}";
        }
        body += "]}";
        co_return json_response(200, std::move(body));
    } catch (const flypg::error& e) {
        failure = read_failure(g, e);
    }
    co_return std::move(*failure);
}

asio::awaitable<http_response> route(guestbook& g, http_request& request) {
    const std::string_view url = request.url;
    const std::string_view path = url.substr(0, url.find('?'));
    const bool get = request.method == HTTP_GET || request.method == HTTP_HEAD;
    if (path == "/") {
        if (!get) co_return method_not_allowed("GET, HEAD");
        http_response page = text_response(200, std::string(index_html));
        page.content_type = "text/html; charset=utf-8";
        co_return page;
    }
    if (path == "/metrics") {
        if (!get) co_return method_not_allowed("GET, HEAD");
        http_response r = text_response(200, render_metrics(g));
        r.content_type = flypg::metrics::prometheus_content_type;
        co_return r;
    }
    if (path == "/entries") {
        if (!get && request.method != HTTP_POST) co_return method_not_allowed("GET, HEAD, POST");
        if (get) co_return co_await list_entries(g, request.cookie);
        if (!g.schema_ready) {
            http_response r = text_response(503, "cannot write yet: " + g.schema_problem);
            r.headers.emplace_back("Retry-After", "1");
            co_return r;
        }
        co_return co_await add_entry(g, std::move(request.body));
    }
    co_return text_response(404, "no such page: " + std::string(path) + " (try /, /entries or /metrics)");
}

// Reads what is there, up to `into.size()` bytes; 0 at end of stream, on errors, and when the
// connection stayed idle for idle_timeout.
asio::awaitable<std::size_t> read_some(tcp::socket& socket, asio::steady_timer& idle, std::span<char> into) {
    idle.expires_after(idle_timeout);
    auto [order, read_error, n, timer_error] =
        co_await asio::experimental::make_parallel_group(
            socket.async_read_some(asio::buffer(into.data(), into.size()), asio::experimental::deferred),
            idle.async_wait(asio::experimental::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    (void)timer_error;
    if (order[0] != 0 || read_error) co_return 0;
    co_return n;
}

// False when the client has gone away.
asio::awaitable<bool> write_response(tcp::socket& socket,
                                     const http_response& response,
                                     bool keep_alive,
                                     bool with_body = true) {
    const std::string bytes = serialize(response, keep_alive, with_body);
    auto [ec, n] = co_await asio::async_write(
        socket, asio::buffer(bytes), asio::experimental::as_tuple(asio::use_awaitable));
    (void)n;
    co_return !ec;
}

asio::awaitable<void> serve_connection(guestbook& g, tcp::socket socket) {
    request_parser parser;
    asio::steady_timer idle(socket.get_executor());
    std::array<char, 4096> chunk{};
    std::string pending;  // bytes read but not parsed yet (the start of a pipelined request)
    for (;;) {
        while (parser.current() == request_parser::state::incomplete) {
            if (pending.empty()) {
                const std::size_t n = co_await read_some(socket, idle, chunk);
                if (n == 0) co_return;  // closed, idle or failed: nothing to answer
                pending.assign(chunk.data(), n);
            }
            pending.erase(0, parser.feed(pending));
        }
        if (parser.current() == request_parser::state::failed) {
            const http_response refusal = text_response(parser.error_status(), parser.error_message());
            co_await write_response(socket, refusal, false);
            co_return;
        }
        http_request request = parser.take();
        const auto started = clock_type::now();
        const std::string path = path_label(request.url);
        const std::string method = http_method_str(request.method);
        const bool keep_alive = request.keep_alive;
        const http_response response = co_await route(g, request);
        const bool written =
            co_await write_response(socket, response, keep_alive, request.method != HTTP_HEAD);

        const flypg::metrics::labels request_labels{
            {"method", method}, {"path", path}, {"status", std::to_string(response.status)}};
        g.metrics.counter("guestbook_http_requests_total", "HTTP requests answered", request_labels).inc();
        const flypg::metrics::labels path_labels{{"path", path}};
        g.metrics
            .histogram("guestbook_http_request_seconds",
                       "Time from a complete request to its response",
                       flypg::metrics::latency_buckets(),
                       path_labels)
            .observe(clock_type::now() - started);
        if (!written) co_return;
        if (!keep_alive) {
            std::error_code ignored;
            socket.shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
        }
    }
}

// Creates the table once the primary is reachable (through a primary-region node when this
// region has none), retrying until it works; until then writes answer 503 with the reason, which
// is logged whenever it changes (a wrong secret, no node in the primary region, a refused
// connection...).
asio::awaitable<void> prepare_schema(guestbook& g) {
    for (;;) {
        std::string problem;
        try {
            if (!g.db.is_primary()) {
                // Connecting takes a moment at start-up; after that, the write's own error says why
                // the primary region cannot be reached.
                try {
                    co_await g.node.wait_for_region(g.node.primary_region(), 3s);
                } catch (const flypg::error&) {
                }
            }
            flypg::pg::params none;
            co_await g.db.execute(std::string(create_table_sql), std::move(none));
            g.schema_ready = true;
            g.schema_problem.clear();
            log("the guestbook_entries table is ready");
            co_return;
        } catch (const std::exception& e) {
            problem = e.what();
        }
        if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none)
            co_return;  // stopping: the failure is the cancellation, not worth a line
        if (problem != g.schema_problem)
            log("cannot create the guestbook table yet (retrying every 2 s): " + problem);
        g.schema_problem = std::move(problem);
        asio::steady_timer pause(co_await asio::this_coro::executor, 2s);
        co_await pause.async_wait(asio::use_awaitable);
    }
}

std::uint16_t port_from_environment(const char* name, std::uint16_t fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (*end != '\0' || value < 1 || value > 65535)
        throw std::invalid_argument(std::string(name) + "=\"" + text + "\" is not a port number (1-65535)");
    return static_cast<std::uint16_t>(value);
}

std::string address_from_environment(const char* name, const char* fallback) {
    const char* text = std::getenv(name);
    return text == nullptr || *text == '\0' ? fallback : text;
}

// Owns the io_context's tasks and stops them in order: first the HTTP side (no new requests, open
// connections cancelled), and only when every request has finished, the repo's tracker and the
// node, which those requests were using.
class application {
  public:
    application(asio::io_context& io, guestbook& g, tcp::endpoint http_endpoint)
        : io_(io), guestbook_(g), acceptor_(io, http_endpoint), signals_(io, SIGINT, SIGTERM) {}

    int run() {
        log("HTTP on " + acceptor_.local_endpoint().address().to_string() + ":" +
            std::to_string(acceptor_.local_endpoint().port()) + ", RPC on port " +
            std::to_string(guestbook_.node.local_endpoint().port()) + ", primary region " +
            guestbook_.node.primary_region());
        asio::co_spawn(io_,
                       guestbook_.node.run(),
                       asio::bind_cancellation_slot(stop_node_.slot(), finished("the node", node_done_)));
        asio::co_spawn(io_,
                       guestbook_.db.run(),
                       asio::bind_cancellation_slot(stop_repo_.slot(), finished("the repo", repo_done_)));
        asio::co_spawn(
            io_,
            prepare_schema(guestbook_),
            asio::bind_cancellation_slot(stop_schema_.slot(), finished("preparing the table", schema_done_)));
        asio::co_spawn(io_, accept_loop(), finished("the HTTP acceptor", accept_done_));
        signals_.async_wait([this](std::error_code ec, int signal) {
            if (!ec) {
                log("signal " + std::to_string(signal) + ": stopping");
                shut_down();
            }
        });
        while (!(node_done_ && repo_done_)) {
            io_.run_one();
            if (stopping_ && !loops_stopped_ && accept_done_ && schema_done_ && sessions_.empty()) {
                loops_stopped_ = true;
                stop_repo_.emit(asio::cancellation_type::terminal);
                stop_node_.emit(asio::cancellation_type::terminal);
            }
        }
        return status_;
    }

  private:
    asio::awaitable<void> accept_loop() {
        while (!stopping_) {
            auto [ec, socket] =
                co_await acceptor_.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
            if (ec) {
                if (stopping_) break;
                log("accept failed: " + ec.message());
                continue;
            }
            sessions_.emplace_front();
            const auto session = sessions_.begin();
            asio::co_spawn(
                io_,
                serve_connection(guestbook_, std::move(socket)),
                asio::bind_cancellation_slot(session->slot(), [this, session](std::exception_ptr e) {
                    report("a connection", e);
                    // Erased later, not inside a handler bound to the signal's own slot.
                    asio::post(io_, [this, session] { sessions_.erase(session); });
                }));
        }
    }

    void shut_down() {
        if (stopping_) return;
        stopping_ = true;
        signals_.cancel();
        std::error_code ignored;
        acceptor_.close(ignored);
        stop_schema_.emit(asio::cancellation_type::terminal);
        for (asio::cancellation_signal& session : sessions_) session.emit(asio::cancellation_type::terminal);
    }

    std::function<void(std::exception_ptr)> finished(const char* what, bool& done) {
        return [this, what, &done](std::exception_ptr e) {
            done = true;
            report(what, e);
            // The node and the tracker run until cancelled (the tracker may return at once in the
            // primary region); a failure of either leaves the service unable to write: stop.
            if (e && !stopping_ && (&done == &node_done_ || &done == &repo_done_)) {
                status_ = 1;
                shut_down();
            }
        };
    }

    void report(const char* what, std::exception_ptr e) {
        if (!e || stopping_) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& failure) {
            log(std::string(what) + " failed: " + failure.what());
        }
    }

    asio::io_context& io_;
    guestbook& guestbook_;
    tcp::acceptor acceptor_;
    asio::signal_set signals_;
    std::list<asio::cancellation_signal> sessions_;  // one per open connection
    asio::cancellation_signal stop_node_, stop_repo_, stop_schema_;
    bool node_done_ = false, repo_done_ = false, schema_done_ = false, accept_done_ = false;
    bool stopping_ = false, loops_stopped_ = false;
    int status_ = 0;
};

}  // namespace

int main() {
    asio::io_context io;
    try {
        const flypg::database_config config =
            flypg::database_config_from_environment(flypg::rpc::my_region(), flypg::rpc::primary_region());
        const tcp::endpoint http_endpoint(
            asio::ip::make_address(address_from_environment("GUESTBOOK_ADDRESS", "0.0.0.0")),
            port_from_environment("GUESTBOOK_PORT", 8080));

        // Every node can serve the other regions' writes; it does while it is in the primary region.
        auto service = std::make_shared<flypg::primary_service>();
        flypg::rpc::node_options node_options;
        node_options.writes = service;
        service->add_procedures(node_options.procedures);
        flypg::rpc::node node = flypg::rpc::node::create(io, std::move(node_options));

        auto metrics = std::make_shared<flypg::metrics::registry>();
        flypg::repo_options repo_options = flypg::repo_options_for(config);
        repo_options.metrics = metrics;
        // The repo's warnings (a replica that fell behind or split off, the tracker's connection).
        repo_options.log = [](flypg::rpc::log_level, std::string_view text) {
            log(std::string(text));
        };
        flypg::repo db(io.get_executor(), node, service, std::move(repo_options));

        guestbook g{node, db, *metrics, false};
        application app(io, g, http_endpoint);
        return app.run();
    } catch (const std::exception& e) {
        log(std::string("cannot start: ") + e.what());
        return 1;
    }
}
