# -*- test-case-name: tests.test_engine_upstream -*-
"""
The origin stage that goes upstream: one L{UpstreamLeg} per exchange
carries the request to an origin, a parent proxy or a backend's server,
and the response events back.

It owns everything about the upstream side: the server choice and the wait
for a free slot (C{max_connections}), the pooled or new connection, sending
the request head and body (kept for a replay up to L{MAX_REPLAY} bytes),
retries (a pooled connection that the upstream had closed; another server
after a failed attempt), passive health (every refused, reset or timed-out
attempt counts, whatever the method; only safe requests are retried after
they were sent), a parent proxy's CONNECT, and the handing over of the
connection to a tunnel.

The response events go on to the leg's sink (the exchange, or a response
stage in front of it). The exchange learns the rest through a few calls:
C{origin_done()}, C{upstream_failed(status, message)},
C{internal_error(failure)}, C{start_tunnel(...)}.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.engine.splice import SPLICE_MIN, BodySplice, can_splice, splice_possible
from twisted_proxy.engine.timers import BODY, WAIT
from twisted_proxy.flow import CONNECTING, write_soon
from twisted_proxy.http import policy
from twisted_proxy.http.parser import ResponseHead, keep_served
from twisted_proxy.upstream.backend import BUSY
from twisted_proxy.upstream.pool import LOCAL_SHORTAGE, UpstreamProtocol

log = Logger()

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
#: request body bytes kept to send again on a retry
MAX_REPLAY = 65536


class UpstreamOrigin:
    """
    The default origin of a listener: every admitted request goes to its
    upstream through an L{UpstreamLeg}.
    """

    def fetch(self, ex: Any, sink: Any, owner: Any = None) -> None:
        """
        Get C{ex}'s response from upstream, delivering its events to
        C{sink} (C{response_head}, C{response_body}, C{response_end}).

        @param owner: who is told the end of the response
            (C{origin_done()}) or the failure to get it
            (C{upstream_failed(status, message, headers=())}): C{ex}
            unless a stage (a cache) stands in between.
        """
        ex.leg = ex.body = leg = UpstreamLeg(ex, sink)
        if owner is not None:
            leg.owner = owner
        target = leg.target
        if target.connect:
            address = target.address
            ex.upstream = f"{address[0]}:{address[1]}"
            ex.ctx.pool.connect(address, leg)
        elif target.backend is not None:
            leg.choose_server()
        else:
            leg.dispatch(target.address)


class UpstreamLeg:
    """
    One exchange's way upstream.
    """

    __slots__ = (
        "ex",
        "front",
        "ctx",
        "target",
        "sink",
        "conn",
        "pending",
        "replay",
        "replay_size",
        "retried",
        "server",
        "tried",
        "waiter",
        "raw_buffer",
        "response",
        "closed",
        "owner",
        "last_status",
    )

    def __init__(self, ex: Any, sink: Any) -> None:
        self.ex = ex
        self.front = ex.front
        self.ctx = ex.ctx
        self.target = ex.target
        self.sink = sink
        #: told the end or the failure of the response (see UpstreamOrigin.fetch)
        self.owner = ex
        self.conn: Optional[UpstreamProtocol] = None
        #: request bytes waiting for a connection
        self.pending: Optional[list] = None
        #: what was sent, for a retry (None: too much to replay)
        self.replay: Optional[list] = []
        self.replay_size = 0
        self.server: Any = None
        self.tried: Tuple[Any, ...] = ()
        self.waiter: Any = None
        #: the upstream's response head, once it came
        self.response: Optional[ResponseHead] = None
        self.closed = False
        held = ex.pending
        if held is not None:
            ex.pending = None
            for data in held:
                self.request_body(data)
        if ex.request_done and ex.head.framing == policy.CHUNKED:
            # (no connection yet: nothing else of request_end applies)
            self._send([LAST_CHUNK], 5)

    def dispatch(self, address: Tuple[Any, ...]) -> None:
        """
        Send the request on this client's kept connection to C{address},
        a pooled one, or a new one.
        """
        front = self.front
        pool = self.ctx.pool
        conn = front.sticky
        if conn is not None:
            # the connection this client kept, if it goes there
            front.sticky = None
            pool.unhold(conn)
            if conn.key == address and not conn.lost:
                conn.reused = True
                self.upstream_ready(conn)
                return
            pool.release(conn)
        conn = pool.acquire(address)
        if conn is not None:
            self.upstream_ready(conn)
        else:
            pool.connect(address, self)

    # backends (reverse listeners)

    def choose_server(self) -> None:
        """
        Pick a server of the route's backend (not one already tried) and
        dispatch to it; wait for a slot when all are at max_connections.
        """
        ex = self.ex
        backend = self.target.backend
        key = b""
        if backend.key_kind:
            key = backend.key_for(self.front.client_ip, ex.head.headers)
        server = backend.choose(key, self.tried)
        if server is None:
            if self.tried:
                # every server was tried: the last failure stands (504 when
                # it was a timeout)
                self.owner.upstream_failed(
                    getattr(self, "last_status", None) or 502, "no server of the backend could answer"
                )
                return
            self.owner.upstream_failed(
                503,
                f"no server of backend {backend.name} is available",
                ((b"Retry-After", b"%d" % backend.retry_after()),),
            )
            return
        if server is BUSY:
            self.waiter = backend.wait(self._slot_free, self._queue_timeout)
            if self.waiter is None:
                # the backend's queue is full (queue_size): 503 at once
                self._queue_timeout()
                return
            # queue_timeout bounds this wait, not the front's timer
            self.front.gate.pause(CONNECTING)
            self.front.stop_timer()
            return
        backend.acquire(server)
        self.server = server
        self.dispatch(server.address)

    def _slot_free(self) -> None:
        self.waiter = None
        if self.closed or self.ex.finished:
            return
        self.ex.progress()
        self.choose_server()

    def _queue_timeout(self) -> None:
        self.waiter = None
        if self.closed or self.ex.finished:
            return
        backend = self.target.backend
        self.owner.upstream_failed(
            503,
            f"every server of backend {backend.name} is at its connection limit",
            ((b"Retry-After", b"1"),),
        )

    def release_server(self) -> None:
        server = self.server
        if server is not None:
            self.server = None
            self.target.backend.release(server)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.cancel()

    def failed_attempt(self, why: str, may_retry: bool) -> bool:
        """
        An attempt on a backend's server failed before any response byte:
        count it against the server (passive health) and, when
        C{may_retry}, the budget and the request allow, try another one.
        True when a retry is under way.
        """
        server = self.server
        if server is None:
            return False
        backend = self.target.backend
        backend.report_failure(server, why)
        self.release_server()
        self.tried = self.tried + (server,)
        if not may_retry or len(self.tried) > backend.retries or self.replay is None:
            return False
        if self.response is not None or self.ex.response_started or self.front.lost:
            return False
        if len(self.tried) >= len(backend.servers):
            return False  # no other server to try
        log.info(
            "{url}: {why}; retrying on another server of {backend}",
            url=self.ex.url(),
            why=why,
            backend=backend.name,
        )
        self.choose_server()
        return True

    # the pool's requester interface

    def upstream_ready(self, conn: UpstreamProtocol) -> None:
        ex = self.ex
        target = self.target
        if self.closed or ex.finished or self.front.lost:
            if target.connect:
                conn.transport.loseConnection()
            else:
                self.ctx.pool.release(conn)
            return
        front = self.front
        self.conn = conn
        server = self.server
        if server is not None:
            ex.upstream = server.label
        else:
            address = target.address
            ex.upstream = f"{address[0]}:{address[1]}"
            if conn.local_end is None and target.parent is None:
                # straight to an origin: if that is us, the request comes
                # back from this end (RequestPolicy answers 508)
                self.ctx.pool.note_direct(conn)
        if target.connect:
            if target.parent is not None:
                conn.attach_raw(self)
                conn.transport.write(
                    b"CONNECT " + target.authority + b" HTTP/1.1\r\nHost: " + target.authority
                    + b"\r\n\r\n"
                )
                front.set_timer(WAIT, self.ctx.settings.first_byte_timeout)
            else:
                self.tunnel(conn, CONNECT_ESTABLISHED, b"")
            return
        head = ex.head
        # a body that goes straight to a plain TCP client may be spliced
        conn.attach(self, head.method == b"HEAD", ex, self.sink is ex and splice_possible(conn, front))
        router = self.ctx.router
        served = head.served
        if served is not None and served[1] is head.tokens and tuple(head.headers) == served[0]:
            # a head replayed from the parser's memo, which nothing (a
            # filter) has changed: serialised once per target and client
            key = (
                router, head.method, head.framing, head.upgrade, head.expect_continue,
                target.path, target.authority, target.route, front.client_ip, server,
            )
            heads = served[2]
            data = heads.get(key)
            if data is None:
                data = router.request_head(head, target, front.client_ip, server)
                keep_served(heads, key, data)
        else:
            data = router.request_head(head, target, front.client_ip, server)
        transport = conn.transport
        write_soon(transport, data)
        if self.replay:
            # a retry: what the failed attempt had sent goes again
            transport.writeSequence(self.replay)
        pending = self.pending
        if pending is not None:
            self.pending = None
            transport.writeSequence(pending)
            if self.replay is not None:
                self.replay.extend(pending)
        # lifts the pause for a body that waited, or for a queued request
        front.gate.resume(CONNECTING)
        # back-pressure both ways: each side's relay pauses the other's gate
        conn.relay.switch(front.gate)
        front.relay.switch(conn.gate)
        if ex.request_done:
            timeout = self.ctx.settings.first_byte_timeout
            front.set_timer(WAIT, timeout)
            # the upstream's time starts (the timer has just read the clock)
            ex.upstream_sent = front.deadline - timeout

    def upstream_connect_failed(self, status: int, message: str) -> None:
        if self.closed or self.ex.finished:
            return
        self.conn = None
        if status == LOCAL_SHORTAGE:
            # the proxy is out of file descriptors: not the server's fault
            self.release_server()
            self.owner.upstream_failed(status, message)
            return
        self.last_status = status
        if self.failed_attempt(message, True):
            return
        self.owner.upstream_failed(status, message)

    # the request body

    def request_body(self, data: bytes) -> None:
        if self.ex.head.framing == policy.CHUNKED:
            self._send([b"%x\r\n" % len(data), data, b"\r\n"], len(data))
        else:
            self._send([data], len(data))

    def request_end(self) -> None:
        if self.ex.head.framing == policy.CHUNKED:
            self._send([LAST_CHUNK], 5)
        if self.conn is not None and self.response is None and not self.target.connect:
            timeout = self.ctx.settings.first_byte_timeout
            self.front.set_timer(WAIT, timeout)
            self.ex.upstream_sent = self.front.deadline - timeout

    def _send(self, pieces: list, size: int) -> None:
        conn = self.conn
        if conn is None or self.pending is not None:
            if self.pending is None:
                self.pending = pieces
            else:
                self.pending.extend(pieces)
            self.front.gate.pause(CONNECTING)
            return
        conn.transport.writeSequence(pieces)
        replay = self.replay
        if replay is not None:
            self.replay_size += size
            if self.replay_size > MAX_REPLAY:
                self.replay = None
            else:
                replay.extend(pieces)

    # the connection's events

    def response_head(self, response: ResponseHead) -> None:
        """
        The upstream's response head: the attempt succeeded. The body's
        events go straight to the sink from now on (each sink keeps the
        front's timer moving as the body arrives).
        """
        self.response = response
        if self.server is not None:
            self.target.backend.report_success(self.server)
        front = self.front
        if front.timer_kind == WAIT:
            # the upstream answers: from now on, any progress will do
            front.set_timer(BODY, self.ctx.settings.idle_timeout)
        sink = self.sink
        conn = self.conn
        if conn is not None:
            conn.parser.sink = sink
        sink.response_head(response)

    def response_body(self, data: bytes) -> None:  # pragma: no cover
        # the parser is handed to the sink with the head (response_head)
        self.sink.response_body(data)

    def response_end(self) -> None:  # pragma: no cover
        self.sink.response_end()

    def upstream_done(self, conn: UpstreamProtocol, extra: bool) -> None:
        """
        The upstream's response is complete (called outside the parser).
        """
        ex = self.ex
        response = self.response
        reusable = (
            not extra
            and ex.request_done
            and response is not None
            and response.keep_alive
            and not conn.lost
            and not conn.transport.disconnecting
        )
        front = self.front
        self.conn = None
        if self.server is not None:
            # the server's slot is free once its response is complete, even
            # while a response buffer still feeds a slow client
            self.release_server()
        rbuf = ex.rbuf
        if rbuf is not None:
            # the buffer still feeds the client: it keeps the client's
            # back-pressure, but no longer holds the upstream
            rbuf.detach()
        else:
            front.relay.switch(None)
        conn.detach()
        if reusable:
            if front.closing or front.lost or ex.close_after:
                self.ctx.pool.release(conn)
            else:
                front.keep_upstream(conn)
        elif not conn.lost:
            conn.transport.loseConnection()
        self.owner.origin_done()

    def body_follows(self, conn: UpstreamProtocol) -> None:
        """
        C{conn}'s response has C{parser.remaining} Content-Length body
        bytes still to come: large enough, they are spliced to the client
        (engine/splice.py).
        """
        remaining = conn.parser.remaining
        if remaining >= SPLICE_MIN and conn.body_splice is None and can_splice(self.ex, conn, remaining):
            BodySplice(self, conn, self.ex, remaining)

    def upstream_upgraded(self, conn: UpstreamProtocol, rest: bytes) -> None:
        """
        The upstream switched protocols (101): splice the two connections.
        """
        if self.ex.status != 101 or self.ex.head.upgrade is None:
            self.upstream_failed(conn, 502, "unexpected protocol switch")
            return
        self.tunnel(conn, b"", rest)

    def tunnel(self, conn: UpstreamProtocol, answer: bytes, to_front: bytes) -> None:
        self.conn = None
        self.front.relay.switch(None)
        conn.detach()
        self.ex.start_tunnel(conn, answer, to_front)

    def upstream_failed(self, conn: UpstreamProtocol, status: int, message: str) -> None:
        log.info("upstream {upstream} failed: {why}", upstream=self.ex.upstream, why=message)
        self._unlink(close=True)
        self.owner.upstream_failed(status, message)

    def internal_error(self, conn: UpstreamProtocol, failure: Failure) -> None:
        """
        A bug of ours while handling the upstream's bytes: a logged 500
        (or a response cut short), never blamed on the upstream.
        """
        self._unlink(close=True)
        self.ex.internal_error(failure)

    def upstream_lost(self, conn: UpstreamProtocol, reason: Failure) -> None:
        if self.conn is not conn:
            return
        self._unlink(close=False)
        ex = self.ex
        if ex.finished:
            return
        if ex.response_started:
            ex.abort_client("upstream closed the connection mid-response")
            return
        if self.response is not None:
            # a response stage held the head back: it will never be whole
            self.owner.upstream_failed(502, "upstream closed the connection mid-response")
            return
        if (
            conn.reused
            and not getattr(self, "retried", False)
            and self.replay is not None
            and not conn.parser.started
        ):
            # the upstream closed a pooled connection as we reused it:
            # once more on a fresh one (nothing of the response was seen)
            self.retried = True
            self.ctx.pool.connect(conn.key, self)
            return
        message = "upstream closed the connection without a response"
        if self.failed_attempt(message, ex.idempotent()):
            return
        self.owner.upstream_failed(502, message)

    def first_byte_timeout(self, message: str) -> bool:
        """
        The upstream sent no response head in time: count it against the
        server and retry when that is safe. True when a retry is under way.
        """
        self._unlink(close=True)
        ex = self.ex
        if ex.response_started or self.response is not None:
            return False
        return self.failed_attempt(message, ex.idempotent() and ex.request_done)

    def raw_data(self, conn: UpstreamProtocol, data: bytes) -> None:
        """
        The answer of a parent proxy to our CONNECT.
        """
        buf = getattr(self, "raw_buffer", b"") + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.ctx.settings.max_head_size:
                self._parent_refused(conn, "parent proxy sent an oversized head")
            else:
                self.raw_buffer = buf
            return
        self.raw_buffer = b""
        status_line = buf[: buf.find(b"\r\n")]
        parts = status_line.split(None, 2)
        ok = (
            len(parts) >= 2
            and parts[0] in (b"HTTP/1.1", b"HTTP/1.0")
            and parts[1].isdigit()
            and 200 <= int(parts[1]) < 300
        )
        if not ok:
            self._parent_refused(
                conn, "parent proxy refused the tunnel: " + status_line.decode("latin-1")[:100]
            )
            return
        self.tunnel(conn, CONNECT_ESTABLISHED, buf[end + 4 :])

    def _parent_refused(self, conn: UpstreamProtocol, message: str) -> None:
        self._unlink(close=True)
        self.ex.close_after = True
        self.owner.upstream_failed(502, message)

    # endings

    def _unlink(self, close: bool) -> None:
        conn = self.conn
        self.conn = None
        self.front.relay.switch(None)
        if conn is None:
            return
        conn.detach()
        if close and not conn.lost:
            conn.transport.loseConnection()

    def close(self) -> None:
        """
        The exchange is over or gave up: a connection still serving it is
        closed (never reused mid-message), the server's slot is freed.
        """
        self.closed = True
        if self.conn is not None:
            self.pending = None
            self._unlink(close=True)
        if self.server is not None or self.waiter is not None:
            self.release_server()
