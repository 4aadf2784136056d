#!/usr/bin/env bash
# Writes ringlb.json: a seccomp allowlist for the ringlb container, the same policy as the systemd
# unit's SystemCallFilter (systemd's @system-service group, expanded) plus io_uring_setup,
# io_uring_enter and io_uring_register, which RuntimeDefault no longer allows (containerd >= 2.0,
# Docker >= 25), less the namespace and userfaultfd calls a proxy never makes (container escapes
# start there). Anything else fails with EPERM. Needs systemd-analyze and python3.
#
# Usage: tuning/kubernetes/seccomp/generate.sh [OUT]   (default: ringlb.json beside this script)
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$HERE/ringlb.json}
command -v systemd-analyze >/dev/null || {
    echo "generate.sh: systemd-analyze not found (apt-get install -y systemd)" >&2
    exit 1
}

systemd-analyze syscall-filter --no-pager 2>/dev/null | python3 -c '
import json, sys

groups, current = {}, None
for line in sys.stdin:
    word = line.strip()
    if not line.startswith(" ") and word.startswith("@"):
        current = groups.setdefault(word, [])
    elif current is not None and word and not word.startswith("#"):
        current.append(word)

def expand(group, seen=()):
    names = set()
    for member in groups[group]:
        if member.startswith("@"):
            if member not in seen:
                names |= expand(member, seen + (group,))
        else:
            names.add(member)
    return names

io_uring = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
never = {"setns", "unshare", "userfaultfd"}
names = sorted((expand("@system-service") | io_uring) - never)
profile = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
}
json.dump(profile, sys.stdout, indent=2)
print()
' >"$OUT.tmp"
mv -f -- "$OUT.tmp" "$OUT"
echo "generate.sh: wrote $OUT ($(grep -c '^        "' "$OUT") system calls allowed, from $(systemd-analyze --version | head -n 1))"
