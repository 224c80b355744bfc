// A kj::AsyncIoStream over an asio::ip::tcp::socket, so that capnp::TwoPartyVatNetwork runs on
// the application's io_context (see kj_runtime.hpp).
//
// Reads and writes are kj::newAdaptedPromise operations whose adapters start an Asio operation with
// its own cancellation signal: when KJ drops the promise, only that operation is cancelled (a
// socket-wide cancel() would also abort the other direction). Completion handlers hold a small
// shared state, never the stream, so they are safe after the stream is gone.
#pragma once

#include <kj/async-io.h>

#include <asio.hpp>

#include <cstdint>
#include <memory>

namespace flypg::rpc::detail {

// kj::AsyncIoStream has no virtual destructor: KJ owns streams through kj::Own, whose disposer
// knows the dynamic type.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class asio_stream final : public kj::AsyncIoStream {
  public:
    /// Takes the connected socket; sets TCP_NODELAY (capnp writes whole messages).
    explicit asio_stream(asio::ip::tcp::socket socket);
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
    std::uint64_t requested_bytes() const noexcept { return counters_->requested; }
    std::uint64_t written_bytes() const noexcept { return counters_->written; }

    asio::ip::tcp::socket& socket() noexcept { return socket_; }

    /// Shared with completion handlers, which may run after the stream is gone.
    struct counters {
        std::uint64_t requested = 0;
        std::uint64_t written = 0;
        bool write_failed = false;
        kj::Own<kj::PromiseFulfiller<void>> on_write_failure;
    };

  private:
    asio::ip::tcp::socket socket_;
    std::shared_ptr<counters> counters_;
};
#pragma GCC diagnostic pop

}  // namespace flypg::rpc::detail
