"""
Tests for L{twisted_proxy.filters.ip_block} (and the event bus of
L{twisted_proxy.filters.events} it listens on).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Optional, Tuple, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.events import Events, events
from twisted_proxy.filters.ip_block import (
    MAX_THRESHOLD,
    IpBlockFilter,
    IpBlockSpec,
    build,
    check_watch,
    parse,
)
from twisted_proxy.filters.rate_limit import RateLimitFilter
from twisted_proxy.filters.rate_limit import parse as parse_rate_limit
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.interfaces import IRequestFilter


def request(client_ip: str = "192.0.2.1") -> RequestInfo:
    return RequestInfo("edge", client_ip, "GET", "http", "example.com", 80, "/", [])


def parsed(
    table: Dict[str, Any], name: str = "block"
) -> Tuple[IpBlockSpec, List[Tuple[str, str]]]:
    errors = ErrorList()
    spec = parse(name, table, errors, "/etc")
    return spec, errors.items


class Blocker:
    """
    An C{ip_block} filter on a L{Clock} and a private event bus, and the
    log events it emitted.
    """

    def __init__(self, test: SynchronousTestCase, table: Dict[str, Any]) -> None:
        spec, errors = parsed(table)
        assert not errors, errors
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.bus = Events()
        self.filter = IpBlockFilter("block", spec, self.clock, self.bus)
        test.addCleanup(self.filter.close)
        self.logged: List[Dict[str, Any]] = []
        observer = cast(ILogObserver, self.logged.append)
        globalLogPublisher.addObserver(observer)
        test.addCleanup(globalLogPublisher.removeObserver, observer)

    def __call__(self, client_ip: str = "192.0.2.1") -> Optional[Deny]:
        return self.filter.filter_request(request(client_ip))

    def refuse(self, client_ip: str = "192.0.2.1", times: int = 1, by: str = "per-ip") -> None:
        """
        The rate limit C{by} refused C{client_ip} C{times} times.
        """
        for _ in range(times):
            self.bus.limited(by, client_ip)

    def actions(self) -> List[Tuple[str, str]]:
        return [(e["action"], e["client"]) for e in self.logged if "action" in e]


class ParseTests(SynchronousTestCase):
    """
    L{parse} checks every key.
    """

    def test_defaults(self) -> None:
        """
        Only C{watch} (or C{block_clients}) is needed: 10 refusals within 60
        seconds block for 600 seconds.
        """
        spec, errors = parsed({"type": "ip_block", "watch": ["per-ip"]})
        self.assertEqual(errors, [])
        self.assertEqual(
            spec,
            IpBlockSpec(
                block_clients=(),
                watch=("per-ip",),
                threshold=10,
                window=60.0,
                block_for=600.0,
                max_clients=10000,
            ),
        )

    def test_everything(self) -> None:
        """
        Every key is read; duplicate watched names count once.
        """
        spec, errors = parsed(
            {
                "block_clients": ["203.0.113.0/24", "2001:db8::/32"],
                "watch": ["a", "b", "a"],
                "threshold": 3,
                "window": 1.5,
                "block_for": 30,
                "max_clients": 50,
            }
        )
        self.assertEqual(errors, [])
        self.assertEqual(
            spec.block_clients,
            (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32")),
        )
        self.assertEqual(spec.watch, ("a", "b"))
        self.assertEqual((spec.threshold, spec.window, spec.block_for), (3, 1.5, 30.0))
        self.assertEqual(spec.max_clients, 50)

    def test_errors(self) -> None:
        """
        Each problem is reported under its key.
        """
        cases: List[Tuple[Dict[str, Any], str, str]] = [
            ({"block_clients": ["10.0.0.0/33"]}, "block_clients[0]", "not a CIDR network"),
            ({"block_clients": "10.0.0.0/8"}, "block_clients", "list of strings"),
            ({"block_clients": [10]}, "block_clients[0]", "must be a string"),
            ({"watch": "per-ip"}, "watch", "list of strings"),
            ({"watch": [""]}, "watch[0]", "not empty"),
            ({"watch": ["block"]}, "watch[0]", "cannot watch itself"),
            ({"watch": ["a"], "threshold": 0}, "threshold", "at least 1"),
            ({"watch": ["a"], "threshold": 2.5}, "threshold", "whole number"),
            ({"watch": ["a"], "threshold": MAX_THRESHOLD + 1}, "threshold", "at most"),
            ({"watch": ["a"], "window": 0}, "window", "positive"),
            ({"watch": ["a"], "window": "60"}, "window", "number of seconds"),
            ({"watch": ["a"], "block_for": -1}, "block_for", "positive"),
            ({"watch": ["a"], "block_for": True}, "block_for", "number of seconds"),
            ({"watch": ["a"], "max_clients": 0}, "max_clients", "at least 1"),
            ({"watch": ["a"], "blok_for": 1}, "blok_for", "unknown key"),
        ]
        for table, key, message in cases:
            _, errors = parsed(table)
            self.assertEqual(len(errors), 1, (table, errors))
            self.assertEqual(errors[0][0], f"filter.block.{key}", table)
            self.assertIn(message, errors[0][1], table)

    def test_nothing_to_do(self) -> None:
        """
        Without C{block_clients} and C{watch} the table is an error.
        """
        _, errors = parsed({"threshold": 3})
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0][0], "filter.block")
        self.assertIn("block_clients, watch", errors[0][1])

    def test_check_watch(self) -> None:
        """
        L{check_watch} (for the configuration loader) reports watched names
        that are not C{rate_limit} filters.
        """
        spec, _ = parsed({"watch": ["per-ip", "office", "nope"]})
        errors = ErrorList()
        types = {"per-ip": "rate_limit", "office": "acl", "block": "ip_block"}
        check_watch("block", spec, types, errors)
        self.assertEqual(
            errors.items,
            [
                (
                    "filter.block.watch[1]",
                    "'office' is a 'acl' filter; only rate_limit filters report refusals",
                ),
                ("filter.block.watch[2]", "unknown filter 'nope'"),
            ],
        )

    def test_registered(self) -> None:
        """
        The type is registered as C{ip_block}; L{build} subscribes to the
        process's event bus, L{IpBlockFilter.close} unsubscribes.
        """
        module = filter_type("ip_block")
        assert module is not None
        self.assertIs(module.parse, parse)
        spec, _ = parsed({"watch": ["test-ip-block-registered"], "threshold": 1})
        flt = build("block", spec, Clock())
        self.addCleanup(flt.close)
        self.assertTrue(verifyObject(IRequestFilter, flt))
        events.limited("test-ip-block-registered", "192.0.2.1")
        self.assertIsNotNone(flt.filter_request(request()))
        flt.close()
        self.assertIsNone(flt.filter_request(request()))
        events.limited("test-ip-block-registered", "192.0.2.1")
        self.assertIsNone(flt.filter_request(request()))


class StaticTests(SynchronousTestCase):
    """
    C{block_clients}: listed networks always get 403.
    """

    def test_listed(self) -> None:
        """
        A client in a listed network is refused with 403 naming the filter
        and the network; others pass.
        """
        blocker = Blocker(self, {"block_clients": ["203.0.113.0/24", "2001:db8::/32"]})
        verdict = blocker("203.0.113.9")
        assert verdict is not None
        self.assertEqual(verdict.status, 403)
        self.assertEqual(verdict.rule, "block")
        self.assertIn("203.0.113.0/24", verdict.message)
        self.assertIn("filter block", verdict.message)
        self.assertIsNotNone(blocker("2001:db8::5"))
        self.assertIsNotNone(blocker("::ffff:203.0.113.1"))
        self.assertIsNone(blocker("203.0.114.1"))
        self.assertIsNone(blocker("2001:db9::1"))
        self.assertIsNone(blocker("not-an-address"))


class AutomaticTests(SynchronousTestCase):
    """
    C{watch}: clients refused C{threshold} times within C{window} seconds
    are blocked for C{block_for} seconds.
    """

    TABLE = {"watch": ["per-ip"], "threshold": 3, "window": 10, "block_for": 100}

    def test_blocked_at_threshold(self) -> None:
        """
        Below the threshold nothing happens; at it the client gets 403
        naming this filter and the rate limit, and the block is logged.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse(times=2)
        self.assertIsNone(blocker())
        blocker.refuse()
        verdict = blocker()
        assert verdict is not None
        self.assertEqual(verdict.status, 403)
        self.assertEqual(verdict.rule, "block")
        self.assertIn("blocked by filter block", verdict.message)
        self.assertIn("per-ip", verdict.message)
        self.assertIn("100 s", verdict.message)
        [event] = [e for e in blocker.logged if e.get("action") == "blocked"]
        self.assertEqual(event["client"], "192.0.2.1")
        self.assertEqual(event["filter"], "block")
        self.assertEqual(event["watched"], "per-ip")
        self.assertEqual(event["count"], 3)

    def test_window_slides(self) -> None:
        """
        Only refusals within the last C{window} seconds count.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse()
        blocker.clock.advance(6)
        blocker.refuse()
        blocker.clock.advance(6)
        blocker.refuse()  # the first is 12 s old: two within 10 s
        self.assertIsNone(blocker())
        blocker.clock.advance(3)
        blocker.refuse()  # 6, 12 and 15: three within 10 s
        self.assertIsNotNone(blocker())

    def test_expires(self) -> None:
        """
        The block ends after C{block_for} seconds on the clock, by a timer
        that logs it; then the count starts again from zero.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse(times=3)
        blocker.clock.advance(99.9)
        self.assertIsNotNone(blocker())
        self.assertEqual(blocker.filter.blocked(), {"192.0.2.1": 1_700_000_100.0})
        blocker.clock.advance(0.1)
        self.assertEqual(blocker.actions(), [("blocked", "192.0.2.1"), ("unblocked", "192.0.2.1")])
        self.assertEqual(blocker.clock.getDelayedCalls(), [])
        self.assertIsNone(blocker())
        blocker.refuse(times=2)
        self.assertIsNone(blocker())

    def test_expiry_without_timer(self) -> None:
        """
        A block whose end has passed is over even before its timer ran.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse(times=3)
        blocker.clock.rightNow += 100  # time passes, the timer has not run
        self.assertIsNone(blocker())
        self.assertEqual(blocker.actions()[-1], ("unblocked", "192.0.2.1"))

    def test_several_blocks_expire_in_order(self) -> None:
        """
        Each block lasts C{block_for} from its own start; one timer at a
        time is pending.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse("192.0.2.1", 3)
        blocker.clock.advance(30)
        blocker.refuse("192.0.2.2", 3)
        self.assertEqual(len(blocker.clock.getDelayedCalls()), 1)
        blocker.clock.advance(70)
        self.assertIsNone(blocker("192.0.2.1"))
        self.assertIsNotNone(blocker("192.0.2.2"))
        self.assertEqual(len(blocker.clock.getDelayedCalls()), 1)
        blocker.clock.advance(30)
        self.assertIsNone(blocker("192.0.2.2"))
        self.assertEqual(blocker.clock.getDelayedCalls(), [])

    def test_isolated_by_client(self) -> None:
        """
        Refusals of one client neither count for nor block another.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse("192.0.2.1", 2)
        blocker.refuse("192.0.2.2", 2)
        self.assertIsNone(blocker("192.0.2.1"))
        self.assertIsNone(blocker("192.0.2.2"))
        blocker.refuse("192.0.2.1")
        self.assertIsNotNone(blocker("192.0.2.1"))
        self.assertIsNone(blocker("192.0.2.2"))

    def test_only_watched(self) -> None:
        """
        Refusals by filters not watched do not count; those of all watched
        ones count together.
        """
        blocker = Blocker(self, dict(self.TABLE, watch=["per-ip", "per-user"]))
        blocker.refuse(times=5, by="other")
        self.assertIsNone(blocker())
        blocker.refuse(times=2, by="per-ip")
        blocker.refuse(times=1, by="per-user")
        verdict = blocker()
        assert verdict is not None
        self.assertIn("per-user", verdict.message)

    def test_block_not_extended(self) -> None:
        """
        Refusals of a client already blocked do not lengthen its block.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse(times=3)
        blocker.clock.advance(50)
        blocker.refuse(times=10)
        blocker.clock.advance(50)
        self.assertIsNone(blocker())

    def test_idle_counts_forgotten(self) -> None:
        """
        A client's refusal count is dropped once its last refusal is older
        than C{window}.
        """
        blocker = Blocker(self, self.TABLE)
        for i in range(50):
            blocker.refuse(f"10.0.0.{i}")
        self.assertEqual(len(blocker.filter._counts), 50)
        blocker.clock.advance(11)
        blocker.refuse("10.0.1.1")
        self.assertEqual(list(blocker.filter._counts), ["10.0.1.1"])

    def test_max_clients(self) -> None:
        """
        At most C{max_clients} counts and blocks are kept: the least
        recently refused count, and the oldest block (logged), go first.
        """
        blocker = Blocker(self, dict(self.TABLE, max_clients=2))
        blocker.refuse("10.0.0.1", 2)
        blocker.refuse("10.0.0.2", 2)
        blocker.refuse("10.0.0.3", 2)
        self.assertEqual(list(blocker.filter._counts), ["10.0.0.2", "10.0.0.3"])
        blocker.refuse("10.0.0.1")  # counted from zero again
        self.assertIsNone(blocker("10.0.0.1"))
        for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4"]:
            blocker.refuse(ip, 3)
        self.assertEqual(sorted(blocker.filter.blocked()), ["10.0.0.3", "10.0.0.4"])
        self.assertIsNone(blocker("10.0.0.2"))
        self.assertIn(("unblocked", "10.0.0.2"), blocker.actions())

    def test_close(self) -> None:
        """
        L{IpBlockFilter.close} stops counting and cancels the timer.
        """
        blocker = Blocker(self, self.TABLE)
        blocker.refuse(times=3)
        blocker.filter.close()
        self.assertEqual(blocker.clock.getDelayedCalls(), [])
        blocker.refuse(times=3)
        self.assertIsNone(blocker())


class WithRateLimitTests(SynchronousTestCase):
    """
    An C{ip_block} before the C{rate_limit} it watches, as configured.
    """

    def test_chain(self) -> None:
        """
        A client hammering past its rate limit gets 429s, then 403 from the
        block, which stops after C{block_for}; other clients go on.
        """
        clock = Clock()
        bus = Events()
        errors = ErrorList()
        limit_spec = parse_rate_limit("per-ip", {"rate": 2, "per": 1}, errors, "/")
        limit = RateLimitFilter("per-ip", limit_spec, clock, bus)
        block_spec, _ = parsed(
            {"watch": ["per-ip"], "threshold": 5, "window": 10, "block_for": 60}
        )
        block = IpBlockFilter("block", block_spec, clock, bus)
        self.addCleanup(block.close)
        self.assertEqual(errors.items, [])

        def chain(ip: str) -> Optional[int]:
            for flt in (block, limit):
                verdict = flt.filter_request(request(ip))
                if verdict is not None:
                    return verdict.status
            return None

        statuses = [chain("192.0.2.1") for _ in range(10)]
        self.assertEqual(statuses, [None, None, 429, 429, 429, 429, 429, 403, 403, 403])
        self.assertIsNone(chain("192.0.2.2"))
        clock.advance(59)
        self.assertEqual(chain("192.0.2.1"), 403)
        clock.advance(1)
        self.assertIsNone(chain("192.0.2.1"))


class EventsTests(SynchronousTestCase):
    """
    L{Events}: the bus between rate limits and blocks.
    """

    def test_subscribe(self) -> None:
        """
        Subscribers of a filter name get its refusals, in order; others
        and unsubscribed ones do not.
        """
        bus = Events()
        seen: List[Tuple[str, str]] = []

        def one(ip: str) -> None:
            seen.append(("one", ip))

        def two(ip: str) -> None:
            seen.append(("two", ip))

        bus.subscribe("a", one)
        bus.subscribe("a", two)
        bus.subscribe("b", one)
        bus.limited("a", "192.0.2.1")
        bus.unsubscribe("a", one)
        bus.unsubscribe("a", one)
        bus.unsubscribe("c", one)
        bus.limited("a", "192.0.2.2")
        bus.limited("none", "192.0.2.3")
        self.assertEqual(
            seen, [("one", "192.0.2.1"), ("two", "192.0.2.1"), ("two", "192.0.2.2")]
        )
