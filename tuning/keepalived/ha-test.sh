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
# 0.0.0.0:8080 in front of it (the wildcard: it accepts on the VIP the moment keepalived adds
# it; admin on 127.0.0.1:9901), and keepalived with node-a.conf or node-b.conf and
# ringlb-check.sh. Only site values are substituted: the VIP, the script's path and user.
#
# The client (tuning/ha-probe.py) sends HA_RATE (default 250) requests per second to
# http://10.77.0.100:8080/, open loop, each on a new connection, timeout 2 s, bounded to 90 s
# and 22,500 requests; it logs each request's start time, end time, outcome and answering node.
# Two cases, each followed by a failback:
#   1. ringlb-killed: SIGKILL A's ringlb (by pid). keepalived on A sees the check fail, goes to
#      FAULT, drops the VIP and sends a priority-0 advert; B takes over.
#      Failback: restart A's ringlb; A preempts after its preempt_delay (5 s).
#   2. host-killed: A's eth0 goes down (the switch port loses carrier, nothing more leaves A),
#      then A's keepalived, ringlb and backend are SIGKILLed. B takes over when 3 adverts are
#      missed. Failback: A "reboots" (stale VIP removed, link up, everything restarted).
#
# Definitions (all times are wall-clock ms on this machine, shared by every namespace):
#   kill          when the script sent the SIGKILL (case 1) or set A's link down (case 2).
#   VIP on B      the time stamp of the kernel's RTM_NEWADDR event for the VIP on B's eth0, as
#                 received by `ip -ts monitor address`, which runs inside B's namespace from
#                 before the first case (event-driven: no polling delay). Same for A in failback.
#   failover_ms   from the kill to the end of the first request answered 200 by B.
#   failback_ms   from A's ringlb restart to the end of the first request answered 200 by A
#                 (includes the 5 s preempt_delay by design).
#   failed_after_move  requests that *started* at or after "VIP on B" (on A, for failback),
#                 ended before the next step of the test, and did not get a 200 within 2 s
#                 (refused, reset, timeout, other status). Requests that ended after the event
#                 but started before the move (in flight at the kill, or sent while no node
#                 answered for the VIP) are reported separately ("failed before the move").
#                 The test waits 2.5 s (more than the timeout) after each move before the next
#                 step, so every request started around a move ends in that move's window.
# Last line: `failover_ms=<max of the two cases> failed_after_move=<sum of the two cases>`, with
# one `failback_ms=... failed_after_move=...` line before it, and each case's figures above.
# Exits 1 when a failover takes more than 1000 ms, a request fails after a failover's move, or
# the VIP does not come back to A; failback failures are reported, not judged (see README).
#
# Needs root, iproute2, curl, python3, keepalived (installed with apt-get if missing) and the release
# binaries (RINGLB, LOADGEN override their paths). KEEP_LOGS=1 keeps the work directory.
# Takes about 35 s.
set -euo pipefail
export LC_ALL=C TZ=UTC

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../.." && pwd)
RINGLB=${RINGLB:-$ROOT/target/release/ringlb}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
PROBE=$ROOT/tuning/ha-probe.py
RATE=${HA_RATE:-250}
VIP=10.77.0.100
PREFIX=rlbha$$
NS_SW=$PREFIX-sw
NS_A=$PREFIX-a
NS_B=$PREFIX-b
NS_C=$PREFIX-c
FAILOVER_LIMIT_MS=1000
MOVE_WAIT_S=10 # a VIP that has not moved by then is a failure
SETTLE_S=2.5   # after each move, before the next event: longer than the client's 2 s timeout
T0=${EPOCHREALTIME/./}

now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}
say() {
    local t=${EPOCHREALTIME/./}
    printf '[%6.2fs] %s\n' "$(((t - T0) / 1000))e-3" "$*"
}
fail_early() {
    echo "ha-test: $*" >&2
    echo "FAIL"
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail_early "needs root (network namespaces)"
[[ -x $RINGLB && -x $LOADGEN ]] ||
    fail_early "no binaries at $RINGLB and $LOADGEN: run make build first"
command -v curl >/dev/null || fail_early "curl not found (apt-get install -y curl)"
command -v python3 >/dev/null || fail_early "python3 not found (apt-get install -y python3)"
command -v ip >/dev/null || fail_early "ip not found (apt-get install -y iproute2)"
if ! command -v keepalived >/dev/null; then
    say "installing keepalived"
    apt-get install -y -qq keepalived >/dev/null || fail_early "could not install keepalived"
fi

WORK=$(mktemp -d /tmp/ringlb-ha-test.XXXXXX)
# keepalived's enable_script_security: the check script and every directory above it must be
# root-owned and not writable by others (/tmp is allowed: sticky).
chmod 755 "$WORK"
PIDS=()
NAMESPACES=()

cleanup() {
    local pid ns
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
stop_pid() { # SIGKILL one process this script started, and reap it
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Polls `$@` every 10 ms until it succeeds or $1 seconds pass.
wait_for() {
    local limit=$1
    shift
    local end=$(($(now_ms) + limit * 1000))
    until "$@"; do
        (($(now_ms) < end)) || return 1
        sleep 0.01
    done
}

has_vip() { ip -n "$1" -4 addr show dev eth0 2>/dev/null | grep -q "inet $VIP/"; }
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

# The check script where keepalived's script security accepts it (root-owned, 0755).
install -m 0755 "$HERE/ringlb-check.sh" "$WORK/ringlb-check.sh"

declare -A NODE_NS=([a]=$NS_A [b]=$NS_B)
declare -A RINGLB_PID=() BACKEND_PID=() KEEPALIVED_PID=()
start_backend() {
    start_in "${NODE_NS[$1]}" "$WORK/$1/backend.log" "$LOADGEN" serve --listen 127.0.0.1:9001 \
        --name "node-$1" --cores 1 --no-pin
    BACKEND_PID[$1]=$LAST_PID
}
start_ringlb() {
    start_in "${NODE_NS[$1]}" "$WORK/$1/$2" "$RINGLB" run -c "$WORK/$1/ringlb.toml"
    RINGLB_PID[$1]=$LAST_PID
}
start_keepalived() {
    start_in "${NODE_NS[$1]}" "$WORK/$1/$2" keepalived --vrrp --dont-fork \
        --log-console --log-detail --no-syslog --use-file "$WORK/$1/keepalived.conf" \
        --pid "$WORK/$1/keepalived.pid" --vrrp_pid "$WORK/$1/vrrp.pid"
    KEEPALIVED_PID[$1]=$LAST_PID
}

for node in a b; do
    mkdir -p "$WORK/$node"
    ringlb_config >"$WORK/$node/ringlb.toml"
    "$RINGLB" check -c "$WORK/$node/ringlb.toml" >"$WORK/$node/check.log" 2>&1 ||
        fail_early "ringlb check rejected the test config: $(cat "$WORK/$node/check.log")"
    start_backend "$node"
    start_ringlb "$node" ringlb.log
    # The shipped config with site values substituted; keepalived_script does not exist here.
    sed -e "s|192\.0\.2\.100/24|$VIP/24|" -e 's|script_user keepalived_script|script_user nobody|' \
        -e "s|/etc/keepalived/ringlb-check.sh|$WORK/ringlb-check.sh|" \
        "$HERE/node-$node.conf" >"$WORK/$node/keepalived.conf"
    grep -q "$WORK/ringlb-check.sh" "$WORK/$node/keepalived.conf" ||
        fail_early "node-$node.conf no longer names /etc/keepalived/ringlb-check.sh"
    # Every address change on eth0, time-stamped by the kernel event's arrival ("VIP on X").
    start_in "${NODE_NS[$node]}" "$WORK/$node/addr-events.log" ip -ts -o monitor address dev eth0
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
    start_keepalived "$node" keepalived.log
done
# Both start as BACKUP: the first election waits 3 adverts + preempt_delay (5 s).
wait_for 15 has_vip "$NS_A" || fail_early "node A never took the VIP: $(tail -5 "$WORK/a/keepalived.log")"
! has_vip "$NS_B" || fail_early "both nodes hold the VIP"
say "VIP $VIP on node A (MASTER)"

# --- The client.
start_in "$NS_C" "$WORK/client.err" python3 "$PROBE" --host "$VIP" --port 8080 --rate "$RATE" \
    --timeout 2 --max-seconds 90 --max-requests 22500 --stop-file "$WORK/stop" \
    --out "$WORK/requests.log"
CLIENT_PID=$LAST_PID
# True when node $1 answered a request that ended after time $2 (ms).
answered_after() {
    awk -v n="node-$1" -v t="$2" '$2 > t && $3 == "ok" && $4 == n { f = 1; exit } END { exit !f }' \
        "$WORK/requests.log" 2>/dev/null
}
answered_after a 0 || wait_for 5 answered_after a 0 ||
    fail_early "the client gets no answer from node A through the VIP: $(cat "$WORK/client.err")"
sleep 1

# Event times, for the report.
declare -A T=()
vip_moved_to() { # $1 = a|b: the VIP is on that node and not on the other
    local other=b
    [[ $1 == a ]] || other=a
    has_vip "${NODE_NS[$1]}" && ! has_vip "${NODE_NS[$other]}"
}
vip_on() { has_vip "${NODE_NS[$1]}"; }

# --- Case 1: ringlb killed on A.
stop_ringlb_a() {
    kill -KILL "${RINGLB_PID[a]}"
    T[kill1]=$(now_ms)
    wait "${RINGLB_PID[a]}" 2>/dev/null || true
}
stop_ringlb_a
say "case 1: killed ringlb on node A (pid ${RINGLB_PID[a]}, SIGKILL)"
if wait_for "$MOVE_WAIT_S" vip_on b; then
    say "case 1: VIP seen on node B"
else
    say "case 1: VIP did not move to node B within ${MOVE_WAIT_S}s"
fi
wait_for 3 answered_after b "${T[kill1]}" || true
sleep "$SETTLE_S"

T[restart1]=$(now_ms)
start_ringlb a ringlb-restarted.log
say "case 1: restarted ringlb on node A (pid ${RINGLB_PID[a]})"
if wait_for 15 vip_moved_to a; then
    say "case 1: VIP back on node A"
    wait_for 3 answered_after a "${T[restart1]}" || true
else
    say "case 1: VIP did not come back to node A within 15s"
fi
sleep "$SETTLE_S"

# --- Case 2: node A's host dies: no more packets leave it, then all its processes die.
ip -n "$NS_A" link set eth0 down
T[kill2]=$(now_ms)
for pid in "${KEEPALIVED_PID[a]}" "${RINGLB_PID[a]}" "${BACKEND_PID[a]}"; do
    stop_pid "$pid"
done
say "case 2: node A down (eth0 down; keepalived, ringlb and backend SIGKILLed)"
if wait_for "$MOVE_WAIT_S" vip_on b; then
    say "case 2: VIP seen on node B"
else
    say "case 2: VIP did not move to node B within ${MOVE_WAIT_S}s"
fi
wait_for 3 answered_after b "${T[kill2]}" || true
sleep "$SETTLE_S"

# A reboots: it comes up without the VIP (keepalived died holding it), then starts its services.
ip -n "$NS_A" addr del "$VIP/24" dev eth0 2>/dev/null || true
ip -n "$NS_A" link set eth0 up
T[restart2]=$(now_ms)
start_backend a
start_ringlb a ringlb-rebooted.log
wait_for 10 ready "$NS_A" || say "case 2: ringlb on node A not ready after 10s"
start_keepalived a keepalived-rebooted.log
say "case 2: node A back up (link, backend, ringlb pid ${RINGLB_PID[a]}, keepalived)"
if wait_for 15 vip_moved_to a; then
    say "case 2: VIP back on node A"
    wait_for 3 answered_after a "${T[restart2]}" || true
else
    say "case 2: VIP did not come back to node A within 15s"
fi
sleep "$SETTLE_S"
touch "$WORK/stop"
wait "$CLIENT_PID" 2>/dev/null || true
T[end]=$(($(now_ms) + 1))

# --- Report.
# First time the VIP was added on node $1 at or after $2 ms, from its address events, in ms
# with the µs as 3 decimals (the client logs the same); empty when it was not.
vip_added_ms() {
    local line stamp us
    while IFS= read -r line; do
        [[ $line == *" inet $VIP/"* && $line != *"Deleted"* ]] || continue
        stamp=${line#[}
        stamp=${stamp%%]*}
        us=$(date -d "$stamp" +%s%6N)
        if ((us >= $2 * 1000)); then
            printf '%d.%03d\n' $((us / 1000)) $((us % 1000))
            return
        fi
    done <"$WORK/$1/addr-events.log"
}
# Figures of one move: $1 event ms, $2 end of its window ms, $3 move ms (may be empty), $4 node
# expected to answer. A request belongs to the window in which it ended (so one in flight at an
# event counts for that event), and is "after the move" when it started at or after the move.
# The test waits SETTLE_S (> the client's timeout) after each move before the next event, so
# every request started around a move ends in that move's window.
# Prints: first_answer_ms failed_after failed_before slow_ok total
move_figures() {
    awk -v ev="$1" -v end="$2" -v mv="${3:-0}" -v node="node-$4" '
        $2 < ev || $2 >= end { next }  # a request belongs to the window in which it ended
        {
            total++
            if ($3 == "ok" && $4 == node && (!first || $2 < first)) first = $2
            if ($3 != "ok") { if (mv && $1 >= mv) after++; else before++ }
            if ($3 == "ok" && $2 - $1 > 1000) slow++
        }
        END { printf "%d %d %d %d %d\n", first ? first - ev : -1, after, before, slow, total }
    ' "$WORK/requests.log"
}

echo
echo "requests: $(wc -l <"$WORK/requests.log") sent at $RATE/s, $(grep -c ' ok ' "$WORK/requests.log" || true) answered;" \
    "served by: $(awk '$3 == "ok" { n[$4]++ } END { for (k in n) printf "%s %d  ", k, n[k] }' "$WORK/requests.log")"
echo "failures by kind: $(awk '$3 != "ok" { n[$3]++ } END { for (k in n) printf "%s %d  ", k, n[k] }' "$WORK/requests.log")"

verdict=PASS
worst_over=-1 sum_over=0 worst_back=-1 sum_back=0
report() { # $1 label, $2 event key, $3 window end key, $4 target node, $5 over|back
    local mv first after before slow total to=B
    [[ $4 == b ]] || to=A
    mv=$(vip_added_ms "$4" "${T[$2]}")
    read -r first after before slow total < <(move_figures "${T[$2]}" "${T[$3]}" "$mv" "$4")
    if [[ -z $mv ]]; then
        mv=${T[$3]}
        echo "$1: the VIP did not move to $to"
        verdict=FAIL
        after=$((after + before))
    fi
    if ((first < 0)); then
        echo "$1: no answer from $to"
        verdict=FAIL
        first=999999
    fi
    if [[ $5 == over ]]; then
        echo "$1: failover_ms=$first failed_after_move=$after" \
            "(VIP on $to $((${mv%.*} - T[$2])) ms after the kill; $before failed before the move," \
            "$slow answered after more than 1 s; $total requests in the window)"
        ((first > worst_over)) && worst_over=$first
        sum_over=$((sum_over + after))
        ((first <= FAILOVER_LIMIT_MS && after == 0)) || verdict=FAIL
    else
        echo "$1: failback_ms=$first failed_after_move=$after" \
            "(VIP on $to $((${mv%.*} - T[$2])) ms after the restart; $before failed before the move," \
            "$slow answered after more than 1 s; $total requests in the window)"
        ((first > worst_back)) && worst_back=$first
        sum_back=$((sum_back + after))
    fi
}
report "case 1 ringlb-killed" kill1 restart1 b over
report "case 1 ringlb-killed" restart1 kill2 a back
report "case 2 host-killed  " kill2 restart2 b over
report "case 2 host-killed  " restart2 end a back

if [[ $verdict == FAIL ]]; then
    for f in "$WORK"/a/keepalived*.log "$WORK"/b/keepalived.log; do
        echo "--- last lines of $f"
        tail -n 15 "$f"
    done
fi
echo "$verdict"
echo "failback_ms=$worst_back failed_after_move=$sum_back"
echo "failover_ms=$worst_over failed_after_move=$sum_over"
[[ $verdict == PASS ]]
