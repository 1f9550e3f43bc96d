#!/usr/bin/env python3
"""
The shared HTTP cache, measured in one run against the proxy without it,
the origin alone and nginx's proxy_cache.

Not a test: it prints figures, ratios and goals.  Run it with the project's
virtualenv so the proxy runs the working tree:

    /work/venv/bin/python bench/run_cache.py [--duration 10] [--connections 50]
        [--repeat 3] [--clients 200] [--big-mb 1024] [--skip-big] [--json OUT]

Steps (everything on 127.0.0.1, in a temporary folder removed at the end;
every process started is killed at exit, however it exits):

1. 100 B bodies, wrk -t1 -c50, four targets, --repeat rounds interleaved
   after one warm-up each (best round reported, errors of all rounds):
   the nginx origin directly; twisted-proxy without a cache; twisted-proxy
   with `cache = "edge"` (every measured request a hit); nginx with
   proxy_cache (every measured request a HIT).  Goals: proxy hits / proxy
   uncached >= 1.5, proxy hits / nginx proxy_cache hits >= 0.6.  When one
   is missed (--profile auto), an extra, unreported hit run goes under
   py-spy and the top functions are printed.
2. The same with 64 KiB bodies.
3. Collapsing: --clients concurrent clients ask for one cold URL of a slow
   origin (started by this script: it waits 0.5 s before answering and
   counts its requests): how many requests reached the origin (goal 1),
   and did every client get the whole body.
4. A --big-mb object: stored while it streams to a first client, then
   served from the cache to a second one; sha256 of both, the proxy's RSS
   growth, Cache-Status of both.  --skip-big skips it.
5. Restart: the cached proxy is stopped and started again on the same
   cache folder; a request is a hit at once (the origin sees nothing).

Exit status: 0 when every step ran (whatever the figures), 2 when a step
could not run (the message says which, with the logs' tails), 130 on
Ctrl-C.

Layout on a 2-core machine: wrk, curl, the hasher, this script's clients,
the nginx origin and the slow origin on core 0; twisted-proxy (both) and
the nginx proxy_cache on core 1 (one of them under load at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_compare import warn_strangers  # noqa: E402

from common import (  # noqa: E402
    MB,
    ROOT,
    BenchError,
    CpuMeter,
    Nginx,
    Processes,
    Proxy,
    RssSampler,
    WrkResult,
    add_common_args,
    best_of,
    check_tools,
    children,
    fmt_ms,
    fmt_pct,
    free_port,
    install_signal_handlers,
    make_random,
    make_sparse,
    make_www,
    parse_sha256,
    pinned,
    print_config,
    rss_kb,
    run_curl,
    run_wrk,
    running_proxy,
    sha256_command,
    start_logged,
    start_nginx,
    tails,
    toml_string,
    wait_for_port,
    warm_up,
)

SIZE_64K = 64 * 1024
DECIMAL_MB = 1_000_000
GOAL_VS_UNCACHED = 1.5  # proxy hits / proxy uncached, req/s
GOAL_VS_NGINX = 0.6  # proxy hits / nginx proxy_cache hits, req/s
GOAL_RSS_MB = 32.0  # MB (10^6) over idle while a big object is stored and served
IDLE_WARN = 2.0  # % of a core used by the servers not under load during a run

CACHE_NAME = "edge"

# Both twisted-proxies get this config; only the cached one has the
# [cache.edge] table and `cache = "edge"`.  Shipped defaults otherwise:
# no pool setting nor any other tuning; the access log is off, as in
# run_compare.py.
PROXY_CONF = """\
[proxy]
access_log = "off"

[admin]
endpoint = "tcp:{admin}:interface=127.0.0.1"
{cache_table}
[[listener]]
name = "bench"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"
{cache_line}
  [[listener.route]]
  path = "/"
  backend = "origin"

  [[listener.route]]
  path = "/slow/"
  backend = "slow"

[backend.origin]
servers = [{{ url = "http://127.0.0.1:{origin}" }}]

[backend.slow]
servers = [{{ url = "http://127.0.0.1:{slow}" }}]
"""

CACHE_TABLE = """
[cache.{name}]
path = {path}
max_size = "4GiB"
memory = "64MiB"
max_object_size = "2GiB"
"""

# The origin: /c/ serves the www folder with a Cache-Control that lets a
# shared cache keep it for an hour.  Every target asks for the same /c/
# URLs, so the bytes on the wire differ only by what a proxy adds.
ORIGIN_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location /c/ {{
            alias {www}/;
            add_header Cache-Control "max-age=3600";
        }}
    }}
"""

# nginx with proxy_cache in front of the origin: one worker, on the proxy's
# core; keepalive to the upstream; proxy_buffers as run_reverse.py's nginx
# reverse proxy; access_log off (in common.NGINX_CONF).  tcp_nopush off:
# with common.NGINX_CONF's "sendfile on; tcp_nopush on", every 64 KiB hit
# (sent with sendfile from the cache file, whose body starts after nginx's
# own header) waited ~40 ms for a delayed ACK: 1,200 req/s at 5 % cpu,
# p50 44 ms, against 72,000 req/s with tcp_nopush off (measured here).
NGINX_CACHE = """\
    proxy_cache_path {cache} levels=1:2 keys_zone=edge:10m max_size=4g inactive=1h use_temp_path=off;
    upstream o {{
        server 127.0.0.1:{origin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://o;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 32 8k;
            proxy_cache edge;
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status $upstream_cache_status;
            tcp_nopush off;
        }}
    }}
"""

DIRECT = "direct (nginx origin)"
UNCACHED = "twisted-proxy, no cache"
HITS = "twisted-proxy, cache hits"
NGINX_HITS = "nginx proxy_cache hits"
ORDER = [DIRECT, UNCACHED, HITS, NGINX_HITS]
BODIES = [("100 B", "/c/100b", 100), ("64 KiB", "/c/64k", SIZE_64K)]


# ---------------------------------------------------------------------------
# the slow origin (this file run with --slow-origin PORT): stdlib, one
# thread per connection, HTTP/1.1 keep-alive


def slow_origin_main(port: int, delay: float, size: int, seed: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = slow_body(size, seed)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/_counts":
                with lock:
                    data = json.dumps(dict(counts)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)
                return
            with lock:
                counts[self.path] += 1
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    Server(("127.0.0.1", port), Handler).serve_forever()


def slow_body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def start_slow_origin(procs: Processes, args: argparse.Namespace, tmp: str) -> tuple[int, list[str]]:
    port = free_port()
    log = os.path.join(tmp, "slow-origin.log")
    argv = [sys.executable, os.path.abspath(__file__), "--slow-origin", str(port),
            "--delay", str(args.delay), "--collapse-bytes", str(args.collapse_bytes), "--seed", str(args.seed)]
    start_logged(procs, pinned(args.origin_cpu, argv), port, "slow origin", log)
    return port, [log]


def origin_counts(slow: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{slow}/_counts", timeout=10) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------
# small HTTP helpers


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of each
    body: bytes


def curl(url: str, args: argparse.Namespace, head: bool = False, timeout: float = 30) -> Reply:
    """One request with curl (on the wrk core): status, headers and body."""
    fd, body_path = tempfile.mkstemp(prefix="curl-")
    os.close(fd)
    try:
        argv = ["curl", "-s", "-S", "--max-time", str(int(timeout)), "-D", "-", "-o", body_path]
        argv += ["-I"] if head else []
        done = subprocess.run(pinned(args.wrk_cpu, argv + [url]), capture_output=True, timeout=timeout + 10)
        if done.returncode != 0:
            raise BenchError(f"curl {url} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        with open(body_path, "rb") as f:
            body = f.read()
    finally:
        os.remove(body_path)
    blocks = [b for b in done.stdout.decode("latin-1").split("\r\n\r\n") if b.strip()]
    lines = blocks[-1].split("\r\n") if blocks else [""]
    match = re.match(r"HTTP/\S+ (\d{3})", lines[0])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(match.group(1)) if match else 0, headers, body)


def admin_status(proxy_admin: int) -> dict[str, Any]:
    """The cache's counters from the admin listener's /status."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy_admin}/status", timeout=10) as r:
        status = json.loads(r.read())
    return status.get("caches", {}).get(CACHE_NAME, {})


# ---------------------------------------------------------------------------
# the servers


@dataclass
class Servers:
    tmp: str
    www: str
    origin: Nginx
    slow: int
    slow_logs: list[str]
    cache_dir: str
    uncached: Proxy | None = None
    uncached_admin: int = 0
    cached: Proxy | None = None
    cached_admin: int = 0
    nginx_cache: Nginx | None = None
    collapse_paths: list[str] = field(default_factory=list)  # cold URLs the collapsing step stored


def start_twisted(
    stack: ExitStack,
    procs: Processes,
    args: argparse.Namespace,
    servers: Servers,
    label: str,
    cached: bool,
) -> tuple[Proxy, int]:
    admin = free_port()

    def make_config(port: int) -> str:
        return PROXY_CONF.format(
            port=port,
            admin=admin,
            origin=servers.origin.port,
            slow=servers.slow,
            cache_table=CACHE_TABLE.format(name=CACHE_NAME, path=toml_string(servers.cache_dir)) if cached else "",
            cache_line=f'cache = "{CACHE_NAME}"\n' if cached else "",
        )

    def check(proxy: Proxy) -> None:
        url = f"http://127.0.0.1:{proxy.port}/c/100b"
        try:
            reply = curl(url, args)
        except BenchError as e:
            raise BenchError(f"{e}\n" + tails(proxy.logs)) from None
        if reply.status != 200 or len(reply.body) != 100:
            raise BenchError(
                f"{label} check: GET {url} answered {reply.status} with {len(reply.body)} bytes, "
                "expected 200 and the 100-byte file\n" + tails(proxy.logs)
            )

    proxy = stack.enter_context(running_proxy(procs, args, servers.tmp, label, make_config, check))
    return proxy, admin


def check_hit(args: argparse.Namespace, port: int, path: str, size: int, what: str, header: str,
              hit: str, logs: list[str]) -> Reply:
    """A warm-up request, then one that must be a hit: returns that reply."""
    url = f"http://127.0.0.1:{port}{path}"
    curl(url, args)
    reply = curl(url, args)
    value = reply.headers.get(header.lower(), "")
    if reply.status != 200 or len(reply.body) != size or not re.search(hit, value):
        raise BenchError(
            f"{what}: the second GET {path} answered {reply.status} with {len(reply.body)} bytes and "
            f"{header}: {value or '(none)'}; expected 200, {size} bytes and a hit\n" + tails(logs)
        )
    return reply


# ---------------------------------------------------------------------------
# wrk


@dataclass
class Target:
    label: str
    port: int
    pids: list[int]  # what serves it (nginx: the workers)
    cpu: int | None
    proxy: Proxy | None = None  # checked alive after every run
    admin: int = 0  # the cached proxy's admin port: counters around each run
    runs: list[WrkResult] = field(default_factory=list)
    idle_cpu: float = 0.0  # the most the servers not under load used meanwhile (% of a core)
    hits: int = 0  # cache counters over the measured runs (cached proxy only)
    misses: int = 0


def measure(args: argparse.Namespace, targets: list[Target], path: str, rounds: int) -> None:
    all_pids = {t.label: t.pids for t in targets}
    print(f"warm-up: {args.warmup:g} s per target", flush=True)
    for t in targets:
        warm_up(args, f"http://127.0.0.1:{t.port}{path}")
        alive(t, "the warm-up")
    for n in range(rounds):
        for t in targets:
            others = [p for label, pids in all_pids.items() if label not in (t.label, DIRECT) for p in pids]
            before = admin_status(t.admin) if t.admin else {}
            with CpuMeter(t.pids, t.cpu) as meter, CpuMeter(others, None) as idle:
                result = run_wrk(args, t.label, f"http://127.0.0.1:{t.port}{path}")
            result.cpu = meter.use
            t.runs.append(result)
            if idle.use is not None:
                t.idle_cpu = max(t.idle_cpu, idle.use.cpu)
            if t.admin:
                after = admin_status(t.admin)
                t.hits += after.get("hits", 0) - before.get("hits", 0)
                t.misses += after.get("misses", 0) - before.get("misses", 0)
            alive(t, f"round {n + 1}")
        print(f"round {n + 1}/{rounds}, req/s: " + ", ".join(f"{t.label} {t.runs[-1].rps:.0f}" for t in targets),
              flush=True)


def alive(t: Target, when: str) -> None:
    if t.proxy is not None and t.proxy.proc.poll() is not None:
        raise BenchError(f"{t.label} exited with status {t.proxy.proc.returncode} during {when}\n"
                         + tails(t.proxy.logs))


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(args: argparse.Namespace, title: str, targets: list[Target], rounds: int) -> dict[str, WrkResult]:
    best = {t.label: best_of(t.runs) for t in targets}
    direct = best[DIRECT].rps
    print()
    print(f"{title}, wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
          f"best of {rounds} (errors: all rounds)")
    header = (
        f"{'target':<28}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'MiB/s':>9}{'requests':>10}{'non-2xx':>8}"
        f"{'sock err':>9}{'x direct':>9}{'cpu%':>6}{'wait%':>6}{'steal%':>7}  rounds req/s"
    )
    print(header)
    print("-" * len(header))
    for t in targets:
        r = best[t.label]
        print(
            f"{t.label:<28}{r.rps:>8.0f}{fmt_ms(r.p50_ms):>8}{fmt_ms(r.p99_ms):>8}{r.transfer_bps / MB:>9.1f}"
            f"{r.requests:>10}{r.non_2xx:>8}{r.socket_errors:>9}{fmt_ratio(ratio(r.rps, direct)):>9}"
            f"{fmt_pct(r.cpu.cpu if r.cpu else None):>6}{fmt_pct(r.cpu.wait if r.cpu else None):>6}"
            f"{fmt_pct(r.cpu.steal if r.cpu else None):>7}  " + " ".join(f"{x.rps:.0f}" for x in t.runs)
        )
    for t in targets:
        r = best[t.label]
        if r.socket_errors:
            print(f"  {t.label}: socket errors {r.socket_detail}")
        if t.admin:
            total = sum(x.requests for x in t.runs)
            print(f"  {t.label}: the cache counted {t.hits} hits and {t.misses} misses over the measured "
                  f"runs (wrk completed {total} requests)")
    idle = max(t.idle_cpu for t in targets)
    print(f"  servers not under load on the proxy core used at most {idle:.1f} % of a core during a run"
          + (f" (WARNING: above {IDLE_WARN:g} %)" if idle > IDLE_WARN else ""))
    print("  cpu%, wait%: time the server wrk talked to (for direct: the origin's worker, which shares core 0 "
          "with wrk) spent running, and runnable but waiting; steal%: of its core, taken by the hypervisor")
    h, u, n = best[HITS].rps, best[UNCACHED].rps, best[NGINX_HITS].rps
    a, b = ratio(h, u), ratio(h, n)
    print(f"  proxy hits / proxy uncached: {fmt_ratio(a)} (goal >= {GOAL_VS_UNCACHED:g}): "
          f"{'met' if a is not None and a >= GOAL_VS_UNCACHED else 'MISSED'}")
    print(f"  proxy hits / nginx proxy_cache hits: {fmt_ratio(b)} (goal >= {GOAL_VS_NGINX:g}): "
          f"{'met' if b is not None and b >= GOAL_VS_NGINX else 'MISSED'}")
    sys.stdout.flush()
    return best


def wrk_json(best: dict[str, WrkResult], targets: list[Target]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in targets:
        r = best[t.label]
        out[t.label] = {
            "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "mib_s": r.transfer_bps / MB,
            "requests": r.requests, "non_2xx": r.non_2xx, "socket_errors": r.socket_errors,
            "rounds_rps": [x.rps for x in t.runs],
            "cpu": asdict(r.cpu) if r.cpu else None,
        }
        if t.admin:
            out[t.label]["cache_hits"] = t.hits
            out[t.label]["cache_misses"] = t.misses
    h, u, n = best[HITS].rps, best[UNCACHED].rps, best[NGINX_HITS].rps
    out["hits_over_uncached"] = ratio(h, u)
    out["hits_over_nginx_cache"] = ratio(h, n)
    return out


# ---------------------------------------------------------------------------
# py-spy on the cached proxy during a hit run


def profile_hits(args: argparse.Namespace, tmp: str, target: Target, path: str) -> dict[str, Any]:
    spy = args.py_spy
    if not os.path.exists(spy):
        print(f"  py-spy not found at {spy}: no profile", flush=True)
        return {}
    out = os.path.join(tmp, "py-spy.txt")
    seconds = max(2, int(args.duration))
    argv = pinned(args.wrk_cpu, [spy, "record", "-p", str(target.pids[0]), "-d", str(seconds), "-r", "100",
                                 "--function", "-f", "raw", "-o", out])
    print(f"\nprofile: py-spy record on the cached proxy (pid {target.pids[0]}) during a {seconds} s wrk run "
          f"of GET {path} (hits); not part of the figures", flush=True)
    spy_log = os.path.join(tmp, "py-spy.log")
    with open(spy_log, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(0.5)
            result = run_wrk(args, "profiled", f"http://127.0.0.1:{target.port}{path}", duration=seconds + 1)
            proc.wait(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if not os.path.exists(out):
        print("  py-spy wrote nothing:\n" + tails([spy_log]), flush=True)
        return {}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(out) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [clean_frame(x) for x in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"  wrk during the profile: {result.rps:.0f} req/s (slowed by the sampling); {total} samples")
    print("  top functions by own time (% of samples):")
    for name, n in own.most_common(args.profile_top):
        print(f"    {100 * n / total:5.1f}  {name}")
    print("  top twisted_proxy functions by inclusive time (% of samples):")
    ours = [(k, v) for k, v in inclusive.most_common() if "twisted_proxy/" in k]
    for name, n in ours[: args.profile_top]:
        print(f"    {100 * n / total:5.1f}  {name}")
    sys.stdout.flush()
    return {
        "samples": total,
        "rps_while_profiled": result.rps,
        "own": [[k, round(100 * v / total, 2)] for k, v in own.most_common(args.profile_top)],
        "inclusive_twisted_proxy": [[k, round(100 * v / total, 2)] for k, v in ours[: args.profile_top]],
    }


def clean_frame(frame: str) -> str:
    """'name (/long/path/twisted_proxy/x.py:12)' -> 'name (twisted_proxy/x.py:12)'."""
    match = re.match(r"^(.*) \((.*)\)$", frame)
    if not match:
        return frame
    name, where = match.groups()
    for marker in ("/twisted_proxy/", "/site-packages/", "/lib/python"):
        i = where.find(marker)
        if i >= 0:
            where = where[i + 1:] if marker == "/twisted_proxy/" else where[i + len(marker):].lstrip("/")
            break
    return f"{name} ({where})"


# ---------------------------------------------------------------------------
# collapsing


async def _clients(port: int, path: str, n: int, timeout: float) -> list[tuple[bytes, float] | BaseException]:
    """
    C{n} connections opened first, then the same request sent on all of
    them at once; each answer read to the end (C{Connection: close}).
    """
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    conns = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(n)), return_exceptions=True
    )

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[bytes, float]:
        try:
            started = time.monotonic()
            writer.write(request)
            await writer.drain()
            data = await reader.read(-1)
            return data, time.monotonic() - started
        finally:
            writer.close()

    opened = [c for c in conns if not isinstance(c, BaseException)]
    failed: list[tuple[bytes, float] | BaseException] = [c for c in conns if isinstance(c, BaseException)]
    done = await asyncio.wait_for(
        asyncio.gather(*(one(r, w) for r, w in opened), return_exceptions=True), timeout
    )
    return failed + list(done)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/\S+ (\d{3})", lines[0])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        rest = body
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = bytes(out)
    return int(match.group(1)) if match else 0, headers, body


def bench_collapse(args: argparse.Namespace, servers: Servers, proxy: Proxy, admin: int) -> dict[str, Any]:
    expected = hashlib.sha256(slow_body(args.collapse_bytes, args.seed)).hexdigest()
    rounds = max(1, args.collapse_rounds)
    print()
    print(f"collapsing: {args.clients} concurrent clients, one cold URL of the slow origin "
          f"({args.delay:g} s before its head, {args.collapse_bytes} bytes), a new URL each round, "
          f"{rounds} rounds")
    header = (f"{'round':<7}{'origin reqs':>12}{'full bodies':>12}{'errors':>8}{'seconds':>9}"
              f"{'max client s':>13}  Cache-Status seen (count)")
    print(header)
    print("-" * len(header))
    results = []
    for n in range(rounds):
        path = f"/slow/obj?round={n + 1}&t={time.time_ns()}"
        before = admin_status(admin)
        started = time.monotonic()
        outcomes = asyncio.run(_clients(proxy.port, path, args.clients, timeout=60 + 4 * args.delay))
        elapsed = time.monotonic() - started
        after = admin_status(admin)
        counts = origin_counts(servers.slow)
        full = 0
        errors: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        slowest = 0.0
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                errors[type(outcome).__name__] += 1
                continue
            data, seconds = outcome
            slowest = max(slowest, seconds)
            status, headers, body = parse_response(data)
            statuses[re.sub(r"; ttl=\d+", "", headers.get("cache-status", "(none)"))] += 1
            if status == 200 and len(body) == args.collapse_bytes and hashlib.sha256(body).hexdigest() == expected:
                full += 1
            else:
                errors[f"HTTP {status}, {len(body)} bytes"] += 1
        origin_requests = counts.get(path, 0)
        seen = ", ".join(f"{k} ({v})" for k, v in statuses.most_common())
        print(f"{n + 1:<7}{origin_requests:>12}{full:>8}/{args.clients:<3}{sum(errors.values()):>8}"
              f"{elapsed:>9.2f}{slowest:>13.2f}  {seen}", flush=True)
        for what, k in errors.items():
            print(f"    {k} x {what}")
        results.append({
            "path": path, "origin_requests": origin_requests, "full_bodies": full, "clients": args.clients,
            "errors": dict(errors), "seconds": elapsed, "slowest_client_s": slowest,
            "cache_status": dict(statuses),
            "counters": {k: after.get(k, 0) - before.get(k, 0) for k in ("hits", "misses", "collapsed", "stored")},
        })
    worst = max(r["origin_requests"] for r in results)
    all_full = all(r["full_bodies"] == args.clients for r in results)
    print("  cache counters, round 1: " + ", ".join(f"{k} +{v}" for k, v in results[0]["counters"].items()))
    print(f"  origin requests per cold URL: at most {worst} (goal 1): {'met' if worst == 1 else 'MISSED'}; "
          f"every client got the full body (sha256): {'yes' if all_full else 'NO'}")
    sys.stdout.flush()
    servers.collapse_paths = [r["path"] for r in results]
    return {"rounds": results, "max_origin_requests": worst, "all_full": all_full}


# ---------------------------------------------------------------------------
# one big object, stored while streamed, then served from the cache


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def bench_big(procs: Processes, args: argparse.Namespace, servers: Servers, proxy: Proxy) -> dict[str, Any]:
    size = args.big_mb * MB
    big = os.path.join(servers.www, "big")
    print()
    started = time.monotonic()
    if args.big_sparse:
        make_sparse(big, size)
        print(f"big object: {args.big_mb} MiB sparse file (zeros) {big}", flush=True)
        digest = ""
    else:
        print(f"big object: writing {args.big_mb} MiB of pseudo-random bytes (seed {args.seed}) to {big} ...",
              flush=True)
        digest = make_random(big, size, args.seed)
    hasher = sha256_command()
    path = "/c/big"
    # Unmeasured: the origin file into the page cache, and the pipeline checked.
    direct = run_curl(procs, args, [f"http://127.0.0.1:{servers.origin.port}{path}"], pipe_to=hasher, timeout=900)
    direct_digest = parse_sha256(direct.piped)
    digest = digest or direct_digest
    print(f"  origin file sha256 {digest} ({time.monotonic() - started:.1f} s); direct download "
          f"{direct.speed / MB:.1f} MiB/s, {'ok' if direct_digest == digest else 'MISMATCH'}", flush=True)
    if direct_digest != digest or direct.size != size:
        raise BenchError(f"direct download of {path}: {direct.size} bytes, sha256 {direct_digest}: "
                         "the bench itself is broken")
    time.sleep(0.5)
    idle = rss_kb(proxy.proc.pid) * 1024 / DECIMAL_MB
    cache_before = dir_bytes(servers.cache_dir)
    rows = []
    print(f"  the cached proxy's RSS when idle: {idle:.1f} MB (MB = 10^6 bytes)")
    header = (f"  {'transfer':<34}{'MiB/s':>8}{'seconds':>9}{'max RSS MB':>12}{'over idle':>11}{'cpu%':>6}"
              f"  {'sha256':<9}Cache-Status")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label in ("1st client (miss, stored)", "2nd client (from the cache)"):
        headers_file = os.path.join(servers.tmp, "big-headers.txt")
        with RssSampler(proxy.proc.pid) as sampler, CpuMeter([proxy.proc.pid], args.proxy_cpu) as meter:
            t = run_curl(procs, args, ["-D", headers_file, f"http://127.0.0.1:{proxy.port}{path}"],
                         pipe_to=hasher, timeout=900)
        with open(headers_file, "rb") as f:
            head = f.read().decode("latin-1")
        match = re.search(r"^cache-status:\s*(.*?)\s*$", head, re.M | re.I)
        cache_status = match.group(1) if match else "(none)"
        got = parse_sha256(t.piped)
        ok = got == digest and t.size == size and t.code == "200"
        over = sampler.max_kb * 1024 / DECIMAL_MB - idle
        use = meter.use
        print(f"  {label:<34}{t.speed / MB:>8.1f}{t.seconds:>9.2f}{sampler.max_kb * 1024 / DECIMAL_MB:>12.1f}"
              f"{over:>11.1f}{fmt_pct(use.cpu if use else None):>6}  "
              f"{'ok' if ok else 'MISMATCH':<9}{cache_status}", flush=True)
        if not ok:
            print(f"    HTTP {t.code}, {t.size} bytes, sha256 {got or '(none)'}")
        rows.append({"transfer": label, "mib_s": t.speed / MB, "seconds": t.seconds,
                     "max_rss_mb": sampler.max_kb * 1024 / DECIMAL_MB, "rss_over_idle_mb": over,
                     "sha256_ok": ok, "sha256": got, "http": t.code, "bytes": t.size,
                     "cache_status": cache_status, "cpu": asdict(use) if use else None})
        if proxy.proc.poll() is not None:
            raise BenchError("the cached proxy exited during the big transfers\n" + tails(proxy.logs))
    stored = dir_bytes(servers.cache_dir) - cache_before
    growth = max(r["rss_over_idle_mb"] for r in rows)
    hit = bool(re.search(r"(^|;)\s*hit\b", rows[1]["cache_status"]))
    stored_ok = "stored" in rows[0]["cache_status"]
    both_ok = all(r["sha256_ok"] for r in rows)
    print(f"  cache folder grew by {stored / MB:.1f} MiB on disk")
    print(f"  sha256 of both = the origin file's: {'yes' if both_ok else 'NO'}; 1st says stored: "
          f"{'yes' if stored_ok else 'NO'}; 2nd is a hit: {'yes' if hit else 'NO'}; "
          f"RSS growth {growth:.1f} MB (goal <= {GOAL_RSS_MB:g}): {'met' if growth <= GOAL_RSS_MB else 'MISSED'}")
    sys.stdout.flush()
    return {"size_mib": args.big_mb, "sparse": args.big_sparse, "sha256": digest, "idle_rss_mb": idle,
            "transfers": rows, "rss_growth_mb": growth, "second_is_hit": hit, "first_stored": stored_ok,
            "sha256_ok": both_ok, "cache_folder_growth_mib": stored / MB}


# ---------------------------------------------------------------------------
# restart


def restart_proxy(
    stack: ExitStack, procs: Processes, args: argparse.Namespace, servers: Servers, old: Proxy
) -> Proxy:
    """
    The stopped proxy C{old} started again: the same twistd command, the
    same config file, so the same ports and the same cache folder (the
    cache key holds the Host, so a new port would miss on purpose).
    """
    argv = [args.twistd, "-n", "--pidfile=", "proxy", "--config", old.conf]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out_log = os.path.join(servers.tmp, "proxy-cached-restarted.stdout.log")
    err_log = os.path.join(servers.tmp, "proxy-cached-restarted.stderr.log")
    with open(out_log, "wb") as out, open(err_log, "wb") as err:
        proc = procs.start(pinned(args.proxy_cpu, argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                           cwd=servers.tmp, env=env)
    stack.callback(procs.stop, proc)
    logs = [err_log, out_log]
    wait_for_port(old.port, proc, "the restarted cached proxy", args.start_timeout, logs)
    return Proxy(old.port, proc, logs, old.conf, old.config)


def bench_restart(
    stack: ExitStack, procs: Processes, args: argparse.Namespace, servers: Servers, big: bool
) -> dict[str, Any]:
    assert servers.cached is not None
    print()
    print("restart: a fresh object stored, the cached proxy stopped (SIGTERM) and started on the same folder")
    path = f"/slow/restart?t={time.time_ns()}"
    first = curl(f"http://127.0.0.1:{servers.cached.port}{path}", args)
    print(f"  before: GET {path} -> {first.status}, Cache-Status: {first.headers.get('cache-status', '(none)')}")
    time.sleep(0.2)
    old = servers.cached
    stopped = time.monotonic()
    procs.stop(old.proc)
    code = old.proc.returncode
    clean = "Server Shut Down." in tails(old.logs, 5)
    print(f"  stopped in {time.monotonic() - stopped:.2f} s (exit status {code}; "
          f"{'a clean twistd shutdown (twistd re-raises the signal it got)' if clean else 'NOT a clean shutdown'})")
    started = time.monotonic()
    proxy = restart_proxy(stack, procs, args, servers, old)
    up = time.monotonic() - started
    servers.cached = proxy
    print(f"  started again with the same config on 127.0.0.1:{proxy.port} (pid {proxy.proc.pid}), accepting "
          f"after {up:.2f} s; cache after start: {admin_status(servers.cached_admin)}", flush=True)
    checks = []
    todo = [(path, False), ("/c/100b", False), ("/c/64k", False)]
    todo += [(p, False) for p in servers.collapse_paths[:1]]
    if big:
        todo.append(("/c/big", True))
    counts_before = origin_counts(servers.slow)
    for p, head in todo:
        reply = curl(f"http://127.0.0.1:{proxy.port}{p}", args, head=head)
        value = reply.headers.get("cache-status", "(none)")
        hit = bool(re.search(r"(^|;)\s*hit\b", value))
        checks.append({"path": p, "method": "HEAD" if head else "GET", "status": reply.status,
                       "cache_status": value, "hit": hit, "bytes": len(reply.body)})
    counts_after = origin_counts(servers.slow)
    slow_requests = sum(counts_after.values()) - sum(counts_before.values())
    for c in checks:
        size = "" if c["method"] == "HEAD" else f", {c['bytes']} bytes"
        print(f"  {c['method']} {c['path']} -> {c['status']}{size}, Cache-Status: {c['cache_status']}"
              f"{'' if c['hit'] else '   <- NOT a hit'}")
    all_hits = all(c["hit"] for c in checks)
    print(f"  slow-origin requests during these: {slow_requests} (goal 0); every answer a hit: "
          f"{'yes' if all_hits else 'NO'}")
    sys.stdout.flush()
    return {"stop_exit_status": code, "clean_shutdown": clean, "start_seconds": up, "checks": checks, "slow_origin_requests": slow_requests, "all_hits": all_hits}


# ---------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    for action in p._actions:
        if action.dest in ("slow_mbps", "skip_rss"):
            action.help = argparse.SUPPRESS
    p.add_argument("--repeat", type=int, default=3,
                   help="wrk rounds per target for 100 B; best reported, errors of all counted (3)")
    p.add_argument("--repeat-64k", type=int, default=None, help="the same for 64 KiB (default: --repeat)")
    p.add_argument("--clients", type=int, default=200, help="concurrent clients of the collapsing step (200)")
    p.add_argument("--collapse-rounds", type=int, default=3, help="collapsing rounds, a cold URL each (3)")
    p.add_argument("--collapse-bytes", type=int, default=256 * 1024,
                   help="body size of the slow origin (256 KiB)")
    p.add_argument("--delay", type=float, default=0.5, help="seconds the slow origin waits before answering (0.5)")
    p.add_argument("--skip-big", action="store_true", help="skip the big-object step")
    p.add_argument("--big-mb", type=int, default=1024, help="size of the big object in MiB (1024)")
    p.add_argument("--big-sparse", action="store_true",
                   help="a sparse file (zeros, instant) instead of pseudo-random bytes (about 13 s per GiB)")
    p.add_argument("--seed", type=int, default=1, help="seed of the pseudo-random bodies (1)")
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                   help="py-spy on the cached proxy during an extra 100 B hit run: when a 100 B goal is "
                        "missed (auto), always, never")
    p.add_argument("--profile-top", type=int, default=20, help="functions listed from the profile (20)")
    p.add_argument("--py-spy", default=os.path.join(os.path.dirname(sys.executable), "py-spy"),
                   help="py-spy to profile with (the one next to this python)")
    p.add_argument("--json", metavar="OUT", help="write every figure to OUT as JSON")
    p.add_argument("--slow-origin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.slow_origin:
        slow_origin_main(args.slow_origin, args.delay, args.collapse_bytes, args.seed)
        return 0
    problem = check_tools(args, ("wrk", "curl", sha256_command()[0]))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    install_signal_handlers()
    if args.wrk_cpu is not None and hasattr(os, "sched_setaffinity"):
        # this script's own clients (collapsing) run beside wrk and curl
        os.sched_setaffinity(0, {args.wrk_cpu})

    tmp = tempfile.mkdtemp(prefix="twisted-proxy-cache-")
    procs = Processes()
    report: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "slow_origin"}}
    try:
        try:
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        except OSError:
            load = "-"
        print(f"cpus: {os.cpu_count()}; wrk, curl, clients on {args.wrk_cpu}; origins on {args.origin_cpu}; "
              f"twisted-proxies and nginx proxy_cache on {args.proxy_cpu}; load average {load}; temp dir {tmp}",
              flush=True)
        warn_strangers(procs, "at the start")
        www = make_www(tmp)
        make_random(os.path.join(www, "64k"), SIZE_64K, args.seed)
        origin = start_nginx(procs, tmp, args.origin_cpu, "origin",
                             lambda port: ORIGIN_SERVER.format(port=port, www=www))
        slow, slow_logs = start_slow_origin(procs, args, tmp)
        servers = Servers(tmp, www, origin, slow, slow_logs, os.path.join(tmp, "cache", CACHE_NAME))
        print(f"origin: nginx on 127.0.0.1:{origin.port} (/c/100b, /c/64k, /c/big with Cache-Control: "
              f"max-age=3600); slow origin on 127.0.0.1:{slow}", flush=True)

        with ExitStack() as stack:
            servers.uncached, servers.uncached_admin = start_twisted(stack, procs, args, servers, "uncached", False)
            servers.cached, servers.cached_admin = start_twisted(stack, procs, args, servers, "cached", True)
            cache_dir = os.path.join(tmp, "nginx-cache")
            nginx_body = lambda port: NGINX_CACHE.format(port=port, origin=origin.port, cache=cache_dir)  # noqa: E731
            servers.nginx_cache = start_nginx(procs, tmp, args.proxy_cpu, "proxy-cache", nginx_body)
            print(f"twisted-proxy without cache on 127.0.0.1:{servers.uncached.port} (pid {servers.uncached.proc.pid}), "
                  f"with cache on 127.0.0.1:{servers.cached.port} (pid {servers.cached.proc.pid}); "
                  f"nginx proxy_cache on 127.0.0.1:{servers.nginx_cache.port}", flush=True)
            print_config(f"twisted-proxy with cache ({servers.cached.conf}; the uncached one has neither the "
                         f"[cache.{CACHE_NAME}] table nor the cache line)", servers.cached.config)
            print_config("nginx proxy_cache, inside http {} (plus access_log off, keepalive_requests 1000, "
                         "sendfile: common.NGINX_CONF)", nginx_body(servers.nginx_cache.port))
            checks: dict[str, Any] = {}
            for _, path, size in BODIES:
                r = check_hit(args, servers.cached.port, path, size, "twisted-proxy cache check", "Cache-Status",
                              rf"^{CACHE_NAME}; hit\b", servers.cached.logs)
                n = check_hit(args, servers.nginx_cache.port, path, size, "nginx proxy_cache check",
                              "X-Cache-Status", r"^HIT$", servers.nginx_cache.logs)
                u = curl(f"http://127.0.0.1:{servers.uncached.port}{path}", args)
                print(f"check {path}: twisted-proxy Cache-Status: {r.headers.get('cache-status')}; nginx "
                      f"X-Cache-Status: {n.headers.get('x-cache-status')}; uncached proxy {u.status}, "
                      f"{len(u.body)} bytes", flush=True)
                checks[path] = {"cache_status": r.headers.get("cache-status"),
                                "x_cache_status": n.headers.get("x-cache-status")}
            report["checks"] = checks

            nginx_workers = children(servers.nginx_cache.proc.pid)
            profile: dict[str, Any] = {}
            for title, path, _ in BODIES:
                rounds = max(1, args.repeat if title == "100 B" or args.repeat_64k is None else args.repeat_64k)
                targets = [
                    Target(DIRECT, origin.port, children(origin.proc.pid), args.origin_cpu),
                    Target(UNCACHED, servers.uncached.port, [servers.uncached.proc.pid], args.proxy_cpu,
                           servers.uncached),
                    Target(HITS, servers.cached.port, [servers.cached.proc.pid], args.proxy_cpu, servers.cached,
                           admin=servers.cached_admin),
                    Target(NGINX_HITS, servers.nginx_cache.port, nginx_workers, args.proxy_cpu),
                ]
                print(f"\nGET {path} ({title} body): {rounds} round{'s' if rounds > 1 else ''} over the four targets",
                      flush=True)
                measure(args, targets, path, rounds)
                best = print_table(args, f"GET {path} ({title} body)", targets, rounds)
                report[title] = wrk_json(best, targets)
                if title == "100 B":
                    missed = (report[title]["hits_over_uncached"] or 0) < GOAL_VS_UNCACHED or (
                        report[title]["hits_over_nginx_cache"] or 0) < GOAL_VS_NGINX
                    if args.profile == "always" or (args.profile == "auto" and missed):
                        profile = profile_hits(args, tmp, targets[2], path)
            report["profile"] = profile

            report["collapse"] = bench_collapse(args, servers, servers.cached, servers.cached_admin)
            if not args.skip_big:
                report["big"] = bench_big(procs, args, servers, servers.cached)
            report["restart"] = bench_restart(stack, procs, args, servers, not args.skip_big)
            warn_strangers(procs, "at the end")

        print_summary(report, args)
        return 0
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        report["error"] = str(e)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2, default=str)
        if args.keep_temp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def print_summary(report: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print("summary")
    for title, _, _ in BODIES:
        r = report[title]
        print(f"  {title}: hits {r[HITS]['rps']:.0f} req/s, uncached {r[UNCACHED]['rps']:.0f}, nginx proxy_cache "
              f"{r[NGINX_HITS]['rps']:.0f}, direct {r[DIRECT]['rps']:.0f}; hits/uncached "
              f"{fmt_ratio(r['hits_over_uncached'])} (goal {GOAL_VS_UNCACHED:g}), hits/nginx "
              f"{fmt_ratio(r['hits_over_nginx_cache'])} (goal {GOAL_VS_NGINX:g})")
    c = report["collapse"]
    print(f"  collapsing: at most {c['max_origin_requests']} origin request(s) for {args.clients} clients "
          f"(goal 1); full bodies everywhere: {'yes' if c['all_full'] else 'NO'}")
    if "big" in report:
        b = report["big"]
        print(f"  big object {b['size_mib']} MiB: sha256 ok {b['sha256_ok']}, stored {b['first_stored']}, "
              f"second a hit {b['second_is_hit']}, RSS growth {b['rss_growth_mb']:.1f} MB")
    s = report["restart"]
    print(f"  restart: every answer a hit {s['all_hits']}, slow-origin requests {s['slow_origin_requests']}")


if __name__ == "__main__":
    sys.exit(main())
