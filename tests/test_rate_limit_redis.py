"""
Tests for L{twisted_proxy.filters.rate_limit} with Redis: a real
C{redis-server} started by each test on a free loopback port, the real
reactor and real sockets.

Skipped when C{redis-server} is not installed (C{apt install redis-server}).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Generator, List, Optional, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import directlyProvides, providedBy

from tests.helpers import REDIS_SERVER, RedisServer, unused_port
from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.events import Events
from twisted_proxy.filters.rate_limit import RedisRateLimitFilter, parse

reactor: Any = _reactor

try:
    import txredisapi  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - it is a dependency
    txredisapi = None

#: a free loopback port (the name these tests have always used)
free_port = unused_port


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


class SkewedReactor:
    """
    The reactor with its clock C{offset} seconds off: another proxy's
    machine.
    """

    def __init__(self, offset: float) -> None:
        self._offset = offset
        directlyProvides(self, providedBy(reactor))

    def seconds(self) -> float:
        return float(reactor.seconds()) + self._offset

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


def request(client_ip: str = "192.0.2.1") -> RequestInfo:
    return RequestInfo("edge", client_ip, "GET", "http", "example.com", 80, "/", [])


class RedisTestCase(TestCase):
    """
    Starts C{redis-server}; makes filters that are closed after the test.
    """

    timeout = 60

    def setUp(self) -> Any:
        if REDIS_SERVER is None:
            raise SkipTest("redis-server is not installed (apt install redis-server)")
        if txredisapi is None:  # pragma: no cover
            raise SkipTest("txredisapi is not installed")
        self.server = RedisServer(os.path.abspath(self.mktemp()), free_port())
        self.addCleanup(self.server.stop)
        self.logged: List[Dict[str, Any]] = []
        observer = cast(ILogObserver, self.logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return self.server.start()

    def make(
        self,
        table: Dict[str, Any],
        name: str = "shared",
        port: Optional[int] = None,
        db: int = 2,
        clock: Any = None,
        bus: Optional[Events] = None,
    ) -> RedisRateLimitFilter:
        port = self.server.port if port is None else port
        errors = ErrorList()
        spec = parse(
            name, dict(table, backend=f"redis://127.0.0.1:{port}/{db}"), errors, "/"
        )
        self.assertEqual(errors.items, [])
        flt = RedisRateLimitFilter(name, spec, clock or reactor, bus or Events())
        flt.reconnect_initial_delay = 0.05
        flt.reconnect_max_delay = 0.2
        self.addCleanup(flt.close)
        return flt

    @inlineCallbacks
    def verdict(self, flt: RedisRateLimitFilter, info: Optional[RequestInfo] = None) -> Any:
        result = flt.filter_request(info or request())
        if isinstance(result, Deferred):
            result = yield result
        return result

    @inlineCallbacks
    def redis(self, *command: Any, db: int = 2) -> Any:
        """
        The reply to one command on a connection of its own.
        """
        conn = yield txredisapi.Connection(
            "127.0.0.1", self.server.port, dbid=db, reconnect=False
        )
        try:
            reply = yield conn.execute_command(*command)
        finally:
            yield conn.disconnect()
        return reply

    def messages(self, fragment: str) -> List[Dict[str, Any]]:
        return [e for e in self.logged if fragment in (e.get("log_format") or "")]


class SharedBucketTests(RedisTestCase):
    """
    Proxies using the same Redis share each bucket.
    """

    @inlineCallbacks
    def test_two_proxies_share(self) -> Generator[Any, Any, None]:
        """
        What one proxy took, the other cannot take again.
        """
        first = self.make({"rate": 3, "per": 60})
        second = self.make({"rate": 3, "per": 60})
        self.assertIsNone((yield self.verdict(first)))
        self.assertIsNone((yield self.verdict(first)))
        self.assertIsNone((yield self.verdict(second)))
        refused = yield self.verdict(second)
        self.assertIsInstance(refused, Deny)
        self.assertEqual(refused.status, 429)
        self.assertEqual(refused.rule, "shared")
        self.assertEqual(
            refused.headers,
            (
                (b"Retry-After", b"20"),
                (b"RateLimit-Policy", b'"shared";q=3;w=60'),
                (b"RateLimit", b'"shared";r=0;t=20'),
            ),
        )
        self.assertIsInstance((yield self.verdict(first)), Deny)
        # another client is not affected
        self.assertIsNone((yield self.verdict(second, request("192.0.2.2"))))
        self.assertTrue(first.connected())

    @inlineCallbacks
    def test_filters_isolated_by_name(self) -> Generator[Any, Any, None]:
        """
        Two filters of different names never share a bucket.
        """
        one = self.make({"rate": 1, "per": 60}, name="one")
        two = self.make({"rate": 1, "per": 60}, name="two")
        self.assertIsNone((yield self.verdict(one)))
        self.assertIsNone((yield self.verdict(two)))
        self.assertIsInstance((yield self.verdict(one)), Deny)

    @inlineCallbacks
    def test_skewed_clocks_agree(self) -> Generator[Any, Any, None]:
        """
        The bucket runs on the Redis server's clock: a proxy whose clock is
        an hour ahead does not see a refilled bucket.
        """
        here = self.make({"rate": 1, "per": 60})
        ahead = self.make({"rate": 1, "per": 60}, clock=SkewedReactor(3600))
        self.assertIsNone((yield self.verdict(here)))
        refused = yield self.verdict(ahead)
        self.assertIsInstance(refused, Deny)
        self.assertIn(refused.headers[0], [(b"Retry-After", b"60"), (b"Retry-After", b"59")])

    @inlineCallbacks
    def test_keys_expire(self) -> Generator[Any, Any, None]:
        """
        Buckets are stored under C{twisted-proxy:rl:NAME:KEY} in the
        configured database, and vanish once refilled.
        """
        flt = self.make({"rate": 10, "per": 1, "burst": 2}, db=3)
        self.assertIsNone((yield self.verdict(flt)))
        key = b"twisted-proxy:rl:shared:192.0.2.1"
        self.assertEqual((yield self.redis("EXISTS", key, db=3)), 1)
        ttl = yield self.redis("PTTL", key, db=3)
        self.assertTrue(0 < ttl <= 100, ttl)
        self.assertEqual((yield self.redis("EXISTS", key, db=2)), 0)
        yield sleep(0.25)
        self.assertEqual((yield self.redis("EXISTS", key, db=3)), 0)
        # and the refill is real: a full burst again
        self.assertIsNone((yield self.verdict(flt)))
        self.assertIsNone((yield self.verdict(flt)))
        self.assertIsInstance((yield self.verdict(flt)), Deny)

    @inlineCallbacks
    def test_script_reloaded(self) -> Generator[Any, Any, None]:
        """
        After C{SCRIPT FLUSH} (a restarted or failed-over Redis) the script
        is loaded again and the request answered.
        """
        flt = self.make({"rate": 1, "per": 60})
        self.assertIsNone((yield self.verdict(flt)))
        yield self.redis("SCRIPT", "FLUSH")
        self.assertIsInstance((yield self.verdict(flt)), Deny)
        self.assertEqual(self.messages("unavailable"), [])

    @inlineCallbacks
    def test_events(self) -> Generator[Any, Any, None]:
        """
        Refusals decided by Redis are announced on the event bus too.
        """
        bus = Events()
        seen: List[str] = []
        bus.subscribe("shared", seen.append)
        flt = self.make({"rate": 1, "per": 60, "key": "header:X-Api-Key"}, bus=bus)
        info = RequestInfo(
            "edge", "192.0.2.5", "GET", "http", "h", 80, "/", [(b"X-Api-Key", b"k")]
        )
        self.assertIsNone((yield self.verdict(flt, info)))
        self.assertIsInstance((yield self.verdict(flt, info)), Deny)
        self.assertEqual(seen, ["192.0.2.5"])
        self.assertEqual((yield self.redis("EXISTS", b"twisted-proxy:rl:shared:h:k")), 1)


class OutageTests(RedisTestCase):
    """
    Redis unreachable, failing or hanging: C{fail_open} decides, the
    outage and the recovery are logged once each.
    """

    @inlineCallbacks
    def test_fail_open(self) -> Generator[Any, Any, None]:
        """
        With nothing at the address and C{fail_open = true} requests pass;
        after the first failure they are answered at once.
        """
        flt = self.make({"rate": 1, "per": 60, "timeout": 0.2}, port=free_port())
        self.assertIsNone((yield self.verdict(flt)))
        self.assertFalse(flt.connected())
        for _ in range(5):
            self.assertIsNone(flt.filter_request(request()))
        self.assertEqual(flt.skipped, 6)
        [event] = self.messages("unavailable")
        self.assertEqual(event["filter"], "shared")
        self.assertEqual(event["policy"], "allowed")

    @inlineCallbacks
    def test_fail_closed(self) -> Generator[Any, Any, None]:
        """
        With C{fail_open = false} requests get 503 with a short message.
        """
        flt = self.make(
            {"rate": 1, "per": 60, "timeout": 0.2, "fail_open": False}, port=free_port()
        )
        refused = yield self.verdict(flt)
        self.assertIsInstance(refused, Deny)
        self.assertEqual(refused.status, 503)
        self.assertEqual(refused.rule, "shared")
        self.assertIn("unavailable", refused.message)
        self.assertEqual(refused.headers, ((b"Retry-After", b"1"),))
        self.assertIs(flt.filter_request(request()), refused)
        [event] = self.messages("unavailable")
        self.assertEqual(event["policy"], "refused with 503")

    @inlineCallbacks
    def until_answered(self, flt: RedisRateLimitFilter) -> Generator[Any, Any, Any]:
        """
        Make requests until Redis answers one (at most 15 s).
        """
        for _ in range(300):
            result = flt.filter_request(request())
            if isinstance(result, Deferred):
                result = yield result
                if flt._outage_since is None:
                    return result
            yield sleep(0.05)
        self.fail("Redis never answered again")

    @inlineCallbacks
    def test_reconnect(self) -> Generator[Any, Any, None]:
        """
        When Redis stops, requests get the C{fail_open} answer; when it is
        back, the filter reconnects by itself and the buckets apply again.
        """
        flt = self.make({"rate": 100, "per": 60, "timeout": 0.3, "fail_open": False})
        self.assertIsNone((yield self.verdict(flt)))
        self.server.stop()
        refused = yield self.verdict(flt)
        self.assertEqual(refused.status, 503)
        self.assertEqual(len(self.messages("unavailable")), 1)
        yield self.server.start()
        self.assertIsNone((yield self.until_answered(flt)))
        self.assertTrue(flt.connected())
        self.assertEqual(len(self.messages("unavailable")), 1)
        [recovery] = self.messages("answers again after")
        self.assertEqual(recovery["filter"], "shared")
        self.assertGreaterEqual(recovery["skipped"], 1)
        self.assertEqual(flt.skipped, 0)

    @inlineCallbacks
    def test_hung_redis(self) -> Generator[Any, Any, None]:
        """
        A Redis that does not answer within C{timeout} counts as down: the
        request gets the C{fail_open} answer in time, the hung connection
        is dropped, and a new one is used once Redis answers again.
        """
        flt = self.make({"rate": 100, "per": 60, "timeout": 0.2})
        self.assertIsNone((yield self.verdict(flt)))
        hung = flt._factory.pool[0]
        self.server.pause()
        started = reactor.seconds()
        verdicts = yield gatherResults([self.verdict(flt) for _ in range(3)])
        self.assertEqual(verdicts, [None, None, None])
        self.assertLess(reactor.seconds() - started, 5)
        [event] = self.messages("unavailable")
        self.assertIn("no answer within 0.2 s", event["reason"])
        self.server.resume()
        self.assertIsNone((yield self.until_answered(flt)))
        self.assertEqual(len(self.messages("answers again after")), 1)
        self.assertNotIn(hung, flt._factory.pool)

    @inlineCallbacks
    def test_request_from_timed_out_callback(self) -> Generator[Any, Any, None]:
        """
        A request made from the callback of one that timed out (the proxy
        resumes the next filters and requests synchronously) leaves no
        second timer behind: after L{close} no call is pending.
        """
        flt = self.make({"rate": 100, "per": 60, "timeout": 0.2})
        self.assertIsNone((yield self.verdict(flt)))
        self.server.pause()
        again: List[Any] = []
        first = flt.filter_request(request())
        first.addCallback(lambda _: again.append(flt.filter_request(request())))
        yield first
        [second] = again
        self.assertIsNone((yield second))
        yield flt.close()
        pending = [c for c in reactor.getDelayedCalls() if "_expire" in repr(c)]
        self.assertEqual(pending, [])

    @inlineCallbacks
    def test_close(self) -> Generator[Any, Any, None]:
        """
        L{RedisRateLimitFilter.close} closes the connection.
        """
        flt = self.make({"rate": 1, "per": 60})
        yield self.verdict(flt)
        self.assertTrue(flt.connected())
        yield flt.close()
        self.assertFalse(flt.connected())
