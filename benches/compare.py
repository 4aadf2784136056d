#!/usr/bin/env python3
"""ringlb vs nginx vs HAProxy (and the direct path), in one run, on this machine.

Each proxy runs on CPU 0 (taskset), one worker/thread; the three `loadgen serve` backends and
the load generator share CPU 1. Proxies are interleaved over several rounds. Measured:
  - closed loop: max req/s, and the proxy's CPU time per request (user+sys of the proxy
    process over the run, divided by the requests served in it);
  - open loop at fixed rates (50% and 80% of nginx's max): p50/p99/p99.9 latency;
  - RSS per idle keep-alive client connection, with 10,000 connections open.
Writes the tables between the compare markers of benches/RESULTS.md and prints them.
Every load run is bounded in time; every process started here is stopped by pid.
"""

import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
RESULTS = os.path.join(ROOT, "benches", "RESULTS.md")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = os.environ.get("SECONDS_PER_RUN", "4s")
CONNS = int(os.environ.get("CONNS", "50"))
IDLE = int(os.environ.get("IDLE_CONNS", "10000"))
BACKENDS = [19101, 19102, 19103]
# HAProxy wants about 2 descriptors per maxconn; the sandbox's hard RLIMIT_NOFILE is 20000.
HAPROXY_MAXCONN = min(30000, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200) // 2)
PORTS = {
    "ringlb": 18081,
    "ringlb (metrics off)": 18084,
    "nginx": 18082,
    "haproxy": 18083,
    "direct": BACKENDS[0],
}
TICK = os.sysconf("SC_CLK_TCK")

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


def loadgen(port, extra):
    cmd = [
        "taskset", "-c", "1", os.path.join(BIN, "loadgen"), "run", "--no-pin", "-t", "1",
        "-c", str(CONNS), "-d", SECONDS, "--warmup", "1s", "--json",
    ] + extra + [f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr}")
    return json.loads(out.stdout)


def closed_loop(name, pids):
    before = cpu_ticks(pids) if pids else 0
    r = loadgen(PORTS[name], [])
    after = cpu_ticks(pids) if pids else 0
    # The warm-up's requests ran on the proxy too: scale by measured time over total time.
    served = r["requests"] * (r["duration_s"] + 1.0) / r["duration_s"]
    cpu_us = (after - before) * 1e6 / TICK / served if pids else None
    return r["rps"], cpu_us, r["latency_us"]["p99"]


def idle_connections(port, n):
    """Opens n keep-alive connections, one request each, and keeps them open."""
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
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
    return socks


def configs(tmp):
    servers = "".join(f'[[upstreams.app.servers]]\naddr = "127.0.0.1:{p}"\n' for p in BACKENDS)
    ringlb = (
        "[runtime]\nworkers = 1\ncpus = [0]\n[admin]\nlisten = \"127.0.0.1:19991\"\n"
        "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:18081\"\nbacklog = 4096\n"
        "[[routes]]\nlistener = \"http\"\nupstream = \"app\"\n[upstreams.app]\nkeepalive = 64\n"
        + servers
    )
    ups = "".join(f"  server 127.0.0.1:{p};\n" for p in BACKENDS)
    nginx = f"""worker_processes 1;
worker_cpu_affinity 01;
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
daemon off;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  upstream app {{
{ups}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:18082 backlog=4096;
    keepalive_requests 1000000;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
    hsrv = "".join(f"  server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(BACKENDS))
    haproxy = f"""global
  nbthread 1
  maxconn {HAPROXY_MAXCONN}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 75s
  http-reuse always
frontend fe
  bind 127.0.0.1:18083
  default_backend be
backend be
  balance roundrobin
{hsrv}"""
    quiet = (
        ringlb.replace("127.0.0.1:18081", "127.0.0.1:18084")
        .replace("127.0.0.1:19991", "127.0.0.1:19992")
        .replace("cpus = [0]\n", "cpus = [0]\n[metrics]\nenabled = false\n")
    )
    paths = {}
    for name, text in [
        ("ringlb.toml", ringlb),
        ("ringlb-quiet.toml", quiet),
        ("nginx.conf", nginx),
        ("haproxy.cfg", haproxy),
    ]:
        paths[name] = os.path.join(tmp, name)
        with open(paths[name], "w") as f:
            f.write(text)
    return paths


def version(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    return (out.stdout + out.stderr).strip().splitlines()[0]


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def main():
    global IDLE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(IDLE + 1000, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if IDLE + 1000 > want:
        IDLE = max(100, want - 1000)
        print(f"RLIMIT_NOFILE hard limit {hard}: measuring RSS with {IDLE} connections", file=sys.stderr)
    for tool in ["nginx", "haproxy", "taskset"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (benches/compare.sh installs nginx and haproxy)")
    tmp = tempfile.mkdtemp(prefix="ringlb-bench-")
    paths = configs(tmp)
    try:
        for p in BACKENDS:
            start(["taskset", "-c", "1", os.path.join(BIN, "loadgen"), "serve", "--no-pin",
                   "--listen", f"127.0.0.1:{p}", "--name", f"be{p}"])
        pids = {}
        rl = start(["taskset", "-c", "0", os.path.join(BIN, "ringlb"), "run", "-c",
                    paths["ringlb.toml"]], env={**os.environ, "RUST_LOG": "warn"})
        pids["ringlb"] = [rl.pid]
        rq = start(["taskset", "-c", "0", os.path.join(BIN, "ringlb"), "run", "-c",
                    paths["ringlb-quiet.toml"]], env={**os.environ, "RUST_LOG": "warn"})
        pids["ringlb (metrics off)"] = [rq.pid]
        ng = start(["taskset", "-c", "0", "nginx", "-c", paths["nginx.conf"], "-p", tmp])
        ha = start(["taskset", "-c", "0", "haproxy", "-f", paths["haproxy.cfg"]])
        pids["haproxy"] = [ha.pid]
        for port in list(PORTS.values()):
            wait_port(port)
        time.sleep(0.5)
        pids["nginx"] = children(ng.pid)
        pids["direct"] = []

        names = ["ringlb", "ringlb (metrics off)", "nginx", "haproxy", "direct"]
        closed = {n: [] for n in names}
        for rnd in range(ROUNDS):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for n in order:
                closed[n].append(closed_loop(n, pids[n]))
                print(f"round {rnd + 1} {n}: {closed[n][-1]}", file=sys.stderr)
        summary = {}
        for n in names:
            rps = statistics.median(x[0] for x in closed[n])
            cpus = [x[1] for x in closed[n] if x[1] is not None]
            summary[n] = {"rps": rps, "cpu_us": statistics.median(cpus) if cpus else None}

        nginx_max = summary["nginx"]["rps"]
        rates = [int(nginx_max * 0.5), int(nginx_max * 0.8)]
        opened = {}
        for rate in rates:
            for n in [x for x in names if x != "ringlb (metrics off)"]:
                r = loadgen(PORTS[n], ["-R", str(rate)])
                lat = r["latency_us"]
                opened[(n, rate)] = (r["rps"], lat["p50"], lat["p99"], lat["p999"])
                print(f"open {rate}/s {n}: {opened[(n, rate)]}", file=sys.stderr)

        rss = {}
        for n in ["ringlb", "nginx", "haproxy"]:
            count = min(IDLE, HAPROXY_MAXCONN - 100) if n == "haproxy" else IDLE
            before = rss_kib(pids[n])
            socks = idle_connections(PORTS[n], count)
            time.sleep(1.0)
            after = rss_kib(pids[n])
            for s in socks:
                s.close()
            rss[n] = (after - before) * 1024 / count
            print(f"rss {n}: {rss[n]:.0f} B/conn", file=sys.stderr)
            time.sleep(1.0)

        lines = report(summary, opened, rates, rss)
        write_results(lines)
        print("\n".join(lines))
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def report(summary, opened, rates, rss):
    ng, direct = summary["nginx"], summary["direct"]
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    out = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        f"(benches/compare.py): {os.cpu_count()} CPUs ({cpu_model}), kernel {os.uname().release}; "
        f"{version(['nginx', '-v'])}; {version(['haproxy', '-v'])}; "
        f"{version([os.path.join(BIN, 'ringlb'), '--version'])}.",
        "",
        f"Each proxy: one worker on CPU 0 (`taskset -c 0`), keep-alive to 3 `loadgen serve` "
        f"backends; load: `loadgen run -c {CONNS} -d {SECONDS} --warmup 1s` on CPU 1 with the "
        f"backends. Closed-loop figures are medians of {ROUNDS} interleaved rounds. "
        "`direct` is loadgen against one backend, no proxy.",
        "",
        "| target | max req/s | vs nginx | vs direct | proxy CPU µs/request | vs nginx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in ["ringlb", "ringlb (metrics off)", "nginx", "haproxy", "direct"]:
        s = summary[n]
        cpu = s["cpu_us"]
        cpu_ratio = "–" if cpu is None else "%.2f" % (cpu / ng["cpu_us"])
        out.append(
            f"| {n} | {fmt(s['rps'])} | {s['rps'] / ng['rps']:.2f} | {s['rps'] / direct['rps']:.2f} "
            f"| {fmt(cpu, 1)} | {cpu_ratio} |"
        )
    on, off = summary["ringlb"], summary["ringlb (metrics off)"]
    out += ["", f"Metrics cost: req/s with metrics on / off = {on['rps'] / off['rps']:.3f}; "
            f"CPU per request on / off = {on['cpu_us'] / off['cpu_us']:.3f}."]
    out += ["", "Open loop at fixed rates (latency from the intended send time, µs):", "",
            "| target | rate | achieved req/s | p50 | p99 | p99.9 |", "|---|---:|---:|---:|---:|---:|"]
    for rate in rates:
        for n in ["ringlb", "nginx", "haproxy", "direct"]:
            rps, p50, p99, p999 = opened[(n, rate)]
            out.append(f"| {n} | {rate:,} | {fmt(rps)} | {fmt(p50)} | {fmt(p99)} | {fmt(p999)} |")
    out += ["", f"RSS growth per idle keep-alive client connection ({IDLE:,} connections; HAProxy "
            f"{min(IDLE, HAPROXY_MAXCONN - 100):,}, its maxconn under this machine's descriptor limit):", "",
            "| proxy | bytes/connection | vs nginx |", "|---|---:|---:|"]
    for n in ["ringlb", "nginx", "haproxy"]:
        out.append(f"| {n} | {fmt(rss[n])} | {rss[n] / rss['nginx']:.2f} |")
    return out


def write_results(lines):
    begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
    text = open(RESULTS).read() if os.path.exists(RESULTS) else f"# Benchmark results\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(RESULTS, "w") as f:
        f.write(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
