# flypg's node-to-node protocol: region discovery, named procedure calls, forwarded writes and
# interactive transactions on the primary region, behind a challenge-response handshake.
#
# Versioning. `protocolVersion` names the semantics of everything below. NodeIdentity and the
# Bootstrap interface are frozen: every version of flypg must be able to greet every other one, so
# that a node meeting a peer of another version (a rolling deploy) can tell and skip it. Within one
# protocol version, changes follow Cap'n Proto's compatibility rules (new fields and methods with
# new ordinals only). A change that breaks older peers increments protocolVersion.
#
# Expected failures (SQL errors, failing procedures, limits) travel as values (`Failure`), never as
# exceptions; exceptions are for logistics (a dropped connection).

@0x8b54de27efebc9c9;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("flypg::rpc::wire");

const protocolVersion :UInt32 = 1;

struct NodeIdentity {
  nodeId @0 :Text;             # random per process start; tells a node it dialled itself
  region @1 :Text;             # FLY_REGION / MY_REGION / "local" when the identity was sent
  appVersion @2 :Text;         # the application's own version string, informative
  protocolVersion @3 :UInt32;  # see the header
  remembersRequestIds @4 :Bool;  # runs a forwarded write at most once per request id (added
                                 # later: older nodes send false, and callers do not retry them)
}

struct Failure {
  kind @0 :Kind;
  enum Kind {
    internal @0;          # a bug or an unexpected exception on the peer
    sql @1;               # PostgreSQL raised an error: sqlstate + message/detail/hint
    procedure @2;         # a named procedure failed (message)
    overloaded @3;        # a limit was hit; the request did not run
    unauthenticated @4;   # the handshake failed
    versionMismatch @5;   # the peers speak different protocol versions
    invalidArgument @6;   # the request was malformed (message names what)
    unknownProcedure @7;  # no procedure of that name on the peer; it did not run
    unavailable @8;       # the peer cannot serve this (e.g. no database executor); did not run
    outcomeUnknown @9;    # the serving node lost its database connection after sending COMMIT
  }
  sqlstate @1 :Text;  # five characters, for kind == sql
  message @2 :Text;
  detail @3 :Text;
  hint @4 :Text;
}

# The only capability a connection offers before the handshake.
#
#   client -> hello(identity, clientChallenge)
#   server -> (identity, serverChallenge, serverProof = HMAC(secret, "flypg-server-v1" | c | s))
#   client -> authenticate(clientProof = HMAC(secret, "flypg-client-v1" | s | c))
#   server -> session (or a failure)
#
# HMAC is HMAC-SHA256 keyed with the cluster secret; c and s are 32 random bytes each. Both sides
# prove the secret, so a node never sends SQL to an impostor either. Challenges are single-use: one
# handshake per connection.
interface Bootstrap {
  hello @0 (identity :NodeIdentity, challenge :Data)
        -> (identity :NodeIdentity, challenge :Data, proof :Data);
  authenticate @1 (proof :Data) -> (result :AuthResult);
}

struct AuthResult {
  union {
    session @0 :Session;
    failure @1 :Failure;
  }
}

# Typed values: procedure arguments and results, statement parameters.
struct Value {
  union {
    null @0 :Void;
    bool @1 :Bool;
    int16 @2 :Int16;
    int32 @3 :Int32;
    int64 @4 :Int64;
    float64 @5 :Float64;
    text @6 :Text;
    bytes @7 :Data;
  }
}

struct Statement {
  sql @0 :Text;
  params @1 :List(Value);
}

struct Column {
  name @0 :Text;
  typeOid @1 :UInt32;
}

struct Row {
  cells @0 :List(Text);  # PostgreSQL's text form
  nulls @1 :List(Bool);  # nulls[i] means cells[i] is SQL NULL; empty when the row has no NULL
}

struct StatementResult {
  columns @0 :List(Column);
  rows @1 :List(Row);
  affectedRows @2 :UInt64;
}

struct CallResult {
  union {
    values @0 :List(Value);
    failure @1 :Failure;
  }
}

struct Committed {
  results @0 :List(StatementResult);
  commitLsn @1 :UInt64;  # the WAL position a replica must replay to see the write
}

struct WriteResult {
  union {
    committed @0 :Committed;
    failure @1 :Failure;  # nothing was committed
  }
}

struct ExecuteResult {
  union {
    result @0 :StatementResult;
    failure @1 :Failure;
  }
}

struct CommitResult {
  union {
    commitLsn @0 :UInt64;
    failure @1 :Failure;
  }
}

struct RollbackResult {
  union {
    done @0 :Void;
    failure @1 :Failure;
  }
}

# Handed out by Bootstrap.authenticate only.
interface Session {
  identity @0 () -> (identity :NodeIdentity);
  ping @1 () -> ();
  call @2 (procedure :Text, args :List(Value)) -> (result :CallResult);
  # Runs the statements as one transaction on this node's database (the primary).
  write @3 (statements :List(Statement), database :Text, requestId :Text) -> (result :WriteResult);
  # `requestId` (added later; empty from older callers): the caller's id for this write. A serving
  # node that remembers ids runs a write at most once per id and answers a repeat with the first
  # run's results, so a caller may retry a write whose answer it lost.
  # An interactive transaction on this node's database. Calls on it may be pipelined (even onto
  # the not-yet-returned capability); they run in the order sent. Dropping it rolls back.
  # `database` names the database on the serving node (flypg::repo_options::name); empty: the
  # node's only one. Added after version 1's first release: older callers send none.
  begin @4 (database :Text) -> (transaction :Transaction);
}

interface Transaction {
  execute @0 (statement :Statement) -> (result :ExecuteResult);
  commit @1 (requestId :Text) -> (result :CommitResult);
  # `requestId` (added later; empty from older callers): the caller's id for this commit. A serving
  # node that remembers ids records it in the transaction, so a caller that lost the answer can
  # find out whether it committed (a later write holding the id wins only if the commit did not).
  rollback @2 () -> (result :RollbackResult);
}
