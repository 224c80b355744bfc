// The handshake's message bound: Cap'n Proto's stream framing followed over arbitrary chunks, a
// message's size known from its segment table alone. No sockets.
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "flypg.capnp.h"
#include "rpc/frame_guard.hpp"

namespace flypg::rpc::detail {
namespace {

// A real message as Cap'n Proto frames it on a stream.
std::vector<std::uint8_t> framed_statement(std::size_t sql_bytes) {
    capnp::MallocMessageBuilder message;
    message.initRoot<wire::Statement>().setSql(std::string(sql_bytes, 's'));
    auto words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    return {bytes.begin(), bytes.end()};
}

std::vector<std::uint8_t> table(std::vector<std::uint32_t> segment_words) {
    std::vector<std::uint32_t> entries{static_cast<std::uint32_t>(segment_words.size() - 1)};
    entries.insert(entries.end(), segment_words.begin(), segment_words.end());
    if (entries.size() % 2 == 1) entries.push_back(0);
    std::vector<std::uint8_t> out;
    for (std::uint32_t e : entries)
        for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(e >> (8 * i)));
    return out;
}

TEST(FrameGuard, MessagesWithinTheLimitPassWhateverTheChunks) {
    auto stream = framed_statement(100);
    const auto second = framed_statement(3000);
    stream.insert(stream.end(), second.begin(), second.end());
    for (std::size_t chunk = 1; chunk <= 17; ++chunk) {
        frame_guard guard(8192);
        for (std::size_t at = 0; at < stream.size(); at += chunk) {
            const std::size_t n = std::min(chunk, stream.size() - at);
            ASSERT_TRUE(guard.feed({stream.data() + at, n})) << "chunk " << chunk << ": " << guard.why();
        }
        EXPECT_FALSE(guard.refused());
    }
}

TEST(FrameGuard, AnOversizedMessageIsRefusedFromItsTableAlone) {
    frame_guard guard(8192);
    ASSERT_TRUE(guard.feed(framed_statement(10)));
    const auto big = table({2 * 1024 * 1024});  // 16 MiB announced, nothing of it sent
    EXPECT_FALSE(guard.feed(big));
    EXPECT_TRUE(guard.refused());
    EXPECT_EQ(guard.why(), "a message of 16777224 bytes (at most 8192 before the handshake)");
    const std::vector<std::uint8_t> more(16, 0);
    EXPECT_FALSE(guard.feed(more)) << "a refusal is final";
}

TEST(FrameGuard, TheLimitCountsEverySegmentAndTheTable) {
    frame_guard fits(8192);
    EXPECT_TRUE(fits.feed(table({500, 511})));  // 8 + 8 * 1011 = 8096 bytes
    frame_guard over(8192);
    EXPECT_FALSE(over.feed(table({500, 500, 24})));  // 16 + 8 * 1024 bytes
}

TEST(FrameGuard, TooManySegmentsAreRefused) {
    frame_guard guard(1 << 20);
    std::vector<std::uint8_t> count{0xff, 0xff, 0xff, 0xff};  // 2^32 segments
    EXPECT_FALSE(guard.feed(count));
    EXPECT_EQ(guard.why(), "a message of 4294967296 segments (at most 16 before the handshake)");
}

TEST(FrameGuard, OnlyAHandshakesWorthOfMessagesIsAllowed) {
    frame_guard guard(8192, 16, 3);
    const auto small = framed_statement(10);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(guard.feed(small)) << i;
    EXPECT_FALSE(guard.feed(small));
    EXPECT_EQ(guard.why(), "more than 3 messages before the handshake ended");
}

TEST(FrameGuard, LiftedGuardLetsEverythingThrough) {
    frame_guard guard(8192);
    guard.lift();
    EXPECT_TRUE(guard.feed(table({2 * 1024 * 1024})));
    EXPECT_FALSE(guard.refused());
}

}  // namespace
}  // namespace flypg::rpc::detail
