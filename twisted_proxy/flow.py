# -*- test-case-name: tests.test_flow -*-
"""
Pausing a transport for several independent reasons.

A transport registered as the producer of another is paused when the
other's write buffer fills (back-pressure); the proxy also pauses a client
for its own reasons (a pipelined request waits its turn, an upstream is being
connected). A L{Gate} keeps one bit per reason, so one reason ending never
resumes a transport another reason still holds.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

BACKPRESSURE = 1
QUEUED = 2
CONNECTING = 4
FILTERING = 8
UPGRADING = 16


class Gate:
    """
    Pauses C{transport} while any reason bit is set.
    """

    __slots__ = ("transport", "reasons", "producer")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.reasons = 0
        self.producer = GateProducer(self)

    def pause(self, reason: int) -> None:
        if not self.reasons:
            self.transport.pauseProducing()
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons:
                self.transport.resumeProducing()


@implementer(IPushProducer)
class GateProducer:
    """
    The producer registered with a peer transport: its back-pressure pauses
    the gate's transport for the L{BACKPRESSURE} reason only. Losing the peer
    does not stop this transport (the protocols decide that).
    """

    __slots__ = ("gate",)

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def pauseProducing(self) -> None:
        self.gate.pause(BACKPRESSURE)

    def resumeProducing(self) -> None:
        self.gate.resume(BACKPRESSURE)

    def stopProducing(self) -> None:
        pass


@implementer(IPushProducer)
class Relay:
    """
    The one producer a transport has for its whole life: the back-pressure
    it signals goes to whichever L{Gate} is current (the peer of the
    exchange being served), so nothing is registered per request.
    """

    __slots__ = ("gate", "paused", "on_pause")

    def __init__(self) -> None:
        self.gate: Any = None
        self.paused = False
        #: called first when the transport pushes back: True when it took
        #: the back-pressure itself (a response buffer started)
        self.on_pause: Any = None

    def pauseProducing(self) -> None:
        self.paused = True
        on_pause = self.on_pause
        if on_pause is not None and on_pause():
            return
        if self.gate is not None:
            self.gate.pause(BACKPRESSURE)

    def resumeProducing(self) -> None:
        self.paused = False
        if self.gate is not None:
            self.gate.resume(BACKPRESSURE)

    def stopProducing(self) -> None:
        pass

    def switch(self, gate: Any) -> None:
        """
        Send back-pressure to C{gate} from now on (L{None}: nowhere).
        """
        old = self.gate
        if old is gate:
            return
        if old is not None and self.paused:
            # lift only the back-pressure this relay applied
            old.resume(BACKPRESSURE)
        self.gate = gate
        if gate is not None and self.paused:
            gate.pause(BACKPRESSURE)


def _plain_tcp_types() -> frozenset:
    from twisted.internet import tcp

    return frozenset([tcp.Server, tcp.Client])


_PLAIN_TCP = _plain_tcp_types()


def plain_tcp(transport: Any) -> bool:
    """
    Whether C{transport} is Twisted's own TCP connection (not TLS or any
    other wrapper, which forward attribute lookups to the TCP transport
    beneath: never read or write around those).
    """
    return type(transport) in _PLAIN_TCP


def write_buffer_empty(transport: Any) -> bool:
    """
    Whether a plain TCP transport has nothing queued to send.
    """
    return not transport._tempDataLen and transport.offset >= len(transport.dataBuffer)


def write_now(transport: Any, data: bytes) -> None:
    """
    Write C{data}, sending it at once when nothing is queued before it.

    Twisted's C{write} queues the bytes and registers the socket for
    writing, and the next reactor turn sends them and unregisters it: two
    C{epoll_ctl} calls around every C{send}. For a response that fits in
    the socket buffer (nearly all of them), sending straight away costs one
    system call instead of three. Whatever the socket does not take goes
    through C{write} as usual, so order and back-pressure are kept.
    Transports without a plain socket (TLS) just C{write}.
    """
    if type(transport) not in _PLAIN_TCP:
        # TLS and other wrappers (they forward attribute lookups to the TCP
        # transport beneath: never write around them)
        transport.write(data)
        return
    sock = transport.socket
    if (
        transport._tempDataLen
        or transport.offset < len(transport.dataBuffer)
        or not transport.connected
        or transport.disconnecting
    ):
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        # let the transport meet the error the usual way
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


def write_now_sequence(transport: Any, pieces: list) -> None:
    """
    L{write_now} for several pieces: one C{sendmsg} gathers them (a
    response head and its body go out without being joined first).
    """
    if type(transport) not in _PLAIN_TCP or not write_buffer_empty(transport) or (
        not transport.connected or transport.disconnecting
    ):
        transport.writeSequence(pieces)
        return
    try:
        sent = transport.socket.sendmsg(pieces)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.writeSequence(pieces)
        return
    for i, piece in enumerate(pieces):
        size = len(piece)
        if sent < size:
            rest = [piece[sent:]] if sent else [piece]
            transport.writeSequence(rest + pieces[i + 1 :])
            return
        sent -= size
