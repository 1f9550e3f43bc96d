"""
Tests for L{twisted_proxy.accesslog}.
"""

from __future__ import annotations

import io
import json
import errno
import os
import shutil
import signal
import stat
import sys
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

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
    cache="",
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

    def test_repeatedFields(self) -> None:
        """
        Lines that share some fields and differ in others each carry their
        own values (the quoted segments a log keeps per value are keyed
        by every field of the segment), within one millisecond and across
        milliseconds.
        """
        lines = [
            {},
            dict(client="127.0.0.2"),
            dict(method="HEAD", url="http://example.com/a"),
            dict(upstream="example.com:81", decision="deny", rule="acl"),
            dict(cache="hit"),
            dict(status=404, bytes_in=7, bytes_out=9, duration_ms=0.25),
            {},
        ]
        for fields in lines:
            entry(self.log, **fields)
        self.clock.advance(0.0015)
        entry(self.log, client="127.0.0.2")
        self.log.flush()
        expected = [dict(DEFAULTS, time="2026-11-26T15:04:05.000Z", **fields) for fields in lines]
        expected.append(dict(DEFAULTS, time="2026-11-26T15:04:05.002Z", client="127.0.0.2"))
        self.assertEqual(self.records(), expected)

    def test_segmentsBounded(self) -> None:
        """
        The quoted segments a log keeps are bounded: past
        L{accesslog.SEGMENTS} distinct clients the memo starts over, and
        every line still has its own client.
        """
        self.patch(accesslog, "SEGMENTS", 4)
        clients = [f"127.0.0.{i}" for i in range(1, 11)]
        for client in clients:
            entry(self.log, client=client)
        self.assertLessEqual(len(self.log._heads), 4)
        self.log.flush()
        self.assertEqual([r["client"] for r in self.records()], clients)

    def test_numberSubclasses(self) -> None:
        """
        A status that is an int subclass (C{HTTPStatus}) or a C{bool} is
        written as its number, through the forgiving road.
        """
        from http import HTTPStatus

        entry(self.log, status=HTTPStatus.NOT_FOUND, bytes_in=True)
        self.log.flush()
        record = self.records()[0]
        self.assertEqual((record["status"], record["bytes_in"]), (404, 1))

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


class HalfFullFile(io.FileIO):
    """
    A real file on a disk that fills up: writes take at most C{budget}
    more bytes, then fail with C{ENOSPC}.
    """

    budget = 1 << 30

    def write(self, data: Any) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = super().write(bytes(data[: self.budget]))
        self.budget -= taken
        return taken


class ReopenTests(SynchronousTestCase):
    """
    L{AccessLog.reopen}, as logrotate's C{postrotate} has it done: the file
    was renamed away, and the path is opened again.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.events: list[dict[str, Any]] = []
        self.patch(accesslog._log, "observer", self.events.append)
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.addCleanup(self.remove_dir)
        self.path = os.path.join(self.dir, "access.log")

    def remove_dir(self) -> None:
        """
        Remove the directory with its files (made writable again), and the
        directories mktemp made for it.
        """
        for root, dirs, files in os.walk(self.dir):
            os.chmod(root, 0o700)
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.removedirs(os.path.dirname(self.dir))
        except OSError:
            pass

    def open(self, path: str | None = None) -> AccessLog:
        log = open_access_log(path or self.path, self.clock)
        self.addCleanup(log.close)
        return log

    def urls(self, path: str) -> list[str]:
        """
        The urls of the lines in the file at C{path}, checking that every
        line is whole: one JSON object with every field, newline-ended.
        """
        with open(path, "rb") as f:
            data = f.read()
        if data:
            self.assertTrue(data.endswith(b"\n"), data[-80:])
        records = [json.loads(line) for line in data.splitlines()]
        for record in records:
            self.assertEqual(list(record), list(FIELDS))
        return [r["url"] for r in records]

    def rotate(self, suffix: str = ".1") -> str:
        """
        Rename the log file away, as logrotate does; the new name.
        """
        rotated = self.path + suffix
        os.rename(self.path, rotated)
        return rotated

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["log_level"].name == "warn"]

    def test_before_and_after(self) -> None:
        """
        Lines logged before the reopen (written or still buffered, before
        or after the rename) are in the renamed file, lines logged after it
        in the new one: each line exactly once, whole, in order.
        """
        log = self.open()
        for i in range(3):
            entry(log, url=f"written{i}")
        log.flush()
        entry(log, url="buffered")
        rotated = self.rotate()
        entry(log, url="after-rename")
        self.assertIs(log.reopen(), True)
        for i in range(3):
            entry(log, url=f"new{i}")
        log.close()
        self.assertEqual(
            self.urls(rotated), ["written0", "written1", "written2", "buffered", "after-rename"]
        )
        self.assertEqual(self.urls(self.path), ["new0", "new1", "new2"])
        self.assertEqual(log.dropped, 0)
        self.assertEqual(self.warnings(), [])

    def test_buffered_lines_go_to_old_file(self) -> None:
        """
        Lines still waiting for the flush timer are written to the old file
        at the reopen; the timer goes with them, the new file exists (empty)
        at once, and the next line gets a timer of its own.
        """
        log = self.open()
        for i in range(5):
            entry(log, url=f"old{i}")
        rotated = self.rotate()
        self.assertEqual(self.urls(rotated), [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertIs(log.reopen(), True)
        self.assertEqual(self.urls(rotated), [f"old{i}" for i in range(5)])
        self.assertEqual(self.urls(self.path), [])
        self.assertEqual(log.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        entry(log, url="new")
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(self.urls(self.path), ["new"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_new_file_as_opened_first(self) -> None:
        """
        A missing file is created with the permissions open_access_log
        gives one; a file already there (logrotate's C{create}) is appended
        to and keeps its own permissions.
        """
        reference = os.path.join(self.dir, "reference.log")
        self.open(reference).close()
        log = self.open()
        self.rotate()
        self.assertIs(log.reopen(), True)
        self.assertEqual(
            stat.S_IMODE(os.stat(self.path).st_mode), stat.S_IMODE(os.stat(reference).st_mode)
        )
        entry(log, url="one")
        log.flush()
        self.rotate(".2")
        with open(self.path, "wb") as f:
            f.write(json.dumps(dict({"time": ""}, **dict(DEFAULTS, url="created"))).encode() + b"\n")
        os.chmod(self.path, 0o640)
        self.assertIs(log.reopen(), True)
        entry(log, url="two")
        log.close()
        self.assertEqual(self.urls(self.path), ["created", "two"])
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_unwritable_directory(self) -> None:
        """
        When the directory does not let the file be created, reopen returns
        False with a warning saying why, and lines keep going to the old
        file; a later reopen, once it can, moves them to the new one.
        """
        log = self.open()
        entry(log, url="before")
        rotated = self.rotate()
        os.chmod(self.dir, 0o500)
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT))
        except PermissionError:
            pass
        else:
            os.remove(self.path)
            raise SkipTest("this user writes to any directory (root)")
        self.assertIs(log.reopen(), False)
        [warning] = self.warnings()
        self.assertEqual(warning["name"], self.path)
        self.assertIsInstance(warning["error"], PermissionError)
        entry(log, url="still-old")
        log.flush()
        self.assertFalse(os.path.exists(self.path))
        os.chmod(self.dir, 0o700)
        self.assertIs(log.reopen(), True)
        entry(log, url="new")
        log.close()
        self.assertEqual(self.urls(rotated), ["before", "still-old"])
        self.assertEqual(self.urls(self.path), ["new"])
        self.assertEqual(log.dropped, 0)

    def test_directory_removed(self) -> None:
        """
        When the file's directory is gone, reopen returns False with a
        warning saying why, and lines keep going to the old file, none
        lost; once the directory is back, a reopen creates the file there.
        """
        sub = os.path.join(self.dir, "sub")
        os.mkdir(sub)
        self.path = os.path.join(sub, "access.log")
        log = self.open()
        entry(log, url="before")
        rotated = os.path.join(self.dir, "access.log.1")
        os.rename(self.path, rotated)
        os.rmdir(sub)
        self.assertIs(log.reopen(), False)
        [warning] = self.warnings()
        self.assertEqual(warning["name"], self.path)
        self.assertIsInstance(warning["error"], FileNotFoundError)
        self.assertIn("cannot reopen", warning["log_format"])
        entry(log, url="still-old")
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(self.urls(rotated), ["before", "still-old"])
        os.mkdir(sub)
        self.assertIs(log.reopen(), True)
        entry(log, url="new")
        log.close()
        self.assertEqual(self.urls(rotated), ["before", "still-old"])
        self.assertEqual(self.urls(self.path), ["new"])
        self.assertEqual(log.dropped, 0)

    def test_repeated(self) -> None:
        """
        Rotation after rotation, each file holds the lines of its own
        period; reopens without a rename in between keep appending to the
        same file, writing nothing twice.
        """
        log = self.open()
        for period in range(3):
            entry(log, url=f"p{period}")
            self.rotate(f".{3 - period}")
            self.assertIs(log.reopen(), True)
        entry(log, url="a")
        self.assertIs(log.reopen(), True)
        self.assertIs(log.reopen(), True)
        entry(log, url="b")
        self.assertIs(log.reopen(), True)
        log.close()
        for period in range(3):
            self.assertEqual(self.urls(self.path + f".{3 - period}"), [f"p{period}"])
        self.assertEqual(self.urls(self.path), ["a", "b"])
        self.assertEqual(self.warnings(), [])

    def test_failed_write_not_split(self) -> None:
        """
        When the old file's disk filled up in the middle of a line, the rest
        of that line is not written to the new file: it is counted as
        dropped with the lines that failed, the new file holds whole lines
        only, and the recovery report counts them all.
        """
        stream = HalfFullFile(self.path, "ab")
        stream.budget = 10
        log = AccessLog(stream, self.clock, name=self.path, path=self.path)
        self.addCleanup(log.close)
        entry(log, url="first")
        entry(log, url="second")
        log.flush()
        self.assertEqual(log.dropped, 1)
        rotated = self.rotate()
        self.assertIs(log.reopen(), True)
        self.assertEqual(log.dropped, 2)
        self.assertEqual(log.pending, 0)
        entry(log, url="third")
        log.close()
        with open(rotated, "rb") as f:
            self.assertEqual(len(f.read()), 10)
        self.assertEqual(self.urls(self.path), ["third"])
        self.assertEqual(log.dropped, 2)
        self.assertEqual(self.events[-1]["dropped"], 2)

    def test_bound_kept(self) -> None:
        """
        The bound and the dropped count are the log's, not the file's: a
        reopen changes neither.
        """
        log = self.open()
        log.max_buffer = 5000
        log.dropped = 7
        entry(log)
        self.rotate()
        self.assertIs(log.reopen(), True)
        self.assertEqual((log.max_buffer, log.dropped), (5000, 7))

    def test_closed(self) -> None:
        """
        A closed log is not reopened: nothing is created at the path.
        """
        log = self.open()
        log.close()
        self.rotate()
        self.assertIs(log.reopen(), True)
        self.assertFalse(os.path.exists(self.path))

    def test_stream_handed_over(self) -> None:
        """
        A file the log was handed (not opened by path) is not reopened:
        the lines keep going to it.
        """
        stream = open(self.path, "ab", buffering=0)
        log = AccessLog(stream, self.clock, name="handed")
        self.addCleanup(log.close)
        rotated = self.rotate()
        self.assertIs(log.reopen(), True)
        self.assertIs(log._stream, stream)
        entry(log)
        log.close()
        self.assertEqual(len(self.urls(rotated)), 1)
        self.assertFalse(os.path.exists(self.path))

    def test_stdout(self) -> None:
        """
        Reopening standard output does nothing, buffered lines included.
        """
        buffer = io.BytesIO()
        self.patch(sys, "stdout", io.TextIOWrapper(buffer))
        log = open_access_log("-", self.clock)
        entry(log, url="to-stdout")
        self.assertIs(log.reopen(), True)
        self.assertIs(log._stream, buffer)
        self.assertEqual(buffer.getvalue(), b"")
        log.close()
        self.assertFalse(buffer.closed)
        [record] = [json.loads(line) for line in buffer.getvalue().splitlines()]
        self.assertEqual(record["url"], "to-stdout")

    def test_fifo_by_path(self) -> None:
        """
        A named pipe opened by path is a pipe: reopen does nothing, and
        the reader keeps receiving the lines.
        """
        if not hasattr(os, "mkfifo"):
            raise SkipTest("no named pipes on this platform")
        os.mkfifo(self.path)
        r = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, r)
        log = self.open()
        stream = log._stream
        entry(log, url="before")
        log.flush()
        self.assertIs(log.reopen(), True)
        entry(log, url="after")
        self.assertIs(log.reopen(), True)
        self.assertIs(log._stream, stream)
        log.close()
        received = os.read(r, 65536)
        self.assertEqual([json.loads(line)["url"] for line in received.splitlines()], ["before", "after"])

    def test_off(self) -> None:
        """
        The "off" log reopens nothing, and says it succeeded.
        """
        log = open_access_log("off", self.clock)
        self.assertIs(log.reopen(), True)
        self.assertIs(NullAccessLog().reopen(), True)
        self.assertIs(AccessLogService(log).reopen(), True)
        self.assertEqual(os.listdir(self.dir), [])

    def test_service(self) -> None:
        """
        The service that owns the log reopens it, saying whether it could.
        """
        log = self.open()
        svc = AccessLogService(log)
        entry(log, url="old")
        rotated = self.rotate()
        self.assertIs(svc.reopen(), True)
        entry(log, url="new")
        svc.startService()
        svc.stopService()
        self.assertEqual(self.urls(rotated), ["old"])
        self.assertEqual(self.urls(self.path), ["new"])


def guard_against_blocking(case: SynchronousTestCase, seconds: int = 20) -> None:
    """
    Fail C{case} rather than hang it if a write blocks: a SIGALRM handler
    that raises interrupts the blocked system call.
    """
    if not hasattr(signal, "SIGALRM"):
        return

    def blocked(signum: int, frame: Any) -> None:
        raise AssertionError("a write blocked")

    previous = signal.signal(signal.SIGALRM, blocked)
    case.addCleanup(signal.signal, signal.SIGALRM, previous)
    signal.alarm(seconds)
    case.addCleanup(signal.alarm, 0)


def small_pipe() -> tuple[int, int]:
    """
    A pipe whose buffer is as small as the system allows (one page on
    Linux), so filling it takes a few lines.
    """
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    except (ImportError, OSError):
        pass
    return r, w


class SlowPipeTests(SynchronousTestCase):
    """
    An access log on a pipe whose reader does not read: the proxy never
    blocks, at most C{max_buffer} bytes wait, lines beyond are dropped and
    counted, and what waits reaches the reader whole and in order once it
    reads again.
    """

    if not hasattr(os, "set_blocking"):
        skip = "no non-blocking pipes on this platform"

    BOUND = 16 * 1024
    URL = "http://example.com/{:05d}/" + "p" * 400

    def setUp(self) -> None:
        guard_against_blocking(self)
        self.clock: Any = task.Clock()
        self.clock.advance(T0)
        self.r, self.w = small_pipe()
        self.addCleanup(os.close, self.r)
        os.set_blocking(self.r, False)
        self.events: list[dict[str, Any]] = []
        self.patch(accesslog._log, "observer", self.events.append)
        self.received = b""

    def open_log(self, owned: bool = True) -> AccessLog:
        stream = os.fdopen(self.w, "wb", buffering=0)
        if not owned:
            self.addCleanup(stream.close)
        log = AccessLog(stream, self.clock, name="pipe", owned=owned, max_buffer=self.BOUND)
        self.addCleanup(log.close)
        return log

    def fill(self, log: AccessLog) -> int:
        """
        Log numbered lines until some are dropped; how many were logged.
        """
        count = 0
        while log.dropped < 5:
            entry(log, url=self.URL.format(count))
            count += 1
            self.assertLess(count, 10000)
        log.flush()
        return count

    def read(self) -> None:
        """
        The reader takes everything the pipe holds.
        """
        while True:
            try:
                data = os.read(self.r, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            self.received += data

    def drain(self, log: AccessLog, writable: Any) -> None:
        """
        Read until the log has nothing left to write, telling it the pipe
        is writable (C{writable()}) after each read.
        """
        for _ in range(10000):
            self.read()
            if not log.pending:
                break
            writable()
        self.read()
        self.assertEqual(log.pending, 0)

    def assertWholeLinesInOrder(self, count: int) -> None:
        self.assertTrue(self.received.endswith(b"\n"))
        records = [json.loads(line) for line in self.received.splitlines()]
        self.assertEqual([r["url"] for r in records], [self.URL.format(i) for i in range(count)])

    def test_full_pipe(self) -> None:
        """
        With the reader stopped, log() returns at once; at most
        C{max_buffer} bytes wait; later lines are dropped and counted with
        one warning; once the reader drains the pipe (the log retrying on
        its clock), every kept line arrives whole and in order, the
        catching up is reported with the count, and no timer is left.
        """
        log = self.open_log()
        count = self.fill(log)
        self.assertGreater(log.pending, 0)
        self.assertLessEqual(log.pending, self.BOUND)
        for i in range(100):
            entry(log, url=self.URL.format(count + i))
        self.assertEqual(log.dropped, 105)
        [warning] = self.events
        self.assertEqual(warning["log_level"].name, "warn")
        self.assertEqual((warning["name"], warning["size"]), ("pipe", self.BOUND))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the retry
        self.drain(log, lambda: self.clock.advance(accesslog.RETRY_DELAY))
        self.assertWholeLinesInOrder(count - 5)
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["dropped"], 105)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        entry(log, url="after")
        log.flush()
        self.read()
        self.assertEqual(json.loads(self.received.splitlines()[-1])["url"], "after")
        self.assertEqual(log.dropped, 105)

    def test_reactor_says_writable(self) -> None:
        """
        With a reactor that watches descriptors, the log waits for the
        pipe's writable event (no polling timer) and stops watching once
        everything is written.
        """
        self.clock = MemoryReactorClock()
        log = self.open_log()
        count = self.fill(log)
        [writer] = self.clock.getWriters()
        self.assertEqual(writer.fileno(), self.w)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.drain(log, writer.doWrite)
        self.assertEqual(self.clock.getWriters(), [])
        self.assertWholeLinesInOrder(count - 5)

    def test_reader_gone(self) -> None:
        """
        A pipe whose reader closed is a failing write: reported once, the
        waiting lines are dropped and counted, nothing is left watched.
        """
        self.reader_gone(lambda writer: writer.doWrite())

    def test_reader_gone_reactor_gives_up(self) -> None:
        """
        The same when the reactor drops the descriptor itself (an error
        event) and tells the log through C{connectionLost}.
        """

        def lost(writer: Any) -> None:
            self.clock.removeWriter(writer)
            writer.connectionLost(None)

        self.reader_gone(lost)

    def reader_gone(self, event: Any) -> None:
        self.clock = MemoryReactorClock()
        log = self.open_log()
        count = self.fill(log)
        pending = len(self.events)
        os.close(self.r)
        self.r = os.open(os.devnull, os.O_RDONLY)
        [writer] = self.clock.getWriters()
        event(writer)
        # lines go into a pipe whole: nothing was partly written
        self.assertEqual(log.pending, 0)
        self.assertEqual(self.clock.getWriters(), [])
        self.assertEqual(len(self.events), pending + 1)
        self.assertIsInstance(self.events[-1]["error"], BrokenPipeError)
        self.assertGreater(log.dropped, 5)
        self.assertLess(log.dropped, count)

    def test_stdout_keeps_blocking(self) -> None:
        """
        For a stream it does not own (standard output), the log writes
        through a description of its own: the stream's descriptor stays
        blocking for its other writers, and stays open after close().
        """
        if not os.path.isdir("/proc/self/fd"):
            raise SkipTest("needs Linux's /proc/self/fd")
        log = self.open_log(owned=False)
        count = self.fill(log)
        self.assertTrue(os.get_blocking(self.w))
        self.drain(log, lambda: self.clock.advance(accesslog.RETRY_DELAY))
        self.assertWholeLinesInOrder(count - 5)
        log.close()
        os.fstat(self.w)  # still open

    def test_other_writer_between_lines(self) -> None:
        """
        A full pipe never holds half a line: another writer of the same
        pipe (print, twistd's log on stdout) lands between two lines.
        """
        log = self.open_log()
        count = self.fill(log)
        self.read()
        os.write(self.w, b"OTHER\n")
        self.drain(log, lambda: self.clock.advance(accesslog.RETRY_DELAY))
        lines = self.received.splitlines()
        self.assertIn(b"OTHER", lines)
        lines.remove(b"OTHER")
        urls = [json.loads(line)["url"] for line in lines]
        self.assertEqual(urls, [self.URL.format(i) for i in range(count - 5)])

    def test_close_counts_unwritten(self) -> None:
        """
        Closing with lines the reader has not taken drops them (a line
        partly written included), counted, with a warning: every line
        logged was either received whole or counted as dropped.
        """
        log = self.open_log()
        count = self.fill(log)
        log.close()
        self.assertGreater(log.dropped, 5)
        self.assertEqual(self.events[-1]["lost"], log.dropped - 5)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.read()
        self.assertEqual(self.received.count(b"\n") + log.dropped, count)

    def test_reopen_while_waiting(self) -> None:
        """
        Reopening a log on a pipe whose reader is slow does nothing: the
        writer stays registered, nothing is dropped or written twice, and
        the reader receives every kept line whole and in order.
        """
        self.clock = MemoryReactorClock()
        log = self.open_log()
        count = self.fill(log)
        [writer] = self.clock.getWriters()
        pending, dropped = log.pending, log.dropped
        self.assertIs(log.reopen(), True)
        self.assertEqual(self.clock.getWriters(), [writer])
        self.assertEqual((log.pending, log.dropped), (pending, dropped))
        self.drain(log, writer.doWrite)
        self.assertIs(log.reopen(), True)
        self.assertWholeLinesInOrder(count - 5)
        self.assertEqual(log.dropped, 5)

    def test_service_waits_for_reader(self) -> None:
        """
        Stopping the access log service with lines waiting gives a Deferred
        that fires once the reader has taken them, then the log is closed.
        """
        log = self.open_log()
        count = self.fill(log)
        svc = AccessLogService(log)
        svc.startService()
        stopped = svc.stopService()
        self.assertIsNotNone(stopped)
        self.assertNoResult(stopped)
        self.drain(log, lambda: self.clock.advance(accesslog.RETRY_DELAY))
        self.successResultOf(stopped)
        self.assertTrue(log.closed)
        self.assertWholeLinesInOrder(count - 5)

    def test_service_gives_up(self) -> None:
        """
        If the reader takes nothing for DRAIN_TIMEOUT seconds, the service
        stops anyway and the lines left are counted as dropped.
        """
        log = self.open_log()
        self.fill(log)
        svc = AccessLogService(log)
        svc.startService()
        stopped = svc.stopService()
        self.clock.advance(accesslog.DRAIN_TIMEOUT)
        self.successResultOf(stopped)
        self.assertTrue(log.closed)
        self.assertGreater(log.dropped, 5)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StalledStream(io.RawIOBase):
    """
    A stream without a descriptor that takes nothing while C{stalled}
    (a non-blocking raw stream's C{None}), then at most 100 bytes a write.
    """

    def __init__(self) -> None:
        self.stalled = True
        self.data = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int | None:
        if self.stalled:
            return None
        chunk = bytes(data[:100])
        self.data += chunk
        return len(chunk)


class BoundedStreamTests(SynchronousTestCase):
    """
    The bound holds for any stream, whatever its kind.
    """

    def test_stalled_stream(self) -> None:
        """
        A stream that would block keeps the lines (up to the bound) and is
        retried on the clock; they arrive whole and in order.
        """
        clock = task.Clock()
        stream = StalledStream()
        log = AccessLog(stream, clock, max_buffer=2000)
        for i in range(20):
            entry(log, url=f"u{i}")
        log.flush()
        self.assertGreater(log.dropped, 0)
        kept = 20 - log.dropped
        self.assertEqual(stream.data, b"")
        clock.advance(accesslog.RETRY_DELAY)
        self.assertEqual(stream.data, b"")
        stream.stalled = False
        while log.pending:
            clock.advance(accesslog.RETRY_DELAY)
        records = [json.loads(line) for line in stream.data.splitlines()]
        self.assertEqual([r["url"] for r in records], [f"u{i}" for i in range(kept)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_regular_file_bounded(self) -> None:
        """
        On a regular file lines are written with plain writes; a bound
        smaller than a flush still holds (the log writes rather than drop
        while it can).
        """
        clock = task.Clock()
        path = self.mktemp()
        with open(path, "wb", buffering=0) as stream:
            log = AccessLog(stream, clock, owned=False, max_buffer=1000)
            for i in range(50):
                entry(log, url=f"u{i}")
            log.close()
        self.assertEqual(log.dropped, 0)
        with open(path, "rb") as f:
            records = [json.loads(line) for line in f.read().splitlines()]
        self.assertEqual([r["url"] for r in records], [f"u{i}" for i in range(50)])
        os.remove(path)

    def test_failure_mid_line(self) -> None:
        """
        A write that fails after part of a line was written keeps the rest
        of that line (the next write completes it) and drops only the lines
        not begun.
        """

        class Flaky(io.RawIOBase):
            def __init__(self) -> None:
                self.data = b""
                self.calls = 0

            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                self.calls += 1
                if self.calls == 2:
                    raise OSError(5, "Input/output error")
                chunk = bytes(data[:10]) if self.calls == 1 else bytes(data)
                self.data += chunk
                return len(chunk)

        stream = Flaky()
        log = AccessLog(stream, task.Clock())
        entry(log, url="first")
        entry(log, url="second")
        log.flush()
        self.assertEqual(log.dropped, 1)
        entry(log, url="third")
        log.flush()
        records = [json.loads(line) for line in stream.data.splitlines()]
        self.assertEqual([r["url"] for r in records], ["first", "third"])
