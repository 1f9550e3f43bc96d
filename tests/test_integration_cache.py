"""
Integration tests of the shared HTTP cache: real sockets on 127.0.0.1, a
proxy made by L{twisted_proxy.service.make_service} from a config with a
C{[cache.edge]} table, an in-process Twisted origin that counts the
requests it gets (L{tests.helpers.Origin} with a handler of the test's own),
and real HTTP clients (treq over an C{Agent} of its own, and byte-exact
raw clients).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Generator, List

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ProxyAgent
from twisted.web.http_headers import Headers

import treq
from treq.client import HTTPClient

from tests.helpers import (
    Harness,
    OriginProtocol,
    OriginRequest,
    RawClient,
    Response,
    RunningProxy,
    proxy_config,
    reverse_config,
    servers,
)
from tests.test_cache_origin import cache_folder

Gen = Generator[Deferred, Any, Any]

#: the body of the cacheable URL: random, several MiB
BIG = os.urandom(3 * 1024 * 1024 + 17)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
#: fresh for longer than any test
FRESH = [(b"Cache-Control", b"max-age=600")]


def request(path: bytes, host: bytes = b"site.test") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"


class CacheCase(TestCase):
    """
    Each test gets a L{Harness}, an origin whose C{/big} is L{BIG}
    (cacheable) and whose C{/slow} answers only when the test says, and a
    cache folder.
    """

    timeout = 20

    def setUp(self) -> None:
        # given back after the harness stopped the proxies (cleanups run last first)
        self.cache_path = cache_folder(self)
        self.h = Harness(self)
        self.origin = self.h.origin("o")
        self.origin.handler = self.handle
        #: requests to /slow waiting for an answer
        self.slow: List[Any] = []
        pool = HTTPConnectionPool(self.h.reactor, persistent=False)
        self.http = HTTPClient(Agent(self.h.reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)

    def handle(self, proto: OriginProtocol, request: OriginRequest, keep_alive: bool) -> bool:
        if request.path == "/big":
            proto.send(request, keep_alive, BIG, FRESH)
            return True
        if request.path == "/slow":
            self.slow.append((proto, request, keep_alive))
            return True
        return False

    def origin_requests(self, path: str) -> int:
        return len([r for r in self.origin.user_requests() if r.path == path])

    def caches(self) -> Dict[str, Any]:
        return {"edge": {"path": self.cache_path, "max_size": "64MiB"}}

    def reverse(self, access_log: bool = False) -> RunningProxy:
        """
        A reverse listener with the cache C{edge} in front of the origin.
        """
        config = reverse_config(
            [{"path": "/", "backend": "app"}],
            {"app": {"servers": servers(self.origin)}},
            {"cache": "edge"},
            {"access_log": os.path.abspath(self.mktemp())} if access_log else None,
        )
        config["cache"] = self.caches()
        running = self.h.start(config)
        self.assertEqual(running.service.failures, [])
        return running

    @inlineCallbacks
    def get(self, proxy: RunningProxy, path: str = "/big") -> Gen:
        """
        One GET through treq; (response, body).
        """
        response = yield self.http.get(
            f"http://127.0.0.1:{proxy.port}{path}".encode("ascii"),
            headers=Headers({b"Host": [b"site.test"]}),
        )
        body = yield treq.content(response)
        return response, body

    @inlineCallbacks
    def raw_get(self, proxy: RunningProxy, path: bytes) -> Gen:
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(path))
        response: Response = yield client.response()
        client.transport.loseConnection()
        yield client.closed()
        return response


def cache_status(response: Any) -> bytes:
    values = response.headers.getRawHeaders(b"cache-status") or [b""]
    return values[0]


class ReverseCacheTests(CacheCase):
    @inlineCallbacks
    def test_twenty_gets_one_origin_request(self) -> Gen:
        """
        Twenty GETs of a cacheable URL (one, then nineteen at once) make one
        origin request; every client gets the whole body byte-exact, the
        first marked stored, the others hits, as the access log says.
        """
        proxy = self.reverse(access_log=True)
        response, body = yield self.get(proxy)
        self.assertEqual(response.code, 200)
        self.assertEqual(cache_status(response), b"edge; fwd=uri-miss; stored")
        self.assertEqual(hashlib.sha256(body).hexdigest(), BIG_SHA)
        results = yield gatherResults([self.get(proxy) for _ in range(19)])
        for response, body in results:
            self.assertEqual(response.code, 200)
            status = cache_status(response)
            self.assertTrue(status.startswith(b"edge; hit; ttl="), status)
            self.assertEqual(len(body), len(BIG))
            self.assertEqual(hashlib.sha256(body).hexdigest(), BIG_SHA)
        self.assertEqual(self.origin_requests("/big"), 1)
        lines = yield self.h.wait_for(lambda: len(proxy.access_log()) == 20 and proxy.access_log())
        self.assertEqual(sorted(line["cache"] for line in lines), ["hit"] * 19 + ["miss"])
        status = proxy.service.caches["edge"].status()
        self.assertEqual((status["hits"], status["misses"], status["entries"]), (19, 1, 1))

    @inlineCallbacks
    def test_restart_keeps_entries(self) -> Gen:
        """
        A new service on the same cache folder answers a URL the previous
        one stored as a hit from disk, without going to the origin.
        """
        first = self.reverse()
        response, body = yield self.get(first)
        self.assertEqual(cache_status(response), b"edge; fwd=uri-miss; stored")
        yield first.service.stopService()
        second = self.reverse()
        self.assertEqual(second.service.caches["edge"].store.entries, 1)
        response, body = yield self.get(second)
        self.assertEqual(response.code, 200)
        self.assertTrue(cache_status(response).startswith(b"edge; hit; ttl="), cache_status(response))
        self.assertIsNotNone(response.headers.getRawHeaders(b"age"))
        self.assertEqual(hashlib.sha256(body).hexdigest(), BIG_SHA)
        self.assertEqual(self.origin_requests("/big"), 1)

    @inlineCallbacks
    def test_concurrent_misses_collapse(self) -> Gen:
        """
        Ten clients missing one slow URL at once make one origin request;
        every client receives the first piece of the answer before the
        origin sends the rest, and each gets the whole body: one marked
        stored, nine collapsed. The next GET is a hit.
        """
        proxy = self.reverse()
        cache = proxy.service.caches["edge"]
        clients: List[RawClient] = []
        for _ in range(10):
            client = yield self.h.client(proxy.port)
            client.send(request(b"/slow"))
            clients.append(client)
        responses = [c.response() for c in clients]
        yield self.h.wait_for(lambda: len(self.slow) == 1 and cache.counters.collapsed == 9)
        proto, req, keep_alive = self.slow.pop()
        body = os.urandom(512 * 1024)
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body[:1000]
        )
        yield self.h.wait_for(lambda: all(len(c.received) > 0 for c in clients))
        proto.transport.write(body[1000:])
        results = yield gatherResults(responses)
        statuses = sorted(r.header(b"cache-status") for r in results)
        self.assertEqual(
            statuses, [b"edge; fwd=uri-miss; collapsed"] * 9 + [b"edge; fwd=uri-miss; stored"]
        )
        for response in results:
            self.assertEqual(response.status, 200)
            self.assertEqual(response.body, body)
        self.assertEqual(self.origin_requests("/slow"), 1)
        hit = yield self.raw_get(proxy, b"/slow")
        self.assertEqual(hit.body, body)
        self.assertEqual(self.origin_requests("/slow"), 1)
        for client in clients:
            client.transport.loseConnection()


class ForwardCacheTests(CacheCase):
    def forward(self, **listener: Any) -> RunningProxy:
        options: Dict[str, Any] = {"cache": "edge"}
        options.update(listener)
        config = proxy_config(options)
        config["cache"] = self.caches()
        running = self.h.start(config)
        self.assertEqual(running.service.failures, [])
        return running

    @inlineCallbacks
    def test_absolute_uri_cached(self) -> Gen:
        """
        An absolute-URI GET through a forward listener with a cache is
        stored and then answered from the cache (C{Cache-Status} on both),
        the origin seeing one request.
        """
        proxy = self.forward()
        agent = ProxyAgent(TCP4ClientEndpoint(self.h.reactor, "127.0.0.1", proxy.port))
        client = HTTPClient(agent)
        url = self.origin.url("/big")
        first = yield client.get(url)
        body = yield treq.content(first)
        self.assertEqual(cache_status(first), b"edge; fwd=uri-miss; stored")
        self.assertEqual(hashlib.sha256(body).hexdigest(), BIG_SHA)
        second = yield client.get(url)
        body = yield treq.content(second)
        self.assertTrue(cache_status(second).startswith(b"edge; hit; ttl="), cache_status(second))
        self.assertEqual(hashlib.sha256(body).hexdigest(), BIG_SHA)
        self.assertEqual(self.origin_requests("/big"), 1)

    @inlineCallbacks
    def test_connect_unaffected(self) -> Gen:
        """
        CONNECT through a forward listener with a cache is a plain tunnel:
        established without C{Cache-Status}, bytes both ways.
        """
        echo = self.h.echo_server()
        proxy = self.forward(connect_ports=[echo.port])
        client: RawClient = yield self.h.client(proxy.port)
        authority = b"127.0.0.1:%d" % echo.port
        client.send(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header(b"cache-status"))
        client.send(b"GET /big HTTP/1.1\r\n\r\n")
        echoed = yield client.nbytes(21)
        self.assertEqual(echoed, b"GET /big HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.service.caches["edge"].store.entries, 0)
