#!/usr/bin/env python3
"""
Filter-chain benchmark (issue 5): what a gateway chain costs.

A reverse listener in front of nginx, measured with wrk (-t1 -c50, 100-byte
body) twice in the same run, rounds interleaved, best round reported:

  * no filters;
  * the chain acl (client CIDRs + methods) + rate_limit (in memory, a limit
    high enough never to refuse) + jwt (HS256, every request carrying a
    valid bearer token; verified tokens are cached, as in production).

Target: the chain costs at most 25% of the throughput. Not a test: it prints
figures. Run with the project's virtualenv:

    /work/venv/bin/python bench/run_filters.py [--duration 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BenchError,
    Processes,
    add_common_args,
    best_of,
    check_http,
    check_tools,
    install_signal_handlers,
    make_www,
    running_proxy,
    run_wrk,
    start_nginx,
    BODY_100B,
)

SECRET = "bench-secret-with-at-least-32-bytes!!"

CONFIG = """
[proxy]
access_log = "off"

[[listener]]
name = "edge"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"
filters = [{filters}]
  [[listener.route]]
  path = "/"
  backend = "origin"

[backend.origin]
servers = [{{ url = "http://127.0.0.1:{origin}" }}]

[filter.acl]
type = "acl"
allow_clients = ["127.0.0.0/8"]
methods = ["GET", "HEAD"]

[filter.limit]
type = "rate_limit"
rate = 100000000
per = 1
key = "client_ip"

[filter.auth]
type = "jwt"
algorithms = ["HS256"]
secret = "{secret}"
"""

LUA = """
wrk.method = "GET"
wrk.path = "/100b"
wrk.headers["Authorization"] = "Bearer {token}"
"""


def make_token() -> str:
    import jwt

    return jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported (3)")
    args = p.parse_args()
    problem = check_tools(args, ("wrk",))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    install_signal_handlers()
    tmp = tempfile.mkdtemp(prefix="twisted-proxy-bench-")
    procs = Processes()
    token = make_token()
    lua = os.path.join(tmp, "bearer.lua")
    with open(lua, "w") as f:
        f.write(LUA.format(token=token))
    request = (
        b"GET /100b HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    try:
        make_www(tmp)
        origin = start_nginx(procs, tmp, args.origin_cpu, "origin")
        results: dict = {"none": [], "chain": []}
        for label, filters in (("none", ""), ("chain", '"acl", "limit", "auth"')):
            make = lambda port, filters=filters: CONFIG.format(  # noqa: E731
                port=port, origin=origin.port, filters=filters, secret=SECRET
            )
            check = lambda proxy: check_http(  # noqa: E731
                proxy.port, request, BODY_100B, f"{label}: GET /100b", proxy.logs
            )
            with running_proxy(procs, args, tmp, label, make, check) as proxy:
                url = f"http://127.0.0.1:{proxy.port}/100b"
                if args.warmup:
                    run_wrk(args, "warm-up", url, lua, duration=args.warmup)
                for _ in range(args.repeat):
                    results[label].append(run_wrk(args, label, url, lua))
        none = best_of(results["none"])
        chain = best_of(results["chain"])
        print(f"\nreverse proxy, GET /100b, wrk -t{args.threads} -c{args.connections} "
              f"-d{args.duration:g}s, best of {args.repeat}")
        print(f"{'run':40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'errors':>7}")
        for name, r in (("no filters", none), ("acl + rate_limit + jwt", chain)):
            print(f"{name:40} {r.rps:8.0f} {r.p50_ms or 0:8.2f} {r.p99_ms or 0:8.2f} "
                  f"{r.non_2xx:8d} {r.socket_errors:7d}")
        cost = 1 - chain.rps / none.rps if none.rps else 0.0
        ok = cost <= 0.25 and chain.non_2xx == 0
        print(f"\nchain cost: {cost * 100:.1f}% of throughput (target <= 25%): "
              f"{'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        if not args.keep_temp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
