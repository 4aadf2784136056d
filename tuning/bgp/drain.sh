#!/usr/bin/env bash
# Takes one ringlb node out of the ECMP group without refusing a request, or puts it back.
# Run it on the node (`make bgp-drain`, or directly):
#
#   drain.sh [OPTIONS]          1. withdraw the VIP: `birdc disable vip4` (BGP sends the withdraw)
#                               2. wait until the router has stopped sending new connections: no
#                                  new client connection (ringlb_connections_total) for --quiet
#                                  seconds, or --wait-cmd succeeds
#                               3. graceful stop: SIGTERM to --pid (or --stop-cmd): ringlb stops
#                                  accepting, /ready turns 503, in-flight requests finish within
#                                  shutdown_grace; wait until it has exited
#   drain.sh --undo [OPTIONS]   wait for /ready 200 (ringlb started again), then `birdc enable
#                               vip4`: the router adds this node's next hop back
#
# Options:
#   --birdc-socket PATH  bird's control socket (default /run/bird/bird.ctl)
#   --protocol NAME      the bird protocol that announces the VIP (default vip4, see node1.conf)
#   --admin URL          ringlb's admin listener (default http://127.0.0.1:9901); with admin.token
#                        set, put the token in RINGLB_ADMIN_TOKEN (/metrics needs it)
#   --quiet SECONDS      how long without a new connection means the router dropped us (default 2)
#   --wait-cmd CMD       instead of --quiet: wait until CMD succeeds (run with bash -c every 100 ms),
#                        e.g. a query of the router's table
#   --max-wait SECONDS   bound on step 2 and on --undo's wait for /ready (default 30); when it
#                        runs out, drain.sh says so and stops ringlb anyway (exit 2)
#   --pid PID            the ringlb process to SIGTERM and wait for
#   --stop-cmd CMD       how to stop ringlb without --pid (default: systemctl stop ringlb, which
#                        waits for the exit)
#   --stop-timeout SECS  how long to wait for --pid to exit (default 40: shutdown_grace + margin)
#   --no-stop            withdraw and wait only; leave ringlb running
#
# Why this order: an ECMP router hashes each packet to a next hop. Stopping ringlb first would
# refuse every new connection the router still sends here until it has the withdraw;
# withdrawing first moves new connections to the other nodes within milliseconds, and the
# graceful stop then ends ringlb once nothing arrives. Removing a next hop also sends the
# packets of connections still open through this node to another node, which resets them:
# short requests are rarely caught mid-exchange, long-lived connections are cut
# (../README.md, "High availability and scale-out").
set -euo pipefail

SOCKET=/run/bird/bird.ctl
PROTOCOL=vip4
ADMIN=http://127.0.0.1:9901
QUIET=2
WAIT_CMD=
MAX_WAIT=30
PID=
STOP_CMD="systemctl stop ringlb"
STOP_TIMEOUT=40
STOP=1
UNDO=0

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit "${1:-0}"
}
while (($#)); do
    case $1 in
        --birdc-socket) SOCKET=$2; shift 2 ;;
        --protocol) PROTOCOL=$2; shift 2 ;;
        --admin) ADMIN=${2%/}; shift 2 ;;
        --quiet) QUIET=$2; shift 2 ;;
        --wait-cmd) WAIT_CMD=$2; shift 2 ;;
        --max-wait) MAX_WAIT=$2; shift 2 ;;
        --pid) PID=$2; shift 2 ;;
        --stop-cmd) STOP_CMD=$2; shift 2 ;;
        --stop-timeout) STOP_TIMEOUT=$2; shift 2 ;;
        --no-stop) STOP=0; shift ;;
        --undo) UNDO=1; shift ;;
        -h | --help) usage 0 ;;
        *) echo "drain.sh: unknown option $1" >&2; usage 1 >&2 ;;
    esac
done

now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}
log() { echo "drain.sh: $*"; }
# Whether PID still runs (a zombie, exited but not yet reaped by its parent, does not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
birdc_do() { # birdc COMMAND PROTOCOL; succeeds when bird answers with "PROTOCOL: <word>"
    local out
    out=$(birdc -s "$SOCKET" "$1" "$PROTOCOL" 2>&1) || {
        log "birdc $1 $PROTOCOL failed: $out"
        return 1
    }
    grep -q "^$PROTOCOL: " <<<"$out" || {
        log "birdc $1 $PROTOCOL: unexpected answer: $out"
        return 1
    }
    log "birdc $1 $PROTOCOL: $(grep "^$PROTOCOL: " <<<"$out")"
}
admin_get() {
    local auth=()
    [[ -z ${RINGLB_ADMIN_TOKEN:-} ]] || auth=(-H "Authorization: Bearer $RINGLB_ADMIN_TOKEN")
    curl -fsS -m 1 "${auth[@]}" "$ADMIN$1"
}
# Client connections accepted so far, over all listeners; empty when /metrics does not answer.
connections_total() {
    admin_get /metrics 2>/dev/null |
        awk '/^ringlb_connections_total[{ ]/ { s += $NF; f = 1 } END { if (f) printf "%d\n", s }'
}

if ((UNDO)); then
    end=$(($(now_ms) + MAX_WAIT * 1000))
    until admin_get /ready >/dev/null 2>&1; do
        (($(now_ms) < end)) || { log "ringlb at $ADMIN not ready after ${MAX_WAIT}s; VIP not announced"; exit 1; }
        sleep 0.1
    done
    birdc_do enable "$PROTOCOL"
    exit 0
fi

# 1. Withdraw.
birdc_do disable "$PROTOCOL"
t_withdraw=$(now_ms)

# 2. Wait until no new connection arrives (or --wait-cmd says the router dropped us).
status=0
end=$((t_withdraw + MAX_WAIT * 1000))
quiet_ms=$(awk -v s="$QUIET" 'BEGIN { printf "%d", s * 1000 }')
if [[ -n $WAIT_CMD ]]; then
    until bash -c "$WAIT_CMD"; do
        (($(now_ms) < end)) || { status=2; break; }
        sleep 0.1
    done
else
    last=$(connections_total)
    [[ -n $last ]] || log "no ringlb_connections_total at $ADMIN/metrics: waiting ${QUIET}s blind"
    last_change=$(now_ms)
    while (($(now_ms) - last_change < quiet_ms)); do
        (($(now_ms) < end)) || { status=2; break; }
        sleep 0.1
        cur=$(connections_total)
        if [[ $cur != "$last" ]]; then
            last=$cur
            last_change=$(now_ms)
        fi
    done
fi
if ((status == 2)); then
    log "still receiving new connections ${MAX_WAIT}s after the withdraw (another route to this node?); stopping anyway"
else
    log "no new connections $(($(now_ms) - t_withdraw)) ms after the withdraw"
fi

# 3. Graceful stop.
if ((STOP)); then
    if [[ -n $PID ]]; then
        kill -TERM "$PID"
        log "SIGTERM to ringlb (pid $PID); waiting for it to finish in-flight requests"
        end=$(($(now_ms) + STOP_TIMEOUT * 1000))
        while alive "$PID"; do
            (($(now_ms) < end)) || { log "pid $PID still running after ${STOP_TIMEOUT}s"; exit 1; }
            sleep 0.05
        done
    else
        log "running: $STOP_CMD"
        bash -c "$STOP_CMD"
    fi
    log "ringlb stopped $(($(now_ms) - t_withdraw)) ms after the withdraw"
fi
exit "$status"
