// The delay proxy's connections (see delay_proxy_core.hpp).
//
// Per connection there are two directions, client->target and target->client. Each has a reader
// that stamps every chunk with read time + delay and queues it, and a writer that waits until that
// time and writes it. The queue bounds the bytes in flight. A direction ends when its writer has
// delivered the end of the stream (FIN or reset) or failed to write; when both writers have ended,
// both sockets are closed, which ends any reader still waiting for data. Faults (set_fault) act
// where bytes are delivered: a stalled writer holds its chunk, a dropping writer discards it.
#include "delay_proxy_core.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <deque>
#include <optional>
#include <utility>
#include <vector>

namespace flypg::tools {
namespace {

using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace asio::experimental::awaitable_operators;
constexpr auto no_throw = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t read_size = 64 * 1024;

enum class chunk_kind { data, end_of_stream, reset };

struct chunk {
    clock_type::time_point due;
    chunk_kind kind = chunk_kind::data;
    std::vector<char> bytes;
};

// A FIFO of chunks for one direction, for one thread. Waiting uses a timer that never expires and
// is cancelled to wake the waiter, which then checks its condition again.
class chunk_queue {
  public:
    chunk_queue(const asio::any_io_executor& executor, std::size_t max_bytes)
        : not_empty_(executor, clock_type::time_point::max()),
          not_full_(executor, clock_type::time_point::max()),
          max_bytes_(max_bytes) {}

    // False when the queue was closed (the writer is gone): the chunk is dropped.
    asio::awaitable<bool> push(chunk c) {
        while (!closed_ && bytes_ >= max_bytes_) {
            not_full_.expires_at(clock_type::time_point::max());
            co_await not_full_.async_wait(no_throw);
        }
        if (closed_) co_return false;
        bytes_ += c.bytes.size();
        items_.push_back(std::move(c));
        not_empty_.cancel();
        co_return true;
    }

    // Nothing once the queue is closed.
    asio::awaitable<std::optional<chunk>> pop() {
        while (!closed_ && items_.empty()) {
            not_empty_.expires_at(clock_type::time_point::max());
            co_await not_empty_.async_wait(no_throw);
        }
        if (closed_) co_return std::nullopt;
        chunk c = std::move(items_.front());
        items_.pop_front();
        bytes_ -= c.bytes.size();
        not_full_.cancel();
        co_return c;
    }

    void close() {
        closed_ = true;
        items_.clear();
        not_empty_.cancel();
        not_full_.cancel();
    }

  private:
    std::deque<chunk> items_;
    asio::steady_timer not_empty_;
    asio::steady_timer not_full_;
    std::size_t bytes_ = 0;
    std::size_t max_bytes_;
    bool closed_ = false;
};

void hard_close(tcp::socket& socket) {
    asio::error_code ignored;
    socket.set_option(asio::socket_base::linger(true, 0), ignored);
    socket.close(ignored);
}

struct connection_state {
    connection_state(tcp::socket accepted,
                     const delay_proxy_options& options,
                     std::shared_ptr<delay_proxy_stats> s,
                     std::shared_ptr<delay_proxy::control> c)
        : client(std::move(accepted)),
          target(client.get_executor()),
          to_target(client.get_executor(), options.max_buffered_bytes),
          to_client(client.get_executor(), options.max_buffered_bytes),
          stats(std::move(s)),
          control(std::move(c)) {}

    tcp::socket client;
    tcp::socket target;
    chunk_queue to_target;
    chunk_queue to_client;
    std::shared_ptr<delay_proxy_stats> stats;
    std::shared_ptr<delay_proxy::control> control;
    int writers_done = 0;
};

}  // namespace

// What set_delay() and set_fault() change, shared with the connections.
struct delay_proxy::control {
    std::chrono::microseconds delay{0};
    proxy_fault to_target = proxy_fault::none;
    proxy_fault to_client = proxy_fault::none;
    std::vector<std::weak_ptr<connection_state>> connections;  ///< For a reset.

    void add(const std::shared_ptr<connection_state>& c) {
        std::erase_if(connections, [](const auto& weak) { return weak.expired(); });
        connections.push_back(c);
    }
};

namespace {

asio::awaitable<void> read_side(std::shared_ptr<connection_state> state,
                                tcp::socket& from,
                                chunk_queue& queue) {
    std::vector<char> buffer(read_size);
    for (;;) {
        auto [ec, n] = co_await from.async_read_some(asio::buffer(buffer), no_throw);
        chunk c;
        c.due = clock_type::now() + state->control->delay;
        if (ec) {
            // Our own close (operation_aborted) ends the direction like a reset; the queue is
            // normally closed by then and drops it.
            c.kind = ec == asio::error::eof ? chunk_kind::end_of_stream : chunk_kind::reset;
            co_await queue.push(std::move(c));
            co_return;
        }
        c.bytes.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
        if (!co_await queue.push(std::move(c))) co_return;
    }
}

asio::awaitable<void> write_side(std::shared_ptr<connection_state> state,
                                 tcp::socket& to,
                                 chunk_queue& queue,
                                 proxy_fault& fault,
                                 std::uint64_t& bytes_written) {
    asio::steady_timer timer(to.get_executor());
    for (;;) {
        std::optional<chunk> c = co_await queue.pop();
        if (!c) break;
        if (c->due > clock_type::now()) {
            timer.expires_at(c->due);
            co_await timer.async_wait(no_throw);
        }
        // A stall is polled: it is a test tool's fault, and a millisecond is fine grain enough.
        while (fault == proxy_fault::stall && to.is_open()) {
            timer.expires_after(std::chrono::milliseconds(1));
            co_await timer.async_wait(no_throw);
        }
        if (fault == proxy_fault::drop) continue;
        if (fault == proxy_fault::corrupt && c->kind == chunk_kind::data &&
            c->bytes.size() >= corrupt_min_chunk_bytes) {
            c->bytes[c->bytes.size() / 2] ^= 0x01;
            fault = proxy_fault::none;
        }
        if (c->kind == chunk_kind::end_of_stream) {
            asio::error_code ignored;
            to.shutdown(tcp::socket::shutdown_send, ignored);
            break;
        }
        if (c->kind == chunk_kind::reset) {
            hard_close(to);
            break;
        }
        auto [ec, n] = co_await asio::async_write(to, asio::buffer(c->bytes), no_throw);
        bytes_written += n;
        if (ec) break;
    }
    queue.close();
    if (++state->writers_done == 2) {
        asio::error_code ignored;
        state->client.close(ignored);
        state->target.close(ignored);
    }
}

asio::awaitable<void> serve(std::shared_ptr<connection_state> state, tcp::endpoint target) {
    auto [ec] = co_await state->target.async_connect(target, no_throw);
    if (ec) {
        ++state->stats->connect_failures;
        hard_close(state->client);
    } else {
        // Chunks go out as they come in; Nagle would add its own delays to small writes.
        asio::error_code ignored;
        state->client.set_option(tcp::no_delay(true), ignored);
        state->target.set_option(tcp::no_delay(true), ignored);
        delay_proxy::control& control = *state->control;
        co_await (
            read_side(state, state->client, state->to_target) &&
            write_side(
                state, state->target, state->to_target, control.to_target, state->stats->bytes_to_target) &&
            read_side(state, state->target, state->to_client) &&
            write_side(
                state, state->client, state->to_client, control.to_client, state->stats->bytes_to_client));
    }
    --state->stats->active;
}

}  // namespace

delay_proxy::delay_proxy(asio::any_io_executor executor, delay_proxy_options options)
    : acceptor_(executor, options.listen),
      options_(options),
      stats_(std::make_shared<delay_proxy_stats>()),
      control_(std::make_shared<control>()) {
    control_->delay = options.delay;
}

tcp::endpoint delay_proxy::local_endpoint() const {
    return acceptor_.local_endpoint();
}

asio::awaitable<void> delay_proxy::run() {
    asio::steady_timer backoff(acceptor_.get_executor());
    for (;;) {
        auto [ec, socket] = co_await acceptor_.async_accept(no_throw);
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        if (ec) {
            // Out of descriptors or similar: try again shortly rather than spin.
            backoff.expires_after(std::chrono::milliseconds(10));
            co_await backoff.async_wait(no_throw);
            continue;
        }
        ++stats_->accepted;
        ++stats_->active;
        auto state = std::make_shared<connection_state>(std::move(socket), options_, stats_, control_);
        if (control_->to_target == proxy_fault::reset) {
            hard_close(state->client);
            --stats_->active;
            continue;
        }
        control_->add(state);
        asio::co_spawn(acceptor_.get_executor(), serve(std::move(state), options_.target), asio::detached);
    }
}

void delay_proxy::close() {
    asio::error_code ignored;
    acceptor_.close(ignored);
}

void delay_proxy::set_delay(std::chrono::microseconds delay) {
    control_->delay = delay;
}

void delay_proxy::set_fault(proxy_fault fault, proxy_direction direction) {
    const bool to_target = direction != proxy_direction::to_client || fault == proxy_fault::reset;
    const bool to_client = direction != proxy_direction::to_target || fault == proxy_fault::reset;
    control_->to_target = to_target ? fault : proxy_fault::none;
    control_->to_client = to_client ? fault : proxy_fault::none;
    if (fault != proxy_fault::reset) return;
    for (const auto& weak : control_->connections) {
        if (auto c = weak.lock()) {
            hard_close(c->client);
            hard_close(c->target);
        }
    }
    control_->connections.clear();
}

}  // namespace flypg::tools
