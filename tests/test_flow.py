"""
Tests for L{twisted_proxy.flow}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
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
