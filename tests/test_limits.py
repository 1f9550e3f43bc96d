"""
Tests for L{twisted_proxy.limits}: the process's client connections held
under C{max_connections} (shedding, then pausing the listening ports), and
accepting paused while file descriptors run out.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.engine_harness import EngineHarness
from twisted_proxy.engine import FrontFactory
from twisted_proxy.limits import (
    FD_PAUSE_FIRST,
    FD_PAUSE_MAX,
    FD_SHED,
    ConnectionLimiter,
    count_open_files,
    lowest_free_fd,
    open_file_limit,
)


class FakeConn:
    """
    A connection as the limiter sees it.
    """

    def __init__(self, name: str, idle: bool = True) -> None:
        self.name = name
        self.idle = idle
        self.transport = StringTransport()

    def sheddable(self) -> bool:
        return self.idle

    @property
    def shed(self) -> bool:
        return bool(self.transport.disconnecting)

    def __repr__(self) -> str:
        return f"<{self.name}>"


class FakePort:
    """
    A listening port: reading or not, accepting nothing by itself.
    """

    def __init__(self, fd: int = 7) -> None:
        self.reading = True
        self.reads = 0
        self.fd = fd

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.reads += 1


class Probe:
    """
    The lowest free descriptor, or an error, as a test sets it.
    """

    def __init__(self, fd: int = 10) -> None:
        self.fd = fd
        self.error: Optional[int] = None
        self.calls = 0

    def __call__(self, port: Any) -> int:
        self.calls += 1
        if self.error is not None:
            raise OSError(self.error, "probe")
        return self.fd


class Count:
    """
    The descriptors open, as a test sets it (L{None}: cannot be counted).
    """

    def __init__(self, value: Optional[int] = None) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Optional[int]:
        self.calls += 1
        if self.value == -1:
            # the listing itself found no free descriptor
            raise OSError(errno.EMFILE, "count")
        return self.value


def limiter(
    max_connections: int,
    file_limit: Optional[int] = 1024,
    probe: Optional[Probe] = None,
    count: Optional[Count] = None,
) -> ConnectionLimiter:
    return ConnectionLimiter(
        max_connections,
        Clock(),
        lambda: file_limit,
        probe if probe is not None else Probe(),
        count if count is not None else Count(),
    )


def open_all(lim: ConnectionLimiter, *conns: FakeConn) -> None:
    for conn in conns:
        lim.opened(conn)


class CountTests(SynchronousTestCase):
    """
    Below the limit connections are only counted.
    """

    def test_counted(self) -> None:
        """
        Opened connections are held until closed; closing one twice, or
        one never opened, changes nothing.
        """
        lim = limiter(3)
        a, b = FakeConn("a"), FakeConn("b")
        open_all(lim, a, b)
        self.assertEqual(list(lim.connections), [a, b])
        lim.closed(a)
        lim.closed(a)
        lim.closed(FakeConn("never"))
        self.assertEqual(list(lim.connections), [b])
        self.assertFalse(a.shed or b.shed)

    def test_resume_mark(self) -> None:
        """
        Accepting paused at the limit resumes 1 % below it, at least one
        connection below.
        """
        self.assertEqual(limiter(10000).resume_below, 9900)
        self.assertEqual(limiter(5).resume_below, 4)
        self.assertEqual(limiter(1).resume_below, 0)


class SheddingTests(SynchronousTestCase):
    """
    At the limit a new connection makes room by closing a sheddable one,
    the oldest first.
    """

    def test_oldest_sheddable_first(self) -> None:
        """
        Busy connections are passed over; the oldest sheddable one is shed
        and no longer counted; the others stay.
        """
        lim = limiter(4)
        busy1, idle1, busy2, idle2 = (
            FakeConn("busy1", False), FakeConn("idle1"), FakeConn("busy2", False), FakeConn("idle2")
        )
        open_all(lim, busy1, idle1, busy2, idle2)
        self.assertFalse(any(c.shed for c in (busy1, idle1, busy2, idle2)))
        new = FakeConn("new")
        lim.opened(new)
        self.assertTrue(idle1.shed)
        self.assertFalse(busy1.shed or busy2.shed or idle2.shed or new.shed)
        self.assertEqual(len(lim.connections), 4)
        self.assertNotIn(idle1, lim.connections)
        self.assertEqual(lim.shed, 1)
        # its connectionLost later changes nothing
        lim.closed(idle1)
        self.assertEqual(len(lim.connections), 4)
        newer = FakeConn("newer")
        lim.opened(newer)
        self.assertTrue(idle2.shed)
        self.assertFalse(lim.paused)

    def test_new_connection_not_shed(self) -> None:
        """
        The connection just accepted is never the one shed for itself.
        """
        lim = limiter(3)
        port = FakePort()
        lim.watch(port)
        busy, first, second = FakeConn("busy", False), FakeConn("first"), FakeConn("second")
        open_all(lim, busy, first, second)
        self.assertTrue(port.reading)
        first.idle = second.idle = False  # their requests came
        new = FakeConn("new")
        lim.opened(new)
        self.assertFalse(any(c.shed for c in (busy, first, second, new)))
        # held beyond the limit, and nothing to shed: accepting pauses
        self.assertEqual(len(lim.connections), 4)
        self.assertTrue(lim.full)
        self.assertFalse(port.reading)

    def test_busy_passed_over_move_back(self) -> None:
        """
        A busy connection passed over in a search goes to the end, so the
        next search does not read it first again.
        """
        lim = limiter(3)
        busy, idle1, idle2 = FakeConn("busy", False), FakeConn("idle1"), FakeConn("idle2")
        open_all(lim, busy, idle1, idle2)
        self.assertEqual(list(lim.connections), [idle1, idle2, busy])

    def test_shed_order_after_idle(self) -> None:
        """
        Among sheddable connections the oldest goes first, whether idle
        between requests or still without a request head.
        """
        lim = limiter(3)
        conns = [FakeConn(f"c{i}") for i in range(3)]
        open_all(lim, *conns)
        shed: List[FakeConn] = []
        for i in range(3):
            lim.opened(FakeConn(f"n{i}"))
            shed.extend(c for c in conns if c.shed and c not in shed)
        self.assertEqual(shed, conns)


class PauseTests(SynchronousTestCase):
    """
    With nothing to shed, every watched port stops accepting, and resumes
    below the limit (with hysteresis) or when a connection becomes idle.
    """

    def setUp(self) -> None:
        self.lim = limiter(200)
        self.ports = [FakePort(), FakePort()]
        for port in self.ports:
            self.lim.watch(port)

    def fill(self, count: int) -> List[FakeConn]:
        conns = [FakeConn(f"c{i}", idle=False) for i in range(count)]
        open_all(self.lim, *conns)
        return conns

    def reading(self) -> List[bool]:
        return [p.reading for p in self.ports]

    def test_pause_at_limit(self) -> None:
        """
        The connection that reaches the limit with no other sheddable one
        pauses every port; nothing is shed.
        """
        conns = self.fill(199)
        self.assertEqual(self.reading(), [True, True])
        last = FakeConn("last")
        self.lim.opened(last)
        self.assertTrue(self.lim.full)
        self.assertTrue(self.lim.paused)
        self.assertEqual(self.reading(), [False, False])
        self.assertFalse(any(c.shed for c in conns + [last]))

    def test_not_paused_while_sheddable(self) -> None:
        """
        At the limit with a sheddable connection, accepting goes on: the
        next client will take its place.
        """
        self.fill(198)
        open_all(self.lim, FakeConn("idle"), FakeConn("last", idle=False))
        self.assertEqual(self.reading(), [True, True])

    def test_hysteresis(self) -> None:
        """
        Accepting resumes only when the count is 1 % below the limit.
        """
        conns = self.fill(200)
        self.lim.closed(conns[0])
        self.assertEqual(self.reading(), [False, False])
        self.lim.closed(conns[1])
        self.assertEqual(len(self.lim.connections), 198)
        self.assertEqual(self.reading(), [True, True])
        self.assertFalse(self.lim.full)
        # and pauses again at the limit
        self.fill(2)
        self.assertEqual(self.reading(), [False, False])

    def test_batch_overflow(self) -> None:
        """
        Connections accepted in the same batch after accepting paused are
        held (the count passes the limit), and nothing is shed for them.
        """
        self.fill(200)
        extra = [FakeConn("x1"), FakeConn("x2")]
        open_all(self.lim, *extra)
        self.assertEqual(len(self.lim.connections), 202)
        self.assertFalse(any(c.shed for c in extra))

    def test_idle_resumes(self) -> None:
        """
        A connection that becomes idle while accepting is paused at the
        limit resumes it; the next client displaces it.
        """
        conns = self.fill(200)
        conns[5].idle = True
        self.lim.idle(conns[5])
        self.assertEqual(self.reading(), [True, True])
        self.lim.opened(FakeConn("waiting"))
        self.assertTrue(conns[5].shed)
        self.assertEqual(self.reading(), [False, False])

    def test_idle_when_not_full(self) -> None:
        """
        An idle report while accepting is not paused changes nothing.
        """
        conns = self.fill(3)
        self.lim.idle(conns[0])
        self.assertEqual(self.reading(), [True, True])

    def test_watch_while_paused(self) -> None:
        """
        A port watched while accepting is paused is paused too; an
        unwatched port is left alone.
        """
        self.fill(200)
        late = FakePort()
        self.lim.watch(late)
        self.assertFalse(late.reading)
        self.lim.unwatch(self.ports[0])
        self.lim.closed(next(iter(self.lim.connections)))
        self.lim.closed(next(iter(self.lim.connections)))
        self.assertTrue(late.reading)
        self.assertFalse(self.ports[0].reading)


class FileTests(SynchronousTestCase):
    """
    When file descriptors run short after an accept batch, sheddable
    connections are shed and accepting pauses on the clock, doubling while
    the shortage lasts.
    """

    def setUp(self) -> None:
        self.probe = Probe()
        self.lim = limiter(10000, file_limit=1024, probe=self.probe)
        self.clock = self.lim.clock
        self.port = FakePort()
        self.lim.watch(self.port)

    def test_high_mark(self) -> None:
        """
        Running short means the lowest free descriptor is within
        RLIMIT_NOFILE / 16 (at least 16, at most half) of the limit.
        """
        self.assertEqual(self.lim.fd_high, 960)
        self.assertEqual(limiter(10, file_limit=65536).fd_high, 61440)
        self.assertEqual(limiter(10, file_limit=20).fd_high, 10)
        self.assertGreater(limiter(10, file_limit=None).fd_high, 2**40)

    def test_probe_after_each_accept_batch(self) -> None:
        """
        Each doRead of a watched port runs the port's own, then probes;
        plenty of descriptors: nothing happens.
        """
        self.port.doRead()
        self.port.doRead()
        self.assertEqual(self.port.reads, 2)
        self.assertEqual(self.probe.calls, 2)
        self.assertTrue(self.port.reading)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_emfile_backoff(self) -> None:
        """
        EMFILE pauses accepting for 0.1 s, then 0.2, 0.4, ... up to 1 s
        while it lasts; once descriptors are free again accepting resumes
        and the next shortage starts at 0.1 s again.
        """
        self.probe.error = errno.EMFILE
        self.port.doRead()
        self.assertFalse(self.port.reading)
        self.assertTrue(self.lim.files_short)
        delays = []
        for _ in range(6):
            (call,) = self.clock.getDelayedCalls()
            delays.append(round(call.getTime() - self.clock.seconds(), 6))
            self.clock.advance(delays[-1])
            self.assertFalse(self.port.reading)
        self.assertEqual(delays, [FD_PAUSE_FIRST, 0.2, 0.4, 0.8, FD_PAUSE_MAX, FD_PAUSE_MAX])
        self.probe.error = None
        self.clock.advance(FD_PAUSE_MAX)
        self.assertTrue(self.port.reading)
        self.assertFalse(self.lim.files_short)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.probe.error = errno.ENFILE
        self.port.doRead()
        (call,) = self.clock.getDelayedCalls()
        self.assertAlmostEqual(call.getTime() - self.clock.seconds(), FD_PAUSE_FIRST)

    def test_near_limit(self) -> None:
        """
        The lowest free descriptor at the high mark counts as running
        short; below it does not.
        """
        self.probe.fd = 959
        self.port.doRead()
        self.assertTrue(self.port.reading)
        self.probe.fd = 960
        self.port.doRead()
        self.assertFalse(self.port.reading)

    def test_estimate_recounted(self) -> None:
        """
        Every accepted connection adds one to the estimate of descriptors
        open (closes do not take any off); when it reaches the high mark
        they are counted, and only the count decides (the lowest free
        descriptor may be low when shed connections left holes).
        """
        count = Count(500)
        lim = limiter(10000, file_limit=1024, probe=self.probe, count=count)
        port = FakePort()
        lim.watch(port)
        lim.fd_used = 958
        open_all(lim, FakeConn("a"), FakeConn("b"))
        lim.closed(next(iter(lim.connections)))
        self.assertEqual(lim.fd_used, 960)
        port.doRead()
        self.assertEqual(count.calls, 1)
        self.assertEqual(lim.fd_used, 500)
        self.assertTrue(port.reading)
        port.doRead()
        self.assertEqual(count.calls, 1)
        count.value = 970
        lim.fd_used = 959
        lim.opened(FakeConn("c"))
        port.doRead()
        self.assertEqual(lim.fd_used, 970)
        self.assertFalse(port.reading)
        # counted again at each retry
        count.value = 900
        lim.clock.advance(FD_PAUSE_FIRST)
        self.assertEqual(count.calls, 3)
        self.assertTrue(port.reading)

    def test_count_at_the_limit(self) -> None:
        """
        When not even the count finds a free descriptor, descriptors are
        short, whatever low number the probe found free (holes left by
        shed connections): accepting stays paused, and resumes only once a
        count succeeds under the high mark.
        """
        count = Count(-1)
        lim = limiter(10000, file_limit=1024, probe=self.probe, count=count)
        port = FakePort()
        lim.watch(port)
        self.probe.fd = 464
        lim.fd_used = 1000
        port.doRead()
        self.assertFalse(port.reading)
        lim.clock.advance(FD_PAUSE_FIRST)
        self.assertFalse(port.reading)
        count.value = 700
        lim.clock.advance(FD_PAUSE_FIRST * 2)
        self.assertTrue(port.reading)
        self.assertEqual(lim.fd_used, 700)

    def test_sheds_first(self) -> None:
        """
        A shortage sheds up to FD_SHED sheddable connections (oldest
        first, busy ones kept), and again at each retry while it lasts.
        """
        busy = FakeConn("busy", idle=False)
        self.lim.opened(busy)
        idle = [FakeConn(f"i{i}") for i in range(FD_SHED + 5)]
        open_all(self.lim, *idle)
        self.probe.error = errno.EMFILE
        self.port.doRead()
        self.assertEqual([c.shed for c in idle], [True] * FD_SHED + [False] * 5)
        self.assertFalse(busy.shed)
        self.clock.advance(FD_PAUSE_FIRST)
        self.assertTrue(all(c.shed for c in idle))
        self.assertFalse(busy.shed)
        self.assertEqual(self.lim.shed, FD_SHED + 5)

    def test_batch_capped(self) -> None:
        """
        An accept batch is capped to the room left under max_connections
        and before the descriptors' high mark, and is at least one.
        """
        lim = limiter(10, probe=self.probe)
        port = FakePort()
        port.numberAccepts = 100  # type: ignore[attr-defined]
        lim.watch(port)
        open_all(lim, *[FakeConn(f"c{i}") for i in range(7)])
        port.doRead()
        self.assertEqual(port.numberAccepts, 3)  # type: ignore[attr-defined]
        # the probe after that batch: 2 accepts left before the high mark
        self.probe.fd = lim.fd_high - 2
        port.doRead()
        port.doRead()
        self.assertEqual(port.numberAccepts, 2)  # type: ignore[attr-defined]
        open_all(lim, *[FakeConn(f"d{i}") for i in range(4)])
        port.doRead()
        self.assertEqual(port.numberAccepts, 1)  # type: ignore[attr-defined]

    def test_other_errors(self) -> None:
        """
        A probe failing for another reason is not a shortage.
        """
        self.probe.error = errno.EBADF
        self.port.doRead()
        self.assertTrue(self.port.reading)

    def test_with_full(self) -> None:
        """
        A port paused both at the limit and for descriptors resumes only
        when both are over.
        """
        lim = limiter(2, probe=self.probe)
        port = FakePort()
        lim.watch(port)
        a, b = FakeConn("a", idle=False), FakeConn("b", idle=False)
        open_all(lim, a, b)
        self.probe.error = errno.EMFILE
        port.doRead()
        lim.closed(a)
        self.assertFalse(port.reading)
        self.probe.error = None
        lim.clock.advance(FD_PAUSE_FIRST)
        self.assertTrue(port.reading)

    def test_stop(self) -> None:
        """
        Stopping the service cancels the retry and leaves every port as
        its own again.
        """
        self.lim.startService()
        self.probe.error = errno.EMFILE
        self.port.doRead()
        self.lim.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.lim.ports, [])
        self.assertNotIn("doRead", self.port.__dict__)

    def test_real_probe(self) -> None:
        """
        The default probe names a free descriptor other than the listening
        socket's own; the default count sees one more socket; the default
        file limit is the soft RLIMIT_NOFILE.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        fd = lowest_free_fd(sock)
        self.assertIsInstance(fd, int)
        self.assertNotEqual(fd, sock.fileno())
        before = count_open_files()
        if before is not None:
            other = socket.socket()
            self.addCleanup(other.close)
            self.assertEqual(count_open_files(), before + 1)
            self.assertGreater(before, 2)
        limit = open_file_limit()
        if limit is not None:
            self.assertGreater(limit, fd)


class FrontHookTests(SynchronousTestCase):
    """
    An HTTP front connection reports itself to its factory's limiter and
    says when it may be shed.
    """

    def setUp(self) -> None:
        self.h = EngineHarness(idle_timeout=5.0)
        self.lim = limiter(100)
        self.factory = FrontFactory(self.h.ctx)
        self.factory.limiter = self.lim

    def connect(self) -> Any:
        front = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40002))
        front.makeConnection(transport)
        return front

    def test_lifecycle(self) -> None:
        """
        Sheddable until a whole request head has come, not while the
        exchange runs, sheddable again when idle; uncounted once lost.
        """
        front = self.connect()
        self.assertIn(front, self.lim.connections)
        self.assertTrue(front.sheddable())
        front.dataReceived(b"GET http://127.0.0.1:8090/x HTTP/1.1\r\nHo")
        self.assertTrue(front.sheddable())
        front.dataReceived(b"st: 127.0.0.1:8090\r\n\r\n")
        self.assertFalse(front.sheddable())
        up, _ = self.h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(front.sheddable())
        front.connectionLost(None)
        self.assertNotIn(front, self.lim.connections)

    def test_idle_reported_when_full(self) -> None:
        """
        A connection becoming idle while accepting is paused at the limit
        tells the limiter, which accepts again.
        """
        front = self.connect()
        front.dataReceived(b"GET http://127.0.0.1:8090/x HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n")
        self.lim.full = True
        up, _ = self.h.connect_upstream()
        up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertFalse(self.lim.full)
