#!/usr/bin/env bash
# Checks ringlb.service (or the unit given) with `systemd-analyze verify` (syntax, known keys,
# executable paths; any message fails) and prints its `systemd-analyze security` exposure,
# installing nothing: a private mount namespace puts a ringlb binary at /usr/local/bin/ringlb for
# the check only (target/release/ringlb when built, else a stub). Needs root and systemd-analyze.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
UNIT=${1:-$HERE/ringlb.service}
BIN=${RINGLB_BIN:-$HERE/../../target/release/ringlb}

command -v systemd-analyze >/dev/null || {
    echo "verify.sh: systemd-analyze not found (apt-get install -y systemd)" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || {
    echo "verify.sh: needs root for a private mount namespace" >&2
    exit 1
}

stub=$(mktemp -d /tmp/ringlb-unit-verify.XXXXXX)
trap 'rm -rf -- "$stub"' EXIT

# Type=notify-reload needs systemd 253; an older systemd-analyze rejects it. Then the unit is
# verified as the documented fallback (Type=notify, no ReloadSignal=), saying so.
version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
if [[ $version =~ ^[0-9]+$ ]] && ((version < 253)) && grep -q '^Type=notify-reload' "$UNIT"; then
    echo "verify.sh: systemd $version < 253 does not know Type=notify-reload: verifying the Type=notify fallback"
    mkdir -p "$stub/unit"
    sed -e 's/^Type=notify-reload$/Type=notify/' -e '/^ReloadSignal=/d' "$UNIT" >"$stub/unit/$(basename -- "$UNIT")"
    UNIT=$stub/unit/$(basename -- "$UNIT")
fi
if [[ -x $BIN ]]; then
    cp -- "$BIN" "$stub/ringlb"
else
    printf '#!/bin/sh\nexit 0\n' >"$stub/ringlb"
    chmod 755 "$stub/ringlb"
fi

# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private sh -ec '
    mount --bind "$1" /usr/local/bin
    # verify exits 0 on "Unknown key ..., ignoring": any message at all is a failure here.
    out=$(systemd-analyze verify "$2" 2>&1) || { echo "$out" >&2; exit 1; }
    if [ -n "$out" ]; then echo "$out" >&2; echo "verify.sh: $2: FAILED" >&2; exit 1; fi
    echo "verify.sh: systemd-analyze verify $2: OK"
    systemd-analyze security --offline=yes "$2" | tail -n 1
' verify "$stub" "$UNIT"
