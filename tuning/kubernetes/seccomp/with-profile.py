#!/usr/bin/python3
"""Runs a command under a Docker/OCI-style seccomp JSON profile, as a container runtime would.

Usage: with-profile.py PROFILE.json COMMAND [ARG...]

For testing ringlb.json on a host without Kubernetes. Needs libseccomp's Python bindings
(Debian: apt-get install python3-seccomp; run with /usr/bin/python3). Handles what ringlb.json
uses: defaultAction/defaultErrnoRet and ALLOW or ERRNO rules without argument filters.
"""
import errno
import json
import os
import sys

import seccomp


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_ret)
    raise SystemExit(f"with-profile.py: unsupported action {name}")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.strip().splitlines()[2])
    with open(sys.argv[1], encoding="utf-8") as f:
        profile = json.load(f)
    default_errno = profile.get("defaultErrnoRet", errno.EPERM)
    flt = seccomp.SyscallFilter(defaction=action(profile["defaultAction"], default_errno))
    unknown = []
    for rule in profile["syscalls"]:
        if rule.get("args"):
            raise SystemExit("with-profile.py: argument filters are not supported")
        act = action(rule["action"], rule.get("errnoRet", default_errno))
        for name in rule["names"]:
            try:
                flt.add_rule(act, name)
            except (RuntimeError, ValueError):
                unknown.append(name)  # not a system call on this architecture, as runc skips it
    if unknown:
        print(f"with-profile.py: skipped {len(unknown)} names unknown here", file=sys.stderr)
    flt.load()
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
