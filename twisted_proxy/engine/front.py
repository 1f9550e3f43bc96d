# -*- test-case-name: tests.test_exchange -*-
"""
The client connection of an HTTP listener: bytes in, requests parsed,
responses out in order.

One L{FrontProtocol} per connection feeds the request parser and starts one
L{twisted_proxy.engine.exchange.Exchange} per request (pipelined requests
wait their turn). It owns the connection's single timer, whose kind says
what the connection waits for: a request head (408), the next request
(close), a filter's verdict (503), the upstream's first byte (504), any
progress of the exchange (408 or an aborted response).

An exception of ours while handling the client's bytes is a logged 500,
never a 400 that blames the client.

On a graceful stop L{FrontProtocol.drain} lets what is in progress finish
and starts nothing new (see L{twisted_proxy.drain}).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Optional, Tuple

from zope.interface import implementer
from twisted.internet import error as ierror
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.stats import note_refusal
from twisted_proxy.engine.buffer import ResponseBuffer, response_limit
from twisted_proxy.engine.context import ListenerContext
from twisted_proxy.engine.exchange import Exchange
from twisted_proxy.engine.timers import BODY, FILTER, HEADER, IDLE, NO_TIMER, WAIT
from twisted_proxy.flow import QUEUED, UPGRADING, Gate, Relay
from twisted_proxy.http.errors import error_response
from twisted_proxy.http.parser import BadRequest, RequestHead, RequestParser
from twisted_proxy.tls import client_subject
from twisted_proxy.upstream.pool import UpstreamProtocol, set_no_delay, unmapped
from twisted_proxy.drain import notify_gone, register_gone

log = Logger()


class FrontFactory(Factory):
    """
    Builds a L{FrontProtocol} per client connection of a listener.
    """

    noisy = False
    #: the service's L{twisted_proxy.limits.ConnectionLimiter}, if any
    limiter: Any = None

    def __init__(self, context: ListenerContext) -> None:
        self.context = context
        self.connections: set = set()

    def buildProtocol(self, addr: Any) -> "FrontProtocol":
        proto = FrontProtocol(self.context)
        proto.factory = self
        return proto


@implementer(IHalfCloseableProtocol)
class FrontProtocol(Protocol):
    """
    One client connection: requests in, responses out, in order.
    """

    factory: Any = None
    limiter: Any = None
    transport: Any
    #: L{drain} was called: no new request is started (but see drain)
    draining = False
    #: while draining: the request whose head was being received when
    #: L{drain} was called is still served
    admit_head = False
    #: while draining: called with this protocol once its connection is gone
    gone_callbacks: Tuple[Callable[[Any], None], ...] = ()

    def __init__(self, context: ListenerContext) -> None:
        self.ctx = context
        self.clock = context.reactor
        settings = context.settings
        self.parser = RequestParser(
            self, settings.max_head_size, settings.max_field_size, settings.max_header_count
        )
        self.current: Optional[Exchange] = None
        self.receiving: Optional[Exchange] = None
        self.queue: Deque[Exchange] = deque()
        self.splice: Any = None
        self.closing = False
        self.read_closed = False
        self.lost = False
        self.held: Optional[bytes] = None
        self.pending_error: Optional[BadRequest] = None
        self.timer: Any = None
        self.timer_kind = NO_TIMER
        self.deadline = 0.0
        self.client_ip = ""
        self.peer_end: Any = None
        self.allowed = False
        self.relay = Relay()
        # (called only when the client pushes back; a reload may add a spool)
        self.relay.on_pause = self.client_blocked
        self.gate: Any = None
        # the upstream connection of the last exchange, kept for the next
        # request to the same address (as a client keeps its connection)
        self.sticky: Optional[UpstreamProtocol] = None

    def keep_upstream(self, conn: UpstreamProtocol) -> None:
        """
        Hold C{conn} for this client's next request; the one held before
        goes back to the pool.
        """
        pool = self.ctx.pool
        old = self.sticky
        if old is not None:
            self.sticky = None
            pool.unhold(old)
            if old is not conn:
                pool.release(old)
        # held connections count against the pool's bounds like pooled ones
        if pool.hold(conn):
            self.sticky = conn
        else:
            pool.release(conn)

    def client_blocked(self) -> bool:
        """
        The client's connection pushed back: when the current exchange's
        response may be buffered (C{response_buffer}), a L{ResponseBuffer}
        takes the back-pressure instead of the upstream connection. True
        when it did.
        """
        ex = self.current
        if ex is None or ex.rbuf is not None or ex.finished:
            return False
        leg = ex.leg
        if leg is None or leg.conn is None or leg.conn.gate is None:
            return False
        spool = ex.ctx.spool  # (the exchange's generation: a reload may differ)
        if spool is None:
            return False
        limit = response_limit(ex)
        if limit <= 0:
            return False
        rbuf = ex.rbuf = ResponseBuffer(ex, spool, limit)
        rbuf.attach(leg.conn.gate)
        # the relay is paused: the buffer starts blocked
        self.relay.switch(rbuf)
        return True

    def release_upstream(self) -> None:
        conn = self.sticky
        if conn is not None:
            self.sticky = None
            self.ctx.pool.unhold(conn)
            self.ctx.pool.release(conn)

    # timers: one DelayedCall, moved lazily

    def set_timer(self, kind: int, seconds: float, now: float = 0.0) -> None:
        """
        Time C{kind} out C{seconds} from C{now} (the clock's time when the
        caller has just read it, else read here).
        """
        self.timer_kind = kind
        self.deadline = (now or self.clock.seconds()) + seconds
        if self.timer is None:
            self.timer = self.clock.callLater(
                min(seconds, self.ctx.timer_step), self._timer_fired
            )

    def stop_timer(self) -> None:
        """
        Nothing to time here (another timer bounds the wait): the
        scheduled wake-up, if any, does nothing.
        """
        self.timer_kind = NO_TIMER

    def touch(self) -> None:
        """
        The exchange made progress: push the idle deadline back.
        """
        if self.timer_kind == BODY:
            self.deadline = self.clock.seconds() + self.ctx.settings.idle_timeout

    def cancel_timer(self) -> None:
        self.timer_kind = NO_TIMER
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def _timer_fired(self) -> None:
        self.timer = None
        kind = self.timer_kind
        if kind == NO_TIMER or self.lost:
            return
        remaining = self.deadline - self.clock.seconds()
        if remaining > 0:
            self.timer = self.clock.callLater(
                min(remaining, self.ctx.timer_step), self._timer_fired
            )
            return
        self.timer_kind = NO_TIMER
        settings = self.ctx.settings
        current = self.current
        if kind == HEADER:
            if self.parser.in_head:
                self.reject(BadRequest(408, "request head not received in time"))
            else:
                self.transport.loseConnection()
        elif kind == IDLE or current is None:
            self.transport.loseConnection()
        elif kind == WAIT:
            current.timed_out(
                504, f"upstream sent no response within {settings.first_byte_timeout:g}s"
            )
        elif kind == FILTER:
            current.timed_out(
                503, f"request filter gave no verdict within {settings.filter_timeout:g}s"
            )
        else:
            current.timed_out(408, f"no progress for {settings.idle_timeout:g}s")

    # Protocol

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", None) or "unix"
        if self.client_ip == "unix" or not isinstance(self.client_ip, str):
            self.client_ip = "127.0.0.1" if peer.__class__.__name__ == "UNIXAddress" else str(self.client_ip)
        self.allowed = self.ctx.client_allowed(self.client_ip)
        if self.ctx.policy.forward:
            # checked at the first request against the proxy's own ends
            own = self.transport.getHost()
            self.peer_end = (
                unmapped(self.client_ip),
                getattr(peer, "port", 0),
                unmapped(getattr(own, "host", "")),
                getattr(own, "port", 0),
            )
        self.gate = Gate(self.transport)
        self.transport.registerProducer(self.relay, True)
        set_no_delay(self.transport)
        if self.factory is not None:
            self.factory.connections.add(self)
        self.set_timer(HEADER, self.ctx.settings.header_timeout)
        limiter = self.limiter = getattr(self.factory, "limiter", None)
        if limiter is not None:
            limiter.opened(self)

    def sheddable(self) -> bool:
        """
        Whether the connection limiter may close this connection to make
        room: it is idle between requests or has not sent a whole request
        head yet (no exchange, no tunnel, not closing already).
        """
        return self.current is None and self.splice is None and not self.closing

    def dataReceived(self, data: bytes) -> None:
        splice = self.splice
        if splice is not None:
            splice.data_from_front(data)
            return
        if self.closing:
            return
        if self.held is not None:
            # bytes after an upgrade request: not HTTP unless it is refused
            self.held += data
            self.gate.pause(UPGRADING)
            return
        if self.timer_kind == BODY:
            self.deadline = self.clock.seconds() + self.ctx.settings.idle_timeout
        parser = self.parser
        try:
            rest = parser.feed(data)
        except BadRequest as e:
            self.reject(e)
            return
        except Exception:
            self.internal_error(Failure())
            return
        if rest is not None:
            self._upgrade_head_done(rest)
        elif parser.in_head and self.timer_kind == IDLE:
            # a head has begun on an idle connection: it has header_timeout
            self.set_timer(HEADER, self.ctx.settings.header_timeout)

    def internal_error(self, failure: Failure) -> None:
        """
        A bug of ours while handling this client's request: log it with
        its traceback, answer 500 (or cut the response short) and close.
        """
        log.failure(
            "internal error on listener {listener} for {client}",
            failure,
            listener=self.ctx.name,
            client=self.client_ip,
        )
        if self.lost:
            return
        self.reject(BadRequest(500, "internal error"))

    def readConnectionLost(self) -> None:
        if self.splice is not None:
            self.splice.read_closed_front()
            return
        self.read_closed = True
        receiving = self.receiving
        if receiving is not None and not receiving.request_done:
            # the request body will never be complete
            self.transport.loseConnection()
            return
        if self.current is None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        self.lost = True
        self.closing = True
        self.cancel_timer()
        self.relay.switch(None)
        # (the hook is a bound method, and the parser's sink is this
        # protocol: reference cycles that would wait for the garbage
        # collector)
        self.relay.on_pause = None
        self.parser.close()
        if self.factory is not None:
            self.factory.connections.discard(self)
        if self.limiter is not None:
            self.limiter.closed(self)
        if self.splice is not None:
            self.splice.lost_front()
        else:
            current = self.current
            self.current = None
            if current is not None:
                current.client_lost()
            for ex in self.queue:
                ex.client_lost()
            self.queue.clear()
            self.release_upstream()
        notify_gone(self)

    # graceful stop

    def drain(self, gone: Optional[Callable[[Any], None]] = None) -> None:
        """
        Finish this connection gracefully (the process stops, or its
        listener was removed by a reload): what is in progress completes,
        nothing new starts, then the connection closes.

          - Idle between requests, or nothing of a request received yet
            (a new connection, a TLS handshake): closed now.
          - Part of a request head received: that one request is still
            served (the client has begun sending it and could not tell
            whether it was processed), with C{Connection: close}; the
            head still has C{header_timeout} to arrive.
          - An exchange in progress completes normally (its request and
            response bodies stream to the end, nothing is cut); its
            response says C{Connection: close} when its head has not gone
            out yet; then the connection closes instead of waiting for
            another request.
          - Pipelined requests read but not started are not answered (nor
            logged), and no further request is read, as nginx does on a
            graceful stop (C{ngx_http_finalize_connection} skips
            keep-alive, where pipelined requests would be taken up, once
            the worker is exiting): the response carries C{Connection:
            close} (or the connection closes after it), which tells the
            client the rest was not processed (RFC 9112, section 9.3.2: it
            retries them).
          - A tunnel (CONNECT, WebSocket) keeps running until it ends by
            itself (or by C{tunnel_idle_timeout}).

        Nothing here is bounded by time of its own: the caller
        (L{twisted_proxy.drain.drain}) aborts what is left after
        C{drain_timeout}.

        @param gone: called with this protocol once the connection is
            gone (at once if it already is); each drain of the connection
            gets its call.
        """
        if not register_gone(self, gone):
            return
        if self.draining:
            return
        self.draining = True
        if self.splice is not None:
            return
        current = self.current
        if current is None:
            if self.parser.in_head and not self.closing:
                self.admit_head = True
                return
            self.closing = True
            self.cancel_timer()
            self.transport.loseConnection()
            return
        if not current.response_started:
            current.close_after = True
        queue = self.queue
        if queue:
            if self.receiving in queue:
                self.receiving = None
            # never started: nothing to log or release (reading stays
            # paused, as it was while they waited)
            queue.clear()

    def _drained_head(self) -> bool:
        """
        A request head arrived while draining: whether it is served (the
        one whose head was in progress when the drain began); otherwise it
        and everything after it are ignored, and reading stops.
        """
        if self.admit_head and self.current is None and not self.closing:
            self.admit_head = False
            return True
        self.admit_head = False
        self.closing = True
        self.gate.pause(QUEUED)
        return False

    # request parser sink

    def request_head(self, head: RequestHead) -> None:
        factory = self.factory
        if factory is not None and factory.context is not self.ctx:
            # a reload: each new request takes the listener's new generation
            # (the exchanges already running keep theirs)
            self.ctx = factory.context
        if self.draining:
            if not self._drained_head():
                return
            ex = Exchange(self, head)
            ex.close_after = True
        else:
            ex = Exchange(self, head)
        self.receiving = ex
        if self.current is None:
            self.current = ex
            ex.start(ex.start_time)
        else:
            self.queue.append(ex)
            self.gate.pause(QUEUED)

    def request_body(self, data: bytes) -> None:
        ex = self.receiving
        if ex is not None:
            ex.request_body(data)

    def request_end(self) -> None:
        ex = self.receiving
        if ex is not None:
            self.receiving = None
            ex.request_end()

    def _upgrade_head_done(self, rest: bytes) -> None:
        """
        llhttp stopped after a CONNECT or Upgrade request head: what
        follows belongs to the tunnel if there will be one.
        """
        if self.receiving is not None:
            self.request_end()
        if self.closing:
            return  # refused: nothing more is read
        self.held = rest
        self.gate.pause(UPGRADING)

    def take_held(self) -> bytes:
        held = self.held or b""
        self.held = None
        return held

    def resume_parsing(self) -> None:
        """
        An upgrade was refused: parse what the client sent meanwhile as the
        next requests.
        """
        held = self.take_held()
        self.parser.reset()
        self.gate.resume(UPGRADING)
        if held:
            self.dataReceived(held)

    # answers

    def reject(self, error: BadRequest) -> None:
        """
        The client sent something unacceptable (or we failed it): answer
        it (after the responses it is owed) and close.
        """
        self.closing = True
        self.gate.pause(QUEUED)
        receiving = self.receiving
        if receiving is not None:
            # a malformed request body: that request can never complete
            self.receiving = None
            if receiving is self.current:
                receiving.request_failed(error)
                return
            self.queue.remove(receiving)
        elif error.status >= 500 and self.current is not None:
            # our own failure while the current exchange was answered
            self.current.request_failed(error)
            return
        if self.current is not None:
            self.pending_error = error
            return
        self._send_rejection(error)

    def _send_rejection(self, error: BadRequest) -> None:
        data = error_response(error.status, error.message, close=True)
        self.transport.write(data)
        self.ctx.stats.record(error.status, 0, len(data), "error")
        note_refusal(self.clock.seconds(), self.ctx.name, self.client_ip, "", "", error.status, "error", error.message)
        self.ctx.access_log.log(
            self.ctx.name,
            self.client_ip,
            "",
            "",
            error.status,
            0,
            len(data),
            0.0,
            "",
            "error",
            "",
        )
        log.debug("bad request from {client}: {why}", client=self.client_ip, why=error.message)
        self.transport.loseConnection()

    def exchange_done(self, ex: Exchange, now: float = 0.0) -> None:
        """
        C{ex} has been answered completely (at C{now}, when the caller
        read the clock): serve the next request.
        """
        if self.current is not ex:
            return
        self.current = None
        if self.lost:
            return
        if ex.close_after or self.draining:
            self.closing = True
            self.cancel_timer()
            self.transport.loseConnection()
            return
        if self.queue:
            nxt = self.queue.popleft()
            if not self.queue:
                self.gate.resume(QUEUED)
            self.current = nxt
            nxt.start()
            return
        if self.pending_error is not None:
            self._send_rejection(self.pending_error)
            return
        if self.read_closed:
            self.transport.loseConnection()
            return
        self.set_timer(IDLE, self.ctx.settings.idle_timeout, now)
        limiter = self.limiter
        if limiter is not None and limiter.full:
            limiter.idle(self)
        if self.held is not None:
            self.resume_parsing()


class SubjectFrontProtocol(FrontProtocol):
    """
    A client connection of a TLS listener that verifies client
    certificates: each request loses any client-sent subject header and
    gets the verified subject (read once, at the first request: the
    handshake is done by then).
    """

    subject_name = b"X-Client-Subject"
    subject_lname = b"x-client-subject"
    subject: Optional[bytes] = None
    subject_read = False

    def request_head(self, head: RequestHead) -> None:
        if not self.subject_read:
            self.subject_read = True
            self.subject = client_subject(self.transport)
        lname = self.subject_lname
        headers = head.headers
        for name, _ in headers:
            if name.lower() == lname:
                headers[:] = [(n, v) for n, v in headers if n.lower() != lname]
                break
        if self.subject is not None:
            headers.append((self.subject_name, self.subject))
        FrontProtocol.request_head(self, head)


class SubjectFrontFactory(FrontFactory):
    """
    L{FrontFactory} making L{SubjectFrontProtocol}s.
    """

    def __init__(self, context: Any, subject_header: str = "X-Client-Subject") -> None:
        FrontFactory.__init__(self, context)
        self.subject_name = subject_header.encode("latin-1")

    def buildProtocol(self, addr: Any) -> SubjectFrontProtocol:
        proto = SubjectFrontProtocol(self.context)
        proto.subject_name = self.subject_name
        proto.subject_lname = self.subject_name.lower()
        proto.factory = self
        return proto
