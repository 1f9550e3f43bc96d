"""
Tests for L{twisted_proxy.filters.rate_limit}: parsing and the in-process
token bucket (the Redis one is in L{tests.test_rate_limit_redis}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.events import Events
from twisted_proxy.filters.rate_limit import (
    RateLimitFilter,
    RateLimitSpec,
    RedisRateLimitFilter,
    RedisTarget,
    build,
    parse,
)
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.interfaces import IRequestFilter

#: a realistic POSIX time: float resolution there is about 0.24 µs
NOW = 1_700_000_000.0


def request(
    client_ip: str = "192.0.2.1",
    headers: Sequence[Tuple[bytes, bytes]] = (),
    claims: Optional[Dict[str, Any]] = None,
) -> RequestInfo:
    info = RequestInfo(
        listener="edge",
        client_ip=client_ip,
        method="GET",
        scheme="http",
        host="example.com",
        port=80,
        path="/",
        headers=list(headers),
    )
    if claims:
        info.claims.update(claims)
    return info


def parsed(
    table: Dict[str, Any], name: str = "per-ip"
) -> Tuple[RateLimitSpec, List[Tuple[str, str]]]:
    errors = ErrorList()
    spec = parse(name, table, errors, "/etc")
    return spec, errors.items


class Limiter:
    """
    A filter on a L{Clock}, with the refusals it announced.
    """

    def __init__(self, table: Dict[str, Any], name: str = "per-ip", start: float = NOW) -> None:
        spec, errors = parsed(table, name)
        assert not errors, errors
        self.clock = Clock()
        self.clock.advance(start)
        self.bus = Events()
        self.limited: List[Tuple[str, str]] = []
        self.bus.subscribe(name, lambda ip: self.limited.append((name, ip)))
        self.filter = RateLimitFilter(name, spec, self.clock, self.bus)

    def __call__(self, info: Optional[RequestInfo] = None) -> Optional[Deny]:
        verdict = self.filter.filter_request(info or request())
        assert verdict is None or isinstance(verdict, Deny)
        return verdict

    def allowed(self, count: int, info: Optional[RequestInfo] = None) -> int:
        """
        How many of C{count} requests made now pass.
        """
        return sum(1 for _ in range(count) if self(info) is None)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def header(deny: Deny, name: bytes) -> bytes:
    values = [v for n, v in deny.headers if n.lower() == name.lower()]
    assert len(values) == 1, (name, deny.headers)
    return values[0]


class ParseTests(SynchronousTestCase):
    """
    L{parse} checks every key and reports each problem under its path.
    """

    def test_minimal(self) -> None:
        """
        C{rate} and C{per} are enough: C{burst} defaults to C{rate}, the key
        to the client address, the buckets to this process, and Redis
        failures to letting requests through.
        """
        spec, errors = parsed({"type": "rate_limit", "rate": 100, "per": 60})
        self.assertEqual(errors, [])
        self.assertEqual(
            spec,
            RateLimitSpec(
                rate=100.0,
                per=60.0,
                burst=100,
                key="client_ip",
                max_keys=100000,
                backend=None,
                fail_open=True,
                timeout=0.5,
            ),
        )
        self.assertAlmostEqual(spec.interval, 0.6)

    def test_everything(self) -> None:
        """
        Every key is read.
        """
        spec, errors = parsed(
            {
                "rate": 2.5,
                "per": 0.5,
                "burst": 7,
                "key": "header:X-Api-Key",
                "max_keys": 10,
                "backend": "redis://:s3cret@10.0.0.5:6380/3",
                "fail_open": False,
                "timeout": 0.25,
            }
        )
        self.assertEqual(errors, [])
        self.assertEqual(spec.rate, 2.5)
        self.assertEqual(spec.per, 0.5)
        self.assertEqual(spec.burst, 7)
        self.assertEqual(spec.key, "header:x-api-key")
        self.assertEqual(spec.max_keys, 10)
        self.assertEqual(spec.backend, RedisTarget("10.0.0.5", 6380, 3, None, "s3cret"))
        self.assertFalse(spec.fail_open)
        self.assertEqual(spec.timeout, 0.25)

    def test_burst_default_fractional_rate(self) -> None:
        """
        With a fractional C{rate} the default burst is its whole part, and
        at least 1.
        """
        self.assertEqual(parsed({"rate": 2.7, "per": 1})[0].burst, 2)
        self.assertEqual(parsed({"rate": 0.5, "per": 1})[0].burst, 1)

    def test_required(self) -> None:
        """
        C{rate} and C{per} are required.
        """
        _, errors = parsed({})
        self.assertEqual(
            [path for path, _ in errors], ["filter.per-ip.rate", "filter.per-ip.per"]
        )
        self.assertIn("per = 60", errors[1][1])

    def test_bad_numbers(self) -> None:
        """
        C{rate}, C{per} and C{timeout} are positive numbers; C{burst} and
        C{max_keys} whole numbers of at least 1.
        """
        cases: List[Tuple[Dict[str, Any], str, str]] = [
            ({"rate": 0, "per": 1}, "rate", "positive"),
            ({"rate": -3, "per": 1}, "rate", "positive"),
            ({"rate": "10", "per": 1}, "rate", "must be a number, not str"),
            ({"rate": True, "per": 1}, "rate", "must be a number, not bool"),
            ({"rate": float("inf"), "per": 1}, "rate", "positive"),
            ({"rate": float("nan"), "per": 1}, "rate", "positive"),
            ({"rate": 1, "per": 0}, "per", "positive"),
            ({"rate": 1, "per": 1, "burst": 0}, "burst", "at least 1"),
            ({"rate": 1, "per": 1, "burst": 1.5}, "burst", "whole number, not float"),
            ({"rate": 1, "per": 1, "burst": True}, "burst", "whole number, not bool"),
            ({"rate": 1, "per": 1, "max_keys": 0}, "max_keys", "at least 1"),
            ({"rate": 1, "per": 1, "timeout": 0}, "timeout", "positive"),
            ({"rate": 1, "per": 1, "fail_open": "yes"}, "fail_open", "true or false"),
        ]
        for table, key, message in cases:
            _, errors = parsed(table)
            self.assertEqual(len(errors), 1, (table, errors))
            self.assertEqual(errors[0][0], f"filter.per-ip.{key}", table)
            self.assertIn(message, errors[0][1], table)

    def test_unknown_key(self) -> None:
        """
        Unknown keys are errors (C{type} is the loader's).
        """
        _, errors = parsed({"type": "rate_limit", "rate": 1, "per": 1, "brust": 3})
        self.assertEqual(errors, [("filter.per-ip.brust", "unknown key")])

    def test_keys(self) -> None:
        """
        C{key} is C{client_ip}, C{header:NAME} (a valid header name, kept in
        lower case) or C{claim:NAME}.
        """
        for text, expected in [
            ("client_ip", "client_ip"),
            ("header:X-Api-Key", "header:x-api-key"),
            ("claim:sub", "claim:sub"),
            ("claim:https://example.com/tenant", "claim:https://example.com/tenant"),
        ]:
            spec, errors = parsed({"rate": 1, "per": 1, "key": text})
            self.assertEqual(errors, [])
            self.assertEqual(spec.key, expected)
        for value, message in [
            ("ip", "unknown key 'ip'"),
            ("cookie:session", "unknown key"),
            ("header:", "not a valid header name"),
            ("header:X Api", "not a valid header name"),
            ("claim: ", "claim name is missing"),
            (3, "must be a string"),
        ]:
            _, errors = parsed({"rate": 1, "per": 1, "key": value})
            self.assertEqual(len(errors), 1, value)
            self.assertEqual(errors[0][0], "filter.per-ip.key")
            self.assertIn(message, errors[0][1])

    def test_redis_urls(self) -> None:
        """
        C{backend} is C{redis://[[user]:password@]host[:port][/db]}; the port
        defaults to 6379 and the database to 0.
        """
        for url, expected in [
            ("redis://127.0.0.1:6379/0", RedisTarget("127.0.0.1", 6379, 0)),
            ("redis://localhost", RedisTarget("localhost", 6379, 0)),
            ("redis://cache.internal/", RedisTarget("cache.internal", 6379, 0)),
            ("redis://[::1]:7000/12", RedisTarget("::1", 7000, 12)),
            ("REDIS://h:1/2", RedisTarget("h", 1, 2)),
            ("redis://app:p%40ss@h/1", RedisTarget("h", 6379, 1, "app", "p@ss")),
        ]:
            spec, errors = parsed({"rate": 1, "per": 1, "backend": url})
            self.assertEqual(errors, [], url)
            self.assertEqual(spec.backend, expected, url)
        self.assertEqual(str(RedisTarget("::1", 7000, 12)), "redis://[::1]:7000/12")
        self.assertNotIn("s3cret", repr(RedisTarget("h", 1, 0, None, "s3cret")))

    def test_bad_redis_urls(self) -> None:
        """
        Anything else is an error saying what is wrong.
        """
        for url, message in [
            ("http://127.0.0.1:6379/0", "scheme must be redis://"),
            ("rediss://127.0.0.1:6379/0", "rediss:// is not supported"),
            ("127.0.0.1:6379", "scheme must be redis://"),
            ("redis://", "host is missing"),
            ("redis://:6379/0", "host is missing"),
            ("redis://h:0/0", "port must be a number from 1 to 65535"),
            ("redis://h:99999/0", "port must be a number from 1 to 65535"),
            ("redis://h:port/0", "port must be a number"),
            ("redis://h:/0", "port is empty"),
            ("redis://h:6379/zero", "database must be a number"),
            ("redis://h:6379/-1", "database must be a number"),
            ("redis://h:6379/0/1", "database must be a number"),
            ("redis://h:6379/0?timeout=1", "no query"),
            ("redis://h :6379/0", "spaces"),
        ]:
            _, errors = parsed({"rate": 1, "per": 1, "backend": url})
            self.assertEqual(len(errors), 1, url)
            self.assertEqual(errors[0][0], "filter.per-ip.backend", url)
            self.assertIn(message, errors[0][1], url)
        _, errors = parsed({"rate": 1, "per": 1, "backend": 6379})
        self.assertIn("must be a string", errors[0][1])

    def test_registered(self) -> None:
        """
        The type is registered as C{rate_limit}.
        """
        module = filter_type("rate_limit")
        assert module is not None
        self.assertIs(module.parse, parse)
        self.assertIs(module.build, build)


class BuildTests(SynchronousTestCase):
    """
    L{build} makes the in-memory or the Redis filter.
    """

    def test_memory(self) -> None:
        """
        Without C{backend}: a L{RateLimitFilter} providing L{IRequestFilter}.
        """
        spec, _ = parsed({"rate": 1, "per": 1})
        flt = build("per-ip", spec, Clock())
        self.assertIsInstance(flt, RateLimitFilter)
        self.assertTrue(verifyObject(IRequestFilter, flt))
        self.assertEqual(flt.name, "per-ip")
        self.assertEqual(repr(flt), "<RateLimitFilter 'per-ip'>")

    def test_redis_lazy(self) -> None:
        """
        With C{backend}: a L{RedisRateLimitFilter}, which does not connect
        before its first request.
        """
        spec, _ = parsed({"rate": 1, "per": 1, "backend": "redis://127.0.0.1:1/0"})
        flt = build("shared", spec, Clock())
        self.assertIsInstance(flt, RedisRateLimitFilter)
        self.assertTrue(verifyObject(IRequestFilter, flt))
        self.assertFalse(flt.connected())
        self.assertIsNone(self.successResultOf(flt.close()))


class BucketTests(SynchronousTestCase):
    """
    The token bucket: C{burst} requests at once, then C{rate} per C{per}
    seconds, refilled continuously.
    """

    def test_burst(self) -> None:
        """
        A new client may make C{burst} requests at once; the next is 429.
        """
        limiter = Limiter({"rate": 10, "per": 60, "burst": 4})
        self.assertEqual(limiter.allowed(4), 4)
        verdict = limiter()
        assert verdict is not None
        self.assertEqual(verdict.status, 429)
        self.assertEqual(verdict.rule, "per-ip")
        self.assertIn("too many requests", verdict.message)
        self.assertIn("per-ip", verdict.message)

    def test_burst_defaults_to_rate(self) -> None:
        """
        Without C{burst}, C{rate} requests pass at once.
        """
        limiter = Limiter({"rate": 5, "per": 60})
        self.assertEqual(limiter.allowed(20), 5)

    def test_exact_refill(self) -> None:
        """
        A token comes back every C{per / rate} seconds to the microsecond,
        also at a large clock value.
        """
        limiter = Limiter({"rate": 3, "per": 1, "burst": 3})
        self.assertEqual(limiter.allowed(3), 3)
        interval = 1 / 3
        limiter.advance(interval - 0.0001)
        self.assertIsNotNone(limiter())
        limiter.advance(0.0001)
        self.assertIsNone(limiter())
        self.assertIsNotNone(limiter())
        # two more intervals: exactly two tokens
        limiter.advance(2 * interval)
        self.assertEqual(limiter.allowed(5), 2)

    def test_refill_is_capped(self) -> None:
        """
        A long pause refills the bucket only up to C{burst}.
        """
        limiter = Limiter({"rate": 1, "per": 1, "burst": 2})
        self.assertEqual(limiter.allowed(2), 2)
        limiter.advance(3600)
        self.assertEqual(limiter.allowed(10), 2)

    def test_steady_rate(self) -> None:
        """
        A client sending exactly at the rate is never refused.
        """
        # from 0: a Clock advanced 1000 times at 1.7e9 s drifts by its own
        # rounding (a real clock is read, not summed)
        limiter = Limiter({"rate": 10, "per": 1, "burst": 1}, start=0.0)
        for _ in range(1000):
            self.assertIsNone(limiter())
            limiter.advance(0.1)

    def test_refusals_take_nothing(self) -> None:
        """
        Refused requests do not consume tokens: hammering does not push the
        next token further away.
        """
        limiter = Limiter({"rate": 1, "per": 2, "burst": 1})
        self.assertIsNone(limiter())
        self.assertEqual(limiter.allowed(100), 0)
        limiter.advance(2)
        self.assertIsNone(limiter())

    def test_tokens(self) -> None:
        """
        L{RateLimitFilter.tokens} reports what a bucket holds now.
        """
        limiter = Limiter({"rate": 2, "per": 1, "burst": 4})
        self.assertEqual(limiter.filter.tokens("192.0.2.1"), 4)
        limiter.allowed(3)
        self.assertAlmostEqual(limiter.filter.tokens("192.0.2.1"), 1, places=5)
        limiter.advance(0.25)
        self.assertAlmostEqual(limiter.filter.tokens("192.0.2.1"), 1.5, places=5)

    def test_clients_isolated(self) -> None:
        """
        Each client address has its own bucket.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 2})
        self.assertEqual(limiter.allowed(5, request("192.0.2.1")), 2)
        self.assertEqual(limiter.allowed(5, request("192.0.2.2")), 2)
        self.assertEqual(limiter.allowed(5, request("2001:db8::1")), 2)


class ResponseTests(SynchronousTestCase):
    """
    A refusal is 429 with C{Retry-After} and the draft's C{RateLimit-Policy}
    and C{RateLimit} fields.
    """

    def test_retry_after(self) -> None:
        """
        C{Retry-After} is the whole seconds (rounded up) until one token is
        back, at least 1.
        """
        limiter = Limiter({"rate": 1, "per": 10, "burst": 1})
        self.assertIsNone(limiter())
        for elapsed, expected in [(0, b"10"), (3.5, b"7"), (5.9, b"1"), (0.59, b"1")]:
            limiter.advance(elapsed)
            verdict = limiter()
            assert verdict is not None
            self.assertEqual(header(verdict, b"Retry-After"), expected, elapsed)
        limiter.advance(0.01)
        self.assertIsNone(limiter())

    def test_retry_after_whole_seconds(self) -> None:
        """
        Exactly N seconds to wait is C{Retry-After: N}, not N + 1.
        """
        limiter = Limiter({"rate": 1, "per": 4, "burst": 1})
        limiter()
        limiter.advance(1)
        verdict = limiter()
        assert verdict is not None
        self.assertEqual(header(verdict, b"Retry-After"), b"3")

    def test_ratelimit_fields(self) -> None:
        """
        C{RateLimit-Policy: "NAME";q=RATE;w=PER} and
        C{RateLimit: "NAME";r=0;t=RETRY}.
        """
        limiter = Limiter({"rate": 100, "per": 60, "burst": 1})
        limiter()
        limiter.advance(0.2)
        verdict = limiter()
        assert verdict is not None
        self.assertEqual(
            verdict.headers,
            (
                (b"Retry-After", b"1"),
                (b"RateLimit-Policy", b'"per-ip";q=100;w=60'),
                (b"RateLimit", b'"per-ip";r=0;t=1'),
            ),
        )

    def test_fractional_per(self) -> None:
        """
        A fractional C{per} is advertised over whole seconds, and a window
        always holds at least one request.
        """
        cases: List[Tuple[Dict[str, Any], bytes]] = [
            ({"rate": 5, "per": 0.5}, b'"f";q=10;w=1'),
            ({"rate": 3, "per": 1.5}, b'"f";q=4;w=2'),
            ({"rate": 1, "per": 86400}, b'"f";q=1;w=86400'),
            ({"rate": 0.5, "per": 1}, b'"f";q=1;w=2'),
            ({"rate": 1, "per": 0.4}, b'"f";q=2;w=1'),
            ({"rate": 0.3, "per": 1}, b'"f";q=1;w=4'),
        ]
        for table, policy in cases:
            limiter = Limiter(dict(table, burst=1), name="f")
            limiter()
            verdict = limiter()
            assert verdict is not None
            self.assertEqual(header(verdict, b"RateLimit-Policy"), policy)

    def test_policy_name_escaped(self) -> None:
        """
        The filter's name is a valid structured-field String.
        """
        limiter = Limiter({"rate": 1, "per": 1, "burst": 1}, name='a"b\\cé')
        limiter()
        verdict = limiter()
        assert verdict is not None
        self.assertEqual(header(verdict, b"RateLimit-Policy"), b'"a\\"b\\\\c?";q=1;w=1')


class KeyTests(SynchronousTestCase):
    """
    Buckets by header value or claim, falling back to the client address.
    """

    def test_header(self) -> None:
        """
        With C{header:NAME}, each value of the header (name matched
        case-insensitively) has its own bucket, whatever the address.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 2, "key": "header:X-Api-Key"})
        alice = request("192.0.2.1", [(b"x-api-key", b"alice")])
        alice_elsewhere = request("192.0.2.99", [(b"X-API-KEY", b"alice")])
        bob = request("192.0.2.1", [(b"X-Api-Key", b"bob")])
        self.assertEqual(limiter.allowed(1, alice), 1)
        self.assertEqual(limiter.allowed(5, alice_elsewhere), 1)
        self.assertEqual(limiter.allowed(5, bob), 2)

    def test_header_first_value(self) -> None:
        """
        Of several such headers the first counts.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 1, "key": "header:X-Api-Key"})
        first = request(headers=[(b"X-Api-Key", b"a"), (b"X-Api-Key", b"b")])
        self.assertEqual(limiter.allowed(3, first), 1)
        self.assertEqual(limiter.allowed(3, request(headers=[(b"X-Api-Key", b"b")])), 1)

    def test_header_missing(self) -> None:
        """
        Without the header, or with it empty, the client address is the key;
        a header value equal to an address is still another bucket.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 2, "key": "header:X-Api-Key"})
        self.assertEqual(limiter.allowed(1, request("192.0.2.1")), 1)
        self.assertEqual(
            limiter.allowed(5, request("192.0.2.1", [(b"X-Api-Key", b"")])), 1
        )
        self.assertEqual(limiter.allowed(5, request("192.0.2.2")), 2)
        spoof = request("198.51.100.7", [(b"X-Api-Key", b"192.0.2.1")])
        self.assertEqual(limiter.allowed(5, spoof), 2)

    def test_claim(self) -> None:
        """
        With C{claim:NAME}, the claim an authentication filter set is the
        key; without it, the client address.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 2, "key": "claim:sub"})
        self.assertEqual(limiter.allowed(1, request("192.0.2.1", claims={"sub": "alice"})), 1)
        self.assertEqual(limiter.allowed(5, request("192.0.2.2", claims={"sub": "alice"})), 1)
        self.assertEqual(limiter.allowed(5, request("192.0.2.1", claims={"sub": "bob"})), 2)
        self.assertEqual(limiter.allowed(5, request("192.0.2.1")), 2)
        self.assertEqual(limiter.allowed(5, request("192.0.2.1", claims={"sub": None})), 0)
        self.assertEqual(limiter.allowed(5, request("192.0.2.1", claims={"sub": "192.0.2.1"})), 2)

    def test_claim_values(self) -> None:
        """
        Claims that are not strings are keys too: numbers, lists and
        objects by their JSON text.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 1, "key": "claim:tenant"})
        for value in [42, 4.5, ["a", "b"], {"b": 1, "a": 2}, True]:
            info = request(claims={"tenant": value})
            self.assertEqual(limiter.allowed(3, info), 1, value)
        self.assertEqual(limiter.allowed(3, request(claims={"tenant": {"a": 2, "b": 1}})), 0)
        self.assertEqual(len(limiter.filter), 5)

    def test_long_values_hashed(self) -> None:
        """
        Long values are kept as a digest: distinct values stay distinct and
        the memory per bucket stays small.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 1, "key": "header:Authorization"})
        one = request(headers=[(b"Authorization", b"x" * 5000 + b"1")])
        two = request(headers=[(b"Authorization", b"x" * 5000 + b"2")])
        self.assertEqual(limiter.allowed(2, one), 1)
        self.assertEqual(limiter.allowed(2, two), 1)
        self.assertTrue(all(len(key) < 100 for key in limiter.filter._buckets))

    def test_events_carry_address(self) -> None:
        """
        Each refusal is announced with the filter's name and the client's
        address (also when the key is a header), allowed requests are not.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 2, "key": "header:X-Api-Key"})
        info = request("192.0.2.8", [(b"X-Api-Key", b"k")])
        limiter.allowed(2, info)
        self.assertEqual(limiter.limited, [])
        limiter.allowed(3, info)
        self.assertEqual(limiter.limited, [("per-ip", "192.0.2.8")] * 3)


class MemoryTests(SynchronousTestCase):
    """
    Full buckets are dropped, and at most C{max_keys} are kept.
    """

    def test_full_buckets_dropped(self) -> None:
        """
        Once a bucket has refilled it is forgotten (at the next sweep, made
        by a later request), without any timer.
        """
        limiter = Limiter({"rate": 1, "per": 1, "burst": 5})
        for i in range(100):
            limiter(request(f"10.0.0.{i}"))
        self.assertEqual(len(limiter.filter), 100)
        self.assertEqual(limiter.clock.getDelayedCalls(), [])
        limiter.advance(0.5)
        limiter(request("10.0.1.1"))
        self.assertEqual(len(limiter.filter), 101)
        limiter.advance(0.6)
        limiter(request("10.0.1.1"))
        self.assertEqual(len(limiter.filter), 1)

    def test_refilled_bucket_equivalent(self) -> None:
        """
        A client whose bucket was dropped gets the same answers as if it
        had been kept.
        """
        limiter = Limiter({"rate": 2, "per": 1, "burst": 2})
        self.assertEqual(limiter.allowed(2), 2)
        limiter.advance(5)
        limiter(request("10.9.9.9"))
        self.assertNotIn("192.0.2.1", limiter.filter._buckets)
        self.assertEqual(limiter.allowed(5), 2)

    def test_active_bucket_kept_by_sweep(self) -> None:
        """
        A sweep stops at buckets that are not full: limited clients stay
        limited.
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 1})
        limiter()
        for i in range(10):
            limiter.advance(1.5)
            limiter(request(f"10.0.0.{i}"))
        self.assertIsNotNone(limiter())

    def test_max_keys(self) -> None:
        """
        Beyond C{max_keys} the least recently used bucket is forgotten (and
        a warning logged, once a minute at most).
        """
        limiter = Limiter({"rate": 1, "per": 60, "burst": 1, "max_keys": 3})
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"]:
            limiter(request(ip))
        # 10.0.0.1 is used again (refused), so 10.0.0.2 is the least recent
        self.assertIsNotNone(limiter(request("10.0.0.1")))
        with capturedLogs() as events:
            limiter(request("10.0.0.4"))
            limiter(request("10.0.0.5"))
        self.assertEqual(len(limiter.filter), 3)
        self.assertEqual(limiter.filter.evicted, 2)
        self.assertEqual(
            list(limiter.filter._buckets), ["10.0.0.1", "10.0.0.4", "10.0.0.5"]
        )
        self.assertIsNotNone(limiter(request("10.0.0.1")))
        self.assertIsNone(limiter(request("10.0.0.2")))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["filter"], "per-ip")
        self.assertEqual(events[0]["max_keys"], 3)

    def test_max_keys_prefers_full_buckets(self) -> None:
        """
        At C{max_keys}, full buckets go first; no live one is forgotten
        while a full one remains.
        """
        limiter = Limiter({"rate": 1, "per": 1, "burst": 1, "max_keys": 2})
        limiter(request("10.0.0.1"))
        limiter.advance(0.5)
        limiter(request("10.0.0.2"))
        limiter.advance(0.6)  # 10.0.0.1 is full again, 10.0.0.2 is not
        limiter(request("10.0.0.3"))
        self.assertEqual(limiter.filter.evicted, 0)
        self.assertEqual(list(limiter.filter._buckets), ["10.0.0.2", "10.0.0.3"])

    def test_spray_bounded(self) -> None:
        """
        A flood of distinct keys never holds more than C{max_keys} buckets.
        """
        limiter = Limiter({"rate": 1, "per": 3600, "burst": 1, "max_keys": 1000})
        for i in range(20000):
            limiter(request(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"))
            if i % 1000 == 0:
                limiter.advance(1.1)
        self.assertEqual(len(limiter.filter), 1000)
