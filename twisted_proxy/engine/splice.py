# -*- test-case-name: tests.test_body_splice -*-
"""
The rest of a large response body moved by splice(2), never through Python.

Once an upstream response's head has been relayed and what came with it
sent, a C{Content-Length} body of at least L{SPLICE_MIN} bytes still to
come, relayed as it is (no response filter, transform, cache fill or
response buffer in the way, both connections plain TCP), goes from the
upstream socket into a pipe and from the pipe into the client's socket in
the kernel: no copy into Python, no Python call per read. The upstream
transport's C{doRead} is replaced for that time (as the tunnels' zero-copy
does, tunnel.py).

Only while the client keeps up: the first time the client's socket does
not take what the pipe holds, the bytes in the pipe are read back and the
body goes on the ordinary way (Twisted's reads, back-pressure, or the
response buffer that frees the upstream: the slow-client protection
stays). An upstream that closes early is a truncated body, as always; a
client that goes away ends the exchange, as always.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import main
from twisted.logger import Logger

from twisted_proxy.flow import plain_tcp, send_queued, write_buffer_empty
from twisted_proxy.http import policy
from twisted_proxy.tunnel import _F_SETPIPE_SZ, _SPLICE_FLAGS, ZERO_COPY, _pipe_fd_budget, _PipeFds, drain_pipe

log = Logger()

#: bodies with less than this still to come after the first read are
#: relayed by Python (a pipe and two system calls more are not worth it)
SPLICE_MIN = 32 * 1024
#: bytes moved by one splice(2)
CHUNK = 1 << 20
#: empty pipes kept for the next body (a pipe costs four system calls to
#: make and close, more than the splice itself)
_idle_pipes: list = []
IDLE_PIPES = 64
#: the pipe descriptors bodies may hold (tunnel.py's budget, read once)
_budget: list = []


def splice_possible(conn: Any, front: Any) -> bool:
    """
    Whether a body could ever be spliced between C{conn}'s transport and
    C{front}'s (splice(2) here, both plain TCP).
    """
    return ZERO_COPY and plain_tcp(conn.transport) and plain_tcp(front.transport)


def can_splice(ex: Any, conn: Any, remaining: int) -> bool:
    """
    Whether the C{remaining} body bytes of the response C{conn} is reading
    for C{ex} may be spliced (see the module docstring).
    """
    if not ZERO_COPY or remaining < SPLICE_MIN:
        return False
    if conn.parser.sink is not ex or ex.rbuf is not None or ex.finished:
        return False
    if getattr(ex, "out_framing", None) != policy.CONTENT_LENGTH:
        return False
    front = ex.front.transport
    back = conn.transport
    if not plain_tcp(front) or not plain_tcp(back) or front.disconnecting or back.disconnecting:
        return False
    if back.producer is not None and back.producerPaused:
        return False
    # the head and the first bytes go first
    send_queued(front)
    if not write_buffer_empty(front) or not write_buffer_empty(back):
        return False
    if _idle_pipes:
        return True
    if not _budget:
        _budget.append(_pipe_fd_budget())
    return _PipeFds.open + 2 <= _budget[0]


def _take_pipe() -> tuple:
    if _idle_pipes:
        return _idle_pipes.pop()  # type: ignore[no-any-return]
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _PipeFds.open += 2
    try:
        import fcntl

        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # the default pipe size works too
    return read_fd, write_fd


def _give_pipe(read_fd: int, write_fd: int, empty: bool) -> None:
    if empty and len(_idle_pipes) < IDLE_PIPES:
        _idle_pipes.append((read_fd, write_fd))
        return
    _PipeFds.open -= 2
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


class BodySplice:
    """
    The rest of one response body, from C{conn}'s socket to C{ex}'s
    client's, through a pipe.
    """

    def __init__(self, leg: Any, conn: Any, ex: Any, remaining: int) -> None:
        self.leg = leg
        self.conn = conn
        self.ex = ex
        self.remaining = remaining
        #: bytes in the pipe, not yet taken by the client
        self.pending = 0
        self.src = conn.transport
        self.dst = ex.front.transport
        self.read_fd, self.write_fd = _take_pipe()
        self.src_fd = self.src.fileno()
        self.dst_fd = self.dst.fileno()
        self.active = True
        conn.body_splice = self
        self.src.doRead = self.do_read

    # the replaced method

    def do_read(self) -> Any:
        try:
            count = os.splice(self.src_fd, self.write_fd, min(CHUNK, self.remaining), flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return None
        except OSError:
            self.stop()
            return main.CONNECTION_LOST
        if count == 0:
            # the upstream closed before the end: a truncated body, the
            # ordinary way (its connectionLost)
            self.stop()
            return main.CONNECTION_DONE
        self.moved(count)
        try:
            drained = self.drain()
        except OSError:
            return self.client_gone()
        if not drained:
            self.fall_back()
        elif not self.remaining:
            self.complete()
        return None

    # the steps

    def moved(self, count: int) -> None:
        self.remaining -= count
        self.conn.parser.remaining = self.remaining
        self.pending += count
        ex = self.ex
        ex.bytes_out += count
        ex.front.touch()

    def drain(self) -> bool:
        """
        Move what the pipe holds to the client; True when it is empty.
        """
        self.pending = drain_pipe(self.read_fd, self.dst_fd, self.pending)
        return not self.pending

    def fall_back(self) -> None:
        """
        The client did not take everything: what the pipe holds goes on the
        ordinary way, and so does the rest of the body.
        """
        held = b""
        while self.pending:
            try:
                data = os.read(self.read_fd, self.pending)
            except BlockingIOError:
                break
            if not data:
                break
            held += data
            self.pending -= len(data)
        self.stop()
        conn = self.conn
        parser = conn.parser
        writer = conn.writer
        writer.out = []
        if held:
            parser.sink.response_body(held)
        if not self.remaining:
            self._end(writer)
            return
        writer.flush()

    def complete(self) -> None:
        """
        The whole body went through: the response ends as when the last
        bytes come through Python.
        """
        self.stop()
        writer = self.conn.writer
        writer.out = []
        self._end(writer)

    def _end(self, writer: Any) -> None:
        conn = self.conn
        parser = conn.parser
        parser.remaining = 0
        parser.done = True
        parser._stale = True
        parser.sink.response_end()
        writer.flush()
        leg = conn.leg
        if leg is not None:
            leg.upstream_done(conn, False)

    def client_gone(self) -> Any:
        """
        The client's socket failed: the exchange ends (its connection is
        cut, which closes the upstream one).
        """
        self.stop()
        self.dst.abortConnection()
        return None

    def stop(self) -> None:
        """
        Give the upstream transport its own C{doRead} back; close the pipe.
        """
        if not self.active:
            return
        self.active = False
        self.conn.body_splice = None
        self.src.__dict__.pop("doRead", None)
        _give_pipe(self.read_fd, self.write_fd, not self.pending)
        self.read_fd = self.write_fd = -1
