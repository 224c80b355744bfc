// Follows Cap'n Proto's stream framing (a segment table: the segment count less one, each
// segment's size in words, padding to a word; then the segments) over the bytes a peer sends, so
// that a message's declared size is known as soon as its table has arrived: before Cap'n Proto
// allocates room for the message. asio_stream uses it to bound what a peer that has not yet
// authenticated can make this node allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace flypg::rpc::detail {

class frame_guard {
  public:
    /// Messages of more than `max_message_bytes` (segment table included) or more than
    /// `max_segments` segments are refused, and so is the message after the first `max_messages`
    /// (a handshake takes a handful; a peer that keeps sending small calls would otherwise make
    /// this side queue answers it never reads).
    explicit frame_guard(std::size_t max_message_bytes,
                         std::uint32_t max_segments = 16,
                         std::uint32_t max_messages = 16) noexcept
        : max_bytes_(max_message_bytes), max_segments_(max_segments), max_messages_(max_messages) {}

    /// Takes the next bytes of the stream, in order. Returns false once a message was refused
    /// (and from then on); true while every message seen so far is within the limits, or after
    /// lift().
    bool feed(std::span<const std::uint8_t> bytes) noexcept;

    /// No more checks (the peer authenticated): feed() returns true without looking.
    void lift() noexcept { lifted_ = true; }
    bool lifted() const noexcept { return lifted_; }
    bool refused() const noexcept { return !why_.empty(); }
    /// Why the stream was refused ("a message of 16777224 bytes (at most 8192)"), or empty.
    const std::string& why() const noexcept { return why_; }

  private:
    void end_of_word(std::uint32_t word) noexcept;
    void refuse(std::string why) noexcept;

    std::size_t max_bytes_;
    std::uint32_t max_segments_;
    std::uint32_t max_messages_;
    std::uint32_t messages_ = 0;  // whose tables have arrived
    bool lifted_ = false;
    std::string why_;
    // The message being read: its table, then its segments.
    std::size_t table_read_ = 0;   // bytes of the table seen so far
    std::size_t table_size_ = 0;   // the table's size in bytes, once its first word arrived
    std::uint64_t segments_ = 0;   // segments it declares
    std::uint64_t words_ = 0;      // segment words it declares so far
    std::uint32_t word_ = 0;       // the table word being assembled (little endian)
    std::uint64_t body_left_ = 0;  // segment bytes still to come
};

}  // namespace flypg::rpc::detail
