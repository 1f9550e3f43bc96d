"""
Tests for L{twisted_proxy.upstream.backend}.
"""

from __future__ import annotations

import random
from typing import Any, List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.model import BackendConfig, HealthConfig, ServerConfig
from twisted_proxy.upstream.backend import BUSY, Backend, Server
from twisted_proxy.upstream.balancer import ConsistentHash, RoundRobin


def server(
    port: int,
    host: str = "127.0.0.1",
    weight: int = 1,
    max_connections: Optional[int] = None,
    backup: bool = False,
    scheme: str = "http",
) -> ServerConfig:
    h = f"[{host}]" if ":" in host else host
    return ServerConfig(
        url=f"{scheme}://{h}:{port}",
        scheme=scheme,
        host=host,
        port=port,
        weight=weight,
        max_connections=max_connections,
        backup=backup,
    )


def make(*servers: ServerConfig, **options: Any) -> Tuple[Backend, Clock]:
    clock = Clock()
    clock.advance(1000)
    config = BackendConfig(name=options.pop("name", "api"), servers=tuple(servers), **options)
    return Backend(config, clock, random.Random(1)), clock


class Calls:
    """
    Records calls of the waiter callbacks.
    """

    def __init__(self) -> None:
        self.log: List[str] = []

    def callback(self, tag: str) -> Any:
        return lambda: self.log.append(tag)


class ServerTests(SynchronousTestCase):
    """
    L{Server} carries a server's config and its live state.
    """

    def test_fields(self) -> None:
        """
        A new server is up, idle, not ejected, and labelled C{host:port}.
        """
        s = Server(server(5001, weight=3, max_connections=10))
        self.assertEqual(s.name, "http://127.0.0.1:5001")
        self.assertEqual(s.address, ("127.0.0.1", 5001))
        self.assertEqual(s.label, "127.0.0.1:5001")
        self.assertEqual((s.weight, s.max_connections, s.backup), (3, 10, False))
        self.assertEqual((s.up, s.in_flight, s.ejected_until), (True, 0, 0.0))

    def test_ipv6_label(self) -> None:
        """
        An IPv6 server's label has the address in brackets.
        """
        s = Server(server(8080, host="::1"))
        self.assertEqual(s.label, "[::1]:8080")
        self.assertEqual(s.address, ("::1", 8080))


class ChooseTests(SynchronousTestCase):
    """
    L{Backend.choose} picks among servers that are available now.
    """

    def test_balanced_over_primaries(self) -> None:
        """
        The configured balancer spreads requests over the primary servers.
        """
        backend, _ = make(server(1), server(2))
        self.assertIsInstance(backend.balancer, RoundRobin)
        chosen = [backend.choose().port for _ in range(4)]
        self.assertEqual(chosen, [1, 2, 1, 2])

    def test_skips_down(self) -> None:
        """
        A server the health check has down is never chosen.
        """
        backend, _ = make(server(1), server(2))
        backend.set_up(backend.servers[0], False, "probe failed")
        self.assertEqual({backend.choose().port for _ in range(4)}, {2})

    def test_skips_ejected(self) -> None:
        """
        A server ejected by passive health is skipped until its ejection
        ends.
        """
        backend, clock = make(server(1), server(2))
        backend.servers[0].ejected_until = clock.seconds() + 5
        self.assertEqual({backend.choose().port for _ in range(4)}, {2})
        clock.advance(5)
        self.assertEqual({backend.choose().port for _ in range(4)}, {1, 2})

    def test_skips_excluded(self) -> None:
        """
        Servers in C{exclude} (already tried for this request) are skipped.
        """
        backend, _ = make(server(1), server(2), server(3))
        first, second = backend.servers[:2]
        for _ in range(4):
            self.assertEqual(backend.choose(exclude=[first, second]).port, 3)

    def test_none_when_all_down(self) -> None:
        """
        With no server up (and no backup), the answer is L{None}.
        """
        backend, _ = make(server(1), server(2))
        for s in backend.servers:
            backend.set_up(s, False)
        self.assertIsNone(backend.choose())

    def test_none_when_all_excluded(self) -> None:
        """
        With every server excluded, the answer is L{None}, not L{BUSY}.
        """
        backend, _ = make(server(1))
        self.assertIsNone(backend.choose(exclude=backend.servers))

    def test_backups_unused_while_a_primary_is_up(self) -> None:
        """
        A backup server gets nothing while any primary server is up.
        """
        backend, _ = make(server(1), server(2), server(9, backup=True))
        backend.set_up(backend.servers[0], False)
        self.assertEqual({backend.choose().port for _ in range(6)}, {2})

    def test_backups_when_no_primary_up(self) -> None:
        """
        When every primary is down the backups take the requests, balanced
        among themselves; when a primary comes back, it takes over.
        """
        backend, _ = make(server(1), server(8, backup=True), server(9, backup=True))
        primary = backend.servers[0]
        backend.set_up(primary, False)
        self.assertEqual({backend.choose().port for _ in range(4)}, {8, 9})
        backend.set_up(primary, True)
        self.assertEqual({backend.choose().port for _ in range(4)}, {1})

    def test_backups_when_primaries_ejected(self) -> None:
        """
        Ejected primaries count as not up: the backups take over.
        """
        backend, clock = make(server(1), server(9, backup=True))
        backend.servers[0].ejected_until = clock.seconds() + 10
        self.assertEqual(backend.choose().port, 9)

    def test_busy_at_max_connections(self) -> None:
        """
        When every up server is at its C{max_connections}, the answer is
        L{BUSY} (wait for a slot), not L{None}; backups are not used for
        that.
        """
        backend, _ = make(
            server(1, max_connections=1), server(2, max_connections=2), server(9, backup=True)
        )
        taken = []
        for _ in range(3):
            s = backend.choose()
            self.assertIsInstance(s, Server)
            backend.acquire(s)
            taken.append(s.port)
        self.assertEqual(sorted(taken), [1, 2, 2])
        self.assertEqual(backend.choose(), BUSY)

    def test_full_server_skipped(self) -> None:
        """
        A server at its limit is skipped while another has room.
        """
        backend, _ = make(server(1, max_connections=1), server(2))
        full = backend.servers[0]
        backend.acquire(full)
        self.assertEqual({backend.choose().port for _ in range(4)}, {2})

    def test_busy_ignores_down_servers(self) -> None:
        """
        A down server with room does not make the backend available, and a
        full server that is down does not make it busy.
        """
        backend, _ = make(server(1, max_connections=1), server(2, max_connections=1))
        a, b = backend.servers
        backend.acquire(a)
        backend.set_up(b, False)
        self.assertEqual(backend.choose(), BUSY)
        backend.set_up(a, False)
        self.assertIsNone(backend.choose())

    def test_acquire_release_count(self) -> None:
        """
        C{acquire} and C{release} keep the server's in-flight count.
        """
        backend, _ = make(server(1))
        s = backend.servers[0]
        backend.acquire(s)
        backend.acquire(s)
        backend.release(s)
        self.assertEqual(s.in_flight, 1)

    def test_hash_balancer_with_key(self) -> None:
        """
        With C{balance = "hash"}, the same key gets the same server.
        """
        backend, _ = make(server(1), server(2), server(3), balance="hash")
        self.assertIsInstance(backend.balancer, ConsistentHash)
        first = backend.choose(b"10.1.2.3")
        for _ in range(5):
            self.assertIs(backend.choose(b"10.1.2.3"), first)

    def test_custom_balancer(self) -> None:
        """
        A dotted C{balance} names a custom balancer.
        """
        backend, _ = make(server(1), server(2), balance="tests.test_balancer:MyBalancer")
        self.assertEqual(backend.choose().port, 2)

    def test_status(self) -> None:
        """
        C{status()} reports each server's state.
        """
        backend, clock = make(server(1), server(2, weight=2, backup=True))
        a, b = backend.servers
        backend.acquire(a)
        a.ejected_until = clock.seconds() + 1
        backend.set_up(b, False)
        now = clock.seconds()
        self.assertEqual(
            backend.status(),
            [
                {"server": "http://127.0.0.1:1", "up": True, "ejected": True,
                 "in_flight": 1, "weight": 1, "backup": False, "changed_at": 0.0, "why": ""},
                {"server": "http://127.0.0.1:2", "up": False, "ejected": False,
                 "in_flight": 0, "weight": 2, "backup": True, "changed_at": now,
                 "why": "health check failed"},
            ],
        )

    def test_details(self) -> None:
        """
        C{details()} reports the queue, the balancer's last picks and the
        servers' last state changes, with the time and the reason of each.
        """
        backend, clock = make(server(1), server(2), max_fails=1, fail_timeout=10.0)
        a, b = backend.servers
        picked = [backend.choose() for _ in range(3)]
        clock.advance(5)
        backend.set_up(b, False, "timed out after 1s")
        backend.report_failure(a, "connection refused")
        clock.advance(1)
        backend.set_up(b, True)
        details = backend.details()
        self.assertEqual(details["picks"], [s.label for s in picked])
        self.assertEqual(details["queue"], 0)
        self.assertEqual(
            [(e["time"], e["server"], e["state"]) for e in details["events"]],
            [(clock.seconds() - 1, b.name, "down"), (clock.seconds() - 1, a.name, "ejected"),
             (clock.seconds(), b.name, "up")],
        )
        self.assertEqual(details["events"][0]["why"], "timed out after 1s")
        self.assertIn("connection refused", details["events"][1]["why"])
        self.assertEqual(details["events"][1]["until"], clock.seconds() - 1 + 10.0)
        self.assertEqual(details["events"][2]["why"], "health check passed")


class QueueTests(SynchronousTestCase):
    """
    Requests wait for a free slot when every up server is full.
    """

    def setUp(self) -> None:
        self.backend, self.clock = make(server(1, max_connections=1), queue_timeout=5.0)
        self.server = self.backend.servers[0]
        self.backend.acquire(self.server)
        self.calls = Calls()

    def wait(self, tag: str) -> Any:
        return self.backend.wait(self.calls.callback(tag), self.calls.callback(tag + "-timeout"))

    def test_release_wakes_waiter(self) -> None:
        """
        Releasing a slot runs the waiting request's callback, which then
        finds the server free; its queue timer is cancelled.
        """
        self.assertEqual(self.backend.choose(), BUSY)
        self.wait("w")
        self.assertEqual(self.calls.log, [])
        self.backend.release(self.server)
        self.assertEqual(self.calls.log, ["w"])
        self.assertIs(self.backend.choose(), self.server)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.calls.log, ["w"])

    def test_one_waiter_per_release_in_order(self) -> None:
        """
        Each release wakes one waiter, first come first served.
        """
        self.wait("first")
        self.wait("second")
        self.backend.release(self.server)
        self.assertEqual(self.calls.log, ["first"])
        self.backend.acquire(self.server)
        self.backend.release(self.server)
        self.assertEqual(self.calls.log, ["first", "second"])
        self.assertEqual(len(self.backend.waiters), 0)

    def test_queue_timeout(self) -> None:
        """
        A waiter not woken within C{queue_timeout} gets C{on_timeout()} and
        leaves the queue; a later release does not run it.
        """
        self.wait("w")
        self.clock.advance(4.9)
        self.assertEqual(self.calls.log, [])
        self.clock.advance(0.1)
        self.assertEqual(self.calls.log, ["w-timeout"])
        self.assertEqual(len(self.backend.waiters), 0)
        self.backend.release(self.server)
        self.assertEqual(self.calls.log, ["w-timeout"])

    def test_cancel(self) -> None:
        """
        A cancelled waiter is never called back (neither by a release nor
        by its timeout) and its timer is gone.
        """
        waiter = self.wait("w")
        waiter.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.backend.waiters), 0)
        self.backend.release(self.server)
        self.clock.advance(10)
        self.assertEqual(self.calls.log, [])
        waiter.cancel()  # twice is harmless

    def test_cancelled_waiter_skipped(self) -> None:
        """
        A release passes over a cancelled waiter to the next one.
        """
        first = self.wait("first")
        self.wait("second")
        first.cancelled = True  # as if cancelled without leaving the queue
        self.backend.release(self.server)
        self.assertEqual(self.calls.log, ["second"])

    def test_server_up_wakes_waiters(self) -> None:
        """
        A server coming up wakes every waiting request.
        """
        backend, _ = make(server(1), server(2))
        a, b = backend.servers
        backend.set_up(a, False)
        backend.set_up(b, False)
        backend.wait(self.calls.callback("one"), self.calls.callback("one-timeout"))
        backend.wait(self.calls.callback("two"), self.calls.callback("two-timeout"))
        backend.set_up(a, True)
        self.assertEqual(self.calls.log, ["one", "two"])
        self.assertEqual(len(backend.waiters), 0)


class QueueSizeTests(SynchronousTestCase):
    """
    C{queue_size} bounds the requests waiting per backend: one more is
    refused at once (L{Backend.wait} gives L{None}).
    """

    def setUp(self) -> None:
        self.backend, self.clock = make(
            server(1, max_connections=1), queue_timeout=5.0, queue_size=2
        )
        self.server = self.backend.servers[0]
        self.backend.acquire(self.server)
        self.calls = Calls()

    def wait(self, tag: str) -> Any:
        return self.backend.wait(self.calls.callback(tag), self.calls.callback(tag + "-timeout"))

    def test_default(self) -> None:
        """
        Without C{queue_size}, 1000 requests may wait per backend.
        """
        backend, _ = make(server(1))
        self.assertEqual(backend.queue_size, 1000)

    def test_full_refused(self) -> None:
        """
        With C{queue_size} requests waiting, the next is refused: no waiter,
        no timer, neither of its callbacks ever runs, and the refusal is
        counted.
        """
        self.assertIsNotNone(self.wait("a"))
        self.assertIsNotNone(self.wait("b"))
        timers = len(self.clock.getDelayedCalls())
        self.assertIsNone(self.wait("c"))
        self.assertEqual(len(self.backend.waiters), 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), timers)
        self.assertEqual(self.backend.queue_refused, 1)
        self.backend.release(self.server)
        self.clock.advance(10)
        self.assertEqual(self.calls.log, ["a", "b-timeout"])

    def test_room_again(self) -> None:
        """
        Once a waiter leaves the queue (woken, timed out or cancelled), a
        new request may wait again.
        """
        self.wait("a")
        b = self.wait("b")
        self.assertIsNone(self.wait("refused"))
        self.backend.release(self.server)  # wakes a
        self.assertIsNotNone(self.wait("c"))
        self.assertIsNone(self.wait("refused"))
        b.cancel()
        self.assertIsNotNone(self.wait("d"))
        self.assertIsNone(self.wait("refused"))
        self.clock.advance(5.0)  # c and d time out
        self.assertIsNotNone(self.wait("e"))
        self.assertEqual(self.calls.log, ["a", "c-timeout", "d-timeout"])

    def test_zero(self) -> None:
        """
        C{queue_size = 0}: a request never waits.
        """
        backend, clock = make(server(1, max_connections=1), queue_size=0)
        backend.acquire(backend.servers[0])
        self.assertEqual(backend.choose(), BUSY)
        self.assertIsNone(backend.wait(self.calls.callback("w"), self.calls.callback("t")))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_warning_per_episode(self) -> None:
        """
        A full queue logs one warning naming the backend, however many
        requests it refuses; after the queue had room again, the next full
        episode logs again.
        """
        self.wait("a")
        self.wait("b")
        with capturedLogs() as events:
            for _ in range(5):
                self.assertIsNone(self.wait("refused"))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"].name, "warn")
        self.assertEqual(events[0]["backend"], "api")
        self.assertEqual(events[0]["size"], 2)
        self.assertEqual(self.backend.queue_refused, 5)
        self.backend.release(self.server)
        with capturedLogs() as events:
            self.assertIsNotNone(self.wait("c"))
            self.assertIsNone(self.wait("refused"))
            self.assertIsNone(self.wait("refused"))
        self.assertEqual(len(events), 1)


class PassiveHealthTests(SynchronousTestCase):
    """
    L{Backend.report_failure} ejects a failing server for C{fail_timeout}.
    """

    def test_ejected_after_max_fails(self) -> None:
        """
        C{max_fails} failures within C{fail_timeout} eject the server; it
        is chosen again once C{fail_timeout} has passed.
        """
        backend, clock = make(server(1), server(2), max_fails=3, fail_timeout=10.0)
        bad = backend.servers[0]
        backend.report_failure(bad, "connection refused")
        clock.advance(1)
        backend.report_failure(bad, "connection refused")
        self.assertEqual({backend.choose().port for _ in range(4)}, {1, 2})
        with capturedLogs() as events:
            backend.report_failure(bad, "connection refused")
        self.assertEqual({backend.choose().port for _ in range(4)}, {2})
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["backend"], "api")
        self.assertEqual(events[0]["server"], "http://127.0.0.1:1")
        self.assertEqual(events[0]["why"], "connection refused")
        self.assertEqual(events[0]["fails"], 3)
        self.assertEqual(backend.status()[0]["ejected"], True)
        clock.advance(9.9)
        self.assertEqual({backend.choose().port for _ in range(4)}, {2})
        clock.advance(0.1)
        self.assertEqual({backend.choose().port for _ in range(4)}, {1, 2})

    def test_failures_outside_window_forgotten(self) -> None:
        """
        Failures older than C{fail_timeout} do not count.
        """
        backend, clock = make(server(1), max_fails=3, fail_timeout=10.0)
        bad = backend.servers[0]
        for _ in range(5):
            backend.report_failure(bad, "reset")
            clock.advance(6)
        self.assertIs(backend.choose(), bad)

    def test_max_fails_zero_disables(self) -> None:
        """
        With C{max_fails = 0} no number of failures ejects a server.
        """
        backend, _ = make(server(1), max_fails=0)
        bad = backend.servers[0]
        for _ in range(100):
            backend.report_failure(bad, "refused")
        self.assertIs(backend.choose(), bad)
        self.assertEqual(bad.fail_times, [])

    def test_success_clears_failures(self) -> None:
        """
        A success forgets earlier failures: failures must be consecutive
        to eject.
        """
        backend, _ = make(server(1), server(2), max_fails=3)
        s = backend.servers[0]
        backend.report_failure(s, "refused")
        backend.report_failure(s, "refused")
        backend.report_success(s)
        backend.report_failure(s, "refused")
        backend.report_failure(s, "refused")
        self.assertFalse(backend.status()[0]["ejected"])
        backend.report_failure(s, "refused")
        self.assertTrue(backend.status()[0]["ejected"])

    def test_counting_restarts_after_ejection(self) -> None:
        """
        After an ejection ends, the server needs C{max_fails} new failures
        to be ejected again.
        """
        backend, clock = make(server(1), server(2), max_fails=2, fail_timeout=5.0)
        s = backend.servers[0]
        backend.report_failure(s, "x")
        backend.report_failure(s, "x")
        self.assertTrue(backend.status()[0]["ejected"])
        clock.advance(5)
        backend.report_failure(s, "x")
        self.assertFalse(backend.status()[0]["ejected"])


class ActiveHealthTests(SynchronousTestCase):
    """
    L{Backend.set_up} applies the active health check's verdicts.
    """

    def test_down_logged(self) -> None:
        """
        Going down changes the state and logs a warning with the reason.
        """
        backend, _ = make(server(1))
        s = backend.servers[0]
        with capturedLogs() as events:
            backend.set_up(s, False, "no answer within 2s")
        self.assertFalse(s.up)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["why"], "no answer within 2s")
        self.assertEqual(events[0]["server"], s.name)
        self.assertEqual(events[0]["log_level"].name, "warn")

    def test_up_logged_and_clears_ejection(self) -> None:
        """
        Coming up logs, and clears a passive ejection and its failures.
        """
        backend, clock = make(server(1))
        s = backend.servers[0]
        backend.set_up(s, False)
        s.ejected_until = clock.seconds() + 100
        s.fail_times = [clock.seconds()]
        with capturedLogs() as events:
            backend.set_up(s, True)
        self.assertTrue(s.up)
        self.assertEqual(s.ejected_until, 0.0)
        self.assertEqual(s.fail_times, [])
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"].name, "info")
        self.assertIs(backend.choose(), s)

    def test_no_change_no_log(self) -> None:
        """
        Setting the state a server already has does nothing and logs
        nothing.
        """
        backend, _ = make(server(1))
        s = backend.servers[0]
        with capturedLogs() as events:
            backend.set_up(s, True)
        self.assertEqual(events, [])
        self.assertTrue(s.up)


class KeyTests(SynchronousTestCase):
    """
    L{Backend.key_for} is what the hash balancer hashes.
    """

    headers = [
        (b"Host", b"example.com"),
        (b"X-User", b"alice"),
        (b"Cookie", b"theme=dark; session=abc123; lang=en"),
    ]

    def test_not_hashing(self) -> None:
        """
        Without C{balance = "hash"} the key is empty.
        """
        backend, _ = make(server(1))
        self.assertEqual(backend.key_for("10.0.0.1", self.headers), b"")

    def test_client_ip(self) -> None:
        """
        The default key is the client's address.
        """
        backend, _ = make(server(1), balance="hash")
        self.assertEqual(backend.key_for("10.0.0.1", self.headers), b"10.0.0.1")

    def test_header(self) -> None:
        """
        C{header:NAME} uses that header's value, the name matched in any
        case.
        """
        backend, _ = make(server(1), balance="hash", hash_key="header:x-USER")
        self.assertEqual(backend.key_for("10.0.0.1", self.headers), b"alice")

    def test_header_missing(self) -> None:
        """
        Without the header, the client's address is the key.
        """
        backend, _ = make(server(1), balance="hash", hash_key="header:X-Tenant")
        self.assertEqual(backend.key_for("10.0.0.1", self.headers), b"10.0.0.1")

    def test_cookie(self) -> None:
        """
        C{cookie:NAME} uses that cookie's value among several.
        """
        backend, _ = make(server(1), balance="hash", hash_key="cookie:session")
        self.assertEqual(backend.key_for("10.0.0.1", self.headers), b"abc123")

    def test_cookie_in_second_header(self) -> None:
        """
        The cookie is found in any of several C{Cookie} headers.
        """
        backend, _ = make(server(1), balance="hash", hash_key="cookie:sid")
        headers = [(b"cookie", b"a=1"), (b"COOKIE", b"sid=xyz")]
        self.assertEqual(backend.key_for("10.0.0.1", headers), b"xyz")

    def test_cookie_missing(self) -> None:
        """
        Without the cookie (or with one whose name only starts the same),
        the client's address is the key.
        """
        backend, _ = make(server(1), balance="hash", hash_key="cookie:sess")
        self.assertEqual(backend.key_for("10.0.0.1", self.headers), b"10.0.0.1")
        self.assertEqual(backend.key_for("10.0.0.2", []), b"10.0.0.2")


class RetryAfterTests(SynchronousTestCase):
    """
    L{Backend.retry_after}: how long a client should wait when no server
    is up.
    """

    def test_from_health(self) -> None:
        """
        With an active health check: the time a server needs to come back
        (C{interval * rise}), rounded up.
        """
        backend, _ = make(server(1), health=HealthConfig(interval=5.0, rise=2))
        self.assertEqual(backend.retry_after(), 10)
        backend, _ = make(server(1), health=HealthConfig(interval=0.5, rise=3))
        self.assertEqual(backend.retry_after(), 2)

    def test_from_fail_timeout(self) -> None:
        """
        Without one: C{fail_timeout}, rounded up, at least one second.
        """
        backend, _ = make(server(1), fail_timeout=10.0)
        self.assertEqual(backend.retry_after(), 10)
        backend, _ = make(server(1), fail_timeout=2.5)
        self.assertEqual(backend.retry_after(), 3)
        backend, _ = make(server(1), fail_timeout=0.0)
        self.assertEqual(backend.retry_after(), 1)


class OnlyServerTests(SynchronousTestCase):
    """
    A backend's only server is never ejected by passive health (nginx's
    rule).
    """

    def test_only_server_kept(self) -> None:
        """
        However many failures the only server has, it stays chosen.
        """
        backend, clock = make(server(1), max_fails=1, fail_timeout=10.0)
        for _ in range(5):
            backend.report_failure(backend.servers[0], "connection refused")
        self.assertEqual(backend.choose().port, 1)
        self.assertFalse(backend.status()[0]["ejected"])
