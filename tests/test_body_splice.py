"""
Tests for L{twisted_proxy.engine.splice}: large Content-Length bodies moved
by splice(2) from the upstream socket to the client's, over real sockets on
127.0.0.1 (a reverse listener in front of an in-process origin).
"""

from __future__ import annotations

from typing import Any, Generator, List

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from tests.helpers import IncompleteResponse, RawClient, Response
from tests.test_integration_reverse import ReverseCase, request
from twisted_proxy.engine import splice, upstream
from twisted_proxy.tunnel import ZERO_COPY, _PipeFds

Gen = Generator[Deferred, Any, Any]


class SpliceTests(ReverseCase):
    def setUp(self) -> None:
        if not ZERO_COPY:
            raise self.skipTest("no splice(2) here")
        ReverseCase.setUp(self)
        self.made: List[Any] = []
        self.fell_back: List[Any] = []
        made = self.made
        fell_back = self.fell_back

        class Counting(splice.BodySplice):
            def __init__(self, *args: Any) -> None:
                made.append(self)
                splice.BodySplice.__init__(self, *args)

            def fall_back(self) -> None:
                fell_back.append(self)
                splice.BodySplice.fall_back(self)

        self.patch(upstream, "BodySplice", Counting)
        [self.origin] = self.origins("o")

    @inlineCallbacks
    def test_large_body(self) -> Gen:
        """
        A large body arrives whole, spliced; the connection then serves the
        next request (the upstream one goes back to the pool), and the
        pipe is kept for the next body.
        """
        proxy = self.balanced([self.origin])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/fixed?size=3000000"))
        response: Response = yield client.response()
        self.assertEqual((response.status, len(response.body)), (200, 3000000))
        self.assertEqual(response.body, b"x" * 3000000)
        self.assertEqual(len(self.made), 1)
        pipes = _PipeFds.open
        client.send(request(b"/fixed?size=2000000"))
        response = yield client.response()
        self.assertEqual(response.body, b"x" * 2000000)
        self.assertEqual(len(self.made), 2)
        self.assertEqual(_PipeFds.open, pipes)
        self.assertEqual(self.origin.connections_made, 1)
        client.send(request(b"/fixed?size=10"))
        response = yield client.response()
        self.assertEqual(response.body, b"x" * 10)
        self.assertEqual(len(self.made), 2)  # a small body: not spliced
        client.transport.loseConnection()
        yield client.closed()
        self.assert_no_in_flight(proxy)
        stats = proxy.service.listener_stats[0][0]
        self.assertGreater(stats.bytes_out, 5000010)

    @inlineCallbacks
    def test_truncated(self) -> Gen:
        """
        An upstream that closes before the announced length: the client's
        connection is cut (never a silently short body), as without the
        splice.
        """
        proxy = self.balanced([self.origin])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/truncate?size=5000000&sent=1000000"))
        yield self.assertFailure(client.response(), IncompleteResponse)
        self.assertEqual(len(self.made), 1)
        yield client.closed()
        self.assert_no_in_flight(proxy)

    @inlineCallbacks
    def test_slow_client_falls_back(self) -> Gen:
        """
        A client that stops reading: the splice hands over to the ordinary
        path (back-pressure or the response buffer), and the body still
        arrives whole once it reads again.
        """
        proxy = self.balanced([self.origin])
        client: RawClient = yield self.h.client(proxy.port)
        client.transport.pauseProducing()
        client.send(request(b"/fixed?size=20000000"))
        for _ in range(50):
            if self.fell_back:
                break
            yield deferLater(self.h.reactor, 0.02, lambda: None)
        self.assertEqual(len(self.fell_back), 1)
        client.transport.resumeProducing()
        response: Response = yield client.response()
        self.assertEqual(len(response.body), 20000000)
        self.assertEqual(response.body, b"x" * 20000000)
        client.transport.loseConnection()
        yield client.closed()

    @inlineCallbacks
    def test_client_gone(self) -> Gen:
        """
        A client that leaves in the middle of a spliced body: the upstream
        connection is closed, nothing leaks.
        """
        proxy = self.balanced([self.origin])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/fixed?size=50000000"))
        yield client.until(b"xxxx")
        client.transport.abortConnection()
        yield client.closed()
        for _ in range(100):
            if not any(c.transport.connected for c in self.origin.connections):
                break
            yield deferLater(self.h.reactor, 0.02, lambda: None)
        self.assertFalse(any(c.transport.connected for c in self.origin.connections))
        self.assert_no_in_flight(proxy)
        self.assertTrue(all(not s.active for s in self.made))
