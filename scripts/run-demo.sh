#!/usr/bin/env bash
# `make run`: three demo backends and ringlb in front of them, stopped together by Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
for i in 1 2 3; do
  "$bin/loadgen" serve --listen "127.0.0.1:900$i" --name "backend-$i" &
  pids+=($!)
done
sleep 0.3
"$bin/ringlb" run -c ringlb.example.toml &
pids+=($!)
for _ in $(seq 50); do
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "ringlb did not start (see the error above)" >&2
    exit 1
  fi
  curl -fsS -o /dev/null http://127.0.0.1:9901/live 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

ringlb is listening on http://127.0.0.1:8080 (admin http://127.0.0.1:9901)
try:  curl -s localhost:8080/        (backend-1, backend-2, backend-3 in turn)
      curl -s localhost:9901/ready
Ctrl-C stops everything.
MSG
wait "${pids[-1]}"
