#!/usr/bin/env bash
# Failover test for the active-passive keepalived pair in this directory (`make ha-test`).
#
# Builds, entirely in network namespaces of its own (nothing is added to the root namespace):
#
#   client (10.77.0.10) ---+
#   node A (10.77.0.11) ---+--- br0 in the "switch" namespace
#   node B (10.77.0.12) ---+          virtual IP 10.77.0.100, held by A at first
#
# Each node runs `loadgen serve` on 127.0.0.1:9001 (answering with the node's name), ringlb on
# 0.0.0.0:8080 in front of it (admin on 127.0.0.1:9901), and keepalived with node-a.conf or
# node-b.conf (only site values substituted: VIP, script user). The client sends a request to
# http://10.77.0.100:8080/ every 50 ms (bounded: at most 30 s and 600 requests). The test kills
# A's ringlb (SIGKILL, by pid), expects the VIP on B within 10 s and requests answered by B, then
# restarts A's ringlb and watches the VIP come back (A has the higher priority and preempts).
# Reports failover time (first failed request -> first success after it) and failed requests.
#
# Needs root, iproute2, curl, keepalived (installed with apt-get if missing) and the release
# binaries (RINGLB, LOADGEN override their paths). Prints PASS or FAIL; exits 1 on FAIL.
# KEEP_LOGS=1 keeps the work directory; HA_WEIGHT=-60 tries the check with a weight instead of
# FAULT (see node-a.conf). Takes about 20 s.
set -euo pipefail
export LC_ALL=C

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../.." && pwd)
RINGLB=${RINGLB:-$ROOT/target/release/ringlb}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
VIP=10.77.0.100
PREFIX=rlbha$$
NS_SW=$PREFIX-sw
NS_A=$PREFIX-a
NS_B=$PREFIX-b
NS_C=$PREFIX-c
FAILOVER_LIMIT_S=10
T0=$(date +%s%3N)

say() { printf '[%6.2fs] %s\n' "$(($(date +%s%3N) - T0))e-3" "$*"; }
fail_early() {
    echo "ha-test: $*" >&2
    echo "FAIL"
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail_early "needs root (network namespaces)"
[[ -x $RINGLB && -x $LOADGEN ]] ||
    fail_early "no binaries at $RINGLB and $LOADGEN: run cargo build --release first"
command -v curl >/dev/null || fail_early "curl not found (apt-get install -y curl)"
command -v ip >/dev/null || fail_early "ip not found (apt-get install -y iproute2)"
if ! command -v keepalived >/dev/null; then
    say "installing keepalived"
    apt-get install -y -qq keepalived >/dev/null || fail_early "could not install keepalived"
fi

WORK=$(mktemp -d /tmp/ringlb-ha-test.XXXXXX)
chmod 755 "$WORK"
PIDS=()
NAMESPACES=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local ns
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [[ ${KEEP_LOGS:-0} == 1 ]]; then
        echo "ha-test: logs kept in $WORK"
    else
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in the background in namespace $1, logging to $2; the pid is in $LAST_PID
# (`ip netns exec` execs the command, so this is the process itself).
start_in() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Polls `$@` every 100 ms until it succeeds or $1 seconds pass.
wait_for() {
    local limit=$1
    shift
    local end=$(($(date +%s%3N) + limit * 1000))
    until "$@"; do
        (($(date +%s%3N) < end)) || return 1
        sleep 0.1
    done
}

has_vip() { ip -n "$1" -4 addr show dev eth0 | grep -q "inet $VIP/"; }
ready() { ip netns exec "$1" curl -fsS -m 1 -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null; }

# --- Topology: a bridge in the switch namespace, one veth per host, all in namespaces.
for ns in "$NS_SW" "$NS_A" "$NS_B" "$NS_C"; do
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
done
ip -n "$NS_SW" link add br0 type bridge
ip -n "$NS_SW" link set br0 up
host_index=10
for ns in "$NS_C" "$NS_A" "$NS_B"; do
    port=p$host_index
    ip -n "$ns" link add eth0 type veth peer name "$port" netns "$NS_SW"
    ip -n "$NS_SW" link set "$port" master br0 up
    ip -n "$ns" addr add "10.77.0.$host_index/24" dev eth0
    ip -n "$ns" link set eth0 up
    host_index=$((host_index + 1))
done
say "namespaces up: client $NS_C (10.77.0.10), A $NS_A (10.77.0.11), B $NS_B (10.77.0.12), switch $NS_SW"

# --- Each node: backend, ringlb, keepalived.
ringlb_config() {
    cat <<EOF
[runtime]
workers = 1
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:9901"
[[listeners]]
name = "http"
listen = "0.0.0.0:8080"
[[routes]]
listener = "http"
host = "*"
path = "/"
upstream = "app"
[upstreams.app]
balance = "round_robin"
[[upstreams.app.servers]]
addr = "127.0.0.1:9001"
EOF
}

declare -A NODE_NS=([a]=$NS_A [b]=$NS_B)
declare -A RINGLB_PID=()
start_ringlb() {
    local node=$1 log=$2
    start_in "${NODE_NS[$node]}" "$WORK/$node/$log" "$RINGLB" run -c "$WORK/$node/ringlb.toml"
    RINGLB_PID[$node]=$LAST_PID
}

for node in a b; do
    ns=${NODE_NS[$node]}
    mkdir -p "$WORK/$node"
    ringlb_config >"$WORK/$node/ringlb.toml"
    "$RINGLB" check -c "$WORK/$node/ringlb.toml" >"$WORK/$node/check.log" 2>&1 ||
        fail_early "ringlb check rejected the test config: $(cat "$WORK/$node/check.log")"
    start_in "$ns" "$WORK/$node/backend.log" "$LOADGEN" serve --listen 127.0.0.1:9001 \
        --name "node-$node" --cores 1 --no-pin
    start_ringlb "$node" ringlb.log
    # The shipped config with site values substituted; keepalived_script does not exist here.
    sed -e "s|192\.0\.2\.100/24|$VIP/24|" -e 's|script_user keepalived_script|script_user nobody|' \
        -e "${HA_WEIGHT:+s|^    rise 2\$|&\n    weight $HA_WEIGHT|}" \
        "$HERE/node-$node.conf" >"$WORK/$node/keepalived.conf"
done
both_ready() { ready "$NS_A" && ready "$NS_B"; }
wait_for 10 both_ready ||
    fail_early "ringlb not ready: $(tail -n 5 "$WORK"/[ab]/ringlb.log)"
say "ringlb ready on A (pid ${RINGLB_PID[a]}) and B (pid ${RINGLB_PID[b]})"

for node in a b; do
    # keepalived 2.2 ends a clean config test by sending itself SIGTERM (exit 143); the inner
    # bash keeps the "Terminated" notice in the log.
    rc=0
    bash -c 'keepalived -t -f "$1"; exit $?' check "$WORK/$node/keepalived.conf" \
        >"$WORK/$node/keepalived-check.log" 2>&1 || rc=$?
    ((rc == 0 || rc == 143)) ||
        fail_early "keepalived rejects node-$node.conf: $(cat "$WORK/$node/keepalived-check.log")"
    start_in "${NODE_NS[$node]}" "$WORK/$node/keepalived.log" keepalived --vrrp --dont-fork \
        --log-console --log-detail --no-syslog --use-file "$WORK/$node/keepalived.conf" \
        --pid "$WORK/$node/keepalived.pid" --vrrp_pid "$WORK/$node/vrrp.pid"
done
wait_for 10 has_vip "$NS_A" || fail_early "node A never took the VIP: $(tail -5 "$WORK/a/keepalived.log")"
! has_vip "$NS_B" || fail_early "both nodes hold the VIP"
say "VIP $VIP on node A (MASTER)"

# --- The client: one request every 50 ms, at most 30 s and 600 requests; "ms status node".
cat >"$WORK/client.sh" <<'EOF'
set -u
out=$1 stop=$2 vip=$3 n=0
end=$((SECONDS + 30))
while ((SECONDS < end && n < 600)) && [[ ! -e $stop ]]; do
    t=$(date +%s%3N)
    if body=$(curl -fsS -m 0.5 "http://$vip:8080/" 2>/dev/null); then
        echo "$t ok $body"
    else
        echo "$t fail -"
    fi
    n=$((n + 1))
    sleep 0.05
done >"$out"
EOF
start_in "$NS_C" "$WORK/client.err" bash "$WORK/client.sh" "$WORK/requests.log" "$WORK/stop" "$VIP"
CLIENT_PID=$LAST_PID
served_by() { grep -q " ok node-$1$" "$WORK/requests.log" 2>/dev/null; }
wait_for 5 served_by a || fail_early "the client gets no answer from node A through the VIP"
sleep 1

# --- Failover: kill A's ringlb; keepalived on A sees /ready fail and drops to FAULT.
T_KILL=$(date +%s%3N)
kill -KILL "${RINGLB_PID[a]}"
wait "${RINGLB_PID[a]}" 2>/dev/null || true
say "killed ringlb on node A (pid ${RINGLB_PID[a]}, SIGKILL)"
vip_moved() { has_vip "$NS_B" && ! has_vip "$NS_A"; }
if wait_for "$FAILOVER_LIMIT_S" vip_moved; then
    T_VIP=$(date +%s%3N)
    say "VIP $VIP moved to node B after $((T_VIP - T_KILL))ms"
    ip -n "$NS_B" -4 -br addr show dev eth0 | sed 's/^/    B: /'
else
    T_VIP=
    say "VIP did not move to node B within ${FAILOVER_LIMIT_S}s"
fi
b_after_kill() { awk -v t="$T_KILL" '$1 > t && $3 == "node-b" { f = 1 } END { exit !f }' "$WORK/requests.log"; }
wait_for 3 b_after_kill || true
sleep 1

# --- Failback: restart A's ringlb; after `rise 2` A leaves FAULT and, priority 150 > 100, preempts.
T_RESTART=$(date +%s%3N)
start_ringlb a ringlb-restarted.log
say "restarted ringlb on node A (pid ${RINGLB_PID[a]})"
vip_back() { has_vip "$NS_A" && ! has_vip "$NS_B"; }
T_BACK=
if wait_for 10 vip_back; then
    T_BACK=$(date +%s%3N)
    say "VIP back on node A after $((T_BACK - T_RESTART))ms"
fi
a_after_restart() { awk -v t="${T_BACK:-$T_RESTART}" '$1 > t && $3 == "node-a" { f = 1 } END { exit !f }' "$WORK/requests.log"; }
wait_for 3 a_after_restart || true
sleep 1
touch "$WORK/stop"
wait "$CLIENT_PID" 2>/dev/null || true

# --- Report.
# Prints: failover_ms failed_during_failover first_b_ok(0/1) failback_failed total ok failed
read -r FAILOVER_MS FAILED_OVER B_OK FAILED_BACK TOTAL OKS FAILS < <(awk -v kill="$T_KILL" -v restart="$T_RESTART" '
    { total++; if ($2 == "ok") ok++; else failed++ }
    # Failures before the restart, including a request already in flight at the kill.
    $1 < restart {
        if ($2 == "fail") { if (!first_fail) first_fail = $1; n_fail++ }
        else if (first_fail && !recovered && $3 == "node-b") { recovered = $1 }
        if ($2 == "ok" && $3 == "node-b") b_ok = 1
    }
    $1 >= restart && $2 == "fail" { back_fail++ }
    END {
        ms = (first_fail && recovered) ? recovered - first_fail : (n_fail == 0 && b_ok ? 0 : -1)
        printf "%d %d %d %d %d %d %d\n", ms, n_fail, b_ok, back_fail, total, ok, failed
    }' "$WORK/requests.log")

echo
echo "requests: $TOTAL sent, $OKS answered, $FAILS failed"
echo "served by: $(awk '$2 == "ok" { n[$3]++ } END { for (k in n) printf "%s %d  ", k, n[k] }' "$WORK/requests.log")"
if [[ -n $T_VIP ]]; then
    echo "failover: VIP on B $((T_VIP - T_KILL)) ms after the kill"
fi
if ((FAILOVER_MS >= 0)); then
    echo "failover: $FAILOVER_MS ms from the first failed request to the first answer from B; $FAILED_OVER requests failed"
else
    echo "failover: no failed request was followed by an answer from B ($FAILED_OVER requests failed)"
fi
if [[ -n $T_BACK ]]; then
    echo "failback: VIP back on A $((T_BACK - T_RESTART)) ms after the restart; $FAILED_BACK requests failed"
else
    echo "failback: VIP did not return to A within 10 s"
fi

verdict=PASS
[[ -n $T_VIP ]] || verdict=FAIL
((B_OK == 1)) || verdict=FAIL
((FAILOVER_MS >= 0 && FAILOVER_MS <= FAILOVER_LIMIT_S * 1000)) || verdict=FAIL
[[ -n $T_BACK ]] || verdict=FAIL
a_after_restart || verdict=FAIL
if [[ $verdict == FAIL ]]; then
    for f in "$WORK"/a/keepalived.log "$WORK"/b/keepalived.log; do
        echo "--- last lines of $f"
        tail -n 15 "$f"
    done
fi
echo "$verdict"
[[ $verdict == PASS ]]
