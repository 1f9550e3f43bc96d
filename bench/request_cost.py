#!/usr/bin/env python3
"""
The CPU cost of one request through the engine, without sockets: a forward
or reverse listener's front connection and one upstream connection on
Twisted's StringTransports, fed a request and an nginx-like response in a
loop. Deterministic when counted with callgrind, so a change of a few
percent shows where wrk on this machine (±10 % per round) cannot.

    python bench/request_cost.py --base /path/to/older/checkout          # callgrind instructions/request
    python bench/request_cost.py --base /path/to/older/checkout --time   # wall-clock µs/request (noisy)

Cases: forward and reverse (100 B, 64 KiB in 16 KiB reads) and cache hits
(a reverse listener whose cache holds the 100 B answer in memory). The loop
repeats the same bytes, so heads are replayed from the parser's memo;
--unique gives every request and response a head of its own (a path, an
ETag) for the cost when nothing repeats.

Each tree is imported from its own folder (PYTHONPATH first). Needs
valgrind for the default mode (Debian: valgrind); the project's virtualenv
for Twisted. Prints instructions (or µs) per request for base and new and
their ratio, per mode (forward, reverse) and body (100 B, 64 KiB in 16 KiB
reads). Exit 0; 2 if a step could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOOP = r'''
import gc, ipaddress, os, sys, time
root, mode, body, n, timed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
sys.path.insert(0, root)
try:
    from twisted_proxy.engine import FrontFactory, ListenerContext
except ImportError:  # before the engine package
    from twisted_proxy.exchange import FrontFactory, ListenerContext
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted_proxy.accesslog import NullAccessLog
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.model import BackendConfig, ProxySettings, ServerConfig
from twisted_proxy.reverse import ReverseRouter, Route
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.pool import Pool

clock = MemoryReactorClock()
pool = Pool(clock)
origin = None
hit = mode == "hit"
if hit:
    # a reverse listener whose cache holds the answer: after the first
    # request (a miss, stored), every request is a hit from memory
    import tempfile
    from twisted_proxy.cache.origin import CacheOrigin
    from twisted_proxy.cache.shared import SharedCache
    from twisted_proxy.engine.upstream import UpstreamOrigin
    from twisted_proxy.model import CacheConfig
    cache = SharedCache(CacheConfig(name="edge", path=tempfile.mkdtemp()), clock)
    cache.open()
    origin = CacheOrigin(UpstreamOrigin(), cache, clock)
    mode = "reverse"
if mode == "reverse":
    backend = Backend(BackendConfig(name="o", servers=(ServerConfig(
        url="http://127.0.0.1:5001", scheme="http", host="127.0.0.1", port=5001),)), clock)
    router = ReverseRouter([Route(backend)])
    request = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
else:
    router = ForwardRouter()
    request = b"GET http://127.0.0.1:5001/x HTTP/1.1\r\nHost: 127.0.0.1:5001\r\n\r\n"
ctx = ListenerContext("bench", clock, ProxySettings(pool_max_idle=128), pool, NullAccessLog(clock),
                      router, [], [ipaddress.ip_network("127.0.0.0/8")], kind=mode, origin=origin)
front = FrontFactory(ctx).buildProtocol(None)
ft = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
front.makeConnection(ft)
response = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 07:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            b"Last-Modified: Wed, 02 Dec 2026 06:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"abc-64\"\r\nAccept-Ranges: bytes\r\n%s\r\n"
            % (body, b"Cache-Control: max-age=3600\r\n" if hit else b"")) + b"x" * body
reads = [response[i:i + 16384] for i in range(0, len(response), 16384)]
front.dataReceived(request)
host, port, factory, timeout, bind = clock.tcpClients[0]
up = factory.buildProtocol(None)
ut = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 45000))
up.makeConnection(ut)
for data in reads:
    up.dataReceived(data)
assert ft.value().count(b" 200 OK") == 1, ft.value()[:200]
if hit:
    # the store writes its file in later reactor turns
    for _ in range(100):
        clock.advance(0.01)
    ft.clear()
    front.dataReceived(request)
    clock.advance(0)
    assert b"; hit" in ft.value(), ft.value()[:400]
    reads = []
# from now on writes are dropped: StringTransport's growing buffer would
# count reallocations that depend on the heap's layout, not on the proxy
for transport in (ft, ut):
    transport.write = lambda data: None
    transport.writeSequence = lambda seq: None
gc.freeze()

def run(count):
    for _ in range(count):
        front.dataReceived(request)
        for data in reads:
            up.dataReceived(data)
        ft.clear()
        ut.clear()

if os.environ.get("REQUEST_COST_UNIQUE") == "1" and not hit:
    # every request and response head new (a path and an ETag of their
    # own, the same sizes): nothing for a memo of heads to replay
    import itertools
    numbers = itertools.count()

    def run(count):
        for _ in range(count):
            i = next(numbers)
            front.dataReceived(request.replace(b"/x ", b"/x%d " % i, 1))
            up.dataReceived(reads[0].replace(b'"abc-64"', b'"%06d"' % (i % 1000000), 1))
            for data in reads[1:]:
                up.dataReceived(data)
            ft.clear()
            ut.clear()

if timed:
    best = 1e9
    for _ in range(7):
        t = time.perf_counter()
        run(n)
        best = min(best, (time.perf_counter() - t) / n)
    print("us", best * 1e6)
else:
    run(n)
'''


#: (mode, body size): forward and reverse through one upstream connection,
#: and cache hits (a reverse listener with a cache holding the answer)
CASES = (("forward", 100), ("forward", 65536), ("reverse", 100), ("reverse", 65536), ("hit", 100))


def instructions(python: str, script: str, root: str, mode: str, body: int, n: int) -> int:
    # a fixed hash seed: dict and set layouts (and so the counts) repeat
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         python, script, root, mode, str(body), str(n), "0"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind gave no count for {root} {mode}:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_request(python: str, script: str, root: str, mode: str, body: int, small: int, large: int) -> float:
    # the difference of two runs removes start-up and imports
    low = instructions(python, script, root, mode, body, small)
    high = instructions(python, script, root, mode, body, large)
    return (high - low) / (large - small)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="checkout to compare against")
    p.add_argument("--new", default=ROOT, help="checkout under test (default: this one)")
    p.add_argument("--time", action="store_true", help="wall-clock µs/request instead of callgrind")
    p.add_argument("--requests", type=int, default=1000, help="requests counted per run (1000)")
    p.add_argument("--cases", default="", help="only these modes, comma-separated (forward,reverse,hit)")
    p.add_argument("--unique", action="store_true",
                   help="every request and response head new (a path and an ETag per request): the"
                        " cost when nothing repeats (no hit case)")
    args = p.parse_args()
    if args.unique:
        os.environ["REQUEST_COST_UNIQUE"] = "1"
    python = sys.executable
    if not args.time and shutil.which("valgrind") is None:
        print("valgrind not found (Debian: apt-get install valgrind), or use --time", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "loop.py")
        with open(script, "w") as f:
            f.write(LOOP)
        unit = "µs/request" if args.time else "instructions/request"
        print(f"{'case':<18} {'base':>14} {'new':>14}  new/base   ({unit})")
        for mode, body in CASES:
            if args.cases and mode not in args.cases.split(","):
                continue
            if args.unique and mode == "hit":
                continue
            if True:
                figures = []
                for root in (args.base, args.new):
                    if args.time:
                        out = subprocess.run(
                            ["taskset", "-c", "1", python, script, root, mode, str(body),
                             str(args.requests * 10), "1"] if shutil.which("taskset") else
                            [python, script, root, mode, str(body), str(args.requests * 10), "1"],
                            capture_output=True, text=True, timeout=900,
                        )
                        found = re.search(r"us ([0-9.]+)", out.stdout)
                        if found is None:
                            print(out.stderr[-2000:], file=sys.stderr)
                            return 2
                        figures.append(float(found.group(1)))
                    else:
                        try:
                            figures.append(per_request(python, script, root, mode, body, 200,
                                                       200 + args.requests))
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            print(e, file=sys.stderr)
                            return 2
                label = f"{mode} {'100 B' if body == 100 else '64 KiB'}"
                if mode == "hit":
                    label = f"reverse hit {'100 B' if body == 100 else '64 KiB'}"
                print(f"{label:<18} {figures[0]:>14,.1f} {figures[1]:>14,.1f}  {figures[1] / figures[0]:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
