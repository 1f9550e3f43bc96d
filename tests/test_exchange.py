"""
Unit tests for the exchange engine (L{twisted_proxy.engine}) over fake
transports and a fake clock: back-pressure both ways, pipelining, timers,
sticky upstream connections, response filters and body transforms.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Tuple

from zope.interface import implementer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.accesslog import NullAccessLog
from twisted_proxy.engine import FrontFactory, ListenerContext
from twisted_proxy.filters import Deny
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.interfaces import IRequestFilter
from twisted_proxy.model import ProxySettings
from twisted_proxy.upstream.pool import Pool, UpstreamProtocol

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
GET = b"GET http://127.0.0.1:8090/x HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Harness:
    """
    A forward listener's front connection on a StringTransport, with the
    upstream connections it opens built by hand from the fake reactor.
    """

    def __init__(self, filters: Any = (), **settings: Any) -> None:
        self.clock = MemoryReactorClock()
        self.settings = ProxySettings(**settings)
        self.pool = Pool(self.clock, connect_timeout=self.settings.connect_timeout)
        self.ctx = ListenerContext(
            "test",
            self.clock,
            self.settings,
            self.pool,
            NullAccessLog(self.clock),
            ForwardRouter(),
            list(filters),
            LOOPBACK,
        )
        self.front = FrontFactory(self.ctx).buildProtocol(None)
        self.ft = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.front.makeConnection(self.ft)
        self.upstreams: List[Tuple[UpstreamProtocol, StringTransport]] = []

    def connect_upstream(self) -> Tuple[UpstreamProtocol, StringTransport]:
        """
        Complete the newest connection attempt the pool made.
        """
        host, port, factory, timeout, bind = self.clock.tcpClients[len(self.upstreams)]
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.upstreams.append((proto, transport))
        return proto, transport


@implementer(IRequestFilter)
class HeaderStamp:
    """
    A request and response filter that marks both heads.
    """

    name = "stamp"

    def filter_request(self, info: Any) -> None:
        info.headers.append((b"X-Stamped", b"yes"))
        return None

    def filter_response(self, info: Any, response: Any) -> None:
        response.headers.append((b"X-Seen", info.request_id.encode()))


@implementer(IRequestFilter)
class Upper:
    """
    A body transform that upper-cases request and response bodies.
    """

    name = "upper"
    max_body = 16

    def filter_request(self, info: Any) -> None:
        return None

    def wants_request(self, info: Any) -> bool:
        return True

    def transform_request(self, info: Any, body: bytes) -> bytes:
        return body.upper()

    def wants_response(self, info: Any, response: Any) -> bool:
        return True

    def transform_response(self, info: Any, response: Any, body: bytes) -> bytes:
        return body.upper() + b"!"


@implementer(IRequestFilter)
class Refuse:
    name = "no"

    def filter_request(self, info: Any) -> Deny:
        return Deny(403, "no", "refused by no")


class BackPressureTests(SynchronousTestCase):
    def test_slow_client_pauses_upstream(self) -> None:
        """
        When the client's transport cannot take more (its consumer pauses
        its producer), the upstream connection stops being read, and is
        read again when the client drains.
        """
        h = Harness()
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        self.assertEqual(ut.producerState, "producing")
        h.ft.producer.pauseProducing()
        self.assertEqual(ut.producerState, "paused")
        h.ft.producer.resumeProducing()
        self.assertEqual(ut.producerState, "producing")

    def test_slow_upstream_pauses_client(self) -> None:
        """
        When the upstream cannot take more of a request body, the client
        connection stops being read.
        """
        h = Harness()
        h.front.dataReceived(
            b"POST http://127.0.0.1:8090/x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
        )
        up, ut = h.connect_upstream()
        h.front.dataReceived(b"x" * 10)
        self.assertEqual(h.ft.producerState, "producing")
        ut.producer.pauseProducing()
        self.assertEqual(h.ft.producerState, "paused")
        ut.producer.resumeProducing()
        self.assertEqual(h.ft.producerState, "producing")

    def test_body_waits_for_connection(self) -> None:
        """
        Body bytes that arrive before the upstream connection exists are
        held and the client is paused; they are sent once connected.
        """
        h = Harness()
        h.front.dataReceived(
            b"POST http://127.0.0.1:8090/x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbo"
        )
        self.assertEqual(h.ft.producerState, "paused")
        up, ut = h.connect_upstream()
        self.assertEqual(h.ft.producerState, "producing")
        h.front.dataReceived(b"dy")
        self.assertTrue(ut.value().endswith(b"\r\n\r\nbody"))

    def test_pipelined_request_waits(self) -> None:
        """
        A pipelined request is held (the client paused) until the one
        before it is answered; answers come in order on one upstream
        connection.
        """
        h = Harness()
        h.front.dataReceived(GET + GET.replace(b"/x", b"/y"))
        self.assertEqual(h.ft.producerState, "paused")
        up, ut = h.connect_upstream()
        self.assertIn(b"GET /x ", ut.value())
        self.assertNotIn(b"GET /y ", ut.value())
        ut.clear()
        up.dataReceived(OK)
        self.assertIn(b"GET /y ", ut.value())
        up.dataReceived(OK)
        self.assertEqual(h.ft.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(h.ft.producerState, "producing")
        self.assertEqual(len(h.clock.tcpClients), 1)


class TimerTests(SynchronousTestCase):
    def test_header_timeout(self) -> None:
        """
        A partial head not completed within header_timeout gets 408 and the
        connection closes.
        """
        h = Harness(header_timeout=2.0)
        h.front.dataReceived(b"GET http://127.0.0.1/ HTTP/1.1\r\nHo")
        h.clock.advance(1.9)
        self.assertEqual(h.ft.value(), b"")
        h.clock.advance(0.2)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(h.ft.disconnecting)

    def test_idle_keepalive_closes(self) -> None:
        """
        A keep-alive connection with no new request within idle_timeout is
        closed without a response.
        """
        h = Harness(idle_timeout=5.0)
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(OK)
        h.ft.clear()
        h.clock.advance(4.0)
        self.assertFalse(h.ft.disconnecting)
        h.clock.advance(1.5)
        self.assertTrue(h.ft.disconnecting)
        self.assertEqual(h.ft.value(), b"")

    def test_first_byte_timeout(self) -> None:
        """
        An upstream that sends no response head within first_byte_timeout
        gives the client 504 and its connection is closed.
        """
        h = Harness(first_byte_timeout=3.0)
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        h.clock.advance(2.5)
        self.assertEqual(h.ft.value(), b"")
        h.clock.advance(1.0)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 504 "))
        self.assertTrue(ut.disconnecting)


class ReuseTests(SynchronousTestCase):
    def test_sticky_upstream(self) -> None:
        """
        The next request of the same client to the same origin reuses the
        upstream connection of the previous one.
        """
        h = Harness()
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(OK)
        ut.clear()
        h.front.dataReceived(GET)
        self.assertIn(b"GET /x ", ut.value())
        self.assertEqual(len(h.clock.tcpClients), 1)

    def test_client_close_returns_upstream_to_pool(self) -> None:
        """
        When the client goes away, its kept upstream connection goes to the
        pool for other clients.
        """
        h = Harness()
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(OK)
        h.front.connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(up.in_pool)


class IdleBudgetTests(SynchronousTestCase):
    def test_held_connections_count_as_idle(self) -> None:
        """
        Upstream connections kept by client connections count against
        pool_max_idle: beyond it, a finished connection is closed.
        """
        h = Harness(pool_max_idle=1)
        h.pool.max_idle = 1
        h.front.dataReceived(GET)
        up1, ut1 = h.connect_upstream()
        up1.dataReceived(OK)
        self.assertIs(h.front.sticky, up1)
        second = FrontFactory(h.ctx).buildProtocol(None)
        st = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
        second.makeConnection(st)
        second.dataReceived(GET)
        up2, ut2 = h.connect_upstream()
        up2.dataReceived(OK)
        self.assertIsNone(second.sticky)
        self.assertFalse(up2.in_pool)
        self.assertTrue(ut2.disconnecting)
        self.assertEqual(h.pool.held, {("127.0.0.1", 8090): 1})


class FilterHookTests(SynchronousTestCase):
    def test_request_and_response_filters(self) -> None:
        """
        A filter's changes to the request headers reach the upstream, and
        its response side changes the head the client gets.
        """
        h = Harness(filters=[HeaderStamp()])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        self.assertIn(b"X-Stamped: yes", ut.value())
        up.dataReceived(OK)
        self.assertIn(b"X-Seen: ", h.ft.value())

    def test_denied(self) -> None:
        """
        A Deny verdict answers the client without any upstream connection.
        """
        h = Harness(filters=[Refuse()])
        h.front.dataReceived(GET)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 403 "))
        self.assertIn(b"refused by no", h.ft.value())
        self.assertEqual(h.clock.tcpClients, [])

    def test_body_transform(self) -> None:
        """
        A body transform gets the whole request body and the upstream gets
        its result with a Content-Length; the response body is rewritten
        the same way.
        """
        h = Harness(filters=[Upper()])
        h.front.dataReceived(
            b"POST http://127.0.0.1:8090/x HTTP/1.1\r\nHost: h\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        self.assertEqual(h.clock.tcpClients, [])
        h.front.dataReceived(b"2\r\nde\r\n0\r\n\r\n")
        up, ut = h.connect_upstream()
        sent = ut.value()
        self.assertIn(b"Content-Length: 5\r\n", sent)
        self.assertNotIn(b"chunked", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\nABCDE"))
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertIn(b"Content-Length: 3\r\n", h.ft.value())
        self.assertTrue(h.ft.value().endswith(b"\r\n\r\nOK!"))

    def test_body_transform_limit(self) -> None:
        """
        A request body over the transform's max_body gets 413.
        """
        h = Harness(filters=[Upper()])
        h.front.dataReceived(
            b"POST http://127.0.0.1:8090/x HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n"
            + b"x" * 40
        )
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(h.clock.tcpClients, [])


class GarbageTests(SynchronousTestCase):
    def test_exchanges_free_without_the_cyclic_gc(self) -> None:
        """
        A finished exchange and its stages form no reference cycle: they
        are freed by reference counting, leaving nothing for the cyclic
        garbage collector (which would cost every request dearly).
        """
        import gc

        from .engine_harness import EngineHarness

        for harness in (EngineHarness(), EngineHarness(ports=[5001]),
                        EngineHarness(filters=[HeaderStamp()])):
            get = GET if harness.backend is None else b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n"
            harness.front.dataReceived(get)
            up, ut = harness.connect_upstream()
            up.dataReceived(OK)
            gc.collect()
            enabled = gc.isenabled()
            gc.disable()
            try:
                for _ in range(50):
                    harness.front.dataReceived(get)
                    up.dataReceived(OK)
                self.assertEqual(gc.collect(), 0)
            finally:
                if enabled:
                    gc.enable()
            self.assertEqual(harness.ft.value().count(b"HTTP/1.1 200 OK"), 51)


class WholeOrigin:
    """
    An origin stage that answers every request at once with
    L{Exchange.whole_response} (as a cache hit does).
    """

    def fetch(self, ex: Any, sink: Any, owner: Any = None) -> None:
        body = b"hello" if ex.head.method == b"GET" else b""
        ex.whole_response(200, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body)


class WholeResponseTests(SynchronousTestCase):
    def test_whole_response(self) -> None:
        """
        A stage's whole response goes out at once (head and body), ends
        the exchange (counted, its bytes too) and the next pipelined
        request is served.
        """
        h = Harness()
        h.ctx.origin = WholeOrigin()
        h.front.dataReceived(
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
            b"DELETE http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        self.assertEqual(
            h.ft.value(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        self.assertIsNone(h.front.current)
        self.assertEqual(h.ctx.stats.by_status, {200: 2})
        self.assertEqual(h.ctx.stats.bytes_out, len(h.ft.value()))
        self.assertFalse(h.ft.disconnecting)


@implementer(IRequestFilter)
class Counting:
    """
    A filter that stamps each request and response with its own number.
    """

    name = "count"

    def __init__(self) -> None:
        self.count = 0

    def filter_request(self, info: Any) -> None:
        self.count += 1
        info.headers.append((b"X-Request", b"%d" % self.count))
        return None

    def filter_response(self, info: Any, response: Any) -> None:
        response.headers.append((b"X-Response", b"%d" % self.count))


class ReplayedHeadTests(SynchronousTestCase):
    """
    Heads the parsers replay from their memo (the same bytes as before)
    are serialised once per variant; anything that changes them (a
    filter, another client) is serialised anew.
    """

    def setUp(self) -> None:
        from twisted_proxy.http import parser

        self.patch(parser, "_memos", {})

    def exchange(self, h: Harness, front: Any, ft: StringTransport) -> Tuple[bytes, bytes]:
        """
        One request from C{front}, answered on its sticky (or a new)
        upstream connection: what the upstream and the client got.
        """
        ft.clear()
        front.dataReceived(GET)
        if len(h.clock.tcpClients) > len(h.upstreams):
            h.connect_upstream()
        ((up, ut),) = [(up, ut) for up, ut in h.upstreams if ut.value()]
        sent = ut.value()
        ut.clear()
        up.dataReceived(OK)
        return sent, ft.value()

    def test_same_heads(self) -> None:
        """
        The same request and response, parsed then replayed: the upstream
        and the client get the same bytes each time (remembered the second
        time, replayed from the memo the third).
        """
        h = Harness()
        first = self.exchange(h, h.front, h.ft)
        self.assertIn(b"GET /x HTTP/1.1\r\n", first[0])
        self.assertTrue(first[1].startswith(b"HTTP/1.1 200 OK\r\n"))
        second = self.exchange(h, h.front, h.ft)
        third = self.exchange(h, h.front, h.ft)
        self.assertEqual(first, second)
        self.assertEqual(first, third)
        (request_memo, response_memo) = [m for m in _memos().values()]
        ((*_, (_, _, sent)),) = [entry for key, entry in request_memo.items() if key is not None]
        ((*_, (_, _, answered)),) = [entry for key, entry in response_memo.items() if key is not None]
        self.assertEqual(list(sent.values()), [first[0]])
        self.assertEqual(list(answered.values()), [first[1][: first[1].index(b"\r\n\r\n") + 4]])

    def test_filters_change_replayed_heads(self) -> None:
        """
        A filter that changes a replayed head: what it made is sent, not
        the head serialised before.
        """
        h = Harness(filters=[Counting()])
        for i in (1, 2, 3):
            sent, answered = self.exchange(h, h.front, h.ft)
            self.assertIn(b"X-Request: %d\r\n" % i, sent)
            self.assertIn(b"X-Response: %d\r\n" % i, answered)

    def test_other_client(self) -> None:
        """
        The same request bytes from another client address: its own
        X-Forwarded-For / Via view (the forward router's anonymity), and a
        Connection: close variant when its connection is half-closed.
        """
        h = Harness()
        h.ctx.router = ForwardRouter(anonymity="transparent")
        sent1, _ = self.exchange(h, h.front, h.ft)
        other = FrontFactory(h.ctx).buildProtocol(None)
        ot = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.2", 40001))
        other.makeConnection(ot)
        sent2, answered2 = self.exchange(h, other, ot)
        self.assertIn(b"127.0.0.1", sent1)
        self.assertNotIn(b"127.0.0.2", sent1)
        self.assertIn(b"127.0.0.2", sent2)
        ot.clear()
        other.dataReceived(GET)
        other.readConnectionLost()
        ((up, _),) = [(up, ut) for up, ut in h.upstreams if ut.value()]
        up.dataReceived(OK)
        self.assertIn(b"Connection: close\r\n", ot.value())
        self.assertNotIn(b"Connection: close\r\n", answered2)


def _memos() -> dict:
    from twisted_proxy.http import parser

    return parser._memos
