"""
Tests for L{twisted_proxy.upstream.pool}: the keep-alive pool of upstream
connections (plain TCP keys C{(host, port)}), on fake transports and a
L{MemoryReactorClock}.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from zope.interface import implementer
from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.upstream.pool import (
    Pool,
    UpstreamProtocol,
    describe_connect_failure,
    set_no_delay,
)

KEY = ("127.0.0.1", 8080)
OTHER = ("127.0.0.1", 8081)


class Requester:
    """
    What the pool reports a connection attempt's outcome to.
    """

    def __init__(self) -> None:
        self.ready: List[UpstreamProtocol] = []
        self.failed: List[Tuple[int, str]] = []

    def upstream_ready(self, conn: UpstreamProtocol) -> None:
        self.ready.append(conn)

    def upstream_connect_failed(self, status: int, message: str) -> None:
        self.failed.append((status, message))


class NoDelayTransport(StringTransport):
    """
    A transport that records C{setTcpNoDelay} calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.no_delay: List[bool] = []

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay.append(enabled)


def lose(conn: UpstreamProtocol) -> None:
    """
    Tell C{conn} its connection is gone (what the reactor does after
    C{loseConnection}).
    """
    conn.connectionLost(Failure(ierror.ConnectionDone()))


class PoolCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def pool(self, **kw: Any) -> Pool:
        kw.setdefault("idle_timeout", 60.0)
        kw.setdefault("connect_timeout", 5.0)
        return Pool(self.reactor, **kw)

    def connection(
        self, pool: Pool, key: Tuple[Any, ...] = KEY, transport: Optional[StringTransport] = None
    ) -> UpstreamProtocol:
        """
        A connected L{UpstreamProtocol} handed to a requester (not pooled).
        """
        requester = Requester()
        conn = UpstreamProtocol(pool, key, 65536)
        conn.requester = requester
        conn.makeConnection(transport or StringTransport())
        self.assertEqual(requester.ready, [conn])
        return conn


class AcquireReleaseTests(PoolCase):
    """
    L{Pool.acquire} and L{Pool.release}: idle connections per address, the
    most recently used first.
    """

    def test_empty(self) -> None:
        """
        With no idle connection to an address, C{acquire} gives L{None}.
        """
        self.assertIsNone(self.pool().acquire(KEY))

    def test_release_then_acquire(self) -> None:
        """
        A released connection is handed out again for its address, marked
        as reused, and only once.
        """
        pool = self.pool()
        conn = self.connection(pool)
        self.assertFalse(conn.reused)
        pool.release(conn)
        self.assertTrue(conn.in_pool)
        self.assertIs(pool.acquire(KEY), conn)
        self.assertTrue(conn.reused)
        self.assertFalse(conn.in_pool)
        self.assertFalse(conn.transport.disconnecting)
        self.assertIsNone(pool.acquire(KEY))

    def test_lifo(self) -> None:
        """
        The most recently released connection comes back first (its
        socket is the least likely to have been closed by the server).
        """
        pool = self.pool()
        a, b, c = (self.connection(pool) for _ in range(3))
        for conn in (a, b, c):
            pool.release(conn)
        self.assertEqual([pool.acquire(KEY) for _ in range(4)], [c, b, a, None])

    def test_addresses_apart(self) -> None:
        """
        A connection is only handed out for its own address.
        """
        pool = self.pool()
        conn = self.connection(pool, KEY)
        pool.release(conn)
        self.assertIsNone(pool.acquire(OTHER))
        self.assertIsNone(pool.acquire(("127.0.0.2", 8080)))
        self.assertIs(pool.acquire(KEY), conn)

    def test_release_lost(self) -> None:
        """
        A connection that is already lost is not kept.
        """
        pool = self.pool()
        conn = self.connection(pool)
        lose(conn)
        pool.release(conn)
        self.assertFalse(conn.in_pool)
        self.assertIsNone(pool.acquire(KEY))

    def test_lost_while_idle(self) -> None:
        """
        A pooled connection the server closes leaves the pool at once and
        its idle timer with it.
        """
        pool = self.pool()
        a, b = self.connection(pool), self.connection(pool)
        pool.release(a)
        pool.release(b)
        lose(b)
        self.assertFalse(b.in_pool)
        self.assertIs(pool.acquire(KEY), a)
        self.assertIsNone(pool.acquire(KEY))
        lose(a)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_acquire_skips_lost(self) -> None:
        """
        C{acquire} never hands out a connection known to be lost, even one
        still listed as idle.
        """
        pool = self.pool()
        a, b = self.connection(pool), self.connection(pool)
        pool.release(a)
        pool.release(b)
        b.lost = True
        self.assertIs(pool.acquire(KEY), a)
        self.assertIsNone(pool.acquire(KEY))

    def test_ready_without_requester_is_pooled(self) -> None:
        """
        A connection that comes up with nobody waiting for it goes to the
        pool.
        """
        pool = self.pool()
        conn = UpstreamProtocol(pool, KEY, 65536)
        conn.makeConnection(StringTransport())
        self.assertTrue(conn.in_pool)
        self.assertIs(pool.acquire(KEY), conn)


class MaxIdleTests(PoolCase):
    """
    C{max_idle} bounds the idle connections per address; connections held by
    client connections (L{Pool.hold}) count against the same bound.
    """

    def test_bound(self) -> None:
        """
        Beyond C{max_idle} idle connections to an address, a released
        connection is closed instead of kept.
        """
        pool = self.pool(max_idle=2)
        a, b, c = (self.connection(pool) for _ in range(3))
        for conn in (a, b, c):
            pool.release(conn)
        self.assertFalse(a.transport.disconnecting)
        self.assertFalse(b.transport.disconnecting)
        self.assertTrue(c.transport.disconnecting)
        self.assertFalse(c.in_pool)
        self.assertEqual([pool.acquire(KEY) for _ in range(3)], [b, a, None])

    def test_bound_per_address(self) -> None:
        """
        The bound applies to each address on its own.
        """
        pool = self.pool(max_idle=1)
        a, b = self.connection(pool, KEY), self.connection(pool, OTHER)
        pool.release(a)
        pool.release(b)
        self.assertFalse(a.transport.disconnecting)
        self.assertFalse(b.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), a)
        self.assertIs(pool.acquire(OTHER), b)

    def test_zero(self) -> None:
        """
        With C{max_idle = 0} nothing is kept.
        """
        pool = self.pool(max_idle=0)
        conn = self.connection(pool)
        pool.release(conn)
        self.assertTrue(conn.transport.disconnecting)
        self.assertIsNone(pool.acquire(KEY))

    def test_hold(self) -> None:
        """
        C{hold} lets a client connection keep an idle connection while the
        address's budget allows it.
        """
        pool = self.pool(max_idle=2)
        a, b, c = (self.connection(pool) for _ in range(3))
        self.assertTrue(pool.hold(a))
        self.assertTrue(a.held)
        self.assertTrue(pool.hold(b))
        self.assertFalse(pool.hold(c))
        self.assertFalse(c.held)

    def test_held_counts_against_pool(self) -> None:
        """
        A held connection takes a place of the pool: with C{max_idle = 2},
        one held and one pooled, the next released connection is closed.
        """
        pool = self.pool(max_idle=2)
        held, kept, extra = (self.connection(pool) for _ in range(3))
        self.assertTrue(pool.hold(held))
        pool.release(kept)
        pool.release(extra)
        self.assertFalse(kept.transport.disconnecting)
        self.assertTrue(extra.transport.disconnecting)

    def test_pooled_counts_against_hold(self) -> None:
        """
        Pooled connections take places a client connection could hold.
        """
        pool = self.pool(max_idle=1)
        pooled, other = self.connection(pool), self.connection(pool)
        pool.release(pooled)
        self.assertFalse(pool.hold(other))
        self.assertFalse(other.held)

    def test_hold_per_address(self) -> None:
        """
        Holding a connection to one address leaves the other addresses'
        budgets alone.
        """
        pool = self.pool(max_idle=1)
        held, elsewhere = self.connection(pool, KEY), self.connection(pool, OTHER)
        self.assertTrue(pool.hold(held))
        pool.release(elsewhere)
        self.assertFalse(elsewhere.transport.disconnecting)
        self.assertIs(pool.acquire(OTHER), elsewhere)

    def test_unhold_frees_place(self) -> None:
        """
        Once C{unhold} returns a held connection's place, a released
        connection is kept again.
        """
        pool = self.pool(max_idle=1)
        held, first, second = (self.connection(pool) for _ in range(3))
        self.assertTrue(pool.hold(held))
        pool.release(first)
        self.assertTrue(first.transport.disconnecting)
        pool.unhold(held)
        self.assertFalse(held.held)
        pool.release(second)
        self.assertFalse(second.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), second)

    def test_unhold_twice(self) -> None:
        """
        Unholding a connection twice (or one never held) gives back no
        place it did not take.
        """
        pool = self.pool(max_idle=2)
        a, b, never, c, d = (self.connection(pool) for _ in range(5))
        self.assertTrue(pool.hold(a))
        self.assertTrue(pool.hold(b))
        pool.unhold(a)
        pool.unhold(a)
        pool.unhold(never)
        # b still holds one place of two
        self.assertTrue(pool.hold(c))
        self.assertFalse(pool.hold(d))

    def test_hold_lost(self) -> None:
        """
        A lost connection cannot be held.
        """
        pool = self.pool()
        conn = self.connection(pool)
        lose(conn)
        self.assertFalse(pool.hold(conn))
        self.assertFalse(conn.held)

    def test_lost_while_held(self) -> None:
        """
        A held connection that is lost gives its place back.
        """
        pool = self.pool(max_idle=1)
        held, later = self.connection(pool), self.connection(pool)
        self.assertTrue(pool.hold(held))
        lose(held)
        self.assertFalse(held.held)
        pool.release(later)
        self.assertFalse(later.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), later)


class MaxTotalTests(PoolCase):
    """
    C{max_total} bounds the idle (and held) connections of the whole pool;
    the connection idle the longest, to any address, makes room.
    """

    def test_no_per_address_bound_by_default(self) -> None:
        """
        Without C{max_idle}, an address keeps as many idle connections as
        it had busy (no churn however many clients use one server).
        """
        pool = self.pool()
        self.assertIsNone(pool.max_idle)
        conns = [self.connection(pool) for _ in range(200)]
        for conn in conns:
            pool.release(conn)
        self.assertFalse(any(c.transport.disconnecting for c in conns))
        self.assertEqual(len(pool.lru), 200)

    def test_oldest_makes_room(self) -> None:
        """
        At C{max_total}, the connection idle the longest closes (whatever
        its address) and the released one is kept.
        """
        pool = self.pool(max_total=3)
        a = self.connection(pool, KEY)
        b = self.connection(pool, OTHER)
        c = self.connection(pool, KEY)
        d = self.connection(pool, OTHER)
        for conn in (a, b, c, d):
            pool.release(conn)
        self.assertTrue(a.transport.disconnecting)
        self.assertFalse(a.in_pool)
        self.assertEqual(pool.evicted, 1)
        self.assertEqual([pool.acquire(KEY), pool.acquire(KEY)], [c, None])
        self.assertEqual([pool.acquire(OTHER), pool.acquire(OTHER)], [d, b])
        self.assertEqual(len(pool.lru), 0)

    def test_reuse_renews(self) -> None:
        """
        A connection taken and released again is the most recently used:
        the quiet address gives its connection up first.
        """
        pool = self.pool(max_total=2)
        busy, quiet = self.connection(pool, KEY), self.connection(pool, OTHER)
        pool.release(busy)
        pool.release(quiet)
        self.assertIs(pool.acquire(KEY), busy)
        pool.release(busy)
        pool.release(self.connection(pool, KEY))
        self.assertTrue(quiet.transport.disconnecting)
        self.assertFalse(busy.transport.disconnecting)
        self.assertIsNone(pool.acquire(OTHER))

    def test_held_count(self) -> None:
        """
        Held connections count towards C{max_total} and are never closed
        to make room: when every place is held, a hold is refused and a
        released connection closes.
        """
        pool = self.pool(max_total=2)
        a, b, c, d = (self.connection(pool) for _ in range(4))
        pool.release(a)
        self.assertTrue(pool.hold(b))
        self.assertTrue(pool.hold(c))
        self.assertTrue(a.transport.disconnecting)
        self.assertEqual(pool.total_held, 2)
        self.assertFalse(pool.hold(d))
        pool.release(d)
        self.assertTrue(d.transport.disconnecting)
        pool.unhold(b)
        self.assertEqual(pool.total_held, 1)
        pool.release(b)
        self.assertFalse(b.transport.disconnecting)

    def test_lost_leaves_order(self) -> None:
        """
        A connection lost while idle leaves the order too (it never
        counts, and is never closed twice).
        """
        pool = self.pool(max_total=2)
        a, b, c = (self.connection(pool) for _ in range(3))
        pool.release(a)
        pool.release(b)
        lose(a)
        self.assertNotIn(a, pool.lru)
        pool.release(c)
        self.assertFalse(b.transport.disconnecting)
        self.assertFalse(c.transport.disconnecting)
        self.assertEqual(pool.evicted, 0)

    def test_close_idle_clears(self) -> None:
        """
        C{close_idle} (at shutdown) empties the order as well.
        """
        pool = self.pool()
        pool.release(self.connection(pool))
        pool.close_idle()
        self.assertEqual(len(pool.lru), 0)


class IdleTimeoutTests(PoolCase):
    """
    An idle pooled connection is closed after C{idle_timeout} seconds on the
    pool's clock.
    """

    def test_closed_after_timeout(self) -> None:
        """
        A connection idle for C{idle_timeout} is closed and leaves the
        pool; before that it stays.
        """
        pool = self.pool(idle_timeout=10.0)
        conn = self.connection(pool)
        pool.release(conn)
        self.reactor.advance(9.5)
        self.assertFalse(conn.transport.disconnecting)
        self.assertTrue(conn.in_pool)
        self.reactor.advance(0.5)
        self.assertTrue(conn.transport.disconnecting)
        self.assertFalse(conn.in_pool)
        self.assertIsNone(pool.acquire(KEY))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_counted_from_last_release(self) -> None:
        """
        The idle time counts from the last release: a connection reused
        and released again gets the whole timeout anew.
        """
        pool = self.pool(idle_timeout=10.0)
        conn = self.connection(pool)
        pool.release(conn)
        self.reactor.advance(6)
        self.assertIs(pool.acquire(KEY), conn)
        self.reactor.advance(1)
        pool.release(conn)
        self.reactor.advance(9.5)  # 16.5 s after the first release
        self.assertFalse(conn.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), conn)
        pool.release(conn)
        self.reactor.advance(10)
        self.assertTrue(conn.transport.disconnecting)
        self.assertIsNone(pool.acquire(KEY))

    def test_in_use_not_closed(self) -> None:
        """
        A connection taken out of the pool is not closed by its idle timer.
        """
        pool = self.pool(idle_timeout=10.0)
        conn = self.connection(pool)
        pool.release(conn)
        self.assertIs(pool.acquire(KEY), conn)
        self.reactor.advance(100)
        self.assertFalse(conn.transport.disconnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_one_timer_per_connection(self) -> None:
        """
        Releasing a connection many times keeps one timer for it, not one
        per release.
        """
        pool = self.pool(idle_timeout=10.0)
        conn = self.connection(pool)
        for _ in range(5):
            pool.release(conn)
            self.assertIs(pool.acquire(KEY), conn)
            self.reactor.advance(1)
        pool.release(conn)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_each_connection_its_own_deadline(self) -> None:
        """
        Connections released at different times are closed at different
        times.
        """
        pool = self.pool(idle_timeout=10.0)
        early, late = self.connection(pool), self.connection(pool)
        pool.release(early)
        self.reactor.advance(4)
        pool.release(late)
        self.reactor.advance(6)
        self.assertTrue(early.transport.disconnecting)
        self.assertFalse(late.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), late)


class ForgetCloseIdleTests(PoolCase):
    """
    L{Pool.forget} and L{Pool.close_idle}.
    """

    def test_forget(self) -> None:
        """
        A forgotten connection is no longer handed out; the others stay.
        """
        pool = self.pool()
        a, b = self.connection(pool), self.connection(pool)
        pool.release(a)
        pool.release(b)
        pool.forget(b)
        self.assertFalse(b.in_pool)
        self.assertFalse(b.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), a)
        self.assertIsNone(pool.acquire(KEY))

    def test_forget_frees_place(self) -> None:
        """
        A forgotten connection no longer counts against C{max_idle}.
        """
        pool = self.pool(max_idle=1)
        a, b = self.connection(pool), self.connection(pool)
        pool.release(a)
        pool.forget(a)
        pool.release(b)
        self.assertFalse(b.transport.disconnecting)
        self.assertIs(pool.acquire(KEY), b)

    def test_forget_unknown(self) -> None:
        """
        Forgetting a connection that is not pooled changes nothing.
        """
        pool = self.pool()
        pooled, stranger = self.connection(pool), self.connection(pool, OTHER)
        pool.release(pooled)
        pool.forget(stranger)
        pool.forget(stranger)
        self.assertIs(pool.acquire(KEY), pooled)

    def test_close_idle(self) -> None:
        """
        C{close_idle} closes every idle connection of every address and
        empties the pool; connections in use are left alone.
        """
        pool = self.pool()
        a, b, busy = self.connection(pool, KEY), self.connection(pool, OTHER), self.connection(pool)
        pool.release(a)
        pool.release(b)
        pool.close_idle()
        self.assertTrue(a.transport.disconnecting)
        self.assertTrue(b.transport.disconnecting)
        self.assertFalse(busy.transport.disconnecting)
        self.assertIsNone(pool.acquire(KEY))
        self.assertIsNone(pool.acquire(OTHER))
        lose(a)
        lose(b)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_close_idle_empty(self) -> None:
        """
        Closing an empty pool is harmless, and the pool works after it.
        """
        pool = self.pool()
        pool.close_idle()
        conn = self.connection(pool)
        pool.release(conn)
        self.assertIs(pool.acquire(KEY), conn)


class IdleTalkTests(PoolCase):
    """
    An idle connection must stay silent.
    """

    def test_idle_connection_talks(self) -> None:
        """
        Bytes from a connection serving no exchange (an idle pooled one)
        close it: it cannot be trusted for the next request.
        """
        pool = self.pool()
        conn = self.connection(pool)
        pool.release(conn)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(conn.transport.disconnecting)
        lose(conn)
        self.assertIsNone(pool.acquire(KEY))

    def test_readconnectionlost_idle(self) -> None:
        """
        A half-close from the server of an idle connection closes it.
        """
        pool = self.pool()
        conn = self.connection(pool)
        pool.release(conn)
        conn.readConnectionLost()
        self.assertTrue(conn.transport.disconnecting)


class ConnectTests(PoolCase):
    """
    L{Pool.connect}: a new connection per request that found none idle.
    """

    def test_connect_ip(self) -> None:
        """
        An IP address is connected to with C{connectTCP} and the pool's
        connect timeout; once connected, the requester gets the connection.
        """
        pool = self.pool(connect_timeout=3.5)
        requester = Requester()
        pool.connect(KEY, requester)
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 8080, 3.5))
        self.assertEqual(requester.ready, [])
        proto: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.assertIsInstance(proto, UpstreamProtocol)
        self.assertEqual(proto.key, KEY)
        proto.makeConnection(StringTransport())
        self.assertEqual(requester.ready, [proto])
        self.assertEqual(requester.failed, [])
        self.assertFalse(proto.in_pool)
        self.assertIsNone(pool.acquire(KEY))

    def test_connect_ipv6(self) -> None:
        """
        An IPv6 literal is connected to directly as well.
        """
        pool = self.pool()
        pool.connect(("::1", 443), Requester())
        [(host, port, _, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("::1", 443, 5.0))

    def test_each_request_its_connection(self) -> None:
        """
        Two attempts make two connections, each reported to its own
        requester.
        """
        pool = self.pool()
        first, second = Requester(), Requester()
        pool.connect(KEY, first)
        pool.connect(KEY, second)
        protos = []
        for host, port, factory, _, _ in self.reactor.tcpClients:
            proto: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
            proto.makeConnection(StringTransport())
            protos.append(proto)
        self.assertEqual(first.ready, [protos[0]])
        self.assertEqual(second.ready, [protos[1]])

    def test_timeout_504(self) -> None:
        """
        A connection attempt that times out is reported to the requester as
        504.
        """
        pool = self.pool()
        requester = Requester()
        pool.connect(KEY, requester)
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ierror.TimeoutError())
        )
        [(status, message)] = requester.failed
        self.assertEqual(status, 504)
        self.assertTrue(message)
        self.assertEqual(requester.ready, [])

    def test_refused_502(self) -> None:
        """
        A refused connection attempt is reported to the requester as 502.
        """
        pool = self.pool()
        requester = Requester()
        pool.connect(KEY, requester)
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ierror.ConnectionRefusedError())
        )
        self.assertEqual([status for status, _ in requester.failed], [502])

    def test_hostname(self) -> None:
        """
        A host name is resolved with the reactor's resolver, then the
        address found is connected to with the connect timeout.
        """
        self.reactor.installNameResolver(FakeResolver({"backend.test": ["127.0.0.9"]}))
        pool = self.pool(connect_timeout=2.0)
        requester = Requester()
        pool.connect(("backend.test", 80), requester)
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.9", 80, 2.0))
        proto: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        proto.makeConnection(StringTransport())
        [conn] = requester.ready
        self.assertIsInstance(conn, UpstreamProtocol)
        self.assertEqual(conn.key, ("backend.test", 80))
        self.assertEqual(requester.failed, [])

    def test_hostname_unresolved_502(self) -> None:
        """
        A host name that resolves to nothing is reported as 502, without
        any connection attempt.
        """
        self.reactor.installNameResolver(FakeResolver({}))
        pool = self.pool()
        requester = Requester()
        pool.connect(("nowhere.test", 80), requester)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual([status for status, _ in requester.failed], [502])
        self.assertEqual(requester.ready, [])


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Resolves names from a table, synchronously, without the network.
    """

    def __init__(self, table: dict) -> None:
        self.table = table

    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        for address in self.table.get(hostName, []):
            receiver.addressResolved(IPv4Address("TCP", address, portNumber))
        receiver.resolutionComplete()
        return resolution


class DescribeConnectFailureTests(SynchronousTestCase):
    """
    L{describe_connect_failure}: the status of a failed connection attempt.
    """

    def status(self, exception: BaseException) -> int:
        status, message = describe_connect_failure(KEY, Failure(exception))
        self.assertIsInstance(message, str)
        self.assertTrue(message)
        return status

    def test_timeouts_504(self) -> None:
        """
        A connection attempt that timed out is a gateway timeout.
        """
        self.assertEqual(self.status(ierror.TimeoutError()), 504)
        self.assertEqual(self.status(ierror.UserError()), 504)

    def test_other_failures_502(self) -> None:
        """
        Every other failure is a bad gateway, even one with no message.
        """
        for exception in (
            ierror.ConnectionRefusedError(),
            ierror.DNSLookupError("nowhere.test"),
            ierror.NoRouteError(),
            ierror.ConnectError(),
            OSError(),
            ValueError(""),
        ):
            self.assertEqual(self.status(exception), 502, exception)


class NoDelayTests(SynchronousTestCase):
    """
    L{set_no_delay} turns Nagle's algorithm off where a transport can.
    """

    def test_sets(self) -> None:
        """
        A TCP transport gets C{setTcpNoDelay(True)}.
        """
        transport = NoDelayTransport()
        set_no_delay(transport)
        self.assertEqual(transport.no_delay, [True])

    def test_without_method(self) -> None:
        """
        A transport without C{setTcpNoDelay} (a UNIX socket) is left alone.
        """
        transport = StringTransport()
        set_no_delay(transport)
        self.assertFalse(hasattr(transport, "setTcpNoDelay"))

    def test_failure_ignored(self) -> None:
        """
        A transport whose C{setTcpNoDelay} fails (a socket already closed)
        does not make the caller fail.
        """

        class Closed:
            calls = 0

            def setTcpNoDelay(self, enabled: bool) -> None:
                Closed.calls += 1
                raise OSError(9, "Bad file descriptor")

        set_no_delay(Closed())
        self.assertEqual(Closed.calls, 1)

    def test_upstream_connection(self) -> None:
        """
        Every upstream connection turns Nagle's algorithm off as it is made
        and registers a streaming producer with its transport.
        """
        pool = Pool(MemoryReactorClock())
        conn = UpstreamProtocol(pool, KEY, 65536)
        conn.requester = Requester()
        transport = NoDelayTransport()
        conn.makeConnection(transport)
        self.assertEqual(transport.no_delay, [True])
        self.assertIs(transport.producer, conn.relay)
        self.assertTrue(transport.streaming)


class NoEmptyEntryTests(PoolCase):
    """
    The pool keeps no entry for an address without an idle or held
    connection (a forward proxy meets millions of origins): every path that
    takes the last connection of an address away also drops the address.
    """

    N = 50

    def origins(self) -> List[Tuple[str, int]]:
        return [("127.0.0.1", 10000 + i) for i in range(self.N)]

    def assertEmpty(self, pool: Pool) -> None:
        self.assertEqual(len(pool.idle), 0)
        self.assertEqual(len(pool.held), 0)

    def test_used_and_closed(self) -> None:
        """
        After N distinct origins are each used (pooled, reused, closed),
        the pool's tables are empty.
        """
        pool = self.pool()
        for key in self.origins():
            conn = self.connection(pool, key)
            pool.release(conn)
            self.assertIs(pool.acquire(key), conn)
            conn.transport.loseConnection()
            lose(conn)
        self.assertEmpty(pool)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_acquire_last(self) -> None:
        """
        Taking the last idle connection of an address drops the address
        while the connection is in use.
        """
        pool = self.pool()
        conns = [self.connection(pool, key) for key in self.origins()]
        for conn in conns:
            pool.release(conn)
        self.assertEqual(len(pool.idle), self.N)
        for conn in conns:
            self.assertIs(pool.acquire(conn.key), conn)
        self.assertEmpty(pool)

    def test_acquire_only_lost(self) -> None:
        """
        An address whose idle connections are all known to be lost is
        dropped by the C{acquire} that finds nothing.
        """
        pool = self.pool()
        conn = self.connection(pool)
        pool.release(conn)
        conn.lost = True
        self.assertIsNone(pool.acquire(KEY))
        self.assertEmpty(pool)

    def test_acquire_unknown(self) -> None:
        """
        Asking for an address never seen adds no entry.
        """
        pool = self.pool()
        for key in self.origins():
            self.assertIsNone(pool.acquire(key))
        self.assertEmpty(pool)

    def test_release_over_bound(self) -> None:
        """
        A connection closed because its address has no place left (here
        C{max_idle = 0}) leaves no entry behind.
        """
        pool = self.pool(max_idle=0)
        for key in self.origins():
            conn = self.connection(pool, key)
            pool.release(conn)
            self.assertTrue(conn.transport.disconnecting)
            lose(conn)
        self.assertEmpty(pool)

    def test_release_over_bound_held(self) -> None:
        """
        With the only place taken by a held connection, a released one is
        closed without an idle entry; unholding then empties the table.
        """
        pool = self.pool(max_idle=1)
        held, extra = self.connection(pool), self.connection(pool)
        self.assertTrue(pool.hold(held))
        pool.release(extra)
        self.assertTrue(extra.transport.disconnecting)
        self.assertEqual(pool.idle, {})
        pool.unhold(held)
        self.assertEmpty(pool)

    def test_lost_while_idle(self) -> None:
        """
        Idle connections the origins close (L{Pool.forget}) take their
        addresses with them.
        """
        pool = self.pool()
        conns = [self.connection(pool, key) for key in self.origins()]
        for conn in conns:
            pool.release(conn)
        for conn in conns:
            lose(conn)
        self.assertEmpty(pool)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_forget_directly(self) -> None:
        """
        C{forget} of the last connection of an address drops the address.
        """
        pool = self.pool()
        a, b = self.connection(pool), self.connection(pool)
        pool.release(a)
        pool.release(b)
        pool.forget(a)
        self.assertEqual(len(pool.idle), 1)
        pool.forget(b)
        self.assertEmpty(pool)

    def test_idle_timeout(self) -> None:
        """
        Connections closed by the idle timeout take their addresses with
        them.
        """
        pool = self.pool(idle_timeout=10.0)
        for key in self.origins():
            pool.release(self.connection(pool, key))
        self.reactor.advance(10.0)
        self.assertEmpty(pool)

    def test_close_idle(self) -> None:
        """
        C{close_idle} leaves empty tables, and the losses that follow
        change nothing.
        """
        pool = self.pool()
        conns = [self.connection(pool, key) for key in self.origins()]
        for conn in conns:
            pool.release(conn)
        pool.close_idle()
        self.assertEmpty(pool)
        for conn in conns:
            lose(conn)
        self.assertEmpty(pool)

    def test_unhold(self) -> None:
        """
        Held connections given back (or lost while held) take their
        addresses out of C{held}.
        """
        pool = self.pool()
        conns = [self.connection(pool, key) for key in self.origins()]
        for conn in conns:
            self.assertTrue(pool.hold(conn))
        self.assertEqual(len(pool.held), self.N)
        for i, conn in enumerate(conns):
            if i % 2:
                pool.unhold(conn)
            else:
                lose(conn)
        self.assertEmpty(pool)
