#!/usr/bin/env python3
"""
Reverse-proxy benchmark: throughput and latency against nginx and a bare
Twisted relay, and memory with 1 GB bodies up and down.

Not a test: it prints figures and their ratios.  Run it with the project's
virtualenv so the proxy runs the working tree:

    /work/venv/bin/python bench/run_reverse.py [--duration 10] [--connections 50]
        [--repeat 3] [--big-mb 1024] [--skip-rss] [--skip-wrk] [--histograms-off]

It uses only the standard library plus nginx (nginx-light), wrk, curl,
openssl (or sha256sum) and taskset from the system, and Twisted for the
bare relay.  Everything listens on 127.0.0.1 and every process it starts is
killed (whole process group) when it exits, however it exits.

Four ways to the same origin (nginx serving /100b and /64k), each measured
with wrk:  direct;  twisted-proxy (a reverse listener, one route "/" to a
backend with that one server);  nginx as a reverse proxy (upstream
keepalive pool);  bench/bare_relay.py, a Twisted byte relay with no HTTP
work, the ceiling for any Twisted proxy on this machine.

Layout on a 2-core machine: wrk, curl and the origin nginx on core 0; the
proxy under test (twisted-proxy, nginx reverse proxy, bare relay: one at a
time is loaded) on core 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BODY_100B,
    BenchError,
    CpuMeter,
    MB,
    Nginx,
    Processes,
    Proxy,
    RssSampler,
    Transfer,
    WrkResult,
    add_common_args,
    best_of,
    check_http,
    check_tools,
    children,
    fmt_ms,
    fmt_pct,
    get_100b,
    install_signal_handlers,
    make_random,
    make_www,
    parse_sha256,
    print_config,
    rss_kb,
    run_curl,
    run_wrk,
    running_proxy,
    sha256_command,
    start_nginx,
    start_relay,
    start_sink,
    verdict,
    warm_up,
)

TARGET_RPS = 15000.0  # 100 B, absolute: set for a faster machine than a shared 2-core VM
TARGET_P99_MS = 6.0
TARGET_VS_NGINX = 0.2  # 100 B req/s, twisted-proxy / nginx reverse proxy
TARGET_64K_RATIO = 0.5  # 64 KiB MB/s, twisted-proxy / direct
TARGET_RSS_MB = 32.0  # MB (10^6 bytes) over idle

SIZE_64K = 64 * 1024
DECIMAL_MB = 1_000_000

PROXY_CONF = """\
[proxy]
access_log = "off"
{settings}
[[listener]]
name = "bench"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"
{routes}
  [[listener.route]]
  path = "/"
  backend = "origin"

[backend.origin]
servers = [{{ url = "http://127.0.0.1:{origin}" }}]
{backends}"""

# The RSS run also sends uploads to the sink.
SINK_ROUTE = """
  [[listener.route]]
  path = "/upload"
  backend = "sink"
"""
SINK_BACKEND = """
[backend.sink]
servers = [{{ url = "http://127.0.0.1:{sink}" }}]
"""

# nginx as a reverse proxy, for comparison: one worker, an upstream
# keepalive pool, HTTP/1.1 to the origin.  proxy_buffers 32 8k (256 KiB)
# holds a whole 64 KiB response in memory (the default, 8 x 4k/8k, would
# spill it to a temporary file).
NGINX_REVERSE = """\
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
        }}
    }}
"""


@contextmanager
def reverse_proxy(
    procs: Processes,
    args: argparse.Namespace,
    tmp: str,
    label: str,
    origin: int,
    sink: int | None = None,
    settings: str = "",
) -> Iterator[Proxy]:
    def make_config(port: int) -> str:
        return PROXY_CONF.format(
            settings=settings,
            port=port,
            origin=origin,
            routes=SINK_ROUTE if sink is not None else "",
            backends=SINK_BACKEND.format(sink=sink) if sink is not None else "",
        )

    def check(proxy: Proxy) -> None:
        check_http(
            proxy.port,
            get_100b(proxy.port),
            BODY_100B,
            f"proxy check: GET /100b through twisted-proxy on 127.0.0.1:{proxy.port}",
            proxy.logs,
        )

    with running_proxy(procs, args, tmp, label, make_config, check) as proxy:
        yield proxy


# ---------------------------------------------------------------------------
# wrk


@dataclass
class Target:
    label: str
    port: int
    pids: list[int]  # the processes that serve it (nginx: the workers)
    cpu: int | None  # the core they are pinned to


def bench_path(args: argparse.Namespace, targets: list[Target], path: str) -> list[WrkResult]:
    """
    --repeat rounds over every target, interleaved (so background load
    spreads over all of them), after one warm-up per target; the best round
    of each is kept, with the errors of all rounds.
    """
    runs: dict[str, list[WrkResult]] = {t.label: [] for t in targets}
    for t in targets:
        warm_up(args, f"http://127.0.0.1:{t.port}{path}")
    for _ in range(max(1, args.repeat)):
        for t in targets:
            with CpuMeter(t.pids, t.cpu) as meter:
                result = run_wrk(args, t.label, f"http://127.0.0.1:{t.port}{path}")
            result.cpu = meter.use
            runs[t.label].append(result)
    return [best_of(runs[t.label]) for t in targets]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_wrk_table(args: argparse.Namespace, title: str, results: dict[str, WrkResult], order: list[str]) -> None:
    direct = results.get(DIRECT)
    nginx = results.get(NGINX)
    bare = results.get(BARE)
    print()
    print(
        f"{title}, wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
        f"best of {max(1, args.repeat)} (errors: all runs)"
    )
    header = (
        f"{'run':<30}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'MiB/s':>9}{'requests':>10}"
        f"{'non-2xx':>8}{'sock err':>9}{'x direct':>9}{'x nginx':>8}{'x bare':>8}"
        f"{'cpu%':>6}{'wait%':>6}{'steal%':>7}"
    )
    print(header)
    print("-" * len(header))
    for label in order:
        r = results[label]
        print(
            f"{r.label:<30}{r.rps:>9.0f}{fmt_ms(r.p50_ms):>8}{fmt_ms(r.p99_ms):>8}"
            f"{r.transfer_bps / MB:>9.1f}{r.requests:>10}{r.non_2xx:>8}{r.socket_errors:>9}"
            f"{ratio(r.rps, direct.rps if direct else 0):>9}{ratio(r.rps, nginx.rps if nginx else 0):>8}"
            f"{ratio(r.rps, bare.rps if bare else 0):>8}"
            f"{fmt_pct(r.cpu.cpu if r.cpu else None):>6}{fmt_pct(r.cpu.wait if r.cpu else None):>6}"
            f"{fmt_pct(r.cpu.steal if r.cpu else None):>7}"
        )
    for label in order:
        r = results[label]
        if r.socket_errors:
            print(f"  {r.label}: socket errors {r.socket_detail}")
    print(
        "  cpu%, wait%: time the server wrk talked to (origin nginx worker for direct) spent running,"
        " and runnable but waiting for its core; steal%: of its core, taken by the hypervisor"
    )
    sys.stdout.flush()


DIRECT = "direct (nginx origin)"
PROXY = "twisted-proxy reverse"
NGINX = "nginx reverse (keepalive 64)"
BARE = "bare Twisted relay"
NO_HISTOGRAMS = "twisted-proxy, no histograms"
#: twisted-proxy (histograms on, the default) / the same without them
TARGET_HISTOGRAMS = 0.95


# ---------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--repeat", type=int, default=3,
                   help="wrk rounds per target and path; the best is reported, errors of all rounds counted (3)")
    p.add_argument("--big-mb", type=int, default=1024,
                   help="size in MiB of the pseudo-random body downloaded and uploaded in the RSS check (1024)")
    p.add_argument("--seed", type=int, default=1, help="seed of the pseudo-random body (1)")
    p.add_argument("--skip-wrk", action="store_true", help="skip the wrk runs (only the RSS check)")
    p.add_argument("--skip-nginx-proxy", action="store_true", help="do not measure nginx as a reverse proxy")
    p.add_argument("--skip-bare", action="store_true", help="do not measure the bare Twisted relay")
    p.add_argument(
        "--histograms-off",
        action="store_true",
        help="also measure twisted-proxy with latency_histograms = false (their cost, same run)",
    )
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    tools = ("wrk", "curl") if args.skip_rss else ("wrk", "curl", sha256_command()[0])
    problem = check_tools(args, tools)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    install_signal_handlers()

    tmp = tempfile.mkdtemp(prefix="twisted-proxy-bench-")
    procs = Processes()
    failures: list[str] = []
    errors: list[str] = []
    try:
        print(
            f"cpus: {os.cpu_count()}; wrk/curl on {args.wrk_cpu}, origin nginx (and upload sink) on "
            f"{args.origin_cpu}, proxies (twisted-proxy, nginx reverse, bare relay) on {args.proxy_cpu}; "
            f"temp dir {tmp}",
            flush=True,
        )
        www = make_www(tmp)
        make_random(os.path.join(www, "64k"), SIZE_64K, args.seed)
        origin = start_nginx(procs, tmp, args.origin_cpu, "origin")
        print(f"origin: nginx on 127.0.0.1:{origin.port} (/100b, /64k)", flush=True)

        if not args.skip_wrk:
            failures += bench_wrk_all(procs, args, tmp, origin, errors)

        if not args.skip_rss:
            if not bench_rss(procs, args, tmp, www, origin.port):
                failures.append("RSS")

        print()
        if errors:
            print("ERRORS: " + "; ".join(errors))
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


def bench_wrk_all(procs: Processes, args: argparse.Namespace, tmp: str, origin: Nginx, errors: list[str]) -> list[str]:
    failures: list[str] = []
    targets = [Target(DIRECT, origin.port, children(origin.proc.pid), args.origin_cpu)]
    with ExitStack() as stack, reverse_proxy(procs, args, tmp, "wrk", origin.port) as proxy:
        print(f"twisted-proxy on 127.0.0.1:{proxy.port}", flush=True)
        print_config(f"twisted-proxy config ({proxy.conf})", proxy.config)
        targets.append(Target(PROXY, proxy.port, [proxy.proc.pid], args.proxy_cpu))
        if not args.skip_nginx_proxy:
            nginx = start_nginx(
                procs, tmp, args.proxy_cpu, "reverse",
                lambda port: NGINX_REVERSE.format(port=port, origin=origin.port),
            )
            check_http(nginx.port, get_100b(nginx.port), BODY_100B, "nginx reverse proxy check: GET /100b", nginx.logs)
            print(f"nginx reverse proxy on 127.0.0.1:{nginx.port}", flush=True)
            print_config(
                f"nginx reverse proxy, inside http {{}} ({nginx.conf})",
                NGINX_REVERSE.format(port=nginx.port, origin=origin.port),
            )
            targets.append(Target(NGINX, nginx.port, children(nginx.proc.pid), args.proxy_cpu))
        if not args.skip_bare:
            relay, relay_pid = start_relay(procs, args, tmp, origin.port)
            print(f"bare Twisted relay on 127.0.0.1:{relay}", flush=True)
            targets.append(Target(BARE, relay, [relay_pid], args.proxy_cpu))
        if args.histograms_off:
            nohist = stack.enter_context(
                reverse_proxy(procs, args, tmp, "wrk-nohist", origin.port, settings="latency_histograms = false\n")
            )
            print(f"twisted-proxy with latency_histograms = false on 127.0.0.1:{nohist.port}", flush=True)
            targets.append(Target(NO_HISTOGRAMS, nohist.port, [nohist.proc.pid], args.proxy_cpu))

        order = [t.label for t in targets]
        small = {r.label: r for r in bench_path(args, targets, "/100b")}
        print_wrk_table(args, "GET /100b (100 B body)", small, order)
        large = {r.label: r for r in bench_path(args, targets, "/64k")}
        print_wrk_table(args, "GET /64k (64 KiB body)", large, order)
        alive = proxy.proc.poll() is None

    print()
    print("targets (twisted-proxy reverse):")
    p = small[PROXY]
    ok = p.rps >= TARGET_RPS and p.p99_ms is not None and p.p99_ms <= TARGET_P99_MS
    print(
        f"  100 B: {verdict(ok)} {p.rps:.0f} req/s, p99 {fmt_ms(p.p99_ms)} ms "
        f"(target >= {TARGET_RPS:.0f} req/s and p99 <= {TARGET_P99_MS:g} ms)"
    )
    note = "    the absolute target assumes a faster machine than this one;"
    if BARE in small:
        b = small[BARE]
        note += (
            f" here a bare Twisted relay (no HTTP work) does {b.rps:.0f} req/s, p99 {fmt_ms(b.p99_ms)} ms,"
            f" and twisted-proxy is {ratio(p.rps, b.rps)}x of it"
        )
    else:
        note += " run without --skip-bare to see the bare Twisted relay's figure"
    print(note)
    if not ok:
        failures.append("100 B req/s and p99")
    if NGINX in small:
        n = small[NGINX]
        ok = n.rps > 0 and p.rps / n.rps >= TARGET_VS_NGINX
        print(
            f"  100 B vs nginx reverse proxy: {verdict(ok)} {ratio(p.rps, n.rps)}x "
            f"({p.rps:.0f} / {n.rps:.0f} req/s; target >= {TARGET_VS_NGINX:g}x)"
        )
        if not ok:
            failures.append("100 B vs nginx")
    if NO_HISTOGRAMS in small:
        h = small[NO_HISTOGRAMS]
        ok = h.rps > 0 and p.rps / h.rps >= TARGET_HISTOGRAMS
        print(
            f"  100 B with latency histograms / without: {verdict(ok)} {ratio(p.rps, h.rps)}x "
            f"({p.rps:.0f} / {h.rps:.0f} req/s; target >= {TARGET_HISTOGRAMS:g}x)"
        )
        if not ok:
            failures.append("latency histograms' cost")
    d, q = large[DIRECT], large[PROXY]
    ok = d.transfer_bps > 0 and q.transfer_bps / d.transfer_bps >= TARGET_64K_RATIO
    print(
        f"  64 KiB: {verdict(ok)} {q.transfer_bps / MB:.1f} MiB/s = {ratio(q.transfer_bps, d.transfer_bps)} "
        f"of direct {d.transfer_bps / MB:.1f} MiB/s (target >= {TARGET_64K_RATIO:.0%}; wrk Transfer/sec)"
    )
    if not ok:
        failures.append("64 KiB MB/s")
    for results in (small, large):
        for r in results.values():
            if r.non_2xx or r.socket_errors:
                errors.append(
                    f"{r.label} {'/100b' if results is small else '/64k'}: {r.non_2xx} non-2xx, "
                    f"{r.socket_errors} socket errors ({r.socket_detail or '-'})"
                )
                if r.label == PROXY:
                    failures.append(f"errors through twisted-proxy ({'/100b' if results is small else '/64k'})")
    if not alive:
        errors.append("twisted-proxy exited during the wrk runs")
        failures.append("proxy exited")
    for e in errors:
        print(f"  ERROR: {e}")
    sys.stdout.flush()
    return failures


# ---------------------------------------------------------------------------
# RSS with 1 GB bodies, sha256 checked on both ends


def bench_rss(procs: Processes, args: argparse.Namespace, tmp: str, www: str, origin: int) -> bool:
    size = args.big_mb * MB
    big = os.path.join(www, "big")
    print()
    print(f"writing {args.big_mb} MiB of pseudo-random bytes (seed {args.seed}) to {big} ...", flush=True)
    started = time.monotonic()
    digest = make_random(big, size, args.seed)
    print(f"  sha256 {digest} ({time.monotonic() - started:.1f} s)", flush=True)
    hasher = sha256_command()
    sink = start_sink(procs, tmp, args.origin_cpu)

    ok_all = True
    growth = 0.0
    with reverse_proxy(procs, args, tmp, "rss", origin, sink) as proxy:
        print(f"twisted-proxy on 127.0.0.1:{proxy.port}, upload sink on 127.0.0.1:{sink}")
        print_config(f"twisted-proxy config ({proxy.conf})", proxy.config)
        base = f"http://127.0.0.1:{proxy.port}"
        upload = f"{base}/upload?sha256=1"
        runs: list[tuple[str, list[str], dict[str, object]]] = [
            ("download", [f"{base}/big"], {}),
            ("upload (Content-Length PUT)", ["-T", big, upload], {"upload": True}),
            ("upload (chunked PUT)", ["-T", "-", upload], {"upload": True, "feed": ["cat", big]}),
        ]
        if args.slow_mbps:
            runs.insert(1, (f"download, client {args.slow_mbps} MiB/s",
                            ["--limit-rate", f"{args.slow_mbps}M", f"{base}/big"], {}))
            runs.append((f"upload, origin {args.slow_mbps} MiB/s",
                         ["-T", big, f"{upload}&mbps={args.slow_mbps}"], {"upload": True}))

        # Unmeasured: brings the file into the page cache and checks the pipeline.
        direct = fetch(procs, args, [f"http://127.0.0.1:{origin}/big"], {}, hasher, tmp)
        time.sleep(0.5)
        idle = rss_kb(proxy.proc.pid) * 1024 / DECIMAL_MB
        print()
        print(
            f"RSS of twisted-proxy with {args.big_mb} MiB pseudo-random bodies through the reverse proxy "
            f"(idle {idle:.1f} MB; MB = 10^6 bytes)"
        )
        header = (
            f"{'run':<30}{'MiB/s':>9}{'seconds':>9}{'max RSS MB':>12}{'over idle':>11}"
            f"{'cpu%':>6}{'wait%':>6}{'steal%':>7}  sha256"
        )
        print(header)
        print("-" * (len(header) + 6))
        check = "ok" if direct.piped == digest else f"MISMATCH {direct.piped or '(none)'}"
        print(
            f"{'direct download (no proxy)':<30}{direct.speed / MB:>9.1f}{direct.seconds:>9.2f}{'-':>12}{'-':>11}"
            f"{'-':>6}{'-':>6}{'-':>7}  {check}"
        )
        if direct.piped != digest or direct.size != size:
            raise BenchError(f"direct download: {direct.size} bytes, sha256 {check}: the bench itself is broken")
        for label, curl_args, kw in runs:
            with RssSampler(proxy.proc.pid) as sampler, CpuMeter([proxy.proc.pid], args.proxy_cpu) as meter:
                t = fetch(procs, args, curl_args, kw, hasher, tmp)
            use = meter.use
            over = sampler.max_kb * 1024 / DECIMAL_MB - idle
            growth = max(growth, over)
            same = t.piped == digest and t.size == size and t.code.startswith("2")
            if same:
                check = "ok"
            else:
                check = f"MISMATCH: HTTP {t.code}, {t.size} bytes, sha256 {t.piped or '(none)'}"
                ok_all = False
            print(
                f"{label:<30}{t.speed / MB:>9.1f}{t.seconds:>9.2f}{sampler.max_kb * 1024 / DECIMAL_MB:>12.1f}"
                f"{over:>11.1f}{fmt_pct(use.cpu if use else None):>6}{fmt_pct(use.wait if use else None):>6}"
                f"{fmt_pct(use.steal if use else None):>7}  {check}",
                flush=True,
            )
        alive = proxy.proc.poll() is None
    print("  cpu%, wait%, steal%: of twisted-proxy during the transfer, as in the wrk tables")
    ok = growth <= TARGET_RSS_MB
    print(f"RSS growth {growth:.1f} MB (target ≤ {TARGET_RSS_MB:g} MB): {verdict(ok)}")
    if not alive:
        print("  ERROR: twisted-proxy exited during the transfers")
    sys.stdout.flush()
    return ok and ok_all and alive


def fetch(
    procs: Processes,
    args: argparse.Namespace,
    curl_args: list[str],
    kw: dict[str, object],
    hasher: list[str],
    tmp: str,
) -> Transfer:
    """
    A download piped to the hasher (piped = its digest), or an upload whose
    answer from the sink, "received N sha256 HEX", gives size and digest.
    """
    if kw.get("upload"):
        answer = os.path.join(tmp, "upload-answer")
        if os.path.exists(answer):
            os.remove(answer)
        t = run_curl(procs, args, ["-H", "Expect:"] + curl_args, output=answer, timeout=900, **kw)  # type: ignore[arg-type]
        try:
            with open(answer, "rb") as f:
                said = f.read(300).decode("latin-1")
        except OSError:
            said = ""
        words = said.split()
        t.size = int(words[1]) if len(words) >= 2 and words[0] == "received" and words[1].isdigit() else -1
        t.piped = parse_sha256(said)
        return t
    t = run_curl(procs, args, curl_args, pipe_to=hasher, timeout=900)
    t.piped = parse_sha256(t.piped)
    return t


if __name__ == "__main__":
    sys.exit(main())
