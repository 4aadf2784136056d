#!/usr/bin/env python3
"""Where goodput goes past saturation: one proxy's overload run taken apart.

    python3 benches/overload.py [ringlb-binary] [extra runtime TOML line]

ringlb (io_uring and epoll engines of one binary), nginx and HAProxy, one worker each on CPU 0,
the three `loadgen serve` backends and the load generator on CPU 1 (as in compare.py). For each
target, ROUNDS interleaved rounds (default 3) of: closed loop c50 and c200 (req/s, proxy CPU
per request), then open loop at 1.5x the c50 peak with 200 connections and a 1 s timeout. For
the overload it prints the goodput (backends' count per second), the load generator's own
rate (it waits for late answers, so about the offered rate) and errors, how busy each CPU was
(/proc/stat) and the proxy itself (its /proc/PID/stat), so a loss of goodput can be put on the proxy's CPU or on CPU 1's.
QUOTA=0.5 puts each proxy in its own cgroup (v1 `cpu` controller) limited to that share of a
CPU (10 ms period), so the proxy, not CPU 1, is what saturates.
Uses compare.py's helpers; every process started here is stopped by pid.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def cpu_busy():
    """(busy, total) jiffies of CPU 0 and CPU 1."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 ") or line.startswith("cpu1 "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out[line[:4]] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def overload(name, pids, peak):
    offered = int(peak * 1.5)
    before, t0 = c.backend_requests(), time.time()
    s0, p0 = cpu_busy(), c.cpu_ticks(pids)
    cmd = ["taskset", "-c", "1", os.path.join(c.BIN, "loadgen"), "run", "--no-pin", "-t", "1",
           "-c", "200", "-d", c.SECONDS, "--warmup", "1s", "--json", "-R", str(offered),
           "--timeout", "1s", c.url(name)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    s1, p1, t1 = cpu_busy(), c.cpu_ticks(pids), time.time()
    served = c.backend_requests() - before
    res = json.loads(out.stdout) if out.returncode == 0 else {}
    busy = {k: (s1[k][0] - s0[k][0]) / max(1, s1[k][1] - s0[k][1]) for k in s1}
    return {
        "peak": peak,
        "good": served / (t1 - t0),
        "share": served / (t1 - t0) / peak,
        "lg_rps": res.get("rps"),
        "errors": res.get("errors"),
        "cpu0": busy["cpu0"],
        "cpu1": busy["cpu1"],
        "proxy_cpu": (p1 - p0) / c.TICK / (t1 - t0),
        "proxy_us": (p1 - p0) * 1e6 / c.TICK / max(1, served),
    }


CGROUP = "/sys/fs/cgroup/cpu"


def limit(name, pids, quota):
    """Moves the processes into their own cgroup limited to `quota` of a CPU; its path."""
    path = os.path.join(CGROUP, f"ringlb-overload-{os.getpid()}-{name.replace(' ', '_').strip('()')}")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
        f.write("10000")
    with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
        f.write(str(int(10000 * quota)))
    for pid in pids:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    return path


def unlimit(paths):
    for path in paths:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                left = f.read().split()
            for pid in left:
                with open(os.path.join(CGROUP, "cgroup.procs"), "w") as f:
                    f.write(pid)
            os.rmdir(path)
        except OSError as e:
            print(f"{path}: {e}", file=sys.stderr)


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(c.BIN, "ringlb")
    runtime = sys.argv[2] + "\n" if len(sys.argv) > 2 else ""
    rounds = int(os.environ.get("ROUNDS", "3"))
    quota = float(os.environ.get("QUOTA", "0"))
    groups = []
    tmp = tempfile.mkdtemp(prefix="ringlb-overload-")
    try:
        c.start_backends()
        pids = {
            "ringlb": c.start_ringlb(tmp, "ringlb", binary, 18071, 19971, runtime),
            "ringlb (epoll)": c.start_ringlb(tmp, "ringlb (epoll)", binary, 18072, 19972,
                                             runtime + 'engine = "epoll"\n'),
        }
        ng = c.start_nginx(tmp)
        hconf = os.path.join(tmp, "haproxy.cfg")
        with open(hconf, "w") as f:
            f.write(c.haproxy_config())
        ha = c.start(["taskset", "-c", "0", "haproxy", "-f", hconf])
        c.PORTS["haproxy"] = 18083
        for port in [18071, 18072, 18082, 18083]:
            c.wait_port(port)
        time.sleep(0.5)
        pids["nginx"], pids["haproxy"] = c.children(ng.pid), [ha.pid]
        names = ["ringlb", "ringlb (epoll)", "nginx", "haproxy"]
        if quota:
            for n in names:
                groups.append(limit(n, [ng.pid] + pids[n] if n == "nginx" else pids[n], quota))
        runs = {n: [] for n in names}
        for rnd in range(rounds):
            for n in names[rnd % len(names):] + names[: rnd % len(names)]:
                c50 = c.closed_loop(n, pids[n], 50)
                c200 = c.closed_loop(n, pids[n], 200)
                o = overload(n, pids[n], c50[0])
                o["c50"], o["c200"], o["c200_us"] = c50[0], c200[0], c200[1]
                o["share200"] = o["good"] / c200[0]
                runs[n].append(o)
                print(f"round {rnd + 1} {n}: " + json.dumps(o), file=sys.stderr)
        keys = ["c50", "c200", "c200_us", "good", "share", "share200", "lg_rps", "cpu0", "cpu1",
                "proxy_cpu", "proxy_us"]
        print("| target | c50 req/s | c200 req/s | c200 µs/req | goodput | goodput/c50 | "
              "goodput/c200 | loadgen rps | CPU0 busy | CPU1 busy | proxy CPU | proxy µs/req |")
        print("|---|" + "---:|" * len(keys))
        for n in names:
            med = {k: statistics.median(r[k] for r in runs[n] if r[k] is not None) for k in keys}
            print(f"| {n} | {med['c50']:,.0f} | {med['c200']:,.0f} | {med['c200_us']:.1f} | "
                  f"{med['good']:,.0f} | {med['share']:.2f} | {med['share200']:.2f} | "
                  f"{med['lg_rps']:,.0f} | "
                  f"{med['cpu0']:.2f} | {med['cpu1']:.2f} | {med['proxy_cpu']:.2f} | "
                  f"{med['proxy_us']:.1f} |")
    finally:
        c.stop_all()
        unlimit(groups)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
