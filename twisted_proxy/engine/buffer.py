# -*- test-case-name: tests.test_engine_buffer -*-
"""
Buffering that shields upstreams from slow clients (C{response_buffer})
and from slow uploads (C{request_buffer}).

L{ResponseBuffer}: without it, a client that reads slowly pauses the
upstream connection (back-pressure), which stays busy for as long as the
client takes. With it, what the client's connection cannot take yet goes
to a L{twisted_proxy.cache.store.SpoolBuffer} (memory first, then a spool
file), up to C{response_buffer} bytes, so the upstream is read at its own
speed and its connection goes back to the pool as soon as the response is
complete. Bytes the client can take go to it at once (server-sent events
keep working). Beyond the limit, or when the spool is full
(C{spool_max}), it falls back to back-pressure: the upstream is paused
until the client catches up.

L{RequestBuffer}: a request body up to C{request_buffer} bytes is received
whole (memory, then spool) before the request goes upstream, so a slow
upload never holds a backend connection, and a body that turns out
malformed never reaches it. A larger body (by its C{Content-Length}, or a
chunked body that grows past the limit) streams as before.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.logger import Logger

from twisted_proxy.flow import BACKPRESSURE, CONNECTING
from twisted_proxy.http import policy

log = Logger()

#: bytes written to the client per call while draining
DRAIN_CHUNK = 65536
#: bytes of a buffer kept in memory before the spool file
MEMORY_PART = 16384


class ResponseBuffer:
    """
    The client side of one exchange's response while it may be buffered.
    It is the gate of the front's relay (the client transport's producer):
    C{pause}/C{resume} say whether the client's connection takes more.

    @ivar upstream_gate: the upstream connection's gate while it serves the
        exchange (paused when the buffer is over its limit).
    """

    __slots__ = (
        "ex",
        "spool",
        "limit",
        "buffer",
        "overflow",
        "blocked",
        "upstream_gate",
        "upstream_paused",
        "done_waiting",
        "closed",
        "held",
    )

    def __init__(self, ex: Any, spool: Any, limit: int) -> None:
        self.ex = ex
        self.spool = spool
        self.limit = limit
        self.buffer: Any = None
        #: bytes the spool refused (spool_max): kept in memory, and the
        #: upstream paused until they are written
        self.overflow: List[bytes] = []
        self.blocked = False
        self.upstream_gate: Any = None
        self.upstream_paused = False
        #: the response is complete and waits for the buffer to drain
        self.done_waiting = False
        self.closed = False
        #: bytes held now (buffer and overflow)
        self.held = 0

    # the relay's gate interface: the client's connection

    def pause(self, reason: int) -> None:
        self.blocked = True

    def resume(self, reason: int) -> None:
        self.blocked = False
        if self.held and not self.closed and not self.ex.front.lost:
            # (a client that is gone is never drained: close() drops it all)
            self.drain()

    # the upstream side

    def attach(self, gate: Any) -> None:
        """
        The upstream connection whose reading this buffer may pause.
        """
        self.upstream_gate = gate
        if self.upstream_paused:
            gate.pause(BACKPRESSURE)

    def detach(self) -> None:
        gate = self.upstream_gate
        self.upstream_gate = None
        if gate is not None and self.upstream_paused:
            gate.resume(BACKPRESSURE)

    # the exchange's output

    def write(self, data: bytes) -> None:
        """
        Response bytes for the client: sent now if it takes them and
        nothing waits before them, else held.
        """
        if not self.held and not self.blocked:
            self.ex.front.transport.write(data)
            return
        self.hold(data)

    def write_sequence(self, pieces: List[bytes]) -> None:
        if not self.held and not self.blocked:
            self.ex.front.transport.writeSequence(pieces)
            return
        for piece in pieces:
            self.hold(piece)

    def hold(self, data: bytes) -> None:
        if self.closed:
            return
        size = len(data)
        if self.overflow or self.held + size > self.limit:
            self.overflow.append(data)
        else:
            buffer = self.buffer
            if buffer is None:
                buffer = self.buffer = self.spool.buffer(MEMORY_PART)
            if not buffer.write(data):
                # the spool is full (spool_max): back-pressure from here on
                self.overflow.append(data)
        self.held += size
        if self.overflow and not self.upstream_paused:
            self.upstream_paused = True
            if self.upstream_gate is not None:
                self.upstream_gate.pause(BACKPRESSURE)

    def drain(self) -> None:
        """
        The client takes more: send what is held, in order, until its
        connection pushes back again.
        """
        ex = self.ex
        transport = ex.front.transport
        buffer = self.buffer
        if ex.front.lost or transport.disconnecting:
            return
        while self.held and not self.blocked and not self.closed:
            data = b""
            if buffer is not None and buffer.size:
                data = buffer.read(DRAIN_CHUNK)
            elif self.overflow:
                data = self.overflow.pop(0)
            if not data:
                break
            self.held -= len(data)
            # the client is reading: the exchange makes progress
            ex.front.touch()
            transport.write(data)
        if self.closed:
            return
        if self.upstream_paused and not self.overflow and self.held < self.limit:
            self.upstream_paused = False
            if self.upstream_gate is not None:
                self.upstream_gate.resume(BACKPRESSURE)
        if not self.held:
            self.release()
            if self.done_waiting:
                self.done_waiting = False
                ex.origin_done()

    def pending(self) -> bool:
        """
        Whether bytes still wait for the client.
        """
        return self.held > 0

    def release(self) -> None:
        """
        Give the spool's space back (the buffer is empty or dropped).
        """
        buffer = self.buffer
        if buffer is not None:
            self.buffer = None
            buffer.close()

    def close(self) -> None:
        """
        The exchange is over: what is still held is dropped.
        """
        if self.closed:
            return
        self.closed = True
        self.overflow = []
        self.held = 0
        self.detach()
        self.release()
        relay = self.ex.front.relay
        if relay.gate is self:
            relay.switch(None)


class RequestBuffer:
    """
    The request body stage that receives a body whole before the request
    goes upstream (see the module docstring). It is the exchange's body
    consumer until then.
    """

    __slots__ = ("ex", "sink", "spool", "limit", "buffer", "size", "streaming", "closed")

    def __init__(self, ex: Any, sink: Any, spool: Any, limit: int) -> None:
        self.ex = ex
        self.sink = sink
        self.spool = spool
        self.limit = limit
        self.buffer: Any = None
        self.size = 0
        self.streaming = False
        self.closed = False

    def start(self) -> None:
        ex = self.ex
        ex.body = self
        held = ex.take_pending()
        if held:
            for data in held:
                self.request_body(data)
        if ex.request_done and not self.streaming:
            self.request_end()

    def request_body(self, data: bytes) -> None:
        if self.closed:
            return
        if self.streaming:
            return  # (the upstream leg is the body consumer by now)
        size = self.size + len(data)
        buffer = self.buffer
        if buffer is None:
            buffer = self.buffer = self.spool.buffer(MEMORY_PART)
        if size > self.limit or not buffer.write(data):
            # larger than request_buffer (a chunked body), or the spool is
            # full: what is held goes first, the rest streams
            self.stream([data])
            return
        self.size = size

    def request_end(self) -> None:
        if self.closed or self.streaming:
            return
        self.stream([])

    def stream(self, tail: List[bytes]) -> None:
        """
        Go upstream now: the held bytes first (replayed into the leg), then
        C{tail}, then whatever still arrives.
        """
        self.streaming = True
        ex = self.ex
        pending: List[bytes] = []
        buffer = self.buffer
        if buffer is not None:
            self.buffer = None
            while buffer.size:
                pending.append(buffer.read(1 << 20))
            buffer.close()
        pending.extend(tail)
        if pending:
            ex.pending = pending
        ex.body = None
        if not ex.request_done:
            # the rest streams with back-pressure once connected
            ex.front.gate.pause(CONNECTING)
        ex.forward(self.sink)

    def close(self) -> None:
        self.closed = True
        buffer = self.buffer
        if buffer is not None:
            self.buffer = None
            buffer.close()


def request_buffer_applies(ex: Any, limit: int) -> bool:
    """
    Whether C{ex}'s request body is received whole first: there is a body
    still to come, and its announced length (if any) fits C{limit}.
    """
    head = ex.head
    if limit <= 0 or ex.request_done or head.framing == policy.NO_BODY:
        return False
    if ex.target.connect or head.upgrade is not None or head.expect_continue:
        return False
    if head.framing == policy.CONTENT_LENGTH:
        length = policy.header_value(head.headers, b"content-length")
        try:
            return length is not None and int(length) <= limit
        except ValueError:
            return False
    return True


def response_limit(ex: Any) -> int:
    """
    The C{response_buffer} of C{ex}: its route's, else its listener's.
    """
    route = ex.target.route if ex.target is not None else None
    if route is not None:
        value: Optional[int] = getattr(route, "response_buffer", None)
        if value is not None:
            return value
    return int(ex.ctx.response_buffer)


def request_limit(ex: Any) -> int:
    route = ex.target.route if ex.target is not None else None
    if route is not None:
        value: Optional[int] = getattr(route, "request_buffer", None)
        if value is not None:
            return value
    return int(ex.ctx.request_buffer)
