#include "flypg/replication/tracker.hpp"

#include <asio/io_context.hpp>
#include <asio/strand.hpp>

#include <cstdio>
#include <string>

#include "flypg/error.hpp"
#include "replication/tracker_core.hpp"

namespace flypg::replication {
namespace {

// "5000 ms", "1.25 ms", "250 us": whole numbers where they are whole, never an exponent.
std::string format_duration(std::chrono::nanoseconds d) {
    const bool in_ms = d >= std::chrono::milliseconds(1);
    const long long unit = in_ms ? 1'000'000 : 1'000;
    const char* suffix = in_ms ? " ms" : " us";
    const long long ns = d.count();
    if (ns % unit == 0) return std::to_string(ns / unit) + suffix;
    char text[48];
    std::snprintf(text, sizeof text, "%.3f", static_cast<double>(ns) / static_cast<double>(unit));
    std::string out = text;
    while (out.back() == '0') out.pop_back();
    if (out.back() == '.') out.pop_back();
    return out + suffix;
}

std::string timeout_message(lsn target,
                            std::optional<lsn> replay_position,
                            std::chrono::nanoseconds timeout) {
    std::string message = "LSN " + target.to_string() + " committed but not replayed by the replica within " +
                          format_duration(timeout) + " (last replay position ";
    message += replay_position ? replay_position->to_string() : std::string("unknown");
    message += ")";
    return message;
}

diagnostics library_diagnostics(std::string message) {
    diagnostics diag;
    diag.library_message = std::move(message);
    return diag;
}

}  // namespace

replication_timeout_error::replication_timeout_error(lsn target,
                                                     std::optional<lsn> replay_position,
                                                     std::chrono::nanoseconds timeout)
    : flypg::error(errc::committed_not_replicated,
                   library_diagnostics(timeout_message(target, replay_position, timeout))),
      target_(target),
      replay_position_(replay_position),
      timeout_(timeout) {}

namespace detail {

bool running_in_this_thread(const asio::any_io_executor& executor) noexcept {
    if (const auto* io = executor.target<asio::io_context::executor_type>())
        return io->running_in_this_thread();
    using io_strand = asio::strand<asio::io_context::executor_type>;
    if (const auto* strand = executor.target<io_strand>()) return strand->running_in_this_thread();
    using any_strand = asio::strand<asio::any_io_executor>;
    if (const auto* strand = executor.target<any_strand>()) return strand->running_in_this_thread();
    return false;
}

void validate(const tracker_options& options) {
    auto fail = [](const char* what) {
        throw_error(errc::invalid_argument, std::string("tracker_options: ") + what);
    };
    if (options.poll_floor <= std::chrono::microseconds::zero()) fail("poll_floor must be positive");
    if (options.poll_ceiling < options.poll_floor) fail("poll_ceiling must not be below poll_floor");
    if (!(options.backoff_factor >= 1.0)) fail("backoff_factor must be at least 1");
    if (options.replication_timeout < std::chrono::milliseconds::zero()) {
        fail("replication_timeout must not be negative");
    }
    if (options.query_timeout <= std::chrono::milliseconds::zero()) fail("query_timeout must be positive");
    if (options.reconnect_backoff_min <= std::chrono::milliseconds::zero()) {
        fail("reconnect_backoff_min must be positive");
    }
    if (options.reconnect_backoff_max < options.reconnect_backoff_min) {
        fail("reconnect_backoff_max must not be below reconnect_backoff_min");
    }
    if (options.not_replicating_recheck <= std::chrono::milliseconds::zero()) {
        fail("not_replicating_recheck must be positive");
    }
    if (options.long_poll_step <= std::chrono::microseconds::zero()) fail("long_poll_step must be positive");
    if (options.long_poll_max_wait < std::chrono::milliseconds::zero()) {
        fail("long_poll_max_wait must not be negative");
    }
}

std::exception_ptr make_cancelled_error(lsn target) {
    return std::make_exception_ptr(flypg::error(
        errc::cancelled, library_diagnostics("wait for LSN " + target.to_string() + " cancelled")));
}

std::exception_ptr make_stopped_error(lsn target, bool destroyed) {
    return std::make_exception_ptr(
        flypg::error(errc::cancelled,
                     library_diagnostics("wait for LSN " + target.to_string() +
                                         (destroyed ? " abandoned: the tracker was destroyed"
                                                    : " abandoned: the tracker's run() is not running"))));
}

std::exception_ptr make_timeout_error(lsn target,
                                      std::optional<lsn> replay_position,
                                      std::chrono::nanoseconds timeout) {
    return std::make_exception_ptr(replication_timeout_error(target, replay_position, timeout));
}

void throw_query_timeout(std::chrono::nanoseconds limit) {
    throw_error(errc::timeout, "the replay source did not answer within " + format_duration(limit));
}

void throw_already_running() {
    throw_error(errc::invalid_argument, "tracker::run() is already running");
}

}  // namespace detail

struct tracker::impl final : detail::tracker_core<std::chrono::steady_clock> {
    using tracker_core::tracker_core;
};

tracker::tracker(executor_type executor, std::unique_ptr<replay_source> source, tracker_options options)
    : impl_(std::make_shared<impl>(std::move(executor), std::move(source), options)) {}

tracker::tracker(tracker&&) noexcept = default;

tracker& tracker::operator=(tracker&& other) noexcept {
    if (this != &other) {
        if (impl_) impl_->shutdown();
        impl_ = std::move(other.impl_);
    }
    return *this;
}

tracker::~tracker() {
    if (impl_) impl_->shutdown();
}

tracker::executor_type tracker::get_executor() const noexcept {
    return impl_->get_executor();
}

const tracker_options& tracker::options() const noexcept {
    return impl_->options();
}

asio::awaitable<void> tracker::run() {
    // Holds the core, not `this`: the tracker may be moved while run() is suspended.
    std::shared_ptr<impl> core = impl_;
    co_await core->run();
}

tracker_stats tracker::stats() const {
    return impl_->stats();
}

std::shared_ptr<detail::waiter_registry> tracker::registry() const noexcept {
    return impl_;
}

}  // namespace flypg::replication
