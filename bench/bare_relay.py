#!/usr/bin/env python3
"""
A bare Twisted TCP relay: the floor of what any Twisted proxy costs.

Each client connection gets one upstream connection of its own, opened when
the client connects and kept for as long as the client stays; bytes are
forwarded as they are in both directions, with no parsing and no rewriting,
and with back-pressure both ways (each transport is the other's producer).
No pool, no timeouts, no logging.  TCP_NODELAY on both sides, as the proxy
and nginx set it.

For HTTP keep-alive clients (wrk) this is a "reverse proxy" that does the
least work possible on the same reactor as twisted-proxy, so
twisted-proxy / bare relay on the same machine says what the proxy's HTTP
work costs, independently of how fast the machine is.

    python bench/bare_relay.py --port 8081 --upstream 127.0.0.1:8080
    python bench/bare_relay.py --port 8443 --upstream 127.0.0.1:8080 --tls CERT KEY

With --tls the client side is TLS, terminated by the listeners' own layer
(twisted_proxy.tls.ListenerTLS over the pyOpenSSL connections that
twisted_proxy.tls.ServerTLS makes, as a twisted-proxy listener does): the
floor of what any Twisted proxy terminating TLS costs (run_tls.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted.internet import protocol
from twisted.python.failure import Failure


def _nodelay(transport: object) -> None:
    set_nodelay = getattr(transport, "setTcpNoDelay", None)
    if set_nodelay is not None:
        try:
            set_nodelay(True)
        except OSError:
            pass


class Upstream(protocol.Protocol):
    transport: Any

    def __init__(self, front: "Front") -> None:
        self.front = front

    def connectionMade(self) -> None:
        _nodelay(self.transport)
        self.front.upstream_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.front.transport.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.front.transport.loseConnection()


class UpstreamFactory(protocol.ClientFactory):
    def __init__(self, front: "Front") -> None:
        self.front = front

    def buildProtocol(self, addr: object) -> Upstream:
        return Upstream(self.front)

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.front.transport.loseConnection()


class Front(protocol.Protocol):
    transport: Any
    factory: Any
    upstream: Upstream | None = None

    def connectionMade(self) -> None:
        _nodelay(self.transport)
        # Read nothing from the client until there is somewhere to send it.
        self.transport.pauseProducing()
        host, port = self.factory.upstream
        self.factory.reactor.connectTCP(host, port, UpstreamFactory(self))

    def upstream_made(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(upstream.transport, True)
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        assert self.upstream is not None
        self.upstream.transport.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()
            self.upstream = None


class RelayFactory(protocol.Factory):
    protocol = Front
    noisy = False

    def __init__(self, reactor: Any, upstream: tuple[str, int]) -> None:
        self.reactor = reactor
        self.upstream = upstream


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    p.add_argument("--upstream", required=True, metavar="HOST:PORT", help="where to relay to")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                   help="terminate TLS with this chain and key (the listeners' TLS layer)")
    args = p.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    factory: Any = RelayFactory(reactor, (host, int(port)))
    if args.tls:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from twisted_proxy.model import CertificateConfig, TLSConfig
        from twisted_proxy.tls import ServerTLS, wrap_server_factory

        config = TLSConfig(certificates=(CertificateConfig(*(os.path.abspath(path) for path in args.tls)),))
        factory = wrap_server_factory(ServerTLS(config, "bare"), factory)
    reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")
    print(f"bare relay on 127.0.0.1:{args.port} -> {host}:{port} ({type(reactor).__name__})", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
