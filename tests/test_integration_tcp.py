"""
Integration tests for tcp listeners (raw TCP balanced over a backend's
C{tcp://} servers) and custom listeners: real sockets on 127.0.0.1, raw TCP
echo servers (L{tests.helpers.EchoServer}).
"""

from __future__ import annotations

import os
from unittest import SkipTest
from typing import Any, Dict, Generator, List, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import EchoServer, Harness, RawClient, RunningProxy, servers

Gen = Generator[Deferred, Any, Any]


class Dead:
    """
    A server entry for a port nothing listens on.
    """

    def __init__(self, port: int) -> None:
        self.port = port


class TcpCase(TestCase):
    """
    Each test gets a L{Harness}.
    """

    timeout = 15

    def setUp(self) -> None:
        self.h = Harness(self)

    def tcp_proxy(
        self,
        targets: List[Any],
        listener: Optional[Dict[str, Any]] = None,
        access_log: bool = True,
        **backend: Any,
    ) -> RunningProxy:
        """
        A tcp listener C{"db"} balancing over C{targets} (backend C{"db"};
        C{backend} adds keys to its table).
        """
        lconf: Dict[str, Any] = {
            "name": "db",
            "kind": "tcp",
            "endpoint": "tcp:0:interface=127.0.0.1",
            "backend": "db",
        }
        lconf.update(listener or {})
        table: Dict[str, Any] = {"servers": servers(*targets, scheme="tcp")}
        table.update(backend)
        proxy: Dict[str, Any] = {"access_log": "off"}
        if access_log:
            proxy["access_log"] = os.path.abspath(self.mktemp())
        running = self.h.start({"proxy": proxy, "listener": [lconf], "backend": {"db": table}})
        self.assertEqual(running.service.failures, [])
        return running

    @inlineCallbacks
    def roundtrip(self, proxy: RunningProxy, data: bytes) -> Gen:
        """
        Open a connection, send C{data}, read its echo, close; the echo.
        """
        client: RawClient = yield self.h.client(proxy.port)
        client.send(data)
        echoed = yield client.nbytes(len(data))
        client.transport.loseConnection()
        yield client.closed()
        return echoed

    @inlineCallbacks
    def log_lines(self, proxy: RunningProxy, count: int) -> Gen:
        """
        The access log once it has C{count} lines (a tcp connection is
        logged when both sides have closed).
        """
        yield self.h.wait_for(lambda: len(proxy.access_log()) >= count)
        return proxy.access_log()


class TcpBalancingTests(TcpCase):
    """
    Connections are spread over the servers and spliced byte for byte.
    """

    @inlineCallbacks
    def test_round_robin(self) -> Gen:
        """
        Successive connections alternate between the two servers, and
        each carries its bytes both ways.
        """
        a, b = self.h.echo_server(), self.h.echo_server()
        proxy = self.tcp_proxy([a, b])
        order = []
        for i in range(4):
            before = (a.connections_made, b.connections_made)
            data = b"connection %d " % i + os.urandom(5000)
            echoed = yield self.roundtrip(proxy, data)
            self.assertEqual(echoed, data)
            order.append("a" if a.connections_made > before[0] else "b")
        self.assertEqual(order, ["a", "b", "a", "b"])
        yield self.h.wait_for(lambda: not a.connections and not b.connections)
        lines = yield self.log_lines(proxy, 4)
        self.assertEqual(
            [line["upstream"] for line in lines],
            [f"127.0.0.1:{p}" for p in (a.port, b.port, a.port, b.port)],
        )

    @inlineCallbacks
    def test_big_stream(self) -> Gen:
        """
        Two megabytes cross the splice and come back intact.
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy([echo])
        data = os.urandom(2 << 20)
        echoed = yield self.roundtrip(proxy, data)
        self.assertTrue(echoed == data)

    @inlineCallbacks
    def test_zero_copy(self) -> Gen:
        """
        Between two plain TCP connections on Linux the bytes move by
        splice(2) (the tunnel holds pipes) and still arrive intact, and
        the byte counts are kept.
        """
        from twisted_proxy import tunnel

        if not tunnel.ZERO_COPY:
            raise SkipTest("no splice(2) here")
        echo = self.h.echo_server()
        proxy = self.tcp_proxy([echo])
        client: RawClient = yield self.h.client(proxy.port)
        yield self.h.wait_for(lambda: echo.connections)
        factory = [s for s in proxy.service if s.name == "db"][0].factory
        [front] = list(factory.connections)
        yield self.h.wait_for(lambda: front.splice is not None)
        self.assertEqual(len(front.splice._pipes), 2)
        data = os.urandom(3 << 20)
        client.send(data)
        echoed = yield client.nbytes(len(data))
        self.assertTrue(echoed == data)
        self.assertEqual(front.splice.bytes_in, len(data))
        self.assertEqual(front.splice.bytes_out, len(data))
        client.transport.loseConnection()
        yield client.closed()

    @inlineCallbacks
    def test_half_close(self) -> Gen:
        """
        A client that half-closes still gets what the server sends after
        it saw the end of the client's data; then both connections close.
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy([echo])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"last words")
        yield self.h.wait_for(lambda: echo.connections)
        client.transport.loseWriteConnection()
        rest = yield client.closed()
        self.assertEqual(rest, b"last words" + EchoServer.goodbye)
        self.assertEqual(echo.half_closes, 1)
        yield self.h.wait_for(lambda: not echo.connections)

    @inlineCallbacks
    def test_access_log(self) -> Gen:
        """
        A tcp connection is one access log line: method TCP, the server as
        url and upstream, the bytes each way.
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy([echo])
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"12345")
        yield client.nbytes(5)
        client.transport.loseWriteConnection()
        yield client.closed()
        [line] = yield self.log_lines(proxy, 1)
        server = f"127.0.0.1:{echo.port}"
        self.assertEqual(line["listener"], "db")
        self.assertEqual(line["client"], "127.0.0.1")
        self.assertEqual(line["method"], "TCP")
        self.assertEqual(line["url"], server)
        self.assertEqual(line["upstream"], server)
        self.assertEqual(line["status"], 200)
        self.assertEqual(line["bytes_in"], 5)
        self.assertEqual(line["bytes_out"], 5 + len(EchoServer.goodbye))
        self.assertEqual((line["decision"], line["rule"]), ("allow", ""))


class TcpFailureTests(TcpCase):
    """
    Dead servers, refused clients.
    """

    @inlineCallbacks
    def test_dead_server_skipped(self) -> Gen:
        """
        A server that refuses connections is skipped: the connection is
        retried on the other server and works.
        """
        port = self.h.dead_port()
        echo = self.h.echo_server()
        proxy = self.tcp_proxy([Dead(port), echo])
        for i in range(3):
            echoed = yield self.roundtrip(proxy, b"try %d" % i)
            self.assertEqual(echoed, b"try %d" % i)
        self.assertEqual(echo.connections_made, 3)
        lines = yield self.log_lines(proxy, 3)
        self.assertEqual({line["upstream"] for line in lines}, {f"127.0.0.1:{echo.port}"})

    @inlineCallbacks
    def test_all_servers_dead(self) -> Gen:
        """
        When no server accepts, the client's connection is closed without
        a byte and logged as an error.
        """
        ports = [self.h.dead_port(), self.h.dead_port()]
        proxy = self.tcp_proxy([Dead(p) for p in ports])
        client: RawClient = yield self.h.client(proxy.port)
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        [line] = yield self.log_lines(proxy, 1)
        self.assertEqual((line["method"], line["decision"]), ("TCP", "error"))

    @inlineCallbacks
    def test_allow_clients(self) -> Gen:
        """
        A client outside allow_clients is disconnected at once, no server
        is contacted, and the log names the rule.
        """
        echo = self.h.echo_server()
        proxy = self.tcp_proxy([echo], {"allow_clients": ["10.0.0.0/8"]})
        client: RawClient = yield self.h.client(proxy.port)
        client.send(b"let me in")
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(echo.connections_made, 0)
        [line] = yield self.log_lines(proxy, 1)
        self.assertEqual(line["method"], "TCP")
        self.assertEqual(line["decision"], "deny")
        self.assertEqual(line["rule"], "listener.allow_clients")

    @inlineCallbacks
    def test_health_check(self) -> Gen:
        """
        A TCP connect probe (health without a path) takes a server that
        stopped listening out of the rotation.
        """
        a, b = self.h.echo_server(), self.h.echo_server()
        proxy = self.tcp_proxy(
            [a, b],
            access_log=False,
            health={"interval": 0.1, "timeout": 1, "rise": 1, "fall": 1},
            max_fails=0,
        )
        backend = proxy.service.backends["db"]
        yield self.h.kill(a)
        yield self.h.wait_for(lambda: not backend.servers[0].up)
        made = b.connections_made
        for i in range(3):
            echoed = yield self.roundtrip(proxy, b"to b %d" % i)
            self.assertEqual(echoed, b"to b %d" % i)
        # the probes connect to b too: at least the three connections
        self.assertGreaterEqual(b.connections_made - made, 3)


class CustomListenerTests(TestCase):
    """
    A listener whose protocol factory is named in the config.
    """

    timeout = 15

    @inlineCallbacks
    def test_echo_factory(self) -> Gen:
        """
        The example echo factory, with its greeting option, answers on the
        listener's port.
        """
        h = Harness(self)
        proxy = h.start(
            {
                "proxy": {"access_log": "off"},
                "listener": [
                    {
                        "name": "echo",
                        "kind": "custom",
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "factory": "twisted_proxy.examples.echo:EchoFactory",
                        "greeting": "hello there",
                    }
                ],
            }
        )
        self.assertEqual(proxy.service.failures, [])
        client: RawClient = yield h.client(proxy.ports["echo"])
        greeting = yield client.until(b"\n")
        self.assertEqual(greeting, b"hello there\n")
        client.send(b"ping\r\n")
        line = yield client.until(b"\n")
        self.assertEqual(line, b"ping\n")
        client.send(b"quit\n")
        rest = yield client.closed()
        self.assertEqual(rest, b"")
