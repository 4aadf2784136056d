#!/usr/bin/env bash
# keepalived track_script for ringlb, with sub-second detection. Install it as
# /etc/keepalived/ringlb-check.sh (root-owned, mode 0755: enable_script_security refuses scripts
# that others can write).
#
# keepalived runs a vrrp_script at most once a second (`interval` is a whole number of seconds),
# so a script that probes once per run detects a dead ringlb 1-2 s late. This one probes for
# most of that second instead: GET /ready every 50 ms for 0.9 s, and exits 1 as soon as two
# probes in a row fail (so a dead ringlb is seen within ~100 ms, a single slow probe does not
# move the VIP). It exits 0 after 0.9 s of passing probes; keepalived then starts the next run.
# Use it with `interval 1`, `timeout 2`, `fall 1`, `rise 1` (see node-a.conf).
#
# Why /ready and not /live: both fail when ringlb is dead (connection refused) or hung (no answer
# within the probe timeout); /ready also turns 503 the moment ringlb starts a graceful stop
# (SIGTERM, `systemctl stop`), when it no longer accepts new connections, so the VIP moves
# before that node refuses anyone. /live stays 200 until the process exits. /ready does not
# depend on upstreams unless [admin] ready_requires opts in (README, "Admin API").
#
# Arguments (all optional): URL host:port of the admin listener (127.0.0.1:9901), path (/ready).
# Pure bash (/dev/tcp), no process per probe.
set -u
ADDR=${1:-127.0.0.1:9901}
PATH_=${2:-/ready}
HOST=${ADDR%:*}
PORT=${ADDR##*:}
PROBE_EVERY=0.05 # s between probes
PROBE_TIMEOUT=0.2 # s for one probe's answer
RUN_FOR_US=900000 # how long one run probes before reporting success

probe() {
    local status=
    # A refused connection fails the redirection at once; a hung listener is bounded by read -t.
    { exec 3<>"/dev/tcp/$HOST/$PORT"; } 2>/dev/null || return 1
    { printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$PATH_" "$HOST" >&3; } 2>/dev/null ||
        { exec 3>&-; return 1; }
    IFS=' ' read -r -t "$PROBE_TIMEOUT" _ status _ <&3 || status=
    exec 3>&-
    [[ $status == 200 ]]
}

# A pipe nobody writes to: `read -t` on it is a sleep without starting a process.
exec {PAUSE}<> <(:)
start=${EPOCHREALTIME/./}
failed=0
while :; do
    if probe; then
        failed=0
    else
        failed=$((failed + 1))
        ((failed >= 2)) && exit 1
    fi
    ((${EPOCHREALTIME/./} - start < RUN_FOR_US)) || exit 0
    read -r -t "$PROBE_EVERY" -u "$PAUSE" _ || true
done
