// The frame guard reads the bytes of peers that have not authenticated. Whatever they send, and
// however the network cuts it, it decides the same, and a refusal is final.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "rpc/frame_guard.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    // The first byte chooses the chunk sizes the stream arrives in; the rest is the stream.
    const std::size_t chunk = std::size_t{data[0]} % 13 + 1;
    const std::span<const std::uint8_t> stream(data + 1, size - 1);

    flypg::rpc::detail::frame_guard whole(8192);
    const bool whole_ok = whole.feed(stream);

    flypg::rpc::detail::frame_guard pieces(8192);
    bool pieces_ok = true;
    bool refused_before = false;
    for (std::size_t at = 0; at < stream.size(); at += chunk) {
        pieces_ok = pieces.feed(stream.subspan(at, std::min(chunk, stream.size() - at)));
        if (refused_before && pieces_ok) std::abort();  // a refusal is final
        refused_before = !pieces_ok;
    }
    if (whole_ok != pieces_ok || whole.refused() != pieces.refused() || whole.why() != pieces.why())
        std::abort();
    if (whole.refused() == whole_ok) std::abort();
    return 0;
}
