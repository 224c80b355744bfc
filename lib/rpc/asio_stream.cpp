#include "rpc/asio_stream.hpp"

#include <sys/socket.h>

#include <kj/debug.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "rpc/kj_runtime.hpp"

namespace flypg::rpc::detail {

struct buffered_read {
    kj::PromiseFulfiller<size_t>* fulfiller = nullptr;
    std::uint8_t* out = nullptr;
    std::size_t have = 0;
    std::size_t min = 0;
    std::size_t max = 0;
};

namespace {

using shared_state = asio_stream::shared_state;

kj::Exception disconnected(const std::error_code& ec, const char* what) {
    // Cap'n Proto treats DISCONNECTED as "the connection is gone", which is what every socket error
    // means for a TwoPartyVatNetwork.
    return kj::Exception(
        kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__, kj::str(what, ": ", ec.message().c_str()));
}

// ---- reads through the shared buffer ------------------------------------------------------------

kj::Exception read_failure(const shared_state& s) {
    if (s.tls && s.tls->failed()) {
        return kj::Exception(kj::Exception::Type::DISCONNECTED,
                             __FILE__,
                             __LINE__,
                             kj::str("TLS: ", s.tls->failure().c_str()));
    }
    return disconnected(s.read_error, "read from peer");
}

// A KJ read waiting for the buffer. At most one exists (KJ reads one at a time); the socket read
// in flight serves whichever one is current when it completes. It is not cancelled when KJ drops
// the read waiting for it: its bytes belong to the stream and stay buffered for the next read.
// Closing the socket ends it.

// Gives buffered bytes to the waiting KJ read, and ends it once it has enough or the stream ended.
void serve_waiter(const std::shared_ptr<shared_state>& s) {
    auto op = s->waiter;
    if (!op || op->fulfiller == nullptr) {
        s->waiter.reset();
        return;
    }
    op->have += s->take(op->out + op->have, op->max - op->have);
    if (op->have < op->min && !s->read_error) return;
    auto* f = std::exchange(op->fulfiller, nullptr);
    s->waiter.reset();
    if (op->have >= op->min || s->read_error == asio::error::eof) {
        f->fulfill(std::move(op->have));  // a short read means end of stream
    } else {
        f->reject(read_failure(*s));
    }
}

void start_socket_read(std::shared_ptr<shared_state> s);

// Brings bytes for whoever needs them: the KJ read waiting, or a TLS handshake not yet done (it
// must read before Cap'n Proto asks for anything). Decrypted bytes already received come first.
void pump_reads(std::shared_ptr<shared_state> s) {
    for (;;) {
        serve_waiter(s);
        const bool handshaking = s->tls && !s->tls->established() && !s->read_error;
        if (!s->waiter && !handshaking) return;
        if (s->tls && s->decrypt_some()) continue;
        if (!s->reading && !s->read_error) start_socket_read(std::move(s));
        return;
    }
}

void make_room(shared_state& s) {
    if (s.begin == s.end) s.begin = s.end = 0;
    // Once the guard is lifted (the peer authenticated), the buffer grows to its full size; no
    // read is in flight now, so nothing points into it.
    if (s.buffer.size() < shared_state::buffer_bytes && (!s.guard || s.guard->lifted()))
        s.buffer.resize(shared_state::buffer_bytes);
}

void start_socket_read(std::shared_ptr<shared_state> s) {
    make_room(*s);
    s->reading = true;
    // TLS reads ciphertext aside (as much as the buffer holds, so the guard's small buffer still
    // bounds an unauthenticated peer); a clear link reads straight into the buffer.
    if (s->tls && s->cipher_in.size() != s->buffer.size()) s->cipher_in.resize(s->buffer.size());
    auto* base = s->tls ? s->cipher_in.data() : s->buffer.data() + s->end;
    const auto room = s->tls ? s->cipher_in.size() : s->buffer.size() - s->end;
    auto& socket = s->socket;
    socket.async_read_some(asio::buffer(base, room), [s = std::move(s)](std::error_code ec, std::size_t n) {
        // The KJ reader runs when this handler ends, not a posted pump later.
        kj_runtime::handler_scope scope;
        s->reading = false;
        if (s->tls) {
            s->tls->feed({s->cipher_in.data(), n});
            if (ec) s->socket_error = ec;
        } else if (s->admit({s->buffer.data() + s->end, n})) {
            s->end += n;
            if (ec) s->read_error = ec;
        }
        pump_reads(s);
    });
}

class buffered_read_adapter {
  public:
    buffered_read_adapter(kj::PromiseFulfiller<size_t>& fulfiller,
                          std::shared_ptr<shared_state> s,
                          std::uint8_t* out,
                          std::size_t have,
                          std::size_t min,
                          std::size_t max)
        : state_(std::move(s)), op_(std::make_shared<buffered_read>()) {
        *op_ = buffered_read{&fulfiller, out, have, min, max};
        state_->waiter = op_;
        pump_reads(state_);
    }

    ~buffered_read_adapter() {
        op_->fulfiller = nullptr;
        if (state_->waiter == op_) state_->waiter.reset();
    }

  private:
    std::shared_ptr<shared_state> state_;
    std::shared_ptr<buffered_read> op_;
};

// A read larger than the buffer goes straight to the caller's memory. That memory may be freed
// when KJ drops the promise, so this operation is cancelled then (the reactor removes it at once).
struct direct_read {
    kj::PromiseFulfiller<size_t>* fulfiller = nullptr;
    asio::cancellation_signal cancel;
};

class direct_read_adapter {
  public:
    direct_read_adapter(kj::PromiseFulfiller<size_t>& fulfiller,
                        std::shared_ptr<shared_state> s,
                        std::uint8_t* out,
                        std::size_t have,
                        std::size_t min,
                        std::size_t max)
        : op_(std::make_shared<direct_read>()) {
        op_->fulfiller = &fulfiller;
        asio::async_read(s->socket,
                         asio::buffer(out + have, max - have),
                         asio::transfer_at_least(min - have),
                         asio::bind_cancellation_slot(
                             op_->cancel.slot(), [op = op_, s, out, have](std::error_code ec, std::size_t n) {
                                 kj_runtime::handler_scope scope;
                                 // The caller's memory is alive only while KJ still waits
                                 // for this read (a read KJ dropped is not looked at).
                                 if (op->fulfiller == nullptr) {
                                     if (ec) s->read_error = ec;
                                     return;
                                 }
                                 if (!s->admit({out + have, n})) ec = s->read_error;
                                 if (ec) s->read_error = ec;
                                 auto* f = std::exchange(op->fulfiller, nullptr);
                                 if (!ec || ec == asio::error::eof) {
                                     f->fulfill(have + n);
                                 } else {
                                     f->reject(disconnected(ec, "read from peer"));
                                 }
                             }));
    }

    ~direct_read_adapter() {
        if (op_->fulfiller != nullptr) {
            op_->fulfiller = nullptr;
            op_->cancel.emit(asio::cancellation_type::terminal);
        }
    }

  private:
    std::shared_ptr<direct_read> op_;
};

// ---- writes -----------------------------------------------------------------------------------

constexpr std::size_t high_water = 1024 * 1024;

}  // namespace

bool shared_state::admit(std::span<const std::uint8_t> bytes) {
    if (!guard || guard->feed(bytes)) return true;
    // Nothing more reaches KJ: what is buffered is dropped, reads fail as a disconnect, and the
    // connection's owner closes it.
    begin = end = 0;
    read_error = asio::error::message_size;
    return false;
}

bool shared_state::decrypt_some() {
    make_room(*this);
    const bool was_established = tls->established();
    const std::size_t n = tls->decrypt(buffer.data() + end, buffer.size() - end);
    // The handshake or an alert may have left bytes to send, and what Cap'n Proto wrote during the
    // handshake can be sealed once it is done. Application data leaves nothing to send: its reads
    // do not flush, so the writes of a KJ turn still leave together.
    if (tls->has_output() || tls->failed() || tls->established() != was_established) flush();
    if (n > 0) {
        if (admit({buffer.data() + end, n})) end += n;
        return true;
    }
    if (tls->failed()) {
        read_error = asio::error::connection_aborted;
    } else if (tls->closed()) {
        read_error = asio::error::eof;
    } else if (socket_error) {
        read_error = socket_error;  // every byte before the socket's end has been decrypted
    } else {
        return false;
    }
    begin = end = 0;
    return true;
}

std::size_t shared_state::take(std::uint8_t* destination, std::size_t max) noexcept {
    const std::size_t n = std::min(max, end - begin);
    if (n > 0) {
        std::memcpy(destination, buffer.data() + begin, n);
        begin += n;
    }
    return n;
}

void shared_state::note_write_failure(std::error_code ec) {
    if (write_failed) return;
    write_failed = true;
    write_error = ec;
    out.clear();
    cipher_out.clear();
    if (on_write_failure) on_write_failure->fulfill();
    for (auto& f : drained) f->reject(disconnected(ec, "write to peer"));
    drained.clear();
}

void shared_state::flush() noexcept {
    flush_wanted = false;
    if (tls && !write_failed) seal();
    if (!sending_async && !wire().empty() && !write_failed) send_now();
    // A failed TLS session has sent its alert (above, as far as the kernel took it at once) and
    // writes nothing more.
    if (tls && tls->failed() && !write_failed) note_write_failure(asio::error::connection_aborted);
    // Writers held back by the high-water mark go on once the output has drained below it.
    if (unsent() < high_water && !drained.empty() && !write_failed) {
        auto waiting = std::move(drained);
        drained.clear();
        for (auto& f : waiting) f->fulfill();
    }
}

void shared_state::seal() noexcept {
    // Plaintext waits in `out` until the handshake is done; then each batch becomes records.
    if (!out.empty() && tls->established()) {
        sealed_batches.emplace_back(cipher_sealed, requested);
        if (tls->seal(out)) out.clear();
    }
    // After a failure this is the alert that tells the peer why.
    const std::size_t before = cipher_out.size();
    tls->take_output(cipher_out);
    cipher_sealed += cipher_out.size() - before;
}

void shared_state::note_sent(std::size_t n) noexcept {
    if (!tls) {
        written += n;
        return;
    }
    // A batch counts as written once any of its bytes left: the peer may have read its first
    // records, so only what follows it provably never left.
    cipher_written += n;
    while (!sealed_batches.empty() && sealed_batches.front().first < cipher_written) {
        written = sealed_batches.front().second;
        sealed_batches.pop_front();
    }
}

void shared_state::send_now() noexcept {
    // Nothing else is queued on the socket: try at once, without blocking.
    auto& bytes = wire();
    std::error_code ec;
    std::size_t n = socket.write_some(asio::buffer(bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
        ec = {};
        n = 0;
    }
    note_sent(n);
    if (ec) {
        note_write_failure(ec);
        return;
    }
    if (n == bytes.size()) {
        bytes.clear();
        return;
    }
    // The kernel took part of it: the rest becomes an Asio operation.
    sending.assign(bytes.begin() + static_cast<std::ptrdiff_t>(n), bytes.end());
    bytes.clear();
    sending_async = true;
    asio::async_write(
        socket, asio::buffer(sending), [self = shared_from_this()](std::error_code e, std::size_t m) {
            kj_runtime::handler_scope scope;
            self->note_sent(m);
            self->sending_async = false;
            self->sending.clear();
            if (e) {
                self->note_write_failure(e);
                return;
            }
            self->flush();
        });
}

asio_stream::asio_stream(asio::ip::tcp::socket socket,
                         std::shared_ptr<frame_guard> guard,
                         std::unique_ptr<tls_session> tls)
    : state_(std::make_shared<shared_state>(std::move(socket), std::move(guard), std::move(tls))) {
    std::error_code ignored;
    state_->socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    state_->socket.non_blocking(true, ignored);
    if (state_->tls) {
        state_->flush();     // a client's hello
        pump_reads(state_);  // the handshake reads before Cap'n Proto does
    }
}

asio_stream::~asio_stream() {
    // Fulfillers must die on the loop's thread, while the loop exists: now, not in a handler.
    state_->on_write_failure = nullptr;
    state_->drained.clear();
    close();
}

kj::Promise<size_t> asio_stream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
    auto* out = static_cast<std::uint8_t*>(buffer);
    auto& s = *state_;
    const std::size_t have = s.take(out, max_bytes);
    if (have >= min_bytes || have == max_bytes) return have;
    if (s.read_error) {
        if (s.read_error == asio::error::eof) return have;
        return read_failure(s);
    }
    // Big reads skip the buffer, except with TLS, whose bytes must be decrypted on the way.
    if (!s.tls && max_bytes - have >= s.buffer.size() && !s.reading) {
        return kj::newAdaptedPromise<size_t, direct_read_adapter>(state_, out, have, min_bytes, max_bytes);
    }
    return kj::newAdaptedPromise<size_t, buffered_read_adapter>(state_, out, have, min_bytes, max_bytes);
}

kj::Promise<void> asio_stream::write(const void* buffer, size_t size) {
    kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
    return queue(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> asio_stream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
    return queue(pieces);
}

kj::Promise<void> asio_stream::queue(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
    auto& s = *state_;
    std::size_t total = 0;
    for (auto piece : pieces) total += piece.size();
    if (total == 0) return kj::READY_NOW;
    s.requested += total;
    if (s.write_failed) return disconnected(s.write_error, "write to peer");
    for (auto piece : pieces) s.out.insert(s.out.end(), piece.begin(), piece.end());
    if (!s.flush_wanted) {
        s.flush_wanted = true;
        if (auto* rt = kj_runtime::current()) {
            rt->want_flush(state_);
        } else {
            s.flush();
        }
    }
    if (s.unsent() < high_water) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    s.drained.push_back(std::move(paf.fulfiller));
    return std::move(paf.promise);
}

kj::Promise<void> asio_stream::whenWriteDisconnected() {
    if (state_->write_failed) return kj::READY_NOW;
    if (!state_->on_write_failure) {
        auto paf = kj::newPromiseAndFulfiller<void>();
        state_->on_write_failure = std::move(paf.fulfiller);
        return std::move(paf.promise);
    }
    // One waiter is all capnp 0.9.2 needs.
    return kj::NEVER_DONE;
}

void asio_stream::shutdownWrite() {
    state_->flush();
    std::error_code ignored;
    state_->socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

void asio_stream::abortRead() {
    std::error_code ignored;
    state_->socket.shutdown(asio::ip::tcp::socket::shutdown_receive, ignored);
}

void asio_stream::getsockopt(int level, int option, void* value, kj::uint* length) {
    socklen_t len = *length;
    KJ_SYSCALL(::getsockopt(state_->socket.native_handle(), level, option, value, &len));
    *length = len;
}

void asio_stream::setsockopt(int level, int option, const void* value, kj::uint length) {
    KJ_SYSCALL(::setsockopt(state_->socket.native_handle(), level, option, value, length));
}

void asio_stream::getsockname(struct sockaddr* addr, kj::uint* length) {
    socklen_t len = *length;
    KJ_SYSCALL(::getsockname(state_->socket.native_handle(), addr, &len));
    *length = len;
}

void asio_stream::getpeername(struct sockaddr* addr, kj::uint* length) {
    socklen_t len = *length;
    KJ_SYSCALL(::getpeername(state_->socket.native_handle(), addr, &len));
    *length = len;
}

void asio_stream::close() noexcept {
    // Writers held back (backpressure) fail now rather than wait for a socket that is gone.
    state_->note_write_failure(asio::error::operation_aborted);
    std::error_code ignored;
    if (state_->socket.is_open()) {
        state_->socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        state_->socket.close(ignored);
    }
}

}  // namespace flypg::rpc::detail
