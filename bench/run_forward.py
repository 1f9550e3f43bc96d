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
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BODY_100B,
    HERE,
    MB,
    BenchError,
    CpuMeter,
    Processes,
    Proxy,
    RssSampler,
    Transfer,
    WrkResult,
    add_common_args,
    best_of,
    check_http,
    check_tools,
    check_transfer,
    children,
    count_lines,
    fmt_ms,
    fmt_pct,
    free_port,
    install_signal_handlers,
    make_sparse,
    make_www,
    pinned,
    print_config,
    rss_kb,
    run_curl,
    run_wrk,
    running_proxy,
    start_nginx,
    start_relay,
    start_sink,
    toml_string,
    verdict,
    wait_for_port,
    warm_up,
)

LUA = os.path.join(HERE, "absolute.lua")

TARGET_RPS = 15000.0
TARGET_P99_MS = 6.0
TARGET_CONNECT_RATIO = 0.70
TARGET_CONNECT_TLS_RATIO = 0.95
BARE_LABEL = "bare Twisted relay"
TARGET_RSS_MB = 32.0

# The shipped defaults (the pool's process-wide idle bound keeps a connection
# per client however many there are); only the access log is chosen.
PROXY_CONF = """\
[proxy]
access_log = {access_log}

[[listener]]
name = "bench"
kind = "forward"
endpoint = "tcp:{port}:interface=127.0.0.1"
connect_ports = [{connect_ports}]
"""

# the origin's TLS twin for CONNECT with TLS inside: the same files over
# HTTPS (TLS 1.2 and 1.3, ECDHE AEAD ciphers), a trustme certificate
TLS_ORIGIN_SERVER = """\
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        root {www};
    }}
"""


@contextmanager
def forward_proxy(
    procs: Processes,
    args: argparse.Namespace,
    tmp: str,
    label: str,
    origin_port: int,
    access_log: str | None,
    tls_port: int | None = None,
) -> Iterator[Proxy]:
    def make_config(port: int) -> str:
        ports = [origin_port] + ([tls_port] if tls_port else [])
        return PROXY_CONF.format(
            access_log=toml_string(access_log or "off"), port=port,
            connect_ports=", ".join(str(p) for p in ports),
        )

    def check(proxy: Proxy) -> None:
        """One absolute-form request by hand, so a broken proxy fails clearly."""
        request = (
            f"GET http://127.0.0.1:{origin_port}/100b HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{origin_port}\r\nConnection: close\r\n\r\n"
        ).encode()
        check_http(
            proxy.port,
            request,
            BODY_100B,
            f"proxy check: GET http://127.0.0.1:{origin_port}/100b through the proxy",
            proxy.logs,
        )

    with running_proxy(procs, args, tmp, label, make_config, check, access_log) as proxy:
        yield proxy


# ---------------------------------------------------------------------------
# wrk


def bench_wrk(
    args: argparse.Namespace,
    label: str,
    url: str,
    pids: list[int],
    cpu: int | None,
    origin_url: str | None = None,
) -> WrkResult:
    """
    Warm-up, then the best of --wrk-repeat runs (errors of all runs added
    up), with the CPU use of C{pids} (the server wrk talks to) on core C{cpu}.
    """
    script, script_args = (LUA, [origin_url]) if origin_url is not None else (None, None)
    warm_up(args, url, script, script_args)
    runs = []
    for _ in range(max(1, args.wrk_repeat)):
        with CpuMeter(pids, cpu) as meter:
            result = run_wrk(args, label, url, script, script_args)
        result.cpu = meter.use
        runs.append(result)
    return best_of(runs)


# ---------------------------------------------------------------------------
# report


def print_wrk_table(args: argparse.Namespace, results: list[WrkResult]) -> None:
    direct = results[0].rps if results else 0.0
    print()
    best = f", best of {args.wrk_repeat}" if args.wrk_repeat > 1 else ""
    print(f"HTTP/1.1 GET 100 B, wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s{best}")
    header = (
        f"{'run':<28}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'requests':>11}{'non-2xx':>9}{'sock err':>10}{'ratio':>8}"
        f"{'cpu%':>6}{'wait%':>6}{'steal%':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.rps / direct if direct else 0.0
        print(
            f"{r.label:<28}{r.rps:>11.0f}{fmt_ms(r.p50_ms):>9}{fmt_ms(r.p99_ms):>9}"
            f"{r.requests:>11}{r.non_2xx:>9}{r.socket_errors:>10}{ratio:>8.2f}"
            f"{fmt_pct(r.cpu.cpu if r.cpu else None):>6}{fmt_pct(r.cpu.wait if r.cpu else None):>6}"
            f"{fmt_pct(r.cpu.steal if r.cpu else None):>7}"
        )
    for r in results:
        if r.socket_errors:
            print(f"  {r.label}: socket errors {r.socket_detail}")
    print(
        "  cpu%, wait%: time the server wrk talked to (nginx worker for direct, else the proxy) spent"
        " running, and runnable but waiting for its core; steal%: of its core, taken by the hypervisor"
    )
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--big-mb", type=int, default=512, help="size of the CONNECT bulk download in MiB (512)")
    p.add_argument("--repeat", type=int, default=3, help="CONNECT downloads each way; the best is reported (3)")
    p.add_argument("--wrk-repeat", type=int, default=1,
                   help="wrk runs per target; the best is reported, errors of all runs counted (1)")
    p.add_argument("--rss-mb", type=int, default=1024, help="body size for the RSS check in MiB (1024)")
    p.add_argument("--skip-connect", action="store_true", help="skip the CONNECT transfers")
    p.add_argument("--skip-bare", action="store_true", help="skip the bare Twisted relay (bench/bare_relay.py)")
    p.add_argument("--no-squid", action="store_true", help="no Squid or HAProxy peers in the CONNECT transfers (default: when installed)")
    p.add_argument("--skip-log", action="store_true", help="skip the wrk run with the access log on")
    p.add_argument("--direct-only", action="store_true", help="only measure nginx directly (no proxy)")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    problem = check_tools(args, twistd=not args.direct_only)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    install_signal_handlers()

    tmp = tempfile.mkdtemp(prefix="twisted-proxy-bench-")
    procs = Processes()
    failures: list[str] = []
    try:
        print(
            f"cpus: {os.cpu_count()}; wrk/curl on {args.wrk_cpu}, proxy on {args.proxy_cpu}, "
            f"origin on {args.origin_cpu}; temp dir {tmp}",
            flush=True,
        )
        www = make_www(tmp)
        make_sparse(os.path.join(www, "big"), args.big_mb * MB)
        make_sparse(os.path.join(www, "rss"), args.rss_mb * MB)
        nginx = start_nginx(procs, tmp, args.origin_cpu)
        origin = nginx.port
        origin_url = f"http://127.0.0.1:{origin}/100b"
        print(f"nginx on 127.0.0.1:{origin}", flush=True)

        results = [bench_wrk(args, "direct (nginx)", origin_url, children(nginx.proc.pid), args.origin_cpu)]
        if args.direct_only:
            print_wrk_table(args, results)
            return 0

        connect = None
        connect_tls = None
        tls_origin = None
        squid = haproxy = None
        if not args.skip_connect:
            tls_origin = start_tls_origin(procs, args, tmp, www)
            # Squid (one worker, no cache) tunnels the same downloads; HAProxy
            # in TCP mode relays the HTTPS one without CONNECT: the cheapest
            # relay there is, the floor of any hop between curl and nginx
            squid = start_peer(procs, args, tmp, "squid", SQUID_CONF, ["-N", "-f"])
            haproxy = start_peer(procs, args, tmp, "haproxy", HAPROXY_TCP, ["-db", "-f"], origin=tls_origin)
        with forward_proxy(procs, args, tmp, "nolog", origin, None, tls_origin) as proxy:
            print(f"proxy on 127.0.0.1:{proxy.port} (access log off)", flush=True)
            print_config(f"proxy config ({proxy.conf})", proxy.config)
            results.append(
                bench_wrk(args, "proxy, access log off", f"http://127.0.0.1:{proxy.port}/",
                          [proxy.proc.pid], args.proxy_cpu, origin_url)
            )
            if not args.skip_bare:
                # the floor of any Twisted proxy: bytes relayed to the origin,
                # no HTTP work (nginx answers the absolute-form requests itself)
                relay, relay_pid = start_relay(procs, args, tmp, origin)
                results.append(
                    bench_wrk(args, BARE_LABEL, f"http://127.0.0.1:{relay}/", [relay_pid], args.proxy_cpu, origin_url)
                )
            if not args.skip_connect:
                connect = bench_connect(procs, args, f"http://127.0.0.1:{origin}/big", proxy, squid)
                assert tls_origin is not None
                connect_tls = bench_connect(
                    procs, args, f"https://127.0.0.1:{tls_origin}/big", proxy, squid,
                    f"https://127.0.0.1:{haproxy}/big" if haproxy else None,
                )

        if not args.skip_log:
            log_path = os.path.join(tmp, "access.log")
            with forward_proxy(procs, args, tmp, "log", origin, log_path) as proxy:
                print(f"proxy on 127.0.0.1:{proxy.port} (access log to {log_path})", flush=True)
                results.append(
                    bench_wrk(args, "proxy, access log to file", f"http://127.0.0.1:{proxy.port}/",
                              [proxy.proc.pid], args.proxy_cpu, origin_url)
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

        print_wrk_table(args, results)
        bare = next((r for r in results if r.label == BARE_LABEL), None)
        if bare is not None and bare.rps:
            print(f"  {results[1].label} / {BARE_LABEL}: {results[1].rps / bare.rps:.2f} (goal >= 1.0, issue 12)")
        for r in results[1:]:
            if r.label == BARE_LABEL:
                continue
            ok = r.rps >= TARGET_RPS and r.p99_ms is not None and r.p99_ms <= TARGET_P99_MS
            clean = r.non_2xx == 0 and r.socket_errors == 0
            print(
                f"  {r.label}: {verdict(ok)} (target >= {TARGET_RPS:.0f} req/s, p99 <= {TARGET_P99_MS:g} ms)"
                + ("" if clean else f"; ERRORS: {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
            )
            if not ok or not clean:
                failures.append(r.label)

        for what, found, target in (
            ("CONNECT bulk download", connect, TARGET_CONNECT_RATIO),
            ("CONNECT bulk download with TLS inside (https through the tunnel)", connect_tls, TARGET_CONNECT_TLS_RATIO),
        ):
            if found is None:
                continue
            direct_t, proxied_t, squid_t, relay_t = found
            ratio = proxied_t.speed / direct_t.speed if direct_t.speed else 0.0
            print()
            print(f"{what}, {args.big_mb} MiB (curl -p -x), best of {max(1, args.repeat)}")
            use = proxied_t.cpu
            print(f"{'run':<28}{'MiB/s':>10}{'seconds':>10}{'ratio':>8}{'cpu%':>6}{'wait%':>6}{'steal%':>7}")
            print(f"{'direct (nginx)':<28}{direct_t.speed / MB:>10.1f}{direct_t.seconds:>10.2f}{1.0:>8.2f}{'-':>6}{'-':>6}{'-':>7}")
            print(
                f"{'proxy, CONNECT tunnel':<28}{proxied_t.speed / MB:>10.1f}{proxied_t.seconds:>10.2f}{ratio:>8.2f}"
                f"{fmt_pct(use.cpu if use else None):>6}{fmt_pct(use.wait if use else None):>6}"
                f"{fmt_pct(use.steal if use else None):>7}"
            )
            if squid_t is not None:
                print(f"{'squid, CONNECT tunnel':<28}{squid_t.speed / MB:>10.1f}{squid_t.seconds:>10.2f}"
                      f"{squid_t.speed / direct_t.speed if direct_t.speed else 0.0:>8.2f}")
            if relay_t is not None:
                print(f"{'haproxy, TCP relay':<28}{relay_t.speed / MB:>10.1f}{relay_t.seconds:>10.2f}"
                      f"{relay_t.speed / direct_t.speed if direct_t.speed else 0.0:>8.2f}")
            ok = ratio >= target
            print(f"  {verdict(ok)} (target >= {target:.0%} of direct)", flush=True)
            if not ok:
                failures.append(what)

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


def start_tls_origin(procs: Processes, args: argparse.Namespace, tmp: str, www: str) -> int:
    """
    nginx serving C{www} over HTTPS (a trustme ECDSA certificate for
    127.0.0.1): the origin of CONNECT with TLS inside. Its port.
    """
    from run_tls import make_certificate

    cert, key = make_certificate(tmp, "ECDSA")
    nginx = start_nginx(
        procs, tmp, args.origin_cpu, "tls-origin",
        lambda port: TLS_ORIGIN_SERVER.format(port=port, cert=cert, key=key, www=www),
    )
    print(f"nginx (TLS) on 127.0.0.1:{nginx.port}", flush=True)
    return nginx.port


SQUID_CONF = """\
http_port 127.0.0.1:{port}
acl CONNECT method CONNECT
http_access allow localhost
http_access deny all
cache deny all
access_log none
cache_log {dir}/cache.log
pid_filename {dir}/squid.pid
coredump_dir {dir}
workers 1
"""


def start_peer(
    procs: Processes, args: argparse.Namespace, tmp: str, program: str, template: str, options: list[str], **fields: object
) -> int | None:
    """
    C{program} (squid, haproxy) from the system on the proxy's core, with
    C{template} formatted (C{port}, C{dir} and C{fields}) as its config
    file, started as C{program OPTIONS CONFIG}; its port, or None when it
    is not installed (or --no-squid).
    """
    found = shutil.which(program) or (f"/usr/sbin/{program}" if os.path.exists(f"/usr/sbin/{program}") else None)
    if found is None or args.no_squid:
        return None
    directory = os.path.join(tmp, program)
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    conf = os.path.join(directory, f"{program}.conf")
    with open(conf, "w") as f:
        f.write(template.format(port=port, dir=directory, **fields))
    log = os.path.join(directory, "stderr.log")
    with open(log, "wb") as out:
        proc = procs.start(pinned(args.proxy_cpu, [found, *options, conf]), stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
    wait_for_port(port, proc, program, 20, [log, os.path.join(directory, "cache.log")])
    print(f"{program} on 127.0.0.1:{port}", flush=True)
    return port


HAPROXY_TCP = """\
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend relay
    bind 127.0.0.1:{port}
    default_backend origin
backend origin
    server origin 127.0.0.1:{origin}
"""


def bench_connect(
    procs: Processes,
    args: argparse.Namespace,
    url: str,
    proxy: Proxy,
    squid: int | None = None,
    relay: str | None = None,
) -> tuple[Transfer, Transfer, Transfer | None, Transfer | None]:
    """
    Best of --repeat downloads of C{url} each way (directly, and through a
    CONNECT tunnel: C{curl -p -x}; an https URL is TLS end to end, the
    proxy relays its records), interleaved, after one unreported direct
    download that brings the file into the page cache.
    """
    if url.startswith("https:"):
        # the client checks nothing: the certificate is trustme's
        args_tls = ["-k"]
    else:
        args_tls = []
    expected = args.big_mb * MB
    check_transfer("direct download (warm-up)", run_curl(procs, args, args_tls + [url]), expected)
    best_direct: Transfer | None = None
    best_proxied: Transfer | None = None
    best_squid: Transfer | None = None
    best_relay: Transfer | None = None
    for _ in range(max(1, args.repeat)):
        if relay is not None:
            # the same URL through a TCP relay (no CONNECT)
            through = run_curl(procs, args, args_tls + [relay])
            check_transfer("download through the TCP relay", through, expected)
            if best_relay is None or through.speed > best_relay.speed:
                best_relay = through
        if squid is not None:
            other = run_curl(procs, args, args_tls + ["-p", "-x", f"http://127.0.0.1:{squid}", url])
            check_transfer("CONNECT download through squid", other, expected)
            if best_squid is None or other.speed > best_squid.speed:
                best_squid = other
        direct = run_curl(procs, args, args_tls + [url])
        check_transfer("direct download", direct, expected)
        with CpuMeter([proxy.proc.pid], args.proxy_cpu) as meter:
            proxied = run_curl(procs, args, args_tls + ["-p", "-x", f"http://127.0.0.1:{proxy.port}", url])
        proxied.cpu = meter.use
        check_transfer("CONNECT download through the proxy", proxied, expected)
        if best_direct is None or direct.speed > best_direct.speed:
            best_direct = direct
        if best_proxied is None or proxied.speed > best_proxied.speed:
            best_proxied = proxied
    assert best_direct is not None and best_proxied is not None
    return best_direct, best_proxied, best_squid, best_relay


def bench_rss(procs: Processes, args: argparse.Namespace, tmp: str, origin: int) -> bool:
    sink = start_sink(procs, tmp, args.origin_cpu)
    size = args.rss_mb * MB
    download = f"http://127.0.0.1:{origin}/rss"
    upload = f"http://127.0.0.1:{sink}/upload"
    runs: list[tuple[str, list[str], bool]] = [
        ("download (absolute URI)", [download], False),
        ("upload (chunked PUT)", [upload], True),
    ]
    if args.slow_mbps:
        runs.insert(1, (f"download, client {args.slow_mbps} MiB/s", ["--limit-rate", f"{args.slow_mbps}M", download], False))
        runs.append((f"upload, origin {args.slow_mbps} MiB/s", [f"{upload}?mbps={args.slow_mbps}"], True))
    ok_all = True
    # Unmeasured: the first read of the file fills the page cache, and is
    # slower than the proxy; measured, it made the first download look slow.
    check_transfer("direct download (warm-up)", run_curl(procs, args, [download]), size)
    with forward_proxy(procs, args, tmp, "rss", origin, None) as proxy:
        time.sleep(0.5)
        idle = rss_kb(proxy.proc.pid)
        print()
        print(f"RSS with {args.rss_mb} MiB bodies through the proxy (idle {idle / 1024:.1f} MiB)")
        print(f"{'run':<30}{'MiB/s':>9}{'max RSS MiB':>13}{'over idle':>11}{'cpu%':>6}{'wait%':>6}{'steal%':>7}")
        for label, curl_args, is_upload in runs:
            answer = os.path.join(tmp, "upload-answer")
            with RssSampler(proxy.proc.pid) as sampler, CpuMeter([proxy.proc.pid], args.proxy_cpu) as meter:
                if is_upload:
                    t = run_curl(
                        procs,
                        args,
                        ["-x", f"http://127.0.0.1:{proxy.port}", "-T", "-", "-H", "Expect:"] + curl_args,
                        upload=True,
                        feed=["head", "-c", str(size), "/dev/zero"],
                        output=answer,
                    )
                else:
                    t = run_curl(procs, args, ["-x", f"http://127.0.0.1:{proxy.port}"] + curl_args)
            if not is_upload:
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
            use = meter.use
            print(
                f"{label:<30}{t.speed / MB:>9.1f}{sampler.max_kb / 1024:>13.1f}{over:>11.1f}"
                f"{fmt_pct(use.cpu if use else None):>6}{fmt_pct(use.wait if use else None):>6}"
                f"{fmt_pct(use.steal if use else None):>7}  {verdict(ok)}",
                flush=True,
            )
        print(f"  target: max RSS within {TARGET_RSS_MB:g} MiB of idle")
    return ok_all


if __name__ == "__main__":
    sys.exit(main())
