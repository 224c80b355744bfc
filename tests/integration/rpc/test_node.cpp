// A flypg RPC node in its own process, for the multi-process tests.
//
//   flypg_rpc_test_node --region R --primary P [--port N] [--peers host:port,...] [--secret S]
//                       [--protocol-version V] [--max-message-bytes N] [--label L]
//
// Registers the test procedures (test_procedures.hpp) plus "peers" (this node's registry as
// "region node_id" texts), serves writes from the in-memory executor, prints
// "LISTENING <port> <node_id>" on stdout once it listens, logs to stderr, and exits when stdin
// closes (so it never outlives the test) or on SIGTERM.

#include <asio.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "flypg/rpc/node.hpp"
#include "memory_executor.hpp"
#include "support/node_process.hpp"
#include "test_procedures.hpp"

namespace {

using namespace flypg::rpc;

std::vector<std::string> split(const std::string& list) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < list.size()) {
        auto comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        if (comma > start) out.push_back(list.substr(start, comma - start));
        start = comma + 1;
    }
    return out;
}

const char* level_name(log_level level) {
    switch (level) {
        case log_level::debug:
            return "debug";
        case log_level::info:
            return "info";
        case log_level::warning:
            return "warning";
        case log_level::error:
            return "error";
    }
    return "?";
}

}  // namespace

int main(int argc, char** argv) {
    node_options options;
    options.listen_address = "127.0.0.1";
    options.listen_port = 0;
    options.peers = std::vector<std::string>{};
    options.reconnect_min = std::chrono::milliseconds(20);
    options.reconnect_max = std::chrono::milliseconds(200);
    options.heartbeat_interval = std::chrono::milliseconds(200);
    options.resolve_interval = std::chrono::milliseconds(500);
    options.app_version = "test-node";
    std::string label = "child";
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        const std::string v = argv[i + 1];
        if (flag == "--region") {
            options.region = v;
        } else if (flag == "--primary") {
            options.primary_region = v;
        } else if (flag == "--port") {
            options.listen_port = static_cast<std::uint16_t>(std::stoi(v));
        } else if (flag == "--peers") {
            options.peers = split(v);
        } else if (flag == "--secret") {
            options.cluster_secret = v;
        } else if (flag == "--protocol-version") {
            options.advertised_protocol_version = static_cast<std::uint32_t>(std::stoul(v));
        } else if (flag == "--max-message-bytes") {
            options.max_message_bytes = std::stoul(v);
        } else if (flag == "--label") {
            label = v;
        } else {
            std::cerr << "unknown option " << flag << "\n";
            return 2;
        }
    }
    options.log = [label](log_level level, std::string_view text) {
        std::fprintf(stderr,
                     "[%s %s] %.*s\n",
                     label.c_str(),
                     level_name(level),
                     static_cast<int>(text.size()),
                     text.data());
        std::fflush(stderr);
    };
    auto state = std::make_shared<test::procedure_state>();
    test::add_test_procedures(options.procedures, state, label);
    node* self = nullptr;
    options.procedures.add("peers", [&self](test::values) -> asio::awaitable<test::values> {
        test::values out;
        for (const auto& p : self->peers()) out.emplace_back(p.region + " " + p.node_id);
        co_return out;
    });
    options.writes = std::make_shared<test::memory_executor>();

    asio::io_context io;
    try {
        auto n = node::create(io, std::move(options));
        self = &n;
        flypg::test::serve_until_stdin_closes(io, n);
    } catch (const flypg::error& e) {
        std::fprintf(stderr, "[%s error] %s\n", label.c_str(), e.what());
        return 1;
    }
    return 0;
}
