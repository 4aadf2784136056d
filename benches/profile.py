#!/usr/bin/env python3
"""Profiles one proxy worker under the closed-loop load of `make bench`.

    python3 benches/profile.py ringlb|nginx [perf-record|syscalls|stat] [BODY_PATH]

The proxy runs one worker on CPU 0 in front of the three `loadgen serve` backends (CPU 1);
`loadgen run -c 50` (CPU 1) loads it for 12 s; after 3 s, for 5 s:
- perf-record: `perf record -F 2999 -g` of the worker into /tmp/ringlb-profile.data, then
  the top symbols (`perf report --no-children`);
- syscalls: `perf trace -s` of the worker, then the syscalls per request;
- stat: `perf stat` (task clock, context switches, cycles) per request.
Ringlb's binary: RINGLB (default target/release/ringlb). Every process started here is stopped
by pid.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "ringlb"
    mode = sys.argv[2] if len(sys.argv) > 2 else "perf-record"
    path = sys.argv[3] if len(sys.argv) > 3 else "/"
    binary = os.path.abspath(os.environ.get("RINGLB", os.path.join(c.BIN, "ringlb")))
    tmp = tempfile.mkdtemp(prefix="ringlb-profile-")
    try:
        for p in c.BACKENDS:
            c.start(["taskset", "-c", "1", os.path.join(c.BIN, "loadgen"), "serve", "--no-pin",
                     "--listen", f"127.0.0.1:{p}", "--name", f"be{p}"])
        if what == "nginx":
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(c.nginx_config(tmp, c.make_cert(tmp)))
            ng = c.start(["taskset", "-c", "0", "nginx", "-c", conf, "-p", tmp])
            c.PORTS["p"] = 18082
            c.wait_port(18082)
            pid = c.children(ng.pid)[0]
        else:
            cfg = os.path.join(tmp, "r.toml")
            with open(cfg, "w") as f:
                f.write(c.ringlb_config(18071, 19971, os.environ.get("RUNTIME", "")))
            p = c.start(["taskset", "-c", "0", binary, "run", "-c", cfg],
                        env={**os.environ, "RUST_LOG": "warn"})
            c.PORTS["p"] = 18071
            c.wait_port(18071)
            # The worker thread: the one pinned to CPU 0 that uses the most CPU later; the
            # whole process is profiled (the control thread sleeps).
            pid = p.pid
        result = {}
        load = threading.Thread(
            target=lambda: result.update(r=c.loadgen(c.url("p", path), 50, [], seconds="12s")))
        load.start()
        time.sleep(3)
        before = c.backend_requests()
        t0 = time.time()
        if mode == "perf-record":
            subprocess.run(["perf", "record", "-F", "2999", "-g", "-o", "/tmp/ringlb-profile.data",
                            "-p", str(pid), "--", "sleep", "5"], capture_output=True)
        elif mode == "syscalls":
            out = subprocess.run(["perf", "trace", "-s", "-p", str(pid), "--", "sleep", "5"],
                                 capture_output=True, text=True)
            result["trace"] = out.stderr + out.stdout
        else:
            out = subprocess.run(["perf", "stat", "-e",
                                  "task-clock,context-switches,cpu-migrations,cycles,instructions",
                                  "-p", str(pid), "--", "sleep", "5"],
                                 capture_output=True, text=True)
            result["stat"] = out.stderr
        served = c.backend_requests() - before
        elapsed = time.time() - t0
        load.join()
        print(f"{what}: {served} requests in {elapsed:.1f} s ({served / elapsed:,.0f}/s) while measured")
        if mode == "perf-record":
            rep = subprocess.run(["perf", "report", "-i", "/tmp/ringlb-profile.data", "--no-children",
                                  "--sort", "dso,sym", "--stdio", "-g", "none"],
                                 capture_output=True, text=True).stdout
            print("\n".join(line for line in rep.splitlines()
                            if line.strip() and not line.startswith("#"))[:6000])
        elif mode == "syscalls":
            print(result["trace"])
        else:
            print(result["stat"])
    finally:
        c.stop_all()


if __name__ == "__main__":
    main()
