#!/usr/bin/env python3
"""Engines of one ringlb binary against each other and nginx, in one run (ab.py compares two
binaries; this compares `runtime.engine` values of one).

    python3 benches/ab_engines.py target/release/ringlb io_uring glommio epoll
    BODY_PATH=/size/65536 IDLE=0 python3 benches/ab_engines.py target/release/ringlb io_uring epoll

Each engine: one worker on CPU 0 in front of the same three `loadgen serve` backends (CPU 1);
nginx as the yardstick; closed loop c50 small body, ROUNDS interleaved rounds (default 5);
then IDLE (default 5000) idle keep-alive connections per target: VmRSS delta / connection.
"""
import os, resource, statistics, sys, tempfile, shutil, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402

# Ports of our own: other benchmarks may run on this machine with compare.py's defaults.
c.BACKENDS = [29101, 29102, 29103]

def main():
    binary = os.path.abspath(sys.argv[1])
    engines = sys.argv[2:]
    rounds = int(os.environ.get("ROUNDS", "5"))
    idle = int(os.environ.get("IDLE", "5000"))
    path = os.environ.get("BODY_PATH", "/")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="ringlb-eng-")
    try:
        c.start_backends()
        pids = {e: c.start_ringlb(tmp, e, binary, 28071 + i, 29971 + i, f'engine = "{e}"\n')
                for i, e in enumerate(engines)}
        ng = c.start_nginx(tmp, 28082)
        for n in engines + ["nginx"]:
            c.wait_port(c.PORTS[n])
        pids["nginx"] = c.children(ng.pid)
        assert pids["nginx"] and ng.poll() is None, "our nginx runs"
        names = engines + ["nginx"]
        runs = {n: [] for n in names}
        for rnd in range(rounds):
            k = rnd % len(names)
            for n in names[k:] + names[:k]:
                runs[n].append(c.closed_loop(n, pids[n], path=path))
                print(f"round {rnd + 1} {n}: {runs[n][-1]}", file=sys.stderr)
        if rounds == 0:
            runs = None
        med = {} if not runs else {n: (statistics.median(r[0] for r in runs[n]), statistics.median(r[1] for r in runs[n]))
               for n in names}
        if med:
            print(f"path {path}, c50, {rounds} rounds, medians")
            print("| target | req/s | CPU µs/request | CPU vs nginx |\n|---|---:|---:|---:|")
            for n in names:
                print(f"| {n} | {med[n][0]:,.0f} | {med[n][1]:.1f} | {med[n][1] / med['nginx'][1]:.2f} |")
        if idle:
            print(f"\n| target | VmRSS before (KiB) | with {idle} idle conns (KiB) | bytes/conn |\n|---|---:|---:|---:|")
            for n in names:
                before = c.rss_kib(pids[n])
                socks = c.idle_connections(c.PORTS[n], idle)
                time.sleep(1.0)
                after = c.rss_kib(pids[n])
                print(f"| {n} | {before:,} | {after:,} | {(after - before) * 1024 / idle:,.0f} |")
                for s in socks:
                    s.close()
                time.sleep(1.0)
    finally:
        c.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
