#!/usr/bin/env bash
# Active-active test: two ringlb nodes announce one VIP over BGP, a router spreads connections
# over both with ECMP (`make ecmp-test`). Everything runs in network namespaces of its own:
#
#   client 203.0.113.2 --- 203.0.113.1 router 192.0.2.1 ---+--- node1 192.0.2.11 ---+
#                          (bird2, ECMP, L4 hash)          |    (bird2, ringlb)      +--- backends
#                                                br0 in "sw"+--- node2 192.0.2.12 ---+   10.78.20.1
#                                                                                  br0   :9001 b1
#   VIP 198.51.100.10/32 on both nodes' loopback, announced by both nodes           in   :9002 b2
#                                                                                  "be"  :9003 b3
#
# bird runs router.conf, node1.conf and node2.conf from this directory unchanged (the test uses
# their addresses and interface names). ringlb on each node: 0.0.0.0:8080, `balance = "hash"`,
# `key = "$request_uri"`, `consistent = true` over b1..b3 (`loadgen serve`, answering with its
# name), the servers listed in opposite orders on the two nodes.
#
# Steps, and what each shows:
#  1. mapping: 64 keys (/k/0 ... /k/63) asked of each node directly (its own address, not the
#     VIP): same_mapping=1 when both nodes send every key to the same backend.
#  2. spread: 4 s at HA_RATE (default 250) requests/s through the VIP, one connection per request;
#     requests per node from each ringlb's ringlb_requests_total. Both must serve some.
#  3. graceful withdraw: with the client running, `drain.sh` on node1 (bird withdraws the VIP,
#     waits until no new connection arrives for 1 s, SIGTERM, waits for ringlb's exit);
#     failed_after_withdraw = requests of this phase (from 1 s before the drain to 1 s after
#     ringlb's exit, all of them, also those in flight when it began) without a 200.
#  4. node1 comes back (ringlb restarted, `drain.sh --undo`).
#  5. dead node: with the client running, node2's link goes down (nothing more leaves it), then
#     its bird and ringlb are SIGKILLed. Reroute time = from the link-down to the router's kernel
#     route losing node2's next hop (time stamped by `ip -ts monitor route` in the router's
#     namespace). BFD (100 ms x 3) is expected to do it in ~300 ms; the BGP hold time (3 s) is
#     the bound without BFD. Client failures in that window are reported, not judged.
# Client: tuning/ha-probe.py, open loop, new connection per request, timeout 2 s, each run bounded
# in time and count. Last line: `nodes=2 same_mapping=<0|1> failed_after_withdraw=<n>`; exits 1
# unless same_mapping=1, failed_after_withdraw=0, both nodes served in step 2 and the dead node
# was routed around within the hold time.
#
# Needs root, iproute2, curl, python3, bird2 (installed with apt-get if missing) and the release
# binaries (RINGLB, LOADGEN override their paths). KEEP_LOGS=1 keeps the work directory.
# Takes about 30 s.
set -euo pipefail
export LC_ALL=C TZ=UTC

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../.." && pwd)
RINGLB=${RINGLB:-$ROOT/target/release/ringlb}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
PROBE=$ROOT/tuning/ha-probe.py
RATE=${HA_RATE:-250}
VIP=198.51.100.10
HOLD_MS=3000
PREFIX=rlbbgp$$
NS_C=$PREFIX-c
NS_R=$PREFIX-r
NS_SW=$PREFIX-sw
NS_N1=$PREFIX-n1
NS_N2=$PREFIX-n2
NS_BE=$PREFIX-be
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
    echo "ecmp-test: $*" >&2
    echo "FAIL"
    echo "nodes=2 same_mapping=0 failed_after_withdraw=-1"
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail_early "needs root (network namespaces)"
[[ -x $RINGLB && -x $LOADGEN ]] ||
    fail_early "no binaries at $RINGLB and $LOADGEN: run make build first"
for cmd in ip curl python3; do
    command -v "$cmd" >/dev/null || fail_early "$cmd not found (apt-get install -y iproute2 curl python3)"
done
if ! command -v bird >/dev/null || ! command -v birdc >/dev/null; then
    say "installing bird2"
    apt-get install -y -qq bird2 >/dev/null || fail_early "could not install bird2"
fi

WORK=$(mktemp -d /tmp/ringlb-ecmp-test.XXXXXX)
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
        echo "ecmp-test: logs kept in $WORK"
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

# --- Topology.
for ns in "$NS_C" "$NS_R" "$NS_SW" "$NS_N1" "$NS_N2" "$NS_BE"; do
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
done
# client <-> router
ip -n "$NS_C" link add eth0 type veth peer name eth0 netns "$NS_R"
ip -n "$NS_C" addr add 203.0.113.2/24 dev eth0
ip -n "$NS_C" link set eth0 up
ip -n "$NS_C" route add default via 203.0.113.1
ip -n "$NS_R" addr add 203.0.113.1/24 dev eth0
ip -n "$NS_R" link set eth0 up
# router and nodes on one segment (a bridge: a node's link going down does not take the
# router's interface down, as with a switch in between)
ip -n "$NS_SW" link add br0 type bridge
ip -n "$NS_SW" link set br0 up
ip -n "$NS_R" link add eth1 type veth peer name pr netns "$NS_SW"
ip -n "$NS_R" addr add 192.0.2.1/24 dev eth1
ip -n "$NS_R" link set eth1 up
ip -n "$NS_SW" link set pr master br0 up
ip netns exec "$NS_R" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
# backends' segment
ip -n "$NS_BE" link add br0 type bridge
ip -n "$NS_BE" addr add 10.78.20.1/24 dev br0
ip -n "$NS_BE" link set br0 up
declare -A NODE_NS=([1]=$NS_N1 [2]=$NS_N2)
for n in 1 2; do
    ns=${NODE_NS[$n]}
    ip -n "$ns" link add eth0 type veth peer name "pn$n" netns "$NS_SW"
    ip -n "$NS_SW" link set "pn$n" master br0 up
    ip -n "$ns" addr add "192.0.2.1$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 192.0.2.1
    ip -n "$ns" addr add "$VIP/32" dev lo
    ip -n "$ns" link add eth1 type veth peer name "q$n" netns "$NS_BE"
    ip -n "$NS_BE" link set "q$n" master br0 up
    ip -n "$ns" addr add "10.78.20.1$n/24" dev eth1
    ip -n "$ns" link set eth1 up
done
say "namespaces up: client $NS_C, router $NS_R, nodes $NS_N1 $NS_N2, backends $NS_BE, switch $NS_SW"

# --- Backends, ringlb, bird.
for i in 1 2 3; do
    start_in "$NS_BE" "$WORK/backend-b$i.log" "$LOADGEN" serve --listen "10.78.20.1:900$i" \
        --name "b$i" --cores 1 --no-pin
done
ringlb_config() { # $@: server numbers in the order to list them
    cat <<EOF
[runtime]
workers = 1
shutdown_grace = "5s"
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
balance = "hash"
key = "\$request_uri"
consistent = true
EOF
    local i
    for i in "$@"; do
        printf '[[upstreams.app.servers]]\nname = "b%s"\naddr = "10.78.20.1:900%s"\n' "$i" "$i"
    done
}
declare -A RINGLB_PID=() BIRD_PID=()
start_ringlb() {
    start_in "${NODE_NS[$1]}" "$WORK/n$1/$2" "$RINGLB" run -c "$WORK/n$1/ringlb.toml"
    RINGLB_PID[$1]=$LAST_PID
}
ready() { ip netns exec "${NODE_NS[$1]}" curl -fsS -m 1 -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null; }
mkdir -p "$WORK/n1" "$WORK/n2" "$WORK/r"
ringlb_config 1 2 3 >"$WORK/n1/ringlb.toml"
ringlb_config 3 2 1 >"$WORK/n2/ringlb.toml"
for n in 1 2; do
    "$RINGLB" check -c "$WORK/n$n/ringlb.toml" >"$WORK/n$n/check.log" 2>&1 ||
        fail_early "ringlb check rejected the test config: $(cat "$WORK/n$n/check.log")"
    start_ringlb "$n" ringlb.log
done
both_ready() { ready 1 && ready 2; }
wait_for 10 both_ready || fail_early "ringlb not ready: $(tail -n 5 "$WORK"/n[12]/ringlb.log)"

start_bird() { # $1 namespace, $2 config, $3 work subdirectory
    bird -p -c "$2" >"$WORK/$3/bird-parse.log" 2>&1 ||
        fail_early "bird rejects $2: $(cat "$WORK/$3/bird-parse.log")"
    start_in "$1" "$WORK/$3/bird.log" bird -f -c "$2" -s "$WORK/$3/bird.ctl" -P "$WORK/$3/bird.pid"
}
# Every change of the VIP's route in the router's kernel table, time-stamped on arrival.
start_in "$NS_R" "$WORK/r/route-events.log" ip -ts -o monitor route
start_bird "$NS_R" "$HERE/router.conf" r
for n in 1 2; do
    start_bird "${NODE_NS[$n]}" "$HERE/node$n.conf" "n$n"
    BIRD_PID[$n]=$LAST_PID
done
# Next hops of the VIP in the router's kernel table.
nexthops() { ip -n "$NS_R" route show "$VIP/32" 2>/dev/null | grep -o 'via [0-9.]*' | sort | tr '\n' ' '; }
two_paths() { [[ $(nexthops) == "via 192.0.2.11 via 192.0.2.12 " ]]; }
wait_for 20 two_paths || fail_early "the router has no ECMP route to $VIP: '$(nexthops)';" \
    "bird: $(birdc -s "$WORK/r/bird.ctl" show protocols 2>&1 | tail -n 4)"
say "router: $VIP via both nodes: $(ip -n "$NS_R" route show "$VIP/32" | tr -s ' \n\t' ' ')"
bfd_up() { [[ $(birdc -s "$WORK/r/bird.ctl" show bfd sessions 2>/dev/null | grep -c ' Up ') -eq 2 ]]; }
if wait_for 5 bfd_up; then
    BFD=up
else
    BFD=down
fi
say "BFD sessions router<->nodes: $BFD"

# --- 1. The same key goes to the same backend whichever node takes it.
# shellcheck disable=SC2016 # expanded by the inner bash
ip netns exec "$NS_C" bash -c '
    for n in 1 2; do
        for k in $(seq 0 63); do
            printf "%s %s %s\n" "$n" "$k" "$(curl -fsS -m 2 "http://192.0.2.1$n:8080/k/$k" 2>/dev/null || echo -)"
        done
    done' >"$WORK/mapping.log"
read -r SAME_MAPPING MAPPING_INFO < <(awk '
    { b[$1, $2] = $3; keys[$2] = 1 }
    END {
        same = 1; n = 0
        for (k in keys) {
            n++
            if (b[1, k] == "-" || b[1, k] == "" || b[1, k] != b[2, k]) { same = 0; diff++ }
            per[b[1, k]]++
        }
        printf "%d keys=%d differing=%d per-backend:", same, n, diff + 0
        for (s in per) printf " %s=%d", s, per[s]
        printf "\n"
    }' "$WORK/mapping.log")
say "mapping: same_mapping=$SAME_MAPPING ($MAPPING_INFO)"

# --- 2. Spread over both nodes.
requests_total() {
    ip netns exec "${NODE_NS[$1]}" curl -fsS -m 1 http://127.0.0.1:9901/metrics 2>/dev/null |
        awk '/^ringlb_requests_total[{ ]/ { s += $NF } END { printf "%d\n", s }'
}
run_probe() { # $1 output, $2 max seconds: starts the client in the background, pid in CLIENT_PID
    rm -f "$WORK/stop"
    start_in "$NS_C" "$1.err" python3 "$PROBE" --host "$VIP" --port 8080 --path '/k/{n}' \
        --rate "$RATE" --timeout 2 --max-seconds "$2" --max-requests $((RATE * $2)) \
        --stop-file "$WORK/stop" --out "$1"
    CLIENT_PID=$LAST_PID
}
stop_probe() {
    touch "$WORK/stop"
    wait "$CLIENT_PID" 2>/dev/null || true
}
before1=$(requests_total 1) before2=$(requests_total 2)
run_probe "$WORK/spread.log" 4
stop_after=$(($(now_ms) + 6000))
while kill -0 "$CLIENT_PID" 2>/dev/null && (($(now_ms) < stop_after)); do sleep 0.1; done
stop_probe
SPREAD1=$(($(requests_total 1) - before1))
SPREAD2=$(($(requests_total 2) - before2))
SPREAD_SENT=$(wc -l <"$WORK/spread.log")
SPREAD_FAILED=$(awk '$3 != "ok"' "$WORK/spread.log" | wc -l)
say "spread: $SPREAD_SENT requests, node1 $SPREAD1, node2 $SPREAD2, failed $SPREAD_FAILED"

# --- 3. Graceful withdraw of node1 under load.
run_probe "$WORK/withdraw.log" 30
sleep 1
T_WITHDRAW=$(now_ms)
say "withdraw: drain.sh on node1"
drain_rc=0
ip netns exec "$NS_N1" bash "$HERE/drain.sh" --birdc-socket "$WORK/n1/bird.ctl" \
    --pid "${RINGLB_PID[1]}" --quiet 1 --max-wait 15 --stop-timeout 15 \
    >"$WORK/n1/drain.log" 2>&1 || drain_rc=$?
T_DRAINED=$(now_ms)
sed 's/^/    /' "$WORK/n1/drain.log"
# When the router's kernel route lost node1's next hop.
WITHDRAWN_MS=$(grep -F " $VIP " "$WORK/r/route-events.log" | grep -v -e Deleted -e 192.0.2.11 |
    while IFS= read -r line; do
        stamp=${line#[}
        stamp=${stamp%%]*}
        ms=$(date -d "$stamp" +%s%3N)
        if ((ms >= T_WITHDRAW)); then
            echo $((ms - T_WITHDRAW))
            break
        fi
    done)
ringlb1_rc=0
wait "${RINGLB_PID[1]}" 2>/dev/null || ringlb1_rc=$?
say "withdraw: drain.sh exit $drain_rc, node1's ringlb exit $ringlb1_rc, router next hops now: $(nexthops)"
sleep 1
stop_probe
# Every request of this phase counts, also those in flight when the drain began.
read -r FAILED_AFTER_WITHDRAW W_TOTAL W_AFTER < <(awk -v t="$T_WITHDRAW" '
    { n++; if ($3 != "ok") f++ }
    $1 >= t { a++ }
    END { printf "%d %d %d\n", f, n, a }' "$WORK/withdraw.log")
say "withdraw: $W_TOTAL requests ($W_AFTER started after the drain began), $FAILED_AFTER_WITHDRAW failed"

# --- 4. node1 back.
start_ringlb 1 ringlb-restarted.log
ip netns exec "$NS_N1" bash "$HERE/drain.sh" --undo --birdc-socket "$WORK/n1/bird.ctl" \
    --max-wait 10 >"$WORK/n1/undo.log" 2>&1 || say "drain.sh --undo failed: $(cat "$WORK/n1/undo.log")"
wait_for 10 two_paths || fail_early "node1 did not come back into the ECMP route: '$(nexthops)'"
say "node1 back: router next hops $(nexthops)"

# --- 5. node2 dies.
run_probe "$WORK/dead.log" 20
sleep 1
ip -n "$NS_N2" link set eth0 down
T_DEAD=$(now_ms)
for pid in "${BIRD_PID[2]}" "${RINGLB_PID[2]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
say "dead node: node2's link down, its bird and ringlb SIGKILLed"
one_path() { [[ $(nexthops) == "via 192.0.2.11 " ]]; }
if wait_for 10 one_path; then
    # The first event after the death that installs the VIP's route without node2's next hop.
    T_REROUTE=$(grep -F " $VIP " "$WORK/r/route-events.log" | grep -v -e Deleted -e 192.0.2.12 |
        while IFS= read -r line; do
            stamp=${line#[}
            stamp=${stamp%%]*}
            ms=$(date -d "$stamp" +%s%3N)
            if ((ms >= T_DEAD)); then
                echo "$ms"
                break
            fi
        done)
    [[ -n $T_REROUTE ]] || T_REROUTE=$(now_ms)
    REROUTE_MS=$((T_REROUTE - T_DEAD))
else
    REROUTE_MS=-1
fi
sleep 2.5
stop_probe
read -r DEAD_TOTAL DEAD_FAILED DEAD_SLOW < <(awk -v t="$T_DEAD" '
    $2 >= t { n++; if ($3 != "ok") f++; else if ($2 - $1 > 1000) s++ }
    END { printf "%d %d %d\n", n, f, s }' "$WORK/dead.log")
say "dead node: router dropped node2 after ${REROUTE_MS} ms (BFD $BFD);" \
    "$DEAD_TOTAL requests in flight or later, $DEAD_FAILED failed, $DEAD_SLOW answered after more than 1 s (SYN retransmitted)"

# --- Verdict.
echo
echo "mapping: same_mapping=$SAME_MAPPING ($MAPPING_INFO)"
echo "spread: node1=$SPREAD1 node2=$SPREAD2 of $SPREAD_SENT requests ($SPREAD_FAILED failed)"
echo "withdraw: failed_after_withdraw=$FAILED_AFTER_WITHDRAW of $W_TOTAL ($W_AFTER after the drain began); router dropped node1 after ${WITHDRAWN_MS:-?} ms; drain took $((T_DRAINED - T_WITHDRAW)) ms"
echo "dead node: reroute_ms=$REROUTE_MS (BFD $BFD) failed=$DEAD_FAILED slow=$DEAD_SLOW"
verdict=PASS
((SAME_MAPPING == 1)) || verdict=FAIL
((FAILED_AFTER_WITHDRAW == 0)) || verdict=FAIL
((SPREAD1 > 0 && SPREAD2 > 0)) || verdict=FAIL
((drain_rc == 0 && ringlb1_rc == 0)) || verdict=FAIL
((REROUTE_MS >= 0 && REROUTE_MS <= HOLD_MS)) || verdict=FAIL
if [[ $verdict == FAIL ]]; then
    for f in "$WORK"/r/bird.log "$WORK"/n1/bird.log; do
        echo "--- last lines of $f"
        tail -n 10 "$f"
    done
fi
echo "$verdict"
echo "nodes=2 same_mapping=$SAME_MAPPING failed_after_withdraw=$FAILED_AFTER_WITHDRAW"
[[ $verdict == PASS ]]
