// A flypg RPC node: the C++ counterpart of fly_rpc, on the application's own io_context.
//
// Every process of the application runs one node. It listens for its peers, finds them (a static
// list or DNS), learns each one's region, and calls named procedures, forwarded writes and
// transactions in another region, usually the primary one. Cap'n Proto runs on the same thread as
// the application's io_context; no thread is started and io_context::run() is never called here.
//
//     // A procedure takes its arguments and returns its values.
//     asio::awaitable<std::vector<flypg::rpc::value>> ping(std::vector<flypg::rpc::value>) {
//         co_return std::vector<flypg::rpc::value>{flypg::rpc::value("pong")};
//     }
//
//     flypg::rpc::node_options options;
//     options.procedures.add("ping", ping);
//     options.writes = my_primary_executor;  // on nodes that can reach the primary database
//     auto node = flypg::rpc::node::create(io, std::move(options));  // throws on bad configuration
//     asio::co_spawn(io, node.run(), asio::bind_cancellation_slot(stop.slot(), asio::detached));
//     ...
//     auto reply = co_await node.call_primary("ping", {});  // runs locally in the primary region
//
// Environment (each overridable in node_options): FLYPG_CLUSTER_SECRET (required unless FLYPG_ENV=dev),
// FLY_REGION / MY_REGION / PRIMARY_REGION (re-read on every call), FLYPG_RPC_ADDRESS, FLYPG_RPC_PORT,
// FLYPG_PEERS=host:port,..., FLY_APP_NAME (on Fly: listen on the private 6PN address and discover
// peers through <app>.internal), FLYPG_RPC_TLS, FLYPG_RPC_TLS_CERT, FLYPG_RPC_TLS_KEY, FLYPG_RPC_TLS_CA.
//
// Threading: a node and everything it returns belong to the thread that runs its io_context; use
// them from coroutines on that io_context only.
//
// Shutdown: cancel run() and keep running the io_context until run() has returned, then destroy
// the node, then the io_context. (Destroying the io_context while run() is still suspended in it
// destroys Cap'n Proto objects in an unspecified order.)
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flypg/rpc/procedure.hpp"
#include "flypg/rpc/value.hpp"
#include "flypg/rpc/write.hpp"

namespace flypg::rpc {

/// The protocol version this build speaks (schema/flypg.capnp). Peers of another version are
/// skipped with a log line, never crashed on.
std::uint32_t protocol_version() noexcept;

/// The port a node listens on when neither node_options nor FLYPG_RPC_PORT says otherwise.
inline constexpr std::uint16_t default_port = 7878;

enum class log_level { debug, info, warning, error };

/// Receives the node's log lines. The default is stderr_log_sink("flypg rpc [<node id>]").
using log_sink = std::function<void(log_level, std::string_view message)>;

/// The default sink of nodes and repos: writes each line at or above FLYPG_LOG_LEVEL (`debug`,
/// `info`, `warning` or `error`; unset or empty: `warning`) to stderr as "<prefix> <level>: <line>".
/// The variable is read here, once. @throws flypg::error (invalid_argument) naming FLYPG_LOG_LEVEL
/// and the accepted values when it holds anything else.
log_sink stderr_log_sink(std::string prefix);

/// Whether a node may start without a cluster secret.
enum class secret_policy {
    /// Refuse to start without a secret, unless FLYPG_ENV=dev (local development).
    required,
    /// Start without a secret (local development only): peers without a secret are accepted.
    allow_missing,
};

/// How the bytes between two nodes are protected. The handshake proves the cluster secret either way;
/// TLS also keeps SQL text, parameters and results secret and unaltered on the path.
enum class link_security {
    /// No TLS. Only where the network between nodes is private and protected already (Fly's
    /// WireGuard 6PN network).
    clear,
    /// TLS 1.3 keyed by the cluster secret (a key derived from it; the key exchange stays
    /// forward-secret): an encrypted, mutually authenticated link with no files to distribute.
    pre_shared_key,
    /// TLS 1.3 with certificates: each node presents tls_certificate_file and accepts only peers
    /// whose certificate tls_ca_file signed (no host name check: peers are found by address).
    certificates,
};

/// Before a peer has completed the handshake (on either side of a connection), a message it
/// announces larger than this closes the connection as soon as the message's header arrives,
/// before room for it is allocated: the handshake's messages (a hello, a proof) are far smaller.
inline constexpr std::size_t handshake_message_limit = 8 * 1024;

struct node_options {
    /// Address to listen on. Empty: FLYPG_RPC_ADDRESS; else on Fly (FLY_APP_NAME set) the private
    /// IPv6 address (the fly-local-6pn host entry); elsewhere 127.0.0.1.
    std::string listen_address;
    /// Port to listen on; 0 picks a free one. Unset: FLYPG_RPC_PORT, else default_port.
    std::optional<std::uint16_t> listen_port;

    /// The cluster secret every node shares. Unset: FLYPG_CLUSTER_SECRET.
    std::optional<std::string> cluster_secret;
    secret_policy secret = secret_policy::required;

    /// How links to peers are protected. Unset: FLYPG_RPC_TLS (`off`, `psk` or `certificates`);
    /// unset too: clear on Fly (FLY_APP_NAME set: WireGuard protects the private network) and
    /// where no cluster secret is set (local development), pre_shared_key elsewhere. Every node of
    /// a cluster must use the same setting: a mismatch fails the handshake, logged on both sides.
    std::optional<link_security> link;
    /// PEM files for link_security::certificates. Empty: FLYPG_RPC_TLS_CERT (this node's certificate
    /// chain), FLYPG_RPC_TLS_KEY (its private key), FLYPG_RPC_TLS_CA (the CA that signs every node's
    /// certificate). Read once, at create(); a missing or mismatched file fails create().
    std::string tls_certificate_file;
    std::string tls_private_key_file;
    std::string tls_ca_file;

    /// This node's region and the primary region. Unset: read from the environment on every call
    /// (see region.hpp). Set them to run several nodes of different regions in one process.
    std::optional<std::string> region;
    std::optional<std::string> primary_region;
    /// The application's version, shown to peers (informative).
    std::string app_version;

    /// Peers to connect to, as "host:port" ("[v6]:port" for IPv6 literals; the port may be left out
    /// for default_port). Unset: FLYPG_PEERS; else on Fly the DNS name <FLY_APP_NAME>.internal.
    std::optional<std::vector<std::string>> peers;
    /// A DNS name whose addresses are all peers, on the listen port (e.g. "myapp.internal").
    std::string peer_dns_name;
    /// How often host names of peers are resolved again.
    std::chrono::milliseconds resolve_interval{std::chrono::seconds(15)};
    /// Reconnect delays after a lost or failed connection: exponential with full jitter.
    std::chrono::milliseconds reconnect_min{100};
    std::chrono::milliseconds reconnect_max{std::chrono::seconds(10)};
    /// Connect + handshake budget, on both sides.
    std::chrono::milliseconds handshake_timeout{std::chrono::seconds(5)};
    /// Peers are pinged this often; a peer that misses two answers in a row is unhealthy (not
    /// chosen for calls) until it answers again.
    std::chrono::milliseconds heartbeat_interval{std::chrono::seconds(2)};
    /// A connection whose peer has answered no heartbeat for this long is closed and dialled
    /// again: bytes lost on the path (the stream can no longer be parsed, yet may never fail) or a
    /// host that vanished without a reset leave it open but dead. Calls in flight on it end as
    /// they would on any lost connection. At least twice heartbeat_interval.
    std::chrono::milliseconds heartbeat_timeout{std::chrono::seconds(10)};

    /// Largest message accepted or sent (also Cap'n Proto's traversal limit). Larger requests fail
    /// with errc::overloaded before they are sent; a peer sending more is disconnected.
    std::size_t max_message_bytes = 16 * 1024 * 1024;
    /// Connections accepted that have not completed the handshake, at most; more are closed as
    /// soon as they are accepted (logged at most once a second, with a count). On a clear link each
    /// costs this node about 25 KiB (measured with 250 idle connections) and at most about 30 KiB
    /// until it authenticates or its handshake_timeout passes: a 4 KiB read buffer, one message of
    /// at most handshake_message_limit, and Cap'n Proto's per-connection state. With TLS, about
    /// 39 KiB while it has sent nothing and about 76 KiB while its TLS handshake is partway
    /// (OpenSSL's record buffers): 256 such connections hold about 20 MiB at most.
    std::size_t max_unauthenticated_connections = 256;
    /// Calls a peer may have running on this node at once; more are answered errc::overloaded
    /// without running. The same limit applies to this node's calls to one peer.
    std::size_t max_in_flight_per_peer = 1024;

    /// Named procedures this node serves (and runs locally for calls to its own region).
    procedure_registry procedures;
    /// The primary database, for forwarded writes and transactions; null on nodes that cannot
    /// serve them (their callers get errc::procedure_error).
    std::shared_ptr<write_executor> writes;

    log_sink log;

    /// Only to test rolling upgrades: the protocol version this node claims. 0: protocol_version().
    std::uint32_t advertised_protocol_version = 0;
};

/// The longest request id (call_options::request_id, transaction::commit) a node accepts.
inline constexpr std::size_t max_request_id_bytes = 128;

/// Per-call options.
///
/// Not an aggregate on purpose: the operations take it by value with `= {}` as default, and g++ 12
/// destroys a braced aggregate temporary twice inside a co_await expression (a double free once a
/// member owns memory). Write `call_options(2s)` or set the fields of a named object.
struct call_options {
    call_options() noexcept {}
    explicit call_options(std::chrono::milliseconds timeout_after, std::string database_name = {})
        : timeout(timeout_after), database(std::move(database_name)) {}

    /// The call fails with errc::timeout (errc::outcome_unknown for writes) once this has passed.
    std::chrono::milliseconds timeout{std::chrono::seconds(5)};
    /// Forwarded writes and transactions: the database they are for, on the serving node (its
    /// write_executor::execute_on / begin_on get it). Empty: the node's only database.
    std::string database;
    /// Forwarded writes: the caller's id for this write (at most 128 bytes). The serving node
    /// runs a write at most once per id (write_executor::execute_once) and answers a repeat with
    /// the first run's results: sending the same id again after an outcome_unknown is safe.
    /// Empty: no id (every attempt runs).
    std::string request_id;
};

/// A peer as the registry sees it.
struct peer_info {
    std::string node_id;
    std::string region;
    std::string app_version;
    std::string address;  ///< host:port dialled
    bool healthy = false;
    std::chrono::microseconds last_round_trip{0};
    /// It runs a forwarded write at most once per request id (call_options::request_id).
    bool remembers_request_ids = false;
};

class transaction;

namespace detail {
class node_impl;
class transaction_impl;
}  // namespace detail

/// An interactive transaction on the primary database, opened by node::begin_transaction().
///
/// In the primary region it runs locally; elsewhere it lives on a primary-region peer, and
/// statements travel over RPC (pipelined when sent with execute_pipelined()). Destroying an open
/// transaction rolls it back (remotely: the capability is dropped and the peer rolls back).
/// Cancellation of each operation: terminal; a statement, once sent, may have run.
class transaction {
  public:
    transaction(transaction&&) noexcept;
    transaction& operator=(transaction&&) noexcept;
    ~transaction();

    /// Runs one statement. SQL failures throw flypg::error with the SQLSTATE's error_code.
    asio::awaitable<statement_result> execute(statement stmt);
    /// Sends all statements without waiting for each answer; they run in order. Stops at the first
    /// failure, which is thrown; later statements do not run.
    asio::awaitable<std::vector<statement_result>> execute_pipelined(std::vector<statement> statements);
    /// Commits and returns the commit LSN. If the answer is lost after the request was sent, throws
    /// errc::outcome_unknown: the transaction may have committed. A non-empty `request_id` (at most
    /// 128 bytes; only to nodes that remember request ids) is recorded in the transaction by the
    /// serving node (transaction_session::commit_once), so the caller can settle a lost answer.
    asio::awaitable<std::uint64_t> commit(std::string request_id = {});
    asio::awaitable<void> rollback();

    /// Whether the transaction runs on another node.
    bool is_remote() const noexcept;

  private:
    friend class node;
    explicit transaction(std::unique_ptr<detail::transaction_impl> impl);
    std::unique_ptr<detail::transaction_impl> impl_;
};

/// The node. Movable, not copyable.
class node {
  public:
    /// Validates `options` and the environment, binds the listening socket and returns the node.
    /// Must be called on the thread that runs `io`. Throws flypg::error: errc::unauthenticated when
    /// no cluster secret is configured outside local development, errc::invalid_argument for bad
    /// options or environment (the message names the value), errc::transport_error when the
    /// address cannot be bound.
    static node create(asio::io_context& io, node_options options);

    node(node&&) noexcept;
    node& operator=(node&&) noexcept;
    /// Stops everything the node runs (as cancelling run() does).
    ~node();

    /// Accepts peers, finds and connects to peers, keeps the region registry, until cancelled
    /// (terminal cancellation); then closes every connection and returns normally.
    asio::awaitable<void> run();

    /// Where the node listens (the actual port when 0 was asked for).
    asio::ip::tcp::endpoint local_endpoint() const;
    /// Random per node, exchanged in the handshake.
    const std::string& node_id() const noexcept;
    std::string my_region() const;
    std::string primary_region() const;
    bool is_primary() const;
    /// Whether every healthy peer of `region` (and at least one) runs a forwarded write at most
    /// once per request id, so that a write whose answer was lost may be sent again. A node of an
    /// older version does not: during a rolling upgrade, lost answers stay outcome_unknown.
    bool remembers_request_ids(const std::string& region) const;

    /// The peers currently connected and authenticated.
    std::vector<peer_info> peers() const;
    /// Waits until at least one healthy peer of `region` is known; errc::timeout otherwise.
    asio::awaitable<void> wait_for_region(std::string region, std::chrono::milliseconds timeout);

    /// Runs procedure `procedure` in `region`: locally when it is this node's region (no RPC), else
    /// on a random healthy peer of that region.
    ///
    /// Errors (flypg::error): errc::no_node_in_region (`no node found running in region "X"`);
    /// errc::transport_error when the request never left (after trying every healthy peer);
    /// errc::outcome_unknown when the connection failed after the request was sent;
    /// errc::timeout after options.timeout (the request may have run); errc::overloaded for a
    /// request over the message limit or a peer at its in-flight limit; errc::procedure_error with
    /// the remote text when the procedure failed; a sqlstate code when it raised a SQL error.
    /// Cancellation: terminal and partial, reported as errc::cancelled; the peer's procedure is
    /// cancelled too, but once sent it may have run (so total cancellation is not supported).
    asio::awaitable<std::vector<value>> call_region(std::string region,
                                                    std::string procedure_name,
                                                    std::vector<value> args,
                                                    call_options options = {});
    /// call_region(primary_region(), ...).
    asio::awaitable<std::vector<value>> call_primary(std::string procedure_name,
                                                     std::vector<value> args,
                                                     call_options options = {});

    /// Runs `statements` as one transaction on the primary database (locally in the primary
    /// region) and returns the results and the commit LSN. Errors as call_region, except that a
    /// timeout after sending is errc::outcome_unknown: the write may have committed.
    asio::awaitable<write_result> forward_write(std::vector<statement> statements, call_options options = {});

    /// Opens an interactive transaction on the primary database. Remote: returns without a round
    /// trip (the first statement is pipelined onto the opening call).
    asio::awaitable<transaction> begin_transaction(call_options options = {});

    /// Completion-token forms of the operations above (callbacks, futures, ...).
    template <class CompletionToken>
    auto call_region(std::string region,
                     std::string procedure_name,
                     std::vector<value> args,
                     call_options options,
                     CompletionToken&& token) {
        return asio::co_spawn(
            executor(),
            call_region(std::move(region), std::move(procedure_name), std::move(args), options),
            std::forward<CompletionToken>(token));
    }
    template <class CompletionToken>
    auto forward_write(std::vector<statement> statements, call_options options, CompletionToken&& token) {
        return asio::co_spawn(
            executor(), forward_write(std::move(statements), options), std::forward<CompletionToken>(token));
    }

    asio::any_io_executor executor() const;

  private:
    explicit node(std::shared_ptr<detail::node_impl> impl);
    std::shared_ptr<detail::node_impl> impl_;
};

}  // namespace flypg::rpc
