#!/usr/bin/env bash
# `make run`: three demo backends and ringlb in front of them, stopped together by Ctrl-C.
# Waits for what it starts (each backend's port, then ringlb's /ready), never for a fixed time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# wait_http PID URL WHAT: until URL answers 2xx (at most 10 s) while PID lives.
wait_http() {
  local pid=$1 url=$2 what=$3
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what did not start (see the error above)" >&2
      exit 1
    fi
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$what did not answer $url within 10 s" >&2
  exit 1
}

for i in 1 2 3; do
  "$bin/loadgen" serve --listen "127.0.0.1:900$i" --name "backend-$i" &
  pids+=($!)
done
for i in 1 2 3; do
  wait_http "${pids[$((i - 1))]}" "http://127.0.0.1:900$i/health" "backend-$i"
done
"$bin/ringlb" run -c ringlb.example.toml &
pids+=($!)
# /ready: 200 once every worker runs.
wait_http "${pids[-1]}" http://127.0.0.1:9901/ready ringlb
cat <<MSG

ringlb is listening on http://127.0.0.1:8080 (admin http://127.0.0.1:9901)
try:  curl -s localhost:8080/        (backend-1, backend-2, backend-3 in turn)
      curl -s localhost:9901/ready
Ctrl-C stops everything.
MSG
wait "${pids[-1]}"
