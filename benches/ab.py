#!/usr/bin/env python3
"""Two ringlb binaries against each other, in one run: before and after a change.

    python3 benches/ab.py OLD_RINGLB NEW_RINGLB [extra runtime TOML line]

Each binary runs one worker on CPU 0 in front of the same three `loadgen serve` backends (CPU
1), nginx too as the yardstick; closed loop at 50 connections, small body, ROUNDS interleaved
rounds (default 5; BODY_PATH=/size/65536 for another body). Prints req/s and CPU µs/request
per binary and the ratio new/old.
Uses benches/compare.py's helpers; every process started is stopped by pid.
"""

import os
import statistics
import sys
import tempfile
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    old, new = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    runtime = sys.argv[3] + "\n" if len(sys.argv) > 3 else ""
    rounds = int(os.environ.get("ROUNDS", "5"))
    tmp = tempfile.mkdtemp(prefix="ringlb-ab-")
    try:
        c.start_backends()
        pids = {name: c.start_ringlb(tmp, name, binary, port, admin, runtime)
                for name, binary, port, admin in [("old", old, 18071, 19971),
                                                  ("new", new, 18072, 19972)]}
        ng = c.start_nginx(tmp)
        for port in [18071, 18072, 18082]:
            c.wait_port(port)
        pids["nginx"] = c.children(ng.pid)
        names = ["old", "new", "nginx"]
        runs = {n: [] for n in names}
        for rnd in range(rounds):
            for n in names[rnd % 3:] + names[: rnd % 3]:
                runs[n].append(c.closed_loop(n, pids[n], path=os.environ.get("BODY_PATH", "/")))
                print(f"round {rnd + 1} {n}: {runs[n][-1]}", file=sys.stderr)
        med = {n: (statistics.median(r[0] for r in runs[n]), statistics.median(r[1] for r in runs[n]))
               for n in names}
        print(f"| binary | req/s | CPU µs/request | CPU vs nginx |\n|---|---:|---:|---:|")
        for n in names:
            print(f"| {n} | {med[n][0]:,.0f} | {med[n][1]:.1f} | {med[n][1] / med['nginx'][1]:.2f} |")
        print(f"\nnew/old: req/s {med['new'][0] / med['old'][0]:.3f}, "
              f"CPU per request {med['new'][1] / med['old'][1]:.3f} ({rounds} rounds, medians)")
    finally:
        c.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
