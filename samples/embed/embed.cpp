// embed: flypg inside an application that already has an io_context, its own TCP server (an echo
// server) and a periodic timer, written with callbacks rather than coroutines. The application
// calls the repo through its completion-token overloads, db.execute(sql, params, options, callback)
// and db.query(sql, params, callback), which complete with (std::exception_ptr, result). flypg
// starts no thread and never runs the io_context itself: one io.run() on the main thread serves
// the echo server, the timer, the RPC node and the database, and returns once all of them stop.
//
// The writes are deliberately slow (each INSERT sleeps 200 ms on the primary), and the program
// prints how often the 50 ms timer fired during each one and how late it ever was: nothing waits
// on a blocked thread.
//
// Needs: a PostgreSQL primary (scripts/pg-cluster start prints it), and the environment of the
// quickstart sample: FLYPG_PRIMARY_URL (or DATABASE_URL), FLYPG_REPLICA_URL outside the primary
// region, MY_REGION / PRIMARY_REGION (default "local"), FLYPG_CLUSTER_SECRET or FLYPG_ENV=dev,
// FLYPG_RPC_PORT / FLYPG_PEERS when other nodes exist. EMBED_ECHO_PORT picks the echo port
// (default: any free port).
//
// Run:
//     FLYPG_ENV=dev FLYPG_PRIMARY_URL=postgres://flypg@127.0.0.1:55432/flypg ./flypg_embed [writes]
// and while it runs, in another terminal: nc 127.0.0.1 <the echo port it prints>
// With writes = 0 it writes once a second until SIGINT or SIGTERM.
#include <algorithm>
#include <array>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flypg/config.hpp"
#include "flypg/repo.hpp"
#include "flypg/rpc/node.hpp"
#include "flypg/rpc/region.hpp"

namespace {

using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

std::string describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& failure) {
        return failure.what();
    }
}

// ---- The application's own parts, as they were before flypg ------------------------------------

class echo_session : public std::enable_shared_from_this<echo_session> {
  public:
    explicit echo_session(tcp::socket socket) : socket_(std::move(socket)) {}

    void start() { read(); }
    void close() {
        std::error_code ignored;
        socket_.close(ignored);
    }

  private:
    void read() {
        socket_.async_read_some(asio::buffer(data_),
                                [self = shared_from_this()](std::error_code ec, std::size_t n) {
                                    if (ec) return;
                                    asio::async_write(self->socket_,
                                                      asio::buffer(self->data_, n),
                                                      [self](std::error_code write_error, std::size_t) {
                                                          if (!write_error) self->read();
                                                      });
                                });
    }

    tcp::socket socket_;
    std::array<char, 1024> data_{};
};

class echo_server {
  public:
    echo_server(asio::io_context& io, std::uint16_t port)
        : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port)) {}

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    void start() { accept(); }
    void stop() {
        std::error_code ignored;
        acceptor_.close(ignored);
        for (const std::weak_ptr<echo_session>& s : sessions_)
            if (auto session = s.lock()) session->close();
    }

  private:
    void accept() {
        acceptor_.async_accept([this](std::error_code ec, tcp::socket socket) {
            if (ec) return;  // stopped
            auto session = std::make_shared<echo_session>(std::move(socket));
            std::erase_if(sessions_, [](const std::weak_ptr<echo_session>& s) { return s.expired(); });
            sessions_.push_back(session);
            session->start();
            accept();
        });
    }

    tcp::acceptor acceptor_;
    std::vector<std::weak_ptr<echo_session>> sessions_;
};

// A periodic timer, as an application has for housekeeping. It records how late it fires: a
// blocked event loop would show up here.
class ticker {
  public:
    ticker(asio::io_context& io, std::chrono::milliseconds period) : timer_(io), period_(period) {}

    void start() {
        timer_.expires_after(period_);
        schedule();
    }
    void stop() {
        stopped_ = true;
        timer_.cancel();
    }
    std::uint64_t ticks() const { return ticks_; }
    clock_type::duration worst_lateness() const { return worst_lateness_; }

  private:
    void schedule() {
        timer_.async_wait([this](std::error_code ec) {
            if (ec || stopped_) return;
            ++ticks_;
            worst_lateness_ = std::max(worst_lateness_, clock_type::now() - timer_.expiry());
            timer_.expires_at(timer_.expiry() + period_);
            schedule();
        });
    }

    asio::steady_timer timer_;
    std::chrono::milliseconds period_;
    bool stopped_ = false;
    std::uint64_t ticks_ = 0;
    clock_type::duration worst_lateness_{0};
};

// ---- The new part: writes and reads through flypg, with callbacks ------------------------------

class writer {
  public:
    writer(asio::io_context& io, flypg::rpc::node& node, flypg::repo& db, const ticker& clock, int writes)
        : io_(io), node_(node), db_(db), ticker_(clock), writes_(writes), pause_(io) {}

    /// Calls `done(status)` once every write is done, the first failure happened, or stop() was called.
    void start(std::function<void(int)> done) {
        done_ = std::move(done);
        if (db_.is_primary()) return create_table();
        // Outside the primary region writes go to a primary-region node: wait for one. (The node
        // offers this wait as a coroutine only; co_spawn gives it a callback.)
        asio::co_spawn(io_,
                       node_.wait_for_region(node_.primary_region(), std::chrono::seconds(30)),
                       asio::bind_cancellation_slot(stop_wait_.slot(), [this](std::exception_ptr e) {
                           if (stopping_) return finish(0, "");
                           if (e) return finish(1, "no node of the primary region: " + describe(e));
                           create_table();
                       }));
    }

    /// Starts no new write; done() follows once the current one has finished.
    void stop() {
        stopping_ = true;
        pause_.cancel();
        stop_wait_.emit(asio::cancellation_type::terminal);
    }

  private:
    void create_table() {
        db_.execute("CREATE TABLE IF NOT EXISTS embed_events (id bigserial PRIMARY KEY, note text NOT NULL)",
                    flypg::pg::params{},
                    flypg::write_options{},
                    [this](std::exception_ptr e, flypg::write_result) {
                        if (e) return finish(1, "creating the table failed: " + describe(e));
                        write_next();
                    });
    }

    void write_next() {
        if (stopping_ || (writes_ > 0 && written_ == writes_)) return finish(0, "");
        ++written_;
        const auto started = clock_type::now();
        const std::uint64_t ticks_before = ticker_.ticks();
        // INSERT ... SELECT FROM pg_sleep: a write that takes 200 ms on the primary.
        flypg::pg::params values{"event " + std::to_string(written_) + " from " + node_.my_region(), 0.2};
        db_.execute(
            "INSERT INTO embed_events (note) SELECT $1 FROM pg_sleep($2) RETURNING id",
            std::move(values),
            flypg::write_options{},
            [this, started, ticks_before](std::exception_ptr e, flypg::write_result w) {
                if (e) return finish(1, "write failed: " + describe(e));
                const auto elapsed = std::chrono::duration<double, std::milli>(clock_type::now() - started);
                std::printf("write %d: id %lld in %.0f ms (%s); the timer fired %llu times meanwhile\n",
                            written_,
                            static_cast<long long>(w.rows().at(0).get<std::int64_t>("id")),
                            elapsed.count(),
                            w.route == flypg::write_route::forwarded ? "forwarded" : "local primary",
                            static_cast<unsigned long long>(ticker_.ticks() - ticks_before));
                read_back(w.rows().at(0).get<std::int64_t>("id"));
            });
    }

    // The write has returned, so the local database has it: read it back at once.
    void read_back(std::int64_t id) {
        flypg::pg::params key{id};
        db_.query("SELECT note FROM embed_events WHERE id = $1",
                  std::move(key),
                  [this, id](std::exception_ptr e, flypg::pg::result r) {
                      if (e) return finish(1, "read failed: " + describe(e));
                      if (r.empty())
                          return finish(1,
                                        "read-your-writes failed: row " + std::to_string(id) + " is missing");
                      if (writes_ > 0) return write_next();
                      pause_.expires_after(std::chrono::seconds(1));
                      pause_.async_wait([this](std::error_code) { write_next(); });
                  });
    }

    void finish(int status, const std::string& message) {
        if (!message.empty()) std::fprintf(stderr, "embed: %s\n", message.c_str());
        if (auto done = std::exchange(done_, nullptr)) done(status);
    }

    asio::io_context& io_;
    flypg::rpc::node& node_;
    flypg::repo& db_;
    const ticker& ticker_;
    const int writes_;
    int written_ = 0;
    bool stopping_ = false;
    asio::steady_timer pause_;
    asio::cancellation_signal stop_wait_;
    std::function<void(int)> done_;
};

int parse_writes(int argc, char** argv) {
    if (argc < 2) return 10;
    char* end = nullptr;
    const long n = std::strtol(argv[1], &end, 10);
    if (*end != '\0' || n < 0 || n > 1'000'000)
        throw std::invalid_argument(std::string("writes: \"") + argv[1] +
                                    "\" is not a number from 0 to 1000000");
    return static_cast<int>(n);
}

std::uint16_t echo_port() {
    const char* text = std::getenv("EMBED_ECHO_PORT");
    if (text == nullptr || *text == '\0') return 0;
    char* end = nullptr;
    const long port = std::strtol(text, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        throw std::invalid_argument(std::string("EMBED_ECHO_PORT=\"") + text + "\" is not a port number");
    return static_cast<std::uint16_t>(port);
}

}  // namespace

int main(int argc, char** argv) {
    asio::io_context io;
    try {
        const int writes = parse_writes(argc, argv);

        // The application as it was.
        echo_server echo(io, echo_port());
        ticker clock(io, std::chrono::milliseconds(50));
        asio::signal_set signals(io, SIGINT, SIGTERM);

        // flypg on the same io_context.
        const flypg::database_config config =
            flypg::database_config_from_environment(flypg::rpc::my_region(), flypg::rpc::primary_region());
        auto service = std::make_shared<flypg::primary_service>();
        flypg::rpc::node_options node_options;
        node_options.writes = service;
        service->add_procedures(node_options.procedures);
        flypg::rpc::node node = flypg::rpc::node::create(io, std::move(node_options));
        flypg::repo_options repo_options = flypg::repo_options_for(config);
        flypg::repo db(io.get_executor(), node, service, std::move(repo_options));

        // The node and the repo's tracker are long-running operations: cancel them to stop them.
        asio::cancellation_signal stop_node;
        asio::cancellation_signal stop_repo;
        auto report = [](const char* what) {
            return [what](std::exception_ptr e) {
                if (e) std::fprintf(stderr, "embed: %s stopped: %s\n", what, describe(e).c_str());
            };
        };
        asio::co_spawn(io, node.run(), asio::bind_cancellation_slot(stop_node.slot(), report("the node")));
        asio::co_spawn(io, db.run(), asio::bind_cancellation_slot(stop_repo.slot(), report("the repo")));

        writer work(io, node, db, clock, writes);
        int status = 0;
        bool stopped = false;
        auto stop_everything = [&](int exit_status) {
            if (std::exchange(stopped, true)) return;
            status = exit_status;
            work.stop();
            echo.stop();
            clock.stop();
            signals.cancel();
            stop_repo.emit(asio::cancellation_type::terminal);
            stop_node.emit(asio::cancellation_type::terminal);
        };
        // A signal stops the writer; the write in flight, if any, finishes first (a forwarded write
        // interrupted after it was sent may or may not have committed). Then everything else stops.
        signals.async_wait([&](std::error_code ec, int) {
            if (!ec) work.stop();
        });

        echo.start();
        clock.start();
        std::printf("region %s (primary region %s); echo server on 127.0.0.1:%u\n",
                    node.my_region().c_str(),
                    node.primary_region().c_str(),
                    static_cast<unsigned>(echo.port()));
        std::fflush(stdout);
        work.start([&](int result) {
            std::printf("the timer fired %llu times in all, at most %.1f ms late\n",
                        static_cast<unsigned long long>(clock.ticks()),
                        std::chrono::duration<double, std::milli>(clock.worst_lateness()).count());
            stop_everything(result);
        });

        // The application's one event loop. It returns when nothing is left to do: every part,
        // flypg's included, has stopped.
        io.run();
        return status;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "embed: %s\n", e.what());
        return 1;
    }
}
