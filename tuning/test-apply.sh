#!/usr/bin/env bash
# Tests tuning/apply.sh inside a fresh network namespace, where net.* sysctls are private, with
# --only-net so that global keys (fs.*, net.core.netdev_*) are never written: the host's own
# settings stay as they were, and the last check proves it.
#
# Needs root (ip netns). Prints "N passed, M failed" last; exits 1 on any failure.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
APPLY=$HERE/apply.sh
NS=ringlb-apply-test-$$
WORK=$(mktemp -d /tmp/ringlb-apply-test.XXXXXX)
STATE=$WORK/state
OUT=$WORK/out
ERR=$WORK/err
passed=0
failed=0

cleanup() {
    ip netns del "$NS" 2>/dev/null || true
    rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $(id -u) -ne 0 ]]; then
    echo "test-apply.sh: needs root (it creates a network namespace)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
not_ok() {
    echo "not ok - $1"
    [[ -z ${2:-} ]] || printf '    %s\n' "$2"
    [[ ! -s $OUT ]] || sed 's/^/    out: /' "$OUT"
    [[ ! -s $ERR ]] || sed 's/^/    err: /' "$ERR"
    failed=$((failed + 1))
}

# Runs apply.sh in the namespace as root; output in $OUT/$ERR, exit code in $rc.
apply_ns() {
    rc=0
    ip netns exec "$NS" env RINGLB_STATE_DIR="$STATE" "$APPLY" "$@" >"$OUT" 2>"$ERR" || rc=$?
}
# The same as user nobody.
apply_ns_nobody() {
    rc=0
    ip netns exec "$NS" setpriv --reuid=65534 --regid=65534 --clear-groups \
        env RINGLB_STATE_DIR="$STATE" "$APPLY" "$@" >"$OUT" 2>"$ERR" || rc=$?
}

# Every key of both profiles.
mapfile -t ALL_KEYS < <(sed -n 's/^\([a-z][a-z0-9_.-]*\) *=.*/\1/p' "$HERE"/sysctl/*.conf | sort -u)

# Raw values ("key=value" lines, tabs and all) of every key visible, in the namespace or on the host.
snapshot() {
    local where=$1 key path
    for key in "${ALL_KEYS[@]}"; do
        path=/proc/sys/${key//.//}
        if [[ $where == ns ]]; then
            ip netns exec "$NS" sh -c "[ -e $path ] && printf '%s=%s\n' $key \"\$(cat $path)\"" || true
        else
            [[ ! -e $path ]] || printf '%s=%s\n' "$key" "$(<"$path")"
        fi
    done
}

# The value of one key in the namespace, whitespace collapsed as apply.sh writes it.
ns_value() {
    local fields
    read -r -a fields < <(ip netns exec "$NS" cat "/proc/sys/${1//.//}")
    echo "${fields[*]}"
}

# True when every key of profile $1 writable in the namespace reads back the profile's value
# (floors: at least the value).
ns_matches_profile() {
    local key value line now floor=0 bad=0
    while IFS= read -r line; do
        case $line in
            '# floor:'*) floor=1 ;;
            '#'* | '') floor=0 ;;
            *=*)
                key=${line%% =*}
                value=${line#*= }
                if [[ $key == net.* ]] && ip netns exec "$NS" test -w "/proc/sys/${key//.//}"; then
                    now=$(ns_value "$key")
                    if [[ $now != "$value" ]] && ! ((floor == 1 && now >= value)); then
                        echo "    $key is '$now', want '$value'"
                        bad=1
                    fi
                fi
                floor=0
                ;;
        esac
    done <"$1"
    ((bad == 0))
}

ip netns add "$NS"
HOST_BEFORE=$(snapshot host)
NS_BEFORE=$(snapshot ns)
[[ -n $NS_BEFORE ]] || {
    echo "test-apply.sh: no profile key is visible in a network namespace" >&2
    echo "0 passed, 1 failed"
    exit 1
}

# 1. A dry run shows old -> new and changes nothing.
apply_ns --dry-run --only-net throughput
if ((rc == 0)) && grep -q 'would-set net.core.somaxconn: [0-9]* -> 65535' "$OUT" &&
    grep -q 'nothing written' "$OUT" && [[ $(snapshot ns) == "$NS_BEFORE" ]] && [[ ! -e $STATE ]]; then
    ok "dry run shows the diff and writes nothing"
else
    not_ok "dry run shows the diff and writes nothing" "rc=$rc"
fi

# 2. Not root: a refusal with a message, exit 1, nothing changed; a dry run still works.
apply_ns_nobody --only-net throughput
if ((rc == 1)) && grep -q 'must run as root' "$ERR" && [[ $(snapshot ns) == "$NS_BEFORE" ]]; then
    ok "refuses to apply when not root"
else
    not_ok "refuses to apply when not root" "rc=$rc"
fi
apply_ns_nobody --revert
if ((rc == 1)) && grep -q 'must run as root' "$ERR"; then
    ok "refuses to revert when not root"
else
    not_ok "refuses to revert when not root" "rc=$rc"
fi
apply_ns_nobody --dry-run --only-net latency
if ((rc == 0)) && grep -q 'would-set' "$OUT" && [[ $(snapshot ns) == "$NS_BEFORE" ]]; then
    ok "dry run works without root"
else
    not_ok "dry run works without root" "rc=$rc"
fi

# 3. Apply: every net key takes the profile's value, global keys are skipped, a backup is saved.
apply_ns --only-net throughput
if ((rc == 0)) && grep -q '^  changed   net.core.somaxconn: [0-9]* -> 65535$' "$OUT" &&
    grep -q 'skipped   fs.file-max (--only-net' "$OUT" && ns_matches_profile "$HERE/sysctl/throughput.conf"; then
    ok "applies the throughput profile, printing old -> new"
else
    not_ok "applies the throughput profile, printing old -> new" "rc=$rc"
fi
if [[ -f $STATE/sysctl-backup.conf ]] && ! grep -q '^fs\.' "$STATE/sysctl-backup.conf" &&
    grep -q '^net.core.somaxconn = ' "$STATE/sysctl-backup.conf"; then
    ok "saves the replaced values before writing"
else
    not_ok "saves the replaced values before writing"
fi

# 4. Applying again changes nothing.
apply_ns --only-net throughput
if ((rc == 0)) && grep -q ': 0 changed' "$OUT"; then
    ok "a second apply is a no-op"
else
    not_ok "a second apply is a no-op" "rc=$rc"
fi

# 5. Another profile on top: the backup keeps the first (original) values.
apply_ns --only-net latency
if ((rc == 0)) && ns_matches_profile "$HERE/sysctl/latency.conf"; then
    ok "applies the latency profile over throughput"
else
    not_ok "applies the latency profile over throughput" "rc=$rc"
fi
bad_backup=
[[ -f $STATE/sysctl-backup.conf ]] || bad_backup="no backup file"
[[ -n $bad_backup ]] || while IFS= read -r line; do
    [[ $line == '#'* || -z $line ]] && continue
    key=${line%% =*}
    value=${line#*= }
    original=$(grep "^$key=" <<<"$NS_BEFORE" | cut -d= -f2- | tr -s '\t ' '  ')
    [[ $original == "$value" ]] || bad_backup+="$key: backup '$value', original '$original'; "
done <"$STATE/sysctl-backup.conf"
if [[ -z $bad_backup ]] && grep -q '^net.core.somaxconn = ' "$STATE/sysctl-backup.conf"; then
    ok "the backup holds the values from before the first apply"
else
    not_ok "the backup holds the values from before the first apply" "$bad_backup"
fi

# 6. A floor is never lowered; a bad value fails, is reported, and is still revertible.
cat >"$WORK/custom.conf" <<'EOF'
# floor: raise only
net.core.somaxconn = 100
# not a number: the kernel refuses it
net.ipv4.tcp_fin_timeout = soon
EOF
apply_ns --only-net "$WORK/custom.conf"
if ((rc == 1)) && grep -q 'unchanged net.core.somaxconn = 65535 (at least 100)' "$OUT" &&
    grep -q 'FAILED    net.ipv4.tcp_fin_timeout' "$ERR" && [[ $(ns_value net.ipv4.tcp_fin_timeout) == 15 ]]; then
    ok "keeps a floor above its value and reports a write the kernel refuses"
else
    not_ok "keeps a floor above its value and reports a write the kernel refuses" "rc=$rc"
fi
printf 'net.core.somaxconn 100\n' >"$WORK/broken.conf"
apply_ns --only-net "$WORK/broken.conf"
if ((rc == 1)) && grep -q "broken.conf:1: expected 'key = value'" "$ERR"; then
    ok "rejects a malformed profile with its line number"
else
    not_ok "rejects a malformed profile with its line number" "rc=$rc"
fi

# 7. Revert: a dry run first, then the exact previous values, then nothing left to revert.
apply_ns --dry-run --revert
if ((rc == 0)) && grep -q 'would-set net.core.somaxconn: 65535 -> ' "$OUT" &&
    [[ $(ns_value net.core.somaxconn) == 65535 ]] && [[ -f $STATE/sysctl-backup.conf ]]; then
    ok "revert --dry-run shows the diff and writes nothing"
else
    not_ok "revert --dry-run shows the diff and writes nothing" "rc=$rc"
fi
apply_ns --revert
NS_AFTER=$(snapshot ns)
if ((rc == 0)) && [[ $NS_AFTER == "$NS_BEFORE" ]]; then
    ok "revert restores the exact previous values"
else
    not_ok "revert restores the exact previous values" \
        "rc=$rc; diff: $(diff <(echo "$NS_BEFORE") <(echo "$NS_AFTER") | tr '\n' ' ')"
fi
if [[ ! -e $STATE/sysctl-backup.conf && -f $STATE/sysctl-backup.conf.reverted ]]; then
    ok "revert retires the backup"
else
    not_ok "revert retires the backup"
fi
apply_ns --revert
if ((rc == 1)) && grep -q 'nothing to revert' "$ERR"; then
    ok "a second revert says there is nothing to revert"
else
    not_ok "a second revert says there is nothing to revert" "rc=$rc"
fi

# 8. The host (root network namespace, global keys) was never touched.
if [[ $(snapshot host) == "$HOST_BEFORE" ]]; then
    ok "host sysctls unchanged"
else
    not_ok "host sysctls unchanged" "$(diff <(echo "$HOST_BEFORE") <(snapshot host) | tr '\n' ' ')"
fi

echo "$passed passed, $failed failed"
((failed == 0))
