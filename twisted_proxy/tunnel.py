# -*- test-case-name: tests.test_tunnel -*-
"""
Two connections spliced into one byte stream (CONNECT, WebSocket after a
101, raw TCP listeners).

As in C{twisted.protocols.portforward}, each transport is the other's
producer, so a slow reader throttles a fast writer. On top of that: a
half-close (FIN) on one side is passed on as a half-close to the other, both
connections close when both directions are done or either side is lost, and
an idle timeout on the injected clock ends a tunnel where no byte moved.

The two protocols stay in charge of their connections and call the splice's
C{data_from_*}, C{read_closed_*} and C{lost_*} methods.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from twisted_proxy.flow import write_now

log = Logger()

#: read size and write-buffer limit of spliced TCP transports
BULK_BUFFER = 131072


@implementer(IPushProducer)
class _Pauser:
    """
    A transport as a producer whose loss the splice handles itself.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Splice:
    """
    Bytes from the front (client) connection go to the back (upstream)
    connection and the other way round.

    @ivar bytes_in: bytes received from the front.
    @ivar bytes_out: bytes sent to the front.
    """

    def __init__(
        self,
        clock: Any,
        idle_timeout: float,
        on_close: Optional[Callable[["Splice", str], None]] = None,
    ) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.on_close = on_close
        self.front: Any = None
        self.back: Any = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self.why = ""
        self._front_read_closed = False
        self._back_read_closed = False
        self._deadline = 0.0
        self._timer: Any = None

    def start(self, front: Any, back: Any, to_back: bytes = b"", to_front: bytes = b"") -> None:
        """
        Join the transports C{front} and C{back}; C{to_back} and C{to_front}
        are bytes already read that belong to the tunnel.
        """
        self.front = front
        self.back = back
        for transport in (front, back):
            # bulk data: read (and buffer before pausing the other side) in
            # larger steps, a quarter as many trips through Python
            if getattr(transport, "bufferSize", 0) and transport.bufferSize < BULK_BUFFER:
                transport.bufferSize = BULK_BUFFER
        front.registerProducer(_Pauser(back), True)
        back.registerProducer(_Pauser(front), True)
        if to_back:
            self.bytes_in += len(to_back)
            back.write(to_back)
        if to_front:
            self.bytes_out += len(to_front)
            front.write(to_front)
        self._deadline = self.clock.seconds() + self.idle_timeout
        self._timer = self.clock.callLater(self.idle_timeout, self._check_idle)

    def data_from_front(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._deadline = self.clock.seconds() + self.idle_timeout
        write_now(self.back, data)

    def data_from_back(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._deadline = self.clock.seconds() + self.idle_timeout
        write_now(self.front, data)

    def read_closed_front(self) -> None:
        """
        The client half-closed: pass the FIN on to the upstream.
        """
        self._front_read_closed = True
        if self._back_read_closed:
            self.close("closed")
        else:
            _half_close(self.back)

    def read_closed_back(self) -> None:
        """
        The upstream half-closed: pass the FIN on to the client.
        """
        self._back_read_closed = True
        if self._front_read_closed:
            self.close("closed")
        else:
            _half_close(self.front)

    def lost_front(self) -> None:
        self.close("client closed" if not self._front_read_closed else "closed")

    def lost_back(self) -> None:
        self.close("upstream closed" if not self._back_read_closed else "closed")

    def close(self, why: str, abort: bool = False) -> None:
        """
        End the tunnel: both connections close after flushing what they
        hold (or at once, C{abort}, when a peer that stopped reading would
        make the flush wait forever).
        """
        if self.closed:
            return
        self.closed = True
        self.why = why
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for transport in (self.front, self.back):
            if transport is not None:
                try:
                    transport.unregisterProducer()
                except Exception:
                    pass
                if abort and hasattr(transport, "abortConnection"):
                    transport.abortConnection()
                else:
                    transport.loseConnection()
        if self.on_close is not None:
            self.on_close(self, why)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        remaining = self._deadline - self.clock.seconds()
        if remaining > 0:
            self._timer = self.clock.callLater(remaining, self._check_idle)
            return
        log.info("tunnel idle for {seconds}s, closing", seconds=self.idle_timeout)
        self.close("idle timeout", abort=True)


def _half_close(transport: Any) -> None:
    lose_write = getattr(transport, "loseWriteConnection", None)
    if lose_write is not None:
        lose_write()
    else:
        transport.loseConnection()
