# Usage: cargo build --release --workspace --bins && python3 benches/engines.py
# (BIN=dir of the release binaries; ROUNDS, IDLE_CONNS as in compare.py).
"""ringlb io_uring (glommio) vs epoll: one worker pinned on CPU 0, backends and load on CPU 1.
Interleaved closed-loop rounds (loadgen run -c 50 -d 4s --warmup 1s), req/s and CPU us/request
of the ringlb process (/proc/PID/stat utime+stime); then VmRSS per idle keep-alive connection."""
import os, sys, time, statistics, tempfile, shutil, resource
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c
c.BIN = os.environ.get("BIN", c.BIN)
ROUNDS = int(os.environ.get("ROUNDS", "3"))
IDLE = int(os.environ.get("IDLE_CONNS", "2000"))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(IDLE + 1000, soft), hard), hard))
tmp = tempfile.mkdtemp(prefix="ringlb-engines-")
try:
    for p in c.BACKENDS:
        c.start(["taskset", "-c", "1", os.path.join(c.BIN, "loadgen"), "serve", "--no-pin",
                 "--listen", f"127.0.0.1:{p}", "--name", f"be{p}"])
    pids = {}
    for name, port, admin, engine in [("io_uring", 18181, 19181, "io_uring"), ("epoll", 18186, 19186, "epoll")]:
        path = os.path.join(tmp, f"{name}.toml")
        with open(path, "w") as f:
            f.write(c.ringlb_config(port, admin, f'engine = "{engine}"\n'))
        p = c.start(["taskset", "-c", "0", os.path.join(c.BIN, "ringlb"), "run", "-c", path],
                    env={**os.environ, "RUST_LOG": "warn"})
        pids[name], c.PORTS[name] = [p.pid], port
    for port in c.PORTS.values():
        c.wait_port(port)
    time.sleep(0.5)
    names = ["io_uring", "epoll"]
    for label, conns, path in [("c50 small", 50, "/"), ("c50 4KiB", 50, "/size/4096")]:
        res = {n: [] for n in names}
        for rnd in range(ROUNDS):
            order = names if rnd % 2 == 0 else names[::-1]
            for n in order:
                r = c.closed_loop(n, pids[n], conns, path)
                res[n].append(r)
                print(f"{label} round {rnd+1} {n}: {r[0]:.0f} req/s, {r[1]:.2f} us CPU/req, p99 {r[2]} us", flush=True)
        for n in names:
            rps = statistics.median(x[0] for x in res[n]); cpu = statistics.median(x[1] for x in res[n])
            p99 = statistics.median(x[2] for x in res[n])
            print(f"MEDIAN {label} {n}: {rps:.0f} req/s, {cpu:.2f} us CPU/req, p99 {p99} us", flush=True)
    for n in names:
        before = c.rss_kib(pids[n])
        socks = c.idle_connections(c.PORTS[n], IDLE)
        time.sleep(1.0)
        after = c.rss_kib(pids[n])
        for s in socks:
            s.close()
        print(f"RSS {n}: {(after-before)*1024/IDLE:.0f} B per idle keep-alive connection ({IDLE} conns, VmRSS {before} -> {after} KiB)", flush=True)
        time.sleep(1.0)
finally:
    c.stop_all()
    shutil.rmtree(tmp, ignore_errors=True)
