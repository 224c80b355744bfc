#include "flypg/replication/replay_source.hpp"

namespace flypg::replication {

asio::awaitable<replay_status> replay_source::wait_past(lsn /*target*/,
                                                        std::chrono::microseconds /*max_wait*/,
                                                        std::chrono::microseconds /*step*/) {
    co_return co_await read();
}

}  // namespace flypg::replication
