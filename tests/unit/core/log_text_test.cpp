// Peer text made safe for one log line.
#include <gtest/gtest.h>

#include <string>

#include "core/log_text.hpp"

namespace flypg::detail {
namespace {

TEST(LogSafe, ControlCharactersCannotStartALineOrDriveATerminal) {
    EXPECT_EQ(log_safe("evil\nFAKE-LOG-LINE\r\t"), "evil\\nFAKE-LOG-LINE\\r\\t");
    EXPECT_EQ(log_safe(std::string("a\x1b[2Jb\x7f\0c", 9)), "a\\x1b[2Jb\\x7f\\x00c");
    EXPECT_EQ(log_safe("back\\slash"), "back\\\\slash");
}

TEST(LogSafe, C1ControlsAndBytesThatAreNotUtf8AreEscaped) {
    EXPECT_EQ(log_safe("a\xc2\x9b"
                       "31mb"),
              "a\\u009b31mb");  // CSI
    EXPECT_EQ(log_safe("a\x9b\xff\xc3"), "a\\x9b\\xff\\xc3");
    EXPECT_EQ(log_safe("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
    EXPECT_EQ(log_safe("\xe2\x82\xac \xf0\x9f\x98\x80"), "\xe2\x82\xac \xf0\x9f\x98\x80");
}

TEST(LogSafe, PrintableAndUtf8TextIsKept) {
    EXPECT_EQ(log_safe("node ab12 (region syd) ü"), "node ab12 (region syd) ü");
}

TEST(LogSafe, LongTextIsCutAndSaysSo) {
    EXPECT_EQ(log_safe(std::string(10, 'x'), 4), "xxxx... (6 more bytes)");
    EXPECT_EQ(log_safe(std::string(4 << 20, 'x')).size(),
              4096u + std::string("... (4190208 more bytes)").size());
}

}  // namespace
}  // namespace flypg::detail
