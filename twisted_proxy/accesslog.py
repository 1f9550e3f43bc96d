# -*- test-case-name: tests.test_accesslog -*-
"""
The compliance access log: one JSON object per line, per request or tunnel.

This is a small buffered writer of our own rather than a C{twisted.logger}
observer: an observer costs about 16 µs an event, and the proxy has about
65 µs for a whole request at 15,000 req/s.  A line here is assembled by hand
from C{json}'s C string escaper and costs a few microseconds.

Lines are kept in memory and written out when more than L{FLUSH_BYTES} are
waiting, at most L{FLUSH_DELAY} seconds after the first unwritten line (one
timer, not one per line), and on L{AccessLog.close}.  A failing write (disk
full, stdout closed) never raises into the proxy: it is reported once through
C{twisted.logger} and the lines are dropped.

Writing never blocks the reactor.  A pipe, a terminal or a socket (standard
output under a pager, C{| logger}, systemd's journal) is written without
blocking: a pipe or terminal through a non-blocking file description (for
standard output a description of its own where Linux's C{/proc/self/fd}
gives one, so that C{print} and twistd's log keep their blocking writes;
elsewhere the flag is set on standard output itself), a socket with
C{MSG_DONTWAIT}.  What the reader does not take yet stays in memory and is
written when the reactor says the descriptor is writable again (or, with a
reactor that cannot watch descriptors, every L{RETRY_DELAY} seconds), whole
lines in order.  A regular file is written with plain writes (a disk does
not stall like a pipe).  Either way at most L{MAX_BUFFER} bytes of lines
wait: a line logged beyond that is dropped and counted
(L{AccessLog.dropped}, the admin listener's C{access_log_dropped}); one
warning is logged per episode, and one info line with the count once the
reader has caught up.  At shutdown L{AccessLogService} waits up to
L{DRAIN_TIMEOUT} seconds for the rest to be written.

Rotation: SIGUSR1 reopens the file, as C{nginx -s reopen}; logrotate's
C{postrotate} sends it, after renaming the file away.  L{AccessLog.reopen}
first writes every line logged so far to the old (renamed) file, closes it,
and opens the path again (created if missing, for appending), so each line
is in exactly one of the two files, whole.  If the path cannot be opened
(the directory is gone or not writable), a warning says why and the lines
keep going to the old file.  Standard output and pipes are not reopened:
for them, and for C{access_log = "off"}, a reopen does nothing.

Every line has these fields, in this order::

    {"time": "2026-11-26T15:04:05.123Z", "listener": "outbound",
     "client": "127.0.0.1", "method": "GET", "url": "http://example.com/",
     "status": 200, "bytes_in": 0, "bytes_out": 612, "duration_ms": 1.234,
     "upstream": "example.com:80", "decision": "allow", "rule": "",
     "cache": ""}

C{cache} is what a listener's cache did: C{hit}, C{miss}, C{stale},
C{revalidated} or C{bypass} (empty on listeners without a cache).
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import sys
import time
from collections import deque
from typing import IO, Any, Callable, Deque

from zope.interface import implementer
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime, IWriteDescriptor
from twisted.logger import Logger

__all__ = [
    "DRAIN_TIMEOUT",
    "FLUSH_BYTES",
    "FLUSH_DELAY",
    "MAX_BUFFER",
    "RETRY_DELAY",
    "AccessLog",
    "AccessLogService",
    "NullAccessLog",
    "open_access_log",
]

#: Write out the buffer as soon as more than this many bytes are waiting.
FLUSH_BYTES = 64 * 1024

#: Write out the buffer at most this many seconds after its first line.
FLUSH_DELAY = 1.0

#: Bytes of lines that may wait to be written (a slow or stopped reader):
#: about 16,000 lines of 250 bytes, a second of a busy proxy.  A line logged
#: beyond it is dropped and counted.
MAX_BUFFER = 4 * 1024 * 1024

#: Seconds between attempts to write to a full pipe when the reactor cannot
#: say when it is writable (a clock without C{IReactorFDSet}).
RETRY_DELAY = 0.05

#: Seconds L{AccessLogService} waits at shutdown for the lines still
#: waiting to be written.
DRAIN_TIMEOUT = 2.0

#: The field names, in the order every line has them.
FIELDS = (
    "time",
    "listener",
    "client",
    "method",
    "url",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream",
    "decision",
    "rule",
    "cache",
)

# The C escaper behind json.dumps(ensure_ascii=True): returns the quoted JSON
# string, escapes quotes, backslashes, control characters, non-ASCII and lone
# surrogates, so every line is plain ASCII whatever the client sent.
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii

#: quoted line segments remembered per log (listener, client and method;
#: upstream, decision, rule and cache), each memo starting over when full
SEGMENTS = 1024

# duration_ms beyond this (about 31,000 years), or NaN, is written as 0: the
# ".3f" format would otherwise print "nan"/"inf", which are not JSON.
_MAX_DURATION = 1e15

_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)

_log = Logger(namespace="twisted_proxy.accesslog")

# send() without blocking, whatever the socket's own flags (0: no such flag)
_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)

# the largest write a pipe takes whole or not at all (512 at least: POSIX)
_PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)


def _text(value: object) -> str:
    """
    Coerce a field that should have been a L{str}: bytes are decoded as
    UTF-8 (undecodable bytes kept as escapes), anything else through
    L{str}; L{None} becomes the empty string.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _number(value: object) -> int:
    """
    Coerce a count that should have been an L{int}; 0 when it is not a number.
    """
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def _duration(value: object) -> float:
    """
    Coerce a duration to a finite float rounded to 3 decimals; 0.0 otherwise.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    if not -_MAX_DURATION < number < _MAX_DURATION:
        return 0.0
    return round(number, 3)


class AccessLog:
    """
    A buffered writer of access log lines to a binary file, a pipe or
    standard output, which never blocks the reactor.

    @ivar enabled: C{True}: callers may skip assembling arguments when False.
    @ivar max_buffer: bytes of lines it may hold that are not written yet.
    @ivar dropped: lines lost since the log was opened: logged while
        C{max_buffer} bytes were waiting, lost to a failed write, or still
        unwritten at L{close}.
    """

    enabled = True

    def __init__(
        self,
        stream: IO[bytes] | None,
        reactor: IReactorTime,
        *,
        name: str = "",
        owned: bool = True,
        max_buffer: int = MAX_BUFFER,
        path: str | None = None,
    ) -> None:
        """
        @param stream: a binary file open for writing; it is flushed after
            every write (so a C{BufferedWriter} such as C{sys.stdout.buffer}
            is fine).  If it is a pipe, a terminal or a socket, its file
            descriptor is written to without blocking (see the module's
            docstring).
        @param reactor: the clock for timestamps and timers; if it also
            provides C{IReactorFDSet}, it says when a pipe that was full is
            writable again.
        @param name: what the error report calls this log (a path or "-").
        @param owned: close C{stream} in L{close}; C{False} for stdout.
        @param max_buffer: see L{MAX_BUFFER}.
        @param path: the path C{stream} was opened from (owned), which
            L{reopen} opens again; L{None} for a stream handed over.
        """
        self._stream = stream
        self._path = path
        self._reactor = reactor
        self.name = name
        self._owned = owned
        self.max_buffer = max_buffer
        self.dropped = 0
        # lines not yet handed to the writer
        self._lines: list[str] = []
        self._size = 0
        self._timer: IDelayedCall | None = None
        # bytes handed to the writer, not written yet: whole lines, the
        # first chunk written up to _offset
        self._out: Deque[bytes] = deque()
        self._offset = 0
        self._out_size = 0
        # how bytes are written: a descriptor of a pipe, a terminal or a
        # socket (non-blocking), or else the stream itself; set at the first
        # write, so a log that writes nothing touches nothing
        self._prepared = False
        self._fd: int | None = None
        self._own_fd = False
        # the flag was set on a descriptor shared with others (stdout where
        # no description of our own could be had): cleared again at close
        self._shared_nonblocking = False
        self._sock: socket.socket | None = None
        self._atomic = False
        # waiting for a full pipe: a writer registered with the reactor, or
        # a retry timer
        self._writer: _Writable | None = None
        self._retry: IDelayedCall | None = None
        self._written: list[Deferred[None]] = []
        self._second = -1
        self._prefix = ""
        # the line's start for the last millisecond a line was logged in
        self._millisecond = -1
        self._stamp = ""
        # quoted segments of the lines, by their fields (see SEGMENTS)
        self._heads: dict[tuple, str] = {}
        self._tails: dict[tuple, str] = {}
        # a failing write: reported once, then counted until one succeeds
        self._failed = False
        self._dropped = 0
        # an episode of a full buffer: reported once, counted until the
        # buffer is written out
        self._full = False
        self._full_dropped = 0
        self.closed = False

    @property
    def pending(self) -> int:
        """
        Bytes of lines logged and not written yet.
        """
        return self._size + self._out_size

    @staticmethod
    def _segment(memo: dict[tuple, str], key: tuple, text: str) -> str:
        """
        Remember C{text}, the quoted form of the fields C{key}, in C{memo}
        (bounded: a full memo starts over).
        """
        if len(memo) >= SEGMENTS:
            memo.clear()
        memo[key] = text
        return text

    def _time_prefix(self, second: int) -> str:
        """
        Format C{YYYY-MM-DDTHH:MM:SS.} for a whole UTC second, cached so the
        formatting happens once a second, not once a line.
        """
        self._second = second
        self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return self._prefix

    def log(
        self,
        listener: str,
        client: str,
        method: str,
        url: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_ms: float,
        upstream: str,
        decision: str,
        rule: str,
        cache: str = "",
    ) -> None:
        """
        Record one request or tunnel.  Never raises, never blocks: with
        L{max_buffer} bytes waiting, the line is dropped and counted in
        L{dropped}.

        @param listener: the listener's name.
        @param client: the client's address.
        @param method: the request method (C{CONNECT} for a tunnel).
        @param url: the request target, or C{host:port} for CONNECT.
        @param status: the status sent to the client.
        @param bytes_in: body bytes received from the client.
        @param bytes_out: bytes sent to the client.
        @param duration_ms: milliseconds from request head to the end.
        @param upstream: the server or origin used, C{host:port}, or empty.
        @param decision: C{allow}, C{deny} or C{error}.
        @param rule: the filter or rule that decided, or empty.
        @param cache: what the listener's cache did (C{hit}, C{miss},
            C{stale}, C{revalidated}, C{bypass}), or empty.
        """
        if self.closed:
            return
        # Nearest millisecond: flooring would print 1.123 s as .122.
        now = round(self._reactor.seconds() * 1000.0)
        if now == self._millisecond:
            stamp = self._stamp
        else:
            second, millis = divmod(now, 1000)
            prefix = self._prefix if second == self._second else self._time_prefix(second)
            stamp = self._stamp = f'{{"time":"{prefix}{millis:03d}Z",'
            self._millisecond = now
        # the quoted fields, kept per value: the same few repeat on every
        # line (listener, client, method, upstream, decision...)
        try:
            heads = self._heads
            head = heads.get((listener, client, method))
            if head is None:
                head = self._segment(
                    heads,
                    (listener, client, method),
                    f'"listener":{_quote(listener)},"client":{_quote(client)},"method":{_quote(method)},',
                )
            tails = self._tails
            tail = tails.get((upstream, decision, rule, cache))
            if tail is None:
                tail = self._segment(
                    tails,
                    (upstream, decision, rule, cache),
                    f'"upstream":{_quote(upstream)},"decision":{_quote(decision)},'
                    f'"rule":{_quote(rule)},"cache":{_quote(cache)}}}\n',
                )
            if type(status) is not int or type(bytes_in) is not int or type(bytes_out) is not int:
                raise TypeError("not an int")
            if not -_MAX_DURATION < duration_ms < _MAX_DURATION:
                duration_ms = 0.0
            line = (
                f'{stamp}{head}"url":{_quote(url)},"status":{status},"bytes_in":{bytes_in},'
                f'"bytes_out":{bytes_out},"duration_ms":{duration_ms:.3f},{tail}'
            )
        except Exception:
            # Some field is not of its declared type (bytes, None, ...):
            # take the slow, forgiving road rather than lose the line.
            second, millis = divmod(now, 1000)
            prefix = self._prefix if second == self._second else self._time_prefix(second)
            line = self._slow_line(
                prefix + "%03dZ" % (millis,),
                listener,
                client,
                method,
                url,
                status,
                bytes_in,
                bytes_out,
                duration_ms,
                upstream,
                decision,
                rule,
                cache,
            )
        # every line is ASCII: its length in characters is its size in bytes
        size = len(line)
        if self._size + self._out_size + size > self.max_buffer:
            if self._lines:
                self.flush()
            if self._size + self._out_size + size > self.max_buffer:
                self._drop_line()
                return
        self._lines.append(line)
        self._size += size
        if self._size > FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._reactor.callLater(FLUSH_DELAY, self._timed_flush)

    def _drop_line(self) -> None:
        """
        A line found the buffer full: count it; the first of an episode is
        reported.
        """
        self.dropped += 1
        self._full_dropped += 1
        if not self._full:
            self._full = True
            _log.warn(
                "access log {name}: {size} bytes of lines wait for a slow reader;"
                " dropping new lines until they are written",
                name=self.name,
                size=self.max_buffer,
            )

    @staticmethod
    def _slow_line(
        timestamp: str,
        listener: Any,
        client: Any,
        method: Any,
        url: Any,
        status: Any,
        bytes_in: Any,
        bytes_out: Any,
        duration_ms: Any,
        upstream: Any,
        decision: Any,
        rule: Any,
        cache: Any = "",
    ) -> str:
        """
        Assemble a line through C{json} after coercing every field to its
        declared type.
        """
        record = {
            "time": timestamp,
            "listener": _text(listener),
            "client": _text(client),
            "method": _text(method),
            "url": _text(url),
            "status": _number(status),
            "bytes_in": _number(bytes_in),
            "bytes_out": _number(bytes_out),
            "duration_ms": _duration(duration_ms),
            "upstream": _text(upstream),
            "decision": _text(decision),
            "rule": _text(rule),
            "cache": _text(cache),
        }
        return _encoder.encode(record) + "\n"

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """
        Write out every buffered line now, as far as the file takes it
        without blocking; the rest follows when it is writable.  Never
        raises.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._lines:
            data = "".join(self._lines).encode("ascii")
            self._lines = []
            self._size = 0
            self._out.append(data)
            self._out_size += len(data)
        if self._out and self._writer is None and self._retry is None:
            # (while waiting for a full pipe, the wait's end writes)
            self._write_out()

    # writing

    def _prepare(self) -> None:
        """
        Choose how to write, at the first write: a pipe, a terminal or a
        socket is written through a non-blocking descriptor; anything else
        (a regular file, an in-memory stream) through the stream.
        """
        self._prepared = True
        stream = self._stream
        if stream is None:
            return
        try:
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
        except Exception:
            return
        if stat.S_ISREG(mode):
            # a disk does not block like a pipe: plain writes
            return
        # a pipe takes a write of up to PIPE_BUF bytes whole or not at all:
        # writing whole lines in such pieces, a full pipe never cuts a line
        # (where another writer, print or twistd's log, could slip in)
        self._atomic = stat.S_ISFIFO(mode)
        try:
            stream.flush()  # what the stream's own buffer holds goes first
            if stat.S_ISSOCK(mode) and _MSG_DONTWAIT:
                # one non-blocking send at a time; the socket's flags stay
                sock = socket.socket(fileno=os.dup(fd))
                self._sock = sock
                self._fd = sock.fileno()
                return
            if not self._owned:
                # standard output: a description of our own, so that other
                # writers to it (print, twistd's log) keep blocking writes
                private = _reopen_nonblocking(fd)
                if private is not None:
                    self._fd = private
                    self._own_fd = True
                    return
            os.set_blocking(fd, False)
            self._fd = fd
            self._shared_nonblocking = not self._owned
        except Exception:
            # no non-blocking write on this platform: write through the
            # stream
            return

    def _write(self, view: memoryview) -> int:
        """
        Write what the file takes of C{view} now: the count, 0 when it would
        block.
        """
        sock = self._sock
        if sock is not None:
            try:
                return sock.send(view, _MSG_DONTWAIT)
            except BlockingIOError:
                return 0
        fd = self._fd
        if fd is not None:
            try:
                return os.write(fd, view)
            except BlockingIOError:
                return 0
        stream = self._stream
        if stream is None:
            raise ValueError("the access log is not open")
        try:
            written = stream.write(view)
        except BlockingIOError as e:
            return e.characters_written
        # None: a non-blocking raw stream that could take nothing
        return written or 0

    def _write_out(self) -> None:
        """
        Write the waiting bytes until the file would block (then wait for
        it) or they are all written.
        """
        if not self._prepared:
            self._prepare()
        out = self._out
        while out:
            chunk = out[0]
            start = self._offset
            end = len(chunk)
            if self._atomic and end - start > _PIPE_BUF:
                # whole lines up to PIPE_BUF bytes (a longer line alone)
                end = chunk.rfind(b"\n", start, start + _PIPE_BUF) + 1
                if end <= start:
                    end = chunk.find(b"\n", start) + 1 or len(chunk)
            try:
                written = self._write(memoryview(chunk)[start:end])
            except Exception as e:
                self._write_failed(e)
                return
            if written <= 0:
                self._wait_writable()
                return
            self._offset += written
            self._out_size -= written
            if self._offset >= len(chunk):
                out.popleft()
                self._offset = 0
        if self._fd is None and self._stream is not None:
            try:
                self._stream.flush()
            except BlockingIOError:
                self._wait_writable()
                return
            except Exception as e:
                self._write_failed(e)
                return
        self._all_written()

    def _wait_writable(self) -> None:
        """
        The file takes no more now: write again when the reactor says it
        is writable, or else after L{RETRY_DELAY}.
        """
        if self._writer is not None or self._retry is not None or self.closed:
            return
        fd = self._fd
        if fd is not None and IReactorFDSet.providedBy(self._reactor):
            writer = _Writable(self, fd)
            try:
                self._reactor.addWriter(writer)  # type: ignore[attr-defined]
            except Exception:
                pass
            else:
                self._writer = writer
                return
        self._retry = self._reactor.callLater(RETRY_DELAY, self._retry_write)

    def _stop_waiting(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                self._reactor.removeWriter(writer)  # type: ignore[attr-defined]
            except Exception:
                pass
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()

    def _retry_write(self) -> None:
        self._retry = None
        if not self.closed:
            self._write_out()

    def _writable(self) -> None:
        """
        The reactor says the descriptor is writable.
        """
        if self._out:
            self._write_out()
        else:
            self._stop_waiting()

    def _writer_lost(self) -> None:
        """
        The reactor gave up on the descriptor (the reader of the pipe is
        gone): the next write says why.
        """
        self._writer = None
        if self._out and not self.closed:
            self._write_out()

    def _all_written(self) -> None:
        self._stop_waiting()
        if self._failed:
            _log.warn(
                "access log {name} writable again; {dropped} lines were dropped",
                name=self.name,
                dropped=self._dropped,
            )
            self._failed = False
            self._dropped = 0
        if self._full:
            _log.info(
                "access log {name} caught up; {dropped} lines were dropped",
                name=self.name,
                dropped=self._full_dropped,
            )
            self._full = False
            self._full_dropped = 0
        self._fire_written()

    def _fire_written(self) -> None:
        waiting, self._written = self._written, []
        for d in waiting:
            d.callback(None)

    def _discard_out(self) -> int:
        """
        Forget the bytes waiting, except the rest of a line partly written
        (so the file never holds half a line followed by another); the
        number of lines forgotten.
        """
        out = self._out
        if not out:
            return 0
        keep = b""
        lost = 0
        first = out.popleft()
        offset = self._offset
        if offset and first[offset - 1] != 0x0A:  # b"\n": inside a line
            end = first.find(b"\n", offset) + 1
            keep = first[offset:end]
            lost += first.count(b"\n", end)
        else:
            lost += first.count(b"\n", offset)
        for chunk in out:
            lost += chunk.count(b"\n")
        out.clear()
        self._offset = 0
        self._out_size = len(keep)
        if keep:
            out.append(keep)
        return lost

    def _write_failed(self, error: Exception) -> None:
        self._stop_waiting()
        lost = self._discard_out()
        self.dropped += lost
        self._dropped += lost
        if not self._failed:
            self._failed = True
            _log.error(
                "cannot write access log {name}: {error}; dropping lines "
                "until writes succeed again",
                name=self.name,
                error=error,
            )
        # nothing more will be written until the next line
        self._fire_written()

    def reopen(self) -> bool:
        """
        Reopen the file after it was renamed away (logrotate): every line
        logged so far is written to the old file, which is then closed, and
        later lines go to the path opened anew (created if missing, for
        appending).  No line is lost, written twice, or split between the
        two files; L{dropped} and the bound are unchanged.

        Only a regular file the log opened by path is reopened.  For
        standard output, a pipe, a socket or a stream handed over (and
        for a closed log) this does nothing and returns C{True}: there is
        no path to open again, and what waits for a slow reader stays
        queued for it.

        Call it from the reactor thread: a signal handler should hand it
        over with C{reactor.callFromThread}, as it may interrupt L{log}.
        Never raises.

        @return: C{True}, or C{False} when the path could not be opened:
            a warning says why, and lines keep going to the old file.
        """
        path = self._path
        old = self._stream
        if self.closed or path is None or old is None or not self._owned:
            return True
        if self._fd is not None or self._sock is not None or not _is_regular_file(old):
            return True
        try:
            new = _open_append(path)
        except Exception as e:  # OSError; never raise into the caller
            _log.warn(
                "cannot reopen access log {name}: {error}; still writing to"
                " the file opened before",
                name=self.name,
                error=e,
            )
            return False
        # every line logged so far goes to the old file (a disk write does
        # not block); what a failed write left of a line there cannot be
        # finished in the new file: counted as dropped, like the lines
        # that failed with it
        self.flush()
        self._stop_waiting()
        lost = self._discard_out()
        if self._out:
            lost += 1  # the rest of a line partly written
            self._out.clear()
            self._out_size = 0
        if lost:
            self.dropped += lost
            if self._failed:
                self._dropped += lost  # in the recovery report
            else:  # pragma: no cover (a disk write never waits)
                _log.warn(
                    "access log {name} reopened with {lost} lines unwritten",
                    name=self.name,
                    lost=lost,
                )
        self._fire_written()
        try:
            old.close()
        except Exception as e:
            _log.error("cannot close access log {name}: {error}", name=self.name, error=e)
        self._stream = new
        # the new file is looked at by the next write, like the first
        self._prepared = False
        self._atomic = False
        _log.info("access log {name} reopened", name=self.name)
        return True

    def when_written(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once every line logged so far is written
        (or lost to a failed write).
        """
        self.flush()
        if not self._out or self._failed or self.closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._written.append(d)
        return d

    def close(self) -> None:
        """
        Write out every buffered line (as far as the file takes it without
        blocking: the rest is dropped and counted) and close the file
        (stdout is only flushed).  Later lines are ignored.  Never raises.
        """
        if self.closed:
            return
        self.flush()
        self._stop_waiting()
        self.closed = True
        lost = self._discard_out()
        if self._out:
            lost += 1  # the rest of a line partly written
            self._out.clear()
            self._out_size = 0
        if lost:
            self.dropped += lost
            _log.warn(
                "access log {name} closed with {lost} lines unwritten",
                name=self.name,
                lost=lost,
            )
        self._fire_written()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        elif self._fd is not None and (self._own_fd or self._shared_nonblocking):
            try:
                if self._own_fd:
                    os.close(self._fd)
                else:
                    os.set_blocking(self._fd, True)
            except OSError:
                pass
        self._fd = None
        stream, self._stream = self._stream, None
        if stream is not None and self._owned:
            try:
                stream.close()
            except Exception as e:
                if not self._failed:
                    _log.error(
                        "cannot close access log {name}: {error}",
                        name=self.name,
                        error=e,
                    )


@implementer(IWriteDescriptor)
class _Writable:
    """
    What the reactor watches while a pipe (or terminal, or socket) the
    access log writes to is full.
    """

    def __init__(self, log: AccessLog, fd: int) -> None:
        self._log = log
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def doWrite(self) -> None:
        self._log._writable()

    def connectionLost(self, reason: Any) -> None:
        self._log._writer_lost()

    def logPrefix(self) -> str:
        return "AccessLog"


def _is_regular_file(stream: IO[bytes]) -> bool:
    """
    Whether C{stream} is a regular file (not a pipe, a terminal, a socket,
    or something without a descriptor).
    """
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except Exception:
        return False


def _open_append(path: str) -> IO[bytes]:
    """
    Open C{path} as L{open_access_log} does (C{"ab"}, unbuffered, created
    with mode 0666 less the umask), except that a FIFO nobody reads fails
    with C{ENXIO} rather than block the reactor.

    @raise OSError: when it cannot be opened.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    flags |= getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags, 0o666)
    try:
        if hasattr(os, "set_blocking"):
            # the first write makes a pipe non-blocking again if it is one
            os.set_blocking(fd, True)
        return os.fdopen(fd, "ab", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _reopen_nonblocking(fd: int) -> int | None:
    """
    A new open file description of what C{fd} refers to (a pipe or a
    terminal), non-blocking, so that C{fd}'s own description keeps blocking
    for its other writers: Linux's C{/proc/self/fd/N} gives one (a C{dup}
    would share the flag).  L{None} where it cannot.
    """
    try:
        new = os.open(
            f"/proc/self/fd/{fd}",
            os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0),
        )
    except OSError:
        return None
    try:
        same = os.path.samestat(os.fstat(new), os.fstat(fd))
    except OSError:
        same = False
    if not same:
        os.close(new)
        return None
    return new


class NullAccessLog(AccessLog):
    """
    The access log when C{access_log = "off"}: every call does nothing.
    """

    enabled = False

    def __init__(self, reactor: IReactorTime | None = None) -> None:
        super().__init__(None, reactor, name="off", owned=False)  # type: ignore[arg-type]

    def log(self, *args: Any, **kwargs: Any) -> None:
        """
        Do nothing.
        """

    def flush(self) -> None:
        """
        Do nothing.
        """

    def close(self) -> None:
        """
        Do nothing.
        """
        self.closed = True

    def reopen(self) -> bool:
        """
        Do nothing: there is no file.

        @return: C{True}.
        """
        return True


def open_access_log(target: str, reactor: IReactorTime) -> AccessLog:
    """
    Open the access log named by C{[proxy].access_log}.

    @param target: C{"-"} for standard output, C{"off"} for none, or a file
        path, opened for appending (created if missing).
    @param reactor: the clock for timestamps and the flush timer.
    @raise OSError: when the file cannot be opened.
    """
    if target == "off":
        return NullAccessLog(reactor)
    if target == "-":
        # Taken now, before twistd redirects sys.stdout into its logger (a
        # LoggingFile has no .buffer): fall back to the process's own stdout.
        stdout = getattr(sys.stdout, "buffer", None)
        if stdout is None and sys.__stdout__ is not None:
            stdout = sys.__stdout__.buffer
        return AccessLog(stdout, reactor, name="-", owned=False)
    stream = open(target, "ab", buffering=0)
    return AccessLog(stream, reactor, name=target, owned=True, path=target)


class AccessLogService(service.Service):
    """
    Owns an L{AccessLog} for the life of the process: stopping the service
    writes out the buffer and closes the file.
    """

    name = "access-log"

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def reopen(self) -> bool:
        """
        Reopen the access log's file after logrotate renamed it (SIGUSR1):
        see L{AccessLog.reopen}; a no-op for standard output, a pipe or
        C{"off"}.  Call it from the reactor thread.

        @return: C{False} when the path could not be opened (a warning was
            logged and the old file is still written).
        """
        return self.access_log.reopen()

    def stopService(self) -> Deferred[None] | None:
        """
        Flush and close the access log; if a slow reader has not taken
        every line yet, wait up to L{DRAIN_TIMEOUT} seconds for it first.
        """
        super().stopService()
        log = self.access_log
        written = log.when_written()
        if written.called:
            log.close()
            return None
        written.addTimeout(DRAIN_TIMEOUT, log._reactor)
        written.addBoth(lambda _: log.close())
        return written
