#!/usr/bin/env bash
# Runs the real ringlb under seccomp/ringlb.json, as the pod would (UID 10001, the profile loaded
# by with-profile.py the way runc loads it), inside a network namespace of its own: it must start,
# proxy requests to a loopback backend, answer /live and /ready, and stop cleanly on SIGTERM. Then
# the same profile without the io_uring calls (what RuntimeDefault now is): with the default
# `runtime.engine = "auto"` ringlb must fall back to its epoll engine, say why, and proxy; with
# `engine = "io_uring"` it must refuse to start and say why. Needs root, the release binaries and libseccomp's Python bindings
# (python3-seccomp, installed with apt-get if missing). Prints "N passed, M failed" last.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../../.." && pwd)
RINGLB=${RINGLB:-$ROOT/target/release/ringlb}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
PY=/usr/bin/python3
NS=ringlb-seccomp-$$
passed=0
failed=0

[[ $(id -u) -eq 0 ]] || {
    echo "test-profile.sh: needs root" >&2
    exit 1
}
[[ -x $RINGLB && -x $LOADGEN ]] || {
    echo "test-profile.sh: build first (cargo build --release): no $RINGLB or $LOADGEN" >&2
    exit 1
}
if ! "$PY" -c 'import seccomp' 2>/dev/null; then
    apt-get install -y -qq python3-seccomp >/dev/null
fi

WORK=$(mktemp -d /tmp/ringlb-seccomp-test.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result() {
    if (($1 == 0)); then
        echo "ok - $2"
        passed=$((passed + 1))
    else
        echo "not ok - $2"
        [[ -z ${3:-} ]] || tail -n 20 "$3" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

ip netns add "$NS"
ip -n "$NS" link set lo up
cat >"$WORK/ringlb.toml" <<'EOF'
[runtime]
workers = 1
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:9901"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"
[[routes]]
listener = "http"
host = "*"
path = "/"
upstream = "app"
[upstreams.app]
[[upstreams.app.servers]]
addr = "127.0.0.1:9001"
EOF
sed 's/^workers = 1$/workers = 1\nengine = "io_uring"/' "$WORK/ringlb.toml" >"$WORK/io-uring.toml"
"$PY" - "$HERE/ringlb.json" >"$WORK/no-io-uring.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
for rule in p["syscalls"]:
    rule["names"] = [n for n in rule["names"] if not n.startswith("io_uring")]
json.dump(p, sys.stdout)
EOF

ip netns exec "$NS" "$LOADGEN" serve --listen 127.0.0.1:9001 --name backend --no-pin \
    >"$WORK/backend.log" 2>&1 &
PIDS+=($!)

confined() {
    ip netns exec "$NS" setpriv --reuid=10001 --regid=10001 --clear-groups \
        "$PY" "$HERE/with-profile.py" "$@"
}

# Not through confined(): a backgrounded function is a subshell, and $! would be its pid.
ip netns exec "$NS" setpriv --reuid=10001 --regid=10001 --clear-groups \
    "$PY" "$HERE/with-profile.py" "$HERE/ringlb.json" "$RINGLB" run -c "$WORK/ringlb.toml" \
    >"$WORK/ringlb.log" 2>&1 &
RINGLB_PID=$!
PIDS+=("$RINGLB_PID")
ready=1
for _ in $(seq 50); do
    if ip netns exec "$NS" curl -fsS -m 1 -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null; then
        ready=0
        break
    fi
    sleep 0.1
done
result "$ready" "ringlb starts as UID 10001 under ringlb.json and turns ready" "$WORK/ringlb.log"

good=0
for _ in $(seq 20); do
    body=$(ip netns exec "$NS" curl -fsS -m 2 http://127.0.0.1:8080/ 2>/dev/null) || true
    [[ $body != backend ]] || good=$((good + 1))
done
rc=1
((good != 20)) || rc=0
result "$rc" "20 of 20 requests proxied under the profile ($good answered)" "$WORK/ringlb.log"

rc=0
ip netns exec "$NS" curl -fsS -m 1 -o /dev/null http://127.0.0.1:9901/live || rc=1
result "$rc" "/live answers under the profile"

kill -TERM "$RINGLB_PID"
rc=0
for _ in $(seq 50); do
    kill -0 "$RINGLB_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$RINGLB_PID" 2>/dev/null; then
    rc=1
else
    status=0
    wait "$RINGLB_PID" || status=$?
    ((status == 0)) || rc=1
fi
result "$rc" "SIGTERM stops it cleanly (exit 0 within 5 s)" "$WORK/ringlb.log"

rc=0
if confined "$HERE/ringlb.json" unshare --user true >"$WORK/unshare.log" 2>&1; then
    rc=1
fi
result "$rc" "the profile is in force: unshare is denied"

# The default engine ("auto") under the profile without io_uring: epoll, said once, serving.
ip netns exec "$NS" setpriv --reuid=10001 --regid=10001 --clear-groups \
    "$PY" "$HERE/with-profile.py" "$WORK/no-io-uring.json" "$RINGLB" run -c "$WORK/ringlb.toml" \
    >"$WORK/fallback.log" 2>&1 &
RINGLB_PID=$!
PIDS+=("$RINGLB_PID")
good=0
for _ in $(seq 50); do
    body=$(ip netns exec "$NS" curl -fsS -m 1 http://127.0.0.1:8080/ 2>/dev/null) || true
    if [[ $body == backend ]]; then
        good=1
        break
    fi
    sleep 0.1
done
rc=1
((good == 0)) || rc=0
result "$rc" "without the io_uring calls the default engine falls back to epoll and proxies" \
    "$WORK/fallback.log"
rc=1
if grep -q 'using the epoll engine, because io_uring cannot run here' "$WORK/fallback.log" &&
    grep -q 'engine epoll' "$WORK/fallback.log"; then
    rc=0
fi
result "$rc" "... and its log says why, once, and names the engine" "$WORK/fallback.log"
kill -TERM "$RINGLB_PID" 2>/dev/null || true
# Its ports must be free for the next run.
for _ in $(seq 50); do
    kill -0 "$RINGLB_PID" 2>/dev/null || break
    sleep 0.1
done

status=0
timeout 10 ip netns exec "$NS" setpriv --reuid=10001 --regid=10001 --clear-groups \
    "$PY" "$HERE/with-profile.py" "$WORK/no-io-uring.json" "$RINGLB" run -c "$WORK/io-uring.toml" \
    >"$WORK/denied.log" 2>&1 || status=$?
rc=1
((status == 0 || status == 124)) || rc=0
result "$rc" "without the io_uring calls, engine = \"io_uring\" exits with an error within 10 s (exit $status)" \
    "$WORK/denied.log"
rc=1
! grep -qi io_uring "$WORK/denied.log" || rc=0
result "$rc" "... and its log names io_uring as the cause" "$WORK/denied.log"

echo "$passed passed, $failed failed"
((failed == 0))
