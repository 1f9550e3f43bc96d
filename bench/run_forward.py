#!/usr/bin/env python3
"""
Forward-proxy benchmark: throughput, latency, CONNECT bulk transfer and memory.

Not a test: it prints figures and their ratio to the direct origin.  Run it
with the project's virtualenv so the proxy runs the working tree:

    /work/venv/bin/python bench/run_forward.py [--duration 10] [--connections 50]
        [--big-mb 512] [--rss-mb 1024] [--skip-rss] [--skip-connect] [--direct-only]

It uses only the standard library plus nginx (nginx-light), wrk, curl and
taskset from the system.  Everything listens on 127.0.0.1 and every process it
starts is killed (whole process group) when it exits, however it exits.

Layout on a 2-core machine: wrk and curl on core 0, the proxy alone on core 1,
nginx and the upload sink on core 0 too (or on core 2 when there is one).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LUA = os.path.join(HERE, "absolute.lua")
MB = 1024 * 1024

TARGET_RPS = 15000.0
TARGET_P99_MS = 6.0
TARGET_CONNECT_RATIO = 0.70
TARGET_RSS_MB = 32.0


class BenchError(Exception):
    """A step failed; the message says which and why."""


# ---------------------------------------------------------------------------
# processes


class Processes:
    """
    Every child started here, each in its own session (process group), so
    that killing the group also kills what it forked (nginx workers, the
    `head | curl` pipelines).
    """

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv, start_new_session=True, **kwargs  # type: ignore[call-overload]
        )
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while its group lives on (nginx workers).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.children:
            self.children.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.children)):
            self.stop(proc, grace=3.0)


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu)] + argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes],
    what: str,
    timeout: float,
    logs: list[str],
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(
                f"{what} exited with status {proc.returncode} before accepting "
                f"connections on 127.0.0.1:{port}\n" + tails(logs)
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(
                f"{what} did not accept connections on 127.0.0.1:{port} "
                f"within {timeout:g} s\n" + tails(logs)
            )
        time.sleep(0.05)


def tails(paths: list[str], lines: int = 40) -> str:
    out = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        if text:
            out.append(f"--- last {min(lines, len(text))} lines of {path}:")
            out.extend(text[-lines:])
    return "\n".join(out) if out else "(no output captured)"


# ---------------------------------------------------------------------------
# nginx (the origin)

NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000;
    keepalive_timeout 65;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


def start_nginx(procs: Processes, tmp: str, cpu: int | None) -> int:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise BenchError("nginx not found (apt-get install nginx-light)")
    port = free_port()
    # Workers of a root master run as another user: let it read the files.
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=port, user=user))
    log = os.path.join(tmp, "nginx-stderr.log")
    with open(log, "wb") as out:
        proc = procs.start(
            pinned(cpu, [nginx, "-p", tmp, "-e", os.path.join(tmp, "nginx-error.log"), "-c", conf]),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    wait_for_port(port, proc, "nginx", 10, [log, os.path.join(tmp, "nginx-error.log")])
    return port


def make_files(tmp: str, sizes: dict[str, int]) -> None:
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "100b"), "wb") as f:
        f.write(b"x" * 99 + b"\n")
    for name, size in sizes.items():
        # Sparse: instant, no disk used; reads come back as zeros.
        with open(os.path.join(www, name), "wb") as f:
            f.truncate(size)
    os.chmod(tmp, 0o755)
    os.chmod(www, 0o755)


# ---------------------------------------------------------------------------
# upload sink (the origin for uploads): stdlib, one thread per connection


def _sink_connection(conn: socket.socket) -> None:
    big = bytearray(1 << 20)
    view = memoryview(big)
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                n = conn.recv_into(big)
                if not n:
                    return
                pending += view[:n]
                if len(pending) > 65536 and b"\r\n\r\n" not in pending:
                    return
            head, _, rest = pending.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            target = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 1 else b"/"
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            match = re.search(rb"[?&]mbps=(\d+)", target)
            rate = int(match.group(1)) * MB if match else 0
            pacer = _Pacer(rate)
            if headers.get(b"expect", b"").lower() == b"100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            recv_size = 65536 if rate else len(big)
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                received, pending = _sink_chunked(conn, rest, view, recv_size, pacer)
            else:
                length = int(headers.get(b"content-length", b"0") or b"0")
                received, pending = _sink_length(conn, rest, length, view, recv_size, pacer)
            if received < 0:
                return
            body = b"received %d\n" % received
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            if headers.get(b"connection", b"").lower() == b"close":
                return


class _Pacer:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.total = 0

    def account(self, n: int) -> None:
        if not self.rate:
            return
        self.total += n
        ahead = self.start + self.total / self.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def _sink_length(
    conn: socket.socket, rest: bytes, length: int, view: memoryview, recv_size: int, pacer: _Pacer
) -> tuple[int, bytes]:
    if len(rest) >= length:
        return length, rest[length:]
    left = length - len(rest)
    while left:
        n = conn.recv_into(view[: min(recv_size, left)])
        if not n:
            return -1, b""
        left -= n
        pacer.account(n)
    return length, b""


def _sink_chunked(
    conn: socket.socket, rest: bytes, view: memoryview, recv_size: int, pacer: _Pacer
) -> tuple[int, bytes]:
    """Consume a chunked body; return (data bytes, bytes after the body)."""
    received = 0
    remaining = 0  # chunk data plus its CRLF still to skip
    line = bytearray()
    in_trailers = False
    buf = memoryview(rest)
    while True:
        i, end = 0, len(buf)
        while i < end:
            if remaining:
                # Bulk data: skipped without copying.
                take = min(remaining, end - i)
                remaining -= take
                i += take
                continue
            window = bytes(buf[i : min(end, i + 1024)])
            j = window.find(b"\n")
            if j < 0:
                line += window
                i += len(window)
                if len(line) > 8192:
                    return -1, b""
                continue
            line += window[:j]
            i += j + 1
            text = bytes(line).strip()
            line.clear()
            if in_trailers:
                if not text:
                    return received, bytes(buf[i:end])
                continue
            size = int(text.split(b";")[0], 16)
            if size == 0:
                in_trailers = True
            else:
                received += size
                remaining = size + 2
        n = conn.recv_into(view[:recv_size])
        if not n:
            return -1, b""
        pacer.account(n)
        buf = view[:n]


def sink_main(port: int) -> None:
    server = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_sink_connection, args=(conn,), daemon=True).start()


def start_sink(procs: Processes, tmp: str, cpu: int | None) -> int:
    port = free_port()
    log = os.path.join(tmp, "sink.log")
    with open(log, "wb") as out:
        proc = procs.start(
            pinned(cpu, [sys.executable, os.path.abspath(__file__), "--sink", str(port)]),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    wait_for_port(port, proc, "upload sink", 10, [log])
    return port


# ---------------------------------------------------------------------------
# the proxy

PROXY_CONF = """\
[proxy]
access_log = {access_log}

[[listener]]
name = "bench"
kind = "forward"
endpoint = "tcp:{port}:interface=127.0.0.1"
connect_ports = [{connect_port}]
"""


@dataclass
class Proxy:
    port: int
    proc: subprocess.Popen[bytes]
    logs: list[str]
    access_log: str | None


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def running_proxy(
    procs: Processes,
    args: argparse.Namespace,
    tmp: str,
    label: str,
    origin_port: int,
    access_log: str | None,
) -> Iterator[Proxy]:
    port = free_port()
    conf = os.path.join(tmp, f"proxy-{label}.toml")
    with open(conf, "w") as f:
        f.write(
            PROXY_CONF.format(
                access_log=toml_string(access_log or "off"),
                port=port,
                connect_port=origin_port,
            )
        )
    out_log = os.path.join(tmp, f"proxy-{label}.stdout.log")
    err_log = os.path.join(tmp, f"proxy-{label}.stderr.log")
    argv = [args.twistd, "-n", "--pidfile=", "proxy", "--config", conf]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(out_log, "wb") as out, open(err_log, "wb") as err:
        proc = procs.start(
            pinned(args.proxy_cpu, argv),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=tmp,
            env=env,
        )
    logs = [err_log, out_log]
    try:
        try:
            wait_for_port(port, proc, f"proxy ({shlex.join(argv)})", args.start_timeout, logs)
        except BenchError as e:
            raise BenchError(f"{e}\nproxy config {conf}:\n{open(conf).read()}") from None
        proxy = Proxy(port, proc, logs, access_log)
        check_proxy(proxy, origin_port)
        yield proxy
    finally:
        procs.stop(proc)


def check_proxy(proxy: Proxy, origin_port: int) -> None:
    """One absolute-form request by hand, so a broken proxy fails clearly."""
    request = (
        f"GET http://127.0.0.1:{origin_port}/100b HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{origin_port}\r\nConnection: close\r\n\r\n"
    ).encode()
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(request)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise BenchError(f"proxy check request failed: {e}\n" + tails(proxy.logs)) from None
    status = data.split(b"\r\n", 1)[0].decode("latin-1")
    if not re.match(r"HTTP/1\.[01] 200 ", status) or not data.endswith(b"x" * 99 + b"\n"):
        raise BenchError(
            f"proxy check: GET http://127.0.0.1:{origin_port}/100b through the proxy "
            f"answered {status!r} ({len(data)} bytes), expected 200 with the 100-byte file\n"
            + tails(proxy.logs)
        )


# ---------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    label: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    non_2xx: int
    socket_errors: int
    socket_detail: str = ""
    raw: str = field(default="", repr=False)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"\s*([\d.]+)\s*(us|ms|s|m|h)\s*", text)
    if not match:
        raise ValueError(f"cannot parse wrk time {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(label: str, output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    if not rps:
        raise BenchError(f"wrk output has no Requests/sec line:\n{output}")
    percentiles = {
        m.group(1): parse_duration_ms(m.group(2))
        for m in re.finditer(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+\s*(?:us|ms|s|m|h))\s*$", output, re.M)
    }
    requests = re.search(r"^\s*(\d+) requests in", output, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sock = re.search(
        r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = sum(int(g) for g in sock.groups()) if sock else 0
    detail = (
        "connect {}, read {}, write {}, timeout {}".format(*sock.groups()) if sock else ""
    )
    return WrkResult(
        label=label,
        rps=float(rps.group(1)),
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        requests=int(requests.group(1)) if requests else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        socket_detail=detail,
        raw=output,
    )


def run_wrk(
    args: argparse.Namespace,
    label: str,
    url: str,
    origin_url: str | None = None,
    duration: float | None = None,
) -> WrkResult:
    duration = args.duration if duration is None else duration
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--latency",
    ]
    if origin_url is not None:
        argv += ["-s", LUA, url, "--", origin_url]
    else:
        argv += [url]
    argv = pinned(args.wrk_cpu, argv)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {shlex.join(argv)}") from None
    if done.returncode != 0:
        raise BenchError(
            f"wrk failed ({done.returncode}): {shlex.join(argv)}\n{done.stdout}{done.stderr}"
        )
    if args.verbose:
        print(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}", flush=True)
    return parse_wrk(label, done.stdout)


def bench_wrk(args: argparse.Namespace, label: str, url: str, origin_url: str | None = None) -> WrkResult:
    if args.warmup > 0:
        run_wrk(args, label, url, origin_url, duration=args.warmup)
    return run_wrk(args, label, url, origin_url)


# ---------------------------------------------------------------------------
# curl transfers


@dataclass
class Transfer:
    seconds: float
    speed: float  # bytes per second as curl measured it
    size: int
    code: str


def run_curl(
    procs: Processes,
    args: argparse.Namespace,
    curl_args: list[str],
    upload_bytes: int | None = None,
    timeout: float = 600,
    output: str = "/dev/null",
) -> Transfer:
    write_out = "%{speed_download} %{speed_upload} %{size_download} %{size_upload} %{http_code}"
    argv = pinned(
        args.wrk_cpu,
        ["curl", "-s", "-S", "-o", output, "-w", write_out, "--max-time", str(int(timeout))]
        + curl_args,
    )
    feeder = None
    started = time.monotonic()
    if upload_bytes is not None:
        feeder = procs.start(
            pinned(args.wrk_cpu, ["head", "-c", str(upload_bytes), "/dev/zero"]),
            stdout=subprocess.PIPE,
        )
        argv += ["-T", "-", "-H", "Expect:"]
    proc = procs.start(
        argv,
        stdin=feeder.stdout if feeder else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if feeder is not None and feeder.stdout is not None:
        feeder.stdout.close()
    try:
        out, err = proc.communicate(timeout=timeout + 10)
    finally:
        procs.stop(proc)
        if feeder is not None:
            procs.stop(feeder)
    elapsed = time.monotonic() - started
    fields = out.decode().split()
    if proc.returncode != 0 or len(fields) != 5:
        raise BenchError(
            f"curl failed ({proc.returncode}): {shlex.join(argv)}\n{out.decode()}{err.decode()}"
        )
    down, up, size_down, size_up, code = fields
    if upload_bytes is not None:
        return Transfer(elapsed, float(up), int(size_up), code)
    return Transfer(elapsed, float(down), int(size_down), code)


def check_transfer(what: str, t: Transfer, expected: int) -> None:
    if not t.code.startswith("2") or t.size != expected:
        raise BenchError(
            f"{what}: HTTP {t.code}, {t.size} bytes transferred, expected 2xx and {expected}"
        )


# ---------------------------------------------------------------------------
# RSS


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class RssSampler:
    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.max_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.max_kb = max(self.max_kb, rss_kb(self.pid))
            except (OSError, BenchError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------
# report


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_wrk_table(results: list[WrkResult]) -> None:
    direct = results[0].rps if results else 0.0
    print()
    print(f"HTTP/1.1 GET 100 B, wrk -t{ARGS.threads} -c{ARGS.connections} -d{ARGS.duration:g}s")
    header = f"{'run':<28}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'requests':>11}{'non-2xx':>9}{'sock err':>10}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.rps / direct if direct else 0.0
        print(
            f"{r.label:<28}{r.rps:>11.0f}{fmt_ms(r.p50_ms):>9}{fmt_ms(r.p99_ms):>9}"
            f"{r.requests:>11}{r.non_2xx:>9}{r.socket_errors:>10}{ratio:>8.2f}"
        )
    for r in results:
        if r.socket_errors:
            print(f"  {r.label}: socket errors {r.socket_detail}")
    sys.stdout.flush()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unreported wrk warm-up before each run (2; 0 = none)")
    p.add_argument("--big-mb", type=int, default=512, help="size of the CONNECT bulk download in MiB (512)")
    p.add_argument("--repeat", type=int, default=3, help="CONNECT downloads each way; the best is reported (3)")
    p.add_argument("--rss-mb", type=int, default=1024, help="body size for the RSS check in MiB (1024)")
    p.add_argument("--slow-mbps", type=int, default=200,
                   help="rate of the slow client / slow origin RSS runs in MiB/s (200; 0 = skip them)")
    p.add_argument("--skip-rss", action="store_true", help="skip the RSS check")
    p.add_argument("--skip-connect", action="store_true", help="skip the CONNECT transfer")
    p.add_argument("--skip-log", action="store_true", help="skip the wrk run with the access log on")
    p.add_argument("--direct-only", action="store_true", help="only measure nginx directly (no proxy)")
    p.add_argument("--twistd", default=os.path.join(os.path.dirname(sys.executable), "twistd"),
                   help="twistd to run the proxy with (the one next to this python)")
    p.add_argument("--start-timeout", type=float, default=20, help="seconds to wait for the proxy port (20)")
    p.add_argument("--wrk-cpu", type=int, default=0 if cpus > 1 else None, help="core for wrk and curl (0)")
    p.add_argument("--proxy-cpu", type=int, default=1 if cpus > 1 else None, help="core for the proxy (1)")
    p.add_argument("--origin-cpu", type=int, default=(2 if cpus > 2 else 0) if cpus > 1 else None,
                   help="core for nginx and the upload sink (2 if present, else 0)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (configs, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every wrk output in full")
    p.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS: argparse.Namespace


def main() -> int:
    global ARGS
    args = ARGS = parse_args()
    if args.sink is not None:
        sink_main(args.sink)
        return 0

    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found on PATH", file=sys.stderr)
            return 2
    if not args.direct_only and not os.path.exists(args.twistd):
        print(f"error: twistd not found at {args.twistd} (use --twistd)", file=sys.stderr)
        return 2

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below kills the children.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    tmp = tempfile.mkdtemp(prefix="twisted-proxy-bench-")
    procs = Processes()
    failures: list[str] = []
    try:
        print(
            f"cpus: {os.cpu_count()}; wrk/curl on {args.wrk_cpu}, proxy on {args.proxy_cpu}, "
            f"origin on {args.origin_cpu}; temp dir {tmp}",
            flush=True,
        )
        make_files(tmp, {"big": args.big_mb * MB, "rss": args.rss_mb * MB})
        origin = start_nginx(procs, tmp, args.origin_cpu)
        origin_url = f"http://127.0.0.1:{origin}/100b"
        print(f"nginx on 127.0.0.1:{origin}", flush=True)

        results = [bench_wrk(args, "direct (nginx)", origin_url)]
        if args.direct_only:
            print_wrk_table(results)
            return 0

        with running_proxy(procs, args, tmp, "nolog", origin, None) as proxy:
            print(f"proxy on 127.0.0.1:{proxy.port} (access log off)", flush=True)
            results.append(
                bench_wrk(args, "proxy, access log off", f"http://127.0.0.1:{proxy.port}/", origin_url)
            )
            if not args.skip_connect:
                connect = bench_connect(procs, args, origin, proxy)

        if not args.skip_log:
            log_path = os.path.join(tmp, "access.log")
            with running_proxy(procs, args, tmp, "log", origin, log_path) as proxy:
                print(f"proxy on 127.0.0.1:{proxy.port} (access log to {log_path})", flush=True)
                results.append(
                    bench_wrk(args, "proxy, access log to file", f"http://127.0.0.1:{proxy.port}/", origin_url)
                )
            lines = count_lines(log_path)
            size = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            print(f"access log: {lines} lines, {size} bytes", flush=True)
            if lines < results[-1].requests:
                print(
                    f"  WARNING: fewer access log lines than requests wrk completed "
                    f"({results[-1].requests}, not counting the warm-up)",
                    flush=True,
                )

        print_wrk_table(results)
        for r in results[1:]:
            ok = r.rps >= TARGET_RPS and r.p99_ms is not None and r.p99_ms <= TARGET_P99_MS
            clean = r.non_2xx == 0 and r.socket_errors == 0
            print(
                f"  {r.label}: {verdict(ok)} (target >= {TARGET_RPS:.0f} req/s, p99 <= {TARGET_P99_MS:g} ms)"
                + ("" if clean else f"; ERRORS: {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
            )
            if not ok or not clean:
                failures.append(r.label)

        if not args.skip_connect:
            direct_t, proxied_t = connect
            ratio = proxied_t.speed / direct_t.speed if direct_t.speed else 0.0
            print()
            print(f"CONNECT bulk download, {args.big_mb} MiB (curl -p -x), best of {max(1, args.repeat)}")
            print(f"{'run':<28}{'MiB/s':>10}{'seconds':>10}{'ratio':>8}")
            print(f"{'direct (nginx)':<28}{direct_t.speed / MB:>10.1f}{direct_t.seconds:>10.2f}{1.0:>8.2f}")
            print(f"{'proxy, CONNECT tunnel':<28}{proxied_t.speed / MB:>10.1f}{proxied_t.seconds:>10.2f}{ratio:>8.2f}")
            ok = ratio >= TARGET_CONNECT_RATIO
            print(f"  {verdict(ok)} (target >= {TARGET_CONNECT_RATIO:.0%} of direct)", flush=True)
            if not ok:
                failures.append("CONNECT")

        if not args.skip_rss:
            if not bench_rss(procs, args, tmp, origin):
                failures.append("RSS")

        print()
        print("all targets met" if not failures else "targets missed: " + ", ".join(failures))
        return 0 if not failures else 1
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_temp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def bench_connect(procs: Processes, args: argparse.Namespace, origin: int, proxy: Proxy) -> tuple[Transfer, Transfer]:
    """
    Best of --repeat downloads each way, interleaved, after one unreported
    direct download that brings the file into the page cache.
    """
    url = f"http://127.0.0.1:{origin}/big"
    expected = args.big_mb * MB
    check_transfer("direct download (warm-up)", run_curl(procs, args, [url]), expected)
    best_direct: Transfer | None = None
    best_proxied: Transfer | None = None
    for _ in range(max(1, args.repeat)):
        direct = run_curl(procs, args, [url])
        check_transfer("direct download", direct, expected)
        proxied = run_curl(procs, args, ["-p", "-x", f"http://127.0.0.1:{proxy.port}", url])
        check_transfer("CONNECT download through the proxy", proxied, expected)
        if best_direct is None or direct.speed > best_direct.speed:
            best_direct = direct
        if best_proxied is None or proxied.speed > best_proxied.speed:
            best_proxied = proxied
    assert best_direct is not None and best_proxied is not None
    return best_direct, best_proxied


def bench_rss(procs: Processes, args: argparse.Namespace, tmp: str, origin: int) -> bool:
    sink = start_sink(procs, tmp, args.origin_cpu)
    size = args.rss_mb * MB
    download = f"http://127.0.0.1:{origin}/rss"
    upload = f"http://127.0.0.1:{sink}/upload"
    runs: list[tuple[str, list[str], int | None]] = [
        ("download (absolute URI)", [download], None),
        ("upload (chunked PUT)", [upload], size),
    ]
    if args.slow_mbps:
        runs.insert(1, (f"download, client {args.slow_mbps} MiB/s", ["--limit-rate", f"{args.slow_mbps}M", download], None))
        runs.append((f"upload, origin {args.slow_mbps} MiB/s", [f"{upload}?mbps={args.slow_mbps}"], size))
    ok_all = True
    with running_proxy(procs, args, tmp, "rss", origin, None) as proxy:
        time.sleep(0.5)
        idle = rss_kb(proxy.proc.pid)
        print()
        print(f"RSS with {args.rss_mb} MiB bodies through the proxy (idle {idle / 1024:.1f} MiB)")
        print(f"{'run':<30}{'MiB/s':>9}{'max RSS MiB':>13}{'over idle':>11}")
        for label, curl_args, upload_bytes in runs:
            answer = os.path.join(tmp, "upload-answer")
            with RssSampler(proxy.proc.pid) as sampler:
                t = run_curl(
                    procs,
                    args,
                    ["-x", f"http://127.0.0.1:{proxy.port}"] + curl_args,
                    upload_bytes,
                    output=answer if upload_bytes is not None else "/dev/null",
                )
            if upload_bytes is None:
                check_transfer(label, t, size)
            else:
                # The sink answers with the body size it received.
                with open(answer, "rb") as f:
                    said = f.read(200)
                if not t.code.startswith("2") or said != b"received %d\n" % size:
                    raise BenchError(
                        f"{label}: HTTP {t.code}, origin said {said!r}, expected 2xx and {size} bytes"
                    )
            over = (sampler.max_kb - idle) / 1024
            ok = over <= TARGET_RSS_MB
            ok_all = ok_all and ok
            print(f"{label:<30}{t.speed / MB:>9.1f}{sampler.max_kb / 1024:>13.1f}{over:>11.1f}  {verdict(ok)}", flush=True)
        print(f"  target: max RSS within {TARGET_RSS_MB:g} MiB of idle")
    return ok_all


if __name__ == "__main__":
    sys.exit(main())
