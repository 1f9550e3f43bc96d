"""
Integration tests for C{[proxy] max_connections} and the listeners'
C{backlog}: real sockets on 127.0.0.1, a reverse listener in front of an
in-process origin (L{tests.helpers.Origin}).
"""

from __future__ import annotations

from typing import Any, Generator, List

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.helpers import Harness, Origin, RawClient, RunningProxy, servers
from twisted_proxy.limits import ConnectionLimiter

Gen = Generator[Deferred, Any, Any]

LIMIT = 5


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: site.test\r\n" + extra + b"\r\n"


class MaxConnectionsTests(TestCase):
    """
    A proxy holding at most five client connections.
    """

    timeout = 20

    def setUp(self) -> None:
        self.h = Harness(self)
        self.origin: Origin = self.h.origin()
        self.proxy: RunningProxy = self.h.reverse(
            [{"path": "/", "backend": "app"}],
            {"app": {"servers": servers(self.origin)}},
            proxy={"max_connections": LIMIT},
        )
        self.limiter: ConnectionLimiter = self.proxy.service.getServiceNamed(
            "connection-limiter"
        )

    def held(self) -> int:
        return len(self.limiter.connections)

    @inlineCallbacks
    def clients(self, count: int) -> Gen:
        """
        C{count} connected clients, each one counted by the proxy before
        the next connects.
        """
        out: List[RawClient] = []
        for _ in range(count):
            before = self.held()
            client = yield self.h.client(self.proxy.port)
            yield self.h.wait_for(lambda: self.held() > before)
            out.append(client)
        return out

    @inlineCallbacks
    def busy_clients(self, count: int, extra: bytes = b"") -> Gen:
        """
        C{count} clients, each with a request held by the origin before the
        next connects.
        """
        out: List[RawClient] = []
        for i in range(count):
            (client,) = yield self.clients(1)
            client.send(get(b"/hold", extra))
            yield self.h.wait_for(lambda: len(self.origin.held) == i + 1)
            out.append(client)
        return out

    @inlineCallbacks
    def test_idle_connection_shed(self) -> None:
        """
        With five connections that sent nothing, a sixth client with a
        request is served: the oldest idle connection is closed for it.
        """
        idle = yield self.clients(LIMIT)
        self.assertEqual(self.held(), LIMIT)
        client = yield self.h.client(self.proxy.port)
        client.send(get(b"/fixed"))
        response = yield client.response()
        self.assertEqual(response.status, 200)
        yield idle[0].closed()
        self.assertEqual(idle[0].received, b"")
        self.assertFalse(any(c.eof for c in idle[1:]))
        self.assertEqual(self.held(), LIMIT)
        self.assertFalse(self.limiter.paused)

    @inlineCallbacks
    def test_keepalive_connection_shed(self) -> None:
        """
        A keep-alive connection idle after its response is shed for a new
        client too.
        """
        first = yield self.busy_clients(1)
        self.origin.release()
        response = yield first[0].response()
        self.assertEqual(response.status, 200)
        others = yield self.busy_clients(LIMIT - 1)
        client = yield self.h.client(self.proxy.port)
        client.send(get(b"/fixed"))
        response = yield client.response()
        self.assertEqual(response.status, 200)
        yield first[0].closed()
        self.assertFalse(any(c.eof for c in others))

    @inlineCallbacks
    def test_busy_queue_until_close(self) -> None:
        """
        With five connections whose requests are under way, a sixth client
        waits in the listen queue (accepting is paused) and is served once
        one of them finishes and closes.
        """
        busy = yield self.busy_clients(LIMIT, b"Connection: close\r\n")
        self.assertTrue(self.limiter.paused)
        client = yield self.h.client(self.proxy.port)
        client.send(get(b"/fixed"))
        yield deferLater(self.h.reactor, 0.3, lambda: None)
        self.assertEqual(client.received, b"")
        self.assertEqual(self.held(), LIMIT)
        self.origin.release()
        first = yield busy[0].response()
        self.assertEqual(first.status, 200)
        response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertFalse(any(c.eof for c in busy[1:]))

    @inlineCallbacks
    def test_busy_queue_until_idle(self) -> None:
        """
        A waiting client is also served when one of the five busy
        connections finishes and stays open (keep-alive): that one is shed
        for it.
        """
        busy = yield self.busy_clients(LIMIT)
        client = yield self.h.client(self.proxy.port)
        client.send(get(b"/fixed"))
        yield deferLater(self.h.reactor, 0.3, lambda: None)
        self.assertEqual(client.received, b"")
        self.origin.release()
        first = yield busy[0].response()
        self.assertEqual(first.status, 200)
        response = yield client.response()
        self.assertEqual(response.status, 200)
        yield busy[0].closed()
        self.assertFalse(any(c.eof for c in busy[1:]))
        self.assertEqual(self.held(), LIMIT)


class BacklogTests(TestCase):
    """
    The listener's C{backlog} reaches the listening socket.
    """

    def setUp(self) -> None:
        self.h = Harness(self)

    def test_backlog(self) -> None:
        """
        The endpoint is built with the listener's backlog (1024 by
        default), or the one its endpoint string names.
        """
        from twisted.internet import endpoints
        from twisted.internet.testing import MemoryReactor

        seen: List[str] = []
        real = endpoints.serverFromString

        def spy(reactor: Any, description: str) -> Any:
            if not isinstance(reactor, MemoryReactor):  # not config checks
                seen.append(description)
            return real(reactor, description)

        self.patch(endpoints, "serverFromString", spy)
        self.h.proxy()
        self.h.proxy(listener={"backlog": 7})
        self.h.proxy(listener={"endpoint": "tcp:0:interface=127.0.0.1:backlog=9"})
        self.assertEqual(
            seen,
            [
                "tcp:0:interface=127.0.0.1:backlog=1024",
                "tcp:0:interface=127.0.0.1:backlog=7",
                "tcp:0:interface=127.0.0.1:backlog=9",
            ],
        )


class AcrossListenersTests(TestCase):
    """
    One count for every listener of the process, raw tcp ones included.
    """

    timeout = 20

    def setUp(self) -> None:
        self.h = Harness(self)

    @inlineCallbacks
    def test_tcp_connections_count(self) -> None:
        """
        Two tcp connections (never shed) fill a limit of two: an HTTP
        client of another listener waits until one of them closes.
        """
        origin = self.h.origin()
        echo = self.h.echo_server()
        config = {
            "proxy": {"access_log": "off", "max_connections": 2},
            "listener": [
                {
                    "name": "edge",
                    "kind": "reverse",
                    "endpoint": "tcp:0:interface=127.0.0.1",
                    "route": [{"path": "/", "backend": "app"}],
                },
                {
                    "name": "db",
                    "kind": "tcp",
                    "endpoint": "tcp:0:interface=127.0.0.1",
                    "backend": "db",
                },
            ],
            "backend": {
                "app": {"servers": servers(origin)},
                "db": {"servers": servers(echo, scheme="tcp")},
            },
        }
        proxy = self.h.start(config)
        limiter = proxy.service.getServiceNamed("connection-limiter")
        tcp = []
        for _ in range(2):
            client = yield self.h.client(proxy.ports["db"])
            client.send(b"ping\n")
            echoed = yield client.until(b"ping\n")
            self.assertEqual(echoed, b"ping\n")
            tcp.append(client)
        self.assertTrue(limiter.paused)
        http = yield self.h.client(proxy.ports["edge"])
        http.send(get(b"/fixed"))
        yield deferLater(self.h.reactor, 0.3, lambda: None)
        self.assertEqual(http.received, b"")
        self.assertFalse(any(c.eof for c in tcp))
        tcp[0].transport.loseConnection()
        response = yield http.response()
        self.assertEqual(response.status, 200)
