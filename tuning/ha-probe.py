#!/usr/bin/env python3
"""Open-loop HTTP/1.1 probe for the failover tests (tuning/keepalived/ha-test.sh,
tuning/bgp/ecmp-test.sh): one request every 1/RATE seconds on a fixed timetable, each on a new
TCP connection (so every request is routed afresh: ARP/ECMP decide anew, no keep-alive
connection hides or causes a move), and one line per request:

    SEND_MS RECV_MS OUTCOME BODY

SEND_MS is the wall-clock time (ms since the epoch, with µs as 3 decimals) the request started,
RECV_MS when its outcome was known (response complete, error or timeout). OUTCOME is `ok` for a 200
with a complete body, else `fail:<reason>` (refused, reset, timeout, status:<code>, ...). BODY
is the response body's first line (`-` when none): `loadgen serve` answers with its name.

Bounded: stops after --max-requests requests or --max-seconds, or as soon as --stop-file
exists; then waits at most --timeout for the requests in flight. Standard library only.
"""

import argparse
import asyncio
import os
import sys
import time


def now_ms():
    """Wall-clock ms since the epoch, to the µs: "1733300000123.456"."""
    us = time.time_ns() // 1000
    return f"{us // 1000}.{us % 1000:03d}"


async def one(host, port, path, timeout, out):
    send = now_ms()
    outcome, body = "ok", "-"
    writer = None
    try:
        async def exchange():
            nonlocal writer
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            data = await reader.read(-1)  # Connection: close: the body ends at EOF
            return data

        data = await asyncio.wait_for(exchange(), timeout)
        head, sep, rest = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if not sep or len(status_line) < 2:
            outcome = "fail:truncated"
        elif status_line[1] != b"200":
            outcome = "fail:status:" + status_line[1].decode(errors="replace")
        else:
            text = rest.decode(errors="replace").strip()
            body = text.splitlines()[0] if text else "-"
    except asyncio.TimeoutError:
        outcome = "fail:timeout"
    except ConnectionRefusedError:
        outcome = "fail:refused"
    except ConnectionResetError:
        outcome = "fail:reset"
    except OSError as e:
        outcome = "fail:" + (os.strerror(e.errno).replace(" ", "_") if e.errno else "oserror")
    finally:
        if writer is not None:
            writer.close()
    out.write(f"{send} {now_ms()} {outcome} {body}\n")


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--path", default="/", help="path; {n} is replaced by the request number")
    p.add_argument("--rate", type=float, default=250.0, help="requests per second")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--stop-file", default=None)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    interval = 1.0 / a.rate
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = set()
    with open(a.out, "w", buffering=1) as out:
        n = 0
        while n < a.max_requests and loop.time() - start < a.max_seconds:
            if a.stop_file and n % 25 == 0 and os.path.exists(a.stop_file):
                break
            due = start + n * interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(one(a.host, a.port, a.path.replace("{n}", str(n)),
                                        a.timeout, out))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(set(tasks), timeout=a.timeout + 1)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
