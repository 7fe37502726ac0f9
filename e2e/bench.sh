#!/usr/bin/env bash
# Runs the benchmarks (e2e/src/bin/bench_*.rs) in release mode, after installing the peers they
# measure against as the test script does. `bash e2e/bench.sh` runs them all; `bash e2e/bench.sh
# render rollout` runs bench_render and bench_rollout. Each prints its figures and the ratio to
# its peer measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/peers.sh
if [ "$#" -eq 0 ]; then
  set -- $(ls e2e/src/bin | sed -n 's/^bench_\(.*\)\.rs$/\1/p')
fi
cargo build --release --workspace --bins
# The agent as its image ships it (built for size: see Cargo.toml's `agent` profile).
cargo build --profile agent -p convoy-agent --bin convoy-agent
export CONVOY_AGENT_BINARY="$PWD/target/agent/convoy-agent"
for name in "$@"; do
  echo "== bench_$name"
  "target/release/bench_$name"
done
