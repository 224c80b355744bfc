// A kj::AsyncIoStream over an asio::ip::tcp::socket, so that capnp::TwoPartyVatNetwork runs on
// the application's io_context (see kj_runtime.hpp).
//
// Reads go through a 64 KiB buffer: Cap'n Proto reads a message's first word, then the rest, and
// without the buffer each message would cost two receive calls and two trips through the
// io_context. Writes are copied to an output buffer and sent when the current KJ turns are over
// (kj_runtime::want_flush), so that the messages of one turn (a Finish and the next Call, say)
// leave in one send; only what the kernel does not take at once becomes an Asio operation.
// Above 1 MiB of unsent output, writes wait (Cap'n Proto's flow control sees the backpressure).
//
// A stream may check the size every message declares (frame_guard.hpp) until its peer has
// authenticated: a peer that has not cannot make this node allocate more than a handshake
// message, and while the check is on, the read-ahead buffer is small too.
//
// With a TLS session (tls.hpp), the socket carries ciphertext: reads decrypt into the read-ahead
// buffer (the guard sees plaintext), and each flush seals the batch into records. Until the TLS
// handshake is done the stream reads on its own and holds what Cap'n Proto writes.
//
// Asio operations are kj::newAdaptedPromise adapters with their own cancellation signal: when KJ
// drops the promise, only that operation is cancelled (a socket-wide cancel() would also abort
// the other direction). The socket, the buffer and the counters live in a state shared with the
// completion handlers, so that a handler running late never touches a destroyed stream, and bytes
// read for a dropped promise stay in the buffer for the next read.
#pragma once

#include <kj/async-io.h>

#include <asio.hpp>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rpc/frame_guard.hpp"
#include "rpc/kj_runtime.hpp"
#include "rpc/tls.hpp"

namespace flypg::rpc::detail {

struct buffered_read;  // a KJ read waiting for the read-ahead buffer (asio_stream.cpp)

// kj::AsyncIoStream has no virtual destructor: KJ owns streams through kj::Own, whose disposer
// knows the dynamic type.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class asio_stream final : public kj::AsyncIoStream {
  public:
    /// Takes the connected socket; sets TCP_NODELAY (capnp writes whole messages) and
    /// non-blocking mode. With a `guard`, every message the peer announces is checked by it as
    /// soon as its segment table arrives, until guard->lift(); a refused message ends the stream
    /// (reads fail as a disconnect) before Cap'n Proto sees its table.
    /// With `tls`, the link is encrypted and a client session's handshake starts at once.
    explicit asio_stream(asio::ip::tcp::socket socket,
                         std::shared_ptr<frame_guard> guard = nullptr,
                         std::unique_ptr<tls_session> tls = nullptr);
    ~asio_stream();

    kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
    kj::Promise<void> write(const void* buffer, size_t size) override;
    kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
    kj::Promise<void> whenWriteDisconnected() override;
    void shutdownWrite() override;
    void abortRead() override;
    void getsockopt(int level, int option, void* value, kj::uint* length) override;
    void setsockopt(int level, int option, const void* value, kj::uint length) override;
    void getsockname(struct sockaddr* addr, kj::uint* length) override;
    void getpeername(struct sockaddr* addr, kj::uint* length) override;

    /// Closes the socket: pending reads and writes fail, the peer sees the connection end.
    void close() noexcept;

    /// Bytes handed to write() so far, and bytes the kernel has accepted. A message that starts at
    /// an offset >= written_bytes() when the connection fails provably never left this host.
    std::uint64_t requested_bytes() const noexcept { return state_->requested; }
    std::uint64_t written_bytes() const noexcept { return state_->written; }

    /// Why the TLS session failed (a wrong key or certificate, a tampered record), or empty.
    std::string tls_failure() const {
        return state_->tls && state_->tls->failed() ? state_->tls->failure() : "";
    }
    /// A TLS link whose handshake has not completed.
    bool tls_handshaking() const noexcept { return state_->tls && !state_->tls->established(); }

    /// Shared with completion handlers, which may run after the stream is gone.
    struct shared_state final : flush_target, std::enable_shared_from_this<shared_state> {
        static constexpr std::size_t buffer_bytes = 64 * 1024;
        static constexpr std::size_t guarded_buffer_bytes = 4 * 1024;

        shared_state(asio::ip::tcp::socket s, std::shared_ptr<frame_guard> g, std::unique_ptr<tls_session> t)
            : socket(std::move(s)),
              guard(std::move(g)),
              tls(std::move(t)),
              buffer(guard ? guarded_buffer_bytes : buffer_bytes) {}
        asio::ip::tcp::socket socket;
        std::shared_ptr<frame_guard> guard;  // checks what the peer sends; null: no check
        std::unique_ptr<tls_session> tls;    // null: a clear link

        /// Runs `bytes` just read from the socket through the guard; false (and the stream
        /// failed) when it refused them.
        bool admit(std::span<const std::uint8_t> bytes);

        std::vector<std::uint8_t> buffer;  // read-ahead: [begin, end) not yet given to KJ
        std::size_t begin = 0;
        std::size_t end = 0;
        bool reading = false;                   // an Asio read into `buffer` is in flight
        std::shared_ptr<buffered_read> waiter;  // the KJ read it will serve
        std::error_code read_error;             // sticky: end of stream or a failed read

        // TLS only: ciphertext read from the socket, the socket's own end (reported once the
        // plaintext before it is consumed), and sealed records not yet given to the kernel.
        std::vector<std::uint8_t> cipher_in;
        std::error_code socket_error;
        std::vector<std::uint8_t> cipher_out;
        // Sealed batches, to count plaintext as written once any of its records left: (ciphertext
        // offset where the batch starts, plaintext offset where it ends).
        std::deque<std::pair<std::uint64_t, std::uint64_t>> sealed_batches;
        std::uint64_t cipher_sealed = 0;
        std::uint64_t cipher_written = 0;

        std::vector<std::uint8_t> out;      // written by KJ, not yet given to the kernel
        std::vector<std::uint8_t> sending;  // given to an Asio write in flight
        bool flush_wanted = false;          // registered with the runtime for this batch
        bool sending_async = false;         // `sending` is being written by Asio
        std::vector<kj::Own<kj::PromiseFulfiller<void>>> drained;  // writers held back (backpressure)
        std::uint64_t requested = 0;
        std::uint64_t written = 0;
        bool write_failed = false;
        std::error_code write_error;
        kj::Own<kj::PromiseFulfiller<void>> on_write_failure;

        /// Moves up to `max` buffered bytes to `out`; returns how many.
        std::size_t take(std::uint8_t* destination, std::size_t max) noexcept;
        /// TLS: decrypts into the buffer; true when it added bytes or ended the stream.
        bool decrypt_some();
        void flush() noexcept override;
        void seal() noexcept;  // TLS: moves `out` into records in `cipher_out`
        void send_now() noexcept;
        void note_sent(std::size_t n) noexcept;
        void note_write_failure(std::error_code ec);
        /// What goes to the socket next: `out` itself on a clear link, sealed records with TLS.
        std::vector<std::uint8_t>& wire() noexcept { return tls ? cipher_out : out; }
        std::size_t unsent() const noexcept { return out.size() + cipher_out.size() + sending.size(); }
    };

  private:
    kj::Promise<void> queue(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces);

    std::shared_ptr<shared_state> state_;
};
#pragma GCC diagnostic pop

}  // namespace flypg::rpc::detail
