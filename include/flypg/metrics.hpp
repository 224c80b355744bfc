// Counters, gauges and histograms, rendered in the Prometheus text exposition format 0.0.4.
//
// A registry owns every metric; the library's parts (and the application) ask it for a metric by
// name and labels once, keep the reference, and update it on their hot path:
//
//     flypg::metrics::registry metrics;
//     auto& waits = metrics.histogram("flypg_replication_wait_seconds", "Time spent waiting for the replica",
//                                     flypg::metrics::latency_buckets(), {{"database", "main"}});
//     auto& timeouts = metrics.counter("flypg_replication_timeouts_total", "Waits that timed out",
//                                      {{"database", "main"}});
//     waits.observe(std::chrono::milliseconds(3));
//     timeouts.inc();
//     std::string body = metrics.render_prometheus();  // serve with prometheus_content_type
//
// Asking again with the same name and label values returns the same metric. A name is one family:
// its type, help text, label names (in order) and, for histograms, its buckets are fixed by the
// first request; a later request that differs is an error. References stay valid for the
// registry's lifetime.
//
// Threads: none of this is synchronized. Use a registry and its metrics from one thread, the
// thread that runs the io_context, as the rest of flypg does (post to it from elsewhere).
//
// Invalid input (a malformed metric or label name, a reserved label, a negative counter increment,
// a NaN, unsorted buckets, a family mismatch) throws flypg::error with errc::invalid_argument naming
// the metric.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flypg::metrics {

/// Label names and values, in order: {{"database", "main"}, {"region", "ams"}}.
using labels = std::vector<std::pair<std::string, std::string>>;

/// The Content-Type of render_prometheus()'s output.
inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

/// A value that only goes up (restarts at zero with the process).
class counter {
  public:
    /// Adds `amount` (default 1). @throws flypg::error for a negative or NaN amount.
    void inc(double amount = 1);
    double value() const noexcept { return value_; }

  private:
    double value_ = 0;
};

/// A value that goes up and down.
class gauge {
  public:
    void set(double value) noexcept { value_ = value; }
    void inc(double amount = 1) noexcept { value_ += amount; }
    void dec(double amount = 1) noexcept { value_ -= amount; }
    double value() const noexcept { return value_; }

  private:
    double value_ = 0;
};

/// Observations counted in fixed buckets, with their sum and count. A value lands in every bucket
/// whose upper bound is >= the value (cumulative, as Prometheus counts them), and always in +Inf.
class histogram {
  public:
    /// `upper_bounds`: finite, strictly increasing; +Inf is implicit. May be empty.
    /// @throws flypg::error (errc::invalid_argument) otherwise.
    explicit histogram(std::vector<double> upper_bounds);

    /// Records one value. @throws flypg::error for NaN.
    void observe(double value);
    /// Records a duration in seconds.
    template <class Rep, class Period>
    void observe(std::chrono::duration<Rep, Period> elapsed) {
        observe(std::chrono::duration<double>(elapsed).count());
    }

    const std::vector<double>& upper_bounds() const noexcept { return upper_bounds_; }
    /// Cumulative counts, one per upper bound, then +Inf (== count()).
    std::vector<std::uint64_t> cumulative_counts() const;
    std::uint64_t count() const noexcept { return count_; }
    double sum() const noexcept { return sum_; }

  private:
    std::vector<double> upper_bounds_;
    std::vector<std::uint64_t> counts_;  // per bucket, not cumulative; the last one is +Inf
    std::uint64_t count_ = 0;
    double sum_ = 0;
};

/// Buckets for latencies in seconds, from 0.5 ms (a loopback RPC) to 10 s (beyond the default
/// timeouts): 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10.
std::vector<double> latency_buckets();

/// Owns metrics by name and labels, and renders them. Move-only.
class registry {
  public:
    registry();
    registry(registry&&) noexcept;
    registry& operator=(registry&&) noexcept;
    ~registry();

    /// The counter `name` with `label_values`, created at zero on first use. Prometheus convention:
    /// counter names end in "_total".
    metrics::counter& counter(std::string_view name, std::string_view help, const labels& label_values = {});
    /// The gauge `name` with `label_values`, created at zero on first use.
    metrics::gauge& gauge(std::string_view name, std::string_view help, const labels& label_values = {});
    /// The histogram `name` with `label_values`, created empty on first use. Every histogram of one
    /// name has the same `upper_bounds`. The label name "le" is reserved for the buckets.
    metrics::histogram& histogram(std::string_view name,
                                  std::string_view help,
                                  std::vector<double> upper_bounds,
                                  const labels& label_values = {});

    /// Every metric in the text exposition format 0.0.4: families sorted by name, each with its
    /// # HELP and # TYPE lines, then its series sorted by label values; histograms as
    /// name_bucket{...,le="..."} (cumulative, ending with le="+Inf"), name_sum and name_count.
    /// Label values and help text are escaped; values print in the shortest form that reads back
    /// exactly ("0.005", "3", "1e+21", "+Inf", "NaN").
    std::string render_prometheus() const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace flypg::metrics
