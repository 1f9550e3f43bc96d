# -*- test-case-name: tests.test_tcp -*-
"""
Raw TCP listeners: each client connection is spliced to a server of a
backend (C{tcp://} URLs), chosen by the backend's balancer, with the same
health checks, passive ejection and retries as HTTP backends.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

from zope.interface import implementer
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.addresses import AddressMatcher
from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.stats import ListenerStats
from twisted_proxy.tunnel import Splice
from twisted_proxy.upstream.backend import BUSY, Backend
from twisted_proxy.upstream.pool import LOCAL_SHORTAGE, Pool, UpstreamProtocol, set_no_delay
from twisted_proxy.drain import notify_gone, register_gone

log = Logger()


class TcpContext:
    """
    What the connections of one tcp listener share.
    """

    def __init__(
        self,
        name: str,
        reactor: Any,
        settings: Any,
        pool: Pool,
        access_log: Any,
        backend: Backend,
        filters: Sequence[Any] = (),
        allow_clients: Sequence[Any] = (),
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.settings = settings
        self.pool = pool
        self.access_log = access_log
        self.backend = backend
        self.filters = tuple(filters)
        self.stats = ListenerStats(name, "tcp")
        self.allow_all = not allow_clients
        self._clients = AddressMatcher(allow_clients)

    def client_allowed(self, client_ip: str) -> bool:
        return self.allow_all or self._clients.match(client_ip) is not None


@implementer(IHalfCloseableProtocol)
class TcpFrontProtocol(Protocol):
    """
    One client connection of a tcp listener: reading waits until the
    server connection is up, then the two are spliced.
    """

    transport: Any
    limiter: Any = None
    #: while draining: called with this protocol once its connection is gone
    gone_callbacks: Tuple[Callable[[Any], None], ...] = ()

    def __init__(self, ctx: TcpContext) -> None:
        self.ctx = ctx
        self.splice: Optional[Splice] = None
        self.server: Any = None
        self.tried: tuple = ()
        self.waiter: Any = None
        self.lost = False
        self.client_ip = ""
        self.start_time = 0.0
        self.upstream = ""
        self.status = 0
        self.decision = "allow"
        self.rule = ""
        self.logged = False

    def connectionMade(self) -> None:
        ctx = self.ctx
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connections.add(self)
            self.limiter = getattr(factory, "limiter", None)
            if self.limiter is not None:
                self.limiter.opened(self)
        self.start_time = ctx.reactor.seconds()
        self.client_ip = getattr(self.transport.getPeer(), "host", "") or ""
        self.transport.pauseProducing()
        set_no_delay(self.transport)
        if not ctx.client_allowed(self.client_ip):
            self.refuse("listener.allow_clients")
            return
        if ctx.filters:
            info = RequestInfo(
                ctx.name, self.client_ip, "", "", "", 0, "", [], connect=True, kind="tcp"
            )
            self.run_filters(0, info)
            return
        self.choose()

    def sheddable(self) -> bool:
        """
        Never: the connection limiter cannot tell an idle tcp connection.
        """
        return False

    def run_filters(self, index: int, info: RequestInfo) -> None:
        """
        Run the listener's filters from C{index} on; a Deferred verdict (a
        Redis rate limit, a custom filter) is waited for, reading paused.
        """
        filters = self.ctx.filters
        while index < len(filters):
            flt = filters[index]
            index += 1
            try:
                verdict = flt.filter_request(info)
            except Exception:
                log.failure("filter {name} failed", name=getattr(flt, "name", ""))
                self.refuse(getattr(flt, "name", ""), 500, "error")
                return
            if isinstance(verdict, Deferred):
                # a verdict that never comes must not hold the connection
                verdict.addTimeout(self.ctx.settings.filter_timeout, self.ctx.reactor)
                verdict.addCallbacks(
                    self._filter_answered,
                    self._filter_failed,
                    callbackArgs=(index, info),
                    errbackArgs=(flt,),
                )
                return
            if isinstance(verdict, Deny):
                self.refuse(verdict.rule, verdict.status)
                return
        self.choose()

    def _filter_answered(self, verdict: Any, index: int, info: RequestInfo) -> None:
        if self.lost:
            return
        if isinstance(verdict, Deny):
            self.refuse(verdict.rule, verdict.status)
            return
        self.run_filters(index, info)

    def _filter_failed(self, failure: Failure, flt: Any) -> None:
        name = getattr(flt, "name", "")
        if failure.check(TimeoutError, CancelledError):
            log.warn(
                "filter {name} gave no verdict within {timeout}s",
                name=name,
                timeout=self.ctx.settings.filter_timeout,
            )
            status = 503
        else:
            log.failure("filter {name} failed", failure, name=name)
            status = 500
        if not self.lost:
            self.refuse(name, status, "error")

    def refuse(self, rule: str, status: int = 403, decision: str = "deny") -> None:
        """
        Close the client's connection; the access log says why (C{status}
        as an HTTP listener would answer: 403 denied, 500 a failed filter,
        503 a filter that gave no verdict in time).
        """
        self.decision = decision
        self.rule = rule
        self.status = status
        self.transport.loseConnection()

    def choose(self) -> None:
        backend = self.ctx.backend
        key = self.client_ip.encode("ascii", "replace") if backend.key_kind else b""
        server = backend.choose(key, self.tried)
        if server is None:
            # every server tried failed (502), or none was available (503)
            self.status = 502 if self.tried else 503
            self.decision = "error"
            self.transport.loseConnection()
            return
        if server is BUSY:
            self.waiter = backend.wait(self._slot_free, self._queue_timeout)
            if self.waiter is None:
                self._queue_timeout()  # the backend's queue is full: 503 at once
            return
        backend.acquire(server)
        self.server = server
        self.upstream = server.label
        self.ctx.pool.connect(server.address, self)

    def _slot_free(self) -> None:
        self.waiter = None
        if not self.lost:
            self.choose()

    def _queue_timeout(self) -> None:
        self.waiter = None
        self.status = 503
        self.decision = "error"
        self.transport.loseConnection()

    def release(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            self.ctx.backend.release(server)
        if self.waiter is not None:
            self.waiter.cancel()
            self.waiter = None

    # the pool's requester interface

    def upstream_ready(self, conn: UpstreamProtocol) -> None:
        if self.lost:
            conn.transport.loseConnection()
            self.release()
            return
        self.ctx.backend.report_success(self.server)
        conn.relay.switch(None)
        splice = Splice(self.ctx.reactor, self.ctx.settings.tunnel_idle_timeout, self._closed)
        self.splice = splice
        conn.splice = splice
        self.status = 200
        self.transport.unregisterProducer()
        conn.transport.unregisterProducer()
        self.transport.resumeProducing()
        splice.start(self.transport, conn.transport)

    def upstream_connect_failed(self, status: int, message: str) -> None:
        server = self.server
        local = status == LOCAL_SHORTAGE  # out of descriptors: ours, not the server's
        if server is not None and not local:
            self.ctx.backend.report_failure(server, message)
            self.tried = self.tried + (server,)
        self.release()
        if self.lost:
            return
        if not local and len(self.tried) <= self.ctx.backend.retries:
            self.choose()
            return
        self.status = status
        self.decision = "error"
        self.transport.loseConnection()

    # Protocol

    def dataReceived(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.data_from_front(data)

    def readConnectionLost(self) -> None:
        if self.splice is not None:
            self.splice.read_closed_front()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        self.lost = True
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connections.discard(self)
        if self.limiter is not None:
            self.limiter.closed(self)
        if self.splice is not None:
            self.splice.lost_front()
        else:
            self.release()
            self._log(0, 0)
        notify_gone(self)

    def drain(self, gone: Optional[Callable[[Any], None]] = None) -> None:
        """
        Finish this connection gracefully (the process stops, or its
        listener was removed by a reload). A tcp connection is one
        exchange from accept to close: a splice keeps running until it
        ends by itself (or by C{tunnel_idle_timeout}), and a connection
        still waiting for a filter's verdict, a server slot or its server
        connection goes on to its splice (each wait has its own timeout).
        The caller (L{twisted_proxy.drain.drain}) aborts what is left
        after C{drain_timeout}.

        @param gone: called with this protocol once the connection is
            gone (at once if it already is); each drain of the connection
            gets its call.
        """
        if not register_gone(self, gone):
            return

    def _closed(self, splice: Splice, why: str) -> None:
        self.release()
        self._log(splice.bytes_in, splice.bytes_out)

    def _log(self, bytes_in: int, bytes_out: int) -> None:
        if self.logged:
            return
        self.logged = True
        self.ctx.stats.record(self.status, bytes_in, bytes_out, self.decision)
        access_log = self.ctx.access_log
        if access_log.enabled:
            access_log.log(
                self.ctx.name,
                self.client_ip,
                "TCP",
                self.upstream,
                self.status,
                bytes_in,
                bytes_out,
                (self.ctx.reactor.seconds() - self.start_time) * 1000.0,
                self.upstream,
                self.decision,
                self.rule,
            )


class TcpFactory(Factory):
    """
    Builds a L{TcpFrontProtocol} per client connection.
    """

    noisy = False
    #: the service's L{twisted_proxy.limits.ConnectionLimiter}, if any
    limiter: Any = None

    def __init__(self, ctx: TcpContext) -> None:
        self.ctx = ctx
        self.connections: set = set()

    def buildProtocol(self, addr: Any) -> TcpFrontProtocol:
        proto = TcpFrontProtocol(self.ctx)
        proto.factory = self  # type: ignore[attr-defined]
        return proto
