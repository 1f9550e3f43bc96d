"""
Tests for L{twisted_proxy.service}: a parsed configuration made into one
L{ProxyService}, on a L{MemoryReactorClock} (nothing binds, nothing
connects).
"""

from __future__ import annotations

import glob
import io
import json
import os
import sys
from typing import Any, Dict, List, Optional

from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from twisted_proxy.accesslog import AccessLogService
from twisted_proxy.config import load_config, parse_config
from twisted_proxy.service import (
    ListenerService,
    PoolService,
    ProxyService,
    make_service,
)
from twisted_proxy.tcp import TcpFactory
from twisted_proxy.upstream.health import HealthChecker, HTTPProbe, TCPProbe
from twisted_proxy.upstream.pool import UpstreamProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC = os.path.join(ROOT, "etc")


def document(tcp_health: bool = True, **extra: Any) -> Dict[str, Any]:
    """
    A configuration with one listener of each kind and three backends, two
    of them health-checked (C{db} by TCP connect probes, unless not
    C{tcp_health}).
    """
    doc: Dict[str, Any] = {
        "proxy": {"access_log": "off"},
        "listener": [
            {"name": "out", "kind": "forward", "endpoint": "tcp:3128:interface=127.0.0.1"},
            {
                "name": "edge",
                "kind": "reverse",
                "endpoint": "tcp:8080:interface=127.0.0.1",
                "route": [
                    {"path": "/api/", "backend": "api"},
                    {"path": "/", "backend": "web"},
                ],
            },
            {
                "name": "db",
                "kind": "tcp",
                "endpoint": "tcp:7000:interface=127.0.0.1",
                "backend": "db",
            },
            {
                "name": "echo",
                "kind": "custom",
                "endpoint": "tcp:7007:interface=127.0.0.1",
                "factory": "twisted_proxy.examples.echo:EchoFactory",
                "greeting": "hi",
            },
        ],
        "backend": {
            "web": {
                "servers": [{"url": "http://127.0.0.1:5003"}],
                "health": {"path": "/health", "interval": 5, "timeout": 2},
            },
            "api": {"servers": [{"url": "http://127.0.0.1:5001"}]},
            "db": {
                "servers": [{"url": "tcp://127.0.0.1:5432"}, {"url": "tcp://127.0.0.1:5433"}],
                "health": {"interval": 2, "timeout": 1},
            },
        },
    }
    if not tcp_health:
        del doc["backend"]["db"]["health"]
    doc.update(extra)
    return doc


#: the filters made by L{closing_filter}, newest last
CLOSING_FILTERS: List["ClosingFilter"] = []


class ClosingFilter:
    """
    A custom filter holding a resource that takes a while to close.
    """

    def __init__(self, name: str, spec: Any, reactor: Any) -> None:
        self.name = name
        self.spec = spec
        self.closing: Optional[Deferred[None]] = None

    def filter_request(self, request: Any) -> None:
        return None

    def close(self) -> "Deferred[None]":
        self.closing = Deferred()
        return self.closing


def closing_filter(name: str, spec: Any, reactor: Any) -> ClosingFilter:
    flt = ClosingFilter(name, spec, reactor)
    CLOSING_FILTERS.append(flt)
    return flt


class RefusingReactor(MemoryReactorClock):
    """
    A reactor where every port is taken.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise ierror.CannotListenError(interface, port, OSError(98, "Address already in use"))


class ServiceCase(SynchronousTestCase):
    def build(self, doc: Optional[Dict[str, Any]] = None, reactor: Any = None) -> ProxyService:
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        config = parse_config(doc if doc is not None else document(), "service.toml", ROOT)
        top = make_service(config, self.reactor)
        self.assertIsInstance(top, ProxyService)
        return top

    def start(self, top: ProxyService) -> None:
        top.startService()
        self.addCleanup(self.stop, top)

    def stop(self, top: ProxyService) -> None:
        if top.running:
            self.successResultOf(_maybe(top.stopService()))

    def listeners(self, top: ProxyService) -> Dict[str, ListenerService]:
        return {str(s.name): s for s in top if isinstance(s, ListenerService)}

    def checkers(self, top: ProxyService) -> Dict[str, HealthChecker]:
        return {s.backend.name: s for s in top if isinstance(s, HealthChecker)}


def _maybe(result: Any) -> "Deferred[Any]":
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(lambda: result)


class BuildTests(ServiceCase):
    """
    L{make_service} makes one service per listener, a health checker per
    health-checked backend, and the admin listener when asked.
    """

    def test_one_service_per_listener(self) -> None:
        """
        Each listener of the file is one listener service of that name and
        endpoint, in the file's order.
        """
        top = self.build()
        listeners = [s for s in top if isinstance(s, ListenerService)]
        self.assertEqual([s.name for s in listeners], ["out", "edge", "db", "echo"])
        self.assertEqual(
            [s.endpoint_description for s in listeners],
            [
                "tcp:3128:interface=127.0.0.1",
                "tcp:8080:interface=127.0.0.1",
                "tcp:7000:interface=127.0.0.1",
                "tcp:7007:interface=127.0.0.1",
            ],
        )

    def test_pool_bounds(self) -> None:
        """
        The pool gets the process-wide idle bound (no per-server one by
        default), at most a quarter of the open-file limit.
        """
        import resource

        from twisted_proxy.model import ProxySettings
        from twisted_proxy.service import pool_total

        top = self.build()
        [pool_service] = [s for s in top if isinstance(s, PoolService)]
        self.assertIsNone(pool_service.pool.max_idle)
        self.assertEqual(pool_service.pool.max_total, pool_total(top.config.proxy))
        self.patch(resource, "getrlimit", lambda what: (1000, 4096))
        self.assertEqual(pool_total(ProxySettings()), 250)
        self.assertEqual(pool_total(ProxySettings(pool_max_idle_total=100)), 100)
        self.patch(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        self.assertEqual(pool_total(ProxySettings()), 4096)

    def test_nothing_before_start(self) -> None:
        """
        Building the service binds nothing, connects nothing and sets no
        timer.
        """
        self.build()
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_factories(self) -> None:
        """
        A tcp listener balances over its backend (the one the service
        keeps), and a custom listener gets its own factory with its table.
        """
        top = self.build()
        listeners = self.listeners(top)
        tcp = listeners["db"].factory
        self.assertIsInstance(tcp, TcpFactory)
        self.assertIs(tcp.ctx.backend, top.backends["db"])
        self.assertEqual(listeners["echo"].factory.greeting, "hi")

    def test_listener_stats(self) -> None:
        """
        The admin's counters cover every HTTP and tcp listener; a custom
        listener has none.
        """
        top = self.build()
        self.assertEqual(
            sorted(stats.name for stats, _ in top.listener_stats), ["db", "edge", "out"]
        )

    def test_backends(self) -> None:
        """
        Every backend of the file is built once, whatever uses it.
        """
        top = self.build()
        self.assertEqual(sorted(top.backends), ["api", "db", "web"])
        self.assertEqual(
            [s.label for s in top.backends["db"].servers], ["127.0.0.1:5432", "127.0.0.1:5433"]
        )

    def test_health_checkers(self) -> None:
        """
        Each backend with a C{health} table, and only those, gets a health
        checker of the backend the listeners use: HTTP with a C{path}, a
        TCP connect without.
        """
        top = self.build()
        checkers = self.checkers(top)
        self.assertEqual(sorted(checkers), ["db", "web"])
        for name, checker in checkers.items():
            self.assertIs(checker.backend, top.backends[name])
        self.assertIsInstance(checkers["web"].probe, HTTPProbe)
        self.assertIsInstance(checkers["db"].probe, TCPProbe)
        self.assertEqual(checkers["web"].config.interval, 5)

    def test_no_admin(self) -> None:
        """
        Without an C{[admin]} table there is no admin listener.
        """
        top = self.build()
        self.assertNotIn("admin", self.listeners(top))

    def test_admin(self) -> None:
        """
        An C{[admin]} table adds a web site listener named C{admin} on its
        endpoint.
        """
        top = self.build(document(admin={"endpoint": "tcp:9901:interface=127.0.0.1"}))
        admin = self.listeners(top)["admin"]
        self.assertEqual(admin.endpoint_description, "tcp:9901:interface=127.0.0.1")
        self.assertIsInstance(admin.factory, Site)
        self.assertEqual(len(self.listeners(top)), 5)

    def test_filters_shared(self) -> None:
        """
        A filter named by several listeners and routes is built once.
        """
        del CLOSING_FILTERS[:]
        doc = document(filter={"shared": {"type": "tests.test_service:closing_filter"}})
        doc["listener"][0]["filters"] = ["shared"]
        doc["listener"][1]["filters"] = ["shared"]
        doc["listener"][1]["route"][0]["filters"] = ["shared"]
        doc["listener"][2]["filters"] = ["shared"]
        top = self.build(doc)
        self.assertEqual([flt.name for flt in CLOSING_FILTERS], ["shared"])
        self.assertIs(self.listeners(top)["db"].factory.ctx.filters[0], CLOSING_FILTERS[0])


class StartStopTests(ServiceCase):
    """
    Starting binds every listener and starts the health checks; stopping
    undoes all of it.
    """

    def test_listens(self) -> None:
        """
        Starting binds each listener on its port and interface with its
        factory.
        """
        top = self.build()
        self.start(top)
        listeners = self.listeners(top)
        bound = {(port, interface): factory for port, factory, _, interface in self.reactor.tcpServers}
        self.assertEqual(
            sorted(bound), [(3128, "127.0.0.1"), (7000, "127.0.0.1"), (7007, "127.0.0.1"), (8080, "127.0.0.1")]
        )
        self.assertIs(bound[(7000, "127.0.0.1")], listeners["db"].factory)
        for listener in listeners.values():
            self.assertIsNotNone(listener.port)
        self.assertEqual(top.failures, [])

    def test_binds_once(self) -> None:
        """
        Binding happens in C{privilegedStartService} (before twistd drops
        privileges); C{startService} after it does not bind again.
        """
        top = self.build()
        top.privilegedStartService()
        self.assertEqual(len(self.reactor.tcpServers), 4)
        self.start(top)
        self.assertEqual(len(self.reactor.tcpServers), 4)

    def test_admin_listens(self) -> None:
        """
        The admin listener binds on its own endpoint.
        """
        top = self.build(document(admin={"endpoint": "tcp:9901:interface=127.0.0.1"}))
        self.start(top)
        self.assertIn((9901, "127.0.0.1"), [(p, i) for p, _, _, i in self.reactor.tcpServers])

    def test_own_addresses(self) -> None:
        """
        The addresses the listeners bind are known to the service (a
        forward proxy must not proxy to itself); a wildcard bind is
        recorded as such.
        """
        doc = document()
        doc["listener"][0]["endpoint"] = "tcp:3128"
        top = self.build(doc)
        self.start(top)
        self.assertIn(("*", 3128), top.own_addresses)

    def test_health_checks_run(self) -> None:
        """
        Starting runs a first round of health checks at once, probing
        every server of the checked backends, and again every interval.
        """
        top = self.build()
        self.start(top)
        checkers = self.checkers(top)
        self.assertEqual({name: c.rounds for name, c in checkers.items()}, {"db": 1, "web": 1})
        probed = {(host, port) for host, port, _, _, _ in self.reactor.tcpClients}
        self.assertTrue(
            {("127.0.0.1", 5003), ("127.0.0.1", 5432), ("127.0.0.1", 5433)} <= probed, probed
        )
        self.assertNotIn(("127.0.0.1", 5001), probed)
        for _ in range(4):
            self.reactor.advance(0.5)
        self.assertEqual(checkers["db"].rounds, 2)
        self.assertEqual(checkers["web"].rounds, 1)

    def test_stop_leaves_no_timer(self) -> None:
        """
        After C{stopService} no delayed call is left: health loops, HTTP
        probes under way and their timeouts are all cancelled.
        """
        top = self.build(document(tcp_health=False))
        self.start(top)
        self.reactor.advance(1)
        self.assertNotEqual(self.reactor.getDelayedCalls(), [])
        self.successResultOf(_maybe(top.stopService()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        for checker in self.checkers(top).values():
            self.assertFalse(checker.running)
        for listener in self.listeners(top).values():
            self.assertIsNone(listener.port)

    def test_stop_leaves_no_timer_tcp_probes(self) -> None:
        """
        After C{stopService} no delayed call is left by TCP connect probes
        under way either (their connection attempts and timeouts are
        cancelled).
        """
        top = self.build()
        self.start(top)
        self.reactor.advance(0.5)
        self.successResultOf(_maybe(top.stopService()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])


    def test_restart(self) -> None:
        """
        A stopped service can be started and stopped again, and leaves no
        timer either time.
        """
        top = self.build(document(tcp_health=False))
        for _ in range(2):
            top.startService()
            self.successResultOf(_maybe(top.stopService()))
            self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_closes_connections(self) -> None:
        """
        Stopping drains the client connections a listener holds: one still
        on its way to a server may go on for drain_timeout, then it is cut.
        """
        top = self.build()
        self.start(top)
        factory = self.listeners(top)["db"].factory
        transport = StringTransport(lenient=True)
        proto: Any = factory.buildProtocol(transport.getPeer())
        proto.makeConnection(transport)
        stopped = _maybe(top.stopService())
        self.assertNoResult(stopped)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(top.config.proxy.drain_timeout)
        self.successResultOf(stopped)
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_stop_closes_idle_upstreams(self) -> None:
        """
        Stopping closes the idle pooled connections to upstreams.
        """
        top = self.build(document(tcp_health=False))
        self.start(top)
        [pool_service] = [s for s in top if isinstance(s, PoolService)]
        conn = UpstreamProtocol(pool_service.pool, ("127.0.0.1", 5001), 65536)
        transport = StringTransport()
        conn.makeConnection(transport)  # nobody asked for it: pooled
        self.assertFalse(transport.disconnecting)
        self.successResultOf(_maybe(top.stopService()))
        self.assertTrue(transport.disconnecting)
        conn.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_waits_for_filters(self) -> None:
        """
        Stopping waits for the filters that hold resources to close.
        """
        del CLOSING_FILTERS[:]
        doc = document(filter={"slow": {"type": "tests.test_service:closing_filter", "x": 1}})
        doc["listener"][0]["filters"] = ["slow"]
        top = self.build(doc)
        top.startService()
        [flt] = CLOSING_FILTERS
        self.assertEqual(flt.spec, {"x": 1})
        stopped = _maybe(top.stopService())
        self.assertIsNotNone(flt.closing)
        self.assertNoResult(stopped)
        assert flt.closing is not None
        flt.closing.callback(None)
        self.successResultOf(stopped)

    def test_stop_writes_access_log(self) -> None:
        """
        Stopping writes out what the access log holds and leaves no flush
        timer.
        """
        path = os.path.abspath(self.mktemp())
        top = self.build(document(tcp_health=False, proxy={"access_log": path}))
        self.start(top)
        [log_service] = [s for s in top if isinstance(s, AccessLogService)]
        log_service.access_log.log(
            "out", "127.0.0.1", "GET", "http://example.com/", 200, 10, 20, 1.5,
            "example.com:80", "allow", "",
        )
        self.successResultOf(_maybe(top.stopService()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        with open(path) as f:
            [line] = f.read().splitlines()
        entry = json.loads(line)
        self.assertEqual((entry["listener"], entry["status"]), ("out", 200))


class ListenFailureTests(ServiceCase):
    """
    A listener that cannot bind stops the process with status 1 and one
    clear line.
    """

    def test_cannot_listen(self) -> None:
        """
        A port that cannot be bound is reported, naming the listener, and
        the process is told to exit with status 1.
        """
        stderr = io.StringIO()
        self.patch(sys, "__stderr__", stderr)
        top = self.build(reactor=RefusingReactor())
        codes: List[int] = []
        top.exit_process = codes.append  # type: ignore[attr-defined]
        self.start(top)
        self.assertEqual(codes, [1] * 4)
        self.assertEqual(len(top.failures), 4)
        self.assertIn("listener out", top.failures[0])
        self.assertIn("tcp:3128:interface=127.0.0.1", top.failures[0])
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 4)
        self.assertTrue(all("listener" in line for line in lines), lines)


class ExampleTests(ServiceCase):
    """
    Every C{etc/*.toml} example makes a service that starts and stops
    cleanly.
    """

    def test_examples(self) -> None:
        """
        For each example: one listener service per listener (plus
        C{admin} when configured), one health checker per backend with
        health; starting binds them all and starts the checks, stopping
        unbinds them and stops the checks.
        """
        paths = sorted(glob.glob(os.path.join(ETC, "*.toml")))
        self.assertTrue(paths)
        for path in paths:
            config = load_config(path)
            reactor = MemoryReactorClock()
            top = make_service(config, reactor)
            listeners = [s.name for s in top if isinstance(s, ListenerService)]
            expected = [lconf.name for lconf in config.listeners]
            if config.admin is not None:
                expected.append("admin")
            self.assertEqual(listeners, expected, path)
            checked = sorted(s.backend.name for s in top if isinstance(s, HealthChecker))
            self.assertEqual(
                checked,
                sorted(name for name, b in config.backends.items() if b.health is not None),
                path,
            )
            top.startService()
            try:
                self.assertEqual(top.failures, [], path)
                self.assertEqual(len(reactor.tcpServers), len(expected), path)
                for s in top:
                    if isinstance(s, HealthChecker):
                        self.assertEqual(s.rounds, 1, path)
            finally:
                self.successResultOf(_maybe(top.stopService()))
            for s in top:
                self.assertFalse(s.running, (path, s))
                if isinstance(s, ListenerService):
                    self.assertIsNone(s.port, path)
            loops = [c for c in reactor.getDelayedCalls() if "HealthChecker" in repr(c)]
            self.assertEqual(loops, [], path)
