"""
Tests for L{twisted_proxy.testing}, the fakes shipped for extension authors.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.model import ListenerConfig
from twisted_proxy.testing import (
    FakeServer,
    connect_factory,
    headers_dict,
    listener_config,
    request_info,
    run_filter,
)


class VerdictFilter:
    """
    A filter that returns whatever it is given.
    """

    name = "v"

    def __init__(self, verdict: Any) -> None:
        self.verdict = verdict
        self.seen: Optional[RequestInfo] = None

    def filter_request(self, info: RequestInfo) -> Any:
        self.seen = info
        return self.verdict


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class RequestInfoTests(SynchronousTestCase):
    """
    L{request_info} builds what a filter sees.
    """

    def test_defaults(self) -> None:
        """
        By default: a plain GET of C{http://example.com/} from loopback.
        """
        info = request_info()
        self.assertIsInstance(info, RequestInfo)
        self.assertEqual(
            (info.listener, info.client_ip, info.method, info.scheme, info.host, info.port,
             info.path, info.headers, info.connect),
            ("test", "127.0.0.1", "GET", "http", "example.com", 80, "/", [], False),
        )

    def test_fields(self) -> None:
        """
        Every field can be given; the headers become a fresh mutable list.
        """
        headers = ((b"X-A", b"1"),)
        info = request_info(
            method="POST", host="api.example.com", path="/v1?x=1", client_ip="10.0.0.1",
            port=8443, scheme="https", headers=headers, listener="edge",
        )
        self.assertEqual(
            (info.method, info.host, info.path, info.client_ip, info.port, info.scheme,
             info.listener),
            ("POST", "api.example.com", "/v1?x=1", "10.0.0.1", 8443, "https", "edge"),
        )
        self.assertEqual(info.headers, [(b"X-A", b"1")])
        info.headers.append((b"X-B", b"2"))
        self.assertEqual(headers, ((b"X-A", b"1"),))

    def test_connect(self) -> None:
        """
        A CONNECT request has no scheme and no path.
        """
        info = request_info(method="CONNECT", host="example.com", port=443, connect=True)
        self.assertTrue(info.connect)
        self.assertEqual((info.scheme, info.path, info.port), ("", "", 443))


class RunFilterTests(SynchronousTestCase):
    """
    L{run_filter} runs a filter and returns its verdict.
    """

    def test_plain_verdicts(self) -> None:
        """
        A verdict returned directly is returned, and the filter saw the
        request.
        """
        info = request_info()
        flt = VerdictFilter(None)
        self.assertIsNone(run_filter(flt, info))
        self.assertIs(flt.seen, info)
        deny = Deny(403, "v", "no")
        self.assertIs(run_filter(VerdictFilter(deny), info), deny)

    def test_fired_deferred(self) -> None:
        """
        A Deferred that has fired gives its result.
        """
        deny = Deny(429, "v")
        self.assertIs(run_filter(VerdictFilter(succeed(deny)), request_info()), deny)
        self.assertIsNone(run_filter(VerdictFilter(succeed(None)), request_info()))

    def test_failed_deferred(self) -> None:
        """
        A Deferred that failed raises its exception.
        """
        flt = VerdictFilter(fail(ZeroDivisionError("boom")))
        self.assertRaises(ZeroDivisionError, run_filter, flt, request_info())

    def test_unfired_deferred(self) -> None:
        """
        A Deferred that has not fired is an L{AssertionError} naming the
        filter.
        """
        flt = VerdictFilter(Deferred())
        error = self.assertRaises(AssertionError, run_filter, flt, request_info())
        self.assertIn("has not fired", str(error))


class ListenerConfigTests(SynchronousTestCase):
    """
    L{listener_config} builds what a custom factory receives.
    """

    def test_custom(self) -> None:
        """
        A custom listener's own keys are in C{options}.
        """
        config = listener_config("echo", greeting="hi", limit=3)
        self.assertIsInstance(config, ListenerConfig)
        self.assertEqual((config.name, config.kind), ("echo", "custom"))
        self.assertEqual(dict(config.options), {"greeting": "hi", "limit": 3})
        self.assertIsNotNone(config.factory)

    def test_defaults(self) -> None:
        """
        Defaults: a custom listener named C{test} on a loopback port, no
        options; other kinds have no factory.
        """
        config = listener_config()
        self.assertEqual((config.name, config.kind, dict(config.options)), ("test", "custom", {}))
        self.assertIn("127.0.0.1", config.endpoint)
        self.assertIsNone(listener_config(kind="forward").factory)


class ConnectFactoryTests(SynchronousTestCase):
    """
    L{connect_factory} connects a factory's protocol to a string transport.
    """

    def test_connected(self) -> None:
        """
        The protocol is built with the peer's address and connected; what
        it writes shows in the transport.
        """
        factory = Factory.forProtocol(Recorder)
        proto, transport = connect_factory(factory, ("192.0.2.1", 5555))
        self.assertIsInstance(proto, Recorder)
        self.assertIsInstance(transport, StringTransport)
        self.assertTrue(proto.made)
        self.assertIs(proto.transport, transport)
        self.assertIs(proto.factory, factory)
        peer = transport.getPeer()
        self.assertEqual((peer.host, peer.port), ("192.0.2.1", 5555))
        proto.transport.write(b"out")
        self.assertEqual(transport.value(), b"out")

    def test_default_peer(self) -> None:
        """
        The default peer is a loopback client.
        """
        _, transport = connect_factory(Factory.forProtocol(Recorder))
        self.assertEqual(transport.getPeer().host, "127.0.0.1")


class FakeServerTests(SynchronousTestCase):
    """
    L{FakeServer} is what a balancer sees of a server.
    """

    def test_fields(self) -> None:
        """
        Name, weight (default 1) and in-flight count (default 0), shown in
        its repr.
        """
        s = FakeServer("a")
        self.assertEqual((s.name, s.weight, s.in_flight), ("a", 1, 0))
        s = FakeServer("b", weight=3, in_flight=2)
        self.assertEqual((s.weight, s.in_flight), (3, 2))
        self.assertEqual(repr(s), "<FakeServer b w=3 in_flight=2>")


class HeadersDictTests(SynchronousTestCase):
    """
    L{headers_dict} turns a header list into a lookup.
    """

    def test_lower_case_last_wins(self) -> None:
        """
        Names are lower-cased; of repeated headers the last value wins.
        """
        self.assertEqual(
            headers_dict([(b"X-A", b"1"), (b"Host", b"h"), (b"x-a", b"2")]),
            {b"x-a": b"2", b"host": b"h"},
        )
