#!/usr/bin/env python3
"""Part A: where one ringlb worker's CPU goes under `make bench`-like load (and nginx's).

ringlb (workers = 1, cpus = [0], metrics on, access log off: the defaults of
ringlb.example.toml) and nginx (1 worker on CPU 0) proxy to 3 `loadgen serve` backends on
CPU 1; `loadgen run -c 50` (keep-alive, closed loop) on CPU 1. For each proxy, while load runs:
  A. 3 s: utime/stime from /proc/PID/stat, `perf stat` (task-clock, context switches, syscalls
     by kind), CPU 0 interrupts (/proc/interrupts) and softirqs (/proc/softirqs) deltas;
  B. 2 s: `perf trace -s` (every syscall by name);
  C. 3 s: `perf record -e cpu-clock -F 2999 --call-graph dwarf` then `perf report`.
Each window has its own bounded loadgen run started with it; per-request figures divide by
the requests that run completed. Raw outputs go to profile/; the summary to profile/summary.md.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (process helpers, configs)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "profile")
BACKENDS = [19401, 19402, 19403]
TICK = os.sysconf("SC_CLK_TCK")
STAT_EVENTS = [
    "task-clock", "context-switches", "cpu-migrations", "page-faults",
    "raw_syscalls:sys_enter", "syscalls:sys_enter_io_uring_enter",
    "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto", "syscalls:sys_enter_writev",
    "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_read", "syscalls:sys_enter_write",
]

# Leaf-symbol categories (self time), first match wins.
CATEGORIES = [
    # cpu-clock samples cannot land while interrupts are off: they pile up where interrupts
    # come back on (spin_unlock_irqrestore in wakeups, irqentry exit after an IPI).
    ("kernel: irq-off sections, IPIs (sampling skew)", r"_raw_spin_unlock_irq|irqentry_|sysvec_|asm_sysvec|reschedule_ipi|__sysvec|irq_exit|__irq_exit"),
    ("kernel: io_uring task_work", r"task_work_run|tctx_task_work|io_req_task|io_handle_tw|__io_run_local_work|io_run_local_work|io_poll_task_func|io_poll_check_events"),
    ("kernel: io_uring", r"io_uring|io_issue_sqe|io_submit_sqes|io_req_|__io_|io_cqring|io_recv|io_send|io_poll|io_queue|io_read|io_write|io_accept|io_arm|io_napi|io_import|io_fill_cqe|io_wq|io_ring"),
    ("kernel: tcp/ip/loopback", r"tcp_|ip_|__tcp|inet_|sk_|__sk|skb|__skb|sock_|__sock|loopback|net_rx|netif|__netif|napi|__napi|dev_|__dev|nf_|ipv4|lock_sock|release_sock|__release_sock|security_sock|__inet|udp|bbr_|kfree_skb|__kfree_skb|csum|copy_user|_copy_to_iter|_copy_from_iter|__copy|copyout|copyin|rep_movs|rep_stos|__check_object_size|simple_copy_to_iter|__x64_sys_recvfrom|__x64_sys_sendto|__sys_recvfrom|__sys_sendto|tcp"),
    ("kernel: syscall entry/exit", r"entry_SYSCALL|syscall_exit|syscall_return|do_syscall|__x64_sys|x64_sys_call|exit_to_user|fpregs|switch_fpu|restore_fpregs|__fdget|fput|fget|__fget|ksys_|__sys_|syscall_enter|srso|retbleed|entry_|native_irq_return|__rseq|rseq_"),
    ("kernel: scheduler/wakeup", r"schedule|__schedule|try_to_wake_up|wake_up|__wake_up|finish_task_switch|pick_next|enqueue|dequeue|update_curr|ttwu|select_task_rq|psi_|sched_|native_sched|hrtimer|ktime|timerqueue|autoremove_wake|ep_poll|do_epoll|ep_|default_wake_function|pollwake|add_wait_queue|remove_wait_queue"),
    ("kernel: memory", r"kmem_cache|kmalloc|kfree|__kmalloc|__slab|slab_|page_|__page|alloc_pages|free_pages|mem_cgroup|__mod_memcg|refill_stock|memcg|obj_cgroup|folio|get_page_from_freelist|__alloc|mod_objcg|rmqueue|__rmqueue|_raw_spin"),
    ("glommio reactor/executor", r"glommio::|<glommio|glommio"),
    ("futures/async glue", r"futures_lite|futures_util|futures_core|async_task|core::future|::poll|Waker|waker"),
    ("ringlb: http1 parse", r"ringlb::http1::parse|httparse"),
    ("ringlb: http1 rewrite", r"ringlb::http1::rewrite|ringlb::http1"),
    ("ringlb: balance", r"ringlb::balance"),
    ("ringlb: metrics", r"ringlb::metrics|histogram"),
    ("ringlb: access log", r"ringlb::accesslog"),
    ("ringlb: proxy", r"ringlb::proxy"),
    ("ringlb: runtime/io", r"ringlb::runtime"),
    ("ringlb: upstream/pool", r"ringlb::upstream"),
    ("ringlb: other", r"ringlb::"),
    ("allocation (mimalloc/libc)", r"mi_|_mi_|mimalloc|malloc|calloc|realloc|cfree|__libc_free|^free$|_int_free|_int_malloc|alloc::alloc|__rust_alloc|__rust_dealloc|__rdl_|RawVec|raw_vec"),
    ("memcpy/memmove/memset", r"memcpy|memmove|memset|memcmp|__memchr|memchr|bcmp"),
    ("hashing", r"ahash|xxh|hash"),
    ("time (clock_gettime/vdso)", r"clock_gettime|__vdso|vdso|Instant::now|timespec"),
]


def classify(sym, dso):
    for name, pat in CATEGORIES:
        if name.startswith("kernel") and "kernel" not in dso:
            continue
        if re.search(pat, sym):
            return name
    return "kernel: other" if "kernel" in dso else "user: other (" + os.path.basename(dso) + ")"


def read_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def cpu0_interrupts():
    irq = {}
    with open("/proc/interrupts") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                irq[" ".join([parts[0]] + parts[3:])[:40]] = int(parts[1])
    soft = {}
    with open("/proc/softirqs") as f:
        next(f)
        for line in f:
            parts = line.split()
            soft[parts[0].rstrip(":")] = int(parts[1])
    return irq, soft


def load(port, seconds):
    """A bounded loadgen run in the background (c50 closed loop, no warm-up)."""
    return subprocess.Popen(
        ["taskset", "-c", "1", bench.LOADGEN, "run", "--no-pin", "-t", "1", "-c", "50", "-d",
         f"{seconds}s", "--json", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def finish(lg):
    return json.loads(lg.communicate(timeout=60)[0])


def profile(name, pid, port):
    res = {"name": name}
    finish(load(port, 1))  # warm-up
    # A. perf stat + /proc accounting, over one 3 s load run
    u0, s0 = read_ticks(pid)
    i0, so0 = cpu0_interrupts()
    t0 = time.time()
    lg = load(port, 3)
    out = subprocess.run(["perf", "stat", "-x", ",", "-e", ",".join(STAT_EVENTS), "-p", str(pid),
                          "--", "sleep", "3"], capture_output=True, text=True)
    r = finish(lg)
    dt = time.time() - t0
    u1, s1 = read_ticks(pid)
    i1, so1 = cpu0_interrupts()
    stat = {}
    for line in out.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2:
            try:
                stat[parts[2]] = float(parts[0])
            except ValueError:
                pass
    irq = {k: i1[k] - i0.get(k, 0) for k in i1}
    res.update(window_s=dt, utime_s=(u1 - u0) / TICK, stime_s=(s1 - s0) / TICK, stat=stat,
               rps=r["rps"], requests_in_window=r["requests"],
               irq_cpu0=sum(irq.values()),
               irq_top=dict(sorted(((k, v) for k, v in irq.items() if v), key=lambda kv: -kv[1])[:5]),
               softirq_cpu0={k: so1[k] - so0[k] for k in so1})
    # B. perf trace -s
    lg = load(port, 2)
    tr = subprocess.run(["perf", "trace", "-s", "-p", str(pid), "--", "sleep", "2"],
                        capture_output=True, text=True)
    res["trace_requests"] = finish(lg)["requests"]
    with open(os.path.join(OUT, f"{name}.trace.txt"), "w") as f:
        f.write(f"# requests in this window: {res['trace_requests']}\n" + tr.stdout + tr.stderr)
    # C. perf record
    data = os.path.join(tempfile.gettempdir(), f"engines-{name}.perf.data")
    lg = load(port, 3)
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2999", "--call-graph",
                    "dwarf,16384", "-p", str(pid), "-o", data, "--", "sleep", "3"],
                   capture_output=True, text=True)
    finish(lg)
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
                          "-g", "none", "--percent-limit", "0.2"], capture_output=True, text=True)
    with open(os.path.join(OUT, f"{name}.report.txt"), "w") as f:
        f.write(rep.stdout)
    inc = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "sym", "--stdio",
                          "-g", "none", "--percent-limit", "2"], capture_output=True, text=True)
    with open(os.path.join(OUT, f"{name}.children.txt"), "w") as f:
        f.write(inc.stdout)
    cats = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.kHu]\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        c = classify(sym, dso)
        cats[c] = cats.get(c, 0) + pct
    res["categories_pct"] = dict(sorted(cats.items(), key=lambda kv: -kv[1]))
    os.unlink(data)
    return res


def summary(results):
    out = []
    for r in results:
        n = r["requests_in_window"]
        cpu = r["utime_s"] + r["stime_s"]
        st = r["stat"]
        us = cpu * 1e6 / n
        out += [
            f"### {r['name']}",
            "",
            f"- load: {r['rps']:,.0f} req/s (c50 closed loop, during the perf stat window)",
            f"- CPU: {us:.1f} µs/request = user {r['utime_s'] * 1e6 / n:.1f} + kernel "
            f"{r['stime_s'] * 1e6 / n:.1f} (/proc/PID/stat over {r['window_s']:.1f} s); "
            f"CPU busy {cpu / r['window_s'] * 100:.0f}%",
            f"- syscalls/request: {st.get('raw_syscalls:sys_enter', 0) / n:.2f} total; io_uring_enter "
            f"{st.get('syscalls:sys_enter_io_uring_enter', 0) / n:.2f}, recvfrom "
            f"{st.get('syscalls:sys_enter_recvfrom', 0) / n:.2f}, sendto {st.get('syscalls:sys_enter_sendto', 0) / n:.2f}, "
            f"writev {st.get('syscalls:sys_enter_writev', 0) / n:.2f}, epoll_wait "
            f"{st.get('syscalls:sys_enter_epoll_wait', 0) / n:.2f}",
            f"- context switches/request: {st.get('context-switches', 0) / n:.3f}; page faults/s: "
            f"{st.get('page-faults', 0) / r['window_s']:.0f}",
            f"- CPU 0 hardware interrupts: {r['irq_cpu0'] / r['window_s']:,.0f}/s ("
            + ", ".join(f"{k.strip()} {v / r['window_s']:,.0f}" for k, v in r["irq_top"].items())
            + "); softirqs/s: "
            + ", ".join(f"{k} {v / r['window_s']:,.0f}" for k, v in r["softirq_cpu0"].items() if v),
            "",
            "| self time by component (perf, cpu-clock) | share | µs/request |",
            "|---|---:|---:|",
        ]
        total = sum(r["categories_pct"].values()) or 1
        for c, pct in r["categories_pct"].items():
            share = pct / total
            out.append(f"| {c} | {share * 100:.1f}% | {share * us:.2f} |")
        out.append("")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    bench.BACKENDS[:] = BACKENDS
    tmp = tempfile.mkdtemp(prefix="engines-parta-")
    paths = bench.configs(tmp)
    try:
        for p in BACKENDS:
            bench.start(["taskset", "-c", "1", bench.LOADGEN, "serve", "--no-pin", "--listen",
                         f"127.0.0.1:{p}", "--name", f"be{p}"])
        # Own ports so that this can run beside bench.py's leftovers or the project's bench.
        for k in ("nginx.conf", "ringlb.toml"):
            text = open(paths[k]).read()
            text = text.replace("18501", "18701").replace("18601", "18702").replace("18603", "18703")
            text = text.replace("19993", "19994")
            open(paths[k], "w").write(text)
        ng = bench.start(["taskset", "-c", "0", "nginx", "-c", paths["nginx.conf"], "-p", tmp])
        rl = bench.start(["taskset", "-c", "0", bench.RINGLB, "run", "-c", paths["ringlb.toml"]],
                         env={**os.environ, "RUST_LOG": "warn"})
        for p in [18701, 18702, 18703] + BACKENDS:
            bench.wait_port(p)
        time.sleep(0.5)
        ngw = bench.children(ng.pid)[0]
        results = [profile("ringlb", rl.pid, 18703), profile("nginx", ngw, 18702)]
        with open(os.path.join(OUT, "summary.json"), "w") as f:
            json.dump(results, f, indent=1)
        text = "\n".join(summary(results))
        with open(os.path.join(OUT, "summary.md"), "w") as f:
            f.write(text + "\n")
        print(text)
    finally:
        bench.stop_all()


if __name__ == "__main__":
    main()
