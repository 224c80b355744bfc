// What a primary-region node reads back under a request id (a forwarded write's results, a named
// transaction's values) comes from a table anyone with the application's role can write: decoding
// must refuse what encode_*() did not make, and re-encode exactly what it accepts (one encoding
// per value: a misread would hand a caller a result its write never had).
#include <cstdint>
#include <cstdlib>
#include <span>

#include "flypg/error.hpp"
#include "repo/write_requests.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> bytes(data, size);
    const std::vector<std::uint8_t> input(bytes.begin(), bytes.end());
    try {
        if (flypg::detail::encode_values(flypg::detail::decode_values(bytes)) != input) std::abort();
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::protocol_error) std::abort();
    }
    try {
        if (flypg::detail::encode_results(flypg::detail::decode_results(bytes)) != input) std::abort();
    } catch (const flypg::error& e) {
        if (e.code() != flypg::errc::protocol_error) std::abort();
    }
    return 0;
}
