"""
Unit tests of the policy stage (L{twisted_proxy.engine.policy}): client
addresses, the router's answer, CONNECT ports and the filter chain with
its Deferred verdicts and their timeout; and that a bug of ours is a
logged 500, never a 400.
"""

from __future__ import annotations

from typing import Any, List

from zope.interface import implementer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.engine.policy import FilterChain, RequestPolicy
from twisted_proxy.filters import Deny
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.interfaces import IRequestFilter

from .engine_harness import LOOPBACK, EngineHarness

GET = b"GET http://127.0.0.1:8090/x HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@implementer(IRequestFilter)
class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: List[Any] = []

    def filter_request(self, info: Any) -> None:
        self.seen.append(info)
        return None


@implementer(IRequestFilter)
class Later:
    """
    A filter answering with a Deferred fired by the test.
    """

    name = "later"

    def __init__(self) -> None:
        self.pending: List[Deferred] = []

    def filter_request(self, info: Any) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d


@implementer(IRequestFilter)
class Broken:
    name = "broken"

    def filter_request(self, info: Any) -> None:
        raise RuntimeError("bug in a filter")


@implementer(IRequestFilter)
class Odd:
    name = "odd"

    def filter_request(self, info: Any) -> str:
        return "not a verdict"


class FilterChainTests(SynchronousTestCase):
    def test_sorted_once(self) -> None:
        """
        A chain knows its request filters in order, those with a response
        side, and its first body transform.
        """

        class WithResponse(Recorder):
            def filter_response(self, info: Any, response: Any) -> None:
                pass

        class Transform(Recorder):
            def transform_request(self, info: Any, body: bytes) -> bytes:
                return body

        a, b, c = Recorder(), WithResponse(), Transform()
        chain = FilterChain([a, b, c])
        self.assertEqual(chain.request, (a, b, c))
        self.assertEqual([f for f, _ in chain.response], [b])
        self.assertIs(chain.transform, c)

    def test_chain_built_once_per_route(self) -> None:
        """
        The listener's filters followed by a route's are combined once per
        route, not per request.
        """
        listener_filter = Recorder()
        policy = RequestPolicy(ForwardRouter(), [listener_filter], LOOPBACK)
        route_filters = (Recorder(),)
        chain = policy.chain(route_filters)
        self.assertIs(policy.chain(route_filters), chain)
        self.assertEqual(chain.request, (listener_filter,) + route_filters)


class AdmissionTests(SynchronousTestCase):
    def test_client_outside_allow_clients(self) -> None:
        """
        A client outside allow_clients gets 403 naming no rule to it; the
        access log's rule is listener.allow_clients.
        """
        h = EngineHarness()
        h.front.allowed = False
        records: List[Any] = []
        h.ctx.access_log.log = lambda *a: records.append(a)  # type: ignore[method-assign]
        h.ctx.access_log.enabled = True
        h.front.dataReceived(GET)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 403 "))
        self.assertEqual(records[0][9:], ("deny", "listener.allow_clients", ""))
        self.assertEqual(h.clock.tcpClients, [])

    def test_connect_port_refused(self) -> None:
        """
        CONNECT to a port outside connect_ports gets 403.
        """
        h = EngineHarness()
        h.front.dataReceived(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 403 "))
        self.assertTrue(h.ft.disconnecting)

    def test_router_refusal(self) -> None:
        """
        A target the router refuses is answered with the router's status.
        """
        h = EngineHarness()
        h.front.dataReceived(b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 400 "))

    def test_filters_see_the_client_path(self) -> None:
        """
        On a route with strip_prefix, filters judge the path the client
        asked for; the backend gets the rewritten one.
        """
        recorder = Recorder()
        h = EngineHarness(
            ports=[5001], route_options={"path": "/api/", "strip_prefix": True,
                                         "filters": (recorder,)},
        )
        h.front.dataReceived(b"GET /api/users?x=1 HTTP/1.1\r\nHost: app\r\n\r\n")
        up, ut = h.connect_upstream()
        self.assertEqual(recorder.seen[0].path, "/api/users?x=1")
        self.assertTrue(ut.value().startswith(b"GET /users?x=1 HTTP/1.1\r\n"))

    def test_filters_see_origin_form_through_a_parent(self) -> None:
        """
        Through a parent proxy the request goes in absolute form, but
        filters see the origin-form path.
        """
        recorder = Recorder()
        h = EngineHarness(
            filters=[recorder],
            router=ForwardRouter(parents=[(["127.0.0.1"], "127.0.0.1", 3129)]),
        )
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        self.assertEqual(recorder.seen[0].path, "/x")
        self.assertTrue(ut.value().startswith(b"GET http://127.0.0.1:8090/x HTTP/1.1\r\n"))


class DeferredVerdictTests(SynchronousTestCase):
    def test_reading_paused_while_waiting(self) -> None:
        """
        While a filter's Deferred verdict is pending, the client is not
        read; a None verdict lets the request go on.
        """
        later = Later()
        h = EngineHarness(filters=[later])
        h.front.dataReceived(GET)
        self.assertEqual(h.ft.producerState, "paused")
        self.assertEqual(h.clock.tcpClients, [])
        later.pending[0].callback(None)
        self.assertEqual(h.ft.producerState, "producing")
        up, ut = h.connect_upstream()
        up.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))

    def test_deferred_deny(self) -> None:
        """
        A Deferred firing with a Deny answers with its status.
        """
        later = Later()
        h = EngineHarness(filters=[later])
        h.front.dataReceived(GET)
        later.pending[0].callback(Deny(429, "slow down", "later"))
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 429 "))

    def test_verdict_timeout(self) -> None:
        """
        A verdict that does not come within filter_timeout gets 503 (not
        408 from a shorter idle_timeout); a late verdict changes nothing.
        """
        later = Later()
        h = EngineHarness(filters=[later], idle_timeout=1.0, filter_timeout=4.0)
        h.front.dataReceived(GET)
        h.clock.advance(2.0)
        self.assertEqual(h.ft.value(), b"")
        h.clock.advance(2.5)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 503 "))
        later.pending[0].callback(None)
        self.assertEqual(h.clock.tcpClients, [])

    def test_verdict_failure(self) -> None:
        """
        A Deferred that fails is a logged 500.
        """
        later = Later()
        h = EngineHarness(filters=[later])
        h.front.dataReceived(GET)
        later.pending[0].errback(RuntimeError("redis down"))
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class BugTests(SynchronousTestCase):
    def test_raising_filter(self) -> None:
        """
        A filter that raises is a logged 500.
        """
        h = EngineHarness(filters=[Broken()])
        h.front.dataReceived(GET)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_invalid_verdict(self) -> None:
        """
        A verdict that is neither None nor a Deny is a 500.
        """
        h = EngineHarness(filters=[Odd()])
        h.front.dataReceived(GET)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))

    def test_router_bug_is_500(self) -> None:
        """
        An exception of ours raised while a request head is handled (here
        the router's) is a 500 logged with its traceback, not a 400
        "malformed request" that blames the client.
        """

        class BadRouter(ForwardRouter):
            def route(self, head: Any) -> Any:
                raise KeyError("bug")

        h = EngineHarness(router=BadRouter())
        h.front.dataReceived(GET)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertNotIn(b"malformed", h.ft.value())
        self.assertTrue(h.ft.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_bug_on_body_is_500(self) -> None:
        """
        An exception of ours while a request body is relayed is a logged
        500 too.
        """
        h = EngineHarness()
        h.front.dataReceived(
            b"POST http://127.0.0.1:8090/x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"
        )
        up, ut = h.connect_upstream()
        ex = h.front.current

        class BrokenBody:
            def request_body(self, data: bytes) -> None:
                raise ValueError("bug")

        ex.body = BrokenBody()
        h.front.dataReceived(b"0123456789")
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertTrue(ut.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class LoopTests(SynchronousTestCase):
    def test_request_from_own_direct_connection(self) -> None:
        """
        A request that a forward listener receives on a connection the
        proxy itself opened straight to an "origin" (a name or address of
        this machine that is a forward listener) is a loop: 508, and the
        client of the first hop sees that 508.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        h = EngineHarness()
        h.front.dataReceived(b"GET http://myself.example:3128/x HTTP/1.1\r\nHost: myself.example:3128\r\n\r\n")
        host, port, factory = h.attempt()
        up = factory.buildProtocol(None)
        ut = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 55555),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 3128),
        )
        up.makeConnection(ut)
        self.assertIn(("127.0.0.1", 55555, "127.0.0.1", 3128), h.pool.direct_ends)
        # the same request arrives at the listener from that end
        inner, it = h.another_client(
            IPv4Address("TCP", "127.0.0.1", 55555), IPv4Address("TCP", "127.0.0.1", 3128)
        )
        inner.dataReceived(ut.value())
        self.assertTrue(it.value().startswith(b"HTTP/1.1 508 "))
        up.dataReceived(it.value())
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 508 "))

    def test_same_local_port_elsewhere_is_no_loop(self) -> None:
        """
        The kernel may give the proxy's connection to an origin the same
        local port as a client's connection to the proxy (towards another
        destination): only the whole connection, both ends, makes a loop.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        h = EngineHarness()
        h.front.dataReceived(GET)
        host, port, factory = h.attempt()
        up = factory.buildProtocol(None)
        ut = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 55557),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 8090),
        )
        up.makeConnection(ut)
        client, ct = h.another_client(
            IPv4Address("TCP", "127.0.0.1", 55557), IPv4Address("TCP", "127.0.0.1", 3128)
        )
        client.dataReceived(GET)
        self.assertEqual(ct.value(), b"")
        self.assertEqual(len(h.clock.tcpClients), 2)

    def test_closed_connection_forgotten(self) -> None:
        """
        Once the proxy's own connection closes, its end is forgotten (a
        later client with that address and port is an ordinary client).
        """
        from twisted.internet import error as ierror
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure

        h = EngineHarness()
        h.front.dataReceived(GET)
        host, port, factory = h.attempt()
        up = factory.buildProtocol(None)
        ut = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 55556))
        up.makeConnection(ut)
        self.assertEqual(len(h.pool.direct_ends), 1)
        up.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(h.pool.direct_ends, set())

    def test_backend_connections_not_noted(self) -> None:
        """
        Connections to a reverse listener's backends are not the forward
        path: a forward listener of the same process may be reached from
        them without a loop.
        """
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
        up, ut = h.connect_upstream()
        self.assertEqual(h.pool.direct_ends, set())


class ViaLoopTests(SynchronousTestCase):
    def test_own_via_mark(self) -> None:
        """
        A request whose Via carries this process's mark went round (maybe
        through other proxies): 508, nothing connected.
        """
        from twisted_proxy.http.policy import request_via

        h = EngineHarness(ports=[5001])
        h.front.dataReceived(
            b"GET /x HTTP/1.1\r\nHost: app\r\nVia: 1.1 other, "
            + request_via(h.ctx.policy.via_mark) + b"\r\n\r\n"
        )
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 508 "))
        self.assertEqual(h.clock.tcpClients, [])

    def test_other_proxies_via(self) -> None:
        """
        Another proxy's Via, another twisted-proxy process's, or another
        listener's of this process (a forward listener reaching a reverse
        one) is no loop.
        """
        from twisted_proxy.http.policy import request_via

        h = EngineHarness(ports=[5001])
        h.front.dataReceived(
            b"GET /x HTTP/1.1\r\nHost: app\r\nVia: 1.1 twisted-proxy (00000000.1), 1.0 squid, "
            + request_via(EngineHarness().ctx.policy.via_mark) + b"\r\n\r\n"
        )
        self.assertEqual(len(h.clock.tcpClients), 1)
