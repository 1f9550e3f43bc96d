"""
Tests for the graceful drain: L{twisted_proxy.drain.drain} and the
C{drain()} of client connections (L{twisted_proxy.engine.front.FrontProtocol},
L{twisted_proxy.tcp.TcpFrontProtocol}), over fake transports and a fake
clock.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.engine_harness import EngineHarness
from twisted_proxy.accesslog import NullAccessLog
from twisted_proxy.drain import drain
from twisted_proxy.model import BackendConfig, ProxySettings, ServerConfig
from twisted_proxy.tcp import TcpContext, TcpFactory, TcpFrontProtocol
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.pool import Pool, UpstreamProtocol

GET = b"GET http://127.0.0.1:8090/x HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n"
GET2 = b"GET http://127.0.0.1:8090/y HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CONNECT = b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n"
UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
)


def lose(proto: Any) -> None:
    """
    The connection of C{proto} is gone (what the reactor does after a
    close or an abort).
    """
    proto.connectionLost(Failure(ierror.ConnectionDone()))


def head_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


class Transport(StringTransport):
    """
    A L{StringTransport} that, like Twisted's TCP transports, accepts
    C{unregisterProducer} without a producer.
    """

    def __init__(self, host: Any = None, peer: Any = None) -> None:
        super().__init__(hostAddress=host, peerAddress=peer, lenient=True)

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class Recorder:
    """
    Collects the connections a C{drain()} reports gone.
    """

    def __init__(self) -> None:
        self.gone: List[Any] = []

    def __call__(self, conn: Any) -> None:
        self.gone.append(conn)


class FrontDrainTests(SynchronousTestCase):
    """
    L{FrontProtocol.drain}: what is in progress finishes, nothing new
    starts, then the connection closes.
    """

    def test_idle_keep_alive_closed(self) -> None:
        """
        A keep-alive connection idle between requests is closed at once
        and is reported gone once its connection is lost.
        """
        h = EngineHarness()
        h.front.dataReceived(GET)
        up, _ = h.connect_upstream()
        up.dataReceived(OK)
        self.assertFalse(h.ft.disconnecting)
        gone = Recorder()
        h.front.drain(gone)
        self.assertTrue(h.ft.disconnecting)
        self.assertEqual(gone.gone, [])
        lose(h.front)
        self.assertEqual(gone.gone, [h.front])

    def test_waiting_for_head_closed(self) -> None:
        """
        A connection that has sent nothing yet is closed at once.
        """
        h = EngineHarness()
        h.front.drain()
        self.assertTrue(h.ft.disconnecting)
        self.assertEqual(h.ft.value(), b"")
        h.front.dataReceived(GET)
        self.assertEqual(h.clock.tcpClients, [])

    def test_head_in_progress_served(self) -> None:
        """
        A request whose head was partly received is still served, with
        C{Connection: close}, and the connection closes after it.
        """
        h = EngineHarness()
        h.front.dataReceived(GET[:20])
        h.front.drain()
        self.assertFalse(h.ft.disconnecting)
        h.front.dataReceived(GET[20:])
        up, ut = h.connect_upstream()
        self.assertTrue(ut.value().startswith(b"GET /x HTTP/1.1\r\n"))
        up.dataReceived(OK)
        self.assertIn(b"\r\nConnection: close\r\n", h.ft.value())
        self.assertTrue(h.ft.value().endswith(b"\r\n\r\nok"))
        self.assertTrue(h.ft.disconnecting)

    def test_response_head_not_sent_says_close(self) -> None:
        """
        An exchange waiting for its response completes; the response tells
        the client C{Connection: close}, and the connection closes after it.
        """
        h = EngineHarness()
        h.front.dataReceived(GET)
        up, _ = h.connect_upstream()
        h.front.drain()
        self.assertFalse(h.ft.disconnecting)
        up.dataReceived(OK)
        self.assertIn(b"\r\nConnection: close", head_of(h.ft.value()))
        self.assertTrue(h.ft.value().endswith(b"\r\n\r\nok"))
        self.assertTrue(h.ft.disconnecting)

    def test_streaming_body_finishes(self) -> None:
        """
        A response whose head went out keeps streaming its body to the end,
        nothing cut; then the connection closes instead of waiting for
        another request.
        """
        h = EngineHarness()
        h.front.dataReceived(GET)
        up, _ = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        h.front.drain()
        self.assertFalse(h.ft.disconnecting)
        h.clock.advance(5)
        up.dataReceived(b"6\r\n world\r\n")
        self.assertFalse(h.ft.disconnecting)
        up.dataReceived(b"0\r\n\r\n")
        value = h.ft.value()
        self.assertNotIn(b"Connection: close", head_of(value))
        self.assertTrue(value.endswith(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
        self.assertTrue(h.ft.disconnecting)
        self.assertFalse(h.ft.disconnected)

    def test_request_body_streams(self) -> None:
        """
        A request body still arriving keeps flowing to the upstream.
        """
        h = EngineHarness()
        h.front.dataReceived(
            b"POST http://127.0.0.1:8090/u HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234"
        )
        up, ut = h.connect_upstream()
        h.front.drain()
        h.front.dataReceived(b"56789")
        self.assertTrue(ut.value().endswith(b"\r\n\r\n0123456789"))
        up.dataReceived(OK)
        self.assertIn(b"\r\nConnection: close", head_of(h.ft.value()))
        self.assertTrue(h.ft.disconnecting)

    def test_pipelined_not_answered(self) -> None:
        """
        Pipelined requests read but not started are not answered (as nginx
        on a graceful stop) nor logged: the current response says
        C{Connection: close} and the connection closes after it.
        """
        h = EngineHarness()
        h.front.dataReceived(GET + GET2)
        up, ut = h.connect_upstream()
        h.front.drain()
        up.dataReceived(OK)
        self.assertIn(b"\r\nConnection: close", head_of(h.ft.value()))
        self.assertEqual(h.ft.value().count(b"HTTP/1.1 "), 1)
        self.assertTrue(h.ft.disconnecting)
        self.assertNotIn(b"/y", ut.value())
        self.assertEqual(len(h.clock.tcpClients), 1)
        # never started: not counted or logged as a failed request
        lose(h.front)
        self.assertEqual((h.ctx.stats.by_status, h.ctx.stats.errors), ({200: 1}, 0))

    def test_later_request_ignored(self) -> None:
        """
        A request that arrives after the drain began, behind the one in
        progress, is not started, and reading stops.
        """
        h = EngineHarness()
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        h.front.drain()
        h.front.dataReceived(GET2)
        self.assertEqual(h.ft.producerState, "paused")
        up.dataReceived(OK)
        self.assertEqual(h.ft.value().count(b"HTTP/1.1 "), 1)
        self.assertNotIn(b"/y", ut.value())
        self.assertTrue(h.ft.disconnecting)

    def test_connect_tunnel_keeps_relaying(self) -> None:
        """
        A CONNECT tunnel keeps relaying both ways until it ends by itself;
        then the client's connection closes and is reported gone.
        """
        h = EngineHarness()
        h.front.dataReceived(CONNECT)
        up, ut = h.connect_upstream()
        gone = Recorder()
        h.front.drain(gone)
        h.ft.clear()
        h.front.dataReceived(b"to server")
        up.dataReceived(b"to client")
        self.assertTrue(ut.value().endswith(b"to server"))
        self.assertEqual(h.ft.value(), b"to client")
        self.assertFalse(h.ft.disconnecting)
        lose(up)
        self.assertTrue(h.ft.disconnecting)
        lose(h.front)
        self.assertEqual(gone.gone, [h.front])

    def test_connect_pending_still_tunnels(self) -> None:
        """
        A CONNECT waiting for its server when the drain begins still gets
        its tunnel (no C{Connection: close} on the 200), which runs until
        it ends.
        """
        h = EngineHarness()
        h.front.dataReceived(CONNECT)
        h.front.drain()
        up, ut = h.connect_upstream()
        self.assertEqual(h.ft.value(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        h.front.dataReceived(b"bytes")
        self.assertTrue(ut.value().endswith(b"bytes"))
        self.assertFalse(h.ft.disconnecting)

    def test_websocket_upgrade_pending(self) -> None:
        """
        An upgrade request waiting for its answer still switches protocols
        (the 101 says C{Connection: Upgrade}, not close) and the tunnel
        runs.
        """
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(UPGRADE)
        up, ut = h.connect_upstream()
        h.front.drain()
        up.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframe"
        )
        head = head_of(h.ft.value())
        self.assertIn(b"Connection: Upgrade", head)
        self.assertNotIn(b"close", head)
        h.front.dataReceived(b"from client")
        self.assertTrue(ut.value().endswith(b"from client"))
        self.assertFalse(h.ft.disconnecting)

    def test_already_gone(self) -> None:
        """
        Draining a connection already lost reports it gone at once.
        """
        h = EngineHarness()
        lose(h.front)
        gone = Recorder()
        h.front.drain(gone)
        self.assertEqual(gone.gone, [h.front])


class FakeConnection:
    """
    A connection whose C{drain()} does nothing but remember C{gone}.
    """

    def __init__(self, fail: bool = False) -> None:
        self.transport = StringTransport()
        self.gone: Optional[Callable[[Any], None]] = None
        self.fail = fail

    def drain(self, gone: Optional[Callable[[Any], None]] = None) -> None:
        if self.fail:
            raise RuntimeError("bug")
        self.gone = gone

    def lost(self) -> None:
        assert self.gone is not None
        self.gone(self)


class FakeFactory:
    def __init__(self, *connections: Any) -> None:
        self.connections = set(connections)


class DrainTests(SynchronousTestCase):
    """
    L{drain} over the connections of several factories.
    """

    def test_nothing_to_drain(self) -> None:
        """
        Without connections the Deferred fires at once with 0 and no timer
        is left.
        """
        clock = Clock()
        self.assertEqual(self.successResultOf(drain([FakeFactory()], clock, 30)), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_fires_when_all_gone(self) -> None:
        """
        The Deferred fires with 0 once every connection of every factory is
        gone, and the timer is cancelled.
        """
        clock = Clock()
        a, b, c = FakeConnection(), FakeConnection(), FakeConnection()
        d = drain([FakeFactory(a, b), FakeFactory(c)], clock, 30)
        a.lost()
        clock.advance(10)
        b.lost()
        self.assertNoResult(d)
        c.lost()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(a.transport.disconnecting)

    def test_idle_http_connections(self) -> None:
        """
        Idle HTTP connections close at once; the drain is done as soon as
        their connections are lost.
        """
        h = EngineHarness()
        other, ot = h.another_client()
        factory = FakeFactory(h.front, other)
        d = drain([factory], h.clock, 30)
        self.assertTrue(h.ft.disconnecting)
        self.assertTrue(ot.disconnecting)
        lose(h.front)
        lose(other)
        self.assertEqual(self.successResultOf(d), 0)

    def test_exchange_finishes_within_timeout(self) -> None:
        """
        An exchange in progress finishes; the drain fires with 0 once its
        connection closed.
        """
        h = EngineHarness()
        h.front.dataReceived(GET)
        up, _ = h.connect_upstream()
        d = drain([h.front.factory], h.clock, 30)
        h.clock.advance(1)
        self.assertNoResult(d)
        up.dataReceived(OK)
        self.assertTrue(h.ft.disconnecting)
        lose(h.front)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertFalse(h.ft.disconnected)

    def test_timeout_aborts_left(self) -> None:
        """
        After C{timeout} seconds what is left is aborted and the Deferred
        fires with how many were cut; one event logs how many finished.
        """
        h = EngineHarness()
        h.front.dataReceived(CONNECT)
        h.connect_upstream()
        idle, it = h.another_client()
        d = drain([h.front.factory, FakeFactory(idle)], h.clock, 30)
        self.assertTrue(it.disconnecting)
        lose(idle)
        h.clock.advance(29.9)
        self.assertNoResult(d)
        self.assertFalse(h.ft.disconnected)
        with capturedLogs() as events:
            h.clock.advance(0.1)
        self.assertTrue(h.ft.disconnected)
        self.assertEqual(self.successResultOf(d), 1)
        [event] = [e for e in events if "cut" in e]
        self.assertEqual(
            (event["finished"], event["cut"], event["total"], event["why"]),
            (1, 1, 2, "drain_timeout"),
        )
        self.assertEqual(event["listeners"], "test")
        # the aborted connection going away later changes nothing
        lose(h.front)

    def test_cancel_aborts_at_once(self) -> None:
        """
        Cancelling the Deferred (a second signal) aborts every connection
        left at once and fires it with their number; no timer is left.
        """
        clock = Clock()
        a, b, c = FakeConnection(), FakeConnection(), FakeConnection()
        d = drain([FakeFactory(a, b, c)], clock, 30)
        a.lost()
        with capturedLogs() as events:
            d.cancel()
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(
            [(x.transport.disconnected, x.transport.disconnecting) for x in (a, b, c)],
            [(False, False), (True, True), (True, True)],
        )
        self.assertEqual(clock.getDelayedCalls(), [])
        [event] = [e for e in events if "cut" in e]
        self.assertEqual((event["finished"], event["cut"], event["why"]), (1, 2, "cancelled"))
        b.lost()

    def test_two_drains(self) -> None:
        """
        A second drain of the same connections (a stop while a reload's
        drain runs) is told of their end as well as the first.
        """
        h = EngineHarness()
        h.front.dataReceived(GET)
        up, _ = h.connect_upstream()
        first = drain([h.front.factory], h.clock, 30)
        second = drain([h.front.factory], h.clock, 30)
        up.dataReceived(OK)
        lose(h.front)
        self.assertEqual(self.successResultOf(first), 0)
        self.assertEqual(self.successResultOf(second), 0)
        # (the pool keeps the upstream connection, with its idle timer)
        self.assertEqual(
            [c for c in h.clock.getDelayedCalls() if "_expired" in repr(c)], []
        )

    def test_cancel_after_done(self) -> None:
        """
        Cancelling a drain that is done changes nothing.
        """
        clock = Clock()
        a = FakeConnection()
        d = drain([FakeFactory(a)], clock, 30)
        a.lost()
        d.cancel()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertFalse(a.transport.disconnecting)

    def test_failing_drain_left_to_timeout(self) -> None:
        """
        A connection whose C{drain()} raises is logged and cut at the
        timeout; the others drain normally.
        """
        clock = Clock()
        bad, good = FakeConnection(fail=True), FakeConnection()
        d = drain([FakeFactory(bad, good)], clock, 5)
        good.lost()
        self.assertNoResult(d)
        clock.advance(5)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertTrue(bad.transport.disconnected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_connections_snapshot(self) -> None:
        """
        The connections drained are those of the factories when drain is
        called; the factories' sets are not changed.
        """
        clock = Clock()
        a = FakeConnection()
        factory = FakeFactory(a)
        d = drain([factory], clock, 30)
        late = FakeConnection()
        factory.connections.add(late)
        a.lost()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIsNone(late.gone)
        self.assertEqual(factory.connections, {a, late})


class TcpDrainTests(SynchronousTestCase):
    """
    L{TcpFrontProtocol.drain}: a splice runs until it ends.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        settings = ProxySettings(access_log="off", tunnel_idle_timeout=300)
        self.pool = Pool(self.reactor, connect_timeout=3)
        backend = Backend(
            BackendConfig(
                name="db",
                servers=(
                    ServerConfig(url="tcp://127.0.0.1:5001", scheme="tcp", host="127.0.0.1", port=5001),
                ),
            ),
            self.reactor,
        )
        context = TcpContext(
            "db", self.reactor, settings, self.pool, NullAccessLog(self.reactor), backend
        )
        self.factory = TcpFactory(context)

    def client(self) -> Tuple[TcpFrontProtocol, StringTransport]:
        transport = Transport(
            IPv4Address("TCP", "127.0.0.1", 7000), IPv4Address("TCP", "127.0.0.1", 40000)
        )
        proto = self.factory.buildProtocol(transport.getPeer())
        proto.makeConnection(transport)
        return proto, transport

    def server_answers(self, index: int = -1) -> Tuple[UpstreamProtocol, StringTransport]:
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        transport = Transport(peer=IPv4Address("TCP", host, port))
        proto: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        return proto, transport

    def test_splice_drains(self) -> None:
        """
        A spliced connection keeps relaying both ways; when the splice
        ends, the drain is done with nothing cut.
        """
        proto, ct = self.client()
        server, st = self.server_answers()
        d = drain([self.factory], self.reactor, 30)
        proto.dataReceived(b"query")
        server.dataReceived(b"rows")
        self.assertEqual(st.value(), b"query")
        self.assertEqual(ct.value(), b"rows")
        self.assertFalse(ct.disconnecting)
        self.assertNoResult(d)
        lose(server)
        self.assertTrue(ct.disconnecting)
        lose(proto)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connecting_goes_on(self) -> None:
        """
        A connection still connecting to its server goes on to its splice.
        """
        proto, ct = self.client()
        d = drain([self.factory], self.reactor, 30)
        server, st = self.server_answers()
        proto.dataReceived(b"query")
        self.assertEqual(st.value(), b"query")
        self.assertNoResult(d)
        proto.readConnectionLost()
        server.readConnectionLost()
        lose(proto)
        lose(server)
        self.assertEqual(self.successResultOf(d), 0)

    def test_timeout_cuts_splice(self) -> None:
        """
        A splice still running at the timeout is aborted and counted.
        """
        proto, ct = self.client()
        self.server_answers()
        d = drain([self.factory], self.reactor, 30)
        self.reactor.advance(30)
        self.assertTrue(ct.disconnected)
        self.assertEqual(self.successResultOf(d), 1)

    def test_already_gone(self) -> None:
        """
        Draining a tcp connection already lost reports it gone at once.
        """
        proto, _ = self.client()
        lose(proto)
        gone = Recorder()
        proto.drain(gone)
        self.assertEqual(gone.gone, [proto])
