#!/usr/bin/env python3
"""Engine prototypes vs nginx / HAProxy / ringlb, in one run, interleaved.

Every server: one thread (worker) on CPU 0; 3 `loadgen serve` backends and the load
generator share CPU 1 (as benches/compare.py). Measured per target:
  - closed loop c50 keep-alive: req/s, p99, server CPU µs/request ((utime+stime of the server
    process over the run) / requests, warm-up included on both sides), ROUNDS interleaved
    rounds, medians;
  - syscalls/request: one extra run with `perf stat -e raw_syscalls:sys_enter,...` attached;
  - RSS per idle keep-alive client connection (IDLE connections, one request each);
  - open loop (proxy targets): p50/p99 at RATE req/s.
Writes results.json and results.md beside this file. Every load run is bounded; every process
started here is stopped by pid.
"""

import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("ENGINES_BIN", "/work/engines-target/release")
PROJ = os.environ.get("PROJECT_BIN", "/work/engines-bin")  # copies of loadgen and ringlb
LOADGEN = os.path.join(PROJ, "loadgen")
RINGLB = os.path.join(PROJ, "ringlb")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = os.environ.get("SECONDS_PER_RUN", "4s")
CONNS = int(os.environ.get("CONNS", "50"))
IDLE = int(os.environ.get("IDLE_CONNS", "5000"))
# Open-loop rate, req/s (0: skip). 60% of nginx's closed-loop max, and 20000, overloaded CPU 1 (load
# generator + backends) on the 2-CPU machine: every target's p50 went to seconds.
RATE = os.environ.get("RATE", "8000")
ONLY = os.environ.get("ONLY", "")  # comma-separated target names, for quick checks
# Which measurements to run; a subset merges into the existing results.json.
NAME = os.environ.get("RESULTS_NAME", "results")  # -> NAME.json, NAME.md
PHASES = set(os.environ.get("PHASES", "closed,syscalls,rss,open").split(","))
BACKENDS = [19301, 19302, 19303]
TICK = os.sysconf("SC_CLK_TCK")
SYSCALLS = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_io_uring_enter",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_readv",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "context-switches",
]

procs = []


def start(cmd, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_port(port, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port}")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def loadgen(port, extra, seconds=SECONDS, warmup="1s"):
    cmd = [
        "taskset", "-c", "1", LOADGEN, "run", "--no-pin", "-t", "1", "-c", str(CONNS),
        "-d", seconds, "--warmup", warmup, "--json",
    ] + extra + [f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed on {port}: {out.stderr}")
    return json.loads(out.stdout)


def configs(tmp):
    ups = "".join(f"  server 127.0.0.1:{p};\n" for p in BACKENDS)
    nginx = f"""worker_processes 1;
worker_cpu_affinity 01;
worker_rlimit_nofile 20000;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
daemon off;
events {{ worker_connections 19000; }}
http {{
  access_log off;
  upstream app {{
{ups}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:18501 backlog=4096;
    keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 "Hello, world\\n"; }}
  }}
  server {{
    listen 127.0.0.1:18601 backlog=4096;
    keepalive_requests 1000000;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
    hsrv = "".join(f"  server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(BACKENDS))
    haproxy = f"""global
  nbthread 1
  cpu-map 1/1 0
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 75s
  http-reuse always
frontend fe
  bind 127.0.0.1:18602
  default_backend be
backend be
  balance roundrobin
{hsrv}"""
    servers = "".join(f'[[upstreams.app.servers]]\naddr = "127.0.0.1:{p}"\n' for p in BACKENDS)
    ringlb = (
        "[runtime]\nworkers = 1\ncpus = [0]\n[admin]\nlisten = \"127.0.0.1:19993\"\n"
        "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:18603\"\nbacklog = 4096\n"
        "[[routes]]\nlistener = \"http\"\nupstream = \"app\"\n[upstreams.app]\nkeepalive = 64\n"
        + servers
    )
    paths = {}
    for name, text in [("nginx.conf", nginx), ("haproxy.cfg", haproxy), ("ringlb.toml", ringlb)]:
        paths[name] = os.path.join(tmp, name)
        with open(paths[name], "w") as f:
            f.write(text)
    return paths


# name -> (mode, port, command or None for the shared nginx/haproxy/ringlb processes)
def targets():
    be = [f"127.0.0.1:{p}" for p in BACKENDS]
    t = {}
    proto = [
        ("glommio", "eng-glommio", []),
        ("uring", "eng-uring", []),
        ("uring no-defer", "eng-uring", ["--no-defer"]),
        ("uring no-multishot", "eng-uring", ["--no-multishot"]),
        ("uring no-flags", "eng-uring", ["--no-flags"]),
        ("compio", "eng-compio", []),
        ("compio tuned", "eng-compio", ["--tuned", "--multishot"]),
        ("epoll", "eng-epoll", []),
        ("epoll until-eagain", "eng-epoll", ["--until-eagain"]),
    ]
    for i, (name, exe, flags) in enumerate(proto):
        t[f"fixed {name}"] = ("fixed", 18511 + i, [os.path.join(BIN, exe), "fixed", str(18511 + i)] + flags)
        t[f"proxy {name}"] = ("proxy", 18611 + i, [os.path.join(BIN, exe), "proxy", str(18611 + i)] + be + flags)
    t["fixed nginx"] = ("fixed", 18501, None)
    t["proxy nginx"] = ("proxy", 18601, None)
    t["proxy haproxy"] = ("proxy", 18602, None)
    t["proxy ringlb"] = ("proxy", 18603, None)
    if ONLY:
        keep = set(ONLY.split(","))
        t = {k: v for k, v in t.items() if k in keep or k in ("fixed nginx", "proxy nginx")}
    return t


def cpu0_irqs():
    """Hardware interrupts on CPU 0 so far: (all, RES rescheduling IPIs)."""
    total = res = 0
    with open("/proc/interrupts") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                total += int(parts[1])
                if parts[0] == "RES:":
                    res = int(parts[1])
    return total, res


def perf_syscalls(pids, port):
    """Syscalls, context switches and CPU 0 interrupts per request over one run."""
    irq0 = cpu0_irqs()
    perf = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", ",".join(SYSCALLS), "-p", ",".join(map(str, pids))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(0.3)
    r = loadgen(port, [], seconds="3s", warmup="0s")
    time.sleep(0.1)
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=20)
    irq1 = cpu0_irqs()
    counts = {"irq_cpu0": irq1[0] - irq0[0], "res_ipi_cpu0": irq1[1] - irq0[1]}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            counts[parts[2]] = int(parts[0])
    n = max(r["requests"], 1)
    return {k: v / n for k, v in counts.items()}


def idle_rss(pids, port, n):
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    before = rss_kib(pids)
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            socks.append(s)
        for s in socks:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        time.sleep(1.0)
        after = rss_kib(pids)
    finally:
        for s in socks:
            s.close()
    time.sleep(1.0)
    return (after - before) * 1024 / n


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="engines-bench-")
    paths = configs(tmp)
    tg = targets()
    pids = {}
    results = {"meta": {}, "closed": {}, "syscalls": {}, "rss": {}, "open": {}}
    saved = os.path.join(HERE, f"{NAME}.json")
    if PHASES != {"closed", "syscalls", "rss", "open"} and os.path.exists(saved):
        with open(saved) as f:
            results = json.load(f)
        for ph in PHASES:
            results[ph] = {}
    try:
        for p in BACKENDS:
            start(["taskset", "-c", "1", LOADGEN, "serve", "--no-pin", "--listen",
                   f"127.0.0.1:{p}", "--name", f"be{p}"])
        ng = start(["taskset", "-c", "0", "nginx", "-c", paths["nginx.conf"], "-p", tmp])
        if "proxy haproxy" in tg:
            pids["proxy haproxy"] = [start(["taskset", "-c", "0", "haproxy", "-f", paths["haproxy.cfg"]]).pid]
        if "proxy ringlb" in tg:
            pids["proxy ringlb"] = [start(["taskset", "-c", "0", RINGLB, "run", "-c", paths["ringlb.toml"]],
                                          env={**os.environ, "RUST_LOG": "warn"}).pid]
        for name, (mode, port, cmd) in tg.items():
            if cmd:
                pids[name] = [start(["taskset", "-c", "0"] + cmd).pid]
        for name, (mode, port, cmd) in tg.items():
            wait_port(port)
        for p in BACKENDS:
            wait_port(p)
        time.sleep(0.5)
        pids["fixed nginx"] = pids["proxy nginx"] = children(ng.pid)

        names = list(tg)
        meta = {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "kernel": os.uname().release, "cpus": os.cpu_count()}
        if "closed" in PHASES:
            meta.update(rounds=ROUNDS, seconds=SECONDS, conns=CONNS)
        if "rss" in PHASES:
            meta.update(idle=IDLE)
        results["meta"] = {**results["meta"], **meta}
        closed = {n: [] for n in names}
        for rnd in range(ROUNDS if "closed" in PHASES else 0):
            k = (rnd * 5) % len(names)
            order = names[k:] + names[:k]
            for n in order:
                mode, port, _ = tg[n]
                before = cpu_ticks(pids[n])
                r = loadgen(port, [])
                after = cpu_ticks(pids[n])
                served = r["requests"] * (r["duration_s"] + 1.0) / r["duration_s"]
                cpu_us = (after - before) * 1e6 / TICK / served
                errs = sum(r.get("errors", {}).values()) if isinstance(r.get("errors"), dict) else 0
                closed[n].append({"rps": r["rps"], "cpu_us": cpu_us,
                                  "p99": r["latency_us"]["p99"], "errors": errs})
                print(f"round {rnd + 1} {n}: {closed[n][-1]}", file=sys.stderr, flush=True)
        for n in names if "closed" in PHASES else []:
            xs = closed[n]
            results["closed"][n] = {
                "rps": statistics.median(x["rps"] for x in xs),
                "cpu_us": statistics.median(x["cpu_us"] for x in xs),
                "p99": statistics.median(x["p99"] for x in xs),
                "errors": sum(x["errors"] for x in xs),
                "runs": xs,
            }
        for n in names if "syscalls" in PHASES else []:
            results["syscalls"][n] = perf_syscalls(pids[n], tg[n][1])
            print(f"syscalls {n}: {results['syscalls'][n]}", file=sys.stderr, flush=True)
        for n in [x for x in names if x.startswith("proxy") and "rss" in PHASES]:
            count = min(IDLE, 8500) if n == "proxy haproxy" else IDLE
            results["rss"][n] = idle_rss(pids[n], tg[n][1], count)
            print(f"rss {n}: {results['rss'][n]:.0f} B/conn", file=sys.stderr, flush=True)
        rate = int(RATE) if RATE else int(0.6 * results["closed"]["proxy nginx"]["rps"])
        if "open" in PHASES:
            results["meta"]["rate"] = rate
        if rate and "open" in PHASES:
            for rnd in range(int(os.environ.get("OPEN_ROUNDS", "1"))):
                for n in [x for x in names if x.startswith("proxy")]:
                    r = loadgen(tg[n][1], ["-R", str(rate)])
                    lat = r["latency_us"]
                    results["open"].setdefault(n, []).append(
                        {"rps": r["rps"], "p50": lat["p50"], "p99": lat["p99"], "p999": lat["p999"]})
                    print(f"open {rate}/s {n}: {results['open'][n][-1]}", file=sys.stderr, flush=True)
        with open(saved, "w") as f:
            json.dump(results, f, indent=1)
        text = "\n".join(report(results, names))
        with open(os.path.join(HERE, f"{NAME}.md"), "w") as f:
            f.write(text + "\n")
        print(text)
    finally:
        stop_all()


def report(res, names):
    m = res["meta"]
    out = [
        f"Measured {m['time']}, kernel {m['kernel']}, {m['cpus']} CPUs; server on CPU 0, "
        f"load + 3 backends on CPU 1; closed loop c{m['conns']} {m['seconds']} (+1s warm-up), "
        f"medians of {m['rounds']} interleaved rounds "
        f"(vs nginx: median of the per-round ratios); "
        f"RSS with {m['idle']} idle client connections; open loop at {m['rate']:,} req/s.",
        "",
        "| target | req/s | vs nginx | CPU µs/req (best) | vs nginx | p99 µs | syscalls/req | enter or wait/req "
        "| ctx sw/req | IPIs/req | RSS B/idle conn | open p99 µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        mode = n.split()[0]
        ref = res["closed"][f"{mode} nginx"]
        c = res["closed"][n]
        s = res["syscalls"].get(n, {})
        waits = s.get("syscalls:sys_enter_io_uring_enter", 0) + s.get("syscalls:sys_enter_epoll_wait", 0) \
            + s.get("syscalls:sys_enter_epoll_pwait", 0)
        rss = res["rss"].get(n)
        op = res["open"].get(n)
        op99 = statistics.median(x["p99"] for x in op) if op else None
        # vs nginx: median over rounds of (this target / nginx in the same round).
        pairs = list(zip(c["runs"], ref["runs"]))
        rps_ratio = statistics.median(a["rps"] / b["rps"] for a, b in pairs)
        cpu_ratio = statistics.median(a["cpu_us"] / b["cpu_us"] for a, b in pairs)
        out.append(
            f"| {n} | {c['rps']:,.0f} | {rps_ratio:.2f} | {c['cpu_us']:.1f} "
            f"({min(x['cpu_us'] for x in c['runs']):.1f}) | "
            f"{cpu_ratio:.2f} | {c['p99']:,.0f} | "
            f"{s.get('raw_syscalls:sys_enter', 0):.2f} | {waits:.2f} | {s.get('context-switches', 0):.3f} | "
            f"{s.get('res_ipi_cpu0', 0):.2f} | "
            + (f"{rss:,.0f}" if rss is not None else "–") + " | "
            + (f"{op99:,.0f}" if op99 is not None else "–") + " |"
        )
    return out


def rerender():
    """`bench.py --report`: rewrites NAME.md from NAME.json."""
    with open(os.path.join(HERE, f"{NAME}.json")) as f:
        res = json.load(f)
    text = "\n".join(report(res, list(res["closed"])))
    with open(os.path.join(HERE, f"{NAME}.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        rerender()
        sys.exit(0)
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
