# -*- test-case-name: tests.test_health -*-
"""
Active health checks.

One L{HealthChecker} per backend with a C{health} table runs a
C{LoopingCall} on the injected clock; each round probes every server at once.
A probe that hangs is cut by its timeout; a probe that raises counts as a
failure and never stops the loop. A server goes down after C{fall}
consecutive failures and comes back after C{rise} consecutive successes.

Probe traffic uses its own connections (one per probe, the response head
parsed by the proxy's own parser, the body never read), so it never shows in
the access log or the balancers' counts.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Set

from zope.interface import implementer
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.http.parser import ResponseParser
from twisted_proxy.interfaces import IHealthProbe
from twisted_proxy.model import HealthConfig
from twisted_proxy.upstream.backend import Backend, Server

log = Logger()

USER_AGENT = b"twisted-proxy-health/1"
#: the most of a probe's response that is read: its head
MAX_PROBE_HEAD = 16384


def status_ok(code: int, expect: tuple) -> bool:
    """
    Whether a probe's status counts as healthy.
    """
    if expect:
        return code in expect
    return 200 <= code < 400


class _ProbeProtocol(Protocol):
    """
    Sends one C{GET} and reads the response head, never the body: the
    status is the verdict, and the connection is closed at once.
    """

    transport: Any

    def __init__(self, result: "defer.Deferred[int]", request: bytes, max_head: int) -> None:
        self.result = result
        self.request = request
        self.parser = ResponseParser(self, max_head)

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except Exception:
            self._settle(Failure())

    def response_head(self, head: Any) -> None:
        self._settle(head.status)

    def response_body(self, data: bytes) -> None:
        pass

    def response_end(self) -> None:
        pass

    def _settle(self, outcome: Any) -> None:
        result = self.result
        if not result.called:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment]
        if not self.result.called:
            if reason.check(ConnectionDone):
                reason = Failure(ConnectionDone("closed without a response"))
            self.result.errback(reason)


class _ProbeFactory(ClientFactory):
    noisy = False

    def __init__(self, result: "defer.Deferred[int]", request: bytes, max_head: int) -> None:
        self.result = result
        self.request = request
        self.max_head = max_head
        self.protocol_built: Optional[_ProbeProtocol] = None

    def buildProtocol(self, addr: Any) -> _ProbeProtocol:
        proto = _ProbeProtocol(self.result, self.request, self.max_head)
        proto.factory = self  # type: ignore[attr-defined]
        self.protocol_built = proto
        return proto


@implementer(IHealthProbe)
class HTTPProbe:
    """
    C{GET path} on the server; healthy when the status is expected.

    One connection per probe (C{Connection: close}); only the response
    head is read (at most C{MAX_PROBE_HEAD} bytes), never the body. An
    https server is probed with the proxy's own TLS settings for it
    (C{tls_policy}, see L{twisted_proxy.tls.backend_tls_policy}).
    """

    def __init__(self, reactor: Any, config: HealthConfig, tls_policy: Any = None) -> None:
        self.reactor = reactor
        self.config = config
        self.tls_policy = tls_policy

    def _request(self, server: Server) -> bytes:
        host = f"[{server.host}]" if ":" in server.host else server.host
        default = 443 if server.scheme == "https" else 80
        authority = host if server.port == default else f"{host}:{server.port}"
        return (
            b"GET " + (self.config.path or "/").encode("utf-8") + b" HTTP/1.1\r\nHost: "
            + authority.encode("idna") + b"\r\nUser-Agent: " + USER_AGENT
            + b"\r\nConnection: close\r\n\r\n"
        )

    def probe(self, server: Server) -> "defer.Deferred[bool]":
        from twisted.internet.endpoints import HostnameEndpoint

        factory = _ProbeFactory(defer.Deferred(), self._request(server), MAX_PROBE_HEAD)
        connecting: Any = None

        def cancel(_: Any) -> None:
            proto = factory.protocol_built
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()
            elif connecting is not None:
                connecting.cancel()

        result: Any = defer.Deferred(cancel)
        factory.result = result
        wrapped: Any = factory
        if server.scheme == "https":
            from twisted.protocols.tls import TLSMemoryBIOFactory

            wrapped = TLSMemoryBIOFactory(self._tls_creator(server), True, factory)
            wrapped.noisy = False
        endpoint = HostnameEndpoint(
            self.reactor, server.host, server.port, timeout=self.config.timeout
        )
        connecting = endpoint.connect(wrapped)

        def not_connected(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        connecting.addErrback(not_connected)
        result.addCallback(lambda code: status_ok(code, self.config.expect))
        return result  # type: ignore[no-any-return]

    def _tls_creator(self, server: Server) -> Any:
        if self.tls_policy is not None:
            return self.tls_policy.creatorForNetloc(server.host.encode("idna"), server.port)
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(server.host)


class _Closer(Protocol):
    transport: Any

    def connectionMade(self) -> None:
        self.transport.loseConnection()


@implementer(IHealthProbe)
class TCPProbe:
    """
    A TCP connection that opens: healthy.
    """

    def __init__(self, reactor: Any, config: HealthConfig) -> None:
        self.reactor = reactor
        self.config = config

    def probe(self, server: Server) -> "defer.Deferred[bool]":
        from twisted.internet.endpoints import HostnameEndpoint

        endpoint = HostnameEndpoint(
            self.reactor, server.host, server.port, timeout=self.config.timeout
        )
        d: Any = endpoint.connect(Factory.forProtocol(_Closer))
        d.addCallback(lambda _: True)
        return d


class HealthChecker(service.Service):
    """
    Runs a backend's active health checks while the service runs.
    """

    def __init__(
        self,
        backend: Backend,
        config: HealthConfig,
        clock: Any,
        probe: Optional[Any] = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock
        if probe is None:
            if config.path:
                from twisted_proxy.tls import backend_tls_policy

                # https servers are probed with the proxy's own TLS settings
                probe = HTTPProbe(clock, config, backend_tls_policy(backend.servers))
            else:
                probe = TCPProbe(clock, config)
        self.probe = probe
        self.successes: Dict[int, int] = {id(s): 0 for s in backend.servers}
        self.failures: Dict[int, int] = {id(s): 0 for s in backend.servers}
        self.loop: Optional[LoopingCall] = None
        self.rounds = 0
        # probes under way, cancelled when the service stops
        self.in_flight: Set["defer.Deferred[None]"] = set()

    def startService(self) -> None:
        service.Service.startService(self)
        loop = LoopingCall(self.check_all)
        loop.clock = self.clock
        self.loop = loop
        d = loop.start(self.config.interval, now=True)
        d.addErrback(self._loop_died)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.loop = None
        # a probe under way would outlive the service (its connection and
        # timeout timer) and could still change a server's state
        for d in list(self.in_flight):
            d.cancel()

    def _loop_died(self, failure: Failure) -> None:
        # check_all never fails; this is a last resort
        log.failure("health checks of backend {backend} stopped", failure, backend=self.backend.name)

    def check_all(self) -> "defer.Deferred[Any]":
        """
        One round: probe every server, wait for all (each has a timeout).
        """
        self.rounds += 1
        return defer.gatherResults(
            [self.check(server) for server in self.backend.servers], consumeErrors=True
        ).addErrback(lambda _: None)

    def check(self, server: Server) -> "defer.Deferred[None]":
        """
        Probe C{server} once and update its state; never fails.
        """
        try:
            d = defer.maybeDeferred(self.probe.probe, server)
        except Exception:
            d = defer.fail(Failure())
        d.addTimeout(self.config.timeout, self.clock)
        d.addCallbacks(
            lambda ok: self.record(server, bool(ok), "" if ok else "unexpected status"),
            lambda f: self.record(server, False, _why(f, self.config.timeout)),
        )
        # tracked until it has a result (a Deferred may be "called" and
        # still wait on another one, as a connect probe does)
        settled: list = []
        d.addBoth(self._settled, d, settled)
        if not settled:
            self.in_flight.add(d)
        return d

    def _settled(self, result: Any, d: "defer.Deferred[None]", settled: list) -> Any:
        settled.append(True)
        self.in_flight.discard(d)
        return result

    def record(self, server: Server, ok: bool, why: str) -> None:
        if not self.running:
            # the service stopped (a cancelled probe): no verdict
            return
        sid = id(server)
        if ok:
            self.failures[sid] = 0
            self.successes[sid] = self.successes.get(sid, 0) + 1
            if not server.up and self.successes[sid] >= self.config.rise:
                self.backend.set_up(server, True)
        else:
            self.successes[sid] = 0
            self.failures[sid] = self.failures.get(sid, 0) + 1
            if server.up and self.failures[sid] >= self.config.fall:
                self.backend.set_up(server, False, why)


def _why(failure: Failure, timeout: float) -> str:
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"no answer within {timeout:g}s"
    return failure.getErrorMessage() or failure.type.__name__  # type: ignore[union-attr]
