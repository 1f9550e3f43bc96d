# -*- test-case-name: tests.test_pool -*-
"""
Upstream connections and the keep-alive pool.

One L{UpstreamProtocol} per TCP connection to an origin, a parent proxy or a
backend server. While it serves an exchange, its response parser reports to
that exchange; between exchanges it waits in the L{Pool} (LIFO, bounded per
address, closed after an idle timeout). The same connection can be handed to
a L{twisted_proxy.tunnel.Splice} (CONNECT, WebSocket), after which it is
never pooled again.

A pool key is C{(host, port)} for plain connections and C{(host, port,
creator)} for TLS ones (C{creator} is the server's
L{twisted_proxy.tls.BackendTLS}: its C{wrap(factory, clock)} puts TLS under
a connection and its C{describe_failure(reason)} says why one failed), so
the two never mix. A TLS connection is
handed to its requester only once the handshake (and the verification of
the server's certificate) is done; a failed handshake is a failed connection
attempt (502) with a log event naming the reason, never a silent downgrade.
"""

from __future__ import annotations

import errno
from collections import OrderedDict

from typing import Any, Dict, List, Optional, Set, Tuple

from zope.interface import implementer
from twisted.internet import error as ierror
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.flow import Gate, Relay
from twisted_proxy.http.parser import BadResponse, ResponseParser

log = Logger()

#: C{(host, port)}, or C{(host, port, tls_creator)} for TLS connections
Key = Tuple[Any, ...]


#: what an upstream connection reads at once while a response head is
#: expected (see attach), and then (Twisted's default)
HEAD_READ = 4096
BODY_READ = 65536

class _Discard:
    """
    The parser's sink while a connection serves nobody: what an upstream
    still sends then is dropped (the connection is being closed).
    """

    def response_head(self, head: Any) -> None:
        pass

    def response_body(self, data: bytes) -> None:
        pass

    def response_end(self) -> None:
        pass


DISCARD = _Discard()


class _NoWriter:
    """
    The writer while a connection serves nobody.
    """

    out: Any = None

    def flush(self) -> None:
        pass


NO_WRITER = _NoWriter()


@implementer(IHalfCloseableProtocol)
class UpstreamProtocol(Protocol):
    """
    One connection to an upstream HTTP server.

    @ivar leg: what it serves now (an exchange's upstream leg,
        L{twisted_proxy.engine.upstream.UpstreamLeg}: it gets the parser's
        events and the connection's), or L{None} while idle.
    @ivar reused: it served an exchange before the current one.
    @ivar splice: the tunnel it belongs to, once upgraded.
    @ivar raw: the leg reads the bytes itself (a parent proxy's answer to
        CONNECT), not through the response parser.
    """

    transport: Any

    def __init__(
        self,
        pool: "Pool",
        key: Key,
        max_head_size: int,
        max_field_size: int = 8192,
        max_header_count: int = 100,
    ) -> None:
        self.pool = pool
        self.key = key
        self.parser = ResponseParser(DISCARD, max_head_size, max_field_size, max_header_count)
        self.leg: Any = None
        self.writer: Any = NO_WRITER
        self.requester: Any = None
        self.reused = False
        self.splice: Any = None
        #: the body splice (engine/splice.py) moving the rest of a body
        self.body_splice: Any = None
        self.gate: Optional[Gate] = None
        self.relay = Relay()
        self.idle_deadline = 0.0
        self.idle_timer: Any = None
        self.in_pool = False
        self.held = False
        self.lost = False
        self.raw = False
        #: (local address, port, remote address, port), when it is one of
        #: the pool's direct_ends
        self.local_end: Optional[Tuple[str, int, str, int]] = None

    # Protocol

    #: a TLS connection waits for its handshake before serving
    wait_handshake = False

    def connectionMade(self) -> None:
        self.gate = Gate(self.transport)
        self.transport.registerProducer(self.relay, True)
        set_no_delay(self.transport)
        if not self.wait_handshake:
            self.ready()

    def ready(self) -> None:
        """
        The connection can carry requests: hand it to its requester (or
        the pool).
        """
        requester, self.requester = self.requester, None
        if requester is not None:
            requester.upstream_ready(self)
        else:
            self.pool.release(self)

    def dataReceived(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.data_from_back(data)
            return
        leg = self.leg
        if leg is None:
            # an idle connection that talks: it cannot be trusted again
            self.transport.loseConnection()
            return
        if self.raw:
            leg.raw_data(self, data)
            return
        parser = self.parser
        writer = self.writer
        writer.out = []  # what this read produces for the client goes in one send
        try:
            rest = parser.feed(data)
        except BadResponse as e:
            writer.flush()
            leg.upstream_failed(self, 502, f"invalid response from upstream: {e}")
            return
        except Exception:
            # a bug of ours while handling the response, not the upstream's
            writer.flush()
            leg.internal_error(self, Failure())
            return
        writer.flush()
        if rest is not None:
            leg.upstream_upgraded(self, rest)
            return
        if parser.done:
            if self.leg is leg:
                leg.upstream_done(self, parser.extra)
        else:
            parser.hand_over()
            if parser.remaining and self.leg is leg:
                # the rest of a Content-Length body: the leg may splice it
                body_follows = getattr(leg, "body_follows", None)
                if body_follows is not None:
                    body_follows(self)
        transport = self.transport
        if getattr(transport, "bufferSize", None) == HEAD_READ and parser.started and not parser._in_head:
            transport.bufferSize = BODY_READ

    def readConnectionLost(self) -> None:
        if self.splice is not None:
            self.splice.read_closed_back()
            return
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        self.lost = True
        if self.local_end is not None:
            self.pool.direct_ends.discard(self.local_end)
        if self.idle_timer is not None and self.idle_timer.active():
            self.idle_timer.cancel()
        self.idle_timer = None
        if self.in_pool:
            self.pool.forget(self)
        if self.held:
            self.pool.unhold(self)
        if self.body_splice is not None:
            self.body_splice.stop()
        if self.splice is not None:
            self.splice.lost_back()
            return
        leg = self.leg
        if leg is None:
            return
        parser = self.parser
        if parser.started and not parser.done and parser.framing_until_close():
            # a body delimited by the end of the connection ends here
            parser.done = True
            writer = self.writer
            writer.out = []
            try:
                parser.sink.response_end()
            except Exception:
                writer.flush()
                leg.internal_error(self, Failure())
                return
            writer.flush()
            if self.leg is leg:
                leg.upstream_done(self, True)
            return
        leg.upstream_lost(self, reason)

    # used by upstream legs

    def attach(self, leg: Any, no_body: bool, writer: Any, small_head_read: bool = False) -> None:
        """
        Serve C{leg}; the response parser's events go there (the leg may
        hand them on to its sink). C{writer} collects what one read
        produces for the client (its C{out} list) and sends it at once
        (its C{flush()}). With C{small_head_read} (the body may be spliced
        to the client: engine/splice.py), the head is read a few KiB at a
        time, so that a large body after it is left in the socket for the
        splice; the read size is set back once the head is in.
        """
        self.leg = leg
        self.writer = writer
        self.parser.sink = leg
        self.parser.expect(no_body)
        if small_head_read and not no_body:
            self.transport.bufferSize = HEAD_READ

    def attach_raw(self, leg: Any) -> None:
        """
        Serve C{leg}, which reads the bytes itself.
        """
        self.leg = leg
        self.raw = True

    def detach(self) -> None:
        """
        Stop serving the current leg (before release, close or a splice).
        """
        self.leg = None
        self.writer = NO_WRITER
        self.raw = False
        self.parser.sink = DISCARD
        self.relay.switch(None)
        if self.gate is not None:
            self.gate.resume(0xFF)


@implementer(IHandshakeListener)
class TLSUpstreamProtocol(UpstreamProtocol):
    """
    An upstream connection over TLS: ready once the handshake is done.
    """

    wait_handshake = True
    handshake_done = False
    handshake_timer: Any = None

    def connectionMade(self) -> None:
        UpstreamProtocol.connectionMade(self)
        # the handshake is part of connecting: connect_timeout bounds it too
        self.handshake_timer = self.pool.reactor.callLater(
            self.pool.connect_timeout, self._handshake_timed_out
        )

    def _handshake_timed_out(self) -> None:
        self.handshake_timer = None
        if not self.handshake_done and not self.lost:
            self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        self._cancel_handshake_timer()
        if not self.lost:
            self.ready()

    def _cancel_handshake_timer(self) -> None:
        timer, self.handshake_timer = self.handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def connectionLost(self, reason: Failure = ierror.ConnectionDone()) -> None:  # type: ignore[assignment]
        timed_out = self.handshake_timer is None and not self.handshake_done
        self._cancel_handshake_timer()
        requester, self.requester = self.requester, None
        if not self.handshake_done:
            self.lost = True
            if requester is not None:
                if timed_out:
                    reason = Failure(ierror.TimeoutError("TLS handshake timed out"))
                self.pool.handshake_failed(self.key, requester, reason)
        elif self.leg is not None and reason.check("OpenSSL.SSL.Error"):
            # e.g. TLS 1.3: the server refuses our client certificate after
            # our side of the handshake is done
            log.warn(
                "TLS connection to {host}:{port} failed: {why}",
                host=self.key[0],
                port=self.key[1],
                why=self.key[2].describe_failure(reason),
                tls_event="backend_error",
            )
        UpstreamProtocol.connectionLost(self, reason)


class _Connector(ClientFactory):
    """
    Makes one L{UpstreamProtocol} for one connection attempt and reports a
    failed attempt to its requester.
    """

    noisy = False

    def __init__(self, pool: "Pool", key: Key, requester: Any) -> None:
        self.pool = pool
        self.key = key
        self.requester = requester

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        cls = TLSUpstreamProtocol if len(self.key) > 2 else UpstreamProtocol
        pool = self.pool
        proto = cls(pool, self.key, pool.max_head_size, pool.max_field_size, pool.max_header_count)
        proto.requester = self.requester
        proto.factory = self  # type: ignore[attr-defined]
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.pool.connect_failed(self.key, self.requester, reason)


class Pool:
    """
    Keep-alive connections to upstream addresses, shared by every listener
    of a process.

    A forward proxy meets millions of origins: C{idle} and C{held} keep an
    entry only for an address with at least one idle (or held) connection,
    so their size is bounded by the connections open, not by the addresses
    ever seen.

    The bound is for the whole process: C{max_total} idle connections,
    counting those client connections keep for their next request
    (C{held}). When it is reached, the connection idle the longest, to
    whichever address, closes to make room (an address keeps the
    connections it used recently; one that went quiet gives its idle
    connections up first). C{max_idle}, when set, also caps each address.

    @param reactor: provides C{IReactorTCP}, C{IReactorTime} (and for host
        names C{IReactorPluggableNameResolver} via L{HostnameEndpoint}).
    """

    def __init__(
        self,
        reactor: Any,
        max_idle: Optional[int] = None,
        idle_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_head_size: int = 32768,
        max_field_size: int = 8192,
        max_header_count: int = 100,
        max_total: int = 4096,
    ) -> None:
        self.reactor = reactor
        #: idle (and held) connections per address, None: only max_total
        self.max_idle = max_idle
        #: idle (and held) connections of the whole pool
        self.max_total = max_total
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_head_size = max_head_size
        self.max_field_size = max_field_size
        self.max_header_count = max_header_count
        self.idle: Dict[Key, List[UpstreamProtocol]] = {}
        #: the connections (local address, port, remote address, port) made
        #: straight to an origin by a forward listener: a connection that a
        #: forward listener accepts from one of them (its peer is our local
        #: end, its own address our remote end) is the proxy talking to
        #: itself
        self.direct_ends: Set[Tuple[str, int, str, int]] = set()
        #: idle connections a client connection keeps for its next request
        self.held: Dict[Key, int] = {}
        self.total_held = 0
        #: every idle connection, the one idle the longest first
        self.lru: "OrderedDict[UpstreamProtocol, None]" = OrderedDict()
        #: idle connections closed to make room for others (max_total)
        self.evicted = 0

    def note_direct(self, conn: UpstreamProtocol) -> None:
        """
        C{conn} goes straight to an origin for a forward listener: remember
        its local end (see L{direct_ends}) while it lives.
        """
        if conn.local_end is None and not conn.lost:
            local = conn.transport.getHost()
            remote = conn.transport.getPeer()
            host = getattr(local, "host", None)
            port = getattr(local, "port", None)
            if host is not None and port is not None:
                # the whole connection (both ends): the kernel may use the
                # same local port towards different destinations
                end = (
                    unmapped(host),
                    port,
                    unmapped(getattr(remote, "host", "")),
                    getattr(remote, "port", 0),
                )
                conn.local_end = end
                self.direct_ends.add(end)

    def acquire(self, key: Key) -> Optional[UpstreamProtocol]:
        """
        The most recently used idle connection to C{key}, or L{None}.
        """
        conns = self.idle.get(key)
        if conns is None:
            return None
        found: Optional[UpstreamProtocol] = None
        lru = self.lru
        while conns:
            conn = conns.pop()
            conn.in_pool = False
            lru.pop(conn, None)
            if not conn.lost:
                conn.reused = True
                found = conn
                break
        if not conns:
            # no entry is kept for an address without idle connections
            del self.idle[key]
        return found

    def release(self, conn: UpstreamProtocol) -> None:
        """
        Keep C{conn} for the next request to its address (or close it if
        the pool for that address is full).
        """
        if conn.lost:
            return
        key = conn.key
        conns = self.idle.get(key)
        max_idle = self.max_idle
        if max_idle is not None and (len(conns) if conns else 0) + self.held.get(key, 0) >= max_idle:
            conn.transport.loseConnection()
            return
        if not self.make_room():
            conn.transport.loseConnection()
            return
        # (making room may have emptied this address's list)
        conns = self.idle.get(key)
        if conns is None:
            conns = self.idle[key] = []
        conns.append(conn)
        self.lru[conn] = None
        conn.in_pool = True
        now = self.reactor.seconds()
        conn.idle_deadline = now + self.idle_timeout
        if conn.idle_timer is None:
            conn.idle_timer = self.reactor.callLater(
                self.idle_timeout, self._idle_check, conn
            )

    def hold(self, conn: UpstreamProtocol) -> bool:
        """
        Let a client connection keep C{conn} (idle) for its next request,
        if the address's idle budget (C{max_idle}, shared with the pool)
        allows; false means release it instead.
        """
        key = conn.key
        held = self.held.get(key, 0)
        if conn.lost:
            return False
        max_idle = self.max_idle
        if max_idle is not None and held + len(self.idle.get(key, ())) >= max_idle:
            return False
        if not self.make_room():
            return False
        self.held[key] = held + 1
        self.total_held += 1
        conn.held = True
        return True

    def make_room(self) -> bool:
        """
        Room for one more idle or held connection under C{max_total}: the
        connection idle the longest closes if need be. False when every
        connection counted is held by a client connection.
        """
        lru = self.lru
        while len(lru) + self.total_held >= self.max_total:
            if not lru:
                return False
            oldest = next(iter(lru))
            self.forget(oldest)
            self.evicted += 1
            if oldest.transport is not None:
                oldest.transport.loseConnection()
        return True

    def unhold(self, conn: UpstreamProtocol) -> None:
        """
        C{conn} is no longer kept by a client connection.
        """
        if not conn.held:
            return
        conn.held = False
        self.total_held -= 1
        key = conn.key
        held = self.held.get(key, 0) - 1
        if held > 0:
            self.held[key] = held
        else:
            self.held.pop(key, None)

    def forget(self, conn: UpstreamProtocol) -> None:
        conn.in_pool = False
        self.lru.pop(conn, None)
        conns = self.idle.get(conn.key)
        if conns is None:
            return
        if conn in conns:
            conns.remove(conn)
        if not conns:
            del self.idle[conn.key]

    def _idle_check(self, conn: UpstreamProtocol) -> None:
        conn.idle_timer = None
        if not conn.in_pool or conn.lost:
            return
        remaining = conn.idle_deadline - self.reactor.seconds()
        if remaining > 0:
            conn.idle_timer = self.reactor.callLater(remaining, self._idle_check, conn)
            return
        self.forget(conn)
        conn.transport.loseConnection()

    def connect(self, key: Key, requester: Any) -> None:
        """
        Open a new connection to C{key}; C{requester.upstream_ready(conn)}
        or C{requester.upstream_connect_failed(status, message)} follows.
        """
        host, port = key[0], key[1]
        factory: Any = _Connector(self, key, requester)
        if len(key) > 2:
            # the key's third item speaks TLS (twisted_proxy.tls.BackendTLS)
            factory = key[2].wrap(factory, self.reactor)
        if isIPAddress(host) or isIPv6Address(host):
            self.reactor.connectTCP(host, port, factory, timeout=self.connect_timeout)
            return
        from twisted.internet.endpoints import HostnameEndpoint

        endpoint = HostnameEndpoint(self.reactor, host, port, timeout=self.connect_timeout)
        d = endpoint.connect(factory)
        d.addErrback(lambda f: self.connect_failed(key, requester, f))

    def connect_failed(self, key: Key, requester: Any, reason: Failure) -> None:
        status, message = describe_connect_failure(key, reason)
        log.info(
            "cannot connect to {host}:{port}: {why}",
            host=key[0],
            port=key[1],
            why=message,
        )
        requester.upstream_connect_failed(status, message)

    def handshake_failed(self, key: Key, requester: Any, reason: Failure) -> None:
        """
        The TLS handshake with C{key} failed (an untrusted or mismatched
        certificate, no common protocol version, a refused client
        certificate): a failed connection attempt, 502.
        """
        why = key[2].describe_failure(reason)
        if reason.check(ierror.TimeoutError):
            status, why = describe_connect_failure(key, reason)
            log.info("TLS handshake with {host}:{port}: {why}", host=key[0], port=key[1], why=why)
            requester.upstream_connect_failed(status, why)
            return
        log.warn(
            "TLS handshake with {host}:{port} failed: {why}",
            host=key[0],
            port=key[1],
            why=why,
            tls_event="handshake_failed",
        )
        requester.upstream_connect_failed(502, f"TLS handshake with {key[0]}:{key[1]} failed: {why}")

    def close_idle(self) -> None:
        """
        Close every idle connection (at shutdown).
        """
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.in_pool = False
                if conn.transport is not None:
                    conn.transport.loseConnection()
        self.idle.clear()
        self.lru.clear()


#: the status of a connection attempt that failed on the proxy's side (no
#: file descriptor left): never counted against the server, never retried
LOCAL_SHORTAGE = 503
_FD_ERRNOS = frozenset([errno.EMFILE, errno.ENFILE])


def describe_connect_failure(key: Key, reason: Failure) -> Tuple[int, str]:
    """
    The status (502 or 504) and message for a failed connection attempt;
    503 when the proxy itself is out of file descriptors (a shortage of
    ours, not the server's fault: see L{LOCAL_SHORTAGE}).
    """
    where = f"{key[0]}:{key[1]}"
    value = reason.value
    if getattr(value, "osError", None) in _FD_ERRNOS or getattr(value, "errno", None) in _FD_ERRNOS:
        return LOCAL_SHORTAGE, f"out of file descriptors connecting to {where}"
    if reason.check(ierror.TimeoutError, ierror.UserError):
        return 504, f"timed out connecting to {where}"
    if reason.check(ierror.DNSLookupError):
        return 502, f"cannot resolve {key[0]}"
    if reason.check(ierror.ConnectionRefusedError):
        return 502, f"connection refused by {where}"
    if reason.check(ierror.NoRouteError):
        return 502, f"no route to {where}"
    text = reason.getErrorMessage() or reason.type.__name__  # type: ignore[union-attr]
    return 502, f"cannot connect to {where}: {text}"


def set_no_delay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off (small heads must not wait for an ACK).
    """
    set_nodelay = getattr(transport, "setTcpNoDelay", None)
    if set_nodelay is not None:
        try:
            set_nodelay(True)
        except Exception:
            pass


def unmapped(host: str) -> str:
    """
    C{host} without an IPv4-mapped IPv6 prefix (C{::ffff:127.0.0.1} is
    C{127.0.0.1}), as a dual-stack listener sees IPv4 peers.
    """
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host
