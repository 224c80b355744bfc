// Metrics registry and the Prometheus text format (see flypg/metrics.hpp).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/metrics.hpp"

namespace flypg::metrics {
namespace {

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    std::string message;
    (message.append(std::string_view(parts)), ...);
    throw_error(errc::invalid_argument, std::move(message));
}

enum class metric_type { counter, gauge, histogram };

std::string_view type_name(metric_type type) {
    switch (type) {
        case metric_type::counter:
            return "counter";
        case metric_type::gauge:
            return "gauge";
        case metric_type::histogram:
            return "histogram";
    }
    return "untyped";
}

bool is_name_start(char c, bool allow_colon) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
}

bool is_valid_name(std::string_view name, bool allow_colon) {
    if (name.empty() || !is_name_start(name.front(), allow_colon)) return false;
    return std::all_of(name.begin(), name.end(), [allow_colon](char c) {
        return is_name_start(c, allow_colon) || (c >= '0' && c <= '9');
    });
}

// Shortest text that reads back as the same double: plain decimals for 1e-4 <= |value| < 1e15 (what
// people read: "0.0005", "1234567"), exponent form outside ("1e-05", "1e+21"); Prometheus spells the
// specials +Inf, -Inf and NaN.
std::string format_value(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
    const double magnitude = std::fabs(value);
    const bool plain = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e15);
    char buffer[64];
    const auto [end, ec] =
        plain ? std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed)
              : std::to_chars(buffer, buffer + sizeof buffer, value);
    if (ec != std::errc()) return "NaN";  // cannot happen: 64 bytes hold every such form
    return std::string(buffer, end);
}

void append_escaped(std::string& out, std::string_view text, bool escape_quotes) {
    for (char c : text) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else if (c == '"' && escape_quotes)
            out += "\\\"";
        else
            out += c;
    }
}

using series_value =
    std::variant<std::unique_ptr<counter>, std::unique_ptr<gauge>, std::unique_ptr<histogram>>;

struct family {
    metric_type type;
    std::string help;
    std::vector<std::string> label_names;
    std::vector<double> upper_bounds;                         // histograms only
    std::map<std::vector<std::string>, series_value> series;  // by label values
};

// The sample names a family writes: a histogram also writes _bucket, _sum and _count.
std::vector<std::string> sample_names(const std::string& name, metric_type type) {
    if (type != metric_type::histogram) return {name};
    return {name, name + "_bucket", name + "_sum", name + "_count"};
}

// {a="x",b="y"} with an optional extra label (le) at the end; nothing when there are no labels.
void append_labels(std::string& out,
                   const std::vector<std::string>& names,
                   const std::vector<std::string>& values,
                   std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
    if (names.empty() && extra_name.empty()) return;
    out += '{';
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) out += ',';
        out += names[i];
        out += "=\"";
        append_escaped(out, values[i], true);
        out += '"';
    }
    if (!extra_name.empty()) {
        if (!names.empty()) out += ',';
        out += extra_name;
        out += "=\"";
        append_escaped(out, extra_value, true);
        out += '"';
    }
    out += '}';
}

void append_sample(std::string& out,
                   std::string_view name,
                   const std::vector<std::string>& label_names,
                   const std::vector<std::string>& label_values,
                   std::string_view value,
                   std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
    out += name;
    append_labels(out, label_names, label_values, extra_name, extra_value);
    out += ' ';
    out += value;
    out += '\n';
}

}  // namespace

void counter::inc(double amount) {
    if (std::isnan(amount) || amount < 0)
        fail("counter increment ", format_value(amount), " is negative or NaN (counters only go up)");
    value_ += amount;
}

histogram::histogram(std::vector<double> upper_bounds) : upper_bounds_(std::move(upper_bounds)) {
    for (std::size_t i = 0; i < upper_bounds_.size(); ++i) {
        if (!std::isfinite(upper_bounds_[i]))
            fail("histogram bucket ", format_value(upper_bounds_[i]), " is not finite (+Inf is implicit)");
        if (i > 0 && !(upper_bounds_[i - 1] < upper_bounds_[i]))
            fail("histogram buckets are not strictly increasing at ",
                 format_value(upper_bounds_[i - 1]),
                 ", ",
                 format_value(upper_bounds_[i]));
    }
    counts_.assign(upper_bounds_.size() + 1, 0);
}

void histogram::observe(double value) {
    if (std::isnan(value)) fail("histogram observation is NaN");
    // The first bucket whose upper bound is >= value; past the end means +Inf only.
    const auto bucket = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value);
    ++counts_[static_cast<std::size_t>(bucket - upper_bounds_.begin())];
    ++count_;
    sum_ += value;
}

std::vector<std::uint64_t> histogram::cumulative_counts() const {
    std::vector<std::uint64_t> cumulative(counts_.size());
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) cumulative[i] = running += counts_[i];
    return cumulative;
}

std::vector<double> latency_buckets() {
    return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

struct registry::impl {
    std::map<std::string, family, std::less<>> families;

    // The family `name`, created on first use; checks that a later use agrees with the first.
    family& find_family(std::string_view name,
                        std::string_view help,
                        metric_type type,
                        const labels& label_values,
                        const std::vector<double>* upper_bounds) {
        if (!is_valid_name(name, true))
            fail("metric name \"",
                 name,
                 "\" is not valid (letters, digits, '_' and ':', not starting with a digit)");
        std::vector<std::string> names;
        names.reserve(label_values.size());
        for (const auto& [label, value] : label_values) {
            if (!is_valid_name(label, false))
                fail("metric \"",
                     name,
                     "\": label name \"",
                     label,
                     "\" is not valid (letters, digits and '_')");
            if (label.starts_with("__"))
                fail("metric \"", name, "\": label name \"", label, "\" is reserved");
            if (type == metric_type::histogram && label == "le")
                fail("metric \"", name, "\": label name \"le\" is reserved for histogram buckets");
            if (std::find(names.begin(), names.end(), label) != names.end())
                fail("metric \"", name, "\": label \"", label, "\" appears twice");
            names.push_back(label);
        }

        if (const auto found = families.find(name); found != families.end()) {
            family& existing = found->second;
            if (existing.type != type)
                fail("metric \"", name, "\" is a ", type_name(existing.type), ", not a ", type_name(type));
            if (existing.help != help) fail("metric \"", name, "\" was registered with another help text");
            if (existing.label_names != names)
                fail("metric \"",
                     name,
                     "\" has labels (",
                     label_list(existing.label_names),
                     "), not (",
                     label_list(names),
                     ")");
            if (upper_bounds != nullptr && existing.upper_bounds != *upper_bounds)
                fail("metric \"", name, "\" was registered with other histogram buckets");
            return existing;
        }

        const std::string new_name(name);
        for (const std::string& sample : sample_names(new_name, type))
            for (const auto& [other_name, other] : families)
                for (const std::string& other_sample : sample_names(other_name, other.type))
                    if (sample == other_sample)
                        fail("metric \"",
                             name,
                             "\" would write samples named \"",
                             sample,
                             "\", as metric \"",
                             other_name,
                             "\" does");
        family& created = families[new_name];
        created.type = type;
        created.help = std::string(help);
        created.label_names = std::move(names);
        if (upper_bounds != nullptr) created.upper_bounds = *upper_bounds;
        return created;
    }

    static std::string label_list(const std::vector<std::string>& names) {
        std::string list;
        for (const std::string& label : names) {
            if (!list.empty()) list += ", ";
            list += label;
        }
        return list;
    }

    static std::vector<std::string> values_of(const labels& label_values) {
        std::vector<std::string> values;
        values.reserve(label_values.size());
        for (const auto& entry : label_values) values.push_back(entry.second);
        return values;
    }
};

registry::registry() : impl_(std::make_unique<impl>()) {}
registry::registry(registry&&) noexcept = default;
registry& registry::operator=(registry&&) noexcept = default;
registry::~registry() = default;

namespace {

// The metric in `slot`, made by `make` when the slot is new (a default variant holds no metric).
template <class T, class Make>
T& get_or_create(series_value& slot, Make&& make) {
    if (auto* existing = std::get_if<std::unique_ptr<T>>(&slot); existing != nullptr && *existing != nullptr)
        return **existing;
    slot = make();
    return *std::get<std::unique_ptr<T>>(slot);
}

}  // namespace

counter& registry::counter(std::string_view name, std::string_view help, const labels& label_values) {
    family& f = impl_->find_family(name, help, metric_type::counter, label_values, nullptr);
    return get_or_create<metrics::counter>(f.series[impl::values_of(label_values)],
                                           [] { return std::make_unique<metrics::counter>(); });
}

gauge& registry::gauge(std::string_view name, std::string_view help, const labels& label_values) {
    family& f = impl_->find_family(name, help, metric_type::gauge, label_values, nullptr);
    return get_or_create<metrics::gauge>(f.series[impl::values_of(label_values)],
                                         [] { return std::make_unique<metrics::gauge>(); });
}

histogram& registry::histogram(std::string_view name,
                               std::string_view help,
                               std::vector<double> upper_bounds,
                               const labels& label_values) {
    // Validates the buckets (and so throws) before a new family is recorded.
    auto fresh = std::make_unique<metrics::histogram>(std::move(upper_bounds));
    family& f = impl_->find_family(name, help, metric_type::histogram, label_values, &fresh->upper_bounds());
    return get_or_create<metrics::histogram>(f.series[impl::values_of(label_values)],
                                             [&fresh] { return std::move(fresh); });
}

std::string registry::render_prometheus() const {
    std::string out;
    for (const auto& [name, f] : impl_->families) {
        out += "# HELP ";
        out += name;
        out += ' ';
        append_escaped(out, f.help, false);
        out += "\n# TYPE ";
        out += name;
        out += ' ';
        out += type_name(f.type);
        out += '\n';
        for (const auto& [values, series] : f.series) {
            switch (f.type) {
                case metric_type::counter:
                    append_sample(out,
                                  name,
                                  f.label_names,
                                  values,
                                  format_value(std::get<std::unique_ptr<metrics::counter>>(series)->value()));
                    break;
                case metric_type::gauge:
                    append_sample(out,
                                  name,
                                  f.label_names,
                                  values,
                                  format_value(std::get<std::unique_ptr<metrics::gauge>>(series)->value()));
                    break;
                case metric_type::histogram: {
                    const metrics::histogram& h = *std::get<std::unique_ptr<metrics::histogram>>(series);
                    const std::vector<std::uint64_t> cumulative = h.cumulative_counts();
                    const std::string bucket_name = name + "_bucket";
                    for (std::size_t i = 0; i < cumulative.size(); ++i) {
                        const std::string le = i < h.upper_bounds().size() ? format_value(h.upper_bounds()[i])
                                                                           : std::string("+Inf");
                        append_sample(
                            out, bucket_name, f.label_names, values, std::to_string(cumulative[i]), "le", le);
                    }
                    append_sample(out, name + "_sum", f.label_names, values, format_value(h.sum()));
                    append_sample(out, name + "_count", f.label_names, values, std::to_string(h.count()));
                    break;
                }
            }
        }
    }
    return out;
}

}  // namespace flypg::metrics
