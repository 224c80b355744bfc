#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "flypg/error.hpp"
#include "flypg/metrics.hpp"

namespace {

namespace metrics = flypg::metrics;
using testing::HasSubstr;
using testing::Not;

template <class F>
std::string invalid_argument_message(F&& f) {
    try {
        f();
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), flypg::errc::invalid_argument);
        return e.diag().library_message;
    }
    ADD_FAILURE() << "no flypg::error was thrown";
    return {};
}

TEST(MetricsRegistry, EmptyRegistryRendersNothing) {
    metrics::registry registry;
    EXPECT_EQ(registry.render_prometheus(), "");
}

TEST(MetricsRegistry, RendersCountersAndGaugesWithLabels) {
    metrics::registry registry;
    registry.counter("flypg_rpc_calls_total", "RPC calls sent", {{"region", "fra"}}).inc();
    registry.counter("flypg_rpc_calls_total", "RPC calls sent", {{"region", "fra"}}).inc(2);
    registry.counter("flypg_rpc_calls_total", "RPC calls sent", {{"region", "ams"}}).inc(0.5);
    metrics::gauge& waiters = registry.gauge("flypg_waiters", "Coroutines waiting for the replica");
    waiters.inc(3);
    waiters.dec();
    EXPECT_EQ(registry.render_prometheus(),
              "# HELP flypg_rpc_calls_total RPC calls sent\n"
              "# TYPE flypg_rpc_calls_total counter\n"
              "flypg_rpc_calls_total{region=\"ams\"} 0.5\n"
              "flypg_rpc_calls_total{region=\"fra\"} 3\n"
              "# HELP flypg_waiters Coroutines waiting for the replica\n"
              "# TYPE flypg_waiters gauge\n"
              "flypg_waiters 2\n");
}

TEST(MetricsRegistry, RendersHistogramsWithCumulativeBucketsSumAndCount) {
    metrics::registry registry;
    metrics::histogram& h = registry.histogram("flypg_replication_wait_seconds",
                                               "Time spent waiting for the replica",
                                               {0.005, 0.01, 0.1},
                                               {{"database", "main"}, {"region", "ams"}});
    h.observe(0.001);
    h.observe(0.005);  // on a bound: counted in that bucket
    h.observe(std::chrono::milliseconds(50));
    h.observe(2.5);
    EXPECT_EQ(registry.render_prometheus(),
              "# HELP flypg_replication_wait_seconds Time spent waiting for the replica\n"
              "# TYPE flypg_replication_wait_seconds histogram\n"
              "flypg_replication_wait_seconds_bucket{database=\"main\",region=\"ams\",le=\"0.005\"} 2\n"
              "flypg_replication_wait_seconds_bucket{database=\"main\",region=\"ams\",le=\"0.01\"} 2\n"
              "flypg_replication_wait_seconds_bucket{database=\"main\",region=\"ams\",le=\"0.1\"} 3\n"
              "flypg_replication_wait_seconds_bucket{database=\"main\",region=\"ams\",le=\"+Inf\"} 4\n"
              "flypg_replication_wait_seconds_sum{database=\"main\",region=\"ams\"} 2.556\n"
              "flypg_replication_wait_seconds_count{database=\"main\",region=\"ams\"} 4\n");
}

TEST(MetricsRegistry, RendersUnlabelledAndEmptyHistograms) {
    metrics::registry registry;
    (void)registry.histogram("rpc_seconds", "RPC latency", {1, 2.5});
    EXPECT_EQ(registry.render_prometheus(),
              "# HELP rpc_seconds RPC latency\n"
              "# TYPE rpc_seconds histogram\n"
              "rpc_seconds_bucket{le=\"1\"} 0\n"
              "rpc_seconds_bucket{le=\"2.5\"} 0\n"
              "rpc_seconds_bucket{le=\"+Inf\"} 0\n"
              "rpc_seconds_sum 0\n"
              "rpc_seconds_count 0\n");
}

TEST(MetricsRegistry, SortsFamiliesByNameAndSeriesByLabelValues) {
    metrics::registry registry;
    (void)registry.gauge("b", "B", {{"x", "2"}});
    (void)registry.gauge("b", "B", {{"x", "1"}});
    (void)registry.gauge("a", "A");
    EXPECT_EQ(registry.render_prometheus(),
              "# HELP a A\n# TYPE a gauge\na 0\n"
              "# HELP b B\n# TYPE b gauge\nb{x=\"1\"} 0\nb{x=\"2\"} 0\n");
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
    metrics::registry registry;
    registry
        .counter("odd_total",
                 "Help with \\ backslash\nand newline, \"quotes\" kept",
                 {{"path", "C:\\dir \"q\"\nx"}})
        .inc();
    EXPECT_EQ(registry.render_prometheus(),
              "# HELP odd_total Help with \\\\ backslash\\nand newline, \"quotes\" kept\n"
              "# TYPE odd_total counter\n"
              "odd_total{path=\"C:\\\\dir \\\"q\\\"\\nx\"} 1\n");
}

TEST(MetricsRegistry, FormatsSpecialAndLargeValues) {
    metrics::registry registry;
    registry.gauge("g", "G", {{"k", "inf"}}).set(std::numeric_limits<double>::infinity());
    registry.gauge("g", "G", {{"k", "nan"}}).set(std::nan(""));
    registry.gauge("g", "G", {{"k", "neg"}}).set(-std::numeric_limits<double>::infinity());
    registry.gauge("g", "G", {{"k", "big"}}).set(1e21);
    registry.gauge("g", "G", {{"k", "sum"}}).set(0.1 + 0.2);
    registry.gauge("g", "G", {{"k", "tiny"}}).set(0.00001);
    registry.gauge("g", "G", {{"k", "whole"}}).set(1234567);
    registry.gauge("g", "G", {{"k", "zero"}}).set(-0.0);
    EXPECT_EQ(registry.render_prometheus(),
              "# HELP g G\n# TYPE g gauge\n"
              "g{k=\"big\"} 1e+21\n"
              "g{k=\"inf\"} +Inf\n"
              "g{k=\"nan\"} NaN\n"
              "g{k=\"neg\"} -Inf\n"
              "g{k=\"sum\"} 0.30000000000000004\n"
              "g{k=\"tiny\"} 1e-05\n"
              "g{k=\"whole\"} 1234567\n"
              "g{k=\"zero\"} -0\n");
}

TEST(MetricsRegistry, SameNameAndLabelsGiveTheSameMetric) {
    metrics::registry registry;
    metrics::counter& first = registry.counter("c_total", "C", {{"db", "main"}});
    metrics::counter& again = registry.counter("c_total", "C", {{"db", "main"}});
    metrics::counter& other = registry.counter("c_total", "C", {{"db", "other"}});
    EXPECT_EQ(&first, &again);
    EXPECT_NE(&first, &other);
    metrics::histogram& h1 = registry.histogram("h", "H", metrics::latency_buckets());
    metrics::histogram& h2 = registry.histogram("h", "H", metrics::latency_buckets());
    EXPECT_EQ(&h1, &h2);
}

TEST(MetricsRegistry, ReferencesSurviveMovingTheRegistry) {
    metrics::registry registry;
    metrics::counter& c = registry.counter("c_total", "C");
    metrics::registry moved = std::move(registry);
    c.inc(4);
    EXPECT_EQ(moved.render_prometheus(), "# HELP c_total C\n# TYPE c_total counter\nc_total 4\n");
}

TEST(MetricsRegistry, RejectsInvalidNames) {
    metrics::registry registry;
    EXPECT_THAT(invalid_argument_message([&] { (void)registry.counter("1abc", "x"); }),
                HasSubstr("metric name \"1abc\""));
    EXPECT_THAT(invalid_argument_message([&] { (void)registry.counter("a-b", "x"); }), HasSubstr("\"a-b\""));
    EXPECT_THAT(invalid_argument_message([&] { (void)registry.counter("", "x"); }), HasSubstr("metric name"));
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.counter("ok", "x", {{"bad:label", "v"}});
                }),
                HasSubstr("label name \"bad:label\""));
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.counter("ok", "x", {{"__name__", "v"}});
                }),
                HasSubstr("reserved"));
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.counter("ok", "x", {{"a", "1"}, {"a", "2"}});
                }),
                HasSubstr("label \"a\" appears twice"));
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.histogram("h", "x", {1}, {{"le", "1"}});
                }),
                HasSubstr("\"le\" is reserved"));
    // Colons are allowed in metric names (recording rules), not in label names.
    EXPECT_NO_THROW((void)registry.counter("job:requests:rate5m", "x"));
}

TEST(MetricsRegistry, RejectsFamilyMismatchesNamingTheMetric) {
    metrics::registry registry;
    (void)registry.counter("m", "help", {{"db", "main"}});
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.gauge("m", "help", {{"db", "main"}});
                }),
                HasSubstr("metric \"m\" is a counter, not a gauge"));
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.counter("m", "other help", {{"db", "main"}});
                }),
                HasSubstr("another help text"));
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.counter("m", "help", {{"region", "ams"}});
                }),
                HasSubstr("has labels (db), not (region)"));
    (void)registry.histogram("h", "help", {1, 2});
    EXPECT_THAT(invalid_argument_message([&] {
                    (void)registry.histogram("h", "help", {1, 3});
                }),
                HasSubstr("other histogram buckets"));
}

TEST(MetricsRegistry, RejectsSampleNameCollisions) {
    metrics::registry registry;
    (void)registry.histogram("latency", "L", {1});
    EXPECT_THAT(invalid_argument_message([&] { (void)registry.counter("latency_count", "C"); }),
                HasSubstr("\"latency_count\""));
    (void)registry.gauge("x_sum", "G");
    EXPECT_THAT(invalid_argument_message([&] { (void)registry.histogram("x", "H", {1}); }),
                HasSubstr("as metric \"x_sum\" does"));
    // Nothing was recorded for the rejected names.
    EXPECT_THAT(registry.render_prometheus(), Not(HasSubstr("# TYPE latency_count")));
    EXPECT_THAT(registry.render_prometheus(), Not(HasSubstr("# TYPE x histogram")));
}

TEST(Counter, OnlyGoesUp) {
    metrics::counter c;
    c.inc();
    c.inc(0);
    EXPECT_EQ(c.value(), 1);
    EXPECT_THAT(invalid_argument_message([&] { c.inc(-1); }), HasSubstr("counters only go up"));
    EXPECT_THAT(invalid_argument_message([&] { c.inc(std::nan("")); }), HasSubstr("NaN"));
    EXPECT_EQ(c.value(), 1);
}

TEST(Histogram, CountsCumulativelyAndRejectsBadBuckets) {
    metrics::histogram h({1, 2, 3});
    h.observe(-5);
    h.observe(1.5);
    h.observe(3);
    h.observe(100);
    EXPECT_EQ(h.cumulative_counts(), (std::vector<std::uint64_t>{1, 2, 3, 4}));
    EXPECT_EQ(h.count(), 4u);
    EXPECT_DOUBLE_EQ(h.sum(), 99.5);
    EXPECT_THAT(invalid_argument_message([&] { h.observe(std::nan("")); }), HasSubstr("NaN"));
    EXPECT_THAT(invalid_argument_message([] {
                    metrics::histogram bad({1, 1});
                }),
                HasSubstr("strictly increasing"));
    EXPECT_THAT(invalid_argument_message([] {
                    metrics::histogram bad({2, 1});
                }),
                HasSubstr("strictly increasing"));
    EXPECT_THAT(invalid_argument_message([] {
                    metrics::histogram bad({1, std::numeric_limits<double>::infinity()});
                }),
                HasSubstr("not finite"));
    metrics::histogram only_inf({});
    only_inf.observe(1);
    EXPECT_EQ(only_inf.cumulative_counts(), (std::vector<std::uint64_t>{1}));
}

TEST(Histogram, LatencyBucketsRenderAsWritten) {
    metrics::registry registry;
    registry.histogram("l", "L", metrics::latency_buckets()).observe(std::chrono::microseconds(700));
    const std::string text = registry.render_prometheus();
    EXPECT_THAT(text, HasSubstr("l_bucket{le=\"0.0005\"} 0\n"));
    EXPECT_THAT(text, HasSubstr("l_bucket{le=\"0.001\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("l_bucket{le=\"10\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("l_bucket{le=\"+Inf\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("l_sum 0.0007\n"));
}

}  // namespace
