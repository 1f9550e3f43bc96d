"""
Unit tests for L{twisted_proxy.tcp} (raw TCP listeners) over fake transports
and a L{MemoryReactorClock}: who may connect, which server a connection
goes to, how failures end it, and how filter verdicts are waited for.

The same listener over real sockets is in L{tests.test_integration_tcp}.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.model import BackendConfig, ProxySettings, ServerConfig
from twisted_proxy.tcp import TcpContext, TcpFactory, TcpFrontProtocol
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.pool import Pool, UpstreamProtocol

CONNECT_TIMEOUT = 3.0
TUNNEL_IDLE = 30.0
FILTER_TIMEOUT = 7.0


class Transport(StringTransport):
    """
    A L{StringTransport} that, like Twisted's TCP transports, accepts
    C{unregisterProducer} without a producer and pausing after
    C{loseConnection}.
    """

    def __init__(self, peer: Tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 7000),
            peerAddress=IPv4Address("TCP", *peer),
            lenient=True,
        )

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class RecordingLog:
    """
    An access log that keeps its lines as dicts.
    """

    enabled = True

    def __init__(self) -> None:
        self.lines: List[Dict[str, Any]] = []

    def log(
        self,
        listener: str,
        client: str,
        method: str,
        url: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_ms: float,
        upstream: str,
        decision: str,
        rule: str,
    ) -> None:
        self.lines.append(
            dict(
                listener=listener,
                client=client,
                method=method,
                status=status,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                upstream=upstream,
                decision=decision,
                rule=rule,
            )
        )


class Filter:
    """
    A request filter answering with whatever C{verdicts} holds next and
    remembering what it saw.
    """

    def __init__(self, name: str, *verdicts: Any) -> None:
        self.name = name
        self.verdicts = list(verdicts)
        self.seen: List[RequestInfo] = []

    def filter_request(self, info: RequestInfo) -> Any:
        self.seen.append(info)
        verdict = self.verdicts.pop(0) if self.verdicts else None
        if isinstance(verdict, Exception):
            raise verdict
        return verdict


def server_config(port: int, **kw: Any) -> ServerConfig:
    return ServerConfig(
        url=f"tcp://127.0.0.1:{port}", scheme="tcp", host="127.0.0.1", port=port, **kw
    )


class TcpCase(SynchronousTestCase):
    """
    A tcp listener C{db} over a backend of C{tcp://} servers.
    """

    def make(
        self,
        ports: Sequence[int] = (5001, 5002),
        allow_clients: Sequence[str] = (),
        filters: Sequence[Any] = (),
        server_options: Optional[Dict[str, Any]] = None,
        **backend: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        settings = ProxySettings(
            access_log="off",
            connect_timeout=CONNECT_TIMEOUT,
            tunnel_idle_timeout=TUNNEL_IDLE,
            filter_timeout=FILTER_TIMEOUT,
        )
        self.pool = Pool(self.reactor, connect_timeout=CONNECT_TIMEOUT)
        self.access_log = RecordingLog()
        self.backend = Backend(
            BackendConfig(
                name="db",
                servers=tuple(server_config(p, **(server_options or {})) for p in ports),
                **backend,
            ),
            self.reactor,
        )
        self.context = TcpContext(
            "db",
            self.reactor,
            settings,
            self.pool,
            self.access_log,
            self.backend,
            filters,
            [ipaddress.ip_network(c) for c in allow_clients],
        )
        self.factory = TcpFactory(self.context)

    def client(self, host: str = "127.0.0.1") -> Tuple[TcpFrontProtocol, Transport]:
        """
        A client connection from C{host}.
        """
        transport = Transport((host, 40000))
        proto: Any = self.factory.buildProtocol(transport.getPeer())
        proto.makeConnection(transport)
        return proto, transport

    def attempts(self) -> List[Tuple[str, int, float]]:
        """
        The connection attempts made so far: host, port and timeout.
        """
        return [(host, port, timeout) for host, port, _, timeout, _ in self.reactor.tcpClients]

    def server_answers(self, index: int = -1) -> Tuple[UpstreamProtocol, Transport]:
        """
        The server of connection attempt C{index} accepts it.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        transport = Transport((host, port))
        proto: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        return proto, transport

    def server_fails(self, exception: Exception, index: int = -1) -> None:
        """
        Connection attempt C{index} fails with C{exception}.
        """
        factory: Any = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(exception))

    def lose(self, proto: Any) -> None:
        proto.connectionLost(Failure(ierror.ConnectionDone()))

    def server(self, port: int) -> Any:
        [server] = [s for s in self.backend.servers if s.port == port]
        return server


class AllowClientsTests(TcpCase):
    """
    C{allow_clients}: who may connect at all.
    """

    def test_outside_closed(self) -> None:
        """
        A client outside C{allow_clients} is disconnected at once, no
        server is contacted, and the access log names the rule.
        """
        self.make(allow_clients=["10.0.0.0/8"])
        proto, transport = self.client("192.0.2.7")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]),
            (403, "deny", "listener.allow_clients"),
        )
        self.assertEqual((line["client"], line["method"]), ("192.0.2.7", "TCP"))
        self.assertEqual(self.context.stats.denied, 1)

    def test_inside_served(self) -> None:
        """
        A client inside C{allow_clients} gets a server connection.
        """
        self.make(allow_clients=["10.0.0.0/8", "192.0.2.0/24"])
        _, transport = self.client("192.0.2.7")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.attempts()), 1)

    def test_absent_allows_any(self) -> None:
        """
        Without C{allow_clients} any client may connect.
        """
        self.make()
        _, transport = self.client("203.0.113.9")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.attempts()), 1)

    def test_filters_not_run(self) -> None:
        """
        A client refused by C{allow_clients} never reaches the filters.
        """
        flt = Filter("f")
        self.make(allow_clients=["10.0.0.0/8"], filters=[flt])
        self.client("192.0.2.7")
        self.assertEqual(flt.seen, [])


class SpliceTests(TcpCase):
    """
    A connection is balanced to a server of the backend and spliced to it.
    """

    def test_connects_to_server(self) -> None:
        """
        The client's connection opens one to a server of the backend, with
        the connect timeout; the client is not read meanwhile.
        """
        self.make(ports=[5001])
        _, transport = self.client()
        self.assertEqual(self.attempts(), [("127.0.0.1", 5001, CONNECT_TIMEOUT)])
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")

    def test_spliced(self) -> None:
        """
        Once the server accepts, the client is read again and bytes flow
        both ways unchanged.
        """
        self.make(ports=[5001])
        proto, client = self.client()
        upstream, server = self.server_answers()
        self.assertEqual(client.producerState, "producing")
        proto.dataReceived(b"\x00\x01 hello")
        self.assertEqual(server.value(), b"\x00\x01 hello")
        upstream.dataReceived(b"world \xff")
        self.assertEqual(client.value(), b"world \xff")

    def test_back_pressure_wired(self) -> None:
        """
        Each side's transport has the other side registered as a streaming
        producer, so a slow reader throttles a fast writer.
        """
        self.make(ports=[5001])
        _, client = self.client()
        _, server = self.server_answers()
        self.assertIsNotNone(client.producer)
        self.assertIsNotNone(server.producer)
        self.assertTrue(client.streaming)
        self.assertTrue(server.streaming)
        producer: Any = client.producer
        producer.pauseProducing()
        self.assertEqual(server.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(server.producerState, "producing")

    def test_round_robin(self) -> None:
        """
        Successive connections alternate between the backend's servers.
        """
        self.make(ports=[5001, 5002])
        for _ in range(4):
            self.client()
        self.assertEqual([port for _, port, _ in self.attempts()], [5001, 5002, 5001, 5002])

    def test_hash_keeps_client(self) -> None:
        """
        With C{balance = "hash"} (on the client address) a client keeps
        reaching the same server.
        """
        self.make(ports=[5001, 5002, 5003], balance="hash", hash_key="client_ip")
        for _ in range(3):
            self.client("192.0.2.1")
        for _ in range(3):
            self.client("198.51.100.200")
        ports = [port for _, port, _ in self.attempts()]
        self.assertEqual(len(set(ports[:3])), 1)
        self.assertEqual(len(set(ports[3:])), 1)

    def test_counts_in_flight(self) -> None:
        """
        A spliced connection counts against its server until both sides
        are closed; then it is logged once with its byte counts.
        """
        self.make(ports=[5001])
        proto, client = self.client("127.0.0.5")
        upstream, _ = self.server_answers()
        self.assertEqual(self.server(5001).in_flight, 1)
        proto.dataReceived(b"12345")
        upstream.dataReceived(b"abc")
        self.lose(proto)
        self.assertTrue(client.disconnecting)
        self.lose(upstream)
        self.assertEqual(self.server(5001).in_flight, 0)
        [line] = self.access_log.lines
        self.assertEqual(line["status"], 200)
        self.assertEqual((line["bytes_in"], line["bytes_out"]), (5, 3))
        self.assertEqual(line["upstream"], "127.0.0.1:5001")
        self.assertEqual((line["decision"], line["rule"]), ("allow", ""))

    def test_server_closes(self) -> None:
        """
        The server closing its connection closes the client's.
        """
        self.make(ports=[5001])
        _, client = self.client()
        upstream, _ = self.server_answers()
        self.lose(upstream)
        self.assertTrue(client.disconnecting)

    def test_tunnel_idle_timeout(self) -> None:
        """
        A splice where no byte moves for C{tunnel_idle_timeout} is closed.
        """
        self.make(ports=[5001])
        proto, client = self.client()
        _, server = self.server_answers()
        self.reactor.advance(TUNNEL_IDLE - 1)
        proto.dataReceived(b"x")
        self.reactor.advance(TUNNEL_IDLE - 1)
        self.assertFalse(client.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(client.disconnecting)
        self.assertTrue(server.disconnecting)

    def test_client_gone_before_server(self) -> None:
        """
        A client that leaves before its server connection is up: that
        connection is closed when it comes, and the server's slot is freed.
        """
        self.make(ports=[5001])
        proto, _ = self.client()
        self.lose(proto)
        self.assertEqual(len(self.access_log.lines), 1)
        _, server = self.server_answers()
        self.assertTrue(server.disconnecting)
        self.assertEqual(self.server(5001).in_flight, 0)
        self.assertEqual(len(self.access_log.lines), 1)

    def test_no_server_up(self) -> None:
        """
        When no server of the backend is up the client is closed without
        any connection attempt, logged as an error.
        """
        self.make(ports=[5001, 5002])
        for server in self.backend.servers:
            self.backend.set_up(server, False, "test")
        proto, transport = self.client()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual((line["status"], line["decision"]), (503, "error"))

    def test_backup_server(self) -> None:
        """
        A backup server is used only when no primary server is up.
        """
        self.make(ports=[5001])
        self.backend = Backend(
            BackendConfig(
                name="db",
                servers=(server_config(5001), server_config(5002, backup=True)),
            ),
            self.reactor,
        )
        self.context.backend = self.backend
        self.client()
        self.backend.set_up(self.server(5001), False, "test")
        self.client()
        self.assertEqual([port for _, port, _ in self.attempts()], [5001, 5002])


class QueueTests(TcpCase):
    """
    Servers at C{max_connections}: connections wait for a slot.
    """

    def setUp(self) -> None:
        self.make(ports=[5001], server_options={"max_connections": 1}, queue_timeout=5.0)
        self.first, _ = self.client()
        self.first_upstream, _ = self.server_answers()

    def test_waits_for_slot(self) -> None:
        """
        A connection beyond the server's limit waits, unconnected, and goes
        to the server when a slot frees.
        """
        _, waiting = self.client()
        self.assertEqual(len(self.attempts()), 1)
        self.assertFalse(waiting.disconnecting)
        self.lose(self.first)
        self.lose(self.first_upstream)
        self.assertEqual(len(self.attempts()), 2)
        self.assertEqual(self.server(5001).in_flight, 1)

    def test_queue_timeout(self) -> None:
        """
        A connection still waiting after C{queue_timeout} is closed and
        logged as an error.
        """
        proto, waiting = self.client()
        self.reactor.advance(4.9)
        self.assertFalse(waiting.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(waiting.disconnecting)
        self.lose(proto)
        self.assertEqual(len(self.attempts()), 1)
        [line] = self.access_log.lines
        self.assertEqual((line["status"], line["decision"]), (503, "error"))

    def test_gone_while_waiting(self) -> None:
        """
        A client that leaves while waiting gives up its place: the freed
        slot goes to nobody, and no timer is left behind.
        """
        proto, _ = self.client()
        self.lose(proto)
        self.lose(self.first)
        self.lose(self.first_upstream)
        self.assertEqual(len(self.attempts()), 1)
        self.assertEqual(self.server(5001).in_flight, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class QueueSizeTests(TcpCase):
    """
    C{queue_size} bounds the connections waiting for a slot.
    """

    def test_full_queue_closes_at_once(self) -> None:
        """
        A connection that finds the backend's queue full is closed at once
        and logged as 503; the waiting one keeps its place.
        """
        self.make(ports=[5001], server_options={"max_connections": 1}, queue_size=1)
        self.client()
        self.server_answers()
        _, waiting = self.client()
        proto, refused = self.client()
        self.assertTrue(refused.disconnecting)
        self.assertFalse(waiting.disconnecting)
        self.lose(proto)
        self.assertEqual(len(self.attempts()), 1)
        [line] = self.access_log.lines
        self.assertEqual((line["status"], line["decision"]), (503, "error"))


class ConnectFailureTests(TcpCase):
    """
    A server connection that cannot be made.
    """

    def test_failed_closes_client(self) -> None:
        """
        When the connection to the server fails and no retry is left, the
        client is closed without a byte, the server's slot is freed, and
        the access log says 502.
        """
        self.make(ports=[5001], retries=0)
        proto, client = self.client()
        self.server_fails(ierror.ConnectionRefusedError())
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.value(), b"")
        self.assertEqual(self.server(5001).in_flight, 0)
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual((line["status"], line["decision"]), (502, "error"))
        self.assertEqual(self.context.stats.errors, 1)

    def test_timeout_504(self) -> None:
        """
        A connection attempt that times out is logged as 504.
        """
        self.make(ports=[5001], retries=0)
        proto, client = self.client()
        self.server_fails(ierror.TimeoutError())
        self.assertTrue(client.disconnecting)
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(line["status"], 504)

    def test_retry_other_server(self) -> None:
        """
        A failed attempt is retried on another server, and the connection
        then works.
        """
        self.make(ports=[5001, 5002], retries=1)
        proto, client = self.client()
        self.server_fails(ierror.ConnectionRefusedError())
        self.assertFalse(client.disconnecting)
        self.assertEqual([port for _, port, _ in self.attempts()], [5001, 5002])
        upstream, server = self.server_answers()
        proto.dataReceived(b"ping")
        self.assertEqual(server.value(), b"ping")
        self.assertEqual(self.server(5001).in_flight, 0)
        self.assertEqual(self.server(5002).in_flight, 1)

    def test_retry_budget(self) -> None:
        """
        With C{retries = 0} the first failure closes the client even when
        another server is up.
        """
        self.make(ports=[5001, 5002], retries=0)
        _, client = self.client()
        self.server_fails(ierror.ConnectionRefusedError())
        self.assertTrue(client.disconnecting)
        self.assertEqual(len(self.attempts()), 1)

    def test_passive_ejection(self) -> None:
        """
        A failed attempt counts against the server (passive health): with
        C{max_fails = 1} the next connection avoids it.
        """
        self.make(ports=[5001, 5002], retries=0, max_fails=1, fail_timeout=10.0)
        self.client()
        self.server_fails(ierror.ConnectionRefusedError())
        for _ in range(2):
            self.client()
        self.assertEqual([port for _, port, _ in self.attempts()], [5001, 5002, 5002])

    def test_every_server_failed(self) -> None:
        """
        When every server was tried and failed, the client is closed and
        the log reports the failure as an error.
        """
        self.make(ports=[5001, 5002], retries=2)
        proto, client = self.client()
        self.server_fails(ierror.ConnectionRefusedError())
        self.server_fails(ierror.ConnectionRefusedError())
        self.assertTrue(client.disconnecting)
        self.assertEqual(len(self.attempts()), 2)
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(line["decision"], "error")

    def test_every_server_failed_status(self) -> None:
        """
        When every server was tried and failed, the status logged is the
        connection failure's (502), as the HTTP engine answers, not 503
        ("no server available").
        """
        self.make(ports=[5001, 5002], retries=2)
        proto, _ = self.client()
        self.server_fails(ierror.ConnectionRefusedError())
        self.server_fails(ierror.ConnectionRefusedError())
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(line["status"], 502)


    def test_client_gone_before_failure(self) -> None:
        """
        A failure reported after the client left changes nothing more and
        tries no other server.
        """
        self.make(ports=[5001, 5002], retries=2)
        proto, _ = self.client()
        self.lose(proto)
        self.server_fails(ierror.ConnectionRefusedError())
        self.assertEqual(len(self.attempts()), 1)
        self.assertEqual(self.server(5001).in_flight, 0)
        self.assertEqual(len(self.access_log.lines), 1)


class FilterTests(TcpCase):
    """
    The listener's filters judge each connection before a server is
    chosen.
    """

    def test_request_info(self) -> None:
        """
        A filter sees a connect-like request naming the listener and the
        client, with no host, path or headers.
        """
        flt = Filter("f")
        self.make(filters=[flt])
        self.client("192.0.2.44")
        [info] = flt.seen
        self.assertEqual((info.listener, info.client_ip), ("db", "192.0.2.44"))
        self.assertTrue(info.connect)
        self.assertEqual((info.host, info.path, info.headers), ("", "", []))

    def test_allow(self) -> None:
        """
        Filters answering L{None} let the connection through, in order.
        """
        first, second = Filter("first"), Filter("second")
        self.make(filters=[first, second])
        self.client()
        self.assertEqual((len(first.seen), len(second.seen)), (1, 1))
        self.assertEqual(len(self.attempts()), 1)

    def test_deny(self) -> None:
        """
        A L{Deny} closes the connection, no server is contacted, later
        filters do not run, and the log names the rule and the verdict's
        status.
        """
        later = Filter("later")
        self.make(filters=[Filter("no", Deny(403, "no-rule")), later])
        proto, transport = self.client()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.assertEqual(later.seen, [])
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]), (403, "deny", "no-rule")
        )

    def test_deferred_allow(self) -> None:
        """
        A Deferred verdict is waited for, the client unread and no server
        contacted; once it allows, the next filter runs and the connection
        goes on.
        """
        verdict: Deferred[Any] = Deferred()
        later = Filter("later")
        self.make(filters=[Filter("slow", verdict), later])
        _, transport = self.client()
        self.assertEqual(self.attempts(), [])
        self.assertEqual(later.seen, [])
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.disconnecting)
        verdict.callback(None)
        self.assertEqual(len(later.seen), 1)
        self.assertEqual(len(self.attempts()), 1)

    def test_deferred_deny(self) -> None:
        """
        A Deferred verdict that denies closes the connection with its rule
        and status.
        """
        verdict: Deferred[Any] = Deferred()
        self.make(filters=[Filter("slow", verdict)])
        proto, transport = self.client()
        verdict.callback(Deny(429, "slow-rule"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]), (429, "deny", "slow-rule")
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_deferred_failure(self) -> None:
        """
        A Deferred verdict that fails closes the connection (fail closed),
        logged as an internal error (500) of that filter.
        """
        verdict: Deferred[Any] = Deferred()
        self.make(filters=[Filter("broken", verdict)])
        proto, transport = self.client()
        verdict.errback(ValueError("boom"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]), (500, "error", "broken")
        )

    def test_filter_raises(self) -> None:
        """
        A filter that raises closes the connection, logged as an internal
        error (500) of that filter.
        """
        self.make(filters=[Filter("raising", RuntimeError("bug"))])
        proto, transport = self.client()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]), (500, "error", "raising")
        )

    def test_verdict_timeout(self) -> None:
        """
        A Deferred verdict that does not come within C{filter_timeout}
        closes the connection, logged as 503 of that filter; no server is
        contacted.
        """
        verdict: Deferred[Any] = Deferred()
        self.make(filters=[Filter("stuck", verdict)])
        proto, transport = self.client()
        self.reactor.advance(FILTER_TIMEOUT - 0.5)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.attempts(), [])
        self.lose(proto)
        [line] = self.access_log.lines
        self.assertEqual(
            (line["status"], line["decision"], line["rule"]), (503, "error", "stuck")
        )

    def test_client_gone_during_filter(self) -> None:
        """
        A client that leaves while a verdict is pending: the verdict, when
        it comes, contacts no server.
        """
        verdict: Deferred[Any] = Deferred()
        self.make(filters=[Filter("slow", verdict)])
        proto, _ = self.client()
        self.lose(proto)
        verdict.callback(None)
        self.assertEqual(self.attempts(), [])
        self.assertEqual(len(self.access_log.lines), 1)


class FactoryTests(TcpCase):
    """
    L{TcpFactory} keeps track of its connections (for draining).
    """

    def test_connections(self) -> None:
        """
        Each open client connection is in C{factory.connections} until it
        is lost.
        """
        self.make(ports=[5001])
        a, _ = self.client()
        b, _ = self.client()
        self.assertEqual(self.factory.connections, {a, b})
        self.lose(a)
        self.assertEqual(self.factory.connections, {b})
