# -*- test-case-name: tests.test_exchange -*-
"""
The HTTP exchange engine shared by every HTTP listener.

One L{FrontProtocol} per client connection parses requests (through
L{twisted_proxy.http.parser}), and one L{Exchange} per request carries it
through policy (the listener's client check and filter chain), target choice
(the listener's router), an upstream connection from the L{Pool}, and back.
Bodies stream in both directions with back-pressure: the client's transport
is paused while the upstream cannot take more, and the upstream's while the
client cannot. CONNECT and protocol upgrades end in a
L{twisted_proxy.tunnel.Splice}.

Forward and reverse listeners differ only in their router.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, FrozenSet, Optional, Sequence, Tuple

from zope.interface import implementer
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.addresses import AddressMatcher
from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.flow import (
    CONNECTING,
    FILTERING,
    QUEUED,
    UPGRADING,
    Gate,
    Relay,
    write_now,
    write_now_sequence,
)
from twisted_proxy.http import policy
from twisted_proxy.http.errors import error_response
from twisted_proxy.http.parser import BadRequest, RequestHead, RequestParser, ResponseHead
from twisted_proxy.stats import ListenerStats
from twisted_proxy.tunnel import Splice
from twisted_proxy.upstream.backend import BUSY
from twisted_proxy.upstream.pool import Pool, UpstreamProtocol, set_no_delay

log = Logger()

# what the front connection's single timer is waiting for
NO_TIMER = 0
HEADER = 1  # a request head (408)
IDLE = 2  # the next request on a keep-alive connection (close)
WAIT = 3  # the upstream's response head (504)
BODY = 4  # any progress of the exchange (close)

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
MAX_REPLAY = 65536
IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])


class FilterChain:
    """
    A listener's filters followed by a route's, sorted once by what they
    do (not per request).

    @ivar request: every filter, in order (their C{filter_request}).
    @ivar response: C{(filter, filter_response)} for those with a
        response side.
    @ivar transform: the first body transform, or L{None}.
    """

    __slots__ = ("request", "response", "transform")

    def __init__(self, filters: Sequence[Any]) -> None:
        self.request = tuple(filters)
        self.response = tuple(
            (flt, flt.filter_response)
            for flt in self.request
            if getattr(flt, "filter_response", None) is not None
        )
        self.transform = next(
            (
                flt
                for flt in self.request
                if hasattr(flt, "transform_request") or hasattr(flt, "transform_response")
            ),
            None,
        )


class ListenerContext:
    """
    What every connection of one listener shares: settings, the clock, the
    pool, the access log, the router and the filters.
    """

    def __init__(
        self,
        name: str,
        reactor: Any,
        settings: Any,
        pool: Pool,
        access_log: Any,
        router: Any,
        filters: Sequence[Any] = (),
        allow_clients: Sequence[Any] = (),
        anonymity: str = policy.ANONYMOUS,
        connect_ports: FrozenSet[int] = frozenset([443]),
        allow_all: bool = False,
        kind: str = "forward",
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.settings = settings
        self.pool = pool
        self.access_log = access_log
        self.router = router
        self.filters = tuple(filters)
        self.allow_clients = tuple(allow_clients)
        self.anonymity = anonymity
        self.add_via = getattr(router, "add_via", anonymity != policy.ELITE)
        self.connect_ports = frozenset(connect_ports)
        self.allow_all = allow_all
        self.kind = kind
        self._chains: dict = {}
        self.stats = ListenerStats(name, kind)
        self.hide: FrozenSet[bytes] = getattr(router, "hide", frozenset())
        self.skip = policy.response_skip(self.hide)
        # the front timer never sleeps longer than the shortest timeout, so
        # a new deadline is never earlier than the scheduled wake-up
        self.timer_step = min(
            settings.header_timeout,
            settings.idle_timeout,
            settings.first_byte_timeout,
        )
        self._allowed = AddressMatcher(self.allow_clients)

    def chain(self, route_filters: Tuple[Any, ...]) -> FilterChain:
        """
        The listener's filters then C{route_filters} (a route's tuple, the
        same object for every request of that route), built once.
        """
        found = self._chains.get(id(route_filters))
        if found is None or found[0] is not route_filters:
            found = (route_filters, FilterChain(self.filters + route_filters))
            self._chains[id(route_filters)] = found
        return found[1]  # type: ignore[no-any-return]

    def client_allowed(self, client_ip: str) -> bool:
        """
        Whether C{client_ip} is within the listener's C{allow_clients}.
        """
        if self.allow_all:
            return True
        return self._allowed.match(client_ip) is not None


class FrontFactory(Factory):
    """
    Builds a L{FrontProtocol} per client connection of a listener.
    """

    noisy = False

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
    transport: Any

    def __init__(self, context: ListenerContext) -> None:
        self.ctx = context
        self.clock = context.reactor
        self.parser = RequestParser(self, context.settings.max_head_size)
        self.current: Optional[Exchange] = None
        self.receiving: Optional[Exchange] = None
        self.queue: Deque[Exchange] = deque()
        self.splice: Optional[Splice] = None
        self.closing = False
        self.read_closed = False
        self.lost = False
        self.held: Optional[bytes] = None
        self.pending_error: Optional[BadRequest] = None
        self.timer: Any = None
        self.timer_kind = NO_TIMER
        self.deadline = 0.0
        self.client_ip = ""
        self.allowed = False
        self.relay = Relay()
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
        # held connections count against pool_max_idle like pooled ones
        if pool.hold(conn):
            self.sticky = conn
        else:
            pool.release(conn)

    def release_upstream(self) -> None:
        conn = self.sticky
        if conn is not None:
            self.sticky = None
            self.ctx.pool.unhold(conn)
            self.ctx.pool.release(conn)

    # timers: one DelayedCall, moved lazily

    def set_timer(self, kind: int, seconds: float) -> None:
        self.timer_kind = kind
        self.deadline = self.clock.seconds() + seconds
        if self.timer is None:
            self.timer = self.clock.callLater(
                min(seconds, self.ctx.timer_step), self._timer_fired
            )

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
        if kind == HEADER:
            if self.parser.in_head:
                self.reject(BadRequest(408, "request head not received in time"), timeout=True)
            else:
                self.transport.loseConnection()
        elif kind == IDLE:
            self.transport.loseConnection()
        elif kind == WAIT:
            if self.current is not None:
                self.current.timed_out(
                    504, f"upstream sent no response within {settings.first_byte_timeout:g}s"
                )
        elif kind == BODY:
            if self.current is not None:
                self.current.timed_out(408, f"no progress for {settings.idle_timeout:g}s")
            else:
                self.transport.loseConnection()

    # Protocol

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", None) or "unix"
        if self.client_ip == "unix" or not isinstance(self.client_ip, str):
            self.client_ip = "127.0.0.1" if peer.__class__.__name__ == "UNIXAddress" else str(self.client_ip)
        self.allowed = self.ctx.client_allowed(self.client_ip)
        self.gate = Gate(self.transport)
        self.transport.registerProducer(self.relay, True)
        set_no_delay(self.transport)
        if self.factory is not None:
            self.factory.connections.add(self)
        self.set_timer(HEADER, self.ctx.settings.header_timeout)

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
        if rest is not None:
            self._upgrade_head_done(rest)
        elif parser.in_head and self.timer_kind == IDLE:
            # a head has begun on an idle connection: it has header_timeout
            self.set_timer(HEADER, self.ctx.settings.header_timeout)

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
        if self.factory is not None:
            self.factory.connections.discard(self)
        if self.splice is not None:
            self.splice.lost_front()
            return
        current = self.current
        self.current = None
        if current is not None:
            current.client_lost()
        for ex in self.queue:
            ex.client_lost()
        self.queue.clear()
        self.release_upstream()

    # request parser sink

    def request_head(self, head: RequestHead) -> None:
        ex = Exchange(self, head)
        self.receiving = ex
        if self.current is None:
            self.current = ex
            ex.start()
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

    def reject(self, error: BadRequest, timeout: bool = False) -> None:
        """
        The client sent something unacceptable: answer it (after the
        responses it is owed) and close.
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
        if self.current is not None:
            self.pending_error = error
            return
        self._send_rejection(error)

    def _send_rejection(self, error: BadRequest) -> None:
        data = error_response(error.status, error.message, close=True)
        self.transport.write(data)
        self.ctx.stats.record(error.status, 0, len(data), "error")
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

    def exchange_done(self, ex: "Exchange") -> None:
        """
        C{ex} has been answered completely: serve the next request.
        """
        if self.current is not ex:
            return
        self.current = None
        if self.lost:
            return
        if ex.close_after:
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
        self.set_timer(IDLE, self.ctx.settings.idle_timeout)
        if self.held is not None:
            self.resume_parsing()


class Exchange:
    """
    One request and its response.
    """

    __slots__ = (
        "front",
        "ctx",
        "head",
        "start_time",
        "target",
        "conn",
        "pending",
        "replay",
        "replay_size",
        "retried",
        "request_done",
        "response_started",
        "response_done",
        "finished",
        "discard",
        "close_after",
        "status",
        "bytes_in",
        "bytes_out",
        "decision",
        "rule",
        "upstream",
        "out_framing",
        "response",
        "tunnel",
        "raw_buffer",
        "server",
        "tried",
        "waiter",
        "filters",
        "resp_filters",
        "info",
        "buffer",
        "buffer_size",
        "awaiting_body",
        "transform",
        "resp_buffer",
        "resp_overflow",
        "late_error",
        "out",
    )

    def __init__(self, front: FrontProtocol, head: RequestHead) -> None:
        self.front = front
        self.ctx = front.ctx
        self.head = head
        self.start_time = front.clock.seconds()
        self.target: Any = None
        self.conn: Optional[UpstreamProtocol] = None
        self.pending: Optional[list] = None
        self.replay: Optional[list] = []
        self.replay_size = 0
        self.retried = False
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.finished = False
        self.discard = False
        self.close_after = not head.keep_alive
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.decision = "allow"
        self.rule = ""
        self.upstream = ""
        self.out_framing = policy.NO_BODY
        self.response: Optional[ResponseHead] = None
        self.tunnel: Optional[Splice] = None
        self.raw_buffer = b""
        self.server: Any = None
        self.tried: Any = ()
        self.waiter: Any = None
        self.filters: Tuple[Any, ...] = ()
        self.resp_filters: Tuple[Any, ...] = ()
        self.info: Optional[RequestInfo] = None
        self.buffer: Optional[list] = None
        self.buffer_size = 0
        self.awaiting_body = False
        self.transform: Any = None
        self.resp_buffer: Optional[list] = None
        self.resp_overflow = False
        self.late_error: Optional[Tuple[int, str]] = None
        #: response bytes collected during one upstream read (see emit)
        self.out: Optional[list] = None

    # policy and target

    def start(self) -> None:
        front = self.front
        ctx = self.ctx
        front.set_timer(BODY, ctx.settings.idle_timeout)
        if not front.allowed:
            self.respond(403, "client address not allowed", "deny", "listener.allow_clients")
            return
        try:
            target = ctx.router.route(self.head)
        except BadRequest as e:
            # a router may answer by itself (a redirect: decision and headers)
            self.respond(
                e.status, e.message, getattr(e, "decision", "error"), "", getattr(e, "headers", ())
            )
            return
        self.target = target
        if target.connect and target.port not in ctx.connect_ports:
            self.respond(
                403, f"CONNECT to port {target.port} is not allowed", "deny", "listener.connect_ports"
            )
            return
        chain = ctx.chain(target.filters)
        filters = self.filters = chain.request
        if filters:
            info = self.info = self.request_info()
            self.resp_filters = chain.response
            transform = self.transform = chain.transform
            if (
                transform is not None
                and self.head.framing != policy.NO_BODY
                and transform.wants_request(info)
            ):
                # this body is read whole (up to max_body) and rewritten
                self.buffer = []
            self.run_filters(0, info)
        else:
            self.proceed()

    def request_info(self) -> RequestInfo:
        target = self.target
        return RequestInfo(
            self.ctx.name,
            self.front.client_ip,
            self.head.method.decode("latin-1"),
            "" if target.connect else target.scheme,
            target.host,
            target.port,
            "" if target.connect else target.path.decode("latin-1") if target.parent is None else
            _origin_path(target.path),
            self.head.headers,
            target.connect,
            self.ctx.kind,
        )

    def run_filters(self, index: int, info: Optional[RequestInfo] = None) -> None:
        filters = self.filters
        if info is None:
            info = self.info = self.request_info()
        while index < len(filters):
            flt = filters[index]
            index += 1
            try:
                verdict = flt.filter_request(info)
            except Exception:
                log.failure("filter {name} failed", name=getattr(flt, "name", repr(flt)))
                self.respond(500, "request filter failed", "error", getattr(flt, "name", ""))
                return
            if isinstance(verdict, Deferred):
                self.front.gate.pause(FILTERING)

                def resumed(verdict: Any, index: int = index) -> None:
                    self.front.gate.resume(FILTERING)
                    if self.finished:
                        return
                    if verdict is not None:
                        self.denied(verdict)
                    else:
                        self.run_filters(index, info)

                def failed(failure: Failure, flt: Any = flt) -> None:
                    self.front.gate.resume(FILTERING)
                    log.failure("filter {name} failed", failure, name=getattr(flt, "name", ""))
                    if not self.finished:
                        self.respond(500, "request filter failed", "error", getattr(flt, "name", ""))

                verdict.addCallbacks(resumed, failed)
                return
            if verdict is not None:
                self.denied(verdict)
                return
        self.proceed()

    def denied(self, verdict: Any) -> None:
        if isinstance(verdict, Deny):
            self.respond(
                verdict.status, verdict.message, "deny", verdict.rule, verdict.headers
            )
        else:
            self.respond(500, "request filter gave an invalid verdict", "error", "")

    def proceed(self) -> None:
        target = self.target
        if target.connect:
            self.upstream = f"{target.address[0]}:{target.address[1]}"
            self.ctx.pool.connect(target.address, self)
            return
        head = self.head
        if head.expect_continue and not self.request_done and head.version == b"1.1":
            self.front.transport.write(CONTINUE)
        if self.buffer is not None:
            if not self.request_done:
                self.awaiting_body = True
                return
            if not self.transform_request_body():
                return
        if target.backend is not None:
            self.choose_server()
            return
        self.dispatch(target.address)

    def transform_request_body(self) -> bool:
        """
        Rewrite the buffered request body with the transform filter; false
        when the request was answered instead.
        """
        body = b"".join(self.buffer or ())
        self.buffer = None
        flt = self.transform
        try:
            new = flt.transform_request(self.info, body)
        except ValueError as e:
            self.respond(400, f"request body refused by {flt.name}: {e}", "deny", flt.name)
            return False
        except Exception:
            log.failure("transform {name} failed", name=getattr(flt, "name", ""))
            self.respond(500, "request transform failed", "error", getattr(flt, "name", ""))
            return False
        head = self.head
        head.headers[:] = [
            (n, v)
            for n, v in head.headers
            if n.lower() not in (b"content-length", b"transfer-encoding")
        ]
        head.headers.append((b"Content-Length", b"%d" % len(new)))
        head.framing = policy.CONTENT_LENGTH
        head.tokens = None
        self.pending = [new] if new else None
        return True

    def dispatch(self, address: Tuple[str, int]) -> None:
        """
        Send the request on a pooled connection to C{address}, or a new one.
        """
        front = self.front
        conn = front.sticky
        if conn is not None:
            front.sticky = None
            self.ctx.pool.unhold(conn)
            if conn.key == address and not conn.lost:
                conn.reused = True
                self.upstream_ready(conn)
                return
            self.ctx.pool.release(conn)
        conn = self.ctx.pool.acquire(address)
        if conn is not None:
            self.upstream_ready(conn)
        else:
            self.ctx.pool.connect(address, self)

    # backends (reverse listeners)

    def choose_server(self) -> None:
        """
        Pick a server of the route's backend (not one already tried) and
        dispatch to it; wait for a slot when all are at max_connections.
        """
        backend = self.target.backend
        key = b""
        if backend.key_kind:
            key = backend.key_for(self.front.client_ip, self.head.headers)
        server = backend.choose(key, self.tried)
        if server is None:
            if self.tried:
                # every server was tried: the last failure stands
                self.respond(502, "no server of the backend could answer", "error")
                return
            self.respond(
                503,
                f"no server of backend {backend.name} is available",
                "error",
                "",
                ((b"Retry-After", b"%d" % backend.retry_after()),),
            )
            return
        if server is BUSY:
            self.front.gate.pause(CONNECTING)
            self.waiter = backend.wait(self._slot_free, self._queue_timeout)
            return
        backend.acquire(server)
        self.server = server
        self.dispatch(server.address)

    def _slot_free(self) -> None:
        self.waiter = None
        if self.finished:
            return
        self.choose_server()

    def _queue_timeout(self) -> None:
        self.waiter = None
        if self.finished:
            return
        backend = self.target.backend
        self.respond(
            503,
            f"every server of backend {backend.name} is at its connection limit",
            "error",
            "",
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

    def retry_elsewhere(self, why: str) -> bool:
        """
        After a failure before any response byte: report it (passive
        health) and, when the budget and the request allow, try another
        server. True when a retry is under way.
        """
        server = self.server
        target = self.target
        if server is None or target is None or target.backend is None:
            return False
        backend = target.backend
        backend.report_failure(server, why)
        self.release_server()
        tried = tuple(self.tried) + (server,)
        self.tried = tried
        if len(tried) > backend.retries or self.replay is None:
            return False
        if self.response_started or self.front.lost:
            return False
        log.info(
            "{url}: {why}; retrying on another server of {backend}",
            url=self.url(),
            why=why,
            backend=backend.name,
        )
        self.choose_server()
        return True

    # upstream connection

    def upstream_ready(self, conn: UpstreamProtocol) -> None:
        if self.finished or self.front.lost:
            if self.target is not None and self.target.connect:
                conn.transport.loseConnection()
            else:
                self.ctx.pool.release(conn)
            return
        target = self.target
        self.conn = conn
        server = self.server
        if server is not None:
            self.upstream = server.label
        else:
            address = target.address
            self.upstream = f"{address[0]}:{address[1]}"
        if target.connect:
            if target.parent is not None:
                conn.exchange = self
                conn.raw = True
                conn.transport.write(
                    b"CONNECT " + target.authority + b" HTTP/1.1\r\nHost: " + target.authority
                    + b"\r\n\r\n"
                )
                self.front.set_timer(WAIT, self.ctx.settings.first_byte_timeout)
            else:
                self.start_tunnel(conn, CONNECT_ESTABLISHED, b"")
            return
        head = self.head
        ctx = self.ctx
        conn.attach(self, head.method == b"HEAD")
        data = ctx.router.request_head(head, target, self.front.client_ip, server)
        transport = conn.transport
        write_now(transport, data)
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
        self.front.gate.resume(CONNECTING)
        # back-pressure both ways: each side's relay pauses the other's gate
        conn.relay.switch(self.front.gate)
        self.front.relay.switch(conn.gate)
        if self.request_done:
            self.front.set_timer(WAIT, ctx.settings.first_byte_timeout)

    def upstream_connect_failed(self, status: int, message: str) -> None:
        if self.finished:
            return
        self.conn = None
        if self.retry_elsewhere(message):
            return
        self.respond(status, message, "error")

    def _unlink(self, close: bool) -> None:
        conn = self.conn
        self.conn = None
        self.front.relay.switch(None)
        if conn is None:
            return
        conn.detach()
        if close and not conn.lost:
            conn.transport.loseConnection()

    # request body

    def request_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.discard:
            return
        buffer = self.buffer
        if buffer is not None:
            self.buffer_size += len(data)
            if self.buffer_size > self.transform.max_body:
                self.buffer = None
                self.respond(
                    413, f"request body over {self.transform.max_body} bytes", "deny",
                    self.transform.name,
                )
                return
            buffer.append(data)
            self.front.touch()
            return
        if self.head.framing == policy.CHUNKED:
            pieces = [b"%x\r\n" % len(data), data, b"\r\n"]
        else:
            pieces = [data]
        self._send(pieces, len(data))
        self.front.touch()

    def request_end(self) -> None:
        self.request_done = True
        if self.discard:
            if self.response_done:
                self.finish()
            return
        if self.buffer is not None:
            if self.awaiting_body:
                self.awaiting_body = False
                if self.transform_request_body():
                    target = self.target
                    if target.backend is not None:
                        self.choose_server()
                    else:
                        self.dispatch(target.address)
            return
        if self.head.framing == policy.CHUNKED:
            self._send([LAST_CHUNK], 5)
        if self.response_done:
            self.finish()
        elif self.conn is not None and not self.response_started and not self.target.connect:
            self.front.set_timer(WAIT, self.ctx.settings.first_byte_timeout)

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

    # response (the upstream parser's sink)

    def emit(self, data: bytes) -> None:
        """
        Send C{data} to the client: collected while an upstream read is
        being parsed (one send for head and body), else written now.
        """
        out = self.out
        if out is not None:
            out.append(data)
        else:
            self.front.transport.write(data)

    def flush(self) -> None:
        """
        Send what the last upstream read produced for the client.
        """
        out = self.out
        self.out = None
        if out:
            if len(out) == 1:
                write_now(self.front.transport, out[0])
            else:
                write_now_sequence(self.front.transport, out)

    def response_head(self, response: ResponseHead) -> None:
        self.response = response
        if self.server is not None:
            self.target.backend.report_success(self.server)
        status = response.status
        self.status = status
        info = self.info
        if info is not None and status != 101:
            for flt, filter_response in self.resp_filters:
                try:
                    filter_response(info, response)
                except Exception:
                    log.failure("filter {name} failed", name=getattr(flt, "name", ""))
                    # hold the response back and answer 500 at its end
                    self.late_error = (500, "response filter failed")
                    self.resp_buffer = []
                    self.resp_overflow = True
                    return
                response.lnames = None  # headers may have changed
            transform = self.transform
            if (
                transform is not None
                and response.framing != policy.NO_BODY
                and hasattr(transform, "transform_response")
                and transform.wants_response(info, response)
            ):
                self.resp_buffer = []
                self.buffer_size = 0
                return
        self.write_response_head(response)

    def write_response_head(self, response: ResponseHead) -> None:
        status = response.status
        head = self.head
        front = self.front
        upgrade = None
        if status == 101:
            if head.upgrade is None:
                raise BadResponseForRequest("101 without an upgrade request")
            upgrade = policy.header_value(response.headers, b"upgrade") or head.upgrade
            framing = policy.NO_BODY
        else:
            framing = response.framing
            if framing >= policy.CHUNKED:
                if head.version == b"1.1":
                    framing = policy.CHUNKED
                else:
                    framing = policy.CLOSE_DELIMITED
                    self.close_after = True
        self.out_framing = framing
        close = self.close_after or front.read_closed
        data = policy.response_head(
            status,
            response.reason,
            response.headers,
            framing,
            self.ctx.add_via,
            close,
            head.version == b"1.0" and not close,
            upgrade,
            self.ctx.hide,
            response.lnames,
            response.tokens,
            self.ctx.skip,
        )
        self.response_started = True
        self.bytes_out += len(data)
        self.emit(data)
        if front.timer_kind == WAIT:
            front.set_timer(BODY, self.ctx.settings.idle_timeout)

    def response_body(self, data: bytes) -> None:
        resp_buffer = self.resp_buffer
        if resp_buffer is not None:
            if self.resp_overflow:
                return
            self.buffer_size += len(data)
            if self.buffer_size > getattr(self.transform, "max_body", 0):
                # too large to rewrite: give up on this upstream response
                self.resp_overflow = True
                resp_buffer.clear()
                if self.conn is not None:
                    self.conn.transport.loseConnection()
                return
            resp_buffer.append(data)
            return
        self.bytes_out += len(data)
        if self.out_framing == policy.CHUNKED:
            self.emit(b"%x\r\n" % len(data))
            self.emit(data)
            self.emit(b"\r\n")
        else:
            self.emit(data)
        front = self.front
        if front.timer_kind == BODY:
            front.deadline = front.clock.seconds() + self.ctx.settings.idle_timeout

    def response_end(self) -> None:
        if self.resp_buffer is not None:
            self.transform_response_body()
            return
        if self.out_framing == policy.CHUNKED:
            self.emit(LAST_CHUNK)
            self.bytes_out += 5
        self.response_done = True

    def transform_response_body(self) -> None:
        """
        The buffered response is complete: rewrite it and send it with a
        Content-Length.
        """
        response = self.response
        buffered = self.resp_buffer
        self.resp_buffer = None
        flt = self.transform
        if self.resp_overflow or response is None or buffered is None or flt is None:
            status, message = self.late_error or (
                502, f"response body over {getattr(flt, 'max_body', 0)} bytes cannot be transformed"
            )
            self._late_error(status, message)
            return
        try:
            body = flt.transform_response(self.info, response, b"".join(buffered))
        except Exception:
            log.failure("transform {name} failed", name=getattr(flt, "name", ""))
            self._late_error(502, "response transform failed")
            return
        response.headers[:] = [
            (n, v)
            for n, v in response.headers
            if n.lower() not in (b"content-length", b"transfer-encoding")
        ]
        response.headers.append((b"Content-Length", b"%d" % len(body)))
        response.framing = policy.CONTENT_LENGTH
        response.lnames = None
        response.tokens = None
        self.write_response_head(response)
        self.bytes_out += len(body)
        self.emit(body)
        self.response_done = True

    def _late_error(self, status: int, message: str) -> None:
        """
        An error found while the response was held back (inside the
        upstream parser): answer the client, and let the upstream
        connection go (it is not reused).
        """
        self.status = status
        self.decision = "error"
        data = error_response(
            status, message, self.close_after, head_only=self.head.method == b"HEAD"
        )
        self.response_started = True
        self.response_done = True
        self.bytes_out += len(data)
        self.emit(data)
        if self.conn is not None:
            self.conn.transport.loseConnection()

    def upstream_done(self, conn: UpstreamProtocol, extra: bool) -> None:
        """
        The upstream's response is complete (called outside the parser).
        """
        response = self.response
        reusable = (
            not extra
            and self.request_done
            and response is not None
            and response.keep_alive
            and not conn.lost
            and not conn.transport.disconnecting
        )
        self.conn = None
        self.front.relay.switch(None)
        conn.detach()
        if reusable:
            front = self.front
            if front.closing or front.lost or self.close_after:
                self.ctx.pool.release(conn)
            else:
                front.keep_upstream(conn)
        elif not conn.lost:
            conn.transport.loseConnection()
        if self.request_done:
            self.finish()
        else:
            # an early answer: the rest of the request body is dropped
            self.discard = True
            self.pending = None
            self.front.gate.resume(CONNECTING)
            if self.close_after:
                self.finish()

    def upstream_upgraded(self, conn: UpstreamProtocol, rest: bytes) -> None:
        """
        The upstream switched protocols (101): splice the two connections.
        """
        if self.status != 101 or self.head.upgrade is None:
            self.upstream_failed(conn, 502, "unexpected protocol switch")
            return
        self.start_tunnel(conn, b"", rest)

    def upstream_failed(self, conn: UpstreamProtocol, status: int, message: str) -> None:
        log.info("upstream {upstream} failed: {why}", upstream=self.upstream, why=message)
        self._unlink(close=True)
        if self.response_started:
            self.abort_client(message)
        else:
            self.respond(status, message, "error")

    def upstream_lost(self, conn: UpstreamProtocol, reason: Failure) -> None:
        if self.conn is not conn:
            return
        self._unlink(close=False)
        if self.finished:
            return
        if self.response_started:
            self.abort_client("upstream closed the connection mid-response")
            return
        if self.resp_buffer is not None:
            self.resp_buffer = None
            status, why = self.late_error or (
                502,
                "response body too large to transform"
                if self.resp_overflow
                else "upstream closed the connection mid-response",
            )
            self.respond(status, why, "error")
            return
        if conn.reused and not self.retried and self.replay is not None and not conn.parser.started:
            # the upstream closed a pooled connection as we reused it:
            # once more on a fresh one (nothing of the response was seen)
            self.retried = True
            self.ctx.pool.connect(conn.key, self)
            return
        message = "upstream closed the connection without a response"
        if self.idempotent() and self.retry_elsewhere(message):
            return
        self.respond(502, message, "error")

    def idempotent(self) -> bool:
        """
        Whether the request may be sent again after it reached a server.
        """
        return self.head.method in IDEMPOTENT and self.head.upgrade is None

    def raw_data(self, conn: UpstreamProtocol, data: bytes) -> None:
        """
        The answer of a parent proxy to our CONNECT.
        """
        buf = self.raw_buffer + data
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
        conn.raw = False
        conn.exchange = None
        self.start_tunnel(conn, CONNECT_ESTABLISHED, buf[end + 4 :])

    def _parent_refused(self, conn: UpstreamProtocol, message: str) -> None:
        conn.exchange = None
        conn.raw = False
        self.conn = None
        conn.transport.loseConnection()
        self.close_after = True
        self.respond(502, message, "error")

    def request_failed(self, error: BadRequest) -> None:
        """
        The client's request body turned out malformed: answer with the
        error (or cut the response short) and close both connections.
        """
        if self.finished:
            return
        self._unlink(close=True)
        self.close_after = True
        self.respond(error.status, error.message, "error")

    def timed_out(self, status: int, message: str) -> None:
        """
        The front's timer expired while this exchange was in progress.
        """
        if self.finished:
            return
        log.info("{url}: {why}", url=self.url(), why=message)
        self._unlink(close=True)
        if status == 504 and not self.response_started:
            if self.idempotent() and self.request_done and self.retry_elsewhere(message):
                return
        self.close_after = True
        if self.response_started:
            self.abort_client(message, stalled=True)
        else:
            self.respond(status, message, "error")

    # tunnels

    def start_tunnel(self, conn: UpstreamProtocol, answer: bytes, to_front: bytes) -> None:
        front = self.front
        self.conn = None
        front.relay.switch(None)
        conn.detach()
        conn.exchange = None
        front.cancel_timer()
        if answer:
            write_now(front.transport, answer)
            self.bytes_out += len(answer)
            self.status = 200
        self.response_started = True
        self.response_done = True
        to_back = front.take_held()
        front.gate.resume(0xFF)
        splice = Splice(front.clock, self.ctx.settings.tunnel_idle_timeout, self._tunnel_closed)
        self.tunnel = splice
        front.splice = splice
        conn.splice = splice
        front.transport.unregisterProducer()
        conn.transport.unregisterProducer()
        splice.start(front.transport, conn.transport, to_back, to_front)

    def _tunnel_closed(self, splice: Splice, why: str) -> None:
        self.bytes_in += splice.bytes_in
        self.bytes_out += splice.bytes_out
        self.close_after = True
        self.finish()

    # local answers and endings

    def respond(
        self,
        status: int,
        message: str,
        decision: str,
        rule: str = "",
        headers: Sequence[Tuple[bytes, bytes]] = (),
    ) -> None:
        """
        Answer the client with the proxy's own response.
        """
        self.status = status
        self.decision = decision
        self.rule = rule
        if self.response_started:
            self.abort_client(message)
            return
        front = self.front
        head = self.head
        self.pending = None
        front.gate.resume(CONNECTING)
        body_pending = not self.request_done and head.framing != policy.NO_BODY
        close = (
            self.close_after
            or body_pending
            or front.read_closed
            or (self.target is not None and self.target.connect)
            or head.method == b"CONNECT"
            or head.upgrade is not None
        )
        if close:
            self.close_after = True
        data = error_response(status, message, close, headers, head.method == b"HEAD")
        self.response_started = True
        self.response_done = True
        self.bytes_out += len(data)
        front.transport.write(data)
        if self.request_done or close:
            self.finish()
        else:
            self.discard = True

    def abort_client(self, why: str, stalled: bool = False) -> None:
        """
        The response cannot be completed: the client sees the connection
        end early (no last chunk, a short body), never a silent truncation.

        @param stalled: the client stopped reading: what is queued for it
            will never drain, so the connection is aborted, not closed
            after a flush that would wait forever.
        """
        self.decision = "error"
        self.close_after = True
        self.response_done = True
        if stalled:
            self.front.transport.abortConnection()
        else:
            self.front.transport.loseConnection()
        self.finish()

    def client_lost(self) -> None:
        """
        The client went away.
        """
        if self.finished:
            return
        if not self.response_done:
            if not self.status or self.response_started:
                self.status = self.status or 499
            self.decision = "error"
        self._unlink(close=True)
        self.finish()

    def url(self) -> str:
        target = self.target
        if target is not None:
            return target.url
        return self.head.target.decode("latin-1")

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.server is not None or self.waiter is not None:
            self.release_server()
        self.ctx.stats.record(self.status, self.bytes_in, self.bytes_out, self.decision)
        access_log = self.ctx.access_log
        if access_log.enabled:
            front = self.front
            access_log.log(
                self.ctx.name,
                front.client_ip,
                self.head.method.decode("latin-1"),
                self.url(),
                self.status,
                self.bytes_in,
                self.bytes_out,
                (front.clock.seconds() - self.start_time) * 1000.0,
                self.upstream,
                self.decision,
                self.rule,
            )
        self.front.exchange_done(self)


class BadResponseForRequest(Exception):
    """
    A response that cannot answer the request it came for.
    """


def _origin_path(path: bytes) -> str:
    """
    The origin-form part of an absolute-form target.
    """
    text = path.decode("latin-1")
    scheme_end = text.find("://")
    if scheme_end < 0:
        return text
    slash = text.find("/", scheme_end + 3)
    return text[slash:] if slash >= 0 else "/"
