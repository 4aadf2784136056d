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
        for p in c.BACKENDS:
            c.start(["taskset", "-c", "1", os.path.join(c.BIN, "loadgen"), "serve", "--no-pin",
                     "--listen", f"127.0.0.1:{p}", "--name", f"be{p}"])
        pids = {}
        for name, binary, port, admin in [("old", old, 18071, 19971), ("new", new, 18072, 19972)]:
            path = os.path.join(tmp, f"{name}.toml")
            with open(path, "w") as f:
                f.write(c.ringlb_config(port, admin, runtime))
            p = c.start(["taskset", "-c", "0", binary, "run", "-c", path],
                        env={**os.environ, "RUST_LOG": "warn"})
            pids[name], c.PORTS[name] = [p.pid], port
        tls = c.make_cert(tmp)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(c.nginx_config(tmp, tls))
        ng = c.start(["taskset", "-c", "0", "nginx", "-c", conf, "-p", tmp])
        c.PORTS["nginx"] = 18082
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
