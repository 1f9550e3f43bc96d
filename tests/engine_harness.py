"""
A listener's front connection on fake transports, for the engine's unit
tests: the upstream connections it opens are completed (or failed) by
hand from a C{MemoryReactorClock}.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Optional, Sequence, Tuple

from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from twisted_proxy.accesslog import NullAccessLog
from twisted_proxy.engine import FrontFactory, ListenerContext
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.model import BackendConfig, ProxySettings, ServerConfig
from twisted_proxy.reverse import ReverseRouter, Route
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.pool import Pool, UpstreamProtocol

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def backend(ports: Sequence[int], clock: Any, server_options: Optional[dict] = None, **kw: Any) -> Backend:
    servers = tuple(
        ServerConfig(
            url=f"http://127.0.0.1:{p}", scheme="http", host="127.0.0.1", port=p,
            **(server_options or {}),
        )
        for p in ports
    )
    return Backend(BackendConfig(name="app", servers=servers, **kw), clock)


class EngineHarness:
    """
    A front connection of a forward listener (or of a reverse one when
    C{routes} are given) on a StringTransport.
    """

    def __init__(
        self,
        filters: Sequence[Any] = (),
        router: Optional[Any] = None,
        ports: Optional[Sequence[int]] = None,
        backend_options: Optional[dict] = None,
        route_options: Optional[dict] = None,
        server_options: Optional[dict] = None,
        **settings: Any,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.settings = ProxySettings(**settings)
        self.pool = Pool(self.clock, connect_timeout=self.settings.connect_timeout)
        self.backend: Optional[Backend] = None
        kind = "forward"
        if ports is not None:
            self.backend = backend(ports, self.clock, server_options, **(backend_options or {}))
            router = ReverseRouter([Route(self.backend, **(route_options or {}))])
            kind = "reverse"
        self.ctx = ListenerContext(
            "test",
            self.clock,
            self.settings,
            self.pool,
            NullAccessLog(self.clock),
            router if router is not None else ForwardRouter(),
            list(filters),
            LOOPBACK,
            kind=kind,
        )
        self.front = FrontFactory(self.ctx).buildProtocol(None)
        self.ft = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.front.makeConnection(self.ft)
        self.upstreams: List[Tuple[UpstreamProtocol, StringTransport]] = []
        self.attempts = 0

    def attempt(self) -> Tuple[str, int, Any]:
        """
        The next connection attempt the pool made: host, port, factory.
        """
        host, port, factory, timeout, bind = self.clock.tcpClients[self.attempts]
        self.attempts += 1
        return host, port, factory

    def connect_upstream(self) -> Tuple[UpstreamProtocol, StringTransport]:
        """
        Complete the next connection attempt the pool made.
        """
        host, port, factory = self.attempt()
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        self.upstreams.append((proto, transport))
        return proto, transport

    def refuse_upstream(self) -> int:
        """
        Fail the next connection attempt (connection refused); its port.
        """
        host, port, factory = self.attempt()
        factory.clientConnectionFailed(None, Failure(ierror.ConnectionRefusedError()))
        return port

    def another_client(
        self, peer: Optional[Any] = None, host: Optional[Any] = None
    ) -> Tuple[Any, StringTransport]:
        """
        A second client connection to the same listener (from C{peer}, to
        the listener's address C{host}).
        """
        front = FrontFactory(self.ctx).buildProtocol(None)
        transport = StringTransport(
            hostAddress=host or IPv4Address("TCP", "127.0.0.1", 3128),
            peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 40001),
        )
        front.makeConnection(transport)
        return front, transport
