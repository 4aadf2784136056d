#!/usr/bin/env bash
# Rebuilds the engine prototypes and reruns the whole comparison (Part B), then the Part A
# profile of ringlb and nginx. ~15 + 1 minutes. Needs root (perf, taskset), nginx, haproxy.
#   ROUNDS=3 SECONDS_PER_RUN=4s IDLE_CONNS=5000 OPEN_ROUNDS=3 [RATE=N] bash run.sh
# ringlb and loadgen are run from copies in $PROJECT_BIN (default /work/engines-bin), taken
# from target/release when absent, so a rebuild of the project's target dir does not disturb a run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export PROJECT_BIN="${PROJECT_BIN:-/work/engines-bin}"
export ENGINES_TARGET="${ENGINES_TARGET:-/work/engines-target}"
export ENGINES_BIN="$ENGINES_TARGET/release"

for tool in nginx haproxy perf taskset; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx haproxy linux-perf; break; }
done
mkdir -p "$PROJECT_BIN"
for b in ringlb loadgen; do
  if [ ! -x "$PROJECT_BIN/$b" ]; then
    [ -x "$ROOT/target/release/$b" ] || (cd "$ROOT" && cargo build --release --workspace --bins)
    cp "$ROOT/target/release/$b" "$PROJECT_BIN/"
  fi
done
(cd "$HERE" && cargo build --release --target-dir "$ENGINES_TARGET")

OPEN_ROUNDS="${OPEN_ROUNDS:-3}" python3 "$HERE/bench.py"   # -> results.md, results.json
python3 "$HERE/parta.py"                                    # -> profile/summary.md
