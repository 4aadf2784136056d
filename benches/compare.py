#!/usr/bin/env python3
"""ringlb vs nginx vs HAProxy (and the direct path), in one run, on this machine.

Each proxy runs on CPU 0 (taskset), one worker/thread; the three `loadgen serve` backends and
the load generator share CPU 1. Proxies are interleaved over several rounds, and every figure
is also given as a ratio to nginx's in the same run (the machine is noisy). Measured:
  - closed loop, keep-alive: max req/s and the proxy's CPU time per request (user+sys of the
    proxy process over the run / requests served), at 50 and 200 connections with a small
    body, and at 50 connections with 4 KiB and 64 KiB bodies;
  - syscalls, io_uring_enter and epoll_wait per request, and interrupts per second on the
    proxy's CPU (perf stat and /proc/interrupts; skipped without perf);
  - open loop at fixed 10k and 30k req/s: p50/p99/p99.9 latency from the intended send time
    (medians of the interleaved rounds);
  - goodput at 1.5x each proxy's own saturation rate, as a fraction of its peak at 50 and at 200
    connections (all measured in the same round; medians of the interleaved rounds);
  - a latency-versus-throughput sweep (p50 and p99 against offered load), drawn into
    benches/latency.svg;
  - HTTPS keep-alive req/s and new TLS handshakes per second (ringlb and nginx, same cert);
  - RSS per idle keep-alive client connection, with 10,000 connections open;
  - ringlb with 2 workers vs 1 (the load generator shares the second CPU: indicative only).
Writes the tables between the compare markers of benches/RESULTS.md and prints them.
Every load run is bounded in time; every process started here is stopped by pid.
Environment: ROUNDS (3), SECONDS_PER_RUN (4s), IDLE_CONNS (10000), QUICK=1 (one round, short
runs, a coarse sweep: for a smoke test of the script itself).
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
PLOT = os.path.join(ROOT, "benches", "latency.svg")
QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
SECONDS = os.environ.get("SECONDS_PER_RUN", "2s" if QUICK else "4s")
IDLE = int(os.environ.get("IDLE_CONNS", "2000" if QUICK else "10000"))
BACKENDS = [19101, 19102, 19103]
# HAProxy wants about 2 descriptors per maxconn; the sandbox's hard RLIMIT_NOFILE is 20000.
HAPROXY_MAXCONN = min(30000, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200) // 2)
TICK = os.sysconf("SC_CLK_TCK")

# name -> port; filled by start_targets().
PORTS = {"direct": BACKENDS[0]}
PROXIES = ["ringlb", "nginx", "haproxy"]
# Closed-loop scenarios: (label, connections, path).
SCENARIOS = [
    ("c50, small body", 50, "/"),
    ("c200, small body", 200, "/"),
    ("c50, 4 KiB body", 50, "/size/4096"),
    ("c50, 64 KiB body", 50, "/size/65536"),
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
    """Resident KiB of the processes, counted page by page (smaps_rollup walks the page
    tables; VmRSS in /proc/PID/status is a per-CPU-cached approximation on Linux 6.2+)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("Rss:"))
            continue
        except (OSError, StopIteration):
            pass
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def cpu0_interrupts():
    """Interrupts delivered to CPU 0 so far (every line of /proc/interrupts)."""
    total = 0
    with open("/proc/interrupts") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                total += int(parts[1])
    return total


def loadgen(url, conns, extra, seconds=None):
    cmd = [
        "taskset", "-c", "1", os.path.join(BIN, "loadgen"), "run", "--no-pin", "-t", "1",
        "-c", str(conns), "-d", seconds or SECONDS, "--warmup", "1s", "--json",
    ] + extra + [url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr}")
    return json.loads(out.stdout)


def url(name, path="/"):
    scheme = "https" if name.endswith("tls") else "http"
    return f"{scheme}://127.0.0.1:{PORTS[name]}{path}"


def closed_loop(name, pids, conns=50, path="/", extra=()):
    """(req/s, proxy CPU µs per request, p99 µs) of one closed-loop run."""
    before = cpu_ticks(pids) if pids else 0
    r = loadgen(url(name, path), conns, list(extra))
    after = cpu_ticks(pids) if pids else 0
    # The warm-up's requests ran on the proxy too: scale by measured time over total time.
    served = r["requests"] * (r["duration_s"] + 1.0) / r["duration_s"]
    cpu_us = (after - before) * 1e6 / TICK / served if pids and served else None
    return r["rps"], cpu_us, r["latency_us"]["p99"]


def syscalls(name, pids):
    """Per request: syscalls, io_uring_enter, epoll_wait; interrupts per second on CPU 0."""
    if not shutil.which("perf") or not pids:
        return None
    events = "raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait"
    secs = 3
    perf = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", events, "-p", ",".join(map(str, pids)), "--",
         "sleep", str(secs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    irq0 = cpu0_interrupts()
    r = loadgen(url(name), 50, [], seconds=f"{secs + 1}s")
    irq1 = cpu0_interrupts()
    _, err = perf.communicate(timeout=60)
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            counts[parts[2].strip()] = int(parts[0])
    if not counts:
        return None
    # perf counted `secs` seconds of the run: the requests of those seconds.
    reqs = r["rps"] * secs
    per = lambda key: counts.get(key, 0) / reqs if reqs else None
    return (per("raw_syscalls:sys_enter"), per("syscalls:sys_enter_io_uring_enter"),
            per("syscalls:sys_enter_epoll_wait"), (irq1 - irq0) / (r["duration_s"] + 1.0))


def backend_requests():
    """Requests the three backends served so far (their /stats)."""
    total = 0
    for p in BACKENDS:
        with socket.create_connection(("127.0.0.1", p), timeout=5) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1]
        total += json.loads(body)["requests"]
    return total


def answered(s):
    """Reads the response head of the request sent on `s`; False when none came."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        return False
    return b"\r\n\r\n" in data


def idle_connections(port, n, burst=False):
    """Opens n keep-alive connections, one request each, and keeps them open. One at a time
    (at most one request in flight), so the RSS growth is what idle connections hold; with
    `burst`, all requests go out before any response is read, and the growth also holds what
    the allocator kept of n requests served at once."""
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    sent, held = [], []

    def keep_answered():
        for r in sent:
            if answered(r):
                held.append(r)
            else:
                r.close()
        sent.clear()

    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(req)
        sent.append(s)
        if not burst:
            keep_answered()
    keep_answered()
    if len(held) < n:
        print(f"only {len(held)} of {n} idle connections answered", file=sys.stderr)
    return held


def ringlb_config(port, admin, extra_runtime="", extra_top="", tls=None, workers=1, cpus="[0]"):
    servers = "".join(f'[[upstreams.app.servers]]\naddr = "127.0.0.1:{p}"\n' for p in BACKENDS)
    # max_connections above the idle-connection count (its default follows RLIMIT_NOFILE).
    listener = (f"[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:{port}\"\nbacklog = 4096\n"
                f"max_connections = {IDLE + 1000}\n")
    if tls:
        listener += f'tls = {{ certs = [{{ cert = "{tls[0]}", key = "{tls[1]}" }}] }}\n'
    return (
        f"[runtime]\nworkers = {workers}\ncpus = {cpus}\n{extra_runtime}"
        f"[admin]\nlisten = \"127.0.0.1:{admin}\"\n{extra_top}"
        + listener
        + "[[routes]]\nlistener = \"http\"\nupstream = \"app\"\n[upstreams.app]\nkeepalive = 64\n"
        + servers
    )


def nginx_config(tmp, tls):
    ups = "".join(f"  server 127.0.0.1:{p};\n" for p in BACKENDS)
    return f"""worker_processes 1;
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
    listen 127.0.0.1:18092 ssl backlog=4096;
    ssl_certificate {tls[0]};
    ssl_certificate_key {tls[1]};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    keepalive_requests 1000000;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def haproxy_config():
    hsrv = "".join(f"  server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(BACKENDS))
    return f"""global
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


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bench.test",
         "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def engine_supported(tmp, value):
    """Whether this ringlb knows `[runtime] engine = value` (the epoll engine may not exist)."""
    path = os.path.join(tmp, f"probe-{value}.toml")
    with open(path, "w") as f:
        f.write(ringlb_config(18999, 19999, extra_runtime=f'engine = "{value}"\n'))
    out = subprocess.run([os.path.join(BIN, "ringlb"), "check", "-c", path], capture_output=True)
    return out.returncode == 0


def start_backends():
    """The three `loadgen serve` backends, on CPU 1."""
    for p in BACKENDS:
        start(["taskset", "-c", "1", os.path.join(BIN, "loadgen"), "serve", "--no-pin",
               "--listen", f"127.0.0.1:{p}", "--name", f"be{p}"])


def start_ringlb(tmp, name, binary, port, admin, runtime=""):
    """One ringlb worker on CPU 0 as target `name` (its config in `tmp`); its [pid]."""
    path = os.path.join(tmp, f"ringlb-{port}.toml")
    with open(path, "w") as f:
        f.write(ringlb_config(port, admin, runtime))
    p = start(["taskset", "-c", "0", binary, "run", "-c", path],
              env={**os.environ, "RUST_LOG": "warn"})
    PORTS[name] = port
    return [p.pid]


def start_nginx(tmp, port=18082):
    """nginx, one worker on CPU 0, as target "nginx" on `port`; its master's Popen."""
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_config(tmp, make_cert(tmp)).replace("18082", str(port))
                .replace("18092", str(port + 10)))
    PORTS["nginx"] = port
    return start(["taskset", "-c", "0", "nginx", "-c", conf, "-p", tmp])


def start_targets(tmp):
    """Starts every proxy; returns {name: [pids]}."""
    tls = make_cert(tmp)
    variants = [
        ("ringlb", 18081, 19991, "", "", None, 1, "[0]"),
        ("ringlb (metrics off)", 18084, 19992, "", "[metrics]\nenabled = false\n", None, 1, "[0]"),
        ("ringlb tls", 18091, 19993, "", "", tls, 1, "[0]"),
        ("ringlb x2", 18085, 19994, "", "", None, 2, "[0, 1]"),
    ]
    # The default engine is "ringlb"; the others, where this build has them, are extra rows.
    for k, value in enumerate(["epoll", "glommio"]):
        if engine_supported(tmp, value):
            variants.append((f"ringlb ({value})", 18086 + k, 19995 + k, f'engine = "{value}"\n',
                             "", None, 1, "[0]"))
    pids = {"direct": []}
    for name, port, admin, rt, top, cert, workers, cpus in variants:
        path = os.path.join(tmp, name.replace(" ", "_").replace("(", "").replace(")", "") + ".toml")
        with open(path, "w") as f:
            f.write(ringlb_config(port, admin, rt, top, cert, workers, cpus))
        taskset = "0" if workers == 1 else "0,1"
        p = start(["taskset", "-c", taskset, os.path.join(BIN, "ringlb"), "run", "-c", path],
                  env={**os.environ, "RUST_LOG": "warn"})
        pids[name], PORTS[name] = [p.pid], port
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_config(tmp, tls))
    ng = start(["taskset", "-c", "0", "nginx", "-c", conf, "-p", tmp])
    PORTS["nginx"], PORTS["nginx tls"] = 18082, 18092
    hconf = os.path.join(tmp, "haproxy.cfg")
    with open(hconf, "w") as f:
        f.write(haproxy_config())
    ha = start(["taskset", "-c", "0", "haproxy", "-f", hconf])
    pids["haproxy"], PORTS["haproxy"] = [ha.pid], 18083
    for port in PORTS.values():
        wait_port(port)
    time.sleep(0.5)
    pids["nginx"] = pids["nginx tls"] = children(ng.pid)
    return pids


def interleaved(names, pids, run):
    """Runs `run(name, pids)` for every name, ROUNDS times in rotating order; medians."""
    results = {n: [] for n in names}
    for rnd in range(ROUNDS):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for n in order:
            results[n].append(run(n, pids[n]))
            print(f"round {rnd + 1} {n}: {results[n][-1]}", file=sys.stderr)
    out = {}
    for n, rs in results.items():
        cols = list(zip(*rs))
        out[n] = tuple(statistics.median(c) if all(v is not None for v in c) else None for c in cols)
    return out


def sweep_rates(peak):
    steps = [0.2, 0.5, 0.8, 1.1] if QUICK else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    return [max(1000, int(peak * s / 1000) * 1000) for s in steps]


def main():
    global IDLE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(IDLE + 1000, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if IDLE + 1000 > want:
        IDLE = max(100, want - 1000)
        print(f"RLIMIT_NOFILE hard limit {hard}: measuring RSS with {IDLE} connections", file=sys.stderr)
    for tool in ["nginx", "haproxy", "taskset", "openssl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (benches/compare.sh installs what it needs)")
    tmp = tempfile.mkdtemp(prefix="ringlb-bench-")
    r = {}
    try:
        start_backends()
        pids = start_targets(tmp)
        ringlbs = [n for n in ["ringlb", "ringlb (epoll)", "ringlb (glommio)"] if n in pids]
        targets = ringlbs + ["nginx", "haproxy"]

        # 1. Closed loop, every scenario; the first also with metrics off and direct.
        r["closed"] = {}
        for label, conns, path in SCENARIOS:
            names = targets + (["ringlb (metrics off)", "direct"] if conns == 50 and path == "/" else [])
            r["closed"][label] = interleaved(
                names, pids, lambda n, p: closed_loop(n, p, conns, path))
        base = r["closed"][SCENARIOS[0][0]]

        # 2. Syscalls and interrupts.
        r["sys"] = {n: syscalls(n, pids[n]) for n in targets}

        # 3. Open loop at fixed rates: medians of ROUNDS interleaved rounds (one run's p99
        # moves by several times on this machine).
        r["open"] = {}
        for rate in [10000, 30000]:
            def fixed(n, _pids, rate=rate):
                res = loadgen(url(n), 50, ["-R", str(rate)])
                lat = res["latency_us"]
                return (res["rps"], lat["p50"], lat["p99"], lat["p999"])
            for n, med in interleaved(targets, pids, fixed).items():
                r["open"][(n, rate)] = med
                print(f"open {rate}/s {n}: {med}", file=sys.stderr)

        # 4. Goodput at 1.5x each proxy's own saturation rate: what the backends served per
        # second of wall time while the load generator offered more than the proxy can do
        # (loadgen's own count would include the late answers it waits for after the run).
        # Each round measures the proxy's peaks (closed loop, c50 and c200: the overload runs
        # on 200 connections) just before its overload, so the machine's drift since the
        # scenarios above does not move the ratios; medians of ROUNDS interleaved rounds.
        def overload(n, p):
            peak = closed_loop(n, p, 50, "/")[0]
            peak200 = closed_loop(n, p, 200, "/")[0]
            before, t0 = backend_requests(), time.time()
            loadgen(url(n), 200, ["-R", str(int(peak * 1.5)), "--timeout", "1s"])
            served = backend_requests() - before
            # The backends count the warm-up's requests too: divide by the whole run.
            good = served / (time.time() - t0)
            return (peak, peak200, int(peak * 1.5), good, good / peak, good / peak200)
        r["overload"] = interleaved(targets, pids, overload)
        for n in targets:
            print(f"overload {n}: {r['overload'][n]}", file=sys.stderr)

        # 5. Latency against offered load.
        r["sweep"] = {}
        rates = sweep_rates(max(base[n][0] for n in targets))
        for n in targets:
            for rate in rates:
                res = loadgen(url(n), 50, ["-R", str(rate)], seconds="2s" if QUICK else "3s")
                lat = res["latency_us"]
                r["sweep"][(n, rate)] = (res["rps"], lat["p50"], lat["p99"])
        write_plot(r["sweep"], targets, rates)

        # 6. TLS: keep-alive req/s and new handshakes per second.
        tls_names = ["ringlb tls", "nginx tls"]
        r["tls_keepalive"] = interleaved(
            tls_names, pids, lambda n, p: closed_loop(n, p, 50, "/", ["--insecure"]))
        r["tls_handshakes"] = interleaved(
            tls_names, pids, lambda n, p: closed_loop(n, p, 50, "/", ["--insecure", "--no-keepalive"]))

        # 7. Two workers vs one.
        r["workers"] = interleaved(["ringlb", "ringlb x2"], pids,
                                   lambda n, p: closed_loop(n, p, 200, "/"))

        # 8. Idle connections.
        r["rss"] = {}
        for n in targets:
            count = min(IDLE, HAPROXY_MAXCONN - 100) if n == "haproxy" else IDLE
            before = rss_kib(pids[n])
            socks = idle_connections(PORTS[n], count)
            time.sleep(1.0)
            after = rss_kib(pids[n])
            held = max(1, len(socks))
            for s in socks:
                s.close()
            r["rss"][n] = (after - before) * 1024 / held
            print(f"rss {n}: {r['rss'][n]:.0f} B/conn", file=sys.stderr)
            time.sleep(1.0)

        lines = report(r, targets)
        write_results(lines)
        print("\n".join(lines))
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return "–" if a is None or not b else f"{a / b:.2f}"


def version(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    return (out.stdout + out.stderr).strip().splitlines()[0]


def report(r, targets):
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
        "Each proxy: one worker on CPU 0 (`taskset -c 0`), keep-alive to 3 `loadgen serve` "
        f"backends; load: `loadgen run -d {SECONDS} --warmup 1s` on CPU 1 with the backends. "
        f"Closed-loop figures are medians of {ROUNDS} interleaved rounds. `direct` is loadgen "
        "against one backend, no proxy. Ratios are to nginx in the same run.",
        "",
        "| scenario | target | max req/s | vs nginx | proxy CPU µs/request | vs nginx | p99 µs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, _, _ in SCENARIOS:
        res = r["closed"][label]
        ng = res["nginx"]
        for n, (rps, cpu, p99) in res.items():
            out.append(f"| {label} | {n} | {fmt(rps)} | {ratio(rps, ng[0])} | {fmt(cpu, 1)} "
                       f"| {ratio(cpu, ng[1])} | {fmt(p99)} |")
    base = r["closed"][SCENARIOS[0][0]]
    on, off = base["ringlb"], base["ringlb (metrics off)"]
    out += ["", f"Metrics cost: req/s with metrics on / off = {ratio(on[0], off[0])}; "
            f"CPU per request on / off = {ratio(on[1], off[1])}."]

    out += ["", "Syscalls per request (c50, small body; `perf stat`), and interrupts per second "
            "on the proxy's CPU (/proc/interrupts, whole CPU):", "",
            "| target | syscalls/request | io_uring_enter/request | epoll_wait/request | interrupts/s |",
            "|---|---:|---:|---:|---:|"]
    for n in targets:
        s = r["sys"].get(n)
        if s is None:
            out.append(f"| {n} | – | – | – | – |")
        else:
            out.append(f"| {n} | {fmt(s[0], 2)} | {fmt(s[1], 2)} | {fmt(s[2], 2)} | {fmt(s[3])} |")

    out += ["", f"Open loop at fixed rates (latency from the intended send time, µs; medians of "
            f"{ROUNDS} interleaved rounds):", "",
            "| target | rate | achieved req/s | p50 | p99 | p99.9 | p99 vs nginx |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for rate in [10000, 30000]:
        ng = r["open"][("nginx", rate)]
        for n in targets:
            rps, p50, p99, p999 = r["open"][(n, rate)]
            out.append(f"| {n} | {rate:,} | {fmt(rps)} | {fmt(p50)} | {fmt(p99)} | {fmt(p999)} "
                       f"| {ratio(p99, ng[2])} |")

    out += ["", "Overload: offered 1.5x each proxy's own closed-loop maximum at 50 connections, "
            "measured just before (open loop, 200 connections, 1 s request timeout); goodput = "
            "requests the backends served per second of wall time (warm-up included) while the "
            "overload lasted, against the c50 peak and against the closed-loop peak on the same "
            f"200 connections; medians of {ROUNDS} interleaved rounds (ratios taken per round):", "",
            "| target | c50 peak req/s | c200 peak req/s | offered req/s | goodput req/s | "
            "goodput / c50 peak | goodput / c200 peak |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for n in targets:
        peak, peak200, offered, good, share, share200 = r["overload"][n]
        out.append(f"| {n} | {fmt(peak)} | {fmt(peak200)} | {fmt(offered)} | {fmt(good)} | "
                   f"{share:.2f} | {share200:.2f} |")

    out += ["", "Latency against offered load: [`benches/latency.svg`](latency.svg) (p50 and p99 per "
            "proxy; a point past a proxy's maximum shows its queueing)."]

    out += ["", "TLS (ECDSA P-256, TLS 1.3, `loadgen run --insecure`), ringlb vs nginx:", "",
            "| | ringlb | nginx | ringlb / nginx |", "|---|---:|---:|---:|"]
    for title, key in [("HTTPS keep-alive req/s (c50)", "tls_keepalive"),
                       ("new TLS handshakes/s (a connection per request)", "tls_handshakes")]:
        a, b = r[key]["ringlb tls"][0], r[key]["nginx tls"][0]
        out.append(f"| {title} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} |")
    a, b = r["tls_keepalive"]["ringlb tls"][1], r["tls_keepalive"]["nginx tls"][1]
    out.append(f"| CPU µs/request, keep-alive | {fmt(a, 1)} | {fmt(b, 1)} | {ratio(a, b)} |")

    one, two = r["workers"]["ringlb"], r["workers"]["ringlb x2"]
    out += ["", f"Two workers vs one (c200; the load generator and backends share CPU 1 with the "
            f"second worker, so this understates scaling): {fmt(two[0])} vs {fmt(one[0])} req/s "
            f"= {ratio(two[0], one[0])}x."]

    out += ["", f"RSS growth per idle keep-alive client connection ({IDLE:,} connections opened one at a time, one request each; HAProxy "
            f"{min(IDLE, HAPROXY_MAXCONN - 100):,}, its maxconn under this machine's descriptor limit):", "",
            "| proxy | bytes/connection | vs nginx |", "|---|---:|---:|"]
    for n in targets:
        out.append(f"| {n} | {fmt(r['rss'][n])} | {ratio(r['rss'][n], r['rss']['nginx'])} |")
    return out


def write_plot(sweep, targets, rates):
    """p50 (dashed) and p99 (solid) latency against achieved req/s, log-scale latency, as SVG."""
    import math
    w, h, left, bottom, top, right = 760, 440, 70, 50, 30, 170
    colors = ["#1f77b4", "#9467bd", "#ff7f0e", "#2ca02c", "#d62728"]
    xmax = max(v[0] for v in sweep.values()) * 1.05 or 1
    lat = [v[i] for v in sweep.values() for i in (1, 2) if v[i] and v[i] > 0]
    ymin, ymax = math.log10(max(10, min(lat))), math.log10(max(lat) * 1.5)
    ymax = max(ymax, ymin + 1)
    px = lambda x: left + (w - left - right) * x / xmax
    py = lambda y: h - bottom - (h - bottom - top) * (math.log10(max(y, 10)) - ymin) / (ymax - ymin)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{left}" y="18" font-size="14">Latency against throughput (one core, {time.strftime("%Y-%m-%d")})</text>',
         f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
         f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
         f'<text x="{(w - right + left) / 2}" y="{h - 12}" text-anchor="middle">achieved req/s</text>',
         f'<text x="16" y="{(h - bottom + top) / 2}" transform="rotate(-90 16 {(h - bottom + top) / 2})" text-anchor="middle">latency µs (log)</text>']
    for i in range(6):
        x = xmax * i / 5
        s.append(f'<text x="{px(x)}" y="{h - bottom + 16}" text-anchor="middle">{int(x / 1000)}k</text>')
    for e in range(int(math.floor(ymin)), int(math.ceil(ymax)) + 1):
        y = 10 ** e
        if ymin <= e <= ymax:
            s.append(f'<line x1="{left}" y1="{py(y)}" x2="{w - right}" y2="{py(y)}" stroke="#ddd"/>')
            s.append(f'<text x="{left - 6}" y="{py(y) + 4}" text-anchor="end">{y:,}</text>')
    for k, n in enumerate(targets):
        c = colors[k % len(colors)]
        pts = sorted(sweep[(n, rate)] for rate in rates)
        for idx, dash in [(1, ' stroke-dasharray="4 3"'), (2, "")]:
            path = " ".join(f"{px(p[0]):.1f},{py(p[idx]):.1f}" for p in pts if p[idx])
            s.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        ly = top + 20 + 36 * k
        s.append(f'<line x1="{w - right + 15}" y1="{ly}" x2="{w - right + 40}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        s.append(f'<text x="{w - right + 46}" y="{ly + 4}">{n} p99</text>')
        s.append(f'<line x1="{w - right + 15}" y1="{ly + 14}" x2="{w - right + 40}" y2="{ly + 14}" stroke="{c}" stroke-width="2" stroke-dasharray="4 3"/>')
        s.append(f'<text x="{w - right + 46}" y="{ly + 18}">{n} p50</text>')
    s.append("</svg>")
    with open(PLOT, "w") as f:
        f.write("\n".join(s) + "\n")


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
