"""
Shared helpers for the integration tests: real sockets on 127.0.0.1, port 0.

- L{Harness}: one per test. It starts origins, echo servers and proxies,
  connects raw clients, and in its cleanup closes every port and connection
  (its own and the proxy's) and waits until each one is really gone, so that
  trial's dirty-reactor check passes.
- L{Origin}: an in-process HTTP/1.1 origin server with fixed, chunked,
  close-delimited, echo, slow, truncating and connection-dropping endpoints
  (see L{OriginProtocol}).
- L{EchoServer}: a raw TCP echo server that answers a half-close.
- L{WsOrigin} and L{WsClient}: a WebSocket echo server and a client, both
  built on wsproto (real handshakes and framing).
- L{RawClient}: a protocol that sends bytes as given and parses the
  responses it gets back byte-exactly.
- L{start_proxy}: a proxy made from a config mapping through
  L{twisted_proxy.config.parse_config} and L{twisted_proxy.service.make_service};
  L{proxy_config} and L{reverse_config} make the config mappings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qs, urlsplit

from httptools import (  # type: ignore[attr-defined]
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)
try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message as WsMessage,
        Ping,
        RejectConnection,
        RejectData,
        Request as WsRequest,
        TextMessage,
    )
except ImportError:  # pragma: no cover - wsproto is in the test extras
    #: why the WebSocket tests cannot run, or None
    WSPROTO_MISSING: Optional[str] = "wsproto is not installed (pip install '.[test]')"
else:
    WSPROTO_MISSING = None
from zope.interface import implementer
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_proxy.config import parse_config
from twisted_proxy.engine import FrontProtocol
from twisted_proxy.service import ListenerService, ProxyService, make_service
from twisted_proxy.tcp import TcpFrontProtocol
from twisted_proxy.upstream.pool import UpstreamProtocol

Headers = List[Tuple[bytes, bytes]]

#: How long a cleanup waits for every connection to close before failing.
CLEANUP_TIMEOUT = 5.0


def get_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# --- connection tracking ----------------------------------------------------


class Tracker:
    """
    The connections open in one test (the helpers' and the proxy's), so the
    cleanup can wait for every one of them to be closed.
    """

    def __init__(self) -> None:
        self.open: Set[Any] = set()
        self._waiters: List[Deferred] = []

    def opened(self, proto: Any) -> None:
        self.open.add(proto)

    def closed(self, proto: Any) -> None:
        self.open.discard(proto)
        if not self.open:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def wait_empty(self) -> Deferred:
        if not self.open:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d


def _track_class(case: TestCase, cls: type, tracker: Tracker) -> None:
    """
    Make every instance of the proxy's protocol class C{cls} report its
    connection to C{tracker} for the duration of the test.
    """
    made = cls.connectionMade  # type: ignore[attr-defined]
    lost = cls.connectionLost  # type: ignore[attr-defined]

    def connection_made(proto: Any) -> None:
        tracker.opened(proto)
        made(proto)

    def connection_lost(proto: Any, reason: Failure = Failure(ierror.ConnectionDone())) -> None:
        try:
            lost(proto, reason)
        finally:
            tracker.closed(proto)

    case.patch(cls, "connectionMade", connection_made)
    case.patch(cls, "connectionLost", connection_lost)


# --- responses as a client sees them -----------------------------------------


class Response:
    """
    One response read off a connection, byte-exactly.

    @ivar head: the raw head including the final CRLF CRLF.
    @ivar body: the body after de-chunking.
    @ivar raw_body: the body bytes as sent (chunk framing included).
    @ivar chunked: it was sent with C{Transfer-Encoding: chunked}.
    """

    def __init__(
        self,
        version: bytes,
        status: int,
        reason: bytes,
        headers: Headers,
        head: bytes,
        body: bytes = b"",
        raw_body: bytes = b"",
        chunked: bool = False,
    ) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.head = head
        self.body = body
        self.raw_body = raw_body
        self.chunked = chunked

    def header(self, name: bytes) -> Optional[bytes]:
        """
        The first value of header C{name} (any case), or L{None}.
        """
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: bytes) -> List[bytes]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def echo(self) -> "EchoedRequest":
        """
        What the origin's C{/echo} endpoint reports it received.
        """
        raw = self.header(b"x-echo-headers")
        assert raw is not None, f"not an echo response: {self.head!r}"
        pairs = json.loads(raw.decode("ascii"))
        return EchoedRequest(
            (self.header(b"x-echo-method") or b"").decode("latin-1"),
            (self.header(b"x-echo-target") or b"").decode("latin-1"),
            [(n.encode("latin-1"), v.encode("latin-1")) for n, v in pairs],
            self.body,
        )

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


class EchoedRequest:
    """
    The request as the origin's C{/echo} endpoint saw it.
    """

    def __init__(self, method: str, target: str, headers: Headers, body: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body

    def values(self, name: bytes) -> List[bytes]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def names(self) -> Set[bytes]:
        return {n.lower() for n, _ in self.headers}


class IncompleteResponse(Exception):
    """
    The connection ended before a whole response arrived.

    @ivar data: what was received of it.
    """

    def __init__(self, data: bytes) -> None:
        Exception.__init__(self, data[:200])
        self.data = data


def _parse_head(data: bytes, end: int) -> Tuple[bytes, int, bytes, Headers]:
    lines = data[:end].split(b"\r\n")
    version, status, reason = (lines[0].split(b" ", 2) + [b""])[:3]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip()))
    return version, int(status), reason, headers


def _dechunk(data: bytes, start: int) -> Optional[Tuple[bytes, int]]:
    """
    The de-chunked body starting at C{start} and the index just after it,
    or L{None} if it is not complete yet.
    """
    pieces: List[bytes] = []
    pos = start
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(data[pos:line_end].split(b";")[0].strip(), 16)
        pos = line_end + 2
        if size == 0:
            # trailers, then an empty line
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                if line_end == pos:
                    return b"".join(pieces), line_end + 2
                pos = line_end + 2
        if len(data) < pos + size + 2:
            return None
        pieces.append(data[pos : pos + size])
        pos += size + 2


def parse_response(data: bytes, method: bytes, eof: bool) -> Optional[Tuple[Response, int]]:
    """
    The first response in C{data} and the number of bytes it takes, or
    L{None} if it is not complete (yet).

    @param method: the method of the request it answers (no body for HEAD,
        none after a 2xx to CONNECT).
    @param eof: the connection has ended (a close-delimited body is complete).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    version, status, reason, headers = _parse_head(data, end)
    head = data[: end + 4]
    start = end + 4

    def make(body: bytes, stop: int, chunked: bool = False) -> Tuple[Response, int]:
        return (
            Response(version, status, reason, headers, head, body, data[start:stop], chunked),
            stop,
        )

    lowered = {n.lower(): v for n, v in headers}
    if (
        100 <= status < 200
        or status in (204, 304)
        or method == b"HEAD"
        or (method == b"CONNECT" and 200 <= status < 300)
    ):
        return make(b"", start)
    if b"chunked" in lowered.get(b"transfer-encoding", b"").lower():
        result = _dechunk(data, start)
        if result is None:
            return None
        body, stop = result
        return make(body, stop, True)
    if b"content-length" in lowered:
        length = int(lowered[b"content-length"])
        if len(data) < start + length:
            return None
        return make(data[start : start + length], start + length)
    if not eof:
        return None
    return make(data[start:], len(data))


class RawClient(Protocol):
    """
    A client connection that sends bytes exactly as given and reads what
    comes back in order: whole responses, bytes up to a marker, or
    everything until the connection closes.

    @ivar received: every byte received, for inspection.
    @ivar interim: the 1xx responses skipped by L{response}.
    """

    transport: Any

    def __init__(self, tracker: Optional[Tracker] = None) -> None:
        self.tracker = tracker
        self.buffer = b""
        self.received = b""
        self.eof = False
        self.reason: Optional[Failure] = None
        self.interim: List[Response] = []
        self._waiters: List[Tuple[Callable[[], Any], Deferred]] = []
        self._lost: List[Deferred] = []

    def connectionMade(self) -> None:
        if self.tracker is not None:
            self.tracker.opened(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self.received += data
        self._poke()

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:
        self.eof = True
        self.reason = reason
        try:
            self._poke()
            waiters, self._waiters = self._waiters, []
            for _, d in waiters:
                d.errback(IncompleteResponse(self.buffer))
            lost, self._lost = self._lost, []
            for d in lost:
                d.callback(self.buffer)
        finally:
            if self.tracker is not None:
                self.tracker.closed(self)

    def _poke(self) -> None:
        while self._waiters:
            check, d = self._waiters[0]
            result = check()
            if result is None:
                return
            self._waiters.pop(0)
            d.callback(result)

    def _wait(self, check: Callable[[], Any]) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append((check, d))
        if self.eof:
            self._poke()
            if self._waiters and self._waiters[-1][1] is d:
                self._waiters.pop()
                d.errback(IncompleteResponse(self.buffer))
        else:
            self._poke()
        return d

    # sending

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    # receiving

    def response(self, method: bytes = b"GET", interim: bool = False) -> Deferred:
        """
        The next whole response (1xx responses are skipped and kept in
        L{interim} unless C{interim} is true); errback L{IncompleteResponse}
        if the connection ends first.
        """

        def check() -> Optional[Response]:
            while True:
                parsed = parse_response(self.buffer, method, self.eof)
                if parsed is None:
                    return None
                resp, used = parsed
                self.buffer = self.buffer[used:]
                if not interim and 100 <= resp.status < 200 and resp.status != 101:
                    self.interim.append(resp)
                    continue
                return resp

        return self._wait(check)

    def until(self, marker: bytes) -> Deferred:
        """
        The bytes up to and including C{marker}, once they have arrived.
        """

        def check() -> Optional[bytes]:
            index = self.buffer.find(marker)
            if index < 0:
                return None
            end = index + len(marker)
            data, self.buffer = self.buffer[:end], self.buffer[end:]
            return data

        return self._wait(check)

    def nbytes(self, count: int) -> Deferred:
        """
        The next C{count} bytes, once they have arrived.
        """

        def check() -> Optional[bytes]:
            if len(self.buffer) < count:
                return None
            data, self.buffer = self.buffer[:count], self.buffer[count:]
            return data

        return self._wait(check)

    def closed(self) -> Deferred:
        """
        Fires with the unread bytes when the connection has ended.
        """
        if self.eof:
            return succeed(self.buffer)
        d: Deferred = Deferred()
        self._lost.append(d)
        return d


# --- the origin server ---------------------------------------------------------


class OriginRequest:
    """
    A request as the origin received it.
    """

    def __init__(
        self, method: bytes, target: bytes, version: str, headers: Headers, body: bytes
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        split = urlsplit(target.decode("latin-1"))
        self.path = split.path
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}

    def values(self, name: bytes) -> List[bytes]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]


DEFAULT_BODY = b"hello, world\n"


class OriginProtocol(Protocol):
    """
    One connection to the origin. Endpoints (the query sets sizes)::

        /fixed?size=N            body of N bytes (default "hello, world\\n"), Content-Length
        /text/WORD               body WORD, Content-Length
        /chunked?size=N&chunk=M  N bytes in chunks of M
        /close?size=N            HTTP/1.0 response without length; the close ends it
        /echo                    the request body back; X-Echo-Method, X-Echo-Target and
                                 X-Echo-Headers (JSON [[name, value], ...]) describe the request
        /slow                    never answers
        /truncate?size=N&sent=M  announces N bytes, sends M, closes
        /truncate-chunked        one chunk, then closes (no last chunk)
        /once                    answers with keep-alive, then closes the connection at once
        /flaky                   answers the first request of a connection; closes the
                                 connection without an answer on any later one
        /status/NNN              status NNN (no body for 204 and 304)
        /close-header            answers with Connection: close, then closes
        /interim                 100 Continue and 103 Early Hints before the 200
        /stall                   a chunked head and one chunk, then nothing
        /upgrade                 101 Switching Protocols, then echoes raw bytes
        /early                   answers as soon as the head is in, before any body
        /garbage                 sends something that is not HTTP
        /bighead?size=N          a response head with an N-byte header
        /health                  status C{factory.health_status} (200 unless a test changes it)
        /hold                    held until the test calls C{factory.release()}
        /with-headers?N=V&...    the query's pairs as response headers

    Any other path is a 404, or, when C{factory.catch_all} is set, answered
    as C{/echo} is. A test may set C{factory.handler(proto, request,
    keep_alive)}: when it returns true it has dealt with the request itself.

    HEAD gets the GET head without a body. Every request is recorded in
    C{factory.requests}; C{lost} fires when the connection has closed.
    """

    factory: "Origin"
    transport: Any

    def __init__(self) -> None:
        self.served = 0
        self.dead = False
        self._headers: Headers = []
        self._url = b""
        self._body: List[bytes] = []
        self._early = False
        self.echoing = False

    def connectionMade(self) -> None:
        self.lost: Deferred = Deferred()
        self.factory.connection_made(self)
        self.parser = HttpRequestParser(self)

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:
        self.dead = True
        self.factory.connection_lost(self)
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self.echoing:
            self.transport.write(data)
            return
        if self.dead:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as e:
            if self.echoing:
                rest = data[e.args[0] :]
                if rest:
                    self.transport.write(rest)
            else:
                # an upgrade request this endpoint does not switch for
                # (httptools stops after it): parse on as HTTP
                self.parser = HttpRequestParser(self)
                rest = data[e.args[0] :]
                if rest:
                    self.dataReceived(rest)
        except HttpParserError:
            self.dead = True
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.loseConnection()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._early = self._url.startswith(b"/early")
        if self._early and not self.dead:
            # the answer goes out before the request body is read
            self.send(
                OriginRequest(self.parser.get_method(), self._url, "1.1", self._headers, b""),
                True,
                b"early\n",
            )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.dead:
            return
        if self._early:
            self.factory.record(
                OriginRequest(
                    self.parser.get_method(),
                    self._url,
                    self.parser.get_http_version(),
                    self._headers,
                    b"".join(self._body),
                )
            )
            self.served += 1
            return
        request = OriginRequest(
            self.parser.get_method(),
            self._url,
            self.parser.get_http_version(),
            self._headers,
            b"".join(self._body),
        )
        self.factory.record(request)
        keep_alive = self.parser.should_keep_alive()
        self.served += 1
        self.handle(request, keep_alive)

    # answers

    def send(
        self,
        request: OriginRequest,
        keep_alive: bool,
        body: bytes,
        headers: Sequence[Tuple[bytes, bytes]] = (),
        status: bytes = b"200 OK",
    ) -> None:
        lines = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body)]
        lines.extend(n + b": " + v for n, v in headers)
        if not keep_alive:
            lines.append(b"Connection: close")
        data = b"\r\n".join(lines) + b"\r\n\r\n"
        if request.method != b"HEAD":
            data += body
        self.transport.write(data)
        if not keep_alive:
            self.dead = True
            self.transport.loseConnection()

    def handle(self, request: OriginRequest, keep_alive: bool) -> None:
        handler = self.factory.handler
        if handler is not None and handler(self, request, keep_alive):
            return
        path = request.path
        query = request.query
        size = int(query.get("size", "-1"))
        transport = self.transport
        if path == "/health":
            status = self.factory.health_status
            self.send(request, keep_alive, b"health %d\n" % status, status=b"%d Health" % status)
        elif path == "/hold":
            self.factory.hold(self, request, keep_alive)
        elif path == "/with-headers":
            headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in query.items()]
            self.send(request, keep_alive, b"with headers\n", headers)
        elif path == "/fixed":
            body = DEFAULT_BODY if size < 0 else b"x" * size
            self.send(request, keep_alive, body, [(b"Content-Type", b"text/plain")])
        elif path.startswith("/text/"):
            self.send(request, keep_alive, path[6:].encode("latin-1"))
        elif path == "/chunked":
            size = 10000 if size < 0 else size
            chunk = int(query.get("chunk", "1000"))
            pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"]
            if not keep_alive:
                pieces.append(b"Connection: close\r\n")
            pieces.append(b"\r\n")
            if request.method != b"HEAD":
                sent = 0
                while sent < size:
                    n = min(chunk, size - sent)
                    pieces.append(b"%x\r\n%s\r\n" % (n, pattern(sent, n)))
                    sent += n
                pieces.append(b"0\r\n\r\n")
            transport.write(b"".join(pieces))
            if not keep_alive:
                self.dead = True
                transport.loseConnection()
        elif path == "/close":
            size = 5000 if size < 0 else size
            data = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
            if request.method != b"HEAD":
                data += pattern(0, size)
            self.dead = True
            transport.write(data)
            transport.loseConnection()
        elif path == "/echo":
            self.echo(request, keep_alive)
        elif path == "/slow":
            self.dead = True  # never answers, ignores anything further
        elif path == "/truncate":
            size = 1000 if size < 0 else size
            sent = int(query.get("sent", "100"))
            self.dead = True
            transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, b"y" * sent)
            )
            transport.loseConnection()
        elif path == "/truncate-chunked":
            self.dead = True
            transport.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"z" * 16 + b"\r\n"
            )
            transport.loseConnection()
        elif path == "/once":
            # keep-alive as far as the headers say, but the connection ends now
            self.send(request, True, b"once\n")
            self.dead = True
            transport.loseConnection()
        elif path == "/flaky":
            if self.served > 1:
                self.dead = True
                transport.loseConnection()
            else:
                self.send(request, keep_alive, b"flaky\n")
        elif path.startswith("/status/"):
            code = int(path[8:])
            if code in (204, 304):
                transport.write(b"HTTP/1.1 %d Status\r\nX-Status: %d\r\n\r\n" % (code, code))
            else:
                self.send(request, keep_alive, b"status %d\n" % code, status=b"%d Status" % code)
        elif path == "/interim":
            transport.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            )
            self.send(request, keep_alive, b"final\n")
        elif path == "/upgrade":
            # switch to a raw echo protocol
            self.echoing = True
            transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: " + (request.values(b"upgrade") or [b"echo"])[0] + b"\r\n\r\n"
            )
        elif path == "/stall":
            self.dead = True
            transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nstall\r\n")
        elif path == "/close-header":
            self.send(request, False, b"closing\n")
        elif path == "/garbage":
            self.dead = True
            transport.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            transport.loseConnection()
        elif path == "/bighead":
            size = 100000 if size < 0 else size
            self.send(request, keep_alive, b"big\n", [(b"X-Big", b"b" * size)])
        elif self.factory.catch_all:
            self.echo(request, keep_alive)
        else:
            self.send(request, keep_alive, b"not found\n", status=b"404 Not Found")

    def echo(self, request: OriginRequest, keep_alive: bool) -> None:
        """
        The request body back, with X-Echo-* headers describing the request
        (and X-Origin naming the origin, if it has a name).
        """
        pairs = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers]
        headers = [
            (b"X-Echo-Method", request.method),
            (b"X-Echo-Target", request.target),
            (b"X-Echo-Headers", json.dumps(pairs).encode("ascii")),
        ]
        if self.factory.name:
            headers.append((b"X-Origin", self.factory.name.encode("ascii")))
        self.send(request, keep_alive, request.body, headers)


def pattern(offset: int, size: int) -> bytes:
    """
    C{size} bytes of a position-dependent pattern starting at C{offset}, so
    that a reordered or lost piece shows.
    """
    alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz"
    period = len(alphabet)
    start = offset % period
    repeated = alphabet * ((start + size) // period + 2)
    return repeated[start : start + size]


class Origin(Factory):
    """
    The origin server's factory: its port, its connections and the requests
    it received.
    """

    protocol = OriginProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, tracker: Tracker, name: str = "") -> None:
        self.tracker = tracker
        self.name = name
        self.connections_made = 0
        self.connections: List[OriginProtocol] = []
        self.requests: List[OriginRequest] = []
        self._request_waiters: List[Deferred] = []
        self.listening: Any = None
        self.port = 0
        #: the status /health answers with
        self.health_status = 200
        #: unknown paths are echoed instead of 404
        self.catch_all = False
        #: a test's own request handler (see L{OriginProtocol})
        self.handler: Optional[Callable[[OriginProtocol, OriginRequest, bool], bool]] = None
        #: requests to /hold not answered yet
        self.held: List[Tuple[OriginProtocol, OriginRequest, bool]] = []
        self._held_waiters: List[Deferred] = []

    def hold(self, proto: OriginProtocol, request: OriginRequest, keep_alive: bool) -> None:
        self.held.append((proto, request, keep_alive))
        waiters, self._held_waiters = self._held_waiters, []
        for d in waiters:
            d.callback(request)

    def next_held(self) -> Deferred:
        """
        Fires when a request to /hold is waiting (at once if one is).
        """
        if self.held:
            return succeed(self.held[0][1])
        d: Deferred = Deferred()
        self._held_waiters.append(d)
        return d

    def release(self, body: bytes = b"released\n") -> None:
        """
        Answer the oldest held request.
        """
        proto, request, keep_alive = self.held.pop(0)
        if not proto.dead:
            proto.send(request, keep_alive, body)

    def user_requests(self) -> List[OriginRequest]:
        """
        The requests received, health probes left out.
        """
        return [r for r in self.requests if r.path != "/health"]

    @property
    def url_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, request: OriginRequest) -> None:
        self.requests.append(request)
        waiters, self._request_waiters = self._request_waiters, []
        for d in waiters:
            d.callback(request)

    def next_request(self) -> Deferred:
        """
        Fires with the next request the origin receives.
        """
        d: Deferred = Deferred()
        self._request_waiters.append(d)
        return d

    def connection_made(self, proto: OriginProtocol) -> None:
        self.connections_made += 1
        self.connections.append(proto)
        self.tracker.opened(proto)

    def connection_lost(self, proto: OriginProtocol) -> None:
        if proto in self.connections:
            self.connections.remove(proto)
        self.tracker.closed(proto)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> bytes:
        return f"http://{host}:{self.port}{path}".encode("ascii")

    @property
    def authority(self) -> bytes:
        return b"127.0.0.1:%d" % self.port


# --- a raw TCP echo server (CONNECT targets) -------------------------------------


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Echoes bytes; when the peer half-closes, sends C{EchoServer.goodbye}
    and closes.
    """

    factory: "EchoServer"
    transport: Any

    def connectionMade(self) -> None:
        self.factory.connections_made += 1
        self.factory.connections.append(self)
        self.factory.tracker.opened(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.factory.half_closes += 1
        self.transport.write(self.factory.goodbye)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        self.factory.tracker.closed(self)


class EchoServer(Factory):
    protocol = EchoProtocol  # type: ignore[assignment]
    noisy = False
    goodbye = b"[goodbye]"

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.connections_made = 0
        self.half_closes = 0
        self.connections: List[EchoProtocol] = []
        self.listening: Any = None
        self.port = 0


# --- a WebSocket echo server and client (wsproto) ----------------------------------


def _merge_messages(events: List[Any], partial: List[Any]) -> List[Any]:
    """
    Complete wsproto events: fragments of a message (C{partial} holds those
    seen so far) are joined into one message event.
    """
    out = []
    for event in events:
        if isinstance(event, (TextMessage, BytesMessage)):
            partial.append(event)
            if not event.message_finished:
                continue
            data: Any = ("" if isinstance(event, TextMessage) else b"").join(
                e.data for e in partial
            )
            del partial[:]
            out.append(type(event)(data=data, frame_finished=True, message_finished=True))
        else:
            out.append(event)
    return out


class WsOriginProtocol(Protocol):
    """
    A WebSocket server connection built on wsproto: it accepts the
    handshake (a target starting with C{/reject} gets a 403 with a body
    instead, then the connection closes), echoes text and binary messages,
    answers pings, answers a close and closes the connection. A text
    message C{"close please"} makes it start the closing handshake itself
    (code 1001).
    """

    factory: "WsOrigin"
    transport: Any

    def connectionMade(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.partial: List[Any] = []
        self.lost: Deferred = Deferred()
        self.factory.connections_made += 1
        self.factory.connections.append(self)
        self.factory.tracker.opened(self)

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        self.factory.tracker.closed(self)
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            events = _merge_messages(list(self.ws.events()), self.partial)
        except Exception:  # a protocol error: the test sees the close
            self.transport.loseConnection()
            return
        for event in events:
            self.factory.events.append(event)
            if isinstance(event, WsRequest):
                self.factory.handshakes.append(event)
                if event.target.startswith("/reject"):
                    self.transport.write(
                        self.ws.send(
                            RejectConnection(
                                status_code=403,
                                headers=[(b"content-type", b"text/plain")],
                                has_body=True,
                            )
                        )
                        + self.ws.send(RejectData(data=b"no websocket here\n"))
                    )
                    self.transport.loseConnection()
                    return
                self.transport.write(self.ws.send(AcceptConnection()))
            elif isinstance(event, TextMessage):
                if event.data == "close please":
                    self.transport.write(
                        self.ws.send(CloseConnection(code=1001, reason="going away"))
                    )
                else:
                    self.transport.write(self.ws.send(WsMessage(data=event.data)))
            elif isinstance(event, BytesMessage):
                self.transport.write(self.ws.send(WsMessage(data=event.data)))
            elif isinstance(event, Ping):
                self.transport.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.factory.closes.append((event.code, event.reason))
                if self.ws.state == ConnectionState.REMOTE_CLOSING:
                    self.transport.write(self.ws.send(event.response()))
                self.transport.loseConnection()
                return


class WsOrigin(Factory):
    """
    The WebSocket echo server's factory: its port, connections, and what
    it received (C{handshakes}: the wsproto requests; C{closes}: the close
    codes and reasons it got).
    """

    protocol = WsOriginProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, tracker: Tracker, name: str = "") -> None:
        self.tracker = tracker
        self.name = name
        self.connections_made = 0
        self.connections: List[WsOriginProtocol] = []
        self.handshakes: List[Any] = []
        self.events: List[Any] = []
        self.closes: List[Tuple[int, Optional[str]]] = []
        self.listening: Any = None
        self.port = 0

    @property
    def authority(self) -> bytes:
        return b"127.0.0.1:%d" % self.port


class WsClient:
    """
    The client side of a WebSocket over a L{RawClient} (so it can go
    through a forward or a reverse proxy): wsproto makes the handshake and
    the (masked) frames and parses what comes back.
    """

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.partial: List[Any] = []
        self.ready: List[Any] = []

    def handshake(
        self, host: str, target: str, absolute: Optional[bytes] = None
    ) -> bytes:
        """
        The handshake request's bytes; with C{absolute}, its request line
        carries that absolute URI (for a forward proxy).
        """
        data = self.ws.send(WsRequest(host=host, target=target))
        if absolute is not None:
            line_end = data.index(b"\r\n")
            method, _, version = data[:line_end].split(b" ")
            data = method + b" " + absolute + b" " + version + data[line_end:]
        return data

    @inlineCallbacks
    def connect(
        self, host: str, target: str, absolute: Optional[bytes] = None
    ) -> Generator[Deferred, Any, Any]:
        """
        Send the handshake and read the answer; fires with the L{Response}
        (a 101 has been fed to wsproto: messages can go).
        """
        self.raw.send(self.handshake(host, target, absolute))
        response: Response = yield self.raw.response()
        if response.status == 101:
            self.ws.receive_data(response.head)
            events = list(self.ws.events())
            assert isinstance(events[0], AcceptConnection), events
        return response

    def send(self, event: Any) -> None:
        self.raw.send(self.ws.send(event))

    def send_text(self, text: str) -> None:
        self.send(WsMessage(data=text))

    def send_bytes(self, data: bytes) -> None:
        self.send(WsMessage(data=data))

    def event(self) -> Deferred:
        """
        The next complete event (messages joined from their fragments);
        errback L{IncompleteResponse} if the connection ends first.
        """

        def check() -> Any:
            raw = self.raw
            if raw.buffer:
                data, raw.buffer = raw.buffer, b""
                self.ws.receive_data(data)
                self.ready.extend(_merge_messages(list(self.ws.events()), self.partial))
            if self.ready:
                return self.ready.pop(0)
            return None

        return self.raw._wait(check)


# --- the proxy -------------------------------------------------------------------


class RunningProxy:
    """
    A started proxy service and the ports its listeners are bound to.
    """

    def __init__(self, service: ProxyService, access_log: Optional[str]) -> None:
        self.service = service
        self.access_log_path = access_log
        self.listeners: Dict[str, ListenerService] = {
            str(s.name): s for s in service if isinstance(s, ListenerService)
        }
        self.ports: Dict[str, int] = {}
        for name, listener in self.listeners.items():
            if listener.port is not None:
                self.ports[name] = listener.port.getHost().port

    @property
    def port(self) -> int:
        """
        The port of the (first) listener.
        """
        return next(iter(self.ports.values()))

    def access_log(self) -> List[Dict[str, Any]]:
        """
        The access log's lines so far, parsed.
        """
        assert self.access_log_path is not None, "access_log is not a file"
        self.service.getServiceNamed("access-log").access_log.flush()
        with open(self.access_log_path, "rb") as f:
            return [json.loads(line) for line in f.read().splitlines() if line]


def start_proxy(config: Dict[str, Any], reactor: Any = None) -> RunningProxy:
    """
    Parse C{config} (a mapping as TOML would give it), make the service
    and start it. Endpoints of the form C{tcp:0:...} bind a free port.
    """
    reactor = reactor if reactor is not None else get_reactor()
    parsed = parse_config(config, "test.toml", os.getcwd())
    top = make_service(parsed, reactor)
    top.startService()
    access_log = parsed.proxy.access_log
    return RunningProxy(top, None if access_log in ("-", "off") else access_log)


def servers(*origins: Any, scheme: str = "http", **options: Any) -> List[Dict[str, Any]]:
    """
    Server entries for C{origins} (anything with a C{port}); C{options}
    (C{weight}, C{max_connections}, ...) apply to each.
    """
    return [dict({"url": f"{scheme}://127.0.0.1:{o.port}"}, **options) for o in origins]


def reverse_config(
    routes: List[Dict[str, Any]],
    backends: Dict[str, Dict[str, Any]],
    listener: Optional[Dict[str, Any]] = None,
    proxy: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """
    A config with one reverse listener named C{"edge"} on a free loopback
    port, with C{routes} and C{backends}; C{listener} and C{proxy} entries
    override the defaults.
    """
    lconf: Dict[str, Any] = {
        "name": "edge",
        "kind": "reverse",
        "endpoint": "tcp:0:interface=127.0.0.1",
        "route": routes,
    }
    lconf.update(listener or {})
    pconf: Dict[str, Any] = {"access_log": "off"}
    pconf.update(proxy or {})
    return {"proxy": pconf, "listener": [lconf], "backend": backends}


def proxy_config(
    listener: Optional[Dict[str, Any]] = None,
    proxy: Optional[Dict[str, Any]] = None,
    filters: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """
    A config with one forward listener named C{"fwd"} on a free loopback
    port; C{listener} and C{proxy} entries override the defaults.
    """
    lconf: Dict[str, Any] = {
        "name": "fwd",
        "kind": "forward",
        "endpoint": "tcp:0:interface=127.0.0.1",
    }
    lconf.update(listener or {})
    pconf: Dict[str, Any] = {"access_log": "off"}
    pconf.update(proxy or {})
    config: Dict[str, Any] = {"proxy": pconf, "listener": [lconf]}
    if filters:
        config["filter"] = filters
    return config


# --- per-test harness ----------------------------------------------------------------


class Harness:
    """
    Everything one test starts, closed and waited for in its cleanup.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.reactor = get_reactor()
        self.tracker = Tracker()
        _track_class(case, FrontProtocol, self.tracker)
        _track_class(case, UpstreamProtocol, self.tracker)
        _track_class(case, TcpFrontProtocol, self.tracker)
        self.ports: List[Any] = []
        self.clients: List[RawClient] = []
        self.proxies: List[RunningProxy] = []
        self.servers: List[Any] = []
        # registered after the patches: runs before they are undone
        case.addCleanup(self.cleanup)

    def origin(self, name: str = "") -> Origin:
        origin = Origin(self.tracker, name)
        port = self.reactor.listenTCP(0, origin, interface="127.0.0.1")
        origin.listening = port
        origin.port = port.getHost().port
        self.ports.append(port)
        self.servers.append(origin)
        return origin

    def echo_server(self) -> EchoServer:
        server = EchoServer(self.tracker)
        port = self.reactor.listenTCP(0, server, interface="127.0.0.1")
        server.listening = port
        server.port = port.getHost().port
        self.ports.append(port)
        self.servers.append(server)
        return server

    def proxy(
        self,
        listener: Optional[Dict[str, Any]] = None,
        proxy: Optional[Dict[str, Any]] = None,
        filters: Optional[Dict[str, Any]] = None,
        access_log: bool = False,
    ) -> RunningProxy:
        """
        Start a forward proxy (see L{proxy_config}); with C{access_log},
        it logs to a fresh temporary file.
        """
        proxy = dict(proxy or {})
        if access_log:
            proxy["access_log"] = os.path.abspath(self.case.mktemp())
        running = self.start(proxy_config(listener, proxy, filters))
        self.case.assertEqual(
            running.service.failures, [], "the proxy's listener did not start"
        )
        return running

    def start(self, config: Dict[str, Any]) -> RunningProxy:
        running = start_proxy(config, self.reactor)
        self.proxies.append(running)
        return running

    def reverse(
        self,
        routes: List[Dict[str, Any]],
        backends: Dict[str, Dict[str, Any]],
        listener: Optional[Dict[str, Any]] = None,
        proxy: Optional[Dict[str, Any]] = None,
        access_log: bool = False,
    ) -> RunningProxy:
        """
        Start a proxy with one reverse listener (see L{reverse_config}).
        """
        proxy = dict(proxy or {})
        if access_log:
            proxy["access_log"] = os.path.abspath(self.case.mktemp())
        running = self.start(reverse_config(routes, backends, listener, proxy))
        self.case.assertEqual(running.service.failures, [], "the proxy's listener did not start")
        return running

    def ws_origin(self, name: str = "") -> "WsOrigin":
        """
        A WebSocket echo server (see L{WsOriginProtocol}).
        """
        origin = WsOrigin(self.tracker, name)
        port = self.reactor.listenTCP(0, origin, interface="127.0.0.1")
        origin.listening = port
        origin.port = port.getHost().port
        self.ports.append(port)
        self.servers.append(origin)
        return origin

    def kill(self, server: Any) -> Deferred:
        """
        Stop C{server} listening and abort its connections: as if its
        process died. Fires when the port is closed.
        """
        for proto in list(server.connections):
            proto.transport.abortConnection()
        port = server.listening
        if port in self.ports:
            self.ports.remove(port)
        return port.stopListening() or succeed(None)

    def wait_for(
        self, condition: Callable[[], Any], timeout: float = 5.0, step: float = 0.02
    ) -> Deferred:
        """
        Fires with C{condition()}'s first true value, polled every C{step}
        seconds on the real reactor; fails after C{timeout} seconds.
        """
        deadline = self.reactor.seconds() + timeout

        def poll() -> Any:
            value = condition()
            if value:
                return value
            if self.reactor.seconds() > deadline:
                raise AssertionError(f"condition not met within {timeout}s: {condition!r}")
            return deferLater(self.reactor, step, poll)

        return deferLater(self.reactor, 0, poll)

    def client(self, port: int) -> Deferred:
        """
        A connected L{RawClient} (Deferred).
        """
        client = RawClient(self.tracker)
        self.clients.append(client)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", port, timeout=5)
        return connectProtocol(endpoint, client)

    def free_port(self) -> Deferred:
        """
        A port number nothing listens on (Deferred).
        """
        port = self.reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        d = port.stopListening() or succeed(None)
        return d.addCallback(lambda _: number)

    def dead_port(self) -> int:
        """
        A port that refuses connections for the whole test: bound, never
        listening, so no other socket can take it meanwhile (a port freed
        after binding can be reused, even as the local port of the very
        connection that tries to reach it).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.case.addCleanup(sock.close)
        return int(sock.getsockname()[1])

    def cleanup(self) -> Deferred:
        for client in self.clients:
            if client.transport is not None and not client.eof:
                client.transport.abortConnection()
        stopping = []
        for running in self.proxies:
            if running.service.running:
                stopping.append(running.service.stopService())
        for server in self.servers:
            for proto in list(server.connections):
                proto.transport.abortConnection()
        for port in self.ports:
            stopping.append(port.stopListening())
        d = DeferredList([s for s in stopping if isinstance(s, Deferred)], consumeErrors=True)
        d.addCallback(lambda _: self.tracker.wait_empty())

        def describe(failure: Failure) -> Failure:
            failure.trap(ierror.TimeoutError, Exception)
            raise AssertionError(
                f"connections still open after the test: {sorted(map(repr, self.tracker.open))}"
            )

        d.addTimeout(CLEANUP_TIMEOUT, self.reactor)
        d.addErrback(describe)
        return d


# --- a real redis-server ----------------------------------------------------------


#: the redis-server program, or None (tests that need it skip)
REDIS_SERVER = shutil.which("redis-server")


def unused_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """
    A C{redis-server} in a temporary folder on a loopback port, without
    persistence.
    """

    def __init__(self, directory: str, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: Optional[subprocess.Popen] = None

    @inlineCallbacks
    def start(self) -> Generator[Deferred, Any, None]:
        """
        Start it; fires once it accepts connections.
        """
        assert REDIS_SERVER is not None
        os.makedirs(self.directory, exist_ok=True)
        self.log = open(os.path.join(self.directory, "redis.log"), "ab")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(200):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                yield deferLater(get_reactor(), 0.025, lambda: None)
        raise RuntimeError("redis-server did not start listening")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        self.log.close()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


__all__ = [
    "EchoServer",
    "Harness",
    "IncompleteResponse",
    "Origin",
    "RawClient",
    "REDIS_SERVER",
    "RedisServer",
    "Response",
    "Tracker",
    "parse_response",
    "pattern",
    "proxy_config",
    "start_proxy",
    "unused_port",
]
