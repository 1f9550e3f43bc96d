#!/usr/bin/env python3
"""
A bare Twisted HTTP responder: the ceiling of what any Twisted server that
answers from memory (a cache hit) can do on this machine.

Each request is parsed by httptools (llhttp), as twisted-proxy parses it,
and answered at once with one fixed response (a 200 with a body of
--size bytes, keep-alive), sent the way the proxy sends
(twisted_proxy.flow.write_soon: every response of a reactor turn sent
at the end of it, one send each, the socket never registered for
writing), or with --plain-write through Twisted's transport.write
(registered for writing and sent in the reactor's next turn: measured
here at about half the rate). No
routing, no headers looked at, no timers, no logging, no cache lookup.

twisted-proxy cache hits / this responder, in the same run, says what the
proxy's own cache work costs; this responder / nginx says what Twisted and
CPython cost, which no code of the proxy can remove.

    python bench/bare_static.py --port 8082 --size 100
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import os

import httptools  # type: ignore[import-untyped]
from twisted.internet import protocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Responder(protocol.Protocol):
    transport: Any

    def __init__(self, response: bytes, write: Any) -> None:
        self.response = response
        self.write = write
        self.parser = httptools.HttpRequestParser(self)

    def connectionMade(self) -> None:
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.loseConnection()

    def on_message_complete(self) -> None:
        self.write(self.transport, self.response)


class ResponderFactory(protocol.Factory):
    noisy = False

    def __init__(self, size: int, plain_write: bool = False) -> None:
        if plain_write:
            self.write: Any = lambda transport, data: transport.write(data)
        else:
            from twisted_proxy.flow import write_soon

            self.write = write_soon
        body = b"x" * size
        self.response = (
            b"HTTP/1.1 200 OK\r\nServer: bare\r\nContent-Type: application/octet-stream\r\n"
            b"Cache-Control: max-age=3600\r\nContent-Length: %d\r\n\r\n" % size
        ) + body

    def buildProtocol(self, addr: Any) -> Responder:
        return Responder(self.response, self.write)


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--plain-write", action="store_true", help="Twisted's transport.write")
    args = p.parse_args(argv)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    reactor.listenTCP(args.port, ResponderFactory(args.size, args.plain_write), backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
