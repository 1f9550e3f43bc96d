#!/usr/bin/env python3
"""
Slow-read attack: does twisted-proxy's response buffering shield a small
threaded backend?

The issue's words: "a slow-read attack with 5,000 connections against a
small threaded backend while other clients are served".  Not a test: it
prints what it measures.  Run it with the project's virtualenv so that the
proxy runs this working tree:

    /work/venv/bin/python bench/run_slowread.py [--attackers 5000] [--size 262144]
        [--duration 20] [--json OUT]

Pieces, all on 127.0.0.1, every process killed (whole process group) at exit:

  * backend: a small threaded HTTP/1.1 server written here (stdlib
    http.server handlers run by a ThreadPoolExecutor of --workers threads,
    16 by default; the accept loop takes a connection only when a worker is
    free, so at most 16 requests are in progress and the rest wait in the
    listen queue, like a gunicorn sync app).  It answers `/big` (--size
    bytes, written with sendall in 16 KiB pieces: the write blocks while the
    peer does not read) and `/small` (100 bytes), closes the connection
    after each response (as gunicorn's sync worker), and counts its busy
    workers (a control port answers its counters as JSON);
  * twisted-proxy under twistd: one reverse listener, one route to the
    backend, run with the shipped defaults (response_buffer 1 GiB on a
    reverse listener) and once more with `response_buffer = 0` (pure
    back-pressure), each in a temp folder of its own (spool inside it);
  * attackers: one process, a selector loop, --attackers connections with a
    small SO_RCVBUF and TCP_MAXSEG 1460 (see --mss), each sends `GET /big`
    then reads --read-rate bytes a second (the first read takes 12 bytes:
    the status line's code);
  * legitimate clients: wrk -t1 -c20 --latency on `/small` through the proxy
    for --duration seconds, once without any attack (baseline) and once
    during each attack, after the attack has settled; beside wrk a probe
    (4 one-request-at-a-time clients), because wrk counts nowhere a request
    that is never answered.

Measured: the backend's busy workers and listen queue, the proxy's RSS,
descriptors (sockets, spool files) and spool bytes on disk, its /status and
the lines of its log that look like trouble, and how long it takes to let
everything go once the attackers leave.  bench/README.md has the details
and figures.

Exit status: 0 when it ran (whatever the figures), 2 when a step could not
run (the message says which, with log tails), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BODY_100B,
    BenchError,
    CpuMeter,
    Processes,
    Proxy,
    RssSampler,
    check_http,
    fmt_ms,
    fmt_pct,
    free_port,
    install_signal_handlers,
    parse_wrk,
    pinned,
    print_config,
    rss_kb,
    running_proxy,
    tails,
    wait_for_port,
)

THIS = os.path.abspath(__file__)
KiB = 1024
DECIMAL_MB = 1_000_000


# ---------------------------------------------------------------------------
# the backend (run as: run_slowread.py --backend PORT --control PORT ...)


class _BackendStats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy = 0  # accepted and not closed yet: at most --workers
        self.max_busy = 0
        self.writing_big = 0  # inside the /big body's sendall loop
        self.accepted = 0
        self.big_done = 0
        self.big_aborted = 0  # the peer went away while /big was written
        self.small_done = 0
        self.other = 0  # anything else (no request, parse error, 404)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "busy": self.busy,
                "max_busy": self.max_busy,
                "writing_big": self.writing_big,
                "accepted": self.accepted,
                "big_done": self.big_done,
                "big_aborted": self.big_aborted,
                "small_done": self.small_done,
                "other": self.other,
            }


def backend_main(port: int, control: int, size: int, workers: int, backlog: int, mss: int) -> None:
    stats = _BackendStats()
    big = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    head_small = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(BODY_100B)
    )
    head_big = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % size
    )
    piece = 16 * KiB

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # No timeout: a sync worker's write blocks for as long as the peer
        # does not read (gunicorn would kill the worker after its 30 s).
        timeout = None
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.close_connection = True
            path = self.path.split("?", 1)[0]
            if path == "/small":
                self.wfile.write(head_small + BODY_100B)
                with stats.lock:
                    stats.small_done += 1
            elif path == "/big":
                with stats.lock:
                    stats.writing_big += 1
                try:
                    self.wfile.write(head_big)
                    view = memoryview(big)
                    for i in range(0, size, piece):
                        self.wfile.write(view[i : i + piece])  # sendall: blocks
                except OSError:
                    with stats.lock:
                        stats.big_aborted += 1
                    raise
                finally:
                    with stats.lock:
                        stats.writing_big -= 1
                with stats.lock:
                    stats.big_done += 1
            else:
                self.send_error(404)
                with stats.lock:
                    stats.other += 1

    free = threading.Semaphore(workers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="worker")

    def serve(conn: socket.socket, addr: Any) -> None:
        try:
            Handler(conn, addr, None)
        except OSError:
            pass
        except Exception as e:  # a bug here: say so, keep serving
            print(f"backend: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()
            with stats.lock:
                stats.busy -= 1
            free.release()

    def control_loop(sock: socket.socket) -> None:
        while True:
            c, _ = sock.accept()
            with c:
                try:
                    c.sendall(json.dumps(stats.snapshot()).encode() + b"\n")
                except OSError:
                    pass

    ctl = socket.create_server(("127.0.0.1", control), backlog=64)
    threading.Thread(target=control_loop, args=(ctl,), daemon=True).start()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mss:
        # inherited by accepted connections: segments of this size both
        # ways, as with a backend on another host across Ethernet
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    server.bind(("127.0.0.1", port))
    server.listen(backlog)
    while True:
        free.acquire()  # a connection is taken only when a worker is free
        try:
            conn, addr = server.accept()
        except OSError as e:
            free.release()
            print(f"backend: accept: {e}", file=sys.stderr, flush=True)
            time.sleep(0.05)
            continue
        with stats.lock:
            stats.accepted += 1
            stats.busy += 1
            stats.max_busy = max(stats.max_busy, stats.busy)
        pool.submit(serve, conn, addr)


# ---------------------------------------------------------------------------
# the attackers (run as: run_slowread.py --attacker PORT --count N ...)


def attacker_main(
    port: int, count: int, rcvbuf: int, mss: int, rate: float, status_path: str, max_pending: int,
    connect_timeout: float,
) -> None:
    started_at = time.monotonic()
    request = (
        f"GET /big HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slow-reader\r\n\r\n".encode()
    )
    c: dict[str, Any] = {
        "target": count,
        "started": 0,
        "connected": 0,
        "connect_failed": 0,
        "connect_timeout": 0,
        "send_failed": 0,
        "open": 0,
        "closed_by_proxy": 0,  # EOF
        "reset": 0,  # ECONNRESET or another error reading
        "bytes": 0,
        "status": {},
        "closed_by_proxy_bytes": {},  # bytes read before the EOF: histogram
        "connect_phase_s": None,
        "errors": {},
    }
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)

    def write_status() -> None:
        c["t"] = round(time.monotonic() - started_at, 2)
        c["open"] = len(conns)
        tmp = status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(c, f)
        os.replace(tmp, status_path)

    def count_error(key: str) -> None:
        c["errors"][key] = c["errors"].get(key, 0) + 1

    sel = selectors.DefaultSelector()
    pending: dict[int, tuple[socket.socket, float]] = {}
    # fd -> [socket, bytes read, first bytes]
    conns: dict[int, list[Any]] = {}
    last_status = 0.0
    while (c["started"] < count or pending) and not stop:
        now = time.monotonic()
        while c["started"] < count and len(pending) < max_pending:
            c["started"] += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if mss:
                # advertised in the SYN: the proxy's side sends segments of
                # this size, as to a client on an Ethernet path (loopback's
                # own is 65483, which makes the proxy's send buffer grow to
                # tcp_wmem's maximum, 4 MiB, for any client)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                c["connect_failed"] += 1
                count_error(errno.errorcode.get(err, str(err)))
                s.close()
                continue
            pending[s.fileno()] = (s, now)
            sel.register(s, selectors.EVENT_WRITE)
        for key, _ in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            sel.unregister(s)
            del pending[s.fileno()]
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                c["connect_failed"] += 1
                count_error(errno.errorcode.get(err, str(err)))
                s.close()
                continue
            c["connected"] += 1
            try:
                s.send(request)
            except OSError as e:
                c["send_failed"] += 1
                count_error(type(e).__name__)
                s.close()
                continue
            conns[s.fileno()] = [s, 0, b""]
        now = time.monotonic()
        for fd, (s, since) in list(pending.items()):
            if now - since > connect_timeout:
                sel.unregister(s)
                del pending[fd]
                s.close()
                c["connect_timeout"] += 1
        if now - last_status >= 0.5:
            write_status()
            last_status = now
    c["connect_phase_s"] = round(time.monotonic() - started_at, 2)
    write_status()

    period = 1.0 / rate if rate > 0 else 1.0
    next_tick = time.monotonic()
    while not stop:
        for fd, item in list(conns.items()):
            s = item[0]
            want = 12 - len(item[2]) if len(item[2]) < 12 else (1 if rate > 0 else 0)
            if not want:
                continue
            try:
                data = s.recv(want, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as e:
                c["reset"] += 1
                count_error(type(e).__name__)
                s.close()
                del conns[fd]
                continue
            if not data:
                c["closed_by_proxy"] += 1
                bucket = "head only" if item[1] < 12 else "some body"
                c["closed_by_proxy_bytes"][bucket] = c["closed_by_proxy_bytes"].get(bucket, 0) + 1
                s.close()
                del conns[fd]
                continue
            item[1] += len(data)
            c["bytes"] += len(data)
            if len(item[2]) < 12:
                item[2] += data
                if len(item[2]) >= 12:
                    code = item[2][9:12].decode("latin-1", "replace")
                    c["status"][code] = c["status"].get(code, 0) + 1
        write_status()
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()
    write_status()


# ---------------------------------------------------------------------------
# measuring helpers


def backend_stats(control: int) -> dict[str, int] | None:
    try:
        with socket.create_connection(("127.0.0.1", control), timeout=2) as s:
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)
    except (OSError, ValueError):
        return None


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_detail(pid: int, spool: str) -> dict[str, int]:
    """
    The proxy's descriptors by kind, and the spool files' bytes: its files
    are unnamed (O_TMPFILE), so they are found through /proc/PID/fd.
    """
    out = {"fds": 0, "sockets": 0, "spool_files": 0, "other": 0, "spool_bytes": 0, "spool_disk": 0}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    prefix = spool.rstrip("/") + "/"
    for name in names:
        path = f"/proc/{pid}/fd/{name}"
        try:
            target = os.readlink(path)
        except OSError:
            continue
        out["fds"] += 1
        if target.startswith("socket:"):
            out["sockets"] += 1
        elif target.startswith(prefix):
            out["spool_files"] += 1
            try:
                st = os.stat(path)
            except OSError:
                continue
            out["spool_bytes"] += st.st_size
            out["spool_disk"] += st.st_blocks * 512
        else:
            out["other"] += 1
    return out


def tcp_counts(proxy_port: int, backend_port: int) -> dict[str, int]:
    """
    From /proc/net/tcp: the backend's listen queue (rx_queue of its LISTEN
    socket: connections waiting for accept), established connections to the
    backend's port (seen from the proxy's side), and to the proxy's port.
    """
    out = {"backend_accept_queue": 0, "proxy_to_backend": 0, "clients_to_proxy": 0}
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                lport = int(local.split(":")[1], 16)
                rport = int(remote.split(":")[1], 16)
                if state == "0A" and lport == backend_port:
                    out["backend_accept_queue"] = int(fields[4].split(":")[1], 16)
                elif state == "01":
                    if rport == backend_port:
                        out["proxy_to_backend"] += 1
                    elif rport == proxy_port:
                        out["clients_to_proxy"] += 1
    except OSError:
        pass
    return out


class Timeline:
    """
    Every C{interval} s: the backend's counters, the proxy's RSS and
    descriptors; every C{detail} s also the spool and the TCP counts, and
    the attackers' status file.
    """

    def __init__(
        self, proxy_pid: int, control: int, spool: str, proxy_port: int, backend_port: int,
        attack_status: str | None, interval: float = 0.25, detail: float = 1.0,
    ) -> None:
        self.args = (proxy_pid, control, spool, proxy_port, backend_port, attack_status)
        self.interval = interval
        self.detail = detail
        self.samples: list[dict[str, Any]] = []
        self.max_busy = 0
        self.max_fds = 0
        self.max_spool = 0
        self.max_spool_disk = 0
        self.max_queue = 0
        self.phase = "attack"
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pid, control, spool, pport, bport, status = self.args
        last_detail = -1e9
        while not self._stop.is_set():
            now = time.monotonic()
            s: dict[str, Any] = {"t": round(now - self.start, 2), "phase": self.phase}
            b = backend_stats(control)
            if b:
                s["busy"] = b["busy"]
                s["backend"] = b
                self.max_busy = max(self.max_busy, b["busy"])
            try:
                s["rss_mb"] = round(rss_kb(pid) * 1024 / DECIMAL_MB, 1)
            except (OSError, BenchError):
                pass
            if now - last_detail >= self.detail:
                last_detail = now
                d = fd_detail(pid, spool)
                s.update(d)
                self.max_spool = max(self.max_spool, d["spool_bytes"])
                self.max_spool_disk = max(self.max_spool_disk, d["spool_disk"])
                t = tcp_counts(pport, bport)
                s.update(t)
                self.max_queue = max(self.max_queue, t["backend_accept_queue"])
                if status:
                    a = read_json(status)
                    if a:
                        s["attackers_open"] = a.get("open")
                        s["attackers_connected"] = a.get("connected")
            else:
                n = fd_count(pid)
                if n is not None:
                    s["fds"] = n
            if s.get("fds"):
                self.max_fds = max(self.max_fds, s["fds"])
            self.samples.append(s)
            self._stop.wait(self.interval)

    def __enter__(self) -> "Timeline":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------
# pieces


class LimitedProcesses(Processes):
    """
    Processes whose next child may get an RLIMIT_NOFILE of its own (soft
    and hard: the proxy raises its soft limit to the hard one at start).
    """

    def __init__(self) -> None:
        super().__init__()
        self.next_nofile: int | None = None

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        n = self.next_nofile
        self.next_nofile = None
        if n:
            def limit() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

            kwargs["preexec_fn"] = limit
        return super().start(argv, **kwargs)


@dataclass
class Backend:
    port: int
    control: int
    proc: subprocess.Popen[bytes]
    log: str


def other_port(*taken: int) -> int:
    """A free port, none of C{taken} (free_port can hand out the same one twice in a row)."""
    while True:
        port = free_port()
        if port not in taken:
            return port


def start_backend(procs: Processes, args: argparse.Namespace, tmp: str) -> Backend:
    port = free_port()
    control = other_port(port)
    log = os.path.join(tmp, "backend.log")
    argv = pinned(args.origin_cpu, [
        sys.executable, THIS, "--backend", str(port), "--control", str(control),
        "--size", str(args.size), "--workers", str(args.workers), "--backend-backlog", str(args.backend_backlog),
        "--backend-mss", str(args.backend_mss),
    ])
    with open(log, "wb") as out:
        proc = procs.start(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for_port(control, proc, "backend (control port)", 10, [log])
    wait_for_port(port, proc, "backend", 10, [log])
    # wait_for_port's probe took a worker for a moment: let it go
    time.sleep(0.2)
    return Backend(port, control, proc, log)


PROXY_CONF = """\
[proxy]
access_log = "access.log"
spool_path = "spool"

[admin]
endpoint = "tcp:{admin}:interface=127.0.0.1"

[[listener]]
name = "front"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"
{buffer}
  [[listener.route]]
  path = "/"
  backend = "app"

[backend.app]
servers = [{{ url = "http://127.0.0.1:{backend}"{server_extra} }}]
"""


def http_get(port: int, path: str, timeout: float = 10) -> tuple[str, bytes]:
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode("latin-1"), body


def admin_status(port: int) -> dict[str, Any] | None:
    try:
        status, body = http_get(port, "/status", timeout=5)
        return json.loads(body) if " 200 " in status + " " else None
    except (OSError, ValueError):
        return None


def proxy_nofile(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return " / ".join(line.split()[3:5])
    except OSError:
        pass
    return "?"


_LOG_INTERESTING = re.compile(
    r"too many open files|emfile|enfile|traceback|unhandled|error|exception|spool|"
    r"refus|timed? ?out|fail|critical|warn|shed|pause|limit|no progress|: [45]\d\d\b",
    re.I,
)
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{4} ")


def scan_logs(paths: list[str]) -> tuple[int, list[tuple[int, str, str]]]:
    """
    (total lines, [(count, normalized line, an example)]) of the lines that
    look like trouble, most frequent first.
    """
    total = 0
    groups: dict[str, list[Any]] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        total += len(lines)
        for line in lines:
            if not _LOG_INTERESTING.search(line):
                continue
            text = _TIMESTAMP.sub("", line).strip()
            norm = re.sub(r"\d+", "N", text)
            norm = re.sub(r"0xN?[0-9a-f]+", "0x.", norm)
            g = groups.setdefault(norm, [0, text])
            g[0] += 1
    items = sorted(((g[0], n, g[1]) for n, g in groups.items()), key=lambda x: -x[0])
    return total, items


def access_counts(path: str) -> dict[str, dict[str, int]]:
    """Statuses in the access log, by path (/small, /big, other)."""
    out: dict[str, dict[str, int]] = {}
    try:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                url = str(line.get("url", ""))
                key = "/big" if url.endswith("/big") else "/small" if url.endswith("/small") else "other"
                st = str(line.get("status"))
                out.setdefault(key, {})
                out[key][st] = out[key].get(st, 0) + 1
    except OSError:
        pass
    return out


class Probe:
    """
    Legitimate requests wrk cannot account for: wrk counts a timeout only
    for an answer that comes later than its --timeout, and a request never
    answered (or a connection never accepted) is counted nowhere. C{threads}
    clients each send C{GET /small} on a new connection, wait up to
    C{timeout} s for the whole answer, pause 0.25 s, and again.
    """

    def __init__(self, port: int, timeout: float, threads: int = 4) -> None:
        self.port = port
        self.timeout = timeout
        self.lock = threading.Lock()
        self.counts = {"sent": 0, "ok": 0, "http_error": 0, "timeout": 0, "conn_error": 0}
        self.statuses: dict[str, int] = {}
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _one(self) -> tuple[str, str | None, float]:
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
                sock.sendall(
                    f"GET /small HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n".encode()
                )
                data = b""
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return "timeout", None, time.monotonic() - started
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except socket.timeout:
            return "timeout", None, time.monotonic() - started
        except OSError:
            return "conn_error", None, time.monotonic() - started
        code = data[9:12].decode("latin-1", "replace") if data.startswith(b"HTTP/1.") else "???"
        if code == "200" and data.endswith(BODY_100B):
            return "ok", code, time.monotonic() - started
        return "http_error", code, time.monotonic() - started

    def _run(self) -> None:
        while not self._stop.is_set():
            kind, code, took = self._one()
            with self.lock:
                self.counts["sent"] += 1
                self.counts[kind] += 1
                if code:
                    self.statuses[code] = self.statuses.get(code, 0) + 1
                if kind == "ok":
                    self.latencies.append(took * 1000)
            self._stop.wait(0.25)

    def __enter__(self) -> "Probe":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def result(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            **self.counts,
            "statuses": self.statuses,
            "p50_ms": lat[len(lat) // 2] if lat else None,
            "max_ms": lat[-1] if lat else None,
        }


def probe_summary(pr: dict[str, Any]) -> str:
    return (
        f"{pr['sent']} sent, {pr['ok']} ok (p50 {fmt_ms(pr['p50_ms'])} ms, max {fmt_ms(pr['max_ms'])} ms), "
        f"{pr['http_error']} non-200 {pr['statuses'] if pr['http_error'] else ''}, {pr['timeout']} timed out, "
        f"{pr['conn_error']} connection errors"
    )


def run_wrk(args: argparse.Namespace, url: str, duration: float) -> dict[str, Any]:
    argv = pinned(args.wrk_cpu, [
        "wrk", "-t1", f"-c{args.connections}", f"-d{duration:g}s", "--latency",
        "--timeout", f"{args.client_timeout:g}s", url,
    ])
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + args.client_timeout + 60,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {shlex.join(argv)}") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {shlex.join(argv)}\n{done.stdout}{done.stderr}")
    if args.verbose:
        print(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}", flush=True)
    r = parse_wrk("legit", done.stdout)
    sock = re.search(r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", done.stdout)
    detail = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock else {}
    return {
        "rps": r.rps,
        "p50_ms": r.p50_ms if r.requests else None,
        "p99_ms": r.p99_ms if r.requests else None,
        "requests": r.requests,
        "non_2xx": r.non_2xx,
        "socket_errors": r.socket_errors,
        "socket_detail": detail,
        "timeouts": detail.get("timeout", 0),
        "raw": done.stdout,
    }


# ---------------------------------------------------------------------------
# one scenario


@dataclass
class Scenario:
    key: str
    label: str
    attack: bool
    response_buffer: str | None  # None: the shipped default


SCENARIOS = [
    Scenario("baseline", "baseline (no attack, defaults)", False, None),
    Scenario("buffered", "attack, defaults (response_buffer 1 GiB)", True, None),
    Scenario("backpressure", "attack, response_buffer = 0", True, "0"),
]


def run_scenario(procs: Processes, args: argparse.Namespace, root: str, sc: Scenario) -> dict[str, Any]:
    tmp = os.path.join(root, sc.key)
    os.makedirs(tmp)
    result: dict[str, Any] = {"key": sc.key, "label": sc.label}
    print(f"\n== {sc.label}", flush=True)
    backend = start_backend(procs, args, tmp)
    admin = 0
    spool = os.path.join(tmp, "spool")

    def make_config(port: int) -> str:
        nonlocal admin
        admin = other_port(port, backend.port, backend.control)
        buffer = f"response_buffer = {sc.response_buffer}\n" if sc.response_buffer is not None else ""
        extra = f", max_connections = {args.server_max_connections}" if args.server_max_connections else ""
        return PROXY_CONF.format(port=port, admin=admin, backend=backend.port, buffer=buffer, server_extra=extra)

    def check(proxy: Proxy) -> None:
        check_http(
            proxy.port,
            f"GET /small HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\nConnection: close\r\n\r\n".encode(),
            BODY_100B, "proxy check: GET /small", proxy.logs + [backend.log],
        )
        status, body = http_get(proxy.port, "/big", timeout=30)
        if " 200 " not in status + " " or len(body) != args.size:
            raise BenchError(
                f"proxy check: GET /big answered {status!r} with {len(body)} bytes, expected 200 and "
                f"{args.size}\n" + tails(proxy.logs + [backend.log])
            )

    try:
        if args.proxy_nofile and isinstance(procs, LimitedProcesses):
            procs.next_nofile = args.proxy_nofile
        with running_proxy(procs, args, tmp, sc.key, make_config, check) as proxy:
            pid = proxy.proc.pid
            result["proxy_nofile"] = proxy_nofile(pid)
            if sc.key in ("buffered", "backpressure") and args.verbose:
                print_config(f"twisted-proxy config ({proxy.conf})", proxy.config)
            elif not args.verbose and sc.key != "baseline":
                print(f"  response_buffer = {sc.response_buffer or 'default'}; config {proxy.conf}")
            if sc.key == "baseline":
                print_config(f"twisted-proxy config ({proxy.conf})", proxy.config)
            time.sleep(0.5)
            idle_rss = rss_kb(pid) * 1024 / DECIMAL_MB
            idle = fd_detail(pid, spool)
            result["idle"] = {"rss_mb": round(idle_rss, 1), "fds": idle["fds"]}
            print(f"  proxy pid {pid}, idle RSS {idle_rss:.1f} MB, {idle['fds']} fds, "
                  f"RLIMIT_NOFILE {result['proxy_nofile']}; backend 127.0.0.1:{backend.port} "
                  f"({args.workers} workers)", flush=True)
            status_path = os.path.join(tmp, "attackers.json")
            attacker = None
            with RssSampler(pid, 0.05) as rss, Timeline(
                pid, backend.control, spool, proxy.port, backend.port, status_path if sc.attack else None
            ) as timeline:
                if sc.attack:
                    attacker = start_attackers(procs, args, tmp, proxy.port, status_path)
                    with Probe(proxy.port, args.client_timeout) as ramp_probe:
                        settle(args, result, backend, attacker, status_path, timeline)
                    result["ramp_probe"] = ramp_probe.result()
                    print(f"  probe while the attack ramped up: {probe_summary(ramp_probe.result())}", flush=True)
                timeline.phase = "wrk"
                before = backend_stats(backend.control) or {}
                print(f"  legitimate clients: wrk -t1 -c{args.connections} -d{args.duration:g}s "
                      f"--timeout {args.client_timeout:g}s on /small ...", flush=True)
                with CpuMeter([pid], args.proxy_cpu) as meter, Probe(proxy.port, args.client_timeout) as probe:
                    w = run_wrk(args, f"http://127.0.0.1:{proxy.port}/small", args.duration)
                w["probe"] = probe.result()
                after = backend_stats(backend.control) or {}
                w["backend_small_served"] = after.get("small_done", 0) - before.get("small_done", 0)
                w["proxy_cpu"] = asdict(meter.use) if meter.use else None
                result["wrk"] = w
                wrk_samples = [s for s in timeline.samples if s["phase"] == "wrk"]
                result["during_wrk"] = {
                    "busy_max": max((s.get("busy", 0) for s in wrk_samples), default=None),
                    "busy_min": min((s.get("busy", 0) for s in wrk_samples), default=None),
                    "accept_queue_max": max((s.get("backend_accept_queue", 0) for s in wrk_samples), default=None),
                }
                result["end"] = {
                    "busy": (after or {}).get("busy"),
                    "writing_big": (after or {}).get("writing_big"),
                    "rss_mb": round(rss_kb(pid) * 1024 / DECIMAL_MB, 1),
                    **fd_detail(pid, spool),
                    **tcp_counts(proxy.port, backend.port),
                }
                result["backend_end"] = after
                if attacker is not None:
                    result["attackers"] = read_json(status_path)
                result["admin_status"] = admin_status(admin)
            result["max"] = {
                "rss_mb": round(rss.max_kb * 1024 / DECIMAL_MB, 1),
                "busy": timeline.max_busy,
                "fds": max(timeline.max_fds, 0),
                "spool_bytes": timeline.max_spool,
                "spool_disk": timeline.max_spool_disk,
                "backend_accept_queue": timeline.max_queue,
            }
            result["timeline"] = timeline.samples
            if attacker is not None:
                procs.stop(attacker)
                result["attackers"] = read_json(status_path) or result.get("attackers")
                # what is left once the attackers are gone: until the
                # proxy is back to its idle descriptors (at most --after s)
                result["after"] = after_attack(args, pid, backend, spool, proxy.port, idle["fds"])
                result["admin_status_after"] = admin_status(admin)
            result["proxy_alive"] = proxy.proc.poll() is None
            time.sleep(1.5)  # the access log is written at most 1 s after a line
            result["access"] = access_counts(os.path.join(tmp, "access.log"))
            total, trouble = scan_logs(proxy.logs)
            result["proxy_log_lines"] = total
            result["proxy_log_trouble"] = [{"count": n, "pattern": p, "example": e} for n, p, e in trouble]
            result["proxy_logs"] = proxy.logs
    finally:
        procs.stop(backend.proc)
    b_total, b_trouble = scan_logs([backend.log])
    result["backend_log_trouble"] = [{"count": n, "example": e} for n, _, e in b_trouble]
    print_scenario(args, result)
    return result


def after_attack(
    args: argparse.Namespace, pid: int, backend: Backend, spool: str, proxy_port: int, idle_fds: int
) -> dict[str, Any]:
    """
    Once the attackers are gone (killed: their sockets reset): sample the
    proxy every 0.5 s until its descriptors are back to idle and the
    backend's workers are free, at most --after seconds.
    """
    started = time.monotonic()
    samples = []
    cleaned = None
    with CpuMeter([pid], args.proxy_cpu) as meter, Probe(proxy_port, args.client_timeout) as probe:
        while True:
            time.sleep(0.5)
            b = backend_stats(backend.control) or {}
            d = fd_detail(pid, spool)
            s = {
                "t": round(time.monotonic() - started, 1),
                "rss_mb": round(rss_kb(pid) * 1024 / DECIMAL_MB, 1),
                "busy": b.get("busy"),
                **d,
                **tcp_counts(proxy_port, backend.port),
            }
            samples.append(s)
            if d["fds"] <= idle_fds + 2 and not d["spool_files"] and not b.get("busy"):
                cleaned = s["t"]
                break
            if s["t"] >= args.after:
                break
    out = dict(samples[-1])
    out["cleaned_after_s"] = cleaned
    out["samples"] = samples
    out["proxy_cpu"] = asdict(meter.use) if meter.use else None
    out["probe"] = probe.result()
    return out


def start_attackers(
    procs: Processes, args: argparse.Namespace, tmp: str, port: int, status_path: str
) -> subprocess.Popen[bytes]:
    log = os.path.join(tmp, "attackers.log")
    argv = pinned(args.wrk_cpu, [
        sys.executable, THIS, "--attacker", str(port), "--count", str(args.attackers),
        "--rcvbuf", str(args.rcvbuf), "--mss", str(args.mss), "--read-rate", f"{args.read_rate:g}", "--status", status_path,
    ])
    print(f"  attack: {args.attackers} connections, GET /big ({args.size} bytes), SO_RCVBUF {args.rcvbuf}, "
          f"reading {args.read_rate:g} byte/s each", flush=True)
    with open(log, "wb") as out:
        proc = procs.start(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc


def settle(
    args: argparse.Namespace,
    result: dict[str, Any],
    backend: Backend,
    attacker: subprocess.Popen[bytes],
    status_path: str,
    timeline: Timeline,
) -> None:
    """
    Wait until every attacker has connected (or failed) and the backend's
    /big counters stopped moving for 3 s (all answered, or its workers
    stuck), at most --settle seconds.
    """
    started = time.monotonic()
    last_key = None
    last_change = started
    a: dict[str, Any] = {}
    while True:
        time.sleep(0.5)
        if attacker.poll() is not None:
            raise BenchError(
                f"the attacker process exited ({attacker.returncode})\n" + tails([os.path.join(
                    os.path.dirname(status_path), "attackers.log")])
            )
        a = read_json(status_path) or {}
        b = backend_stats(backend.control) or {}
        # not "accepted" or "busy": the probe's requests move those
        key = (b.get("big_done"), b.get("big_aborted"), b.get("writing_big"))
        now = time.monotonic()
        if key != last_key:
            last_key, last_change = key, now
        connect_done = a.get("connect_phase_s") is not None
        if connect_done and now - last_change >= 3:
            break
        if now - started > args.settle:
            print(f"  (not settled after {args.settle:g} s: going on)", flush=True)
            break
    took = time.monotonic() - started
    result["settle_s"] = round(took, 1)
    result["attack_ramp"] = {"attackers": a, "backend": backend_stats(backend.control)}
    b = result["attack_ramp"]["backend"] or {}
    print(
        f"  settled after {took:.1f} s: attackers connected {a.get('connected')}/{a.get('target')} "
        f"(connect phase {a.get('connect_phase_s')} s, failed {a.get('connect_failed')}, "
        f"timed out {a.get('connect_timeout')}), open {a.get('open')}; backend busy {b.get('busy')}, "
        f"/big done {b.get('big_done')}, aborted {b.get('big_aborted')}, writing {b.get('writing_big')}",
        flush=True,
    )


# ---------------------------------------------------------------------------
# report


def mb(n: int | float | None) -> str:
    return "-" if n is None else f"{n / DECIMAL_MB:.1f}"


def admin_summary(status: dict[str, Any] | None) -> str:
    """The proxy's own counters: open client connections, the backend server's in_flight."""
    if not status:
        return "admin /status did not answer"
    conns = sum(int(item.get("connections", 0)) for item in status.get("listeners", []))
    flight = sum(int(s.get("in_flight", 0)) for servers in status.get("backends", {}).values() for s in servers)
    by_status: dict[str, int] = {}
    for item in status.get("listeners", []):
        for k, v in item.get("by_status", {}).items():
            by_status[k] = by_status.get(k, 0) + int(v)
    return f"client connections {conns}, backend in_flight {flight}, answered {by_status}"


def print_scenario(args: argparse.Namespace, r: dict[str, Any]) -> None:
    w = r.get("wrk")
    if w:
        print(
            f"  legit: {w['rps']:.0f} req/s, p50 {fmt_ms(w['p50_ms'])} ms, p99 {fmt_ms(w['p99_ms'])} ms, "
            f"{w['requests']} requests, {w['non_2xx']} non-2xx, socket errors {w['socket_detail'] or 0}; "
            f"proxy cpu {fmt_pct(w['proxy_cpu']['cpu'] if w.get('proxy_cpu') else None)}%",
            flush=True,
        )
        print(
            f"  probe during wrk (4 clients, one GET /small at a time, {args.client_timeout:g} s timeout): "
            f"{probe_summary(w['probe'])}",
            flush=True,
        )
    tl = [s for s in r.get("timeline", []) if "spool_bytes" in s]
    if r.get("attackers") is not None and tl:
        print("  timeline (1 sample / 2 s):  t s  phase  busy  queue  proxy->backend  clients  fds  spool files  "
              "spool MB  RSS MB  attackers open")
        last = -1e9
        for s in tl:
            if s["t"] - last < 2 and s is not tl[-1]:
                continue
            last = s["t"]
            print(
                f"    {s['t']:6.1f}  {s['phase']:<6} {s.get('busy', '-'):>4} {s.get('backend_accept_queue', '-'):>6} "
                f"{s.get('proxy_to_backend', '-'):>15} {s.get('clients_to_proxy', '-'):>8} {s.get('fds', '-'):>5} "
                f"{s.get('spool_files', '-'):>12} {mb(s.get('spool_disk')):>9} {s.get('rss_mb', '-'):>7} "
                f"{s.get('attackers_open', '-'):>15}"
            )
    a = r.get("attackers")
    if a:
        print(
            f"  attackers at the end: connected {a.get('connected')}/{a.get('target')}, open {a.get('open')}, "
            f"closed by the proxy {a.get('closed_by_proxy')} {a.get('closed_by_proxy_bytes') or ''}, "
            f"reset {a.get('reset')}, statuses {a.get('status')}, errors {a.get('errors') or '-'}"
        )
    if r.get("after"):
        af = r["after"]
        when = (f"back to idle descriptors {af['cleaned_after_s']:g} s after the attackers left"
                if af.get("cleaned_after_s") is not None else f"NOT back to idle {af['t']:g} s after the attackers left")
        cpu = af.get("proxy_cpu")
        print(
            f"  {when}: RSS {af['rss_mb']} MB, {af['fds']} fds ({af['spool_files']} spool files, "
            f"{mb(af['spool_disk'])} MB on disk), backend busy {af['busy']}, proxy->backend connections "
            f"{af['proxy_to_backend']}; proxy cpu meanwhile {fmt_pct(cpu['cpu'] if cpu else None)}%"
        )
        print(f"    probe meanwhile: {probe_summary(af['probe'])}")
        if af.get("cleaned_after_s") is None or af["t"] > 2:
            trail = "  ".join(f"{x['t']:g}s:{x['fds']}/{x['spool_files']}" for x in af["samples"][::2])
            print(f"    fds/spool files every second: {trail}")
    print(f"  proxy /status when wrk ended: {admin_summary(r.get('admin_status'))}")
    if "admin_status_after" in r:
        print(f"  proxy /status once the attackers left: {admin_summary(r.get('admin_status_after'))}")
    if r.get("access"):
        print(f"  access log statuses: {r['access']}")
    if not r.get("proxy_alive", True):
        print("  ERROR: the proxy exited during the run")
    trouble = r.get("proxy_log_trouble") or []
    if trouble:
        print(f"  proxy log ({r.get('proxy_log_lines')} lines), lines that look like trouble:")
        for t in trouble[:12]:
            print(f"    {t['count']:>6} x {t['example'][:220]}")
    bt = r.get("backend_log_trouble") or []
    if bt:
        print("  backend log:")
        for t in bt[:5]:
            print(f"    {t['count']:>6} x {t['example'][:200]}")
    sys.stdout.flush()


def print_tables(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    print()
    print(
        f"Legitimate clients: wrk -t1 -c{args.connections} -d{args.duration:g}s --timeout {args.client_timeout:g}s "
        f"GET /small through twisted-proxy; attack: {args.attackers} slow readers of /big ({args.size} B); "
        f"backend: {args.workers} workers"
    )
    base = next((r for r in results if r["key"] == "baseline" and r.get("wrk")), None)
    header = (
        f"{'run':<42}{'req/s':>8}{'2xx/s':>8}{'x base':>7}{'p50 ms':>9}{'p99 ms':>9}{'requests':>9}{'non-2xx':>8}"
        f"{'timeout':>8}{'sock err':>9}{'cpu%':>6}{'probe ok/sent':>15}{'probe t/o':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        w = r.get("wrk")
        if not w:
            print(f"{r['label']:<42}  (did not run)")
            continue
        ok = (w["requests"] - w["non_2xx"]) / args.duration
        base_ok = (base["wrk"]["requests"] - base["wrk"]["non_2xx"]) / args.duration if base else 0
        ratio = f"{ok / base_ok:.2f}" if base_ok else "-"
        print(
            f"{r['label']:<42}{w['rps']:>8.0f}{ok:>8.0f}{ratio:>7}{fmt_ms(w['p50_ms']):>9}{fmt_ms(w['p99_ms']):>9}"
            f"{w['requests']:>9}{w['non_2xx']:>8}{w['timeouts']:>8}{w['socket_errors'] - w['timeouts']:>9}"
            f"{fmt_pct(w['proxy_cpu']['cpu'] if w.get('proxy_cpu') else None):>6}"
            f"{str(w['probe']['ok']) + '/' + str(w['probe']['sent']):>15}{w['probe']['timeout']:>10}"
        )
    print("  2xx/s: answers 200 a second (x base: of the baseline's); p50/p99 count every answer, 5xx too;"
          " timeout: wrk's count of answers later than --timeout (a request never answered is counted"
          " nowhere by wrk: see requests and the probe); sock err: connect/read/write errors; cpu%: the"
          " proxy's; probe: 4 one-at-a-time clients beside wrk, t/o = no whole answer within --timeout")
    print()
    print("Backend workers, proxy resources (MB = 10^6 bytes; max over the attack and the wrk run; end = when wrk ended)")
    header = (
        f"{'run':<42}{'busy max':>9}{'busy wrk':>9}{'busy end':>9}{'queue max':>10}{'RSS idle':>9}{'RSS max':>8}"
        f"{'RSS end':>8}{'fds max':>8}{'fds end':>8}{'spool max':>10}{'spool end':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "max" not in r:
            continue
        m, e, i, d = r["max"], r["end"], r["idle"], r.get("during_wrk", {})
        busy_wrk = f"{d.get('busy_min')}-{d.get('busy_max')}" if d.get("busy_max") is not None else "-"
        print(
            f"{r['label']:<42}{m['busy']:>9}{busy_wrk:>9}{str(e.get('busy')):>9}{m['backend_accept_queue']:>10}"
            f"{i['rss_mb']:>9.1f}{m['rss_mb']:>8.1f}{e['rss_mb']:>8.1f}{m['fds']:>8}{e['fds']:>8}"
            f"{mb(m['spool_disk']):>10}{mb(e['spool_disk']):>10}"
        )
    print(f"  busy: backend requests in progress (of {args.workers}); busy wrk: min-max during the wrk run;"
          " queue: the backend's listen queue (connections not accepted yet); spool: disk blocks of the"
          " proxy's spool files")
    for r in results:
        if not r.get("attackers") or "max" not in r:
            continue
        a = r["attackers"]
        n = max(1, a.get("connected") or 0)
        over = r["max"]["rss_mb"] - r["idle"]["rss_mb"]
        fds = r["max"]["fds"] - r["idle"]["fds"]
        print(
            f"  {r['label']}: per attacker connection: {over * 1e6 / n / 1024:.1f} KiB of RSS over idle "
            f"(max), {fds / n:.2f} fds (max), {r['max']['spool_disk'] / n / 1024:.1f} KiB of spool disk (max)"
        )
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attackers", type=int, default=5000, help="slow-reading connections (5000)")
    p.add_argument("--size", type=int, default=256 * KiB, help="bytes of the /big response (262144)")
    p.add_argument("--duration", type=float, default=20, help="seconds of the legitimate clients' wrk run (20)")
    p.add_argument("--json", metavar="OUT", help="write every figure (and the timelines) to this JSON file")
    p.add_argument("--connections", type=int, default=20, help="wrk connections of the legitimate clients (20)")
    p.add_argument("--client-timeout", type=float, default=10,
                   help="wrk --timeout: a legitimate request unanswered this long counts as a timeout (10)")
    p.add_argument("--workers", type=int, default=16, help="backend worker threads (16)")
    p.add_argument("--backend-backlog", type=int, default=2048,
                   help="the backend's listen queue (2048, gunicorn's default)")
    p.add_argument("--backend-mss", type=int, default=1460,
                   help="TCP_MAXSEG of the backend's listening socket (1460, a backend on another host; "
                        "0 = loopback's 65483)")
    p.add_argument("--rcvbuf", type=int, default=4096, help="SO_RCVBUF of each attacker socket (4096)")
    p.add_argument("--mss", type=int, default=1460,
                   help="TCP_MAXSEG of each attacker socket, advertised to the proxy (1460, an Ethernet path; "
                        "0 = loopback's 65483)")
    p.add_argument("--read-rate", type=float, default=1,
                   help="bytes per second each attacker reads after the status line (1; 0 = none)")
    p.add_argument("--settle", type=float, default=60,
                   help="at most this many seconds for the attack to settle before the legitimate clients (60)")
    p.add_argument("--after", type=float, default=30,
                   help="at most this many seconds for the proxy to close everything once the attackers"
                        " left (30)")
    p.add_argument("--server-max-connections", type=int, default=0, metavar="N",
                   help="give the backend's server entry max_connections = N in every run (default: none,"
                        " the shipped default)")
    p.add_argument("--nofile", type=int, default=65536,
                   help="RLIMIT_NOFILE of this script and every process it starts (65536)")
    p.add_argument("--proxy-nofile", type=int, default=0, metavar="N",
                   help="RLIMIT_NOFILE (soft and hard) of the proxy alone, e.g. to see it run short of"
                        " descriptors (default: as every process, --nofile)")
    p.add_argument("--only", choices=[s.key for s in SCENARIOS], action="append",
                   help="run only this scenario (repeatable)")
    p.add_argument("--twistd", default=os.path.join(os.path.dirname(sys.executable), "twistd"),
                   help="twistd to run the proxy with (the one next to this python)")
    p.add_argument("--start-timeout", type=float, default=20, help="seconds to wait for the proxy port (20)")
    p.add_argument("--wrk-cpu", type=int, default=0 if cpus > 1 else None,
                   help="core for wrk, the attackers and this script (0)")
    p.add_argument("--proxy-cpu", type=int, default=1 if cpus > 1 else None, help="core for the proxy (1)")
    p.add_argument("--origin-cpu", type=int, default=(2 if cpus > 2 else 0) if cpus > 1 else None,
                   help="core for the backend (2 if present, else 0)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (configs, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every wrk output and config in full")
    # the helper processes
    p.add_argument("--backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--control", type=int, help=argparse.SUPPRESS)
    p.add_argument("--attacker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--status", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def raise_nofile(n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> int:
    args = parse_args()
    if args.backend is not None:
        backend_main(args.backend, args.control, args.size, args.workers, args.backend_backlog, args.backend_mss)
        return 0
    if args.attacker is not None:
        attacker_main(args.attacker, args.count, args.rcvbuf, args.mss, args.read_rate, args.status, 256, 10.0)
        return 0

    for tool in ("wrk",):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found on PATH", file=sys.stderr)
            return 2
    if not os.path.exists(args.twistd):
        print(f"error: twistd not found at {args.twistd} (use --twistd)", file=sys.stderr)
        return 2
    nofile = raise_nofile(args.nofile)
    if args.wrk_cpu is not None:
        try:
            os.sched_setaffinity(0, {args.wrk_cpu})
        except OSError:
            pass
    install_signal_handlers()
    tmp = tempfile.mkdtemp(prefix="twisted-proxy-slowread-")
    procs = LimitedProcesses()
    results: list[dict[str, Any]] = []
    code = 0
    try:
        print(
            f"cpus: {os.cpu_count()}; wrk, attackers and this script on {args.wrk_cpu}, backend on "
            f"{args.origin_cpu}, proxy on {args.proxy_cpu}; RLIMIT_NOFILE {nofile} (inherited by every "
            f"process started{'' if nofile >= args.nofile else f'; {args.nofile} asked, above the hard limit'}); "
            f"temp dir {tmp}",
            flush=True,
        )
        for sc in SCENARIOS:
            if args.only and sc.key not in args.only:
                continue
            results.append(run_scenario(procs, args, tmp, sc))
        print_tables(args, results)
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    finally:
        procs.stop_all()
        if args.json:
            out = {
                "args": {k: v for k, v in vars(args).items() if k not in ("backend", "control", "attacker", "count", "status")},
                "nofile": nofile,
                "exit": code,
                "results": results,
            }
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1, default=str)
            print(f"wrote {args.json}", file=sys.stderr)
        if args.keep_temp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
