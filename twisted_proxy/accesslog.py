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

Every line has these fields, in this order::

    {"time": "2026-11-26T15:04:05.123Z", "listener": "outbound",
     "client": "127.0.0.1", "method": "GET", "url": "http://example.com/",
     "status": 200, "bytes_in": 0, "bytes_out": 612, "duration_ms": 1.234,
     "upstream": "example.com:80", "decision": "allow", "rule": ""}
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Callable

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = [
    "FLUSH_BYTES",
    "FLUSH_DELAY",
    "AccessLog",
    "AccessLogService",
    "NullAccessLog",
    "open_access_log",
]

#: Write out the buffer as soon as more than this many bytes are waiting.
FLUSH_BYTES = 64 * 1024

#: Write out the buffer at most this many seconds after its first line.
FLUSH_DELAY = 1.0

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
)

# The C escaper behind json.dumps(ensure_ascii=True): returns the quoted JSON
# string, escapes quotes, backslashes, control characters, non-ASCII and lone
# surrogates, so every line is plain ASCII whatever the client sent.
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii

# duration_ms beyond this (about 31,000 years), or NaN, is written as 0: the
# ".3f" format would otherwise print "nan"/"inf", which are not JSON.
_MAX_DURATION = 1e15

_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)

_log = Logger(namespace="twisted_proxy.accesslog")


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
    A buffered writer of access log lines to a binary file.

    @ivar enabled: C{True}: callers may skip assembling arguments when False.
    """

    enabled = True

    def __init__(
        self,
        stream: IO[bytes] | None,
        reactor: IReactorTime,
        *,
        name: str = "",
        owned: bool = True,
    ) -> None:
        """
        @param stream: a binary file open for writing; it is flushed after
            every write (so a C{BufferedWriter} such as C{sys.stdout.buffer}
            is fine).
        @param reactor: the clock for timestamps and the flush timer.
        @param name: what the error report calls this log (a path or "-").
        @param owned: close C{stream} in L{close}; C{False} for stdout.
        """
        self._stream = stream
        self._reactor = reactor
        self.name = name
        self._owned = owned
        self._lines: list[str] = []
        self._size = 0
        self._timer: IDelayedCall | None = None
        self._second = -1
        self._prefix = ""
        self._failed = False
        self._dropped = 0
        self.closed = False

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
    ) -> None:
        """
        Record one request or tunnel.  Never raises.

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
        """
        if self.closed:
            return
        # Nearest millisecond: flooring would print 1.123 s as .122.
        second, millis = divmod(round(self._reactor.seconds() * 1000.0), 1000)
        prefix = self._prefix if second == self._second else self._time_prefix(second)
        q = _quote
        try:
            if not -_MAX_DURATION < duration_ms < _MAX_DURATION:
                duration_ms = 0.0
            line = (
                f'{{"time":"{prefix}{millis:03d}Z","listener":{q(listener)},'
                f'"client":{q(client)},"method":{q(method)},"url":{q(url)},'
                f'"status":{status:d},"bytes_in":{bytes_in:d},'
                f'"bytes_out":{bytes_out:d},"duration_ms":{duration_ms:.3f},'
                f'"upstream":{q(upstream)},"decision":{q(decision)},'
                f'"rule":{q(rule)}}}\n'
            )
        except Exception:
            # Some field is not of its declared type (bytes, None, ...):
            # take the slow, forgiving road rather than lose the line.
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
            )
        self._lines.append(line)
        self._size += len(line)
        if self._size > FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._reactor.callLater(FLUSH_DELAY, self._timed_flush)

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
        }
        return _encoder.encode(record) + "\n"

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """
        Write out every buffered line now.  Never raises.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines = self._lines
        self._lines = []
        self._size = 0
        data = "".join(lines).encode("ascii")
        try:
            if self._stream is None:
                raise ValueError("the access log is not open")
            view = memoryview(data)
            while view:
                written = self._stream.write(view)
                if written is None:
                    # A non-blocking raw stream that could take nothing.
                    raise BlockingIOError("access log stream would block")
                view = view[written:]
            self._stream.flush()
        except Exception as e:
            self._dropped += len(lines)
            if not self._failed:
                self._failed = True
                _log.error(
                    "cannot write access log {name}: {error}; dropping lines "
                    "until writes succeed again",
                    name=self.name,
                    error=e,
                )
        else:
            if self._failed:
                _log.warn(
                    "access log {name} writable again; {dropped} lines were dropped",
                    name=self.name,
                    dropped=self._dropped,
                )
                self._failed = False
                self._dropped = 0

    def close(self) -> None:
        """
        Write out every buffered line and close the file (stdout is only
        flushed).  Later lines are ignored.  Never raises.
        """
        if self.closed:
            return
        self.flush()
        self.closed = True
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
    return AccessLog(stream, reactor, name=target, owned=True)


class AccessLogService(service.Service):
    """
    Owns an L{AccessLog} for the life of the process: stopping the service
    writes out the buffer and closes the file.
    """

    name = "access-log"

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def stopService(self) -> None:
        """
        Flush and close the access log.
        """
        super().stopService()
        self.access_log.close()
