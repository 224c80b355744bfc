// The default log sink of nodes and repos, and FLYPG_LOG_LEVEL.
#include <gtest/gtest.h>

#include <cstdlib>

#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"

namespace {

using flypg::rpc::log_level;

class LogSink : public ::testing::Test {
  protected:
    void TearDown() override { ::unsetenv("FLYPG_LOG_LEVEL"); }
    // What the sink writes for one line at each level.
    static std::string lines_written() {
        flypg::rpc::log_sink sink = flypg::rpc::stderr_log_sink("flypg test");
        ::testing::internal::CaptureStderr();
        sink(log_level::debug, "d");
        sink(log_level::info, "i");
        sink(log_level::warning, "w");
        sink(log_level::error, "e");
        return ::testing::internal::GetCapturedStderr();
    }
};

TEST_F(LogSink, WarningsAndErrorsByDefault) {
    ::unsetenv("FLYPG_LOG_LEVEL");
    EXPECT_EQ(lines_written(), "flypg test warning: w\nflypg test error: e\n");
}

TEST_F(LogSink, FlypgLogLevelTurnsOnMore) {
    ::setenv("FLYPG_LOG_LEVEL", "info", 1);
    EXPECT_EQ(lines_written(), "flypg test info: i\nflypg test warning: w\nflypg test error: e\n");
    ::setenv("FLYPG_LOG_LEVEL", "error", 1);
    EXPECT_EQ(lines_written(), "flypg test error: e\n");
}

TEST_F(LogSink, AnUnknownLevelIsRefusedByName) {
    ::setenv("FLYPG_LOG_LEVEL", "verbose\n", 1);
    try {
        (void)flypg::rpc::stderr_log_sink("x");
        ADD_FAILURE() << "accepted FLYPG_LOG_LEVEL=verbose";
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(
                      "FLYPG_LOG_LEVEL is \"verbose\\n\"; use debug, info, warning or error"),
                  std::string::npos)
            << e.what();
    }
}

}  // namespace
