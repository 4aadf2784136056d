#!/usr/bin/env python3
"""RSS per idle keep-alive connection of one ringlb engine, opened one at a time.

    WARM=3000 python3 benches/idle_conns.py target/release/ringlb io_uring 10000 req

ringlb (one worker) in front of one `loadgen serve` backend. WARM requests on short-lived
connections first (so the io_uring receive-buffer ring's first use is in the baseline), then
N connections: `req` sends one request on each and reads the response, `conn` only connects,
`burst` opens all, sends all requests, then reads all responses (as compare.py does).
Prints the VmRSS growth divided by N. Ports 29201/29281/29291; every process started here is
stopped by pid.
"""
import os
import socket
import sys
import tempfile
import time
import resource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    c.BACKENDS = [29201]
    binary, engine, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    req = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
    tmp = tempfile.mkdtemp()
    try:
        c.start([os.path.join(c.BIN, "loadgen"), "serve", "--no-pin",
                 "--listen", "127.0.0.1:29201", "--name", "b"])
        cfg = os.path.join(tmp, "r.toml")
        with open(cfg, "w") as f:
            f.write(c.ringlb_config(29281, 29291, f'engine = "{engine}"\n')
                    + '[timeouts]\nclient_header = "60s"\n')
        p = c.start([binary, "run", "-c", cfg], env={**os.environ, "RUST_LOG": "warn"})
        c.wait_port(29281)
        for _ in range(int(os.environ.get("WARM", "50"))):
            s = socket.create_connection(("127.0.0.1", 29281))
            s.sendall(req)
            s.recv(4096)
            s.close()
        if os.environ.get("PRELOAD"):
            # A closed-loop load first (e.g. PRELOAD=/size/65536), as compare.py runs before
            # it measures idle connections on the same process.
            c.PORTS["pre"] = 29281
            c.loadgen(c.url("pre", os.environ["PRELOAD"]), 50, [], seconds="3s")
        time.sleep(1.5)
        before = c.rss_kib([p.pid])
        if mode == "conn":
            held = [socket.create_connection(("127.0.0.1", 29281)) for _ in range(n)]
        else:
            held = c.idle_connections(29281, n, burst=(mode == "burst"))
            n = max(len(held), 1)
        time.sleep(1.5)
        after = c.rss_kib([p.pid])
        print(f"{engine} {mode} {n}: {(after - before) * 1024 / n:,.0f} bytes/connection")
    finally:
        c.stop_all()


if __name__ == "__main__":
    main()
