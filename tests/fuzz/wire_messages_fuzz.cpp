// Cap'n Proto messages as a peer could send them, read the way the node reads them: a hello's
// identity (checked before it reaches a log or the registry), statements and their parameters, a
// call's values, a write's results, a failure turned into flypg::error.
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstring>

#include "flypg/error.hpp"
#include "rpc/codec.hpp"
#include "rpc/context.hpp"

namespace {

namespace wire = flypg::rpc::wire;
using namespace flypg::rpc::detail;

void read_as(std::uint8_t kind, capnp::MessageReader& message) {
    switch (kind % 6) {
        case 0: {
            const identity who = decode(message.getRoot<wire::NodeIdentity>());
            (void)identity_problem(who);
            break;
        }
        case 1:
            (void)decode(message.getRoot<wire::Statement>());
            break;
        case 2: {
            auto call = message.getRoot<wire::CallResult>();
            if (call.isValues()) {
                (void)decode(call.getValues());
            } else {
                (void)error_from_failure(decode(call.getFailure()), "fuzz", flypg::origin::primary);
            }
            break;
        }
        case 3: {
            auto write = message.getRoot<wire::WriteResult>();
            if (write.isCommitted()) {
                for (auto r : write.getCommitted().getResults()) (void)decode(r);
            } else {
                (void)error_from_failure(decode(write.getFailure()), "fuzz", flypg::origin::primary);
            }
            break;
        }
        case 4:
            (void)decode(message.getRoot<wire::StatementResult>());
            break;
        default:
            (void)error_from_failure(
                decode(message.getRoot<wire::Failure>()), "fuzz", flypg::origin::primary);
            break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    // The first byte chooses what the message is read as; the rest is the message, without its
    // segment table (the frame guard and Cap'n Proto's own reader check that part).
    kj::Array<capnp::word> words = kj::heapArray<capnp::word>((size - 1) / sizeof(capnp::word));
    if (words.size() > 0) std::memcpy(words.begin(), data + 1, words.size() * sizeof(capnp::word));
    capnp::ReaderOptions limits;
    limits.traversalLimitInWords = 1 << 16;
    limits.nestingLimit = 16;
    try {
        const kj::ArrayPtr<const capnp::word> segment = words.asPtr();
        capnp::SegmentArrayMessageReader message(kj::arrayPtr(&segment, 1), limits);
        read_as(data[0], message);
    } catch (const kj::Exception&) {
    } catch (const flypg::error&) {
    }
    return 0;
}
