"""
Tests for L{twisted_proxy.engine.buffer}: C{response_buffer} shields the
upstream from a slow client, C{request_buffer} shields it from a slow
upload.
"""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.cache.store import Spool
from twisted_proxy.engine import FrontFactory

from .engine_harness import EngineHarness

GET = b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n"
HEAD_100K = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"


def buffering(
    case: SynchronousTestCase,
    response_buffer: int = 1 << 20,
    request_buffer: int = 0,
    spool_max: int = 1 << 30,
) -> EngineHarness:
    """
    A reverse listener's harness whose context has a spool and the given
    limits (the front connection is rebuilt on that context).
    """
    h = EngineHarness(ports=[8001])
    spool = Spool(case.mktemp(), spool_max)
    spool.open()
    h.ctx.spool = spool
    h.ctx.response_buffer = response_buffer
    h.ctx.request_buffer = request_buffer
    h.front = FrontFactory(h.ctx).buildProtocol(None)
    h.ft = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    h.front.makeConnection(h.ft)
    return h


def body_of(h: EngineHarness) -> bytes:
    return h.ft.value().partition(b"\r\n\r\n")[2]


class ResponseBufferTests(SynchronousTestCase):
    """
    A response the client cannot take yet is held (memory, then the spool)
    so that the upstream is read at its own speed.
    """

    def start(self, **kw: Any) -> Tuple[EngineHarness, Any, StringTransport]:
        h = buffering(self, **kw)
        h.front.dataReceived(GET)
        conn, ut = h.connect_upstream()
        conn.dataReceived(HEAD_100K + b"a" * 30000)
        # the client's connection pushes back (its buffer is full)
        h.front.relay.pauseProducing()
        return h, conn, ut

    def test_upstream_released_before_client_reads(self) -> None:
        """
        While the client does not read, the rest of the response is held,
        the upstream is never paused, and its connection goes back to the
        pool (kept for this client) as soon as the response is complete;
        the exchange ends only once the client has it all.
        """
        h, conn, ut = self.start()
        conn.dataReceived(b"b" * 40000)
        self.assertEqual(ut.producerState, "producing")
        self.assertEqual(body_of(h), b"a" * 30000)
        conn.dataReceived(b"c" * 30000)
        self.assertIsNone(conn.leg)
        self.assertIs(h.front.sticky, conn)
        self.assertIsNotNone(h.front.current)
        h.front.relay.resumeProducing()
        self.assertEqual(body_of(h), b"a" * 30000 + b"b" * 40000 + b"c" * 30000)
        self.assertIsNone(h.front.current)

    def test_bytes_in_order_while_draining(self) -> None:
        """
        Bytes that arrive while held bytes wait go after them, even when
        the client takes more in between.
        """
        h, conn, ut = self.start()
        conn.dataReceived(b"b" * 10000)
        h.front.relay.resumeProducing()
        conn.dataReceived(b"c" * 10000)
        h.front.relay.pauseProducing()
        conn.dataReceived(b"d" * 50000)
        h.front.relay.resumeProducing()
        self.assertEqual(
            body_of(h), b"a" * 30000 + b"b" * 10000 + b"c" * 10000 + b"d" * 50000
        )

    def test_over_the_limit_pauses_upstream(self) -> None:
        """
        Beyond response_buffer bytes held, the upstream is paused
        (back-pressure) until the client has taken them.
        """
        h, conn, ut = self.start(response_buffer=20000)
        conn.dataReceived(b"b" * 15000)
        self.assertEqual(ut.producerState, "producing")
        conn.dataReceived(b"c" * 15000)
        self.assertEqual(ut.producerState, "paused")
        h.front.relay.resumeProducing()
        self.assertEqual(ut.producerState, "producing")
        conn.dataReceived(b"d" * 40000)
        self.assertEqual(body_of(h), b"a" * 30000 + b"b" * 15000 + b"c" * 15000 + b"d" * 40000)
        self.assertIsNone(h.front.current)

    def test_spool_full_falls_back_to_back_pressure(self) -> None:
        """
        When the spool is full (spool_max), nothing is lost: the bytes are
        kept and the upstream paused.
        """
        h, conn, ut = self.start(spool_max=1000)
        conn.dataReceived(b"b" * 69000)
        self.assertEqual(ut.producerState, "paused")
        h.front.relay.resumeProducing()
        self.assertEqual(ut.producerState, "producing")
        conn.dataReceived(b"c" * 1000)
        self.assertEqual(body_of(h), b"a" * 30000 + b"b" * 69000 + b"c" * 1000)
        self.assertIsNone(h.front.current)

    def test_no_buffer_is_back_pressure(self) -> None:
        """
        response_buffer = 0: a slow client pauses the upstream as before.
        """
        h, conn, ut = self.start(response_buffer=0)
        self.assertEqual(ut.producerState, "paused")
        self.assertIsNone(h.front.current.rbuf)

    def test_client_gone_drops_the_buffer(self) -> None:
        """
        A client that leaves while bytes are held: the buffer and its spool
        space are released.
        """
        h, conn, ut = self.start()
        conn.dataReceived(b"b" * 70000)
        spool = h.ctx.spool
        self.assertGreater(spool.used, 0)
        h.front.connectionLost()
        self.assertEqual(spool.used, 0)

    def test_idle_client_times_out(self) -> None:
        """
        A client that takes nothing for idle_timeout is cut off, however
        much is held for it.
        """
        h, conn, ut = self.start()
        conn.dataReceived(b"b" * 70000)
        h.clock.advance(61)
        self.assertTrue(h.ft.disconnecting or h.ft.disconnected)


class RequestBufferTests(SynchronousTestCase):
    """
    A request body up to request_buffer bytes is received whole before the
    request goes upstream.
    """

    def test_slow_upload_received_first(self) -> None:
        """
        No upstream connection is opened until the whole body is there;
        then the upstream gets the head and the whole body.
        """
        h = buffering(self, request_buffer=1000)
        h.front.dataReceived(b"POST /u HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\n12345")
        self.assertEqual(h.clock.tcpClients, [])
        h.clock.advance(5)
        h.front.dataReceived(b"67890")
        conn, ut = h.connect_upstream()
        sent = ut.value()
        self.assertTrue(sent.startswith(b"POST /u HTTP/1.1\r\n"))
        self.assertTrue(sent.endswith(b"\r\n\r\n1234567890"))

    def test_larger_body_streams(self) -> None:
        """
        A Content-Length over request_buffer goes upstream at once.
        """
        h = buffering(self, request_buffer=5)
        h.front.dataReceived(b"POST /u HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\n12345")
        self.assertEqual(len(h.clock.tcpClients), 1)

    def test_chunked_body_growing_past_the_limit_streams(self) -> None:
        """
        A chunked body that grows past request_buffer goes upstream then,
        the held part first, the rest as it comes.
        """
        h = buffering(self, request_buffer=8)
        h.front.dataReceived(b"POST /u HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.assertEqual(h.clock.tcpClients, [])
        h.front.dataReceived(b"6\r\n world\r\n")
        conn, ut = h.connect_upstream()
        h.front.dataReceived(b"1\r\n!\r\n0\r\n\r\n")
        body = ut.value().partition(b"\r\n\r\n")[2]
        self.assertEqual(body, b"5\r\nhello\r\n6\r\n world\r\n1\r\n!\r\n0\r\n\r\n")

    def test_malformed_body_never_reaches_upstream(self) -> None:
        """
        A chunked body that turns out malformed is answered 400 and nothing
        was sent upstream.
        """
        h = buffering(self, request_buffer=1000)
        h.front.dataReceived(b"POST /u HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        h.front.dataReceived(b"zz\r\nbad\r\n")
        self.assertEqual(h.clock.tcpClients, [])
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 400 "))

    def test_spool_released(self) -> None:
        """
        The spool space a held body took is given back once it went
        upstream.
        """
        h = buffering(self, request_buffer=1 << 20)
        head = b"POST /u HTTP/1.1\r\nHost: app\r\nContent-Length: 200000\r\n\r\n"
        h.front.dataReceived(head + b"x" * 100000)
        self.assertGreater(h.ctx.spool.used, 0)
        h.front.dataReceived(b"x" * 100000)
        self.assertEqual(h.ctx.spool.used, 0)
        conn, ut = h.connect_upstream()
        self.assertEqual(len(ut.value().partition(b"\r\n\r\n")[2]), 200000)


class BufferedServerSlotTests(SynchronousTestCase):
    """
    A response held for a slow client no longer holds its server.
    """

    def test_slot_freed_when_response_complete(self) -> None:
        """
        Once the upstream's response is complete, the server's in-flight
        count drops, though the client has not taken the held bytes.
        """
        h = buffering(self)
        h.front.dataReceived(GET)
        conn, ut = h.connect_upstream()
        assert h.backend is not None
        server = h.backend.servers[0]
        self.assertEqual(server.in_flight, 1)
        conn.dataReceived(HEAD_100K + b"a" * 30000)
        h.front.relay.pauseProducing()
        conn.dataReceived(b"b" * 70000)
        self.assertIsNotNone(h.front.current)
        self.assertEqual(server.in_flight, 0)

    def test_client_gone_is_not_drained(self) -> None:
        """
        A slow client that leaves: what is held is dropped at once, never
        read back from the spool nor written to the dead connection.
        """
        h = buffering(self)
        h.front.dataReceived(GET)
        conn, ut = h.connect_upstream()
        conn.dataReceived(HEAD_100K + b"a" * 30000)
        h.front.relay.pauseProducing()
        conn.dataReceived(b"b" * 70000)
        written = len(h.ft.value())
        h.front.connectionLost()
        self.assertEqual(len(h.ft.value()), written)
        self.assertEqual(h.ctx.spool.used, 0)
