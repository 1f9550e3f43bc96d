"""
Tests for L{twisted_proxy.tunnel}.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.tunnel import Splice


def producer(transport: StringTransport) -> Any:
    """
    The producer registered with C{transport}.
    """
    assert transport.producer is not None
    return transport.producer


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that records half-closes (C{loseWriteConnection}),
    which L{StringTransport} lacks.
    """

    def __init__(self) -> None:
        StringTransport.__init__(self)
        self.write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class Tunnel:
    """
    A started splice between two fake transports, with what its
    C{on_close} saw.
    """

    def __init__(
        self, idle_timeout: float = 300.0, to_back: bytes = b"", to_front: bytes = b""
    ) -> None:
        self.clock = Clock()
        self.front = HalfCloseTransport()
        self.back = HalfCloseTransport()
        self.closes: List[Tuple[Splice, str]] = []
        self.splice = Splice(self.clock, idle_timeout, self._closed)
        self.splice.start(self.front, self.back, to_back, to_front)

    def _closed(self, splice: Splice, why: str) -> None:
        self.closes.append((splice, why))


class BytesTests(SynchronousTestCase):
    """
    Bytes cross the splice unchanged in both directions and are counted.
    """

    def test_front_to_back(self) -> None:
        """
        Bytes from the front are written to the back and counted in
        C{bytes_in}.
        """
        t = Tunnel()
        t.splice.data_from_front(b"hello ")
        t.splice.data_from_front(b"upstream")
        self.assertEqual(t.back.value(), b"hello upstream")
        self.assertEqual(t.front.value(), b"")
        self.assertEqual(t.splice.bytes_in, 14)
        self.assertEqual(t.splice.bytes_out, 0)

    def test_back_to_front(self) -> None:
        """
        Bytes from the back are written to the front and counted in
        C{bytes_out}.
        """
        t = Tunnel()
        t.splice.data_from_back(b"\x00\x01binary\xff")
        self.assertEqual(t.front.value(), b"\x00\x01binary\xff")
        self.assertEqual(t.back.value(), b"")
        self.assertEqual(t.splice.bytes_out, 9)
        self.assertEqual(t.splice.bytes_in, 0)

    def test_prefilled(self) -> None:
        """
        Bytes already read when the tunnel starts (after the CONNECT head,
        after a 101) are written first and counted.
        """
        t = Tunnel(to_back=b"client hello", to_front=b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(t.back.value(), b"client hello")
        self.assertEqual(t.front.value(), b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(t.splice.bytes_in, 12)
        self.assertEqual(t.splice.bytes_out, 19)
        t.splice.data_from_front(b"!")
        self.assertEqual(t.back.value(), b"client hello!")
        self.assertEqual(t.splice.bytes_in, 13)

    def test_nothing_prefilled(self) -> None:
        """
        With nothing prefilled nothing is written at start.
        """
        t = Tunnel()
        self.assertEqual(t.front.value(), b"")
        self.assertEqual(t.back.value(), b"")
        self.assertEqual((t.splice.bytes_in, t.splice.bytes_out), (0, 0))


class BackPressureTests(SynchronousTestCase):
    """
    Each transport is the other's producer: a slow reader throttles a fast
    writer.
    """

    def test_producers_registered(self) -> None:
        """
        Both transports get a streaming producer that is an
        L{IPushProducer}.
        """
        t = Tunnel()
        for transport in (t.front, t.back):
            self.assertIsNotNone(transport.producer)
            self.assertTrue(transport.streaming)
            self.assertTrue(verifyObject(IPushProducer, transport.producer))

    def test_front_full_pauses_back(self) -> None:
        """
        When the front's buffer fills (it pauses its producer) the back
        stops reading; when it drains, the back reads again.
        """
        t = Tunnel()
        producer(t.front).pauseProducing()
        self.assertEqual(t.back.producerState, "paused")
        self.assertEqual(t.front.producerState, "producing")
        producer(t.front).resumeProducing()
        self.assertEqual(t.back.producerState, "producing")

    def test_back_full_pauses_front(self) -> None:
        """
        When the back's buffer fills the front stops reading, and resumes
        when it drains.
        """
        t = Tunnel()
        producer(t.back).pauseProducing()
        self.assertEqual(t.front.producerState, "paused")
        self.assertEqual(t.back.producerState, "producing")
        producer(t.back).resumeProducing()
        self.assertEqual(t.front.producerState, "producing")

    def test_stop_producing_does_not_close(self) -> None:
        """
        A transport stopping its producer (as it does when it is lost)
        does not itself close the other side: the splice decides that.
        """
        t = Tunnel()
        producer(t.front).stopProducing()
        self.assertFalse(t.back.disconnecting)
        self.assertEqual(t.back.producerState, "producing")

    def test_producers_unregistered_on_close(self) -> None:
        """
        Closing the tunnel unregisters both producers.
        """
        t = Tunnel()
        t.splice.close("test")
        self.assertIsNone(t.front.producer)
        self.assertIsNone(t.back.producer)


class HalfCloseTests(SynchronousTestCase):
    """
    A half-close on one side is passed on; the tunnel closes when both
    directions are done.
    """

    def test_front_half_close_passed_on(self) -> None:
        """
        The client's FIN becomes a half-close of the upstream connection;
        the other direction keeps working.
        """
        t = Tunnel()
        t.splice.read_closed_front()
        self.assertTrue(t.back.write_closed)
        self.assertFalse(t.back.disconnecting)
        self.assertFalse(t.front.write_closed)
        self.assertFalse(t.splice.closed)
        t.splice.data_from_back(b"late answer")
        self.assertEqual(t.front.value(), b"late answer")
        self.assertEqual(t.closes, [])

    def test_back_half_close_passed_on(self) -> None:
        """
        The upstream's FIN becomes a half-close of the client connection.
        """
        t = Tunnel()
        t.splice.read_closed_back()
        self.assertTrue(t.front.write_closed)
        self.assertFalse(t.front.disconnecting)
        self.assertFalse(t.splice.closed)
        t.splice.data_from_front(b"more")
        self.assertEqual(t.back.value(), b"more")

    def test_both_half_closed(self) -> None:
        """
        When both directions have ended, both connections close and
        C{on_close} is told C{"closed"}.
        """
        t = Tunnel()
        t.splice.read_closed_front()
        t.splice.read_closed_back()
        self.assertTrue(t.front.disconnecting)
        self.assertTrue(t.back.disconnecting)
        self.assertTrue(t.splice.closed)
        self.assertEqual(t.closes, [(t.splice, "closed")])

    def test_both_half_closed_other_order(self) -> None:
        """
        The order of the two FINs does not matter.
        """
        t = Tunnel()
        t.splice.read_closed_back()
        t.splice.read_closed_front()
        self.assertTrue(t.front.disconnecting)
        self.assertTrue(t.back.disconnecting)
        self.assertEqual(t.closes, [(t.splice, "closed")])

    def test_no_half_close_support(self) -> None:
        """
        A transport that cannot half-close is closed instead.
        """
        clock = Clock()
        front, back = HalfCloseTransport(), StringTransport()
        splice = Splice(clock, 10)
        splice.start(front, back)
        splice.read_closed_front()
        self.assertTrue(back.disconnecting)


class LossTests(SynchronousTestCase):
    """
    Losing one side ends the tunnel.
    """

    def test_front_lost(self) -> None:
        """
        The client going away closes the upstream connection;
        C{on_close} is told C{"client closed"}.
        """
        t = Tunnel()
        t.splice.lost_front()
        self.assertTrue(t.back.disconnecting)
        self.assertTrue(t.splice.closed)
        self.assertEqual(t.splice.why, "client closed")
        self.assertEqual(t.closes, [(t.splice, "client closed")])

    def test_back_lost(self) -> None:
        """
        The upstream going away closes the client connection;
        C{on_close} is told C{"upstream closed"}.
        """
        t = Tunnel()
        t.splice.lost_back()
        self.assertTrue(t.front.disconnecting)
        self.assertEqual(t.closes, [(t.splice, "upstream closed")])

    def test_lost_after_half_close(self) -> None:
        """
        A side lost after its FIN was passed on is an orderly end:
        C{"closed"}.
        """
        t = Tunnel()
        t.splice.read_closed_front()
        t.splice.lost_front()
        self.assertEqual(t.closes, [(t.splice, "closed")])
        t = Tunnel()
        t.splice.read_closed_back()
        t.splice.lost_back()
        self.assertEqual(t.closes, [(t.splice, "closed")])

    def test_on_close_once(self) -> None:
        """
        C{on_close} is called once, with the first reason, however many
        endings follow.
        """
        t = Tunnel()
        t.splice.lost_back()
        t.splice.lost_front()
        t.splice.close("again")
        t.clock.advance(1000)
        self.assertEqual(t.closes, [(t.splice, "upstream closed")])
        self.assertEqual(t.splice.why, "upstream closed")

    def test_pending_bytes_kept(self) -> None:
        """
        Closing lets the transports flush: what was written stays written
        (C{loseConnection}, not C{abortConnection}).
        """
        t = Tunnel()
        t.splice.data_from_back(b"last words")
        t.splice.lost_back()
        self.assertEqual(t.front.value(), b"last words")
        self.assertTrue(t.front.disconnecting)

    def test_without_on_close(self) -> None:
        """
        A splice without C{on_close} closes quietly.
        """
        clock = Clock()
        front, back = HalfCloseTransport(), HalfCloseTransport()
        splice = Splice(clock, 10)
        splice.start(front, back)
        splice.lost_front()
        self.assertTrue(back.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])


class IdleTests(SynchronousTestCase):
    """
    A tunnel where no byte moves for C{idle_timeout} seconds is closed.
    """

    def test_idle_timeout(self) -> None:
        """
        With no traffic, both connections close at the timeout and
        C{on_close} is told C{"idle timeout"}.
        """
        t = Tunnel(idle_timeout=10)
        t.clock.advance(9.9)
        self.assertFalse(t.splice.closed)
        t.clock.advance(0.1)
        self.assertTrue(t.splice.closed)
        self.assertTrue(t.front.disconnecting)
        self.assertTrue(t.back.disconnecting)
        self.assertEqual(t.closes, [(t.splice, "idle timeout")])
        self.assertEqual(t.clock.getDelayedCalls(), [])

    def test_activity_postpones(self) -> None:
        """
        Bytes in either direction push the deadline back a full timeout.
        """
        t = Tunnel(idle_timeout=10)
        t.clock.advance(8)
        t.splice.data_from_front(b"a")
        t.clock.advance(8)
        self.assertFalse(t.splice.closed)
        t.splice.data_from_back(b"b")
        t.clock.advance(9)
        self.assertFalse(t.splice.closed)
        t.clock.advance(1)
        self.assertTrue(t.splice.closed)
        self.assertEqual(t.closes, [(t.splice, "idle timeout")])

    def test_one_timer(self) -> None:
        """
        Traffic does not pile up timers: at most one is pending.
        """
        t = Tunnel(idle_timeout=10)
        for _ in range(100):
            t.splice.data_from_front(b"x")
            t.splice.data_from_back(b"y")
            t.clock.advance(1)
        self.assertEqual(len(t.clock.getDelayedCalls()), 1)
        self.assertFalse(t.splice.closed)

    def test_timer_cancelled_on_close(self) -> None:
        """
        Closing for another reason cancels the idle timer.
        """
        t = Tunnel(idle_timeout=10)
        t.splice.lost_front()
        self.assertEqual(t.clock.getDelayedCalls(), [])
        t.clock.advance(20)
        self.assertEqual(t.closes, [(t.splice, "client closed")])

    def test_half_closed_tunnel_still_times_out(self) -> None:
        """
        A half-closed tunnel where nothing moves any more still ends at the
        timeout.
        """
        t = Tunnel(idle_timeout=10)
        t.splice.read_closed_front()
        t.clock.advance(10)
        self.assertEqual(t.closes, [(t.splice, "idle timeout")])
