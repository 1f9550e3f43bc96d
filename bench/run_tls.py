#!/usr/bin/env python3
"""
TLS benchmark: twisted-proxy terminating TLS (a reverse listener with a
`tls` table) against nginx terminating TLS with the same certificate, in the
same run, with wrk.

Not a test: it prints figures and their ratios.  Run it with the project's
virtualenv (it needs trustme, a test dependency, to make the certificate)
so the proxy runs the working tree:

    /work/venv/bin/python bench/run_tls.py [--duration 10] [--connections 50]
        [--repeat 3] [--key-type ECDSA|RSA]

Two measurements, each for twisted-proxy over TLS, nginx over TLS (one
worker, upstream keepalive) and, for scale, twisted-proxy over plain HTTP,
the origin itself and bench/bare_static.py answering over TLS by itself
(no proxying: the ceiling of a Twisted TLS server) with Twisted's TLS layer
over pyOpenSSL (what the listeners use) and with the standard library's
ssl.SSLObject (what a transport of our own could gain; --skip-bare):

- keep-alive: GET /100b (a 100-byte body) on wrk's persistent connections:
  the cost of TLS records on the proxy's hot path;
- handshakes: the same request with `Connection: close`, so every request
  is a new TCP connection and a full TLS handshake (wrk does not resume
  sessions): new TLS connections per second.

Layout on a 2-core machine: wrk and the origin nginx on core 0, the proxy
under test (one at a time) on core 1.  Uses nginx (nginx-light), wrk (built
with OpenSSL: it speaks https) and taskset from the system.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BODY_100B,
    HERE,
    BenchError,
    Processes,
    Proxy,
    WrkResult,
    add_common_args,
    best_of,
    check_http,
    check_tools,
    fmt_ms,
    free_port,
    install_signal_handlers,
    make_www,
    pinned,
    print_config,
    run_wrk,
    running_proxy,
    start_relay,
    start_logged,
    start_nginx,
    toml_string,
    warm_up,
)

PROXY_CONF = """\
[proxy]
access_log = "off"

[[listener]]
name = "bench"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"
{tls}
  [[listener.route]]
  path = "/"
  backend = "origin"

[backend.origin]
servers = [{{ url = "http://127.0.0.1:{origin}" }}]
"""

PROXY_TLS = """
  [listener.tls]
  [[listener.tls.certificates]]
  cert = {cert}
  key = {key}
"""

# nginx terminating TLS, as twisted-proxy does by default: TLS 1.2 and 1.3,
# ECDHE AEAD ciphers for 1.2, no session tickets or cache (wrk does not
# resume anyway), an upstream keepalive pool to the origin.
NGINX_TLS = """\
    upstream o {{
        server 127.0.0.1:{origin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_prefer_server_ciphers on;
        location / {{
            proxy_pass http://o;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""

CLOSE_LUA = 'wrk.headers["Connection"] = "close"\n'


def make_certificate(tmp: str, key_type: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost (trustme), chain and key files."""
    try:
        import trustme
    except ImportError:
        raise BenchError("trustme not importable: run with the project's virtualenv") from None
    ca = trustme.CA(key_type=getattr(trustme.KeyType, key_type))
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=getattr(trustme.KeyType, key_type))
    cert = os.path.join(tmp, "bench-cert.pem")
    key = os.path.join(tmp, "bench-key.pem")
    with open(cert, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    leaf.private_key_pem.write_to_path(key)
    return cert, key


def check_https(port: int, what: str, logs: list[str], body: bytes = BODY_100B) -> str:
    """One GET /100b over TLS (no verification); the protocol and cipher used."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET /100b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                used = f"{s.version()} {s.cipher()[0]}"
    except (OSError, ssl.SSLError) as e:
        raise BenchError(f"{what}: request failed: {e}") from None
    if not data.startswith(b"HTTP/1.1 200 ") or not data.endswith(body):
        raise BenchError(f"{what}: unexpected answer {data[:200]!r}")
    return used


@contextmanager
def proxy(
    procs: Processes, args: argparse.Namespace, tmp: str, origin: int, cert: str | None, key: str | None
) -> Iterator[Proxy]:
    label = "tls" if cert else "plain"

    def make_config(port: int) -> str:
        tls = PROXY_TLS.format(cert=toml_string(cert), key=toml_string(key)) if cert and key else ""
        return PROXY_CONF.format(port=port, origin=origin, tls=tls)

    def check(p: Proxy) -> None:
        if cert:
            check_https(p.port, "twisted-proxy over TLS", p.logs)
        else:
            check_http(
                p.port,
                f"GET /100b HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\nConnection: close\r\n\r\n".encode(),
                BODY_100B,
                "twisted-proxy over plain HTTP",
                p.logs,
            )

    with running_proxy(procs, args, tmp, label, make_config, check) as p:
        yield p


def bare_tls(
    procs: Processes, args: argparse.Namespace, tmp: str, cert: str, key: str, stack: str
) -> tuple[int, subprocess.Popen[bytes]]:
    """
    bench/bare_static.py answering over TLS by C{stack} on the proxy's core:
    its port and process.
    """
    port = free_port()
    log = os.path.join(tmp, f"bare-tls-{stack}.log")
    env_path = os.path.dirname(HERE)
    proc = start_logged(
        procs,
        pinned(args.proxy_cpu, [sys.executable, os.path.join(HERE, "bare_static.py"), "--port", str(port),
                                "--tls", cert, key, "--tls-stack", stack]),
        port,
        f"bare TLS responder ({stack})",
        log,
        timeout=args.start_timeout,
        env=dict(os.environ, PYTHONPATH=env_path),
    )
    check_https(port, f"bare TLS responder ({stack})", [log], b"x" * 100)
    return port, proc


def measure_all(args: argparse.Namespace, targets: list[tuple[str, str]], close_script: str | None) -> list[WrkResult]:
    """
    --repeat rounds over C{targets} (label, url) in turn, after one warm-up
    each; the best round of each.
    """
    for _, url in targets:
        warm_up(args, url, close_script)
    runs: dict[str, list[WrkResult]] = {label: [] for label, _ in targets}
    for _ in range(args.repeat):
        for label, url in targets:
            runs[label].append(run_wrk(args, label, url, close_script))
    return [best_of(runs[label]) for label, _ in targets]


def print_table(title: str, unit: str, results: list[WrkResult], reference: str) -> None:
    ref = next((r for r in results if r.label == reference), None)
    print(f"\n{title}")
    print(f"  {'target':<34}{unit:>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'x nginx TLS':>13}")
    for r in results:
        ratio = f"{r.rps / ref.rps:.2f}" if ref and ref.rps else "-"
        errors = r.non_2xx + r.socket_errors
        print(
            f"  {r.label:<34}{r.rps:>12.0f}{fmt_ms(r.p50_ms):>9}{fmt_ms(r.p99_ms):>9}"
            f"{errors:>8}{ratio:>13}"
        )
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--repeat", type=int, default=3, help="wrk runs per target, best reported (3)")
    p.add_argument("--key-type", choices=("ECDSA", "RSA"), default="ECDSA",
                   help="certificate key type (ECDSA P-256, trustme's default; RSA 2048)")
    p.add_argument("--skip-handshakes", action="store_true", help="skip the Connection: close runs")
    p.add_argument("--skip-bare", action="store_true",
                   help="skip the bare relays (bench/bare_relay.py, plain and TLS) and the bare TLS "
                        "responders (bench/bare_static.py --tls, three stacks)")
    return p.parse_args(argv)


NGINX_TLS_LABEL = "nginx TLS (1 worker)"
BARE_STACKS = (
    ("pyopenssl", "bare responder, Twisted TLS"),
    ("listener", "bare responder, listeners' TLS"),
    ("stdlib", "bare responder, stdlib ssl"),
)


def main() -> int:
    args = parse_args()
    problem = check_tools(args, ("wrk",))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    install_signal_handlers()
    tmp = tempfile.mkdtemp(prefix="twisted-proxy-bench-tls-")
    procs = Processes()
    try:
        print(
            f"cpus: {os.cpu_count()}; wrk and origin on {args.wrk_cpu}/{args.origin_cpu}, "
            f"proxies on {args.proxy_cpu}; {args.connections} connections, {args.duration:g}s x "
            f"{args.repeat}; temp dir {tmp}",
            flush=True,
        )
        make_www(tmp)
        cert, key = make_certificate(tmp, args.key_type)
        close_script = os.path.join(tmp, "close.lua")
        with open(close_script, "w") as f:
            f.write(CLOSE_LUA)
        origin = start_nginx(procs, tmp, args.origin_cpu, "origin").port
        print(f"origin: nginx on 127.0.0.1:{origin}; certificate: {args.key_type} (trustme)", flush=True)

        # every target runs from the start (idle when not loaded) so that the
        # rounds can go over all of them in turn: this machine's speed drifts
        # within a run, and a ratio is only fair between neighbouring runs
        targets: list[tuple[str, str]] = [("origin, plain HTTP (direct)", f"http://127.0.0.1:{origin}/100b")]
        nginx = start_nginx(
            procs, tmp, args.proxy_cpu, "tls",
            lambda port: NGINX_TLS.format(port=port, origin=origin, cert=cert, key=key),
        )
        used = check_https(nginx.port, "nginx TLS", nginx.logs)
        print(f"nginx TLS on 127.0.0.1:{nginx.port} ({used})", flush=True)
        targets.append((NGINX_TLS_LABEL, f"https://127.0.0.1:{nginx.port}/100b"))
        with ExitStack() as stack:
            p = stack.enter_context(proxy(procs, args, tmp, origin, cert, key))
            used = check_https(p.port, "twisted-proxy TLS", p.logs)
            print(f"twisted-proxy TLS on 127.0.0.1:{p.port} ({used})", flush=True)
            print_config(f"proxy config ({p.conf})", p.config)
            targets.append(("twisted-proxy TLS", f"https://127.0.0.1:{p.port}/100b"))
            plain = stack.enter_context(proxy(procs, args, tmp, origin, None, None))
            print(f"twisted-proxy plain on 127.0.0.1:{plain.port}", flush=True)
            targets.append(("twisted-proxy plain HTTP", f"http://127.0.0.1:{plain.port}/100b"))
            if not args.skip_bare:
                # the floor of any Twisted proxy: bytes relayed on one
                # upstream connection per client, no HTTP, plain and over
                # the listeners' TLS layer
                relay_port, _ = start_relay(procs, args, tmp, origin)
                targets.append(("bare relay, plain HTTP", f"http://127.0.0.1:{relay_port}/100b"))
                relay_port, _ = start_relay(procs, args, tmp, origin, (cert, key))
                check_https(relay_port, "bare relay, listeners' TLS", [os.path.join(tmp, "bare-relay-tls.log")])
                targets.append(("bare relay, listeners' TLS", f"https://127.0.0.1:{relay_port}/100b"))
                # the ceiling of a Twisted TLS server that does no proxying at
                # all, by TLS layer: Twisted's, the listeners', the stdlib's
                for tls_stack, label in BARE_STACKS:
                    bare_port, _ = bare_tls(procs, args, tmp, cert, key, tls_stack)
                    targets.append((label, f"https://127.0.0.1:{bare_port}/100b"))
            keepalive = measure_all(args, targets, None)
            handshakes = [] if args.skip_handshakes else measure_all(args, targets, close_script)

        print_table("keep-alive, GET /100b", "req/s", keepalive, NGINX_TLS_LABEL)
        if handshakes:
            print_table(
                "new connection per request (Connection: close): full TLS handshakes",
                "conn/s", handshakes, NGINX_TLS_LABEL,
            )
        return 0
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
