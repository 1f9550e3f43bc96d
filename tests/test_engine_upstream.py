"""
Unit tests of the upstream stage (L{twisted_proxy.engine.upstream}): server
choice and retries, passive health, the wait for a server slot, a parent
proxy's CONNECT, protocol upgrades, all over fake transports and a clock.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.forward import ForwardRouter

from .engine_harness import EngineHarness

GET = b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n"
POST = b"POST /x HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\n\r\nbody"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def fails(h: EngineHarness, port: int) -> int:
    assert h.backend is not None
    server = next(s for s in h.backend.servers if s.port == port)
    return len(server.fail_times)


class RetryTests(SynchronousTestCase):
    def test_refused_connection_retried_elsewhere(self) -> None:
        """
        A server that refuses the connection counts a failure and the
        request goes to another server of the backend; the client sees
        only the answer.
        """
        h = EngineHarness(ports=[5001, 5002])
        h.front.dataReceived(GET)
        refused = h.refuse_upstream()
        up, ut = h.connect_upstream()
        self.assertNotEqual(ut.getPeer().port, refused)
        self.assertTrue(ut.value().startswith(b"GET /x HTTP/1.1\r\n"))
        up.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(fails(h, refused), 1)

    def test_retry_budget(self) -> None:
        """
        With every server refusing, the request is tried on each at most
        once (within C{retries}) and the client gets 502.
        """
        h = EngineHarness(ports=[5001, 5002], backend_options={"retries": 5})
        h.front.dataReceived(GET)
        h.refuse_upstream()
        h.refuse_upstream()
        self.assertEqual(len(h.clock.tcpClients), 2)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 502 "))

    def test_reset_counts_for_unsafe_method_without_retry(self) -> None:
        """
        A POST whose connection is reset before any response byte counts a
        failure against the server (passive health is about the server, not
        the method), but is not sent again: the client gets 502.
        """
        h = EngineHarness(ports=[5001, 5002])
        h.front.dataReceived(POST)
        up, ut = h.connect_upstream()
        self.assertTrue(ut.value().endswith(b"body"))
        up.connectionLost(Failure(ierror.ConnectionLost()))
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(len(h.clock.tcpClients), 1)
        self.assertEqual(fails(h, ut.getPeer().port), 1)

    def test_reset_of_safe_method_retried(self) -> None:
        """
        A GET whose connection is reset before any response byte is counted
        against the server and tried on another one.
        """
        h = EngineHarness(ports=[5001, 5002])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.connectionLost(Failure(ierror.ConnectionLost()))
        up2, ut2 = h.connect_upstream()
        self.assertNotEqual(ut.getPeer().port, ut2.getPeer().port)
        up2.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(fails(h, ut.getPeer().port), 1)

    def test_first_byte_timeout_retried_for_safe_method(self) -> None:
        """
        A server that sends no response head within first_byte_timeout is
        counted as failed and an idempotent request is retried elsewhere.
        """
        h = EngineHarness(ports=[5001, 5002], first_byte_timeout=3.0)
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        h.clock.advance(3.5)
        self.assertTrue(ut.disconnecting)
        self.assertEqual(h.ft.value(), b"")
        self.assertEqual(fails(h, ut.getPeer().port), 1)
        up2, ut2 = h.connect_upstream()
        up2.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))

    def test_first_byte_timeout_of_unsafe_method(self) -> None:
        """
        A POST that gets no response head in time is counted against the
        server, not retried, and answered 504.
        """
        h = EngineHarness(ports=[5001, 5002], first_byte_timeout=3.0)
        h.front.dataReceived(POST)
        up, ut = h.connect_upstream()
        h.clock.advance(3.5)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 504 "))
        self.assertEqual(len(h.clock.tcpClients), 1)
        self.assertEqual(fails(h, ut.getPeer().port), 1)

    def test_pooled_connection_closed_by_upstream(self) -> None:
        """
        A kept connection that the upstream closed as it was reused is
        replaced by a fresh one once, without counting a failure.
        """
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(OK)
        h.front.dataReceived(GET)
        self.assertEqual(ut.value().count(b"GET /x"), 2)
        up.connectionLost(Failure(ierror.ConnectionDone()))
        up2, ut2 = h.connect_upstream()
        self.assertTrue(ut2.value().startswith(b"GET /x"))
        up2.dataReceived(OK)
        self.assertEqual(h.ft.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(fails(h, 5001), 0)


class QueueTests(SynchronousTestCase):
    def test_waiting_for_a_slot_answers_503_after_queue_timeout(self) -> None:
        """
        A request waiting for a server at max_connections is answered 503
        after the backend's queue_timeout, not 408 from a shorter
        idle_timeout, and reading of that client is paused meanwhile.
        """
        h = EngineHarness(
            ports=[5001],
            idle_timeout=1.0,
            backend_options={"queue_timeout": 5.0},
            server_options={"max_connections": 1},
        )
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        other, ot = h.another_client()
        other.dataReceived(GET)
        self.assertEqual(ot.producerState, "paused")
        for _ in range(4):
            h.clock.advance(1.0)
            up.dataReceived(b"")  # the first exchange stays busy
            self.assertEqual(ot.value(), b"")
        h.clock.advance(1.5)
        self.assertTrue(ot.value().startswith(b"HTTP/1.1 503 "))
        self.assertIn(b"Retry-After: 1", ot.value())

    def test_slot_freed_goes_on(self) -> None:
        """
        When the busy server's exchange ends, the waiting request is sent
        on, and its own timers apply again.
        """
        h = EngineHarness(ports=[5001], server_options={"max_connections": 1})
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        other, ot = h.another_client()
        other.dataReceived(GET)
        up.dataReceived(OK)
        # the first client keeps its connection: the second needs its own
        up2, ut2 = h.connect_upstream()
        self.assertTrue(ut2.value().startswith(b"GET /x"))
        up2.dataReceived(OK)
        self.assertTrue(ot.value().startswith(b"HTTP/1.1 200 OK"))


class ParentConnectTests(SynchronousTestCase):
    def harness(self) -> EngineHarness:
        return EngineHarness(router=ForwardRouter(parents=[(["example.jp"], "127.0.0.1", 3129)]))

    def test_tunnel_through_parent(self) -> None:
        """
        CONNECT to a host the parents table names goes to the parent proxy
        as CONNECT; its 2xx opens the tunnel, and bytes after its head are
        the tunnel's first bytes for the client.
        """
        h = self.harness()
        h.front.dataReceived(b"CONNECT www.example.jp:443 HTTP/1.1\r\nHost: www.example.jp:443\r\n\r\n")
        up, ut = h.connect_upstream()
        self.assertEqual(ut.getPeer().port, 3129)
        self.assertEqual(
            ut.value(),
            b"CONNECT www.example.jp:443 HTTP/1.1\r\nHost: www.example.jp:443\r\n\r\n",
        )
        up.dataReceived(b"HTTP/1.1 200 Connection established\r\n\r\nhello")
        self.assertEqual(
            h.ft.value(), b"HTTP/1.1 200 Connection established\r\n\r\nhello"
        )
        h.front.dataReceived(b"client bytes")
        self.assertTrue(ut.value().endswith(b"client bytes"))

    def test_parent_refuses(self) -> None:
        """
        A parent that refuses the tunnel gives the client 502 and both
        connections close.
        """
        h = self.harness()
        h.front.dataReceived(b"CONNECT www.example.jp:443 HTTP/1.1\r\nHost: www.example.jp:443\r\n\r\n")
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(ut.disconnecting)
        self.assertTrue(h.ft.disconnecting)

    def test_parent_head_in_pieces(self) -> None:
        """
        The parent's answer may come in several reads.
        """
        h = self.harness()
        h.front.dataReceived(b"CONNECT a.example.jp:443 HTTP/1.1\r\nHost: a.example.jp:443\r\n\r\n")
        up, ut = h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(h.ft.value(), b"")
        up.dataReceived(b"\r\n")
        self.assertEqual(h.ft.value(), b"HTTP/1.1 200 Connection established\r\n\r\n")


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
)


class UpgradeTests(SynchronousTestCase):
    def test_101_splices(self) -> None:
        """
        A 101 to an upgrade request is relayed and the two connections are
        spliced: bytes after the 101 reach the client, the client's bytes
        reach the server.
        """
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(UPGRADE)
        up, ut = h.connect_upstream()
        self.assertIn(b"Upgrade: websocket", ut.value())
        up.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframe"
        )
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 101 "))
        self.assertTrue(h.ft.value().endswith(b"frame"))
        h.front.dataReceived(b"from client")
        self.assertTrue(ut.value().endswith(b"from client"))

    def test_101_without_upgrade_request(self) -> None:
        """
        A 101 to a request that asked for no upgrade is an invalid
        response: 502, and the upstream connection is closed.
        """
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        up.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(ut.disconnecting)

    def test_refused_upgrade_keeps_http(self) -> None:
        """
        An upgrade the server declines (a plain 200) is an ordinary
        response; the connection goes on with HTTP.
        """
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(UPGRADE)
        up, ut = h.connect_upstream()
        up.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))
        h.ft.clear()
        ut.clear()
        h.front.dataReceived(GET)
        self.assertTrue(ut.value().startswith(b"GET /x HTTP/1.1\r\n"))
        up.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))


class QueueSizeTests(SynchronousTestCase):
    """
    A backend's waiting queue is bounded by C{queue_size}: a request that
    finds it full is answered 503 with C{Retry-After} at once.
    """

    def harness(self) -> EngineHarness:
        return EngineHarness(
            ports=[5001],
            backend_options={"queue_size": 1, "queue_timeout": 5.0},
            server_options={"max_connections": 1},
        )

    def test_full_queue_answers_503_at_once(self) -> None:
        """
        With the only server at max_connections and one request waiting,
        the next request gets 503 with Retry-After before any time passes,
        without a connection attempt and without its reading being paused;
        the waiting request still goes on when the slot frees.
        """
        h = self.harness()
        h.front.dataReceived(GET)
        up, ut = h.connect_upstream()
        waiting, wt = h.another_client()
        waiting.dataReceived(GET)
        self.assertEqual(wt.producerState, "paused")
        refused, rt = h.another_client()
        refused.dataReceived(GET)
        self.assertTrue(rt.value().startswith(b"HTTP/1.1 503 "))
        self.assertIn(b"\r\nRetry-After: 1\r\n", rt.value())
        self.assertEqual(rt.producerState, "producing")
        self.assertEqual(wt.value(), b"")
        assert h.backend is not None
        self.assertEqual(h.backend.queue_refused, 1)
        self.assertEqual(len(h.clock.tcpClients), 1)
        up.dataReceived(OK)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 200 OK"))
        up2, ut2 = h.connect_upstream()
        self.assertTrue(ut2.value().startswith(b"GET /x"))
        up2.dataReceived(OK)
        self.assertTrue(wt.value().startswith(b"HTTP/1.1 200 OK"))

    def test_room_again_after_timeout(self) -> None:
        """
        Once the waiting request leaves the queue (here by queue_timeout,
        503), a new request may wait again instead of being refused.
        """
        h = self.harness()
        h.front.dataReceived(GET)
        h.connect_upstream()
        first, ft = h.another_client()
        first.dataReceived(GET)
        h.clock.advance(5.0)
        self.assertTrue(ft.value().startswith(b"HTTP/1.1 503 "))
        later, lt = h.another_client()
        later.dataReceived(GET)
        self.assertEqual(lt.value(), b"")
        self.assertEqual(lt.producerState, "paused")
        assert h.backend is not None
        self.assertEqual(h.backend.queue_refused, 0)


class LocalShortageTests(SynchronousTestCase):
    def test_out_of_descriptors_is_not_the_servers_fault(self) -> None:
        """
        A connection attempt that fails because the proxy has no file
        descriptor left is a 503, counts no failure against the server and
        is not retried elsewhere.
        """
        import errno

        h = EngineHarness(ports=[5001, 5002])
        h.front.dataReceived(GET)
        host, port, factory = h.attempt()
        factory.clientConnectionFailed(
            None, Failure(ierror.ConnectBindError(errno.EMFILE, "Too many open files"))
        )
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 503 "))
        self.assertEqual(len(h.clock.tcpClients), 1)
        self.assertEqual(fails(h, port), 0)


class TimeoutStatusTests(SynchronousTestCase):
    """
    Connection timeouts are 504, also when every server of the backend
    timed out; a retry is logged only when another server is left.
    """

    def timeout(self, h: EngineHarness) -> None:
        host, port, factory = h.attempt()
        factory.clientConnectionFailed(None, Failure(ierror.TimeoutError()))

    def test_only_server_times_out(self) -> None:
        """
        The only server of a backend times out connecting: 504, and no
        "retrying" log line (there is no other server).
        """
        from twisted.logger import globalLogPublisher

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = EngineHarness(ports=[5001])
        h.front.dataReceived(GET)
        self.timeout(h)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 504 "))
        self.assertFalse([e for e in events if "retrying" in e.get("log_format", "")])

    def test_every_server_times_out(self) -> None:
        """
        Both servers time out connecting: the last failure stands, 504.
        """
        h = EngineHarness(ports=[5001, 5002])
        h.front.dataReceived(GET)
        self.timeout(h)
        self.timeout(h)
        self.assertTrue(h.ft.value().startswith(b"HTTP/1.1 504 "))
