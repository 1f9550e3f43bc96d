# -*- test-case-name: tests.test_tunnel -*-
"""
Two connections spliced into one byte stream (CONNECT, WebSocket after a
101, raw TCP listeners).

As in C{twisted.protocols.portforward}, each transport is the other's
producer, so a slow reader throttles a fast writer. On top of that: a
half-close (FIN) on one side is passed on as a half-close to the other, both
connections close when both directions are done or either side is lost, and
an idle timeout on the injected clock ends a tunnel where no byte moved.

The two protocols stay in charge of their connections and call the splice's
C{data_from_*}, C{read_closed_*} and C{lost_*} methods.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from twisted_proxy.flow import plain_tcp, send_queued, write_buffer_empty, write_soon

log = Logger()

#: read size and write-buffer limit of spliced TCP transports
BULK_BUFFER = 131072

#: splice(2) (Linux, Python 3.10+): tunnel bytes move from socket to pipe to
#: socket inside the kernel, never copied into Python
ZERO_COPY = hasattr(os, "splice") and hasattr(os, "pipe2") and sys.platform.startswith("linux")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031


def drain_pipe(read_fd: int, dst_fd: int, pending: int) -> int:
    """
    Move the C{pending} bytes a pipe holds to the socket C{dst_fd} by
    splice(2), as far as it takes them now: the bytes still in the pipe.

    @raise OSError: the socket failed.
    """
    while pending:
        try:
            moved = os.splice(read_fd, dst_fd, pending, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            break
        if moved == 0:
            break
        pending -= moved
    return pending


def _pipe_fd_budget() -> int:
    """
    How many file descriptors tunnels may spend on pipes (two per
    direction): a quarter of the process's limit, so that sockets keep
    the rest; past it, tunnels copy instead.
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 65536
    return soft // 4


class _PipeFds:
    """
    The pipe descriptors tunnels hold now.
    """

    open = 0


@implementer(IPushProducer)
class _Pauser:
    """
    A transport as a producer whose loss the splice handles itself.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Splice:
    """
    Bytes from the front (client) connection go to the back (upstream)
    connection and the other way round.

    @ivar bytes_in: bytes received from the front.
    @ivar bytes_out: bytes sent to the front.
    """

    def __init__(
        self,
        clock: Any,
        idle_timeout: float,
        on_close: Optional[Callable[["Splice", str], None]] = None,
    ) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.on_close = on_close
        self.front: Any = None
        self.back: Any = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self.why = ""
        self._front_read_closed = False
        self._back_read_closed = False
        self._deadline = 0.0
        self._timer: Any = None
        self._pipes: list = []
        self._lost = 0

    def start(self, front: Any, back: Any, to_back: bytes = b"", to_front: bytes = b"") -> None:
        """
        Join the transports C{front} and C{back}; C{to_back} and C{to_front}
        are bytes already read that belong to the tunnel.
        """
        self.front = front
        self.back = back
        for transport in (front, back):
            # bulk data: read (and buffer before pausing the other side) in
            # larger steps, a quarter as many trips through Python
            if getattr(transport, "bufferSize", 0) and transport.bufferSize < BULK_BUFFER:
                transport.bufferSize = BULK_BUFFER
        front.registerProducer(_Pauser(back), True)
        back.registerProducer(_Pauser(front), True)
        if to_back:
            self.bytes_in += len(to_back)
            write_soon(back, to_back)
        if to_front:
            self.bytes_out += len(to_front)
            write_soon(front, to_front)
        self._deadline = self.clock.seconds() + self.idle_timeout
        self._timer = self.clock.callLater(self.idle_timeout, self._check_idle)
        if ZERO_COPY:
            # splice(2) writes around the transports: their queued bytes first
            send_queued(front)
            send_queued(back)
        if (
            ZERO_COPY
            and _PipeFds.open + 4 <= _pipe_fd_budget()
            and plain_tcp(front)
            and plain_tcp(back)
            and write_buffer_empty(front)
            and write_buffer_empty(back)
            and not front.disconnecting
            and not back.disconnecting
        ):
            try:
                self._pipes = [
                    _ZeroCopy(self, front, back, inbound=True),
                    _ZeroCopy(self, back, front, inbound=False),
                ]
            except OSError as e:  # no pipes left: the copying path still works
                log.info("tunnel without splice(2): {error}", error=e)
                for pipe in self._pipes:
                    pipe.undo()
                self._pipes = []

    def data_from_front(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._deadline = self.clock.seconds() + self.idle_timeout
        write_soon(self.back, data)

    def data_from_back(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._deadline = self.clock.seconds() + self.idle_timeout
        write_soon(self.front, data)

    def read_closed_front(self) -> None:
        """
        The client half-closed: pass the FIN on to the upstream.
        """
        self._front_read_closed = True
        if self._back_read_closed:
            self.close("closed")
        else:
            _half_close(self.back)

    def read_closed_back(self) -> None:
        """
        The upstream half-closed: pass the FIN on to the client.
        """
        self._back_read_closed = True
        if self._front_read_closed:
            self.close("closed")
        else:
            _half_close(self.front)

    def lost_front(self) -> None:
        self._lost += 1
        self.close("client closed" if not self._front_read_closed else "closed")
        self._release_pipes()

    def lost_back(self) -> None:
        self._lost += 1
        self.close("upstream closed" if not self._back_read_closed else "closed")
        self._release_pipes()

    def _release_pipes(self) -> None:
        if self._lost >= 2:
            for pipe in self._pipes:
                pipe.release()
            self._pipes = []

    def moved(self, inbound: bool, count: int) -> None:
        """
        C{count} bytes went through the kernel (zero-copy path).
        """
        if inbound:
            self.bytes_in += count
        else:
            self.bytes_out += count
        self._deadline = self.clock.seconds() + self.idle_timeout

    def close(self, why: str, abort: bool = False) -> None:
        """
        End the tunnel: both connections close after flushing what they
        hold (or at once, C{abort}, when a peer that stopped reading would
        make the flush wait forever).
        """
        if self.closed:
            return
        self.closed = True
        self.why = why
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for transport in (self.front, self.back):
            if transport is not None:
                try:
                    transport.unregisterProducer()
                except Exception:
                    pass
                if abort and hasattr(transport, "abortConnection"):
                    transport.abortConnection()
                else:
                    transport.loseConnection()
        if self.on_close is not None:
            self.on_close(self, why)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        remaining = self._deadline - self.clock.seconds()
        if remaining > 0:
            self._timer = self.clock.callLater(remaining, self._check_idle)
            return
        log.info("tunnel idle for {seconds}s, closing", seconds=self.idle_timeout)
        self.close("idle timeout", abort=True)


class _ZeroCopy:
    """
    One direction of a tunnel between two plain TCP transports, moved by
    splice(2) through a pipe: the source's C{doRead} and the destination's
    C{doWrite} are replaced on those two objects. Back-pressure: while the
    pipe holds bytes the destination did not take, the source is not read
    and the destination waits for writability. End of stream and errors are
    returned to the reactor exactly as Twisted's own C{doRead} does, so
    half-close and connection loss reach the protocols as usual.
    """

    def __init__(self, splice: Splice, src: Any, dst: Any, inbound: bool) -> None:
        self.splice = splice
        self.src = src
        self.dst = dst
        self.inbound = inbound
        self.pending = 0
        self.read_fd = self.write_fd = -1
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _PipeFds.open += 2
        try:
            import fcntl

            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, _CHUNK)
        except OSError:
            pass  # the default pipe size (64 KiB) works too
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.original_do_write = dst.doWrite
        src.doRead = self.do_read
        dst.doWrite = self.do_write

    def do_read(self) -> Any:
        from twisted.internet import main

        if self.pending:
            self.src.stopReading()
            return None
        try:
            count = os.splice(self.src_fd, self.write_fd, _CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if count == 0:
            return main.CONNECTION_DONE
        self.pending = count
        self.splice.moved(self.inbound, count)
        try:
            drained = self.drain()
        except OSError:
            # the destination is gone: its own read side will say so
            self.pending = 0
            return None
        if not drained:
            self.src.stopReading()
            self.dst.startWriting()
        return None

    def drain(self) -> bool:
        """
        Move what the pipe holds to the destination; True when it is empty.
        """
        self.pending = drain_pipe(self.read_fd, self.dst_fd, self.pending)
        return not self.pending

    def do_write(self) -> Any:
        from twisted.internet import main

        if self.pending:
            try:
                drained = self.drain()
            except OSError:
                return main.CONNECTION_LOST
            if not drained:
                return None
            if not self.src.disconnected:
                self.src.startReading()
        # then Twisted's own: its (empty) buffer, stopWriting, and the
        # close or half-close that may be waiting for the pipe to drain
        return self.original_do_write()

    def undo(self) -> None:
        """
        Give the two transports their own methods back (setup failed).
        """
        self.src.__dict__.pop("doRead", None)
        self.dst.__dict__.pop("doWrite", None)
        self.release()

    def release(self) -> None:
        if self.read_fd >= 0:
            _PipeFds.open -= 2
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.read_fd = self.write_fd = -1


def _half_close(transport: Any) -> None:
    lose_write = getattr(transport, "loseWriteConnection", None)
    if lose_write is not None:
        lose_write()
    else:
        transport.loseConnection()
