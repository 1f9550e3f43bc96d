"""
Tests for L{twisted_proxy.upstream.health}.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_proxy.interfaces import IHealthProbe
from twisted_proxy.model import BackendConfig, HealthConfig, ServerConfig
from twisted_proxy.upstream.backend import Backend, Server
from twisted_proxy.upstream.health import (
    HealthChecker,
    HTTPProbe,
    TCPProbe,
    status_ok,
)


@implementer(IHealthProbe)
class FakeProbe:
    """
    A probe whose answers the test controls.

    @ivar mode: C{"defer"} (return a Deferred kept in C{pending}),
        C{"ok"}, C{"fail"}, C{"false"} (fire at once) or C{"raise"}.
    """

    def __init__(self) -> None:
        self.mode = "defer"
        self.calls: List[Server] = []
        self.pending: List[Tuple[Server, Deferred]] = []

    def probe(self, server: Server) -> "Deferred[bool]":
        self.calls.append(server)
        if self.mode == "raise":
            raise RuntimeError("probe bug")
        d: Deferred = Deferred()
        if self.mode == "ok":
            d.callback(True)
        elif self.mode == "false":
            d.callback(False)
        elif self.mode == "fail":
            d.errback(ConnectionRefusedError("refused"))
        else:
            self.pending.append((server, d))
        return d

    def answer(self, ok: bool = True) -> None:
        """
        Fire every pending probe.
        """
        pending, self.pending = self.pending, []
        for _, d in pending:
            d.callback(ok)


def make(
    servers: int = 1, **health: Any
) -> Tuple[HealthChecker, Backend, FakeProbe, Clock]:
    clock = Clock()
    config = HealthConfig(**{"interval": 5.0, "timeout": 2.0, "rise": 2, "fall": 3, **health})
    backend = Backend(
        BackendConfig(
            name="api",
            servers=tuple(
                ServerConfig(url=f"http://127.0.0.1:{5000 + i}", scheme="http",
                             host="127.0.0.1", port=5000 + i)
                for i in range(servers)
            ),
            health=config,
        ),
        clock,
    )
    probe = FakeProbe()
    checker = HealthChecker(backend, config, clock, probe)
    return checker, backend, probe, clock


class FakeProbeTests(SynchronousTestCase):
    """
    The test double honours the interface it stands in for.
    """

    def test_interface(self) -> None:
        """
        L{FakeProbe} provides L{IHealthProbe}.
        """
        self.assertTrue(verifyObject(IHealthProbe, FakeProbe()))


class StatusOkTests(SynchronousTestCase):
    """
    L{status_ok}: which probe statuses count as healthy.
    """

    def test_default_2xx_3xx(self) -> None:
        """
        Without C{expect}, any 2xx or 3xx is healthy.
        """
        for code in (200, 204, 299, 301, 304, 399):
            self.assertTrue(status_ok(code, ()), code)
        for code in (100, 101, 199, 400, 404, 500, 503):
            self.assertFalse(status_ok(code, ()), code)

    def test_explicit_list(self) -> None:
        """
        With C{expect}, exactly the listed statuses are healthy.
        """
        self.assertTrue(status_ok(418, (418,)))
        self.assertTrue(status_ok(204, (200, 204)))
        self.assertFalse(status_ok(200, (204,)))
        self.assertFalse(status_ok(301, (200,)))


class ScheduleTests(SynchronousTestCase):
    """
    The checker probes every server at start and then every C{interval}.
    """

    def test_first_round_at_start(self) -> None:
        """
        Starting the service probes every server at once.
        """
        checker, backend, probe, _ = make(servers=3)
        probe.mode = "ok"
        self.assertEqual(probe.calls, [])
        checker.startService()
        self.addCleanup(checker.stopService)
        self.assertEqual(probe.calls, backend.servers)
        self.assertEqual(checker.rounds, 1)

    def test_interval(self) -> None:
        """
        The next round runs C{interval} seconds later, not earlier.
        """
        checker, _, probe, clock = make(interval=5.0)
        probe.mode = "ok"
        checker.startService()
        self.addCleanup(checker.stopService)
        clock.advance(4.9)
        self.assertEqual(len(probe.calls), 1)
        clock.advance(0.1)
        self.assertEqual(len(probe.calls), 2)
        clock.advance(5)
        self.assertEqual(len(probe.calls), 3)

    def test_fractional_interval(self) -> None:
        """
        An interval below a second works.
        """
        checker, _, probe, clock = make(interval=0.5, timeout=0.25)
        probe.mode = "ok"
        checker.startService()
        self.addCleanup(checker.stopService)
        clock.pump([0.5] * 4)
        self.assertEqual(len(probe.calls), 5)

    def test_waits_for_round(self) -> None:
        """
        A round in progress is not overlapped by the next one: the loop
        waits for every probe of the round to answer.
        """
        checker, _, probe, clock = make(interval=1.0, timeout=3.0)
        checker.startService()
        self.addCleanup(checker.stopService)
        clock.advance(2.5)
        self.assertEqual(len(probe.calls), 1)
        probe.answer(True)
        clock.advance(0.5)
        self.assertEqual(len(probe.calls), 2)

    def test_stop_service(self) -> None:
        """
        Stopping the service stops the rounds.
        """
        checker, _, probe, clock = make()
        probe.mode = "ok"
        checker.startService()
        checker.stopService()
        self.assertFalse(checker.running)
        self.assertIsNone(checker.loop)
        clock.advance(60)
        self.assertEqual(len(probe.calls), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_service_during_round(self) -> None:
        """
        Stopping while probes are in flight stops the loop too: no round
        runs after they answer.
        """
        checker, _, probe, clock = make(timeout=2.0)
        checker.startService()
        checker.stopService()
        clock.advance(2.0)  # the pending probe times out
        clock.advance(60)
        self.assertEqual(len(probe.calls), 1)
        self.assertEqual(clock.getDelayedCalls(), [])


class VerdictTests(SynchronousTestCase):
    """
    C{fall} consecutive failures take a server down; C{rise} consecutive
    successes bring it back.
    """

    def test_fall(self) -> None:
        """
        A server goes down after exactly C{fall} failed rounds.
        """
        checker, backend, probe, clock = make(fall=3)
        server = backend.servers[0]
        probe.mode = "fail"
        checker.startService()
        self.addCleanup(checker.stopService)
        clock.advance(5)
        self.assertTrue(server.up)
        with capturedLogs() as events:
            clock.advance(5)
        self.assertFalse(server.up)
        self.assertEqual([e["why"] for e in events], ["refused"])

    def test_false_counts_as_failure(self) -> None:
        """
        A probe answering C{False} (an unexpected status) is a failure.
        """
        checker, backend, probe, clock = make(fall=1)
        probe.mode = "false"
        with capturedLogs() as events:
            checker.startService()
        self.addCleanup(checker.stopService)
        self.assertFalse(backend.servers[0].up)
        self.assertEqual([e["why"] for e in events], ["unexpected status"])

    def test_fall_needs_consecutive(self) -> None:
        """
        A success between failures resets the count.
        """
        checker, backend, probe, clock = make(fall=2)
        checker.startService()
        self.addCleanup(checker.stopService)
        for ok in (False, True, False, True, False):
            probe.answer(ok)
            clock.advance(5)
        self.assertTrue(backend.servers[0].up)
        probe.answer(False)
        self.assertFalse(backend.servers[0].up)

    def test_rise(self) -> None:
        """
        A down server comes back after exactly C{rise} successful rounds.
        """
        checker, backend, probe, clock = make(rise=2, fall=1)
        server = backend.servers[0]
        probe.mode = "fail"
        checker.startService()
        self.addCleanup(checker.stopService)
        self.assertFalse(server.up)
        probe.mode = "ok"
        clock.advance(5)
        self.assertFalse(server.up)
        clock.advance(5)
        self.assertTrue(server.up)

    def test_rise_needs_consecutive(self) -> None:
        """
        A failure between successes resets the count.
        """
        checker, backend, probe, clock = make(rise=2, fall=1)
        server = backend.servers[0]
        probe.mode = "fail"
        checker.startService()
        self.addCleanup(checker.stopService)
        for mode in ("ok", "fail", "ok"):
            probe.mode = mode
            clock.advance(5)
            self.assertFalse(server.up, mode)
        clock.advance(5)
        self.assertTrue(server.up)

    def test_up_server_stays_up(self) -> None:
        """
        Successes on an up server change nothing and log nothing.
        """
        checker, backend, probe, clock = make()
        probe.mode = "ok"
        with capturedLogs() as events:
            checker.startService()
            clock.pump([5] * 5)
        self.addCleanup(checker.stopService)
        self.assertTrue(backend.servers[0].up)
        self.assertEqual(events, [])

    def test_servers_judged_separately(self) -> None:
        """
        Each server has its own counts.
        """
        checker, backend, probe, clock = make(servers=2, fall=1)
        checker.startService()
        self.addCleanup(checker.stopService)
        (first, d1), (second, d2) = probe.pending
        d1.callback(True)
        d2.callback(False)
        self.assertTrue(first.up)
        self.assertFalse(second.up)

    def test_recovery_wakes_backend_waiters(self) -> None:
        """
        A server coming back through the health check wakes requests
        waiting on the backend.
        """
        checker, backend, probe, clock = make(rise=1, fall=1)
        probe.mode = "fail"
        checker.startService()
        self.addCleanup(checker.stopService)
        woken: List[str] = []
        backend.wait(lambda: woken.append("w"), lambda: woken.append("timeout"))
        probe.mode = "ok"
        clock.advance(5)
        self.assertEqual(woken, ["w"])


class TimeoutTests(SynchronousTestCase):
    """
    A hanging probe is cut by C{timeout} and counts as a failure.
    """

    def test_hanging_probe_times_out(self) -> None:
        """
        A probe that never answers fails after C{timeout} seconds, with a
        reason saying so, and the loop goes on.
        """
        checker, backend, probe, clock = make(timeout=2.0, fall=1, interval=5.0)
        checker.startService()
        self.addCleanup(checker.stopService)
        (_, d), = probe.pending
        clock.advance(1.9)
        self.assertTrue(backend.servers[0].up)
        with capturedLogs() as events:
            clock.advance(0.1)
        self.assertFalse(backend.servers[0].up)
        self.assertEqual([e["why"] for e in events], ["no answer within 2s"])
        # the hanging Deferred was cancelled, not left pending
        self.assertTrue(d.called)
        clock.advance(3.0)
        self.assertEqual(len(probe.calls), 2)

    def test_answer_in_time_cancels_timer(self) -> None:
        """
        A probe that answers in time leaves no timeout pending: only the
        next round is scheduled.
        """
        checker, backend, probe, clock = make(timeout=2.0, interval=5.0, fall=1)
        checker.startService()
        self.addCleanup(checker.stopService)
        probe.answer(True)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(2.0)
        self.assertTrue(backend.servers[0].up)


class RobustnessTests(SynchronousTestCase):
    """
    Nothing a probe does stops the health checks.
    """

    def test_synchronous_raise(self) -> None:
        """
        A probe that raises counts as a failure and the next round still
        runs.
        """
        checker, backend, probe, clock = make(fall=2)
        probe.mode = "raise"
        checker.startService()
        self.addCleanup(checker.stopService)
        loop = checker.loop
        assert loop is not None
        self.assertTrue(loop.running)
        clock.advance(5)
        self.assertEqual(len(probe.calls), 2)
        self.assertFalse(backend.servers[0].up)
        self.assertTrue(loop.running)
        probe.mode = "ok"
        clock.pump([5, 5])
        self.assertEqual(len(probe.calls), 4)
        self.assertTrue(backend.servers[0].up)

    def test_errback_with_odd_failure(self) -> None:
        """
        A probe failing with any exception (even one with no message) is a
        failure, named by its type.
        """
        checker, backend, probe, clock = make(fall=1)
        checker.startService()
        self.addCleanup(checker.stopService)
        with capturedLogs() as events:
            probe.pending[0][1].errback(KeyError())
        self.assertFalse(backend.servers[0].up)
        self.assertEqual([e["why"] for e in events], ["KeyError"])
        clock.advance(5)
        self.assertEqual(len(probe.calls), 2)

    def test_round_counter(self) -> None:
        """
        C{rounds} counts the rounds run.
        """
        checker, _, probe, clock = make()
        probe.mode = "fail"
        checker.startService()
        self.addCleanup(checker.stopService)
        clock.pump([5] * 3)
        self.assertEqual(checker.rounds, 4)


class ProbeConstructionTests(SynchronousTestCase):
    """
    The real probes can be built without touching the network.
    """

    def test_http_probe(self) -> None:
        """
        L{HTTPProbe} builds over a fake reactor and provides
        L{IHealthProbe}; nothing is connected.
        """
        reactor = MemoryReactorClock()
        probe = HTTPProbe(reactor, HealthConfig(path="/health"))
        self.assertTrue(verifyObject(IHealthProbe, probe))
        self.assertEqual(reactor.tcpClients, [])

    def test_tcp_probe(self) -> None:
        """
        L{TCPProbe} builds over a fake reactor and provides L{IHealthProbe}.
        """
        reactor = MemoryReactorClock()
        probe = TCPProbe(reactor, HealthConfig())
        self.assertTrue(verifyObject(IHealthProbe, probe))
        self.assertEqual(reactor.tcpClients, [])

    def test_default_probe_by_path(self) -> None:
        """
        Without a probe given, a C{path} means an HTTP probe and none a TCP
        connect probe.
        """
        reactor = MemoryReactorClock()
        backend = Backend(
            BackendConfig(
                name="b",
                servers=(ServerConfig(url="http://127.0.0.1:1", scheme="http",
                                      host="127.0.0.1", port=1),),
            ),
            reactor,
        )
        self.assertIsInstance(
            HealthChecker(backend, HealthConfig(path="/h"), reactor).probe, HTTPProbe
        )
        self.assertIsInstance(HealthChecker(backend, HealthConfig(), reactor).probe, TCPProbe)
