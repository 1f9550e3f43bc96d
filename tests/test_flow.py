"""
Tests for L{twisted_proxy.flow}.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientCreator, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from twisted_proxy.flow import (
    BACKPRESSURE,
    CONNECTING,
    FILTERING,
    QUEUED,
    UPGRADING,
    Gate,
    GateProducer,
    Relay,
    send_queued,
    write_buffer_empty,
    write_soon,
    write_soon_sequence,
)


def producer(transport: StringTransport) -> Any:
    """
    The producer registered with C{transport}.
    """
    assert transport.producer is not None
    return transport.producer


class CountingTransport(StringTransport):
    """
    A L{StringTransport} that counts pause and resume calls.
    """

    def __init__(self) -> None:
        StringTransport.__init__(self)
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1
        StringTransport.pauseProducing(self)

    def resumeProducing(self) -> None:
        self.resumes += 1
        StringTransport.resumeProducing(self)


class ReasonTests(SynchronousTestCase):
    """
    The reasons are distinct bits.
    """

    def test_distinct_bits(self) -> None:
        """
        Each reason is a single bit, none shared.
        """
        reasons = [BACKPRESSURE, QUEUED, CONNECTING, FILTERING, UPGRADING]
        combined = 0
        for reason in reasons:
            self.assertEqual(bin(reason).count("1"), 1, reason)
            self.assertFalse(combined & reason)
            combined |= reason


class GateTests(SynchronousTestCase):
    """
    A L{Gate} pauses its transport while any reason holds it.
    """

    def test_starts_open(self) -> None:
        """
        A new gate holds no reason and leaves the transport alone.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        self.assertEqual(gate.reasons, 0)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.pauses, 0)

    def test_pause_and_resume(self) -> None:
        """
        One reason pauses the transport; lifting it resumes it.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        gate.pause(QUEUED)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(gate.reasons, QUEUED)
        gate.resume(QUEUED)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(gate.reasons, 0)

    def test_independent_reasons(self) -> None:
        """
        While another reason still holds, lifting one does not resume the
        transport; the last one does.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        gate.pause(BACKPRESSURE)
        gate.pause(CONNECTING)
        gate.resume(BACKPRESSURE)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(gate.reasons, CONNECTING)
        gate.resume(CONNECTING)
        self.assertEqual(transport.producerState, "producing")

    def test_transport_paused_once(self) -> None:
        """
        The transport is paused once however many reasons pile up, and
        resumed once when all are lifted.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        for reason in (QUEUED, CONNECTING, FILTERING, UPGRADING, BACKPRESSURE, QUEUED):
            gate.pause(reason)
        self.assertEqual(transport.pauses, 1)
        for reason in (QUEUED, CONNECTING, FILTERING, UPGRADING, BACKPRESSURE):
            gate.resume(reason)
        self.assertEqual(transport.resumes, 1)

    def test_same_reason_twice(self) -> None:
        """
        A reason is a bit, not a count: pausing twice for it and lifting it
        once opens the gate.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        gate.pause(QUEUED)
        gate.pause(QUEUED)
        gate.resume(QUEUED)
        self.assertEqual(transport.producerState, "producing")

    def test_resume_unheld_reason(self) -> None:
        """
        Lifting a reason that does not hold changes nothing: an open gate
        does not resume its transport, a closed one stays closed.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        gate.resume(QUEUED)
        self.assertEqual(transport.resumes, 0)
        gate.pause(CONNECTING)
        gate.resume(QUEUED)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.resumes, 0)

    def test_resume_mask(self) -> None:
        """
        Several reasons can be lifted at once with a mask.
        """
        transport = CountingTransport()
        gate = Gate(transport)
        gate.pause(QUEUED)
        gate.pause(UPGRADING)
        gate.pause(BACKPRESSURE)
        gate.resume(0xFF)
        self.assertEqual(gate.reasons, 0)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.resumes, 1)


class GateProducerTests(SynchronousTestCase):
    """
    A gate's producer turns a peer's back-pressure into the BACKPRESSURE
    reason.
    """

    def test_interface(self) -> None:
        """
        It is an L{IPushProducer}.
        """
        gate = Gate(StringTransport())
        self.assertTrue(verifyObject(IPushProducer, gate.producer))
        self.assertIsInstance(gate.producer, GateProducer)

    def test_backpressure_only(self) -> None:
        """
        Pausing it pauses the gate for BACKPRESSURE; resuming lifts only
        that reason.
        """
        transport = StringTransport()
        gate = Gate(transport)
        gate.pause(QUEUED)
        gate.producer.pauseProducing()
        self.assertEqual(gate.reasons, QUEUED | BACKPRESSURE)
        gate.producer.resumeProducing()
        self.assertEqual(gate.reasons, QUEUED)
        self.assertEqual(transport.producerState, "paused")

    def test_stop_does_nothing(self) -> None:
        """
        Stopping it (the peer was lost) neither closes nor pauses the
        transport.
        """
        transport = StringTransport()
        gate = Gate(transport)
        gate.producer.stopProducing()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(gate.reasons, 0)


class RelayTests(SynchronousTestCase):
    """
    A L{Relay} is a transport's one producer; it sends back-pressure to
    whichever gate is current.
    """

    def test_interface(self) -> None:
        """
        It is an L{IPushProducer}.
        """
        self.assertTrue(verifyObject(IPushProducer, Relay()))

    def test_registered_with_transport(self) -> None:
        """
        Registered once as a transport's producer, it pauses and resumes the
        current gate's transport as the consumer's buffer fills and drains.
        """
        consumer = StringTransport()
        peer = StringTransport()
        relay = Relay()
        consumer.registerProducer(relay, True)
        relay.switch(Gate(peer))
        producer(consumer).pauseProducing()
        self.assertEqual(peer.producerState, "paused")
        producer(consumer).resumeProducing()
        self.assertEqual(peer.producerState, "producing")

    def test_no_gate(self) -> None:
        """
        Without a gate, pausing and resuming only record the state.
        """
        relay = Relay()
        relay.pauseProducing()
        self.assertTrue(relay.paused)
        relay.resumeProducing()
        self.assertFalse(relay.paused)
        relay.stopProducing()

    def test_pause_resume_current_gate(self) -> None:
        """
        Back-pressure goes to the current gate as the BACKPRESSURE reason.
        """
        transport = StringTransport()
        gate = Gate(transport)
        relay = Relay()
        relay.switch(gate)
        relay.pauseProducing()
        self.assertEqual(gate.reasons, BACKPRESSURE)
        self.assertEqual(transport.producerState, "paused")
        relay.resumeProducing()
        self.assertEqual(gate.reasons, 0)
        self.assertEqual(transport.producerState, "producing")

    def test_paused_switch_moves_pressure(self) -> None:
        """
        A paused relay switching to a new gate pauses the new gate and
        resumes the old one.
        """
        old_transport, new_transport = StringTransport(), StringTransport()
        old, new = Gate(old_transport), Gate(new_transport)
        relay = Relay()
        relay.switch(old)
        relay.pauseProducing()
        relay.switch(new)
        self.assertEqual(old_transport.producerState, "producing")
        self.assertEqual(old.reasons, 0)
        self.assertEqual(new_transport.producerState, "paused")
        self.assertEqual(new.reasons, BACKPRESSURE)
        relay.resumeProducing()
        self.assertEqual(new_transport.producerState, "producing")
        self.assertEqual(old_transport.producerState, "producing")

    def test_paused_before_any_gate(self) -> None:
        """
        A relay paused while it had no gate pauses the first gate it is
        switched to.
        """
        transport = StringTransport()
        relay = Relay()
        relay.pauseProducing()
        relay.switch(Gate(transport))
        self.assertEqual(transport.producerState, "paused")

    def test_paused_switch_to_none(self) -> None:
        """
        Switching a paused relay to L{None} releases the old gate; later
        back-pressure goes nowhere.
        """
        transport = StringTransport()
        gate = Gate(transport)
        relay = Relay()
        relay.switch(gate)
        relay.pauseProducing()
        relay.switch(None)
        self.assertEqual(transport.producerState, "producing")
        relay.resumeProducing()
        relay.pauseProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertIsNone(relay.gate)

    def test_switch_keeps_other_reasons(self) -> None:
        """
        Switching away lifts only BACKPRESSURE on the old gate; its other
        reasons still hold.
        """
        transport = StringTransport()
        gate = Gate(transport)
        relay = Relay()
        relay.switch(gate)
        gate.pause(QUEUED)
        relay.pauseProducing()
        relay.switch(None)
        self.assertEqual(gate.reasons, QUEUED)
        self.assertEqual(transport.producerState, "paused")

    def test_unpaused_switch_leaves_old_gate(self) -> None:
        """
        An unpaused relay switching away does not lift back-pressure it did
        not apply (here, from the gate's own producer).
        """
        transport = StringTransport()
        gate = Gate(transport)
        relay = Relay()
        relay.switch(gate)
        gate.producer.pauseProducing()
        relay.switch(None)
        self.assertEqual(gate.reasons, BACKPRESSURE)
        self.assertEqual(transport.producerState, "paused")

    def test_unpaused_switch_leaves_new_gate(self) -> None:
        """
        An unpaused relay switching to a gate does not pause it.
        """
        transport = StringTransport()
        gate = Gate(transport)
        relay = Relay()
        relay.switch(gate)
        self.assertEqual(gate.reasons, 0)
        self.assertEqual(transport.producerState, "producing")

    def test_switch_to_same_gate(self) -> None:
        """
        Switching to the current gate changes nothing (a paused relay keeps
        it paused).
        """
        transport = CountingTransport()
        gate = Gate(transport)
        relay = Relay()
        relay.switch(gate)
        relay.pauseProducing()
        relay.switch(gate)
        self.assertEqual(gate.reasons, BACKPRESSURE)
        self.assertEqual(transport.pauses, 1)
        self.assertEqual(transport.resumes, 0)


class _Collect(Protocol):
    """
    The far end: collects what arrives, fires C{closed} with it at EOF.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.closed: Deferred = Deferred()
        self.arrived: Optional[Deferred] = None
        self.want = 0

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)
        if self.arrived is not None and sum(map(len, self.data)) >= self.want:
            arrived, self.arrived = self.arrived, None
            arrived.callback(b"".join(self.data))

    def wait_for(self, size: int) -> Deferred:
        self.want = size
        self.arrived = Deferred()
        if sum(map(len, self.data)) >= size:
            self.dataReceived(b"")
        return self.arrived

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(b"".join(self.data))


class _Paused:
    """
    A streaming producer that records pauses and resumes.
    """

    def __init__(self) -> None:
        self.events: List[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        pass


class WriteSoonTests(TestCase):
    """
    L{write_soon} and L{write_soon_sequence} over real loopback sockets.
    """

    @inlineCallbacks
    def pair(self) -> Any:
        """
        A connected plain TCP transport and the protocol at the far end.
        """
        far = _Collect()
        factory = Factory.forProtocol(lambda: far)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        near = yield ClientCreator(reactor, Protocol).connectTCP("127.0.0.1", port.getHost().port)
        transport = near.transport

        def close() -> Any:
            if transport.connected:
                transport.abortConnection()
                return far.closed
            return None

        self.addCleanup(close)
        return transport, far

    @inlineCallbacks
    def test_sent_at_end_of_turn(self) -> None:
        """
        The bytes wait in the transport's own buffer, the socket not
        registered for writing, and go out after the current turn, every
        write of the turn together.
        """
        transport, far = yield self.pair()
        write_soon(transport, b"head ")
        write_soon_sequence(transport, [b"and ", b"", b"body"])
        self.assertEqual(transport._tempDataLen, 13)
        self.assertNotIn(transport, reactor.getWriters())  # type: ignore[attr-defined]
        data = yield far.wait_for(13)
        self.assertEqual(data, b"head and body")
        self.assertTrue(write_buffer_empty(transport))

    @inlineCallbacks
    def test_order_with_plain_write(self) -> None:
        """
        A C{transport.write} after a queued write goes after it.
        """
        transport, far = yield self.pair()
        write_soon(transport, b"first ")
        transport.write(b"second ")
        write_soon(transport, b"third")
        data = yield far.wait_for(18)
        self.assertEqual(data, b"first second third")

    @inlineCallbacks
    def test_lose_connection_sends_first(self) -> None:
        """
        A C{loseConnection} in the same turn closes after the queued bytes
        are sent.
        """
        transport, far = yield self.pair()
        write_soon(transport, b"last words")
        transport.loseConnection()
        data = yield far.closed
        self.assertEqual(data, b"last words")

    @inlineCallbacks
    def test_abort_drops(self) -> None:
        """
        An C{abortConnection} in the same turn drops the queued bytes, as
        it drops Twisted's buffer.
        """
        transport, far = yield self.pair()
        write_soon(transport, b"never")
        transport.abortConnection()
        data = yield far.closed
        self.assertEqual(data, b"")

    @inlineCallbacks
    def test_send_queued_now(self) -> None:
        """
        L{send_queued} sends a transport's queued bytes at once (before its
        socket is used without the transport).
        """
        transport, far = yield self.pair()
        write_soon(transport, b"now")
        send_queued(transport)
        self.assertTrue(write_buffer_empty(transport))
        data = yield far.wait_for(3)
        self.assertEqual(data, b"now")

    @inlineCallbacks
    def test_rest_with_backpressure(self) -> None:
        """
        What the socket does not take stays buffered: the transport is
        registered for writing and its producer paused, and resumed once
        everything is sent; every byte arrives in order.
        """
        transport, far = yield self.pair()
        producer = _Paused()
        transport.registerProducer(producer, True)
        size = 16 * 1024 * 1024
        pieces = [bytes([i % 251]) * (1024 * 1024) for i in range(16)]
        write_soon_sequence(transport, pieces)
        yield deferLater(reactor, 0, lambda: None)
        self.assertFalse(write_buffer_empty(transport))
        self.assertEqual(producer.events, ["pause"])
        data = yield far.wait_for(size)
        self.assertEqual(data, b"".join(pieces))
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(producer.events, ["pause", "resume"])
        transport.unregisterProducer()

    def test_other_transports_write(self) -> None:
        """
        A transport that is not Twisted's plain TCP (TLS, a test's) is
        written to at once.
        """
        transport = StringTransport()
        write_soon(transport, b"a")
        write_soon_sequence(transport, [b"b", b"c"])
        self.assertEqual(transport.value(), b"abc")
