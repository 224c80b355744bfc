@0xd19005b7a47c069d;
# Bench-only protocol of the bare Cap'n Proto baseline in rpc_bench.cpp: the same call shape as
# flypg's Session.call("echo", [int64]) without flypg (no handshake, no node, no Asio).

interface BenchPing {
  echo @0 (procedure :Text, args :List(Int64)) -> (values :List(Int64));
}
