"""
Unit tests of the body stages (L{twisted_proxy.engine.transform}): the
timers while a transform holds a response back, and the errors of
response filters and transforms (logged 500s), over fake transports.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.interfaces import IRequestFilter

from .engine_harness import EngineHarness

GET = b"GET http://127.0.0.1:8090/x HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n"


@implementer(IRequestFilter)
class Upper:
    """
    Upper-cases response bodies (up to max_body).
    """

    name = "upper"
    max_body = 1024
    fail = False

    def filter_request(self, info: Any) -> None:
        return None

    def wants_request(self, info: Any) -> bool:
        return False

    def transform_request(self, info: Any, body: bytes) -> bytes:
        return body

    def wants_response(self, info: Any, response: Any) -> bool:
        return True

    def transform_response(self, info: Any, response: Any, body: bytes) -> bytes:
        if self.fail:
            raise RuntimeError("bug in a transform")
        return body.upper()


@implementer(IRequestFilter)
class BadResponseFilter:
    name = "bad"

    def filter_request(self, info: Any) -> None:
        return None

    def filter_response(self, info: Any, response: Any) -> None:
        raise RuntimeError("bug in a response filter")


class HeldResponseTimerTests(SynchronousTestCase):
    def test_body_arriving_while_held(self) -> None:
        """
        While a transform holds the response head back, a body that keeps
        arriving is progress: first_byte_timeout (already met by the head)
        does not cut it.
        """
        h = EngineHarness(filters=[Upper()], first_byte_timeout=3.0, idle_timeout=5.0)
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            h.clock.advance(2.0)
            up.dataReceived(b"2\r\nab\r\n")
            self.assertEqual(h.ft.value(), b"")
        up.dataReceived(b"0\r\n\r\n")
        value = h.ft.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 200 OK"), value)
        self.assertIn(b"Content-Length: 8\r\n", value)
        self.assertTrue(value.endswith(b"\r\n\r\nABABABAB"))

    def test_stalled_while_held(self) -> None:
        """
        A held response whose body stops arriving is cut after
        idle_timeout: the client gets an error, not a hang.
        """
        h = EngineHarness(filters=[Upper()], first_byte_timeout=3.0, idle_timeout=5.0)
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        h.clock.advance(4.0)
        self.assertEqual(h.ft.value(), b"")
        h.clock.advance(1.5)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(ut.disconnecting)


class StageErrorTests(SynchronousTestCase):
    def test_response_filter_raises(self) -> None:
        """
        A response filter that raises is a logged 500; the upstream
        connection is not reused.
        """
        h = EngineHarness(filters=[BadResponseFilter()])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertTrue(ut.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_response_transform_raises(self) -> None:
        """
        A response transform that raises is a logged 500.
        """
        upper = Upper()
        upper.fail = True
        h = EngineHarness(filters=[upper])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_response_over_max_body(self) -> None:
        """
        A response too large to transform is a 502 and the upstream
        connection is closed at once (the rest is never read).
        """
        upper = Upper()
        upper.max_body = 4
        h = EngineHarness(filters=[upper])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(ut.disconnecting)

    def test_upstream_lost_while_held(self) -> None:
        """
        An upstream that closes while the response is held back gives a
        502 (nothing was sent to the client yet).
        """
        from twisted.internet import error as ierror
        from twisted.python.failure import Failure

        h = EngineHarness(filters=[Upper()])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        up.connectionLost(Failure(ierror.ConnectionLost()))
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 502 "))


@implementer(IRequestFilter)
class RequestRewriter:
    """
    A request body transform that refuses or fails as told.
    """

    name = "rewriter"
    max_body = 1024

    def __init__(self, error: Exception) -> None:
        self.error = error

    def filter_request(self, info: Any) -> None:
        return None

    def wants_request(self, info: Any) -> bool:
        return True

    def transform_request(self, info: Any, body: bytes) -> bytes:
        raise self.error


POST = (
    b"POST http://127.0.0.1:8090/x HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n"
    b"Content-Length: 4\r\n\r\nbody"
)


class RequestTransformErrorTests(SynchronousTestCase):
    def test_bad_body_is_the_clients(self) -> None:
        """
        A transform refusing the client's body with BadBody gives 400 with
        its message.
        """
        from twisted_proxy.filters import BadBody

        h = EngineHarness(filters=[RequestRewriter(BadBody("not JSON"))])
        h.front.dataReceived(POST)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 400 "))
        self.assertIn(b"not JSON", h.ft.value())
        self.assertEqual(h.clock.tcpClients, [])

    def test_other_error_is_a_logged_500(self) -> None:
        """
        Any other exception of a transform, ValueError included, is a bug:
        a logged 500 whose body does not carry the exception's message.
        """
        h = EngineHarness(filters=[RequestRewriter(ValueError("secret detail"))])
        h.front.dataReceived(POST)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 500 "))
        self.assertNotIn(b"secret detail", h.ft.value())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
