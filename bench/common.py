#!/usr/bin/env python3
"""
Shared pieces of the benchmark scripts (run_forward.py, run_reverse.py).

Standard library only.  Processes that are killed as whole process groups,
free ports, nginx instances, a stdlib upload sink, the proxy under twistd,
wrk and curl runners with their parsers, and a /proc RSS sampler.

Run as a script it is the upload sink:  python bench/common.py --sink PORT
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MB = 1024 * 1024
BODY_100B = b"x" * 99 + b"\n"


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


def start_logged(
    procs: Processes,
    argv: list[str],
    port: int,
    what: str,
    log: str,
    timeout: float = 10,
    **kwargs: object,
) -> subprocess.Popen[bytes]:
    """Start C{argv} with its output in C{log}; wait until C{port} accepts."""
    with open(log, "wb") as out:
        proc = procs.start(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    wait_for_port(port, proc, what, timeout, [log])
    return proc


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so a finally: kills the children."""

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)


# ---------------------------------------------------------------------------
# nginx: the origin, and (run_reverse.py) a reverse proxy to compare with

NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    types {{ }}
    default_type application/octet-stream;
{body}
}}
"""

ORIGIN_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
"""


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen[bytes]
    conf: str  # path of nginx.conf
    logs: list[str]


def start_nginx(
    procs: Processes,
    tmp: str,
    cpu: int | None,
    name: str = "origin",
    body: Callable[[int], str] | None = None,
) -> Nginx:
    """
    One nginx, one worker, in C{tmp/nginx-NAME/}, on a free port.
    C{body(port)} goes inside the C{http} block; the default serves
    C{tmp/www}.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise BenchError("nginx not found (apt-get install nginx-light)")
    port = free_port()
    directory = os.path.join(tmp, f"nginx-{name}")
    os.makedirs(directory, exist_ok=True)
    # Workers of a root master run as another user: let it read the files.
    user = "user root root;" if os.geteuid() == 0 else ""
    if body is None:
        text = ORIGIN_SERVER.format(port=port, www=os.path.join(tmp, "www"))
    else:
        text = body(port)
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=directory, user=user, body=text))
    log = os.path.join(directory, "stderr.log")
    error_log = os.path.join(directory, "error.log")
    with open(log, "wb") as out:
        proc = procs.start(
            pinned(cpu, [nginx, "-p", directory, "-e", error_log, "-c", conf]),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    logs = [log, error_log]
    wait_for_port(port, proc, f"nginx ({name})", 10, logs)
    return Nginx(port, proc, conf, logs)


def make_www(tmp: str) -> str:
    """C{tmp/www} with C{/100b}; returns the folder."""
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "100b"), "wb") as f:
        f.write(BODY_100B)
    os.chmod(tmp, 0o755)
    os.chmod(www, 0o755)
    return www


def make_sparse(path: str, size: int) -> None:
    """Instant, no disk used; reads come back as zeros."""
    with open(path, "wb") as f:
        f.truncate(size)


def make_random(path: str, size: int, seed: int = 1) -> str:
    """
    C{size} pseudo-random bytes from a seeded generator (the same file for
    the same seed and size); returns their sha256 hex digest.
    """
    rng = random.Random(seed)
    digest = hashlib.sha256()
    block = 1 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            data = rng.randbytes(min(block, left))
            digest.update(data)
            f.write(data)
            left -= len(data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# upload sink (the origin for uploads): stdlib, one thread per connection
#
# Answers "received N\n", or with ?sha256=1 in the target
# "received N sha256 HEX\n"; ?mbps=R reads at R MiB/s (a slow origin).


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
            hasher = hashlib.sha256() if re.search(rb"[?&]sha256=1", target) else None
            if headers.get(b"expect", b"").lower() == b"100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            recv_size = 65536 if rate else len(big)
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                received, pending = _sink_chunked(conn, rest, view, recv_size, pacer, hasher)
            else:
                length = int(headers.get(b"content-length", b"0") or b"0")
                received, pending = _sink_length(conn, rest, length, view, recv_size, pacer, hasher)
            if received < 0:
                return
            body = b"received %d" % received
            if hasher is not None:
                body += b" sha256 " + hasher.hexdigest().encode()
            body += b"\n"
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
    conn: socket.socket,
    rest: bytes,
    length: int,
    view: memoryview,
    recv_size: int,
    pacer: _Pacer,
    hasher: "hashlib._Hash | None",
) -> tuple[int, bytes]:
    if len(rest) >= length:
        if hasher is not None:
            hasher.update(rest[:length])
        return length, rest[length:]
    if hasher is not None:
        hasher.update(rest)
    left = length - len(rest)
    while left:
        n = conn.recv_into(view[: min(recv_size, left)])
        if not n:
            return -1, b""
        if hasher is not None:
            hasher.update(view[:n])
        left -= n
        pacer.account(n)
    return length, b""


def _sink_chunked(
    conn: socket.socket,
    rest: bytes,
    view: memoryview,
    recv_size: int,
    pacer: _Pacer,
    hasher: "hashlib._Hash | None",
) -> tuple[int, bytes]:
    """Consume a chunked body; return (data bytes, bytes after the body)."""
    received = 0
    data_left = 0  # chunk data still to read
    crlf_left = 0  # the CRLF after a chunk's data, still to skip
    line = bytearray()
    in_trailers = False
    buf = memoryview(rest)
    while True:
        i, end = 0, len(buf)
        while i < end:
            if data_left:
                # Bulk data: hashed (when asked) and skipped without copying.
                take = min(data_left, end - i)
                if hasher is not None:
                    hasher.update(buf[i : i + take])
                data_left -= take
                i += take
                continue
            if crlf_left:
                take = min(crlf_left, end - i)
                crlf_left -= take
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
                data_left = size
                crlf_left = 2
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
    start_logged(
        procs,
        pinned(cpu, [sys.executable, os.path.abspath(__file__), "--sink", str(port)]),
        port,
        "upload sink",
        log,
    )
    return port


# ---------------------------------------------------------------------------
# the proxy, under twistd


@dataclass
class Proxy:
    port: int
    proc: subprocess.Popen[bytes]
    logs: list[str]
    conf: str  # path of the TOML file
    config: str  # its text
    access_log: str | None = None


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def running_proxy(
    procs: Processes,
    args: argparse.Namespace,
    tmp: str,
    label: str,
    make_config: Callable[[int], str],
    check: Callable[[Proxy], None],
    access_log: str | None = None,
    root: str = ROOT,
) -> Iterator[Proxy]:
    """
    C{twistd -n --pidfile= proxy --config FILE} with C{make_config(port)}
    as FILE, pinned to C{args.proxy_cpu}, the checkout C{root} (by default
    this working tree) first on C{PYTHONPATH}, so that its C{twisted_proxy}
    is the one imported; C{check(proxy)} runs once it accepts connections.
    """
    port = free_port()
    conf = os.path.join(tmp, f"proxy-{label}.toml")
    config = make_config(port)
    with open(conf, "w") as f:
        f.write(config)
    out_log = os.path.join(tmp, f"proxy-{label}.stdout.log")
    err_log = os.path.join(tmp, f"proxy-{label}.stderr.log")
    argv = [args.twistd, "-n", "--pidfile=", "proxy", "--config", conf]
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
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
            raise BenchError(f"{e}\nproxy config {conf}:\n{config}") from None
        proxy = Proxy(port, proc, logs, conf, config, access_log)
        check(proxy)
        yield proxy
    finally:
        procs.stop(proc)


def check_http(port: int, request: bytes, body: bytes, what: str, logs: list[str]) -> None:
    """
    Send C{request} (which should ask for C{Connection: close}) to
    127.0.0.1:C{port}; fail clearly unless the answer is a 200 ending in
    C{body}.
    """
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise BenchError(f"{what}: request failed: {e}\n" + tails(logs)) from None
    status = data.split(b"\r\n", 1)[0].decode("latin-1")
    if not re.match(r"HTTP/1\.[01] 200 ", status) or not data.endswith(body):
        raise BenchError(
            f"{what}: answered {status!r} ({len(data)} bytes), expected 200 with the "
            f"{len(body)}-byte file\n" + tails(logs)
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
    transfer_bps: float = 0.0  # wrk's Transfer/sec (heads and bodies), bytes per second
    raw: str = field(default="", repr=False)
    cpu: "CpuUse | None" = None  # of the server wrk talked to, when measured


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_UNITS_BYTES = {"B": 1, "KB": 1024, "MB": MB, "GB": 1024 * MB, "TB": 1024 * 1024 * MB}


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
    transfer = re.search(r"^Transfer/sec:\s*([\d.]+)\s*(B|KB|MB|GB|TB)\s*$", output, re.M)
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
        transfer_bps=float(transfer.group(1)) * _UNITS_BYTES[transfer.group(2)] if transfer else 0.0,
        raw=output,
    )


def run_wrk(
    args: argparse.Namespace,
    label: str,
    url: str,
    script: str | None = None,
    script_args: list[str] | None = None,
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
    if script is not None:
        argv += ["-s", script, url]
        if script_args:
            argv += ["--"] + script_args
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


def best_of(results: list[WrkResult]) -> WrkResult:
    """
    The run with the most req/s, with the errors (non-2xx, socket errors)
    and the requests of every run added up: an error in any run counts.
    """
    best = max(results, key=lambda r: r.rps)
    details = [r.socket_detail for r in results if r.socket_errors]
    return WrkResult(
        label=best.label,
        rps=best.rps,
        p50_ms=best.p50_ms,
        p99_ms=best.p99_ms,
        requests=best.requests,
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        socket_detail="; ".join(details),
        transfer_bps=best.transfer_bps,
        raw=best.raw,
        cpu=best.cpu,
    )


def warm_up(args: argparse.Namespace, url: str, script: str | None = None, script_args: list[str] | None = None) -> None:
    """An unreported wrk run of C{args.warmup} seconds (none when 0)."""
    if args.warmup > 0:
        run_wrk(args, "warm-up", url, script, script_args, duration=args.warmup)


# ---------------------------------------------------------------------------
# curl transfers


@dataclass
class Transfer:
    seconds: float
    speed: float  # bytes per second as curl measured it
    size: int
    code: str
    piped: str = ""  # what the command curl's output was piped to printed
    cpu: "CpuUse | None" = None  # of the proxy, when measured


def run_curl(
    procs: Processes,
    args: argparse.Namespace,
    curl_args: list[str],
    *,
    upload: bool = False,
    feed: list[str] | None = None,
    output: str = "/dev/null",
    pipe_to: list[str] | None = None,
    timeout: float = 600,
) -> Transfer:
    """
    One curl transfer on C{args.wrk_cpu}.  C{upload}: report the upload
    figures.  C{feed}: a command whose output is curl's stdin (give
    C{-T -}).  C{pipe_to}: a command (on the same core) that reads the
    body curl writes to its stdout; its output is returned in C{piped}.
    Otherwise the body goes to C{output}.
    """
    write_out = (
        "%{stderr}\nCURLW %{speed_download} %{speed_upload} %{size_download} "
        "%{size_upload} %{http_code}\n"
    )
    argv = ["curl", "-s", "-S", "-w", write_out, "--max-time", str(int(timeout))]
    argv += ["-o", "-" if pipe_to else output]
    argv = pinned(args.wrk_cpu, argv + curl_args)
    started = time.monotonic()
    feeder = consumer = None
    body_r = body_w = None
    try:
        if feed is not None:
            feeder = procs.start(pinned(args.wrk_cpu, feed), stdout=subprocess.PIPE)
        if pipe_to is not None:
            body_r, body_w = os.pipe()
            consumer = procs.start(pinned(args.wrk_cpu, pipe_to), stdin=body_r, stdout=subprocess.PIPE)
            os.close(body_r)
            body_r = None
        proc = procs.start(
            argv,
            stdin=feeder.stdout if feeder else subprocess.DEVNULL,
            stdout=body_w if body_w is not None else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if body_w is not None:
            os.close(body_w)
            body_w = None
        if feeder is not None and feeder.stdout is not None:
            feeder.stdout.close()
        try:
            _, err = proc.communicate(timeout=timeout + 10)
            piped = b""
            if consumer is not None:
                piped, _ = consumer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"curl did not finish: {shlex.join(argv)}") from None
        finally:
            procs.stop(proc)
    finally:
        for fd in (body_r, body_w):
            if fd is not None:
                os.close(fd)
        for helper in (feeder, consumer):
            if helper is not None:
                procs.stop(helper)
    elapsed = time.monotonic() - started
    text = err.decode("utf-8", "replace")
    match = re.search(r"^CURLW (\S+) (\S+) (\d+) (\d+) (\d+)$", text, re.M)
    if proc.returncode != 0 or not match:
        raise BenchError(f"curl failed ({proc.returncode}): {shlex.join(argv)}\n{text}")
    down, up, size_down, size_up, code = match.groups()
    if upload:
        return Transfer(elapsed, float(up), int(size_up), code, piped.decode())
    return Transfer(elapsed, float(down), int(size_down), code, piped.decode())


def check_transfer(what: str, t: Transfer, expected: int) -> None:
    if not t.code.startswith("2") or t.size != expected:
        raise BenchError(
            f"{what}: HTTP {t.code}, {t.size} bytes transferred, expected 2xx and {expected}"
        )


def sha256_command() -> list[str]:
    """
    A command printing the sha256 of its stdin.  openssl uses the CPU's SHA
    instructions (about 1 GB/s); coreutils sha256sum can be 5x slower, and
    would then be what limits a download's speed.
    """
    if shutil.which("openssl"):
        return ["openssl", "dgst", "-sha256", "-r"]
    return ["sha256sum"]


def parse_sha256(output: str) -> str:
    match = re.search(r"\b([0-9a-f]{64})\b", output)
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------
# RSS


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class RssSampler:
    """The largest VmRSS of C{pid}, sampled every C{interval} seconds."""

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


@dataclass
class CpuUse:
    """
    Shares of the wall-clock time of a measurement, in percent: C{cpu} the
    processes ran (all their threads), C{wait} they were runnable but
    waited for a core (other processes on it), C{steal} the hypervisor took
    from their core.  On a shared machine a low figure with a high C{wait}
    or C{steal} says the run was starved, not slow.
    """

    cpu: float
    wait: float
    steal: float | None


def _schedstat(pids: list[int]) -> tuple[int, int]:
    """Nanoseconds on a core and waiting for one, summed over the threads."""
    run = wait = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    fields = f.read().split()
            except OSError:
                continue
            run += int(fields[0])
            wait += int(fields[1])
    return run, wait


def _steal_ticks(cpu: int | None) -> int | None:
    if cpu is None:
        return None
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    fields = line.split()
                    return int(fields[8]) if len(fields) > 8 else None
    except OSError:
        pass
    return None


class CpuMeter:
    """
    C{with CpuMeter(pids, cpu) as m: ...}, then C{m.use}: how much the
    processes C{pids} ran and waited, and the steal time of core C{cpu}.
    """

    def __init__(self, pids: list[int], cpu: int | None) -> None:
        self.pids = pids
        self.cpu = cpu
        self.use: CpuUse | None = None

    def __enter__(self) -> "CpuMeter":
        self._start = time.monotonic()
        self._sched = _schedstat(self.pids)
        self._steal = _steal_ticks(self.cpu)
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self._start
        run, wait = _schedstat(self.pids)
        steal = _steal_ticks(self.cpu)
        if elapsed <= 0:
            return
        steal_pct = None
        if steal is not None and self._steal is not None:
            steal_pct = 100.0 * (steal - self._steal) / os.sysconf("SC_CLK_TCK") / elapsed
        self.use = CpuUse(
            cpu=100.0 * (run - self._sched[0]) / 1e9 / elapsed,
            wait=100.0 * (wait - self._sched[1]) / 1e9 / elapsed,
            steal=steal_pct,
        )


def children(pid: int) -> list[int]:
    """The processes whose parent is C{pid} (an nginx master's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may contain spaces and parentheses: parse after the last ")"
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# ---------------------------------------------------------------------------
# options and report helpers


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every bench script takes."""
    cpus = os.cpu_count() or 1
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--warmup", type=float, default=2,
                   help="seconds of unreported wrk warm-up before each measured target (2; 0 = none)")
    p.add_argument("--slow-mbps", type=int, default=200,
                   help="rate of the slow client / slow origin RSS runs in MiB/s (200; 0 = skip them)")
    p.add_argument("--skip-rss", action="store_true", help="skip the RSS check")
    p.add_argument("--twistd", default=os.path.join(os.path.dirname(sys.executable), "twistd"),
                   help="twistd to run the proxy with (the one next to this python)")
    p.add_argument("--start-timeout", type=float, default=20, help="seconds to wait for the proxy port (20)")
    p.add_argument("--wrk-cpu", type=int, default=0 if cpus > 1 else None, help="core for wrk and curl (0)")
    p.add_argument("--proxy-cpu", type=int, default=1 if cpus > 1 else None, help="core for the proxy (1)")
    p.add_argument("--origin-cpu", type=int, default=(2 if cpus > 2 else 0) if cpus > 1 else None,
                   help="core for the nginx origin and the upload sink (2 if present, else 0)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (configs, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every wrk output in full")


def check_tools(args: argparse.Namespace, tools: tuple[str, ...] = ("wrk", "curl"), twistd: bool = True) -> str | None:
    """The first missing tool, as an error message; None when all are there."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    if twistd and not os.path.exists(args.twistd):
        return f"twistd not found at {args.twistd} (use --twistd)"
    return None


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def print_config(title: str, text: str) -> None:
    print(f"{title}:")
    for line in text.rstrip("\n").splitlines():
        print(f"    {line}")
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the upload sink of the bench scripts")
    parser.add_argument("--sink", type=int, required=True, metavar="PORT")
    sink_main(parser.parse_args().sink)


# ---------------------------------------------------------------------------
# the bare relay (bench/bare_relay.py)

RELAY = os.path.join(HERE, "bare_relay.py")


def get_100b(port: int) -> bytes:
    return f"GET /100b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()


def start_relay(
    procs: Processes, args: argparse.Namespace, tmp: str, origin: int, tls: tuple[str, str] | None = None
) -> tuple[int, int]:
    """
    The bare relay to C{origin}: (port, pid). With C{tls} (chain, key) it
    terminates TLS with the listeners' layer, and is not checked here (the
    caller speaks TLS).
    """
    port = free_port()
    log = os.path.join(tmp, "bare-relay-tls.log" if tls else "bare-relay.log")
    argv = [sys.executable, RELAY, "--port", str(port), "--upstream", f"127.0.0.1:{origin}"]
    if tls:
        argv += ["--tls", *tls]
    proc = start_logged(
        procs,
        pinned(args.proxy_cpu, argv),
        port,
        "bare relay (TLS)" if tls else "bare relay",
        log,
        timeout=args.start_timeout,
    )
    if not tls:
        check_http(port, get_100b(port), BODY_100B, "bare relay check: GET /100b", [log])
    return port, proc.pid
