#include "rpc/asio_stream.hpp"

#include <sys/socket.h>

#include <kj/debug.h>

#include <utility>
#include <vector>

namespace flypg::rpc::detail {
namespace {

kj::Exception to_kj(const std::error_code& ec, const char* what) {
    // Cap'n Proto treats DISCONNECTED as "the connection is gone", which is what every socket error
    // means for a TwoPartyVatNetwork.
    return kj::Exception(
        kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__, kj::str(what, ": ", ec.message().c_str()));
}

// State shared between an adapter (owned by its KJ promise) and the Asio completion handler.
// The adapter clears `fulfiller` when KJ drops the promise; the handler then does nothing.
template <class T>
struct op_state {
    kj::PromiseFulfiller<T>* fulfiller = nullptr;
    asio::cancellation_signal cancel;
};

class read_adapter {
  public:
    read_adapter(kj::PromiseFulfiller<size_t>& fulfiller,
                 asio::ip::tcp::socket& socket,
                 void* buffer,
                 size_t min_bytes,
                 size_t max_bytes)
        : state_(std::make_shared<op_state<size_t>>()) {
        state_->fulfiller = &fulfiller;
        // transfer_at_least: return as soon as min_bytes arrived; an early EOF returns what came.
        asio::async_read(socket,
                         asio::buffer(buffer, max_bytes),
                         asio::transfer_at_least(min_bytes),
                         asio::bind_cancellation_slot(state_->cancel.slot(),
                                                      [state = state_](std::error_code ec, size_t n) {
                                                          if (state->fulfiller == nullptr) return;
                                                          auto* f = std::exchange(state->fulfiller, nullptr);
                                                          if (!ec || ec == asio::error::eof) {
                                                              f->fulfill(std::move(n));
                                                          } else {
                                                              f->reject(to_kj(ec, "read from peer"));
                                                          }
                                                      }));
    }

    ~read_adapter() {
        if (state_->fulfiller != nullptr) {
            // KJ dropped the promise: cancel only this operation. The reactor removes it at once,
            // so the buffer KJ lent us is never written after this returns.
            state_->fulfiller = nullptr;
            state_->cancel.emit(asio::cancellation_type::terminal);
        }
    }

  private:
    std::shared_ptr<op_state<size_t>> state_;
};

class write_adapter {
  public:
    write_adapter(kj::PromiseFulfiller<void>& fulfiller,
                  asio::ip::tcp::socket& socket,
                  std::vector<asio::const_buffer> buffers,
                  std::shared_ptr<asio_stream::counters> counters)
        : state_(std::make_shared<op_state<void>>()) {
        state_->fulfiller = &fulfiller;
        asio::async_write(socket,
                          std::move(buffers),
                          asio::bind_cancellation_slot(
                              state_->cancel.slot(),
                              [state = state_, counters = std::move(counters)](std::error_code ec, size_t n) {
                                  counters->written += n;
                                  if (ec && !counters->write_failed) {
                                      counters->write_failed = true;
                                      if (counters->on_write_failure) counters->on_write_failure->fulfill();
                                  }
                                  if (state->fulfiller == nullptr) return;
                                  auto* f = std::exchange(state->fulfiller, nullptr);
                                  if (!ec) {
                                      f->fulfill();
                                  } else {
                                      f->reject(to_kj(ec, "write to peer"));
                                  }
                              }));
    }

    ~write_adapter() {
        if (state_->fulfiller != nullptr) {
            state_->fulfiller = nullptr;
            state_->cancel.emit(asio::cancellation_type::terminal);
        }
    }

  private:
    std::shared_ptr<op_state<void>> state_;
};

}  // namespace

asio_stream::asio_stream(asio::ip::tcp::socket socket)
    : socket_(std::move(socket)), counters_(std::make_shared<counters>()) {
    std::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
}

asio_stream::~asio_stream() {
    // The fulfiller must die on the loop's thread, while the loop exists: now, not in a handler.
    counters_->on_write_failure = nullptr;
    close();
}

kj::Promise<size_t> asio_stream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
    if (max_bytes == 0) return size_t(0);
    return kj::newAdaptedPromise<size_t, read_adapter>(socket_, buffer, min_bytes, max_bytes);
}

kj::Promise<void> asio_stream::write(const void* buffer, size_t size) {
    if (size == 0) return kj::READY_NOW;
    counters_->requested += size;
    std::vector<asio::const_buffer> buffers{asio::const_buffer(buffer, size)};
    return kj::newAdaptedPromise<void, write_adapter>(socket_, std::move(buffers), counters_);
}

kj::Promise<void> asio_stream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(pieces.size());
    size_t total = 0;
    for (auto piece : pieces) {
        if (piece.size() == 0) continue;
        buffers.emplace_back(piece.begin(), piece.size());
        total += piece.size();
    }
    if (total == 0) return kj::READY_NOW;
    counters_->requested += total;
    return kj::newAdaptedPromise<void, write_adapter>(socket_, std::move(buffers), counters_);
}

kj::Promise<void> asio_stream::whenWriteDisconnected() {
    if (counters_->write_failed) return kj::READY_NOW;
    if (!counters_->on_write_failure) {
        auto paf = kj::newPromiseAndFulfiller<void>();
        counters_->on_write_failure = std::move(paf.fulfiller);
        // Forked lazily by the first caller; later callers share it through the fulfiller's promise.
        return std::move(paf.promise);
    }
    // One waiter is all capnp 0.9.2 needs; a second caller waits for the same failure another way.
    return kj::NEVER_DONE;
}

void asio_stream::shutdownWrite() {
    std::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

void asio_stream::abortRead() {
    std::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_receive, ignored);
}

void asio_stream::getsockopt(int level, int option, void* value, kj::uint* length) {
    socklen_t len = *length;
    KJ_SYSCALL(::getsockopt(socket_.native_handle(), level, option, value, &len));
    *length = len;
}

void asio_stream::setsockopt(int level, int option, const void* value, kj::uint length) {
    KJ_SYSCALL(::setsockopt(socket_.native_handle(), level, option, value, length));
}

void asio_stream::getsockname(struct sockaddr* addr, kj::uint* length) {
    socklen_t len = *length;
    KJ_SYSCALL(::getsockname(socket_.native_handle(), addr, &len));
    *length = len;
}

void asio_stream::getpeername(struct sockaddr* addr, kj::uint* length) {
    socklen_t len = *length;
    KJ_SYSCALL(::getpeername(socket_.native_handle(), addr, &len));
    *length = len;
}

void asio_stream::close() noexcept {
    std::error_code ignored;
    if (socket_.is_open()) {
        socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
    }
}

}  // namespace flypg::rpc::detail
