"""
Tests for L{twisted_proxy.workers} and L{twisted_proxy.worker}: the
channel, the summed status, a worker's share of the configuration, the
tree's rate limit; and a real tree of processes (spawned with twistd).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_proxy.config import ConfigError, parse_config
from twisted_proxy.config.proxy import auto_workers
from twisted_proxy.filters.events import Events
from twisted_proxy.filters.rate_limit import RateLimitFilter, TreeRateLimitFilter, parse
from twisted_proxy.filters import ErrorList, RequestInfo
from twisted_proxy.workers import Channel, ChannelClosed, merge_status, worker_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LISTENER = """
[[listener]]
name = "out"
kind = "forward"
endpoint = "tcp:3128:interface=127.0.0.1"
"""


def pair(clock: Clock, a_handlers: Dict[str, Any], b_handlers: Dict[str, Any]) -> Any:
    """
    Two channels wired to each other, as a supervisor and a worker are.
    """
    a: Channel = Channel(lambda data: b.data_received(data), a_handlers, clock)
    b: Channel = Channel(lambda data: a.data_received(data), b_handlers, clock)
    return a, b


class ChannelTests(SynchronousTestCase):
    def test_send_and_ask(self) -> None:
        """
        A sent message reaches its handler; an asked one is answered with
        the handler's result, or its Deferred's.
        """
        clock = Clock()
        seen: List[dict] = []
        later: defer.Deferred = defer.Deferred()
        a, b = pair(clock, {}, {"note": seen.append, "add": lambda m: m["x"] + 1, "later": lambda m: later})
        a.send({"op": "note", "n": 1})
        self.assertEqual(seen, [{"op": "note", "n": 1}])
        self.assertEqual(self.successResultOf(a.ask({"op": "add", "x": 41})), 42)
        d = a.ask({"op": "later"})
        self.assertNoResult(d)
        later.callback("done")
        self.assertEqual(self.successResultOf(d), "done")

    def test_errors(self) -> None:
        """
        A handler that raises, or an unknown operation, fails the ask
        (never the channel).
        """
        clock = Clock()

        def boom(message: dict) -> None:
            raise ValueError("boom")

        a, b = pair(clock, {}, {"boom": boom})
        self.failureResultOf(a.ask({"op": "boom"}), RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        failure = self.failureResultOf(a.ask({"op": "nope"}), RuntimeError)
        self.assertIn("unknown operation", failure.getErrorMessage())

    def test_timeout_and_loss(self) -> None:
        """
        An ask unanswered after its timeout fails with TimeoutError (a late
        answer is ignored); when the other side is lost, every pending ask
        fails and new ones fail at once.
        """
        clock = Clock()
        held: List[Any] = []
        a: Channel = Channel(held.append, {}, clock)
        d = a.ask({"op": "x"}, timeout=0.5)
        clock.advance(0.5)
        self.failureResultOf(d, defer.TimeoutError)
        a.data_received(b'{"re": 1, "result": 3}\n')
        pending = a.ask({"op": "y"})
        a.lost()
        self.failureResultOf(pending, ChannelClosed)
        self.failureResultOf(a.ask({"op": "z"}), ChannelClosed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lines_split_anywhere(self) -> None:
        """
        Lines arrive in pieces of any size; a line that is not JSON is
        logged and skipped.
        """
        clock = Clock()
        seen: List[dict] = []
        a: Channel = Channel(lambda data: None, {"note": seen.append}, clock)
        data = b'{"op": "note", "n": 1}\nnot json\n{"op": "note", "n": 2}\n'
        for i in range(len(data)):
            a.data_received(data[i : i + 1])
        self.assertEqual([m["n"] for m in seen], [1, 2])


def worker_status(requests: int, up: bool = True, hits: int = 0) -> dict:
    return {
        "generation": 2,
        "listeners": [
            {
                "name": "edge",
                "kind": "reverse",
                "connections": 2,
                "requests": requests,
                "by_status": {"200": requests},
                "denied": 1,
                "errors": 0,
                "bytes_in": 10,
                "bytes_out": 100,
            }
        ],
        "backends": {"app": [{"server": "a", "up": up, "ejected": False, "in_flight": 1, "weight": 1, "backup": False}]},
        "caches": {"c": {"entries": 3, "hits": hits, "misses": 1, "stale": 0, "revalidated": 0, "hit_ratio": 0.0}},
        "access_log_dropped": 1,
    }


class MergeStatusTests(SynchronousTestCase):
    def test_sums(self) -> None:
        """
        Counters and gauges are the sum of the workers'; a server is up
        only when every worker sees it up; a cache's hit ratio is that of
        the sums.
        """
        merged = merge_status([worker_status(5, hits=3), worker_status(7, up=False, hits=1)], [{"index": 0}], 3, "t")
        [edge] = merged["listeners"]
        self.assertEqual(
            (edge["requests"], edge["connections"], edge["by_status"], edge["denied"], edge["bytes_out"]),
            (12, 4, {"200": 12}, 2, 200),
        )
        [server] = merged["backends"]["app"]
        self.assertEqual((server["up"], server["in_flight"]), (False, 2))
        cache = merged["caches"]["c"]
        self.assertEqual((cache["entries"], cache["hits"], cache["misses"]), (6, 4, 2))
        self.assertEqual(cache["hit_ratio"], round(4 / 6, 4))
        self.assertEqual(merged["access_log_dropped"], 2)
        self.assertEqual((merged["generation"], merged["workers"]), (3, [{"index": 0}]))

    def test_no_reports(self) -> None:
        """
        Before any worker reported, the status is empty, not an error.
        """
        merged = merge_status([], [], 1, "t")
        self.assertEqual((merged["listeners"], merged["backends"], merged["caches"]), ([], {}, {}))


class ConfigTests(SynchronousTestCase):
    def folder(self) -> str:
        d = tempfile.mkdtemp(prefix="twisted-proxy-test-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_latency_histograms_key(self) -> None:
        """
        C{latency_histograms} is a boolean, true by default; a listener's
        stats follow it.
        """
        from twisted.internet.testing import MemoryReactorClock

        from twisted_proxy.service import make_service

        base = self.folder()
        self.assertTrue(parse_config(LISTENER, "p.toml", base).proxy.latency_histograms)
        config = parse_config("[proxy]\nlatency_histograms = false\n" + LISTENER, "p.toml", base)
        self.assertFalse(config.proxy.latency_histograms)
        top = make_service(config, MemoryReactorClock())
        self.assertFalse(top.listener_stats[0][0].timing)
        with self.assertRaises(ConfigError) as caught:
            parse_config('[proxy]\nlatency_histograms = "no"\n' + LISTENER, "p.toml", base)
        self.assertEqual(len(caught.exception.lines()), 1)
        self.assertIn("proxy.latency_histograms", caught.exception.lines()[0])

    def test_workers_key(self) -> None:
        """
        C{workers} is a whole number of at least 1 (default 1), or C{"auto"}:
        the CPUs this process may run on.
        """
        base = self.folder()
        self.assertEqual(parse_config(LISTENER, "p.toml", base).proxy.workers, 1)
        self.assertEqual(parse_config("[proxy]\nworkers = 3\n" + LISTENER, "p.toml", base).proxy.workers, 3)
        auto = parse_config('[proxy]\nworkers = "auto"\n' + LISTENER, "p.toml", base).proxy.workers
        self.assertEqual(auto, auto_workers())
        self.assertEqual(auto_workers(), len(os.sched_getaffinity(0)))
        for value, message in (
            ("0", "must be an integer >= 1, not 0"),
            ('"many"', "must be an integer >= 1 or \"auto\", not 'many'"),
            ("1.5", "must be an integer, not a float"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse_config(f"[proxy]\nworkers = {value}\n" + LISTENER, "p.toml", base)
            self.assertEqual(caught.exception.lines(), [f"p.toml: proxy.workers: {message}"])

    def test_worker_share(self) -> None:
        """
        A worker runs without the admin listener, each cache in a
        sub-folder of its own with C{max_size} and C{memory} divided, and
        the spool likewise.
        """
        base = self.folder()
        config = parse_config(
            '[proxy]\nworkers = 2\nspool_max = "4GiB"\n[admin]\nendpoint = "tcp:9901:interface=127.0.0.1"\n'
            '[cache.edge]\npath = "c"\nmax_size = "10GiB"\nmemory = "64MiB"\n' + LISTENER,
            "p.toml",
            base,
        )
        share = worker_config(config, 1, 2)
        self.assertIsNone(share.admin)
        cache = share.caches["edge"]
        self.assertEqual(cache.path, os.path.join(base, "c", "worker-1"))
        self.assertEqual((cache.max_size, cache.memory), (5 * 1024**3, 32 * 1024**2))
        self.assertEqual(share.proxy.spool_path, os.path.join(config.proxy.spool_path, "worker-1"))
        self.assertEqual(share.proxy.spool_max, 2 * 1024**3)
        self.assertEqual(share.listeners, config.listeners)


def spec(rate: float = 1, per: float = 60, burst: int = 2, fail_open: bool = True) -> Any:
    errors = ErrorList()
    result = parse(
        "tree", {"type": "rate_limit", "rate": rate, "per": per, "burst": burst, "fail_open": fail_open}, errors, "/"
    )
    assert not errors.items, errors.items
    return result


def info(client_ip: str = "192.0.2.1") -> RequestInfo:
    return RequestInfo(listener="edge", client_ip=client_ip, method="GET", scheme="http", host="h", port=80, path="/", headers=[])


class TreeRateLimitTests(SynchronousTestCase):
    def test_take(self) -> None:
        """
        The supervisor's buckets: C{take} gives L{None} while there are
        tokens, then the wait for the next one.
        """
        clock = Clock()
        limiter = RateLimitFilter("tree", spec(), clock)
        self.assertIsNone(limiter.take("a"))
        self.assertIsNone(limiter.take("a"))
        self.assertAlmostEqual(limiter.take("a"), 60.0)  # type: ignore[arg-type]
        self.assertIsNone(limiter.take("b"))

    def test_worker_asks_supervisor(self) -> None:
        """
        Two workers' filters share the supervisor's bucket: burst 2 admits
        two requests of a client in all, the third gets a 429 whichever
        worker takes it.
        """
        clock = Clock()
        limiter = RateLimitFilter("tree", spec(), clock)
        handlers = {"take": lambda m: limiter.take(m["key"])}
        filters = []
        for _ in range(2):
            _, worker_side = pair(clock, handlers, {})
            filters.append(TreeRateLimitFilter("tree", spec(), clock, Events(), worker_side))
        verdicts = [self.successResultOf(filters[i % 2].filter_request(info())) for i in range(3)]
        self.assertEqual(verdicts[:2], [None, None])
        self.assertEqual(verdicts[2].status, 429)
        self.assertEqual(dict(verdicts[2].headers)[b"Retry-After"], b"60")

    def test_supervisor_silent(self) -> None:
        """
        No answer within C{timeout}: the C{fail_open} answer (allowed, or
        503 with C{fail_open = false}).
        """
        clock = Clock()
        silent: Channel = Channel(lambda data: None, {}, clock)
        open_ = TreeRateLimitFilter("tree", spec(), clock, Events(), silent)
        closed = TreeRateLimitFilter("tree", spec(fail_open=False), clock, Events(), silent)
        d1, d2 = open_.filter_request(info()), closed.filter_request(info())
        clock.advance(0.5)
        self.assertIsNone(self.successResultOf(d1))
        self.assertEqual(self.successResultOf(d2).status, 503)


# a real tree of processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


class TreeTests(TestCase):
    """
    C{twistd -n proxy} with C{workers = 2}, from outside: requests, a killed
    worker, the tree's rate limit, a reload, a graceful stop.
    """

    timeout = 60

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="twisted-proxy-tree-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.port = free_port()
        self.admin = free_port()
        self.process: Optional[subprocess.Popen] = None
        origin = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
        origin.daemon_threads = True
        thread = threading.Thread(target=origin.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(origin.server_close)
        self.addCleanup(origin.shutdown)
        self.origin = origin.server_address[1]

    def start(self, extra: str = "", tables: str = "") -> None:
        self.config = os.path.join(self.folder, "proxy.toml")
        self.write_config(extra, tables)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        argv = [twistd, "-n", "--pidfile=", "proxy", "--config", self.config]
        if not os.path.exists(twistd):
            argv = [sys.executable, "-m", "twisted", "-n", "--pidfile=", "proxy", "--config", self.config]
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.log = open(os.path.join(self.folder, "log"), "wb")
        self.addCleanup(self.log.close)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
        self.addCleanup(self.kill)
        self.wait_for(lambda: len(self.status().get("workers", [])) == 2 and self.all_reported())

    def write_config(self, extra: str = "", tables: str = "", workers: int = 2) -> None:
        with open(self.config, "w") as f:
            f.write(
                f"""
[proxy]
access_log = "off"
workers = {workers}
drain_timeout = 5

[admin]
endpoint = "tcp:{self.admin}:interface=127.0.0.1"

[[listener]]
name = "edge"
kind = "reverse"
endpoint = "tcp:{self.port}:interface=127.0.0.1"
{extra}
  [[listener.route]]
  path = "/"
  backend = "app"

[backend.app]
servers = [{{ url = "http://127.0.0.1:{self.origin}" }}]
{tables}
"""
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for pid in self.worker_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        with open(os.path.join(self.folder, "log"), "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def status(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=2) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def all_reported(self) -> bool:
        return all(w.get("generation") is not None for w in self.status().get("workers", []))

    def worker_pids(self) -> List[int]:
        return [w["pid"] for w in self.status().get("workers", []) if w.get("pid")]

    def wait_for(self, condition: Any, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                self.fail(f"the proxy exited ({self.process.returncode}):\n{self.tail()}")
            if condition():
                return
            time.sleep(0.1)
        self.fail(f"timed out waiting; log:\n{self.tail()}")

    def get(self, path: str = "/") -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                r.read()
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def test_serves_and_spreads(self) -> None:
        """
        Both workers accept on the shared listener: new connections are
        answered, and each worker counts some of them; /status sums them.
        """
        self.start()
        for _ in range(60):
            self.assertEqual(self.get(), 200)
        self.wait_for(lambda: sum(l["requests"] for l in self.status()["listeners"]) == 60)
        workers = self.status()["workers"]
        self.assertEqual(sorted(w["index"] for w in workers), [0, 1])
        self.assertEqual(len({w["pid"] for w in workers}), 2)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        self.assertIn('twisted_proxy_requests_total{listener="edge",status="200"} 60.0', metrics)
        # which worker accepts is the kernel's choice (a busy machine may
        # favour one for a while): both take some before long
        sent = 60
        while not all(w["requests"] > 0 for w in self.status()["workers"]) and sent < 2000:
            for _ in range(20):
                self.assertEqual(self.get(), 200)
            sent += 20
            time.sleep(0.05 if sent % 200 else 1.1)
        self.assertTrue(all(w["requests"] > 0 for w in self.status()["workers"]), self.status()["workers"])

    def test_killed_worker_replaced(self) -> None:
        """
        A worker killed outright is replaced, and no connection is refused
        meanwhile (the socket is the supervisor's).
        """
        self.start()
        victim = self.status()["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        codes = [self.get() for _ in range(40)]
        self.assertEqual(codes, [200] * 40)
        self.wait_for(
            lambda: len(self.worker_pids()) == 2 and victim not in self.worker_pids() and self.all_reported()
        )

    def test_rate_limit_whole_tree(self) -> None:
        """
        An in-memory rate_limit admits its burst for the whole tree, not
        per worker: 10 of 30 requests, on new connections spread over both
        workers.
        """
        self.start(
            extra='filters = ["limit"]\n',
            tables='[filter.limit]\ntype = "rate_limit"\nrate = 1\nper = 3600\nburst = 10\n',
        )
        codes = [self.get() for _ in range(30)]
        self.wait_for(lambda: sum(w["requests"] for w in self.status()["workers"]) == len(codes))
        # (until both workers took some: per-worker buckets would admit more)
        while not all(w["requests"] > 0 for w in self.status()["workers"]) and len(codes) < 600:
            codes.extend(self.get() for _ in range(30))
            self.wait_for(lambda: sum(w["requests"] for w in self.status()["workers"]) == len(codes))
        self.assertTrue(all(w["requests"] > 0 for w in self.status()["workers"]), self.status()["workers"])
        self.assertEqual((codes.count(200), codes.count(429)), (10, len(codes) - 10), codes)

    def test_reload_and_stop(self) -> None:
        """
        POST /reload reloads every worker (the generation moves on); a
        new listener makes new workers; SIGTERM stops the tree, exit 0.
        """
        self.start()
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin}/reload", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as r:
            self.assertEqual(json.loads(r.read()), {"ok": True, "generation": 2})
        self.wait_for(lambda: {w["generation"] for w in self.status()["workers"]} == {2})
        old = set(self.worker_pids())
        second = free_port()
        with open(self.config, "a") as f:
            f.write(
                f"""
[[listener]]
name = "second"
kind = "reverse"
endpoint = "tcp:{second}:interface=127.0.0.1"
  [[listener.route]]
  path = "/"
  backend = "app"
"""
            )
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        self.wait_for(lambda: len(self.worker_pids()) == 2 and not old & set(self.worker_pids()) and self.all_reported())
        with urllib.request.urlopen(f"http://127.0.0.1:{second}/", timeout=5) as r:
            self.assertEqual(r.read(), b"ok")
        self.assertEqual(self.get(), 200)
        pids = self.worker_pids()
        self.process.send_signal(signal.SIGTERM)
        self.assertEqual(self.process.wait(30), 0, self.tail())
        for pid in pids:
            self.assertRaises(OSError, os.kill, pid, 0)
