#include "rpc/frame_guard.hpp"

namespace flypg::rpc::detail {

bool frame_guard::feed(std::span<const std::uint8_t> bytes) noexcept {
    if (lifted_) return true;
    if (refused()) return false;
    std::size_t i = 0;
    while (i < bytes.size()) {
        if (body_left_ > 0) {
            const std::size_t skip =
                body_left_ < bytes.size() - i ? static_cast<std::size_t>(body_left_) : bytes.size() - i;
            body_left_ -= skip;
            i += skip;
            continue;
        }
        const std::size_t at = table_read_++;
        word_ |= static_cast<std::uint32_t>(bytes[i++]) << (8 * (at % 4));
        if (at % 4 == 3) {
            end_of_word(word_);
            word_ = 0;
            if (refused()) return false;
        }
        if (table_size_ != 0 && table_read_ == table_size_) {
            // The whole table is here: the message's size is known before any of it is stored.
            const std::uint64_t size = table_size_ + words_ * 8;
            if (size > max_bytes_) {
                refuse("a message of " + std::to_string(size) + " bytes (at most " +
                       std::to_string(max_bytes_) + " before the handshake)");
                return false;
            }
            if (++messages_ > max_messages_) {
                refuse("more than " + std::to_string(max_messages_) + " messages before the handshake ended");
                return false;
            }
            body_left_ = words_ * 8;
            table_read_ = 0;
            table_size_ = 0;
            segments_ = 0;
            words_ = 0;
        }
    }
    return true;
}

void frame_guard::end_of_word(std::uint32_t word) noexcept {
    const std::size_t index = table_read_ / 4 - 1;
    if (index == 0) {
        segments_ = std::uint64_t{word} + 1;
        if (segments_ > max_segments_) {
            refuse("a message of " + std::to_string(segments_) + " segments (at most " +
                   std::to_string(max_segments_) + " before the handshake)");
            return;
        }
        // The count, a size per segment, and padding to a whole word.
        table_size_ = static_cast<std::size_t>((4 + 4 * segments_ + 7) / 8 * 8);
    } else if (index <= segments_) {
        words_ += word;
    }
}

void frame_guard::refuse(std::string why) noexcept {
    try {
        why_ = std::move(why);
    } catch (...) {
        why_ = "a message over the limit";
    }
    if (why_.empty()) why_ = "a message over the limit";
}

}  // namespace flypg::rpc::detail
