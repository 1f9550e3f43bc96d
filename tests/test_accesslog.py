"""
Tests for L{twisted_proxy.accesslog}.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy import accesslog
from twisted_proxy.accesslog import (
    FIELDS,
    FLUSH_BYTES,
    FLUSH_DELAY,
    AccessLog,
    AccessLogService,
    NullAccessLog,
    open_access_log,
)

# 2026-11-26T15:04:05Z
T0 = 1795705445.0

DEFAULTS: dict[str, Any] = dict(
    listener="outbound",
    client="127.0.0.1",
    method="GET",
    url="http://example.com/",
    status=200,
    bytes_in=0,
    bytes_out=612,
    duration_ms=1.5,
    upstream="example.com:80",
    decision="allow",
    rule="",
)


def entry(log: AccessLog, **fields: Any) -> None:
    """
    Log one line with L{DEFAULTS} overridden by C{fields}.
    """
    values = dict(DEFAULTS, **fields)
    log.log(**values)


class FailingStream(io.RawIOBase):
    """
    A writable stream whose writes fail with C{ENOSPC} while C{full} is set.
    """

    def __init__(self) -> None:
        self.full = True
        self.data = b""
        self.attempts = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.attempts += 1
        if self.full:
            raise OSError(28, "No space left on device")
        self.data += bytes(data)
        return len(data)


class ShortWriteStream(io.RawIOBase):
    """
    A writable stream that accepts at most 7 bytes per write.
    """

    def __init__(self) -> None:
        self.data = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data[:7])
        self.data += chunk
        return len(chunk)


class AccessLogFileTests(SynchronousTestCase):
    """
    An access log opened on a file path.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.path = self.mktemp()
        self.addCleanup(self.remove_temp)
        self.log = open_access_log(self.path, self.clock)
        self.addCleanup(self.log.close)

    def remove_temp(self) -> None:
        """
        Remove the log file and the directories mktemp made for it: under
        pytest they are relative to the working directory, not _trial_temp.
        """
        if os.path.exists(self.path):
            os.remove(self.path)
        try:
            os.removedirs(os.path.dirname(self.path))
        except OSError:
            pass

    def contents(self) -> bytes:
        if not os.path.exists(self.path):
            return b""
        with open(self.path, "rb") as f:
            return f.read()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.contents().splitlines()]

    def test_enabled(self) -> None:
        """
        A file access log says it is enabled, so callers assemble fields.
        """
        self.assertIs(self.log.enabled, True)
        self.assertIsInstance(self.log, AccessLog)

    def test_fieldsInOrder(self) -> None:
        """
        A line is one JSON object whose keys are the documented fields in
        the documented order, with the values given.
        """
        entry(self.log)
        self.log.flush()
        data = self.contents()
        self.assertTrue(data.endswith(b"\n"))
        self.assertEqual(data.count(b"\n"), 1)
        record = json.loads(data)
        self.assertEqual(list(record), list(FIELDS))
        self.assertEqual(
            record,
            dict(DEFAULTS, time="2026-11-26T15:04:05.000Z"),
        )

    def test_timeMilliseconds(self) -> None:
        """
        The time is ISO 8601 UTC with milliseconds, taken from the reactor's
        clock when the line is logged, and follows the clock across seconds.
        """
        self.clock.advance(0.123)
        entry(self.log)
        self.clock.advance(0.9)
        entry(self.log)
        self.clock.advance(86400 * 40 + 0.0006)
        entry(self.log)
        self.log.flush()
        self.assertEqual(
            [r["time"] for r in self.records()],
            [
                "2026-11-26T15:04:05.123Z",
                "2026-11-26T15:04:06.023Z",
                "2027-01-05T15:04:06.024Z",
            ],
        )

    def test_durationRounded(self) -> None:
        """
        duration_ms is a number rounded to three decimals.
        """
        entry(self.log, duration_ms=12.34567)
        entry(self.log, duration_ms=0)
        entry(self.log, duration_ms=7)
        self.log.flush()
        self.assertEqual([r["duration_ms"] for r in self.records()], [12.346, 0, 7])

    def test_nonFiniteDuration(self) -> None:
        """
        A NaN or infinite duration is written as 0, keeping the line valid
        JSON (json has no NaN).
        """
        for value in (float("nan"), float("inf"), float("-inf")):
            entry(self.log, duration_ms=value)
        self.log.flush()
        self.assertEqual([r["duration_ms"] for r in self.records()], [0, 0, 0])

    def test_escaping(self) -> None:
        """
        Strings from clients are JSON-escaped: quotes, backslashes, control
        characters, non-ASCII and lone surrogates all round-trip through
        json.loads, and every line stays on one line.
        """
        hostile = [
            'a"b',
            "back\\slash",
            "new\nline\r\n",
            "tab\tnul\x00bell\x07esc\x1bdel\x7f",
            "caf\u00e9 \u65e5\u672c \U0001f600",
            "\u2028\u2029",
            "lone \udcff surrogate",
            '"}\n{"injected": true',
            "",
        ]
        for value in hostile:
            entry(
                self.log,
                listener=value,
                client=value,
                method=value,
                url=value,
                upstream=value,
                decision=value,
                rule=value,
            )
        self.log.flush()
        data = self.contents()
        data.decode("ascii")  # every line is plain ASCII
        records = self.records()
        self.assertEqual(len(records), len(hostile))
        for value, record in zip(hostile, records):
            for key in (
                "listener",
                "client",
                "method",
                "url",
                "upstream",
                "decision",
                "rule",
            ):
                self.assertEqual(record[key], value)

    def test_wrongTypesCoerced(self) -> None:
        """
        Fields of the wrong type (bytes for strings, None, numeric strings)
        still produce a valid line rather than an exception or a lost line.
        """
        entry(
            self.log,
            url=b"http://example.com/\xff",
            method=b"GET",
            upstream=None,
            status="502",
            bytes_in=None,
            duration_ms="2.5",
        )
        self.log.flush()
        [record] = self.records()
        self.assertEqual(list(record), list(FIELDS))
        self.assertEqual(record["url"], "http://example.com/\\xff")
        self.assertEqual(record["method"], "GET")
        self.assertEqual(record["upstream"], "")
        self.assertEqual(record["status"], 502)
        self.assertEqual(record["bytes_in"], 0)
        self.assertEqual(record["duration_ms"], 2.5)
        self.assertEqual(record["time"], "2026-11-26T15:04:05.000Z")

    def test_bufferedUntilDelay(self) -> None:
        """
        A line is not written at once, but at most FLUSH_DELAY seconds
        after it was logged.
        """
        entry(self.log)
        self.assertEqual(self.contents(), b"")
        self.clock.advance(FLUSH_DELAY - 0.001)
        self.assertEqual(self.contents(), b"")
        self.clock.advance(0.001)
        self.assertEqual(len(self.records()), 1)

    def test_oneTimerFromFirstLine(self) -> None:
        """
        The delay counts from the first unwritten line: later lines neither
        add timers nor postpone the write.
        """
        entry(self.log)
        self.clock.advance(0.5)
        entry(self.log)
        entry(self.log)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.5)
        self.assertEqual(len(self.records()), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_newTimerAfterFlush(self) -> None:
        """
        After a timed write, the next line starts a new delay, and an idle
        log keeps no timer.
        """
        entry(self.log)
        self.clock.advance(FLUSH_DELAY)
        self.clock.advance(10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        entry(self.log)
        self.assertEqual(len(self.records()), 1)
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(len(self.records()), 2)

    def test_flushOnSize(self) -> None:
        """
        As soon as more than FLUSH_BYTES are buffered they are written,
        without waiting for the timer, and the pending timer is cancelled.
        """
        url = "http://example.com/" + "x" * 1000
        count = 0
        while not self.contents():
            entry(self.log, url=url)
            count += 1
            self.assertLess(count, 1000)
        records = self.records()
        self.assertEqual(len(records), count)
        self.assertGreater(len(self.contents()), FLUSH_BYTES)
        self.assertLess(len(self.contents()) - FLUSH_BYTES, 1200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeFlushes(self) -> None:
        """
        close() writes out the buffer, cancels the timer, and later lines
        are ignored without error.
        """
        entry(self.log)
        self.log.close()
        self.assertEqual(len(self.records()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        entry(self.log)
        self.log.flush()
        self.log.close()
        self.assertEqual(len(self.records()), 1)

    def test_appends(self) -> None:
        """
        Opening an existing file appends to it.
        """
        entry(self.log, url="first")
        self.log.close()
        second = open_access_log(self.path, self.clock)
        entry(second, url="second")
        second.close()
        self.assertEqual([r["url"] for r in self.records()], ["first", "second"])

    def test_service(self) -> None:
        """
        Stopping the AccessLogService writes out and closes its log.
        """
        svc = AccessLogService(self.log)
        self.assertTrue(service.IService.providedBy(svc))
        svc.startService()
        entry(self.log)
        self.assertEqual(self.contents(), b"")
        svc.stopService()
        self.assertEqual(len(self.records()), 1)
        self.assertTrue(self.log.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unopenablePath(self) -> None:
        """
        A path that cannot be opened (here, below a file) raises OSError at
        open time, where the configuration can report it.
        """
        missing = os.path.join(self.path, "no", "such", "dir", "log")
        self.assertRaises(OSError, open_access_log, missing, self.clock)


class AccessLogErrorTests(SynchronousTestCase):
    """
    A failing stream never raises into the proxy.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.stream = FailingStream()
        self.log = AccessLog(self.stream, self.clock, name="disk")

    def test_writeErrorReportedOnce(self) -> None:
        """
        A write error is swallowed, reported once through twisted.logger,
        and the lines are dropped; further failures are not reported again.
        """
        events: list[dict[str, Any]] = []
        self.patch(accesslog._log, "observer", events.append)
        entry(self.log)
        self.clock.advance(FLUSH_DELAY)
        entry(self.log)
        self.log.flush()
        for _ in range(200):
            entry(self.log, url="y" * 1000)
        self.log.close()
        self.assertGreater(self.stream.attempts, 3)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["name"], "disk")
        self.assertIsInstance(events[0]["error"], OSError)
        self.assertEqual(self.stream.data, b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_recovers(self) -> None:
        """
        Once writes succeed again, new lines are written (the dropped ones
        are not) and the recovery is reported with the number dropped.
        """
        events: list[dict[str, Any]] = []
        self.patch(accesslog._log, "observer", events.append)
        entry(self.log, url="lost")
        entry(self.log, url="lost")
        self.log.flush()
        self.stream.full = False
        entry(self.log, url="kept")
        self.log.flush()
        records = [json.loads(line) for line in self.stream.data.splitlines()]
        self.assertEqual([r["url"] for r in records], ["kept"])
        self.assertEqual(len(events), 2)
        self.assertEqual(events[1]["dropped"], 2)

    def test_closedStream(self) -> None:
        """
        A stream closed underneath the log (ValueError on write) is handled
        like any other write error.
        """
        events: list[dict[str, Any]] = []
        self.patch(accesslog._log, "observer", events.append)
        stream = io.BytesIO()
        log = AccessLog(stream, self.clock, name="-", owned=False)
        stream.close()
        entry(log)
        self.clock.advance(FLUSH_DELAY)
        log.close()
        self.assertEqual(len(events), 1)

    def test_shortWrites(self) -> None:
        """
        A stream that takes only part of each write still receives every
        byte of every line.
        """
        stream = ShortWriteStream()
        log = AccessLog(stream, self.clock)
        entry(log, url="a" * 100)
        entry(log, url="b" * 100)
        log.close()
        records = [json.loads(line) for line in stream.data.splitlines()]
        self.assertEqual([r["url"] for r in records], ["a" * 100, "b" * 100])


class OffAndStdoutTests(SynchronousTestCase):
    """
    The C{"off"} and C{"-"} targets.
    """

    def test_off(self) -> None:
        """
        "off" gives a disabled log that accepts lines, writes nothing and
        schedules nothing.
        """
        clock = task.Clock()
        log = open_access_log("off", clock)
        self.assertIsInstance(log, NullAccessLog)
        self.assertIs(log.enabled, False)
        entry(log)
        log.flush()
        self.assertEqual(clock.getDelayedCalls(), [])
        svc = AccessLogService(log)
        svc.startService()
        svc.stopService()

    def test_stdout(self) -> None:
        """
        "-" writes lines to sys.stdout's binary buffer, and closing does
        not close stdout.
        """
        buffer = io.BytesIO()
        fake = io.TextIOWrapper(buffer)
        self.patch(sys, "stdout", fake)
        clock = task.Clock()
        log = open_access_log("-", clock)
        entry(log, url="to-stdout")
        log.close()
        self.assertFalse(buffer.closed)
        [record] = [json.loads(line) for line in buffer.getvalue().splitlines()]
        self.assertEqual(record["url"], "to-stdout")

    def test_stdoutRedirected(self) -> None:
        """
        When sys.stdout has been replaced by something without a binary
        buffer (twistd's logging file), "-" uses the process's real stdout.
        """
        self.patch(sys, "stdout", object())
        log = open_access_log("-", task.Clock())
        self.assertIs(log._stream, sys.__stdout__.buffer)
