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
    python bench/bare_static.py --port 8443 --tls CERT KEY --tls-stack pyopenssl
    python bench/bare_static.py --port 8443 --tls CERT KEY --tls-stack stdlib

With --tls it answers over TLS (TLS 1.2 and 1.3, no session tickets, as
nginx in run_tls.py), by one of four stacks: pyopenssl, Twisted's own TLS
layer (twisted.protocols.tls over pyOpenSSL, configured by the listeners'
ServerTLS: what twisted-proxy's listeners used before); listener, the
listeners' own layer (twisted_proxy.tls.ListenerTLS) over the same
pyOpenSSL connections; socketbio, OpenSSL reading and writing the socket
itself (a socket BIO: no memory BIOs, no record copies through Python, a
bare reader on the reactor instead of a Twisted transport; keep-alive and
close only, no back-pressure: what the listeners' memory BIOs cost);
stdlib, a minimal layer of this file over the standard
library's ssl.SSLObject and MemoryBIO (no certificate verification, no
SNI, no renegotiation, no half-close: a measure of what such a transport
could gain, not one to serve with).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import os
import socket

import httptools  # type: ignore[import-untyped]
from twisted.internet import protocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Responder(protocol.Protocol):
    transport: Any

    def __init__(self, response: bytes, write: Any) -> None:
        self.response = response
        self.close_response = response.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
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
        if self.parser.should_keep_alive():
            self.write(self.transport, self.response)
        else:
            # the client asked to close (a handshake benchmark): so do we
            self.transport.write(self.close_response)
            self.transport.loseConnection()


class StdlibTLS(protocol.Protocol):
    """
    TLS over the standard library's C{ssl.SSLObject}: the records of a
    read are decrypted, the inner protocol's writes encrypted, and what the
    read produced sent once at its end (see the module docstring).
    """

    transport: Any

    def __init__(self, context: Any, inner: Any) -> None:
        import ssl

        self.ssl = ssl
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False
        self.inner = inner
        self.in_read = False
        #: write_soon (or a plain write with --plain-write)
        self.writer: Any = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.inner.transport = self  # (the inner protocol writes here)

    def dataReceived(self, data: bytes) -> None:
        ssl = self.ssl
        self.incoming.write(data)
        self.in_read = True
        try:
            if not self.ready:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    return
                self.ready = True
            while True:
                try:
                    chunk = self.tls.read(65536)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    self.transport.loseConnection()
                    break
                self.inner.dataReceived(chunk)
        except ssl.SSLError:
            self.transport.abortConnection()
        finally:
            self.in_read = False
            self.flush()

    def write(self, data: bytes) -> None:
        self.tls.write(data)
        if not self.in_read:
            self.flush()

    def flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.writer(self.transport, out)

    def loseConnection(self) -> None:
        self.transport.loseConnection()


class SocketBIOTLS:
    """
    TLS where OpenSSL reads and writes the socket itself (a socket BIO,
    C{SSL_set_fd} through pyOpenSSL), read by the reactor as a bare reader:
    no memory BIOs, no copies of records through Python, no Twisted
    transport. Keep-alive only (the handshake benchmark's close is a plain
    close), no back-pressure: a measure of what the listeners' memory BIOs
    cost, not a layer to serve with.
    """

    def __init__(self, reactor: Any, sock: Any, context: Any, response: bytes) -> None:
        from OpenSSL import SSL
        from OpenSSL._util import ffi, lib

        self.reactor = reactor
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = SSL.Connection(context, sock)
        self.tls.set_accept_state()
        self.ssl = self.tls._ssl
        self.ffi, self.lib = ffi, lib
        self.buffer = ffi.new("char[]", 65536)
        self.handshaken = False
        self.response = response
        self.answers: list = []
        self.close_after = False
        self.parser = httptools.HttpRequestParser(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "socket-bio"

    def connectionLost(self, reason: Any) -> None:
        self.close()

    def close(self) -> None:
        self.reactor.removeReader(self)
        self.sock.close()

    def on_message_complete(self) -> None:
        self.answers.append(self.response)
        self.close_after = not self.parser.should_keep_alive()

    def doRead(self) -> None:
        lib, ssl = self.lib, self.ssl
        if not self.handshaken:
            rc = lib.SSL_do_handshake(ssl)
            if rc <= 0:
                if lib.SSL_get_error(ssl, rc) != lib.SSL_ERROR_WANT_READ:
                    self.close()
                return
            self.handshaken = True
        while True:
            size = lib.SSL_read(ssl, self.buffer, 65536)
            if size <= 0:
                if lib.SSL_get_error(ssl, size) != lib.SSL_ERROR_WANT_READ:
                    self.close()
                    return
                break
            try:
                self.parser.feed_data(self.ffi.unpack(self.buffer, size))
            except httptools.HttpParserError:
                self.close()
                return
        if self.answers:
            data = b"".join(self.answers)
            self.answers = []
            lib.SSL_write(ssl, data, len(data))
            if self.close_after:
                lib.SSL_shutdown(ssl)
                self.close()


class SocketBIOListener:
    """
    Accepts connections for L{SocketBIOTLS} (a bare reader on the reactor).
    """

    def __init__(self, reactor: Any, port: int, context: Any, response: bytes) -> None:
        self.reactor = reactor
        self.context = context
        self.response = response
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1024)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "socket-bio-listener"

    def connectionLost(self, reason: Any) -> None:
        self.sock.close()

    def doRead(self) -> None:
        for _ in range(16):
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            self.reactor.addReader(SocketBIOTLS(self.reactor, sock, self.context, self.response))


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
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="answer over TLS with this chain and key")
    p.add_argument("--tls-stack", choices=("pyopenssl", "listener", "stdlib", "socketbio"), default="pyopenssl",
                   help="Twisted's TLS layer over pyOpenSSL, the listeners' own layer over it, ssl.SSLObject, "
                        "or OpenSSL on the socket itself (see above)")
    args = p.parse_args(argv)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    factory: Any = ResponderFactory(args.size, args.plain_write)
    server_tls: Any = None
    if args.tls and args.tls_stack != "stdlib":
        # the listeners' own TLS side: twisted_proxy.tls.ServerTLS (its
        # contexts, ciphers and groups), under one of the layers below
        from twisted_proxy.model import CertificateConfig, TLSConfig
        from twisted_proxy.tls import ServerTLS

        config = TLSConfig(certificates=(CertificateConfig(*(os.path.abspath(path) for path in args.tls)),))
        server_tls = ServerTLS(config, "bare")
    if args.tls and args.tls_stack == "pyopenssl":
        # Twisted's TLS layer
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = TLSMemoryBIOFactory(server_tls, False, factory)
    elif args.tls and args.tls_stack == "listener":
        # the listeners' own layer over the same pyOpenSSL connections
        from twisted_proxy.tls import wrap_server_factory

        factory = wrap_server_factory(server_tls, factory)
    elif args.tls and args.tls_stack == "socketbio":
        # OpenSSL on the socket itself, with the same context
        context = server_tls.serverConnectionForTLS(None).get_context()
        reactor.addReader(SocketBIOListener(reactor, args.port, context, factory.response))  # type: ignore[attr-defined]
        reactor.run()  # type: ignore[attr-defined]
        return 0
    elif args.tls:
        import ssl

        from twisted_proxy.flow import write_soon

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*args.tls)
        context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
        context.num_tickets = 0
        context.options |= ssl.OP_NO_TICKET
        inner_factory = factory

        class StdlibFactory(protocol.Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> StdlibTLS:
                inner = inner_factory.buildProtocol(addr)
                proto = StdlibTLS(context, inner)
                proto.writer = write_soon if not args.plain_write else (lambda t, d: t.write(d))
                return proto

        factory = StdlibFactory()

    reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
