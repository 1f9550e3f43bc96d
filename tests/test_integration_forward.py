"""
Integration tests for the forward proxy: real sockets on 127.0.0.1, an
in-process origin (L{tests.helpers.Origin}), byte-exact raw clients.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from typing import Any, Generator, List, Tuple

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from twisted_proxy.accesslog import FIELDS
from twisted_proxy.config import parse_config
from twisted_proxy.service import make_service
from tests.helpers import (
    EchoServer,
    Harness,
    IncompleteResponse,
    Origin,
    RawClient,
    Response,
    RunningProxy,
    parse_response,
    pattern,
    proxy_config,
)

Gen = Generator[Deferred, Any, Any]

BLOCKING_FILTERS = {"acl": {"type": "acl", "block_domains": ["blocked.test"]}}


def get(url: bytes, host: bytes, extra: bytes = b"", method: bytes = b"GET") -> bytes:
    """
    An absolute-form HTTP/1.1 request head.
    """
    return method + b" " + url + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"


def smuggling_corpus(target: bytes, authority: bytes) -> List[Tuple[str, bytes, Tuple[int, ...]]]:
    """
    Malformed and smuggling-prone requests for C{target} (absolute or
    origin-form) on C{authority}, each a name, its bytes (sent in one
    write) and the statuses it may get; also run through a reverse
    listener by L{tests.test_integration_reverse}.
    """
    url = target
    host = b"Host: " + authority + b"\r\n"
    get11 = b"GET " + url + b" HTTP/1.1\r\n"
    post = b"POST " + url + b" HTTP/1.1\r\n" + host
    chunked = post + b"Transfer-Encoding: chunked\r\n\r\n"
    te_chunked = b"Transfer-Encoding: chunked\r\n"
    return [
        ("CL+TE", post + b"Content-Length: 5\r\n" + te_chunked + b"\r\n0\r\n\r\n", (400,)),
        ("TE+CL", post + te_chunked + b"Content-Length: 5\r\n\r\n0\r\n\r\n", (400,)),
        ("duplicate CL", post + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", (400,)),
        ("duplicate equal CL", post + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", (400,)),
        ("signed CL +", post + b"Content-Length: +5\r\n\r\nhello", (400,)),
        ("signed CL -", post + b"Content-Length: -5\r\n\r\nhello", (400,)),
        ("CL with a space inside", post + b"Content-Length: 1 0\r\n\r\n0123456789", (400,)),
        ("space before colon", post + b"Content-Length : 5\r\n\r\nhello", (400,)),
        (
            "TE not chunked last",
            post + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            (400, 501),
        ),
        (
            "TE in HTTP/1.0",
            b"POST " + url + b" HTTP/1.0\r\n" + te_chunked + b"\r\n0\r\n\r\n",
            (400,),
        ),
        ("HTTP/1.1 without Host", get11 + b"\r\n", (400,)),
        ("two Host headers", get11 + host + b"Host: evil.test\r\n\r\n", (400,)),
        ("obs-fold", get11 + host + b"X-A: b\r\n c\r\n\r\n", (400,)),
        ("bare LF", get11[:-2] + b"\n" + host[:-2] + b"\n\n", (400,)),
        ("bare CR", get11[:-2] + b"\r" + host[:-2] + b"\r\r", (400,)),
        ("NUL in a value", get11 + host + b"X-A: a\x00b\r\n\r\n", (400,)),
        ("HTTP/1.2", b"GET " + url + b" HTTP/1.2\r\n" + host + b"\r\n", (400, 505)),
        # errors in the body, in the same write as the head: the head is
        # checked with them and never acted on
        ("0x chunk size", chunked + b"0x5\r\nhello\r\n0\r\n\r\n", (400,)),
        ("0x chunk size after a good chunk", chunked + b"1\r\na\r\n0x5\r\nhello\r\n0\r\n\r\n",
         (400,)),
        ("chunk size overflow", chunked + b"1" * 20 + b"\r\nhello\r\n0\r\n\r\n", (400,)),
        ("bare LF after chunk size", chunked + b"5\nhello\r\n0\r\n\r\n", (400,)),
        (
            "unknown TE",
            post + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            (400, 501),
        ),
        ("control byte in chunk extension", chunked + b"5;\x01\r\nhello\r\n0\r\n\r\n", (400,)),
        ("chunk longer than its size", chunked + b"5\r\nhelloXX\r\n0\r\n\r\n", (400,)),
    ]


class IntegrationCase(TestCase):
    """
    Each test gets a L{Harness} and an origin server.
    """

    timeout = 15

    def setUp(self) -> None:
        self.h = Harness(self)
        self.origin: Origin = self.h.origin()

    def req(self, path: str, extra: bytes = b"", method: bytes = b"GET") -> bytes:
        """
        A request head for the origin's C{path}.
        """
        return get(self.origin.url(path), self.origin.authority, extra, method)

    @inlineCallbacks
    def fetch(self, proxy: RunningProxy, path: str, extra: bytes = b"") -> Gen:
        """
        One GET of the origin's C{path} on a new connection; the response.
        """
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req(path, extra))
        response: Response = yield client.response()
        client.transport.loseConnection()
        yield client.closed()
        return response


class HeaderPolicyTests(IntegrationCase):
    """
    What the origin sees of the client's request head, per anonymity level.
    """

    CLIENT_HEADERS = (
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Connection: keep-alive, X-Secret\r\n"
        b"X-Secret: hop-by-hop\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Forwarded-For: 10.9.9.9\r\n"
        b"X-Kept: end-to-end\r\n"
    )

    @inlineCallbacks
    def echoed(self, anonymity: str) -> Gen:
        proxy = self.h.proxy({"anonymity": anonymity})
        client: RawClient = yield self.h.client(proxy.port)
        # the Host header disagrees with the URI: the URI's authority wins
        client.send(
            b"GET " + self.origin.url("/echo?q=1") + b" HTTP/1.1\r\n"
            b"Host: elsewhere.invalid\r\n" + self.CLIENT_HEADERS + b"\r\n"
        )
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        return response

    def assert_hop_by_hop_removed(self, echoed: Any) -> None:
        names = echoed.names()
        for name in (
            b"proxy-authorization",
            b"proxy-connection",
            b"x-secret",
            b"keep-alive",
            b"connection",
        ):
            self.assertNotIn(name, names)
        self.assertEqual(echoed.values(b"x-kept"), [b"end-to-end"])
        self.assertEqual(echoed.values(b"host"), [self.origin.authority])
        self.assertEqual(echoed.target, "/echo?q=1")

    @inlineCallbacks
    def test_anonymous(self) -> Gen:
        """
        The default level adds Via, hides the client (no X-Forwarded-For,
        not even the client's own), and removes Proxy-Authorization,
        Proxy-Connection and the headers Connection lists; Host comes from
        the absolute URI.
        """
        response = yield self.echoed("anonymous")
        echoed = response.echo()
        self.assert_hop_by_hop_removed(echoed)
        self.assertEqual(len(echoed.values(b"via")), 1)
        self.assertIn(b"twisted-proxy", echoed.values(b"via")[0])
        self.assertNotIn(b"x-forwarded-for", echoed.names())
        self.assertIn(b"twisted-proxy", response.header(b"via") or b"")

    @inlineCallbacks
    def test_transparent(self) -> Gen:
        """
        Transparent adds the client's address to X-Forwarded-For.
        """
        response = yield self.echoed("transparent")
        echoed = response.echo()
        self.assert_hop_by_hop_removed(echoed)
        self.assertEqual(len(echoed.values(b"via")), 1)
        self.assertEqual(echoed.values(b"x-forwarded-for"), [b"10.9.9.9, 127.0.0.1"])

    @inlineCallbacks
    def test_elite(self) -> Gen:
        """
        Elite sends neither Via nor X-Forwarded-For, in either direction.
        """
        response = yield self.echoed("elite")
        echoed = response.echo()
        self.assert_hop_by_hop_removed(echoed)
        self.assertNotIn(b"via", echoed.names())
        self.assertNotIn(b"x-forwarded-for", echoed.names())
        self.assertIsNone(response.header(b"via"))


class BodyTests(IntegrationCase):
    """
    Request and response bodies cross the proxy intact whatever their
    framing.
    """

    @inlineCallbacks
    def test_post_content_length(self) -> Gen:
        """
        A 1 MB body with Content-Length reaches the origin intact.
        """
        proxy = self.h.proxy()
        body = os.urandom(1 << 20)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/echo", b"Content-Length: %d\r\n" % len(body),
                b"POST",
            )
            + body
        )
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.body), len(body))
        self.assertEqual(
            hashlib.sha256(response.body).hexdigest(), hashlib.sha256(body).hexdigest()
        )
        self.assertEqual(response.echo().values(b"content-length"), [b"1048576"])

    @inlineCallbacks
    def test_post_chunked(self) -> Gen:
        """
        A 1 MB chunked body (chunks of odd sizes) reaches the origin intact.
        """
        proxy = self.h.proxy()
        body = os.urandom(1 << 20)
        pieces = []
        pos = 0
        size = 1
        while pos < len(body):
            piece = body[pos : pos + size]
            pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            pos += len(piece)
            size = size * 3 + 7
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/echo", b"Transfer-Encoding: chunked\r\n",
                b"POST",
            )
        )
        for piece in pieces:
            client.send(piece)
        client.send(b"0\r\n\r\n")
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(
            hashlib.sha256(response.body).hexdigest(), hashlib.sha256(body).hexdigest()
        )
        self.assertEqual(response.echo().values(b"transfer-encoding"), [b"chunked"])

    @inlineCallbacks
    def test_chunked_response(self) -> Gen:
        """
        A chunked response reaches an HTTP/1.1 client chunked and complete.
        """
        proxy = self.h.proxy()
        response = yield self.fetch(proxy, "/chunked?size=100000&chunk=777")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.chunked)
        self.assertEqual(response.body, pattern(0, 100000))

    @inlineCallbacks
    def test_close_delimited_response(self) -> Gen:
        """
        An origin's HTTP/1.0 response without a length (ended by the close)
        reaches an HTTP/1.1 client complete, re-framed as chunked.
        """
        proxy = self.h.proxy()
        response = yield self.fetch(proxy, "/close?size=20000")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, pattern(0, 20000))
        self.assertTrue(response.chunked)

    @inlineCallbacks
    def test_http10_client_chunked_origin(self) -> Gen:
        """
        An HTTP/1.0 client gets a chunked origin response de-chunked, ended
        by the proxy closing the connection.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        url = self.origin.url("/chunked?size=5000&chunk=300")
        client.send(b"GET " + url + b" HTTP/1.0\r\n\r\n")
        rest = yield client.closed()
        head, _, body = rest.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertNotIn(b"transfer-encoding", head.lower())
        self.assertNotIn(b"content-length", head.lower())
        self.assertEqual(body, pattern(0, 5000))

    @inlineCallbacks
    def test_expect_continue(self) -> Gen:
        """
        A client sending Expect: 100-continue gets "100 Continue" before it
        sends the body, then the final response.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/echo", b"Content-Length: 5\r\nExpect: 100-continue\r\n",
                b"POST",
            )
        )
        interim = yield client.until(b"\r\n\r\n")
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"hello")
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello")


class ConnectionReuseTests(IntegrationCase):
    """
    Client keep-alive, pipelining and the upstream pool.
    """

    @inlineCallbacks
    def test_keep_alive_reuses_upstream(self) -> Gen:
        """
        Several requests on one client connection are served over one
        pooled upstream connection.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        for word in ("one", "two", "three"):
            client.send(self.req("/text/" + word))
            response: Response = yield client.response()
            self.assertEqual((response.status, response.body), (200, word.encode()))
        self.assertEqual(self.origin.connections_made, 1)
        self.assertEqual(len(self.origin.requests), 3)

    @inlineCallbacks
    def test_pool_shared_across_clients(self) -> Gen:
        """
        A second client connection after the first has finished reuses the
        idle upstream connection.
        """
        proxy = self.h.proxy()
        first = yield self.fetch(proxy, "/fixed")
        second = yield self.fetch(proxy, "/fixed")
        self.assertEqual((first.body, second.body), (b"hello, world\n", b"hello, world\n"))
        self.assertEqual(self.origin.connections_made, 1)

    @inlineCallbacks
    def test_pipelined(self) -> Gen:
        """
        Two requests in one write are answered in order.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/chunked?size=50000&chunk=5000")
            + self.req("/text/second")
        )
        first: Response = yield client.response()
        second: Response = yield client.response()
        self.assertEqual(first.body, pattern(0, 50000))
        self.assertEqual(second.body, b"second")

    @inlineCallbacks
    def test_head_then_get(self) -> Gen:
        """
        A HEAD answered with a Content-Length and no body leaves the pooled
        connection in sync: a GET after it on the same connections works.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/fixed?size=1234", method=b"HEAD"))
        head: Response = yield client.response(b"HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header(b"content-length"), b"1234")
        client.send(self.req("/fixed?size=1234"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"x" * 1234)
        client.send(self.req("/text/after"))
        response = yield client.response()
        self.assertEqual(response.body, b"after")
        self.assertEqual(client.buffer, b"")
        self.assertEqual(self.origin.connections_made, 1)

    @inlineCallbacks
    def test_retry_after_close_following_response(self) -> Gen:
        """
        An origin that closes each connection right after answering
        (without Connection: close) costs the client nothing: every request
        gets its 200.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        for _ in range(3):
            client.send(self.req("/once"))
            response: Response = yield client.response()
            self.assertEqual((response.status, response.body), (200, b"once\n"))
        self.assertEqual(self.origin.connections_made, 3)

    @inlineCallbacks
    def test_retry_when_reused_connection_closes(self) -> Gen:
        """
        A request sent on a pooled connection that the origin then closes
        without any response byte is retried once on a fresh connection:
        the client gets 200, not 502.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        for _ in range(2):
            client.send(self.req("/flaky"))
            response: Response = yield client.response()
            self.assertEqual((response.status, response.body), (200, b"flaky\n"))
        # the second request reached the origin twice: on the reused
        # connection (dropped) and on a fresh one
        self.assertEqual(self.origin.connections_made, 2)
        self.assertEqual(len(self.origin.requests), 3)

    @inlineCallbacks
    def test_retry_replays_body(self) -> Gen:
        """
        The retried request carries its whole body again.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/flaky"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        client.send(
            self.req("/flaky", b"Content-Length: 7\r\n", b"POST")
            + b"payload"
        )
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"flaky\n"))
        self.assertEqual(self.origin.requests[-1].body, b"payload")
        self.assertEqual(self.origin.requests[-1].method, b"POST")


class ErrorTests(IntegrationCase):
    """
    Failures become clear responses (or a visibly broken connection once a
    response has started).
    """

    @inlineCallbacks
    def test_origin_refused(self) -> Gen:
        """
        An origin that refuses the connection is a 502 whose body names
        neither the origin's address nor the reason (the log does).
        """
        proxy = self.h.proxy()
        port = yield self.h.free_port()
        client: RawClient = yield self.h.client(proxy.port)
        authority = b"127.0.0.1:%d" % port
        client.send(get(b"http://" + authority + b"/", authority))
        response: Response = yield client.response()
        self.assertEqual(response.status, 502)
        self.assertNotIn(b"refused", response.body)
        self.assertNotIn(b"%d" % port, response.body)

    @inlineCallbacks
    def test_first_byte_timeout(self) -> Gen:
        """
        An origin that does not start its response within
        first_byte_timeout is a 504, and the connection closes.
        """
        proxy = self.h.proxy(proxy={"first_byte_timeout": 0.3})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/slow"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 504)
        self.assertEqual(response.header(b"connection"), b"close")
        yield client.closed()

    @inlineCallbacks
    def test_header_timeout(self) -> Gen:
        """
        A request head that does not arrive whole within header_timeout is a
        408, and the connection closes.
        """
        proxy = self.h.proxy(proxy={"header_timeout": 0.3})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"GET " + self.origin.url("/fixed") + b" HTTP/1.1\r\nHost: x\r\n")
        response: Response = yield client.response()
        self.assertEqual(response.status, 408)
        yield client.closed()
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_head_too_large(self) -> Gen:
        """
        A request head beyond max_head_size is a 431, and the connection
        closes.
        """
        proxy = self.h.proxy(proxy={"max_head_size": 1024})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/fixed", b"X-Big: " + b"a" * 3000 + b"\r\n")
        )
        response: Response = yield client.response()
        self.assertEqual(response.status, 431)
        yield client.closed()
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_smuggling_cl_te(self) -> Gen:
        """
        A request with both Content-Length and Transfer-Encoding is a 400,
        the connection closes, and nothing reaches the origin.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/echo", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"POST",
            )
            + b"0\r\n\r\n"
            + self.req("/text/smuggled")
        )
        response: Response = yield client.response()
        self.assertEqual(response.status, 400)
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_origin_closes_mid_body(self) -> Gen:
        """
        An origin closing before the announced length is sent makes the
        proxy close the client connection before the end of the body.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/truncate?size=1000&sent=100"))
        failure = yield self.assertFailure(client.response(), IncompleteResponse)
        head, _, body = failure.data.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 1000", head)
        self.assertEqual(body, b"y" * 100)

    @inlineCallbacks
    def test_origin_closes_mid_chunked_body(self) -> Gen:
        """
        An origin closing inside a chunked body: the client never sees the
        last chunk, the connection just ends.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/truncate-chunked"))
        failure = yield self.assertFailure(client.response(), IncompleteResponse)
        self.assertIn(b"z" * 16, failure.data)
        self.assertFalse(failure.data.endswith(b"0\r\n\r\n"))


class MalformedRequestTests(IntegrationCase):
    """
    A corpus of malformed and smuggling-prone requests (L{smuggling_corpus}):
    each is refused with a 400 (505 for an unknown version, 501 for an
    unsupported transfer coding), the connection closes, and the origin
    never sees anything of it.
    """

    def corpus(self) -> List[Tuple[str, bytes, Tuple[int, ...]]]:
        return smuggling_corpus(self.origin.url("/echo"), self.origin.authority)

    @inlineCallbacks
    def test_corpus(self) -> Gen:
        """
        Every sample gets its error status and a closed connection, never a
        hang, and nothing reaches the origin as a request.
        """
        proxy = self.h.proxy()
        for name, data, statuses in self.corpus():
            client: RawClient = yield self.h.client(proxy.port)
            client.send(data + self.req("/text/smuggled"))
            response: Response = yield client.response()
            self.assertIn(response.status, statuses, name)
            self.assertEqual(response.header(b"connection"), b"close", name)
            rest = yield client.closed()
            self.assertEqual(rest, b"", name)
            self.assertEqual(self.origin.requests, [], name)
            # not even a connection: every sample is refused before
            # anything goes upstream
            self.assertEqual(self.origin.connections_made, 0, name)

    @inlineCallbacks
    def test_bad_body_behind_good_request(self) -> Gen:
        """
        A request pipelined behind a good one and malformed in its body:
        the good one is answered, then the 400, then the connection closes.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/text/first")
            + self.req("/echo", b"Transfer-Encoding: chunked\r\n", b"POST")
            + b"0x5\r\nhello\r\n0\r\n\r\n"
        )
        first: Response = yield client.response()
        self.assertEqual((first.status, first.body), (200, b"first"))
        second: Response = yield client.response()
        self.assertEqual(second.status, 400)
        yield client.closed()
        self.assertEqual([r.path for r in self.origin.requests], ["/text/first"])

    @inlineCallbacks
    def test_bad_body_after_response_started(self) -> Gen:
        """
        A body that turns malformed after the origin has already answered
        (early) ends the connection; the upstream connection is not reused.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/early", b"Transfer-Encoding: chunked\r\n", b"POST"))
        response: Response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"early\n"))
        client.send(b"5\r\nhello\r\nnot a chunk size\r\n")
        yield client.closed()


class ClientBehaviourTests(IntegrationCase):
    """
    Clients that are HTTP/1.0, half-close, or ask for the wrong thing.
    """

    @inlineCallbacks
    def test_http10_keep_alive(self) -> Gen:
        """
        An HTTP/1.0 client asking for keep-alive gets it, announced.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        url = self.origin.url("/fixed")
        request = b"GET " + url + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        client.send(request)
        response: Response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"hello, world\n"))
        self.assertEqual(response.header(b"connection"), b"keep-alive")
        client.send(request)
        response = yield client.response()
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_client_half_close(self) -> Gen:
        """
        A client that half-closes after its request still gets the whole
        response, then the connection closes.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/chunked?size=30000"))
        client.transport.loseWriteConnection()
        rest = yield client.closed()
        parsed = parse_response(rest, b"GET", True)
        assert parsed is not None
        response, used = parsed
        self.assertEqual(response.body, pattern(0, 30000))
        self.assertEqual(used, len(rest))

    @inlineCallbacks
    def test_bad_targets(self) -> Gen:
        """
        A forward proxy refuses origin-form targets and https:// URIs with
        a 400, and requests for itself with a 508 (a loop).
        """
        proxy = self.h.proxy()
        own = b"127.0.0.1:%d" % proxy.port
        targets = (
            (b"/fixed", 400),
            (b"https://" + self.origin.authority + b"/", 400),
            (b"http://" + own + b"/", 508),
        )
        for target, status in targets:
            client: RawClient = yield self.h.client(proxy.port)
            client.send(get(target, self.origin.authority))
            response: Response = yield client.response()
            self.assertEqual(response.status, status, target)
            client.transport.loseConnection()
            yield client.closed()
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_denied_with_body(self) -> Gen:
        """
        A request with a body denied by a filter is answered at once with
        Connection: close and the connection closes: the proxy does not read
        a body it will not forward, and nothing behind it is taken for a
        request.
        """
        proxy = self.h.proxy(
            {"filters": ["acl"]}, filters=BLOCKING_FILTERS)
        client: RawClient = yield self.h.client(proxy.port)
        body = self.req("/text/smuggled")
        client.send(
            get(
                b"http://blocked.test/",
                b"blocked.test",
                b"Content-Length: %d\r\n" % len(body),
                b"POST",
            )
            + body
        )
        denied: Response = yield client.response()
        self.assertEqual(denied.status, 403)
        self.assertEqual(denied.header(b"connection"), b"close")
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_target_forms(self) -> Gen:
        """
        The origin gets the origin-form of the absolute URI: "/" for an
        empty path, the query kept, the fragment dropped, whatever the case
        of the scheme.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        base = b"http://" + self.origin.authority
        cases = [
            (base, "/"),
            (base + b"?q=1", "/?q=1"),
            (base + b"/a/b?x=1&y=2", "/a/b?x=1&y=2"),
            (base + b"/page#fragment", "/page"),
            (b"HTTP://" + self.origin.authority + b"/upper", "/upper"),
        ]
        for url, expected in cases:
            client.send(get(url, self.origin.authority))
            response: Response = yield client.response()
            self.assertEqual(response.status, 404, url)
            self.assertEqual(self.origin.requests[-1].target.decode(), expected, url)

    @inlineCallbacks
    def test_chunked_trailers(self) -> Gen:
        """
        A chunked request body with trailers arrives intact and leaves the
        connections in sync.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/echo", b"Transfer-Encoding: chunked\r\n", b"POST")
            + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Checksum: 42\r\n\r\n"
            + self.req("/text/next")
        )
        response: Response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"abcdefg"))
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"next"))
        self.assertEqual(self.origin.connections_made, 1)

    @inlineCallbacks
    def test_expect_continue_denied(self) -> Gen:
        """
        A denied request that expected 100-continue gets the final answer
        and no 100 Continue.
        """
        proxy = self.h.proxy(
            {"filters": ["acl"]}, filters=BLOCKING_FILTERS)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            get(
                b"http://blocked.test/",
                b"blocked.test",
                b"Content-Length: 5\r\nExpect: 100-continue\r\n",
                b"POST",
            )
        )
        response: Response = yield client.response(interim=True)
        self.assertEqual(response.status, 403)

    @inlineCallbacks
    def test_idle_client_closed(self) -> Gen:
        """
        A keep-alive client connection idle for idle_timeout is closed.
        """
        proxy = self.h.proxy(proxy={"idle_timeout": 0.3})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/fixed"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        rest = yield client.closed()
        self.assertEqual(rest, b"")


class OriginBehaviourTests(IntegrationCase):
    """
    Origins that answer without a body, close, answer early, or break the
    protocol.
    """

    @inlineCallbacks
    def test_no_body_statuses(self) -> Gen:
        """
        204 and 304 end with their head and keep the pooled connection in
        sync.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        for path, status in (("/status/204", 204), ("/status/304", 304), ("/text/after", 200)):
            client.send(self.req(path))
            response: Response = yield client.response()
            self.assertEqual(response.status, status)
        self.assertEqual(response.body, b"after")
        self.assertEqual(self.origin.connections_made, 1)

    @inlineCallbacks
    def test_origin_connection_close(self) -> Gen:
        """
        An origin's Connection: close ends that upstream connection only:
        the client's connection stays open and the next request opens a new
        upstream connection.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/close-header"))
        response: Response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"closing\n"))
        self.assertIsNone(response.header(b"connection"))
        client.send(self.req("/text/again"))
        response = yield client.response()
        self.assertEqual(response.body, b"again")
        self.assertEqual(self.origin.connections_made, 2)

    @inlineCallbacks
    def test_early_response(self) -> Gen:
        """
        An origin answering before the request body is complete: the client
        gets the answer, its body is still accepted (and dropped), and the
        connection serves the next request.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/early", b"Content-Length: 200000\r\n", b"POST")
        )
        response: Response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"early\n"))
        client.send(b"e" * 200000 + self.req("/text/next"))
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"next"))

    @inlineCallbacks
    def test_not_http(self) -> Gen:
        """
        An origin that does not speak HTTP is a 502.
        """
        proxy = self.h.proxy()
        response = yield self.fetch(proxy, "/garbage")
        self.assertEqual(response.status, 502)

    @inlineCallbacks
    def test_response_head_too_large(self) -> Gen:
        """
        A response head beyond max_head_size is a 502.
        """
        proxy = self.h.proxy(proxy={"max_head_size": 4096})
        response = yield self.fetch(proxy, "/bighead?size=10000")
        self.assertEqual(response.status, 502)

    @inlineCallbacks
    def test_interim_responses_dropped(self) -> Gen:
        """
        1xx responses from the origin (100, 103) that the client did not
        ask for do not reach it; the final response does.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/interim"))
        response: Response = yield client.response(interim=True)
        self.assertEqual((response.status, response.body), (200, b"final\n"))

    @inlineCallbacks
    def test_head_chunked(self) -> Gen:
        """
        HEAD on a chunked resource ends with the head: the next request on
        the same connections gets its own response.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/chunked", method=b"HEAD"))
        head: Response = yield client.response(b"HEAD")
        self.assertEqual(head.status, 200)
        client.send(self.req("/text/next"))
        response: Response = yield client.response()
        self.assertEqual(response.body, b"next")
        self.assertEqual(client.buffer, b"")
        self.assertEqual(self.origin.connections_made, 1)

    @inlineCallbacks
    def test_pool_idle_timeout(self) -> Gen:
        """
        A pooled upstream connection unused for pool_idle_timeout is closed.
        """
        proxy = self.h.proxy(proxy={"pool_idle_timeout": 0.3})
        response = yield self.fetch(proxy, "/fixed")
        self.assertEqual(response.status, 200)
        [conn] = self.origin.connections
        yield conn.lost
        self.assertEqual(self.origin.connections, [])

    @inlineCallbacks
    def test_pipelined_with_bodies(self) -> Gen:
        """
        Requests with bodies pipelined behind a long response are answered
        in order with their bodies intact.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        body = os.urandom(50000)
        client.send(
            self.req("/chunked?size=200000&chunk=4096")
            + self.req("/echo", b"Content-Length: 50000\r\n", b"POST")
            + body
            + self.req("/echo", b"Transfer-Encoding: chunked\r\n", b"POST")
            + b"5\r\nhello\r\n0\r\n\r\n"
            + self.req("/text/last")
        )
        first: Response = yield client.response()
        self.assertEqual(first.body, pattern(0, 200000))
        second: Response = yield client.response()
        self.assertEqual(second.body, body)
        third: Response = yield client.response()
        self.assertEqual(third.body, b"hello")
        last: Response = yield client.response()
        self.assertEqual(last.body, b"last")

    @inlineCallbacks
    def test_client_gone_mid_response(self) -> Gen:
        """
        A client leaving in the middle of a response closes the upstream
        connection (it is not pooled half-read), logged as an error.
        """
        proxy = self.h.proxy(access_log=True)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/stall"))
        yield client.until(b"stall\r\n")
        [conn] = self.origin.connections
        client.transport.abortConnection()
        yield conn.lost
        [line] = proxy.access_log()
        self.assertEqual((line["status"], line["decision"]), (200, "error"))

    @inlineCallbacks
    def test_client_gone_before_response(self) -> Gen:
        """
        A client leaving while the origin has not answered closes the
        upstream connection; the log says 499.
        """
        proxy = self.h.proxy(access_log=True)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.req("/slow"))
        while not self.origin.requests:
            yield self.origin.next_request()
        [conn] = self.origin.connections
        client.transport.abortConnection()
        yield conn.lost
        [line] = proxy.access_log()
        self.assertEqual((line["status"], line["decision"]), (499, "error"))


class ConnectTests(IntegrationCase):
    """
    CONNECT tunnels.
    """

    def setUp(self) -> None:
        super().setUp()
        self.echo: EchoServer = self.h.echo_server()

    def connect_request(self, port: int) -> bytes:
        authority = b"127.0.0.1:%d" % port
        return b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"

    @inlineCallbacks
    def open_tunnel(self, proxy: RunningProxy) -> Gen:
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.connect_request(self.echo.port))
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 200)
        return client

    @inlineCallbacks
    def test_connect_allowed(self) -> Gen:
        """
        CONNECT to a port in connect_ports opens a tunnel carrying bytes
        both ways.
        """
        proxy = self.h.proxy({"connect_ports": [self.echo.port]})
        client = yield self.open_tunnel(proxy)
        client.send(b"ping")
        echoed = yield client.nbytes(4)
        self.assertEqual(echoed, b"ping")
        big = pattern(0, 300000)
        client.send(big)
        echoed = yield client.nbytes(len(big))
        self.assertEqual(echoed, big)

    @inlineCallbacks
    def test_connect_bytes_with_head(self) -> Gen:
        """
        Bytes sent right behind the CONNECT head (same write) go through the
        tunnel.
        """
        proxy = self.h.proxy({"connect_ports": [self.echo.port]})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.connect_request(self.echo.port) + b"early bytes")
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 200)
        echoed = yield client.nbytes(11)
        self.assertEqual(echoed, b"early bytes")

    @inlineCallbacks
    def test_connect_disallowed_port(self) -> Gen:
        """
        CONNECT to a port outside connect_ports is a 403 and no connection
        to it is made.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.connect_request(self.echo.port))
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 403)
        self.assertIn(b"port %d" % self.echo.port, response.body)
        yield client.closed()
        self.assertEqual(self.echo.connections_made, 0)

    @inlineCallbacks
    def test_connect_half_close(self) -> Gen:
        """
        A client half-closing its side of a tunnel still receives what the
        server sends after it saw the end of the client's data.
        """
        proxy = self.h.proxy({"connect_ports": [self.echo.port]}, access_log=True)
        client = yield self.open_tunnel(proxy)
        client.send(b"last words")
        client.transport.loseWriteConnection()
        rest = yield client.closed()
        self.assertEqual(rest, b"last words" + EchoServer.goodbye)
        self.assertEqual(self.echo.half_closes, 1)
        [line] = proxy.access_log()
        self.assertEqual(line["method"], "CONNECT")
        self.assertEqual(line["url"], f"127.0.0.1:{self.echo.port}")
        self.assertEqual(line["status"], 200)
        self.assertEqual(line["bytes_in"], len(b"last words"))
        self.assertEqual(
            line["bytes_out"],
            len(b"HTTP/1.1 200 Connection established\r\n\r\n")
            + len(b"last words" + EchoServer.goodbye),
        )

    @inlineCallbacks
    def test_connect_refused(self) -> Gen:
        """
        CONNECT to an allowed port where nothing listens is a 502.
        """
        port = yield self.h.free_port()
        proxy = self.h.proxy({"connect_ports": [port]})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.connect_request(port))
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 502)
        yield client.closed()

    @inlineCallbacks
    def test_connect_through_parent(self) -> Gen:
        """
        CONNECT for a parent's domain is tunnelled through the parent.
        """
        ports = [self.echo.port]
        parent = self.h.proxy({"connect_ports": ports}, access_log=True)
        child = self.h.proxy(
            {
                "connect_ports": ports,
                "parents": [{"domains": ["localhost"], "proxy": f"http://127.0.0.1:{parent.port}"}],
            }
        )
        client: RawClient = yield self.h.client(child.port)
        authority = b"localhost:%d" % self.echo.port
        client.send(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 200)
        client.send(b"through two proxies")
        echoed = yield client.nbytes(19)
        self.assertEqual(echoed, b"through two proxies")
        client.transport.loseConnection()
        yield client.closed()
        self.assertEqual(self.echo.connections_made, 1)

    @inlineCallbacks
    def test_connect_parent_refuses(self) -> Gen:
        """
        A parent refusing the CONNECT (its own 403) makes the child answer
        502, naming neither the parent nor its answer.
        """
        parent = self.h.proxy()  # connect_ports = [443] only
        child = self.h.proxy(
            {
                "connect_ports": [self.echo.port],
                "parents": [{"domains": ["localhost"], "proxy": f"http://127.0.0.1:{parent.port}"}],
            }
        )
        client: RawClient = yield self.h.client(child.port)
        authority = b"localhost:%d" % self.echo.port
        client.send(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 502)
        self.assertNotIn(b"403", response.body)
        self.assertNotIn(b"%d" % parent.port, response.body)
        yield client.closed()

    @inlineCallbacks
    def test_tunnel_idle_timeout(self) -> Gen:
        """
        A tunnel where no byte moves for tunnel_idle_timeout is closed.
        """
        proxy = self.h.proxy(
            {"connect_ports": [self.echo.port]}, proxy={"tunnel_idle_timeout": 0.3}
        )
        client = yield self.open_tunnel(proxy)
        client.send(b"x")
        echoed = yield client.nbytes(1)
        self.assertEqual(echoed, b"x")
        rest = yield client.closed()
        self.assertEqual(rest, b"")



class UpgradeTests(IntegrationCase):
    """
    Protocol upgrades (WebSocket and the like) through the forward proxy.
    """

    def upgrade_request(self, path: str) -> bytes:
        return get(
            self.origin.url(path),
            self.origin.authority,
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
        )

    @inlineCallbacks
    def test_switched(self) -> Gen:
        """
        A 101 from the origin turns the exchange into a tunnel: bytes sent
        with the request and after the 101 go both ways.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(self.upgrade_request("/upgrade") + b"early")
        response: Response = yield client.response()
        self.assertEqual(response.status, 101)
        self.assertEqual(response.header(b"upgrade"), b"websocket")
        echoed = yield client.nbytes(5)
        self.assertEqual(echoed, b"early")
        client.send(b"later")
        echoed = yield client.nbytes(5)
        self.assertEqual(echoed, b"later")
        self.assertEqual(self.origin.requests[0].values(b"upgrade"), [b"websocket"])

    @inlineCallbacks
    def test_not_switched(self) -> Gen:
        """
        An upgrade request the origin answers normally leaves the
        connection in HTTP: a request pipelined behind it is served.
        """
        proxy = self.h.proxy()
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.upgrade_request("/text/first")
            + self.req("/text/second")
        )
        first: Response = yield client.response()
        self.assertEqual((first.status, first.body), (200, b"first"))
        second: Response = yield client.response()
        self.assertEqual((second.status, second.body), (200, b"second"))

class PolicyTests(IntegrationCase):
    """
    The listener's client check and filters, and what the access log says
    about them.
    """

    @inlineCallbacks
    def test_allow_clients(self) -> Gen:
        """
        A client outside allow_clients is a 403, logged as denied by
        "listener.allow_clients".
        """
        proxy = self.h.proxy({"allow_clients": ["10.0.0.0/8"]}, access_log=True)
        response = yield self.fetch(proxy, "/fixed")
        self.assertEqual(response.status, 403)
        self.assertEqual(self.origin.requests, [])
        [line] = proxy.access_log()
        self.assertEqual(line["status"], 403)
        self.assertEqual(line["decision"], "deny")
        self.assertEqual(line["rule"], "listener.allow_clients")

    @inlineCallbacks
    def test_acl_block_domains(self) -> Gen:
        """
        A request for a blocked domain is a 403 naming the filter, logged as
        denied by that filter; the domain is never resolved.
        """
        proxy = self.h.proxy(
            {"filters": ["no-social"]},
            filters={"no-social": {"type": "acl", "block_domains": ["blocked.test"]}},
            access_log=True,
        )
        client: RawClient = yield self.h.client(proxy.port)
        client.send(get(b"http://www.blocked.test/page", b"www.blocked.test"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 403)
        self.assertIn(b"no-social", response.body)
        # the connection stays usable
        client.send(self.req("/text/allowed"))
        response = yield client.response()
        self.assertEqual((response.status, response.body), (200, b"allowed"))
        blocked, allowed = proxy.access_log()
        self.assertEqual(blocked["status"], 403)
        self.assertEqual(blocked["decision"], "deny")
        self.assertEqual(blocked["rule"], "no-social")
        self.assertEqual(blocked["url"], "http://www.blocked.test/page")
        self.assertEqual(blocked["upstream"], "")
        self.assertEqual((allowed["decision"], allowed["rule"]), ("allow", ""))

    @inlineCallbacks
    def test_access_log_fields(self) -> Gen:
        """
        An access log line has every field, in order, with its type.
        """
        proxy = self.h.proxy(access_log=True)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(
            self.req("/echo", b"Content-Length: 3\r\n", b"POST")
            + b"abc"
        )
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        [line] = proxy.access_log()
        self.assertEqual(list(line), list(FIELDS))
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(line["listener"], "fwd")
        self.assertEqual(line["client"], "127.0.0.1")
        self.assertEqual(line["method"], "POST")
        self.assertEqual(line["url"], self.origin.url("/echo").decode())
        self.assertEqual(line["status"], 200)
        self.assertEqual(line["bytes_in"], 3)
        self.assertEqual(line["bytes_out"], len(response.head) + len(response.raw_body))
        self.assertIsInstance(line["duration_ms"], float)
        self.assertGreaterEqual(line["duration_ms"], 0.0)
        self.assertEqual(line["upstream"], self.origin.authority.decode())
        self.assertEqual(line["decision"], "allow")
        self.assertEqual(line["rule"], "")
        for key in ("status", "bytes_in", "bytes_out"):
            self.assertIs(type(line[key]), int)

    @inlineCallbacks
    def test_error_logged(self) -> Gen:
        """
        A 502 is logged with decision "error".
        """
        proxy = self.h.proxy(access_log=True)
        port = yield self.h.free_port()
        client: RawClient = yield self.h.client(proxy.port)
        authority = b"127.0.0.1:%d" % port
        client.send(get(b"http://" + authority + b"/x", authority))
        response: Response = yield client.response()
        self.assertEqual(response.status, 502)
        [line] = proxy.access_log()
        self.assertEqual((line["status"], line["decision"]), (502, "error"))


class ParentProxyTests(IntegrationCase):
    """
    Requests for a parent's domains go through that parent.
    """

    @inlineCallbacks
    def test_through_parent(self) -> Gen:
        """
        A request for a parent's domain reaches the origin through the
        parent: two Via entries, and the child's upstream is the parent.
        """
        parent = self.h.proxy(access_log=True)
        child = self.h.proxy(
            {"parents": [{"domains": ["localhost"], "proxy": f"http://127.0.0.1:{parent.port}"}]},
            access_log=True,
        )
        client: RawClient = yield self.h.client(child.port)
        url = self.origin.url("/echo", host="localhost")
        client.send(get(url, b"localhost:%d" % self.origin.port))
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        echoed = response.echo()
        self.assertEqual(echoed.target, "/echo")
        self.assertEqual(echoed.values(b"host"), [b"localhost:%d" % self.origin.port])
        [via] = echoed.values(b"via")
        self.assertEqual(via.count(b"twisted-proxy"), 2)
        [child_line] = child.access_log()
        self.assertEqual(child_line["upstream"], f"127.0.0.1:{parent.port}")
        [parent_line] = parent.access_log()
        self.assertEqual(parent_line["url"], url.decode())
        self.assertEqual(parent_line["status"], 200)

    @inlineCallbacks
    def test_other_domains_direct(self) -> Gen:
        """
        A request outside the parent's domains goes direct.
        """
        parent = self.h.proxy(access_log=True)
        child = self.h.proxy(
            {"parents": [{"domains": ["localhost"], "proxy": f"http://127.0.0.1:{parent.port}"}]}
        )
        response = yield self.fetch(child, "/echo")
        self.assertEqual(len(response.echo().values(b"via")), 1)
        self.assertEqual(parent.access_log(), [])


class ListenerFailureTests(TestCase):
    """
    A listener that cannot bind stops the process.
    """

    def test_port_in_use(self) -> None:
        """
        A listener whose port is taken calls the service's exit hook with
        status 1 and says which listener and endpoint failed.
        """
        h = Harness(self)
        reactor = h.reactor
        taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        h.ports.append(taken)
        port = taken.getHost().port
        endpoint = f"tcp:{port}:interface=127.0.0.1"
        config = parse_config(
            proxy_config({"name": "busy", "endpoint": endpoint}), "test.toml", os.getcwd()
        )
        top = make_service(config, reactor)
        codes: List[int] = []
        top.exit_process = codes.append  # type: ignore[attr-defined]
        stderr = io.StringIO()
        self.patch(sys, "__stderr__", stderr)
        top.startService()
        h.proxies.append(RunningProxy(top, None))
        self.assertEqual(codes, [1])
        [message] = top.failures
        self.assertIn("listener busy", message)
        self.assertIn(endpoint, message)
        self.assertTrue(re.search("in use", message, re.I), message)
        self.assertIn(message, stderr.getvalue())


class LoopIntegrationTests(IntegrationCase):
    """
    Forwarding loops end in 508; a forward listener reaching a reverse
    listener of the same process is no loop.
    """

    @inlineCallbacks
    def test_own_address_of_wildcard_bind(self) -> Gen:
        """
        A forward listener bound to every address gets 508 for a request
        to itself by a loopback address, before anything is connected.
        """
        proxy = self.h.proxy({"endpoint": "tcp:0"})
        client: RawClient = yield self.h.client(proxy.port)
        authority = b"127.0.0.7:%d" % proxy.port
        client.send(get(b"http://" + authority + b"/", authority))
        response: Response = yield client.response()
        self.assertEqual(response.status, 508)

    @inlineCallbacks
    def test_own_name(self) -> Gen:
        """
        A name of this machine (its host name, when it resolves to a
        loopback address) that reaches the forward listener itself: the
        request comes back on the proxy's own connection and gets 508,
        which the first hop's client sees; it does not go round again.
        """
        import socket

        name = socket.gethostname()
        try:
            address = socket.gethostbyname(name)
        except OSError:
            address = ""
        if not address.startswith("127."):
            raise self.skipTest(f"host name {name!r} does not resolve to a loopback address")
        proxy = self.h.proxy({"endpoint": f"tcp:0:interface={address}"})
        client: RawClient = yield self.h.client(proxy.port)
        authority = name.encode("ascii") + b":%d" % proxy.port
        client.send(get(b"http://" + authority + b"/", authority))
        response: Response = yield client.response()
        self.assertEqual(response.status, 508)

    @inlineCallbacks
    def test_forward_to_own_reverse_listener(self) -> Gen:
        """
        An employee behind the forward listener reaches the company's site
        behind a reverse listener of the same process: answered, no loop.
        """
        config = proxy_config()
        config["listener"].append(
            {
                "name": "site",
                "kind": "reverse",
                "endpoint": "tcp:0:interface=127.0.0.1",
                "route": [{"path": "/", "backend": "web"}],
            }
        )
        config["backend"] = {"web": {"servers": [{"url": f"http://127.0.0.1:{self.origin.port}"}]}}
        proxy = self.h.start(config)
        client: RawClient = yield self.h.client(proxy.ports["fwd"])
        authority = b"127.0.0.1:%d" % proxy.ports["site"]
        client.send(get(b"http://" + authority + b"/fixed", authority))
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(self.origin.requests[-1].path, "/fixed")
