// Query results with typed access by column index or name.
//
//     flypg::pg::result r = co_await conn.query("SELECT id, name, note FROM t");
//     for (flypg::pg::row row : r) {
//         std::int64_t id = row.get<std::int64_t>(0);
//         std::string name = row.get<std::string>("name");
//         std::optional<std::string> note = row.get<std::optional<std::string>>("note");  // NULL-safe
//     }
//
// Reading a NULL into a non-optional type is errc::null_value; reading a column as a type it cannot
// convert to is errc::type_mismatch; a value that does not fit is errc::out_of_range. Every such
// error names the column. Integers widen (int2 -> int64) and narrow with a range check; doubles
// read float4, float8, numeric and integer columns; std::string reads any column's text form;
// pg::bytes reads bytea.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "flypg/error.hpp"
#include "flypg/pg/param.hpp"

namespace flypg::pg {

namespace detail {
struct result_data;
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
}  // namespace detail

class result;

/// One row of a result; cheap to copy, valid while any copy of its result lives.
class row {
  public:
    /// Number of columns.
    std::size_t size() const noexcept;
    /// True when the value at `column` is NULL. Throws errc::column_not_found for a bad index.
    bool is_null(std::size_t column) const;
    bool is_null(std::string_view column) const { return is_null(index_of(column)); }
    /// The value's text form as the server sent it ("" for NULL).
    std::string_view text(std::size_t column) const;

    /// The value at `column` as T: bool, std::int16_t, std::int32_t, std::int64_t, double,
    /// std::string, pg::bytes, or std::optional of one of them (empty for NULL).
    template <class T>
    T get(std::size_t column) const {
        if constexpr (detail::is_optional<T>::value) {
            if (is_null(column)) return std::nullopt;
            return get<typename T::value_type>(column);
        } else {
            T value{};
            decode(column, value);
            return value;
        }
    }
    template <class T>
    T get(std::string_view column) const {
        return get<T>(index_of(column));
    }

    /// Index of the column named `name`; throws errc::column_not_found naming it.
    std::size_t index_of(std::string_view name) const;

  private:
    friend class result;
    row(const detail::result_data* data, std::size_t index) noexcept : data_(data), index_(index) {}

    void decode(std::size_t column, bool& out) const;
    void decode(std::size_t column, std::int16_t& out) const;
    void decode(std::size_t column, std::int32_t& out) const;
    void decode(std::size_t column, std::int64_t& out) const;
    void decode(std::size_t column, double& out) const;
    void decode(std::size_t column, std::string& out) const;
    void decode(std::size_t column, bytes& out) const;

    const detail::result_data* data_;
    std::size_t index_;
};

/// The outcome of one statement: rows (possibly none), the command tag and affected-row count,
/// or, inside a pipeline, the statement's error. `query()` throws instead of returning an error
/// result; `pipeline()` returns one result per statement, failed ones included.
class result {
  public:
    /// An empty result with no rows and no columns.
    result();
    ~result();
    result(const result&);
    result(result&&) noexcept;
    result& operator=(const result&);
    result& operator=(result&&) noexcept;

    /// Number of rows.
    std::size_t size() const noexcept;
    bool empty() const noexcept { return size() == 0; }
    /// Number of columns.
    std::size_t columns() const noexcept;
    /// Name of column `column`; throws errc::column_not_found for a bad index.
    std::string_view column_name(std::size_t column) const;
    /// PostgreSQL type OID of column `column` (23 for int4, 25 for text, ...).
    std::uint32_t column_type(std::size_t column) const;
    /// Index of the column named `name`, if there is one.
    std::optional<std::size_t> find_column(std::string_view name) const noexcept;
    /// Rows affected by INSERT/UPDATE/DELETE/SELECT/..., 0 when the command reports none.
    std::int64_t affected_rows() const noexcept;
    /// The command tag, for example "INSERT 0 1".
    std::string_view command_tag() const noexcept;

    /// The statement's error: empty on success; a SQLSTATE code or errc::pipeline_aborted.
    std::error_code error() const noexcept;
    /// Server text for a failed statement.
    const diagnostics& diag() const noexcept;
    /// Throws flypg::error when the statement failed.
    void throw_if_error() const;

    /// Row `index`; unchecked.
    row operator[](std::size_t index) const noexcept { return row(data_.get(), index); }
    /// Row `index`; throws errc::out_of_range.
    row at(std::size_t index) const;

    class iterator {
      public:
        using iterator_category = std::random_access_iterator_tag;
        using value_type = pg::row;
        using difference_type = std::ptrdiff_t;
        using reference = pg::row;
        iterator() = default;
        row operator*() const noexcept { return row(data_, index_); }
        iterator& operator++() noexcept { return ++index_, *this; }
        iterator operator++(int) noexcept { return {data_, index_++}; }
        friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.index_ == b.index_; }

      private:
        friend class result;
        iterator(const detail::result_data* data, std::size_t index) : data_(data), index_(index) {}
        const detail::result_data* data_ = nullptr;
        std::size_t index_ = 0;
    };
    iterator begin() const noexcept { return {data_.get(), 0}; }
    iterator end() const noexcept { return {data_.get(), size()}; }

    /// Internal: results are made by the library from libpq or RPC data.
    explicit result(std::shared_ptr<const detail::result_data> data) noexcept;
    const detail::result_data& data() const noexcept { return *data_; }

  private:
    std::shared_ptr<const detail::result_data> data_;
};

}  // namespace flypg::pg
