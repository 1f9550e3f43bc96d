"""
Tests for L{twisted_proxy.poll}.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, List

from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy import poll

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # pragma: no cover (not Linux)
    EPollReactor = None  # type: ignore[assignment,misc]


class Reader(FileDescriptor):
    """
    One end of a socket pair in a reactor: records what it reads, or
    raises from doRead when told.
    """

    def __init__(self, reactor: Any, sock: socket.socket, fail: bool = False) -> None:
        FileDescriptor.__init__(self, reactor)
        self.sock = sock
        self.fail = fail
        self.read: List[bytes] = []
        self.lost: List[Any] = []
        self.connected = True

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        if self.fail:
            raise ValueError("a bug in a protocol")
        self.read.append(self.sock.recv(100))

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)
        FileDescriptor.connectionLost(self, reason)


class InstallTests(SynchronousTestCase):
    def setUp(self) -> None:
        if EPollReactor is None:
            raise self.skipTest("no epoll here")
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def pair(self, fail: bool = False) -> Any:
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.setblocking(False)
        reader = Reader(self.reactor, a, fail)
        self.reactor.addReader(reader)
        self.addCleanup(self.reactor.removeAll)
        return reader, b

    def test_installs_once(self) -> None:
        """
        Twisted's epoll reactor gets the fast loop once; other reactors are
        left alone.
        """
        self.assertTrue(poll.install(self.reactor))
        self.assertFalse(poll.install(self.reactor))
        self.assertFalse(poll.install(MemoryReactor()))

    def test_reads(self) -> None:
        """
        A ready descriptor is read, as with Twisted's own loop.
        """
        poll.install(self.reactor)
        reader, peer = self.pair()
        peer.send(b"hello")
        self.reactor.doIteration(1)
        self.assertEqual(reader.read, [b"hello"])
        self.reactor.doIteration(0)
        self.assertEqual(reader.read, [b"hello"])

    def test_error_disconnects(self) -> None:
        """
        An exception escaping C{doRead} is logged and disconnects the
        descriptor, as with Twisted's own loop.
        """
        poll.install(self.reactor)
        reader, peer = self.pair(fail=True)
        peer.send(b"x")
        self.reactor.doIteration(1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(reader.lost), 1)
        self.assertNotIn(reader, self.reactor.getReaders())

    def test_interrupted(self) -> None:
        """
        A poll interrupted by a signal is simply over; other errors raise.
        """
        class Poller:
            def __init__(self, code: int) -> None:
                self.code = code

            def poll(self, timeout: float, count: int) -> Any:
                raise OSError(self.code, "no")

        self.reactor._poller = Poller(errno.EINTR)
        self.assertIsNone(poll.fast_poll(self.reactor)(None))
        self.reactor._poller = Poller(errno.EBADF)
        self.assertRaises(OSError, poll.fast_poll(self.reactor), 0)
