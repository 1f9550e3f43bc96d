"""
Unit tests of the cache as the engine's origin stage
(L{twisted_proxy.cache.origin}) and of L{twisted_proxy.cache.shared}: a
listener with a L{CacheOrigin} whose client and upstream connections are
fake transports, whose clock is a C{MemoryReactorClock}, and whose store
is a real L{twisted_proxy.cache.store.Store} in a temporary folder.

The RFC decisions themselves are tested in C{tests.test_cache_rules}, the
bytes in C{tests.test_cache_store}: here is what a client and the origin
see through the engine.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.accesslog import NullAccessLog
from twisted_proxy.cache.origin import PUMP_TURN, CacheOrigin
from twisted_proxy.cache.shared import SharedCache
from twisted_proxy.engine import FrontFactory, ListenerContext
from twisted_proxy.engine.upstream import UpstreamOrigin
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.model import CacheConfig, ProxySettings
from twisted_proxy.reverse import ReverseRouter, Route
from twisted_proxy.upstream.pool import Pool, UpstreamProtocol

from .engine_harness import LOOPBACK, backend
from .helpers import Response, parse_response

#: the start of the fake clock: a plausible present (seconds since 1970)
NOW = 1_750_000_000.0
#: the primary key of C{/x} on the reverse listener (C{Host: app})
X = "http://app:80/x"


#: emptied cache folders for the next tests (see L{cache_folder})
_FREE_FOLDERS: List[str] = []


def cache_folder(case: SynchronousTestCase) -> str:
    """
    An empty cache folder for C{case}, given back (emptied) at its end.

    A store makes its 256 sub-folders at open, and making and removing
    them costs a second or more per hundred stores on some file systems:
    the folders (made with C{mktemp}) go from test to test, their files
    deleted.
    """
    path = _FREE_FOLDERS.pop() if _FREE_FOLDERS else os.path.abspath(case.mktemp())

    def give_back() -> None:
        for folder, _, files in os.walk(path):
            for name in files:
                os.unlink(os.path.join(folder, name))
        _FREE_FOLDERS.append(path)

    # registered first: runs after the cleanups that close the cache
    case.addCleanup(give_back)
    return path


def ok(
    body: bytes = b"hello",
    headers: Sequence[Tuple[bytes, bytes]] = (),
    status: bytes = b"200 OK",
) -> bytes:
    """
    A response with a C{Content-Length} body.
    """
    lines = [b"HTTP/1.1 " + status]
    lines.extend(n + b": " + v for n, v in headers)
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def not_modified(headers: Sequence[Tuple[bytes, bytes]] = ()) -> bytes:
    lines = [b"HTTP/1.1 304 Not Modified"]
    lines.extend(n + b": " + v for n, v in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def header_block(headers: Sequence[Tuple[bytes, bytes]]) -> bytes:
    return b"".join(n + b": " + v + b"\r\n" for n, v in headers)


class Recorder:
    """
    An access log that keeps its lines' fields.
    """

    enabled = True

    def __init__(self) -> None:
        self.lines: List[Tuple[Any, ...]] = []

    def log(self, *fields: Any) -> None:
        self.lines.append(fields)

    def cache_fields(self) -> List[str]:
        """
        The C{cache} field of each line (the last one).
        """
        return [line[11] if len(line) > 11 else "" for line in self.lines]


class Client:
    """
    A client connection to the listener (a StringTransport) whose
    responses are read in order.
    """

    def __init__(self, front: Any, transport: StringTransport) -> None:
        self.front = front
        self.transport = transport
        self.read = 0

    def send(self, data: bytes) -> None:
        self.front.dataReceived(data)

    def request(
        self,
        path: bytes = b"/x",
        headers: Sequence[Tuple[bytes, bytes]] = (),
        method: bytes = b"GET",
        host: bytes = b"app",
        body: bytes = b"",
    ) -> None:
        extra = list(headers)
        if body:
            extra.append((b"Content-Length", b"%d" % len(body)))
        self.send(
            method + b" " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            + header_block(extra) + b"\r\n" + body
        )

    def pending(self) -> bytes:
        """
        The bytes received and not read as responses yet.
        """
        return self.transport.value()[self.read :]

    def response(self, method: bytes = b"GET") -> Response:
        """
        The next whole response (the test fails if it has not come).
        """
        parsed = parse_response(self.pending(), method, False)
        if parsed is None:
            raise AssertionError(f"no whole response yet: {self.pending()[:300]!r}")
        response, used = parsed
        self.read += used
        return response

    def has_response(self, method: bytes = b"GET") -> bool:
        return parse_response(self.pending(), method, False) is not None

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def producer(self) -> Any:
        """
        The producer the listener registered with the client's transport
        (what a full write buffer pauses).
        """
        producer = self.transport.producer
        assert producer is not None
        return producer

    def leave(self) -> None:
        """
        The client goes away.
        """
        self.front.connectionLost(Failure(ierror.ConnectionLost()))


class Upstream:
    """
    One upstream connection the pool opened (completed by the test).
    """

    def __init__(self, proto: UpstreamProtocol, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport

    def request_head(self) -> bytes:
        return self.transport.value().split(b"\r\n\r\n", 1)[0]

    def header(self, name: bytes) -> Optional[bytes]:
        """
        The value of header C{name} of the request it got, or L{None}.
        """
        lname = name.lower()
        for line in self.request_head().split(b"\r\n")[1:]:
            n, _, v = line.partition(b":")
            if n.lower() == lname:
                return v.strip()
        return None

    def respond(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ierror.ConnectionLost()))


class CacheHarness:
    """
    A listener with a cache named C{edge}: reverse (one backend server,
    routes for C{/api/} with C{cache = false} and for everything else) or
    forward.

    The pool keeps no idle connection, so every request that goes
    upstream opens a connection of its own: L{attempts} counts them.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        kind: str = "reverse",
        **cache_options: Any,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.settings = ProxySettings(access_log="off")
        self.pool = Pool(self.clock, max_idle=0, connect_timeout=self.settings.connect_timeout)
        folder = cache_folder(case)
        self.cache = SharedCache(CacheConfig(name="edge", path=folder, **cache_options), self.clock)
        case.addCleanup(self.cache.close)
        self.cache.open()
        assert self.cache.store.entries == 0, f"{folder} is not empty"
        self.access_log = Recorder()
        if kind == "reverse":
            be = backend([5001], self.clock)
            api = Route(be, path="/api/")
            api.cache = False
            router: Any = ReverseRouter([api, Route(be)])
        else:
            router = ForwardRouter()
        self.origin = CacheOrigin(UpstreamOrigin(), self.cache, self.clock)
        null = NullAccessLog(self.clock)
        self.ctx = ListenerContext(
            "test",
            self.clock,
            self.settings,
            self.pool,
            null,
            router,
            (),
            LOOPBACK,
            kind=kind,
            allow_all=kind == "reverse",
            origin=self.origin,
        )
        self.ctx.access_log = self.access_log
        self.upstreams: List[Upstream] = []
        self.connected = 0

    def client(self, port: int = 40000) -> Client:
        front = FrontFactory(self.ctx).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        front.makeConnection(transport)
        return Client(front, transport)

    @property
    def attempts(self) -> int:
        """
        The upstream connections asked for so far.
        """
        return len(self.clock.tcpClients)

    def upstream(self) -> Upstream:
        """
        Complete the next connection attempt of the pool.
        """
        host, port, factory, _, _ = self.clock.tcpClients[self.connected]
        self.connected += 1
        proto: Any = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        upstream = Upstream(proto, transport)
        self.upstreams.append(upstream)
        return upstream

    def refuse(self) -> None:
        """
        Refuse the next connection attempt of the pool.
        """
        factory: Any = self.clock.tcpClients[self.connected][2]
        self.connected += 1
        factory.clientConnectionFailed(None, Failure(ierror.ConnectionRefusedError()))

    def fetch(
        self,
        response: bytes,
        path: bytes = b"/x",
        headers: Sequence[Tuple[bytes, bytes]] = (),
        method: bytes = b"GET",
        host: bytes = b"app",
    ) -> Response:
        """
        One request on a new client connection that goes upstream and gets
        C{response} there; the client's response.
        """
        client = self.client()
        before = self.attempts
        client.request(path, headers, method, host)
        assert self.attempts == before + 1, "the request did not go upstream"
        self.upstream().respond(response)
        self.clock.advance(0)
        return client.response(method)

    def get(
        self,
        path: bytes = b"/x",
        headers: Sequence[Tuple[bytes, bytes]] = (),
        method: bytes = b"GET",
        host: bytes = b"app",
        background: int = 0,
    ) -> Response:
        """
        One request on a new client connection that must be answered
        without going upstream for it (C{background}: the upstream
        connections it may start for others); the client's response.
        """
        client = self.client()
        before = self.attempts
        client.request(path, headers, method, host)
        self.clock.advance(0)
        assert self.attempts == before + background, "the request went upstream"
        return client.response(method)


def status_of(response: Response) -> bytes:
    return response.header(b"cache-status") or b""


class HitTests(SynchronousTestCase):
    """
    A stored response answers the next requests without the origin.
    """

    def test_miss_stored_then_hit(self) -> None:
        """
        A cacheable response is stored on the way to its client
        (C{fwd=uri-miss; stored}); the next request for its URL is a hit
        answered from the store with the same body, C{Age} and
        C{Cache-Status: edge; hit; ttl=N}, without any upstream
        connection, and the access log says miss then hit.
        """
        h = CacheHarness(self)
        first = h.fetch(ok(b"hello", [(b"Cache-Control", b"max-age=60")]))
        self.assertEqual(first.status, 200)
        self.assertEqual(first.body, b"hello")
        self.assertEqual(status_of(first), b"edge; fwd=uri-miss; stored")
        h.clock.advance(10)
        second = h.get()
        self.assertEqual(second.status, 200)
        self.assertEqual(second.body, b"hello")
        self.assertEqual(second.header(b"content-length"), b"5")
        self.assertEqual(second.header(b"age"), b"10")
        self.assertEqual(status_of(second), b"edge; hit; ttl=50")
        self.assertEqual(h.access_log.cache_fields(), ["miss", "hit"])
        self.assertEqual(h.access_log.lines[-1][8], "")  # no upstream
        self.assertEqual(h.cache.status()["hits"], 1)

    def test_chunked_response_stored_served_with_length(self) -> None:
        """
        A chunked response is stored whole; a hit gives its body with a
        C{Content-Length}.
        """
        h = CacheHarness(self)
        h.fetch(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        hit = h.get()
        self.assertEqual(hit.body, b"abcdefg")
        self.assertEqual(hit.header(b"content-length"), b"7")
        self.assertFalse(hit.chunked)

    def test_pipelined_hits_in_order(self) -> None:
        """
        Pipelined requests answered from the cache come back whole and in
        order on the one connection.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"one", [(b"Cache-Control", b"max-age=60")]), path=b"/1")
        h.fetch(ok(b"two", [(b"Cache-Control", b"max-age=60")]), path=b"/2")
        client = h.client()
        client.send(
            b"GET /1 HTTP/1.1\r\nHost: app\r\n\r\nGET /2 HTTP/1.1\r\nHost: app\r\n\r\n"
            b"GET /1 HTTP/1.1\r\nHost: app\r\n\r\n"
        )
        h.clock.advance(0)
        self.assertEqual([client.response().body for _ in range(3)], [b"one", b"two", b"one"])
        self.assertEqual(h.attempts, 2)

    def test_upstream_age_counts(self) -> None:
        """
        The C{Age} the origin sent counts in the stored response's age: the
        hit's C{Age} and ttl include it.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"aged", [(b"Cache-Control", b"max-age=60"), (b"Age", b"30")]))
        h.clock.advance(5)
        hit = h.get()
        self.assertEqual(hit.header_values(b"age"), [b"35"])
        self.assertEqual(status_of(hit), b"edge; hit; ttl=25")

    def test_expired_without_validator_fetched_again(self) -> None:
        """
        A stored response past its freshness without validators is fetched
        again unconditionally and the new one replaces it.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"old", [(b"Cache-Control", b"max-age=10")]))
        h.clock.advance(20)
        client = h.client()
        client.request()
        up = h.upstream()
        self.assertIsNone(up.header(b"if-none-match"))
        self.assertIsNone(up.header(b"if-modified-since"))
        up.respond(ok(b"new", [(b"Cache-Control", b"max-age=10")]))
        response = client.response()
        self.assertEqual(response.body, b"new")
        self.assertEqual(status_of(response), b"edge; fwd=stale; fwd-status=200; stored")
        self.assertEqual(h.get().body, b"new")


class NotStoredTests(SynchronousTestCase):
    """
    Responses a shared cache must not store are passed on, marked, and
    fetched again next time.
    """

    def assert_not_stored(self, headers: Sequence[Tuple[bytes, bytes]], detail: bytes) -> None:
        h = CacheHarness(self)
        for _ in range(2):
            response = h.fetch(ok(b"secret", headers))
            self.assertEqual(response.body, b"secret")
            self.assertEqual(status_of(response), b"edge; fwd=uri-miss; detail=" + detail)
        self.assertEqual(h.cache.store.entries, 0)
        self.assertEqual(h.access_log.cache_fields(), ["miss", "miss"])

    def test_no_store(self) -> None:
        """
        C{Cache-Control: no-store}: passed with C{detail=no-store}, never
        stored.
        """
        self.assert_not_stored([(b"Cache-Control", b"no-store, max-age=60")], b"no-store")

    def test_private(self) -> None:
        """
        C{Cache-Control: private}: passed with C{detail=private}, never
        stored.
        """
        self.assert_not_stored([(b"Cache-Control", b"private, max-age=60")], b"private")

    def test_set_cookie_without_public(self) -> None:
        """
        A C{Set-Cookie} without C{public}: passed with C{detail=set-cookie}
        (the cookie reaches its client), never stored.
        """
        self.assert_not_stored(
            [(b"Cache-Control", b"max-age=60"), (b"Set-Cookie", b"session=1")], b"set-cookie"
        )

    def test_set_cookie_with_public_stored(self) -> None:
        """
        A C{Set-Cookie} with C{public} is stored.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"shared", [(b"Cache-Control", b"public, max-age=60"), (b"Set-Cookie", b"a=1")]))
        self.assertEqual(h.get().body, b"shared")

    def test_vary_star(self) -> None:
        """
        C{Vary: *}: passed with C{detail=vary-star}, never stored.
        """
        self.assert_not_stored([(b"Cache-Control", b"max-age=60"), (b"Vary", b"*")], b"vary-star")

    def test_larger_than_max_object_size(self) -> None:
        """
        A response larger than C{max_object_size} is streamed to its client
        whole and not stored (C{detail=size}).
        """
        h = CacheHarness(self, max_object_size=10)
        body = b"z" * 100
        response = h.fetch(ok(body, [(b"Cache-Control", b"max-age=60")]))
        self.assertEqual(response.body, body)
        self.assertEqual(status_of(response), b"edge; fwd=uri-miss; detail=size")
        self.assertEqual(h.cache.store.entries, 0)

    def test_chunked_larger_than_max_object_size(self) -> None:
        """
        A chunked response that outgrows C{max_object_size} reaches its
        client whole and is not stored.
        """
        h = CacheHarness(self, max_object_size=10)
        response = h.fetch(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\nabcdefgh\r\n0\r\n\r\n"
        )
        self.assertEqual(response.body, b"12345678abcdefgh")
        self.assertEqual(h.cache.store.entries, 0)
        self.assertEqual(h.cache.fills, {})


class UnsafeMethodTests(SynchronousTestCase):
    """
    Requests the cache does not answer go straight upstream; unsafe ones
    that succeed invalidate what they change.
    """

    def test_post_bypasses_and_invalidates(self) -> None:
        """
        A POST goes upstream marked C{fwd=bypass} (access log C{bypass});
        when it succeeds, the stored GET of its URL and of a same-origin
        C{Location} are removed, while a C{Location} on another origin is
        left alone.
        """
        h = CacheHarness(self)
        fresh = [(b"Cache-Control", b"max-age=600")]
        h.fetch(ok(b"x", fresh), path=b"/x")
        h.fetch(ok(b"y", fresh), path=b"/y")
        h.fetch(ok(b"z", fresh), path=b"/z", host=b"other.test")
        h.fetch(ok(b"w", fresh), path=b"/w")
        client = h.client()
        client.request(b"/x", method=b"POST", body=b"data")
        up = h.upstream()
        self.assertTrue(up.transport.value().endswith(b"\r\n\r\ndata"))
        up.respond(ok(b"done", [(b"Location", b"/y")], status=b"201 Created"))
        response = client.response()
        self.assertEqual(response.status, 201)
        self.assertEqual(status_of(response), b"edge; fwd=bypass")
        self.assertEqual(h.access_log.cache_fields()[-1], "bypass")
        self.assertIsNone(h.cache.lookup(X))
        self.assertIsNone(h.cache.lookup("http://app:80/y"))
        self.assertIsNotNone(h.cache.lookup("http://app:80/w"))
        # another origin's Location
        client.request(b"/w", method=b"PUT", body=b"data")
        h.upstream().respond(
            ok(b"", [(b"Location", b"http://other.test/z")], status=b"204 No Content")
        )
        self.assertIsNone(h.cache.lookup("http://app:80/w"))
        self.assertIsNotNone(h.cache.lookup("http://other.test:80/z"))

    def test_failed_post_invalidates_nothing(self) -> None:
        """
        A POST answered with an error leaves the stored GET of its URL.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"x", [(b"Cache-Control", b"max-age=600")]))
        response = h.fetch(ok(b"no", status=b"500 Oops"), method=b"POST")
        self.assertEqual(status_of(response), b"edge; fwd=bypass")
        self.assertEqual(h.get().body, b"x")

    def test_route_without_cache(self) -> None:
        """
        A route with C{cache = false} on a listener with a cache goes
        upstream every time, marked C{fwd=bypass}, nothing stored.
        """
        h = CacheHarness(self)
        for _ in range(2):
            response = h.fetch(ok(b"api", [(b"Cache-Control", b"max-age=600")]), path=b"/api/v1")
            self.assertEqual(status_of(response), b"edge; fwd=bypass")
        self.assertEqual(h.cache.store.entries, 0)
        self.assertEqual(h.access_log.cache_fields(), ["bypass", "bypass"])

    def test_domains_and_bypass_domains(self) -> None:
        """
        Only hosts in C{domains} are cached; a host in C{bypass_domains}
        (even inside C{domains}) and a host outside C{domains} go upstream
        marked C{fwd=bypass}.
        """
        h = CacheHarness(self, domains=("cached.test",), bypass_domains=("private.cached.test",))
        fresh = [(b"Cache-Control", b"max-age=600")]
        stored = h.fetch(ok(b"a", fresh), host=b"www.cached.test")
        self.assertEqual(status_of(stored), b"edge; fwd=uri-miss; stored")
        self.assertEqual(h.get(host=b"www.cached.test").body, b"a")
        for host in (b"other.test", b"private.cached.test", b"x.private.cached.test"):
            for _ in range(2):
                response = h.fetch(ok(b"b", fresh), host=host)
                self.assertEqual(status_of(response), b"edge; fwd=bypass", host)
        self.assertEqual(h.cache.store.entries, 1)

    def test_authorization_never_answered_from_cache(self) -> None:
        """
        A request with C{Authorization} is never answered from the cache:
        it goes upstream marked C{fwd=bypass} even with a fresh stored
        response for its URL, and the access log says C{bypass} as the
        C{Cache-Status} does.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"shared", [(b"Cache-Control", b"max-age=600")]))
        response = h.fetch(
            ok(b"for you", [(b"Cache-Control", b"max-age=600")]),
            headers=[(b"Authorization", b"Basic dTpw")],
        )
        self.assertEqual(response.body, b"for you")
        self.assertTrue(status_of(response).startswith(b"edge; fwd=bypass"), status_of(response))
        self.assertEqual(h.get().body, b"shared")
        self.assertEqual(h.access_log.cache_fields(), ["miss", "bypass", "hit"])


    def test_request_with_body_bypasses(self) -> None:
        """
        A GET with a body goes upstream marked C{fwd=bypass} and its
        response is not stored.
        """
        h = CacheHarness(self)
        client = h.client()
        client.request(body=b"query")
        h.upstream().respond(ok(b"r", [(b"Cache-Control", b"max-age=600")]))
        self.assertEqual(status_of(client.response()), b"edge; fwd=bypass")
        self.assertEqual(h.cache.store.entries, 0)


class ServedFromStoreTests(SynchronousTestCase):
    """
    HEAD, conditional and range requests answered from a stored GET.
    """

    def setUp(self) -> None:
        self.h = CacheHarness(self)
        self.h.fetch(ok(b"0123456789", [(b"Cache-Control", b"max-age=600"), (b"ETag", b'"v1"')]))

    def test_head(self) -> None:
        """
        A HEAD is answered from the stored GET: its headers, its
        C{Content-Length}, no body (the next response on the connection
        follows at once).
        """
        client = self.h.client()
        client.send(b"HEAD /x HTTP/1.1\r\nHost: app\r\n\r\nGET /x HTTP/1.1\r\nHost: app\r\n\r\n")
        self.h.clock.advance(0)
        head = client.response(b"HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header(b"content-length"), b"10")
        self.assertEqual(head.header(b"etag"), b'"v1"')
        self.assertEqual(status_of(head), b"edge; hit; ttl=600")
        get = client.response()
        self.assertEqual(get.body, b"0123456789")
        self.assertEqual(self.h.attempts, 1)

    def test_if_none_match(self) -> None:
        """
        A client's C{If-None-Match} naming the stored ETag gets 304 from
        the cache (no body, the validators kept); another ETag gets the
        whole response.
        """
        response = self.h.get(headers=[(b"If-None-Match", b'"v0", "v1"')])
        self.assertEqual(response.status, 304)
        self.assertEqual(response.body, b"")
        self.assertEqual(response.header(b"etag"), b'"v1"')
        self.assertIsNone(response.header(b"content-length"))
        self.assertEqual(status_of(response), b"edge; hit; ttl=600")
        other = self.h.get(headers=[(b"If-None-Match", b'"v2"')])
        self.assertEqual(other.status, 200)
        self.assertEqual(other.body, b"0123456789")

    def test_range(self) -> None:
        """
        A satisfiable C{Range} gets 206 with C{Content-Range} and the
        bytes asked for.
        """
        response = self.h.get(headers=[(b"Range", b"bytes=2-5")])
        self.assertEqual(response.status, 206)
        self.assertEqual(response.header(b"content-range"), b"bytes 2-5/10")
        self.assertEqual(response.header(b"content-length"), b"4")
        self.assertEqual(response.body, b"2345")
        suffix = self.h.get(headers=[(b"Range", b"bytes=-3")])
        self.assertEqual(suffix.body, b"789")

    def test_range_unsatisfiable(self) -> None:
        """
        A C{Range} beyond the stored body gets 416 with
        C{Content-Range: bytes */LENGTH} and no body.
        """
        response = self.h.get(headers=[(b"Range", b"bytes=50-60")])
        self.assertEqual(response.status, 416)
        self.assertEqual(response.header(b"content-range"), b"bytes */10")
        self.assertEqual(response.body, b"")

    def test_range_miss_not_stored(self) -> None:
        """
        A C{Range} request that misses goes upstream with its C{Range}; the
        206 it gets is passed, not stored.
        """
        client = self.h.client()
        client.request(b"/other", [(b"Range", b"bytes=0-1")])
        up = self.h.upstream()
        self.assertEqual(up.header(b"range"), b"bytes=0-1")
        up.respond(
            ok(
                b"ab",
                [(b"Cache-Control", b"max-age=60"), (b"Content-Range", b"bytes 0-1/4")],
                b"206 Partial Content",
            )
        )
        response = client.response()
        self.assertEqual(response.status, 206)
        self.assertIsNone(self.h.cache.lookup("http://app:80/other"))


class RequestDirectiveTests(SynchronousTestCase):
    """
    The client's own C{Cache-Control}.
    """

    def test_only_if_cached_nothing_stored(self) -> None:
        """
        C{only-if-cached} with nothing stored: 504, no upstream attempt.
        """
        h = CacheHarness(self)
        response = h.get(headers=[(b"Cache-Control", b"only-if-cached")])
        self.assertEqual(response.status, 504)
        self.assertEqual(status_of(response), b"edge; fwd=miss; detail=only-if-cached")
        self.assertEqual(h.access_log.cache_fields(), ["miss"])

    def test_only_if_cached_stored(self) -> None:
        """
        C{only-if-cached} with a fresh stored response: served from the
        cache.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"here", [(b"Cache-Control", b"max-age=60")]))
        response = h.get(headers=[(b"Cache-Control", b"only-if-cached")])
        self.assertEqual(response.body, b"here")

    def test_no_cache_goes_upstream(self) -> None:
        """
        A request's C{no-cache} goes upstream even with a fresh stored
        response (unconditional without validators) and the new response
        replaces it.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"old", [(b"Cache-Control", b"max-age=600")]))
        response = h.fetch(
            ok(b"new", [(b"Cache-Control", b"max-age=600")]),
            headers=[(b"Cache-Control", b"no-cache")],
        )
        self.assertEqual(response.body, b"new")
        self.assertEqual(status_of(response), b"edge; fwd=request; fwd-status=200; stored")
        self.assertEqual(h.get().body, b"new")

    def test_pragma_no_cache_goes_upstream(self) -> None:
        """
        C{Pragma: no-cache} (without C{Cache-Control}) goes upstream too.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"old", [(b"Cache-Control", b"max-age=600")]))
        response = h.fetch(
            ok(b"new", [(b"Cache-Control", b"max-age=600")]), headers=[(b"Pragma", b"no-cache")]
        )
        self.assertEqual(response.body, b"new")

    def test_no_cache_revalidated_is_fwd_request(self) -> None:
        """
        A request's C{no-cache} on a fresh entry with an ETag revalidates
        it (C{If-None-Match}); the 304 is reported as C{fwd=request} (RFC
        9211: a fresh response the request did not allow), not as stale.
        """
        h = CacheHarness(self)
        h.fetch(ok(b"body", [(b"Cache-Control", b"max-age=600"), (b"ETag", b'"e"')]))
        client = h.client()
        client.request(headers=[(b"Cache-Control", b"no-cache")])
        up = h.upstream()
        self.assertEqual(up.header(b"if-none-match"), b'"e"')
        up.respond(not_modified([(b"ETag", b'"e"')]))
        h.clock.advance(0)
        response = client.response()
        self.assertEqual(response.body, b"body")
        self.assertEqual(status_of(response), b"edge; fwd=request; fwd-status=304")



class RevalidationTests(SynchronousTestCase):
    """
    Stale entries: conditional requests, 304s, errors.
    """

    def stale_entry(self, h: CacheHarness, cache_control: bytes, etag: bool = True) -> None:
        headers = [(b"Cache-Control", cache_control)]
        if etag:
            headers.append((b"ETag", b'"v1"'))
        h.fetch(ok(b"stored body", headers))
        h.clock.advance(100)

    def test_304_refreshes(self) -> None:
        """
        A stale entry with an ETag is revalidated with C{If-None-Match};
        the 304 refreshes it: the client gets the stored body with the
        304's new fields (C{fwd=stale; fwd-status=304}, access log
        C{revalidated}) and the next request is a hit again.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        client = h.client()
        client.request()
        up = h.upstream()
        self.assertEqual(up.header(b"if-none-match"), b'"v1"')
        up.respond(
            not_modified([(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=30"), (b"X-New", b"1")])
        )
        h.clock.advance(0)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"stored body")
        self.assertEqual(response.header(b"x-new"), b"1")
        self.assertEqual(response.header(b"cache-control"), b"max-age=30")
        self.assertEqual(status_of(response), b"edge; fwd=stale; fwd-status=304")
        self.assertEqual(h.access_log.cache_fields()[-1], "revalidated")
        h.clock.advance(5)
        hit = h.get()
        self.assertEqual(hit.body, b"stored body")
        self.assertEqual(status_of(hit), b"edge; hit; ttl=25")

    def test_revalidation_of_conditional_request(self) -> None:
        """
        A stale entry asked for with the client's own C{If-None-Match}: the
        cache's conditional request goes upstream with the stored
        validator, and the refreshed entry answers the client's condition
        with 304.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        client = h.client()
        client.request(headers=[(b"If-None-Match", b'"v1"')])
        up = h.upstream()
        self.assertEqual(up.header(b"if-none-match"), b'"v1"')
        up.respond(not_modified([(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=30")]))
        h.clock.advance(0)
        self.assertEqual(client.response().status, 304)

    def test_purged_during_revalidation(self) -> None:
        """
        An entry purged while its revalidation is in flight: the origin's
        304 cannot refresh it, and the client still gets a whole 200 (the
        stored body, or the origin's asked for again), not an error.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        client = h.client()
        client.request()
        up = h.upstream()
        self.assertEqual(h.cache.purge_url("http://app/x"), 1)
        up.respond(not_modified([(b"ETag", b'"v1"')]))
        h.clock.advance(0)
        if h.attempts > h.connected:
            h.upstream().respond(ok(b"fetched again", [(b"Cache-Control", b"max-age=10")]))
            h.clock.advance(0)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertIn(response.body, (b"stored body", b"fetched again"))

    def test_revalidation_gets_new_response(self) -> None:
        """
        A revalidation answered with a new 200 stores it and passes it on.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        response = h.fetch(ok(b"changed", [(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v2"')]))
        self.assertEqual(response.body, b"changed")
        self.assertEqual(status_of(response), b"edge; fwd=stale; fwd-status=200; stored")
        self.assertEqual(h.get().body, b"changed")

    def test_stale_if_error_on_503(self) -> None:
        """
        A stale entry whose response allows C{stale-if-error} answers the
        client when the origin answers 503: the stored body, marked
        C{fwd=stale; fwd-status=503; detail=stale-if-error}, access log
        C{stale}.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10, stale-if-error=600")
        response = h.fetch(ok(b"down", status=b"503 Unavailable"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"stored body")
        self.assertEqual(
            status_of(response), b"edge; fwd=stale; fwd-status=503; detail=stale-if-error"
        )
        self.assertEqual(h.access_log.cache_fields()[-1], "stale")

    def test_request_stale_if_error(self) -> None:
        """
        The request's own C{stale-if-error} allows the stale response on a
        503 too.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        response = h.fetch(
            ok(b"down", status=b"503 Unavailable"),
            headers=[(b"Cache-Control", b"stale-if-error=600")],
        )
        self.assertEqual(response.body, b"stored body")

    def test_503_without_stale_if_error(self) -> None:
        """
        Without C{stale-if-error}, the origin's 503 reaches the client and
        the stale entry stays for a later revalidation.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        response = h.fetch(ok(b"down", status=b"503 Unavailable"))
        self.assertEqual(response.status, 503)
        self.assertEqual(response.body, b"down")
        self.assertIsNotNone(h.cache.lookup(X))

    def test_unreachable_origin_serves_stale(self) -> None:
        """
        A stale entry without C{stale-if-error} is served when the origin
        cannot be reached at all (Traffic Server's rule), marked
        C{fwd=stale; detail=stale-if-error}.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        client = h.client()
        client.request()
        h.refuse()
        h.clock.advance(0)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"stored body")
        self.assertEqual(status_of(response), b"edge; fwd=stale; detail=stale-if-error")
        self.assertEqual(h.access_log.cache_fields()[-1], "stale")

    def test_must_revalidate_unreachable_origin(self) -> None:
        """
        C{must-revalidate} forbids serving it stale: an unreachable origin
        is a 502 to the client.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10, must-revalidate")
        client = h.client()
        client.request()
        h.refuse()
        h.clock.advance(0)
        self.assertEqual(client.response().status, 502)

    def test_must_revalidate_503_with_stale_if_error(self) -> None:
        """
        C{must-revalidate} wins over C{stale-if-error}: the 503 reaches the
        client.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10, must-revalidate, stale-if-error=600")
        response = h.fetch(ok(b"down", status=b"503 Unavailable"))
        self.assertEqual(response.status, 503)

    def test_only_if_cached_stale(self) -> None:
        """
        C{only-if-cached} with only a stale entry that needs validation:
        504, nothing sent upstream.
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        self.assertEqual(h.get(headers=[(b"Cache-Control", b"only-if-cached")]).status, 504)

    def test_max_stale(self) -> None:
        """
        The request's C{max-stale} takes the stale entry without going
        upstream (access log C{stale}).
        """
        h = CacheHarness(self)
        self.stale_entry(h, b"max-age=10")
        response = h.get(headers=[(b"Cache-Control", b"max-stale=1000")])
        self.assertEqual(response.body, b"stored body")
        self.assertEqual(h.access_log.cache_fields()[-1], "stale")


class StaleWhileRevalidateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = CacheHarness(self)
        self.h.fetch(
            ok(
                b"v1 body",
                [(b"Cache-Control", b"max-age=10, stale-while-revalidate=600"), (b"ETag", b'"v1"')],
            )
        )
        self.h.clock.advance(20)

    def test_stale_served_one_background_revalidation(self) -> None:
        """
        Within C{stale-while-revalidate}, the stale response is served at
        once (C{detail=stale-while-revalidate}, access log C{stale}) and
        one background conditional request refreshes the entry, however
        many clients come meanwhile; its own access-log line says
        C{revalidated}.
        """
        h = self.h
        before = h.attempts
        first = h.client()
        first.request()
        h.clock.advance(0)
        response = first.response()
        self.assertEqual(response.body, b"v1 body")
        self.assertEqual(
            status_of(response), b"edge; hit; ttl=-10; detail=stale-while-revalidate"
        )
        self.assertEqual(h.attempts, before + 1)
        second = h.get()
        self.assertEqual(second.body, b"v1 body")
        self.assertEqual(h.attempts, before + 1)
        up = h.upstream()
        self.assertEqual(up.header(b"if-none-match"), b'"v1"')
        up.respond(not_modified([(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=100")]))
        h.clock.advance(0)
        self.assertEqual(h.cache.fills, {})
        hit = h.get()
        self.assertEqual(status_of(hit), b"edge; hit; ttl=100")
        self.assertEqual(hit.body, b"v1 body")
        background = [line for line in h.access_log.lines if line[10] == "stale-while-revalidate"]
        self.assertEqual(len(background), 1)
        self.assertEqual(background[0][11], "revalidated")
        self.assertEqual(h.access_log.cache_fields().count("stale"), 2)

    def test_background_new_response_stored(self) -> None:
        """
        A background revalidation answered with a new 200 stores it for
        the next requests.
        """
        h = self.h
        self.assertEqual(h.get(background=1).body, b"v1 body")
        h.upstream().respond(
            ok(b"v2 body", [(b"Cache-Control", b"max-age=100"), (b"ETag", b'"v2"')])
        )
        h.clock.advance(0)
        self.assertEqual(h.get().body, b"v2 body")

    def test_background_revalidation_without_answer(self) -> None:
        """
        A background revalidation the origin never answers gives up after
        C{first_byte_timeout} (the fill is forgotten); the next stale
        request starts another one.
        """
        h = self.h
        h.get(background=1)
        h.upstream()
        h.clock.advance(h.settings.first_byte_timeout + 1)
        self.assertEqual(h.cache.fills, {})
        self.assertEqual(h.get(background=1).body, b"v1 body")
        h.upstream().respond(not_modified([(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=100")]))
        h.clock.advance(0)
        self.assertEqual(status_of(h.get()), b"edge; hit; ttl=100")

    def test_waiter_on_background_revalidation(self) -> None:
        """
        A request that cannot take the stale response (its C{max-age=0})
        waits on the background revalidation running for its key and is
        answered from the entry that revalidation's 304 refreshed, without
        a request of its own.
        """
        h = self.h
        self.assertEqual(h.get(background=1).body, b"v1 body")
        waiting = h.client()
        waiting.request(headers=[(b"Cache-Control", b"max-age=0")])
        h.clock.advance(0)
        self.assertEqual(h.attempts, 2, "the waiter did not collapse on the revalidation")
        h.upstream().respond(not_modified([(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=100")]))
        h.clock.advance(0)
        self.assertEqual(h.attempts, 2, "the waiter went upstream by itself after the 304")
        self.assertEqual(waiting.response().body, b"v1 body")


class CollapsingTests(SynchronousTestCase):
    """
    Misses for one key while a fill runs wait on it.
    """

    def test_two_misses_one_upstream_request(self) -> None:
        """
        Two misses for one key before the first fetch's head came make one
        upstream request; both clients get the whole body, the second
        marked C{collapsed} (and C{miss} in the access log).
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        self.assertEqual(h.attempts, 1)
        self.assertEqual(h.cache.status()["collapsed"], 1)
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\n01234")
        h.clock.advance(0)
        self.assertFalse(first.has_response())
        up.respond(b"56789")
        h.clock.advance(0)
        one, two = first.response(), second.response()
        self.assertEqual(one.body, b"0123456789")
        self.assertEqual(two.body, b"0123456789")
        self.assertEqual(status_of(one), b"edge; fwd=uri-miss; stored")
        self.assertEqual(status_of(two), b"edge; fwd=uri-miss; collapsed")
        self.assertEqual(h.attempts, 1)
        self.assertEqual(sorted(h.access_log.cache_fields()), ["miss", "miss"])
        self.assertEqual(h.get().body, b"0123456789")

    def test_collapsed_chunked(self) -> None:
        """
        A collapsed miss of a chunked response (length unknown while it is
        written) gets the whole body, chunked.
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        up = h.upstream()
        up.respond(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n"
        )
        h.clock.advance(0)
        up.respond(b"2\r\nde\r\n0\r\n\r\n")
        h.clock.advance(0)
        self.assertEqual(first.response().body, b"abcde")
        two = second.response()
        self.assertEqual(two.body, b"abcde")
        self.assertTrue(two.chunked)

    def test_not_storable_waiters_go_alone(self) -> None:
        """
        When the response turns out not storable, each waiting miss goes
        upstream by itself and gets its own response.
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        h.upstream().respond(ok(b"mine", [(b"Cache-Control", b"private")]))
        self.assertEqual(h.attempts, 2)
        h.upstream().respond(ok(b"yours", [(b"Cache-Control", b"private")]))
        self.assertEqual(first.response().body, b"mine")
        two = second.response()
        self.assertEqual(two.body, b"yours")
        self.assertEqual(status_of(two), b"edge; fwd=uri-miss")

    def test_head_waiter_served_from_get_fill(self) -> None:
        """
        A HEAD miss collapsed on a GET's fill gets the head of the response
        being stored, without a body and without its own upstream request.
        """
        h = CacheHarness(self)
        get, head = h.client(), h.client(40001)
        get.request()
        head.request(method=b"HEAD")
        h.upstream().respond(ok(b"hello", [(b"Cache-Control", b"max-age=60")]))
        h.clock.advance(0)
        self.assertEqual(get.response().body, b"hello")
        response = head.response(b"HEAD")
        self.assertEqual(response.header(b"content-length"), b"5")
        self.assertEqual(status_of(response), b"edge; fwd=uri-miss; collapsed")
        self.assertEqual(h.attempts, 1)

    def test_get_waiting_on_head_fill_is_stored(self) -> None:
        """
        A GET miss that arrives while a HEAD miss of its URL is upstream
        still ends with its response stored: the next GET is a hit.
        """
        h = CacheHarness(self)
        head, get = h.client(), h.client(40001)
        head.request(method=b"HEAD")
        get.request()
        # the head of a HEAD response: the length, no body
        h.upstream().respond(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\n"
        )
        h.clock.advance(0)
        self.assertEqual(head.response(b"HEAD").status, 200)
        if h.attempts > h.connected:
            h.upstream().respond(ok(b"hello", [(b"Cache-Control", b"max-age=60")]))
            h.clock.advance(0)
        self.assertEqual(get.response().body, b"hello")
        self.assertEqual(h.cache.store.entries, 1, "the GET's response was not stored")

    def test_lock_timeout(self) -> None:
        """
        A collapsed miss that waits longer than C{lock_timeout} for the
        head goes upstream by itself (C{detail=lock-timeout}); the first
        fetch still stores its response.
        """
        h = CacheHarness(self, lock_timeout=2.0)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        h.clock.advance(1.9)
        self.assertEqual(h.attempts, 1)
        h.clock.advance(0.2)
        self.assertEqual(h.attempts, 2)
        slow = h.upstream()
        own = h.upstream()
        own.respond(ok(b"alone", [(b"Cache-Control", b"max-age=60")]))
        two = second.response()
        self.assertEqual(two.body, b"alone")
        self.assertEqual(status_of(two), b"edge; fwd=uri-miss; detail=lock-timeout")
        slow.respond(ok(b"first", [(b"Cache-Control", b"max-age=60")]))
        self.assertEqual(first.response().body, b"first")
        self.assertEqual(h.get().body, b"first")

    def test_waiter_leaves(self) -> None:
        """
        A waiting miss whose client leaves is forgotten: its lock timer is
        cancelled and the fill goes on for its own client.
        """
        h = CacheHarness(self, lock_timeout=2.0)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        second.leave()
        h.clock.advance(5)
        self.assertEqual(h.attempts, 1)
        h.upstream().respond(ok(b"first", [(b"Cache-Control", b"max-age=60")]))
        self.assertEqual(first.response().body, b"first")

    def test_fill_client_leaves_before_head(self) -> None:
        """
        When the fill's own client leaves before the head, the waiting
        misses go upstream by themselves at once.
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        up = h.upstream()
        first.leave()
        self.assertTrue(up.transport.disconnecting)
        self.assertEqual(h.attempts, 2)
        h.upstream().respond(ok(b"second", [(b"Cache-Control", b"max-age=60")]))
        self.assertEqual(second.response().body, b"second")

    def test_fill_fails_mid_body(self) -> None:
        """
        An upstream connection lost mid-body: the fill's client and the
        collapsed reader both see their connection closed (a short body,
        never a complete-looking one) and nothing is published; the next
        request goes upstream again.
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\n0123")
        h.clock.advance(0)
        up.lose()
        h.clock.advance(0)
        self.assertTrue(first.closed)
        self.assertTrue(second.closed)
        self.assertFalse(first.has_response())
        self.assertFalse(second.has_response())
        self.assertEqual(h.cache.store.entries, 0)
        self.assertEqual(h.cache.fills, {})
        again = h.fetch(ok(b"again", [(b"Cache-Control", b"max-age=60")]))
        self.assertEqual(status_of(again), b"edge; fwd=uri-miss; stored")

    def test_first_client_leaves_mid_body(self) -> None:
        """
        The fill's own client leaving mid-body aborts the fill: the
        upstream connection is closed, a collapsed reader is cut short, and
        nothing is published.
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\n0123")
        h.clock.advance(0)
        first.leave()
        h.clock.advance(0)
        self.assertTrue(up.transport.disconnecting)
        self.assertTrue(second.closed)
        self.assertFalse(second.has_response())
        self.assertEqual(h.cache.store.entries, 0)
        self.assertEqual(h.cache.fills, {})

    def test_waiter_of_oversized_chunked_response(self) -> None:
        """
        A collapsed reader of a chunked response that turns out larger than
        C{max_object_size} (the store gives it up mid-body) still gets the
        whole body, as the fill's own client does.
        """
        h = CacheHarness(self, max_object_size=10)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        up = h.upstream()
        up.respond(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n"
        )
        h.clock.advance(0)
        up.respond(b"8\r\nabcdefgh\r\n0\r\n\r\n")
        h.clock.advance(0)
        self.assertEqual(first.response().body, b"12345678abcdefgh")
        self.assertFalse(second.closed, "the collapsed reader was cut short")
        self.assertEqual(second.response().body, b"12345678abcdefgh")


    def test_waiter_with_other_variant(self) -> None:
        """
        A miss collapsed on a fill whose response turns out to vary on a
        header it sent differently is not given the other variant.
        """
        h = CacheHarness(self)
        gzip, plain = h.client(), h.client(40001)
        gzip.request(headers=[(b"Accept-Encoding", b"gzip")])
        plain.request(headers=[(b"Accept-Encoding", b"identity")])
        h.upstream().respond(
            ok(
                b"GZIPPED",
                [
                    (b"Cache-Control", b"max-age=60"),
                    (b"Vary", b"Accept-Encoding"),
                    (b"Content-Encoding", b"gzip"),
                ],
            )
        )
        h.clock.advance(0)
        self.assertEqual(gzip.response().body, b"GZIPPED")
        if h.attempts == 2:
            h.upstream().respond(
                ok(b"plain", [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept-Encoding")])
            )
            h.clock.advance(0)
        response = plain.response()
        self.assertIsNone(response.header(b"content-encoding"))
        self.assertEqual(response.body, b"plain")



class VaryTests(SynchronousTestCase):
    def test_one_entry_per_variant(self) -> None:
        """
        A response with C{Vary} is stored once per variant: another value
        of the varied header is a C{vary-miss} stored beside it; each
        value then hits its own variant, whatever the header's spacing,
        name case or place among the other headers.
        """
        h = CacheHarness(self)
        vary = [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept-Encoding, Accept-Language")]
        first = h.fetch(
            ok(b"gzip-en", vary),
            headers=[(b"Accept-Encoding", b"gzip, br"), (b"Accept-Language", b"en")],
        )
        self.assertEqual(status_of(first), b"edge; fwd=uri-miss; stored")
        br_en = [(b"Accept-Encoding", b"br"), (b"Accept-Language", b"en")]
        other = h.fetch(ok(b"br-en", vary), headers=br_en)
        self.assertEqual(status_of(other), b"edge; fwd=vary-miss; stored")
        self.assertEqual(h.cache.store.entries, 2)
        same = h.get(headers=[(b"accept-language", b"en"), (b"ACCEPT-ENCODING", b"gzip,   br")])
        self.assertEqual(same.body, b"gzip-en")
        self.assertEqual(status_of(same), b"edge; hit; ttl=60")
        split = h.get(
            headers=[
                (b"Accept-Encoding", b"gzip"),
                (b"Accept-Language", b"en"),
                (b"Accept-Encoding", b"br"),
            ]
        )
        self.assertEqual(split.body, b"gzip-en")
        self.assertEqual(h.get(headers=br_en).body, b"br-en")
        missing = h.fetch(ok(b"none", vary))
        self.assertEqual(status_of(missing), b"edge; fwd=vary-miss; stored")
        self.assertEqual(h.cache.store.entries, 3)

    def test_purge_url_removes_every_variant(self) -> None:
        """
        Purging a URL removes all its variants.
        """
        h = CacheHarness(self)
        vary = [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept-Language")]
        h.fetch(ok(b"en", vary), headers=[(b"Accept-Language", b"en")])
        h.fetch(ok(b"fr", vary), headers=[(b"Accept-Language", b"fr")])
        self.assertEqual(h.cache.purge_url("http://app/x"), 2)
        self.assertEqual(h.cache.store.entries, 0)


class PumpTests(SynchronousTestCase):
    def test_slow_client_pauses_pump(self) -> None:
        """
        A large stored body goes out at most L{PUMP_TURN} bytes per reactor
        turn; while the client's transport has paused its producer (a full
        write buffer) no more is read from the store, and once it resumes
        the rest follows, byte-exact.
        """
        h = CacheHarness(self)
        body = bytes(range(256)) * (4 * PUMP_TURN // 256)
        h.fetch(ok(body, [(b"Cache-Control", b"max-age=60")]))
        client = h.client()
        client.request()
        first_turn = len(client.pending())
        self.assertTrue(PUMP_TURN <= first_turn < PUMP_TURN + 65536 + 1000)
        producer = client.producer
        self.assertIs(producer, client.front.relay)
        producer.pauseProducing()
        for _ in range(5):
            h.clock.advance(0)
        self.assertEqual(len(client.pending()), first_turn)
        producer.resumeProducing()
        h.clock.advance(0)
        self.assertGreater(len(client.pending()), first_turn)
        for _ in range(10):
            h.clock.advance(0)
        response = client.response()
        self.assertEqual(response.body, body)
        self.assertIsNone(client.front.relay.gate)
        self.assertFalse(client.closed)

    def test_slow_client_of_a_miss_pauses_upstream(self) -> None:
        """
        While the client of a miss cannot take more, the upstream
        connection's reading is paused (the fill goes at its client's
        pace), and resumed with it.
        """
        h = CacheHarness(self)
        client = h.client()
        client.request()
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 6\r\n\r\nabc")
        client.producer.pauseProducing()
        self.assertEqual(up.transport.producerState, "paused")
        client.producer.resumeProducing()
        self.assertEqual(up.transport.producerState, "producing")
        up.respond(b"def")
        self.assertEqual(client.response().body, b"abcdef")
        self.assertEqual(h.get().body, b"abcdef")

    def test_slow_collapsed_reader_does_not_hold_the_fill(self) -> None:
        """
        A collapsed reader that cannot take more does not slow the fill:
        the response is stored and its own client served; the reader gets
        the whole body once it resumes.
        """
        h = CacheHarness(self)
        first, second = h.client(), h.client(40001)
        first.request()
        second.request()
        up = h.upstream()
        up.respond(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 6\r\n\r\nabc")
        h.clock.advance(0)
        second.producer.pauseProducing()
        self.assertEqual(up.transport.producerState, "producing")
        up.respond(b"def")
        h.clock.advance(0)
        self.assertEqual(first.response().body, b"abcdef")
        self.assertIsNotNone(h.cache.lookup(X))
        self.assertFalse(second.has_response())
        second.producer.resumeProducing()
        h.clock.advance(0)
        self.assertEqual(second.response().body, b"abcdef")

    def test_client_leaves_while_paused(self) -> None:
        """
        A client that leaves while its hit is paused ends the pump: no
        more turns are scheduled and the entry stays.
        """
        h = CacheHarness(self)
        body = b"p" * (3 * PUMP_TURN)
        h.fetch(ok(body, [(b"Cache-Control", b"max-age=60")]))
        client = h.client()
        client.request()
        client.producer.pauseProducing()
        client.leave()
        h.clock.advance(0)
        calls: List[Any] = list(h.clock.getDelayedCalls())
        pumps = [c for c in calls if type(getattr(c.func, "__self__", None)).__name__ == "Pump"]
        self.assertEqual(pumps, [])
        self.assertEqual(h.get().body, body)


class SurrogateControlTests(SynchronousTestCase):
    """
    C{Surrogate-Control} on a reverse listener (the cache is the surrogate).
    """

    def test_max_age_overrides_cache_control(self) -> None:
        """
        C{Surrogate-Control: max-age} gives the stored freshness instead of
        C{Cache-Control} (which the client still sees), and the field is
        not passed on, neither on the miss nor on a hit.
        """
        h = CacheHarness(self)
        miss = h.fetch(
            ok(b"s", [(b"Cache-Control", b"max-age=5"), (b"Surrogate-Control", b"max-age=300")])
        )
        self.assertIsNone(miss.header(b"surrogate-control"))
        self.assertEqual(miss.header(b"cache-control"), b"max-age=5")
        h.clock.advance(100)
        hit = h.get()
        self.assertEqual(hit.body, b"s")
        self.assertEqual(status_of(hit), b"edge; hit; ttl=200")
        self.assertIsNone(hit.header(b"surrogate-control"))
        self.assertEqual(hit.header(b"cache-control"), b"max-age=5")

    def test_max_age_overrides_private(self) -> None:
        """
        C{Surrogate-Control: max-age} makes a response the browser must
        not share (C{private}, C{no-store}) storable for the surrogate.
        """
        h = CacheHarness(self)
        h.fetch(
            ok(
                b"s",
                [(b"Cache-Control", b"private, no-store"), (b"Surrogate-Control", b"max-age=300")],
            )
        )
        self.assertEqual(h.get().body, b"s")

    def test_no_store(self) -> None:
        """
        C{Surrogate-Control: no-store} prevents storing a response
        C{Cache-Control} allows; the field is removed.
        """
        h = CacheHarness(self)
        for _ in range(2):
            response = h.fetch(
                ok(b"s", [(b"Cache-Control", b"max-age=300"), (b"Surrogate-Control", b"no-store")])
            )
            self.assertEqual(status_of(response), b"edge; fwd=uri-miss; detail=no-store")
            self.assertIsNone(response.header(b"surrogate-control"))

    def test_targeted_directive_ignored(self) -> None:
        """
        A directive addressed to another device (C{;target}) is ignored.
        """
        h = CacheHarness(self)
        h.fetch(
            ok(b"s", [(b"Cache-Control", b"max-age=300"), (b"Surrogate-Control", b"no-store;abc")])
        )
        self.assertEqual(h.get().body, b"s")

    def test_targeted_at_this_device(self) -> None:
        """
        The fill announces C{Surrogate-Capability: twisted-proxy=...}
        upstream, and a directive addressed to that token applies (here
        over Cache-Control: no-store).
        """
        h = CacheHarness(self)
        client = h.client()
        client.request()
        up = h.upstream()
        self.assertIn(b'Surrogate-Capability: twisted-proxy="Surrogate/1.0"', up.transport.value())
        up.respond(
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n"
            b"Surrogate-Control: max-age=300;twisted-proxy\r\nContent-Length: 1\r\n\r\ns"
        )
        self.assertEqual(h.get().body, b"s")
        self.assertEqual(h.attempts, 1)

    def test_forward_listener_ignores_it(self) -> None:
        """
        A forward listener's cache is not the origin's surrogate: the
        field does not change its decisions.
        """
        h = CacheHarness(self, kind="forward")
        url = b"http://127.0.0.1:5001/x"
        response = h.fetch(
            ok(b"s", [(b"Cache-Control", b"max-age=300"), (b"Surrogate-Control", b"no-store")]),
            path=url,
            host=b"127.0.0.1:5001",
        )
        self.assertEqual(status_of(response), b"edge; fwd=uri-miss; stored")
        self.assertEqual(h.get(path=url, host=b"127.0.0.1:5001").body, b"s")


class ForwardTests(SynchronousTestCase):
    def test_absolute_uri_cached(self) -> None:
        """
        On a forward listener the absolute-URI GET is stored under its URL
        and the next one is a hit.
        """
        h = CacheHarness(self, kind="forward")
        url, host = b"http://127.0.0.1:5001/f", b"127.0.0.1:5001"
        h.fetch(ok(b"f", [(b"Cache-Control", b"max-age=60")]), path=url, host=host)
        hit = h.get(path=url, host=host)
        self.assertEqual(status_of(hit), b"edge; hit; ttl=60")
        self.assertIsNotNone(h.cache.lookup("http://127.0.0.1:5001/f"))

    def test_connect_not_cached(self) -> None:
        """
        CONNECT goes straight to the tunnel, with no C{Cache-Status}.
        """
        h = CacheHarness(self, kind="forward")
        client = h.client()
        client.send(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
        h.upstream()
        self.assertTrue(client.pending().startswith(b"HTTP/1.1 200 "))
        self.assertNotIn(b"Cache-Status", client.pending())
        self.assertEqual(h.cache.counters.bypass, 0)


class PurgeTests(SynchronousTestCase):
    """
    L{SharedCache.purge_url}, C{purge_prefix}, C{purge_tag}.
    """

    def setUp(self) -> None:
        self.h = CacheHarness(self)
        fresh = (b"Cache-Control", b"max-age=600")
        for path, tags in [
            (b"/static/a.css", b"css, site"),
            (b"/static/b.js", b"js"),
            (b"/static", b""),
            (b"/page?id=1", b"site"),
        ]:
            headers = [fresh]
            if tags:
                headers.append((b"Cache-Tag", tags))
            self.h.fetch(ok(path, headers), path=path)
        self.h.fetch(
            ok(b"other", [fresh, (b"Cache-Tag", b"site")]), path=b"/static/a.css", host=b"other.test"
        )
        self.assertEqual(self.h.cache.store.entries, 5)

    def stored(self) -> List[str]:
        return sorted(e.meta["primary"] for e in self.h.cache)

    def test_purge_url(self) -> None:
        """
        C{purge_url} removes the entry of that URL (however its host and
        default port are spelled) and nothing else; the next request goes
        upstream.
        """
        self.assertEqual(self.h.cache.purge_url("http://APP/static/a.css"), 1)
        self.assertEqual(self.h.cache.purge_url("http://app/static/a.css"), 0)
        self.assertEqual(self.h.cache.purge_url("http://app:80/page?id=1"), 1)
        self.assertEqual(
            self.stored(),
            ["http://app:80/static", "http://app:80/static/b.js", "http://other.test:80/static/a.css"],
        )
        self.h.fetch(ok(b"again"), path=b"/static/a.css")
        self.assertEqual(self.h.cache.status()["purged"], 2)

    def test_purge_prefix(self) -> None:
        """
        C{purge_prefix} removes every entry of that host whose URL starts
        with the prefix.
        """
        self.assertEqual(self.h.cache.purge_prefix("http://app/static/"), 2)
        self.assertEqual(
            self.stored(),
            ["http://app:80/page?id=1", "http://app:80/static", "http://other.test:80/static/a.css"],
        )

    def test_purge_prefix_host_only(self) -> None:
        """
        A prefix of a whole host removes that host's entries, not those of
        another port of it.
        """
        self.h.fetch(
            ok(b"8080", [(b"Cache-Control", b"max-age=600")]), path=b"/p", host=b"app:8080"
        )
        self.assertEqual(self.h.cache.purge_prefix("http://app"), 4)
        self.assertEqual(self.stored(), ["http://app:8080/p", "http://other.test:80/static/a.css"])


    def test_purge_tag(self) -> None:
        """
        C{purge_tag} removes every entry whose C{Cache-Tag} lists the tag,
        on any host.
        """
        self.assertEqual(self.h.cache.purge_tag("site"), 3)
        self.assertEqual(self.stored(), ["http://app:80/static", "http://app:80/static/b.js"])
        self.assertEqual(self.h.cache.purge_tag("site"), 0)
        self.assertEqual(self.h.cache.purge_tag("js"), 1)
        self.h.fetch(ok(b"again"), path=b"/static/b.js")
