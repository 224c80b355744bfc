#include "rpc/context.hpp"

#include <cstdio>

#include "flypg/rpc/region.hpp"
#include "rpc/codec.hpp"

namespace flypg::rpc::detail {

identity decode(wire::NodeIdentity::Reader in) {
    return identity{to_string(in.getNodeId()),
                    to_string(in.getRegion()),
                    to_string(in.getAppVersion()),
                    in.getProtocolVersion()};
}

std::string node_context::my_region() const {
    return region_override ? *region_override : rpc::my_region();
}

std::string node_context::primary_region() const {
    return primary_override ? *primary_override : rpc::primary_region();
}

identity node_context::self() const {
    return identity{node_id, my_region(), app_version, protocol_version};
}

void node_context::fill(wire::NodeIdentity::Builder out) const {
    out.setNodeId(node_id);
    out.setRegion(my_region());
    out.setAppVersion(app_version);
    out.setProtocolVersion(protocol_version);
}

capnp::ReaderOptions node_context::reader_options() const {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = max_message_bytes / 8 + 1024;
    return options;
}

void node_context::log(log_level level, const std::string& message) const {
    if (sink) {
        sink(level, message);
        return;
    }
    if (level < log_level::warning) return;
    std::fprintf(stderr,
                 "flypg rpc [%s] %s: %s\n",
                 node_id.c_str(),
                 level == log_level::warning ? "warning" : "error",
                 message.c_str());
}

}  // namespace flypg::rpc::detail
