#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target under fuzz/ for SECONDS each (default 30).
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags, and
# `--sanitizer none` avoids AddressSanitizer, which needs a nightly-built standard library
# (the targets are safe Rust; libFuzzer's coverage-guided search and its crash, timeout and
# out-of-memory detection still apply, with debug assertions and overflow checks on).
#
# Each target starts from its seed corpus in fuzz/corpus/TARGET (read only); what it discovers
# goes to a scratch directory, and a crashing input is saved under fuzz/artifacts/TARGET/.
# Exit status: non-zero when any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
flags=(--sanitizer none)

targets=$(cd fuzz && cargo fuzz list)
# One build for all targets, so the per-target time is spent fuzzing.
cargo fuzz build "${flags[@]}"

failed=()
for t in $targets; do
  mkdir -p "$scratch/$t"
  echo "=== $t: ${seconds}s"
  rc=0
  cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$scratch/$t.log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_runs|stat::new_units_added|Done [0-9]+ runs)' "$scratch/$t.log" || true
  grep -E '^#[0-9]+ +(DONE|INITED)' "$scratch/$t.log" | tail -n 2 || true
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    tail -n 40 "$scratch/$t.log"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: no crash in $(echo $targets | wc -w) targets, ${seconds}s each"
