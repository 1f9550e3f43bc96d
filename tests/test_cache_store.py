"""
Tests for L{twisted_proxy.cache.store}.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import random
from typing import Any, Dict, List, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.cache.store import (
    CHUNK,
    Entry,
    ReadFailed,
    Reader,
    Spool,
    Store,
    key_hash,
)

KiB = 1024
MiB = 1024 * 1024


class Crash(BaseException):
    """
    The process dies here (nothing after it runs but C{finally} blocks).
    """


def read_all(reader: Reader, max_bytes: int = CHUNK) -> bytes:
    """
    Everything C{reader} has up to its end; the body must be complete.
    """
    parts: List[bytes] = []
    while True:
        data = reader.read(max_bytes)
        if data is None:
            return b"".join(parts)
        assert data, "the reader is waiting for a writer"
        parts.append(data)


def body_of(size: int, seed: int = 0) -> bytes:
    """
    C{size} reproducible bytes that differ from position to position.
    """
    return random.Random(seed).randbytes(size)


class StoreTestMixin:
    """
    A fresh open L{Store} in a temporary folder, on a L{Clock}.
    """

    clock: Clock

    def make_store(
        self: Any,
        max_size: int = 10 * MiB,
        memory: int = 0,
        memory_object_max: Optional[int] = None,
        path: Optional[str] = None,
    ) -> Store:
        if path is None:
            path = self.mktemp()
        if not hasattr(self, "clock"):
            self.clock = Clock()
            self.clock.advance(1_000_000)
        store = Store(path, max_size, memory, memory_object_max, name="test", clock=self.clock)
        store.open()
        self.addCleanup(store.close)
        return store

    def put(
        self,
        store: Store,
        key: str,
        body: bytes,
        meta: Optional[Dict[str, Any]] = None,
        chunk: int = 16 * KiB,
    ) -> Optional[Entry]:
        writer = store.begin(key, meta if meta is not None else {"status": 200})
        for start in range(0, len(body), chunk):
            writer.write(body[start : start + chunk])
        return writer.finish()

    def files(self, store: Store) -> List[str]:
        """
        Every file under the store's folder, relative to it.
        """
        found = []
        for folder, _, names in os.walk(store.path):
            for name in names:
                found.append(os.path.relpath(os.path.join(folder, name), store.path))
        return sorted(found)

    def paths(self, store: Store, key: str) -> List[str]:
        hexname = key_hash(key)
        body = os.path.join(store.path, "data", hexname[:2], hexname)
        return [body, body + ".meta"]


class WriteReadTests(StoreTestMixin, SynchronousTestCase):
    """
    A finished body is published and read back whole.
    """

    def test_publish_and_read_back(self) -> None:
        """
        A body written in several chunks and finished is published under its
        key with its metadata (plus key, size and use time) and reads back
        equal; the totals count it.
        """
        store = self.make_store()
        body = b"0123456789" * 5000
        meta = {"status": 200, "headers": [["a", "b"]]}
        entry = self.put(store, "http://example.com/a", body, meta)
        assert entry is not None
        self.assertIs(store.get("http://example.com/a"), entry)
        self.assertTrue(entry.complete)
        self.assertFalse(entry.failed)
        self.assertEqual(entry.size, len(body))
        self.assertEqual(entry.meta["status"], 200)
        self.assertEqual(entry.meta["headers"], [["a", "b"]])
        self.assertEqual(entry.meta["key"], "http://example.com/a")
        self.assertEqual(entry.meta["size"], len(body))
        self.assertEqual(entry.meta["used"], self.clock.seconds())
        self.assertEqual((store.entries, store.size), (1, len(body)))
        self.assertEqual(list(store), [entry])
        reader = entry.reader()
        self.assertEqual(reader.remaining, len(body))
        self.assertEqual(read_all(reader, 7000), body)
        self.assertEqual(reader.remaining, 0)
        self.assertIsNone(reader.read())
        reader.close()

    def test_several_mebibytes(self) -> None:
        """
        A body of several MiB written in 16 KiB chunks reads back in reads of
        at most 64 KiB with the same SHA-256, even when more is asked for.
        """
        store = self.make_store(max_size=64 * MiB)
        writer = store.begin("big", {})
        digest = hashlib.sha256()
        for number in range(5 * 64):
            chunk = body_of(16 * KiB, number)
            digest.update(chunk)
            writer.write(chunk)
        self.assertEqual(writer.written, 5 * MiB)
        entry = writer.finish()
        assert entry is not None
        sizes: List[int] = []
        pread = os.pread

        def recording_pread(fd: int, size: int, offset: int) -> bytes:
            sizes.append(size)
            return pread(fd, size, offset)

        self.patch(os, "pread", recording_pread)
        reader = entry.reader()
        check = hashlib.sha256()
        while True:
            data = reader.read(1 * MiB)
            if data is None:
                break
            self.assertLessEqual(len(data), CHUNK)
            check.update(data)
        reader.close()
        self.assertEqual(check.hexdigest(), digest.hexdigest())
        self.assertEqual(max(sizes), CHUNK)
        self.assertEqual(len(sizes), 5 * MiB // CHUNK)

    def test_layout_on_disk(self) -> None:
        """
        A published body is C{data/XX/<sha256 of key>} next to its JSON
        metadata C{.meta}; nothing stays in C{tmp/}.
        """
        store = self.make_store()
        self.put(store, "k", b"hello", {"x": 1})
        hexname = hashlib.sha256(b"k").hexdigest()
        self.assertEqual(
            self.files(store),
            [
                os.path.join("data", hexname[:2], hexname),
                os.path.join("data", hexname[:2], hexname + ".meta"),
            ],
        )
        body, meta = self.paths(store, "k")
        with open(body, "rb") as f:
            self.assertEqual(f.read(), b"hello")
        with open(meta, "rb") as f:
            self.assertEqual(
                json.loads(f.read()), {"x": 1, "key": "k", "size": 5, "used": self.clock.seconds()}
            )
        self.assertEqual(os.listdir(os.path.join(store.path, "tmp")), [])

    def test_not_served_before_finish(self) -> None:
        """
        A body being written is not published: L{Store.get} does not find it
        and the totals do not count it.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        writer.write(b"abc")
        self.assertIsNone(store.get("k"))
        self.assertEqual((store.entries, store.size), (0, 0))
        self.assertEqual(list(store), [])
        writer.finish()
        self.assertIsNotNone(store.get("k"))

    def test_empty_body(self) -> None:
        """
        An empty body is published and reads as the end at once.
        """
        store = self.make_store()
        entry = self.put(store, "empty", b"")
        assert entry is not None
        reader = entry.reader()
        self.assertEqual(reader.remaining, 0)
        self.assertIsNone(reader.read())

    def test_get_missing(self) -> None:
        """
        L{Store.get} of an unknown key is L{None}.
        """
        self.assertIsNone(self.make_store().get("nothing"))

    def test_begin_needs_open(self) -> None:
        """
        Writing to a store not opened (or closed) is refused.
        """
        store = Store(self.mktemp(), 100)
        self.assertRaises(RuntimeError, store.begin, "k", {})

    def test_write_after_finish(self) -> None:
        """
        Writing after L{Writer.finish} is an error; finishing twice too.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        writer.finish()
        self.assertRaises(RuntimeError, writer.write, b"x")
        self.assertRaises(RuntimeError, writer.finish)

    def test_meta_changes_until_finish(self) -> None:
        """
        The writer's C{entry.meta} may still change before
        L{Writer.finish}; the caller's dict is not kept.
        """
        store = self.make_store()
        meta = {"a": 1}
        writer = store.begin("k", meta)
        meta["a"] = 2
        writer.entry.meta["trailer"] = "yes"
        entry = writer.finish()
        assert entry is not None
        self.assertEqual((entry.meta["a"], entry.meta["trailer"]), (1, "yes"))

    def test_meta_not_json(self) -> None:
        """
        Metadata that JSON cannot hold makes L{Writer.finish} raise without
        publishing anything or leaving files behind.
        """
        store = self.make_store()
        writer = store.begin("k", {"bad": object()})
        writer.write(b"abc")
        self.assertRaises(TypeError, writer.finish)
        self.assertIsNone(store.get("k"))
        self.assertEqual(self.files(store), [])


class ReadWhileWritingTests(StoreTestMixin, SynchronousTestCase):
    """
    Readers attached to an entry being written follow the writer.
    """

    def test_reader_follows_writer(self) -> None:
        """
        A reader attached while the body is written reads the bytes as they
        arrive, gets C{b""} when it is ahead of the writer, is woken by
        C{on_ready} on each write and at the end, and reads the end after
        L{Writer.finish}.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader()
        woken: List[int] = []
        reader.on_ready = lambda: woken.append(writer.written)
        self.assertEqual(reader.read(), b"")
        self.assertIsNone(reader.remaining)
        writer.write(b"hello ")
        self.assertEqual(woken, [6])
        self.assertEqual(writer.entry.size, 6)
        self.assertEqual(reader.read(), b"hello ")
        self.assertEqual(reader.read(), b"")
        writer.write(b"world")
        self.assertEqual(reader.read(3), b"wor")
        self.assertEqual(reader.read(), b"ld")
        self.assertEqual(reader.read(), b"")
        writer.finish()
        self.assertEqual(woken, [6, 11, 11])
        self.assertEqual(reader.remaining, 0)
        self.assertIsNone(reader.read())
        reader.close()

    def test_reader_attached_before_data(self) -> None:
        """
        A reader attached before the first byte waits and then reads it all,
        also across the publication (the rename of its file).
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader()
        self.assertEqual(reader.read(), b"")
        body = body_of(300 * KiB)
        for start in range(0, len(body), 16 * KiB):
            writer.write(body[start : start + 16 * KiB])
        got = reader.read()
        assert got is not None
        writer.finish()
        got += read_all(reader)
        self.assertEqual(got, body)
        reader.close()

    def test_two_readers_different_paces(self) -> None:
        """
        Two readers of one writer read independently: one keeps up from
        C{on_ready}, the other only reads after the end, in small pieces;
        both get the whole body.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        fast = writer.entry.reader()
        slow = writer.entry.reader()
        fast_parts: List[bytes] = []

        def on_ready() -> None:
            while True:
                data = fast.read()
                if not data:
                    return
                fast_parts.append(data)

        fast.on_ready = on_ready
        self.assertEqual(slow.read(1000), b"")
        slow_parts: List[bytes] = []
        body = body_of(200 * KiB, 1)
        for start in range(0, len(body), 10 * KiB):
            writer.write(body[start : start + 10 * KiB])
            self.assertEqual(b"".join(fast_parts), body[: start + 10 * KiB])
        writer.finish()
        self.assertIsNone(fast.read())
        while True:
            data = slow.read(1000)
            if data is None:
                break
            self.assertLessEqual(len(data), 1000)
            slow_parts.append(data)
        self.assertEqual(b"".join(fast_parts), body)
        self.assertEqual(b"".join(slow_parts), body)

    def test_reader_attached_late(self) -> None:
        """
        A reader attached halfway through reads from the start.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        writer.write(b"first ")
        reader = writer.entry.reader()
        writer.write(b"second")
        writer.finish()
        self.assertEqual(read_all(reader), b"first second")

    def test_abort(self) -> None:
        """
        After L{Writer.abort} the attached readers are woken, read the bytes
        written and then fail with L{ReadFailed}; nothing is published, the
        temp file is gone, and later writes and C{finish} do nothing.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader()
        woken: List[bool] = []
        reader.on_ready = lambda: woken.append(True)
        writer.write(b"partial")
        writer.abort()
        self.assertEqual(len(woken), 2)
        self.assertTrue(writer.entry.failed)
        self.assertFalse(writer.entry.complete)
        self.assertEqual(reader.read(), b"partial")
        self.assertRaises(ReadFailed, reader.read)
        self.assertRaises(ReadFailed, reader.read)
        writer.write(b"more")
        self.assertIsNone(writer.finish())
        self.assertIsNone(store.get("k"))
        self.assertEqual(self.files(store), [])
        self.assertRaises(ReadFailed, writer.entry.reader)

    def test_abort_after_range(self) -> None:
        """
        A reader whose range ends within the bytes written before the abort
        reads its range to the end.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader(2, 5)
        writer.write(b"0123456")
        writer.abort()
        self.assertEqual(read_all(reader), b"234")

    def test_abort_keeps_older_entry(self) -> None:
        """
        An aborted rewrite of a key leaves its published entry in place.
        """
        store = self.make_store()
        old = self.put(store, "k", b"old body")
        writer = store.begin("k", {})
        writer.write(b"new")
        writer.abort()
        self.assertIs(store.get("k"), old)
        assert old is not None
        self.assertEqual(read_all(old.reader()), b"old body")

    def test_failing_on_ready(self) -> None:
        """
        A C{on_ready} that raises is logged; the writer and the other readers
        carry on.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        broken = writer.entry.reader()
        good = writer.entry.reader()

        def fail() -> None:
            raise ZeroDivisionError()

        broken.on_ready = fail
        woken: List[bool] = []
        good.on_ready = lambda: woken.append(True)
        writer.write(b"abc")
        self.assertEqual(woken, [True])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        writer.finish()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(read_all(good), b"abc")

    def test_closed_reader_not_woken(self) -> None:
        """
        A closed reader is not notified any more and cannot be read.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader()
        woken: List[bool] = []
        reader.on_ready = lambda: woken.append(True)
        reader.close()
        writer.write(b"abc")
        self.assertEqual(woken, [])
        self.assertRaises(ReadFailed, reader.read)
        reader.close()

    def test_reader_at_end_not_woken(self) -> None:
        """
        A reader that reached the end of its range is no longer notified.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader(0, 2)
        woken: List[bool] = []
        reader.on_ready = lambda: woken.append(True)
        writer.write(b"ab")
        self.assertEqual(reader.read(), b"ab")
        self.assertIsNone(reader.read())
        writer.write(b"cd")
        self.assertEqual(woken, [True])
        self.assertIsNone(reader.read())


class BoundTests(StoreTestMixin, SynchronousTestCase):
    """
    The published bytes stay within C{max_size}, least recently used out.
    """

    def test_lru_eviction(self) -> None:
        """
        Publishing beyond C{max_size} evicts the least recently used entries
        (a L{Store.get} counts as a use) until the size fits; their files
        are deleted and the evictions counted.
        """
        store = self.make_store(max_size=300)
        for key in "abc":
            self.put(store, key, key.encode() * 100)
        store.get("a")
        self.put(store, "d", b"d" * 100)
        self.assertEqual([entry.key for entry in store], ["c", "a", "d"])
        self.assertEqual((store.entries, store.size, store.evictions), (3, 300, 1))
        self.assertIsNone(store.get("b"))
        for path in self.paths(store, "b"):
            self.assertFalse(os.path.exists(path))
        self.put(store, "e", b"e" * 250)
        self.assertEqual([entry.key for entry in store], ["e"])
        self.assertEqual((store.size, store.evictions), (250, 4))
        self.assertEqual(len(self.files(store)), 2)

    def test_bigger_than_max_size(self) -> None:
        """
        A body bigger than C{max_size} is not published and evicts nothing;
        a reader attached while it was written still gets all of it.
        """
        store = self.make_store(max_size=100)
        self.put(store, "small", b"s" * 50)
        writer = store.begin("big", {})
        reader = writer.entry.reader()
        writer.write(b"x" * 80)
        writer.write(b"y" * 80)
        self.assertIsNone(writer.finish())
        self.assertTrue(writer.entry.complete)
        self.assertEqual(read_all(reader), b"x" * 80 + b"y" * 80)
        self.assertIsNone(store.get("big"))
        self.assertIsNotNone(store.get("small"))
        self.assertEqual((store.entries, store.size, store.evictions), (1, 50, 0))
        self.assertEqual(os.listdir(os.path.join(store.path, "tmp")), [])

    def test_bigger_than_max_size_dropped_early(self) -> None:
        """
        With no reader attached, a body is dropped as soon as it outgrows
        C{max_size}: its temp file goes at once and the rest of the writes are
        ignored.
        """
        store = self.make_store(max_size=100)
        writer = store.begin("big", {})
        writer.write(b"x" * 80)
        writer.write(b"y" * 80)
        self.assertTrue(writer.entry.failed)
        self.assertEqual(os.listdir(os.path.join(store.path, "tmp")), [])
        writer.write(b"z" * 80)
        self.assertIsNone(writer.finish())
        self.assertEqual(store.entries, 0)

    def test_evicted_entry_still_read(self) -> None:
        """
        A reader attached to an entry keeps reading it whole after the entry
        is evicted; a new reader of the evicted entry cannot be made.
        """
        store = self.make_store(max_size=150 * KiB)
        body = body_of(100 * KiB)
        old = self.put(store, "old", body)
        assert old is not None
        reader = old.reader()
        first = reader.read(1000)
        assert first is not None
        self.put(store, "new", body_of(100 * KiB, 2))
        self.assertIsNone(store.get("old"))
        self.assertEqual(store.evictions, 1)
        self.assertEqual(first + read_all(reader), body)
        self.assertRaises(ReadFailed, old.reader)


class ReplaceTests(StoreTestMixin, SynchronousTestCase):
    """
    A new body of a key replaces the old one when it is finished.
    """

    def test_replace_while_reading(self) -> None:
        """
        The old body is served until the new one is finished; a reader of
        the old body reads it to its end after the replacement; the totals
        count only the new body.
        """
        store = self.make_store()
        old_body = body_of(200 * KiB, 1)
        old = self.put(store, "k", old_body, {"v": 1})
        assert old is not None
        reader = old.reader()
        part = reader.read()
        assert part is not None
        writer = store.begin("k", {"v": 2})
        writer.write(b"new body")
        self.assertIs(store.get("k"), old)
        new = writer.finish()
        assert new is not None
        self.assertIs(store.get("k"), new)
        self.assertEqual(new.meta["v"], 2)
        self.assertEqual((store.entries, store.size, store.evictions), (1, 8, 0))
        self.assertEqual(part + read_all(reader), old_body)
        self.assertEqual(read_all(new.reader()), b"new body")
        self.assertRaises(ReadFailed, old.reader)
        self.assertEqual(len(self.files(store)), 2)

    def test_replace_crash_never_serves_mixture(self) -> None:
        """
        A crash while a key is replaced (after the new body is renamed into
        place, before its metadata) leaves neither entry served after a
        restart: the old metadata went first.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        self.put(store, "k", b"12345", {"v": 1})
        writer = store.begin("k", {"v": 2})
        writer.write(b"abcde")
        rename = os.rename

        def crash_on_meta(source: str, destination: str) -> None:
            if destination.endswith(".meta"):
                raise Crash()
            rename(source, destination)

        self.patch(os, "rename", crash_on_meta)
        self.assertRaises(Crash, writer.finish)
        self.patch(os, "rename", rename)
        again = Store(path, 100, clock=self.clock)
        again.open()
        self.addCleanup(again.close)
        self.assertIsNone(again.get("k"))
        self.assertEqual(self.files(again), [])


class CrashTests(StoreTestMixin, SynchronousTestCase):
    """
    L{Store.open} deletes what unfinished writes left and never serves it.
    """

    def test_leftovers(self) -> None:
        """
        Temp files, a body without metadata, metadata without a body,
        metadata whose body has another size, unreadable metadata and
        stray files are deleted at open; the good entry is served.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        self.put(store, "good", b"good body")
        self.put(store, "short", b"0123456789")
        self.put(store, "bodyless", b"abc")
        self.put(store, "garbled", b"abc")
        store.close()
        self.assertEqual(len(self.files(store)), 8)
        with open(os.path.join(path, "tmp", "123.4.body"), "wb") as f:
            f.write(b"half a body")
        os.mkdir(os.path.join(path, "tmp", "folder"))
        orphan = self.paths(store, "orphan")[0]
        os.makedirs(os.path.dirname(orphan), exist_ok=True)
        with open(orphan, "wb") as f:
            f.write(b"no metadata")
        with open(self.paths(store, "short")[0], "r+b") as f:
            f.truncate(5)
        os.unlink(self.paths(store, "bodyless")[0])
        with open(self.paths(store, "garbled")[1], "wb") as f:
            f.write(b'{"key": "garbled", "si')
        stray = os.path.join(os.path.dirname(self.paths(store, "good")[0]), "stray")
        with open(stray, "wb") as f:
            f.write(b"?")

        again = self.make_store(path=path)
        self.assertEqual([entry.key for entry in again], ["good"])
        self.assertEqual((again.entries, again.size), (1, 9))
        for key in ["short", "bodyless", "garbled", "orphan"]:
            self.assertIsNone(again.get(key))
        good = sorted(os.path.relpath(p, path) for p in self.paths(again, "good"))
        self.assertEqual(self.files(again), good)
        self.assertEqual(os.listdir(os.path.join(path, "tmp")), [])
        entry = again.get("good")
        assert entry is not None
        self.assertEqual(read_all(entry.reader()), b"good body")

    def test_unfinished_write(self) -> None:
        """
        A body whose writer never finished (the process died) is not served
        after a restart and its temp file is deleted.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        writer = store.begin("k", {})
        writer.write(b"some of it")
        self.assertEqual(len(os.listdir(os.path.join(path, "tmp"))), 1)
        again = self.make_store(path=path)
        self.assertIsNone(again.get("k"))
        self.assertEqual(self.files(again), [])

    def test_wrong_key_in_meta(self) -> None:
        """
        Metadata whose key does not hash to its file name is not trusted.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        self.put(store, "k", b"abc")
        store.close()
        meta = self.paths(store, "k")[1]
        with open(meta, "w") as f:
            json.dump({"key": "other", "size": 3}, f)
        again = self.make_store(path=path)
        self.assertEqual((again.entries, self.files(again)), (0, []))


class RestartTests(StoreTestMixin, SynchronousTestCase):
    """
    A new L{Store} on the same folder finds the published entries.
    """

    def test_restart_without_reading_bodies(self) -> None:
        """
        Opening rebuilds the index from the metadata files alone (no body
        file is opened), with the metadata, sizes and totals as they were;
        the bodies then read back.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        bodies = {f"http://h/{n}": body_of(n * 10 * KiB, n) for n in range(1, 6)}
        for key, body in bodies.items():
            self.put(store, key, body, {"status": 200, "n": len(body)})
        store.close()

        opened: List[str] = []
        real_open = os.open
        real_builtin_open = builtins.open

        def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(os.fsdecode(file))
            return real_open(file, *args, **kwargs)

        def spy_builtin_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(os.fsdecode(file))
            return real_builtin_open(file, *args, **kwargs)

        self.patch(os, "open", spy_open)
        self.patch(builtins, "open", spy_builtin_open)
        again = self.make_store(path=path)
        self.patch(os, "open", real_open)
        self.patch(builtins, "open", real_builtin_open)

        self.assertEqual(len(opened), 5)
        for name in opened:
            self.assertTrue(name.endswith(".meta"), name)
        self.assertEqual((again.entries, again.size), (5, sum(map(len, bodies.values()))))
        for key, body in bodies.items():
            entry = again.get(key)
            assert entry is not None
            self.assertEqual(
                (entry.meta["status"], entry.meta["n"], entry.size), (200, len(body), len(body))
            )
            self.assertTrue(entry.complete)
            self.assertEqual(read_all(entry.reader()), body)

    def test_recency_survives_restart(self) -> None:
        """
        The least-recently-used order (writes and gets, at a resolution of a
        minute) survives a restart: a smaller C{max_size} then evicts the
        entries used longest ago.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        for key in "abcd":
            self.put(store, key, b"x" * 10)
            self.clock.advance(100)
        store.get("a")
        self.clock.advance(100)
        store.get("c")
        self.clock.advance(100)
        store.close()
        again = Store(path, 20, clock=self.clock)
        again.open()
        self.addCleanup(again.close)
        self.assertEqual([entry.key for entry in again], ["a", "c"])
        self.assertEqual(again.evictions, 2)

    def test_update_meta(self) -> None:
        """
        L{Store.update_meta} replaces an entry's metadata (keeping its key,
        size and recency), through a temp file renamed into place, and the
        new metadata is found after a restart; an unknown key is ignored.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        self.put(store, "k", b"abc", {"etag": "1", "old": True})
        self.put(store, "other", b"def")
        store.update_meta("k", {"etag": "2", "key": "forged", "size": 99})
        entry = store.get("k")
        assert entry is not None
        self.assertEqual(entry.meta["etag"], "2")
        self.assertNotIn("old", entry.meta)
        self.assertEqual((entry.meta["key"], entry.meta["size"]), ("k", 3))
        self.assertEqual(os.listdir(os.path.join(path, "tmp")), [])
        store.update_meta("missing", {"etag": "3"})
        self.assertIsNone(store.get("missing"))
        store.close()
        again = self.make_store(path=path)
        entry = again.get("k")
        assert entry is not None
        self.assertEqual((entry.meta["etag"], entry.size), ("2", 3))
        self.assertEqual(read_all(entry.reader()), b"abc")


class RemoveTests(StoreTestMixin, SynchronousTestCase):
    """
    Entries are removed by key or by predicate.
    """

    def test_remove(self) -> None:
        """
        L{Store.remove} deletes a published entry and its files and tells
        whether there was one; readers attached read on.
        """
        store = self.make_store()
        entry = self.put(store, "k", b"abc")
        assert entry is not None
        reader = entry.reader()
        self.assertTrue(store.remove("k"))
        self.assertFalse(store.remove("k"))
        self.assertIsNone(store.get("k"))
        self.assertEqual((store.entries, store.size), (0, 0))
        self.assertEqual(self.files(store), [])
        self.assertEqual(read_all(reader), b"abc")

    def test_purge(self) -> None:
        """
        L{Store.purge} removes every entry the predicate selects and counts
        them.
        """
        store = self.make_store(memory=10 * KiB)
        for n in range(6):
            self.put(store, f"k{n}", b"x" * 100, {"tags": ["even" if n % 2 == 0 else "odd"]})
        self.assertEqual(store.memory_size, 600)
        self.assertEqual(store.purge(lambda entry: "even" in entry.meta["tags"]), 3)
        self.assertEqual(sorted(entry.key for entry in store), ["k1", "k3", "k5"])
        self.assertEqual((store.entries, store.size, store.memory_size), (3, 300, 300))
        self.assertEqual(len(self.files(store)), 6)
        self.assertEqual(store.purge(lambda entry: False), 0)


class MemoryTierTests(StoreTestMixin, SynchronousTestCase):
    """
    Small bodies are also kept in memory, within a bound.
    """

    def test_default_object_max(self) -> None:
        """
        The largest body kept in memory is by default an eighth of the
        memory, at most 1 MiB; no memory, no memory tier.
        """
        self.assertEqual(Store("x", 1, memory=80 * KiB).memory_object_max, 10 * KiB)
        self.assertEqual(Store("x", 1, memory=64 * MiB).memory_object_max, MiB)
        self.assertEqual(Store("x", 1).memory_object_max, 0)

    def test_bound(self) -> None:
        """
        Published bodies up to C{memory_object_max} are kept in memory, the
        least recently used dropped beyond C{memory}; bigger ones are not.
        """
        store = self.make_store(memory=1000, memory_object_max=300)
        for key in "abc":
            self.put(store, key, key.encode() * 300)
        self.assertEqual(store.memory_size, 900)
        self.put(store, "big", b"B" * 301)
        self.assertEqual(store.memory_size, 900)
        store.get("a")
        self.put(store, "d", b"d" * 300)
        self.assertEqual(store.memory_size, 900)
        self.assertEqual(store.size, 1501)
        # "b" left memory (but not the disk); a get brings it back in
        self.patch(os, "pread", self.fail_pread)
        for key in "acd":
            entry = store.get(key)
            assert entry is not None
            self.assertEqual(read_all(entry.reader()), key.encode() * 300)

    def fail_pread(self, fd: int, size: int, offset: int) -> bytes:
        raise AssertionError("read from disk")

    def test_readers_from_memory(self) -> None:
        """
        Readers of an entry in memory read the bytes held, not the file
        (which may be gone); a range too.
        """
        store = self.make_store(memory=10 * KiB)
        entry = self.put(store, "k", b"0123456789")
        assert entry is not None
        os.unlink(self.paths(store, "k")[0])
        self.patch(os, "pread", self.fail_pread)
        self.assertEqual(read_all(entry.reader()), b"0123456789")
        self.assertEqual(read_all(entry.reader(3, 6), 2), b"345")

    def test_get_brings_into_memory(self) -> None:
        """
        After a restart, L{Store.get} of a small entry reads it into memory.
        """
        path = self.mktemp()
        store = self.make_store(path=path, memory=10 * KiB)
        self.put(store, "k", b"abc" * 100)
        store.close()
        again = self.make_store(path=path, memory=10 * KiB)
        self.assertEqual(again.memory_size, 0)
        entry = again.get("k")
        assert entry is not None
        self.assertEqual(again.memory_size, 300)
        self.patch(os, "pread", self.fail_pread)
        self.assertEqual(read_all(entry.reader()), b"abc" * 100)

    def test_get_of_lost_body(self) -> None:
        """
        An entry whose body file vanished is removed when L{Store.get} tries
        to read it into memory.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        self.put(store, "k", b"abc")
        store.close()
        again = self.make_store(path=path, memory=10 * KiB)
        os.unlink(self.paths(again, "k")[0])
        self.assertIsNone(again.get("k"))
        self.assertEqual((again.entries, again.size), (0, 0))

    def test_evicted_from_disk_leaves_memory(self) -> None:
        """
        An entry evicted from the disk leaves the memory tier too.
        """
        store = self.make_store(max_size=200, memory=10 * KiB)
        self.put(store, "a", b"a" * 100)
        self.put(store, "b", b"b" * 100)
        self.put(store, "c", b"c" * 100)
        self.assertEqual((store.size, store.memory_size), (200, 200))


class RangeTests(StoreTestMixin, SynchronousTestCase):
    """
    Readers of part of a body, for Range answers.
    """

    def test_ranges(self) -> None:
        """
        A reader from C{offset} to C{end} (exclusive) reads exactly that part
        and knows what remains; an end past the body stops at the body's end.
        """
        store = self.make_store()
        body = body_of(200 * KiB)
        entry = self.put(store, "k", body)
        assert entry is not None
        reader = entry.reader(1000, 150 * KiB)
        self.assertEqual(reader.remaining, 150 * KiB - 1000)
        self.assertEqual(read_all(reader), body[1000 : 150 * KiB])
        self.assertEqual(read_all(entry.reader(100 * KiB)), body[100 * KiB :])
        self.assertEqual(read_all(entry.reader(5, 5)), b"")
        beyond = entry.reader(199 * KiB, 300 * KiB)
        self.assertEqual(beyond.remaining, KiB)
        self.assertEqual(read_all(beyond), body[199 * KiB :])
        self.assertRaises(ValueError, entry.reader, -1)
        self.assertRaises(ValueError, entry.reader, 10, 5)

    def test_range_while_writing(self) -> None:
        """
        A range reader of a body being written waits for its start, then
        ends at its end without waiting for the rest.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader(4, 8)
        self.assertEqual(reader.remaining, 4)
        writer.write(b"0123")
        self.assertEqual(reader.read(), b"")
        writer.write(b"456")
        self.assertEqual(reader.read(), b"456")
        writer.write(b"789")
        self.assertEqual(reader.read(), b"7")
        self.assertIsNone(reader.read())

    def test_range_past_final_size(self) -> None:
        """
        A range reader made while writing whose end is past the final size
        fails rather than end short.
        """
        store = self.make_store()
        writer = store.begin("k", {})
        reader = writer.entry.reader(0, 10)
        writer.write(b"abc")
        writer.finish()
        self.assertEqual(reader.read(), b"abc")
        self.assertRaises(ReadFailed, reader.read)


class CloseTests(StoreTestMixin, SynchronousTestCase):
    """
    L{Store.close} releases everything.
    """

    def test_close(self) -> None:
        """
        Closing aborts the writers in flight (their readers fail, their temp
        files go) and closes the readers of published entries; the
        published files stay for the next open.
        """
        path = self.mktemp()
        store = self.make_store(path=path)
        published = self.put(store, "done", b"abc")
        assert published is not None
        done_reader = published.reader()
        writer = store.begin("k", {})
        reader = writer.entry.reader()
        writer.write(b"x")
        store.close()
        self.assertTrue(writer.entry.failed)
        self.assertRaises(ReadFailed, reader.read)
        self.assertRaises(ReadFailed, done_reader.read)
        self.assertEqual(store.entries, 0)
        self.assertEqual(os.listdir(os.path.join(path, "tmp")), [])
        self.assertRaises(RuntimeError, store.begin, "k", {})
        again = self.make_store(path=path)
        self.assertEqual([entry.key for entry in again], ["done"])


class SpoolTests(SynchronousTestCase):
    """
    L{Spool} buffers: memory first, then anonymous files, within a budget.
    """

    def make_spool(self, max_size: int, segment_size: int = 1 << 20) -> Spool:
        spool = Spool(self.mktemp(), max_size, segment_size=segment_size)
        spool.open()
        return spool

    def test_memory_then_file(self) -> None:
        """
        The first C{memory_limit} bytes stay in memory, the rest goes to disk
        (counted in C{used}, in no named file); reads give the bytes back
        oldest first, and the disk is released when the buffer empties.
        """
        spool = self.make_spool(1000)
        buffer = spool.buffer(memory_limit=10)
        self.assertTrue(buffer.write(b"01234567"))
        self.assertEqual((buffer.size, spool.used), (8, 0))
        self.assertTrue(buffer.write(b"89abcdef"))
        self.assertEqual((buffer.size, spool.used), (16, 6))
        self.assertEqual(os.listdir(spool.path), [])
        self.assertEqual(buffer.read(4), b"0123")
        self.assertTrue(buffer.write(b"gh"))
        self.assertEqual(spool.used, 8)
        self.assertEqual(buffer.read(), b"456789")
        self.assertEqual(buffer.read(), b"abcdefgh")
        self.assertEqual((buffer.size, spool.used), (0, 0))
        self.assertEqual(buffer.read(), b"")
        self.assertTrue(buffer.write(b"ij"))
        self.assertEqual((buffer.size, spool.used), (2, 0))
        self.assertEqual(buffer.read(), b"ij")
        buffer.close()

    def test_refusal(self) -> None:
        """
        A write whose disk part would take the spool beyond C{max_size} takes
        nothing and answers C{False}; the budget is shared by the buffers.
        """
        spool = self.make_spool(100)
        first = spool.buffer(memory_limit=0)
        second = spool.buffer(memory_limit=20)
        self.assertTrue(first.write(b"a" * 60))
        self.assertFalse(second.write(b"b" * 70))
        self.assertEqual((second.size, spool.used), (0, 60))
        self.assertTrue(second.write(b"b" * 60))
        self.assertEqual((second.size, spool.used), (60, 100))
        self.assertFalse(first.write(b"a"))
        self.assertTrue(second.write(b""))
        self.assertEqual(first.read(), b"a" * 60)
        self.assertEqual(spool.used, 40)
        self.assertTrue(first.write(b"a" * 50))
        first.close()
        second.close()

    def test_close_returns_budget(self) -> None:
        """
        Closing a buffer gives its disk bytes back to the spool; a closed
        buffer cannot be written and reads empty.
        """
        spool = self.make_spool(1000)
        buffer = spool.buffer(memory_limit=10)
        other = spool.buffer(memory_limit=0)
        buffer.write(b"x" * 300)
        other.write(b"y" * 200)
        self.assertEqual(spool.used, 490)
        buffer.close()
        self.assertEqual(spool.used, 200)
        self.assertEqual(buffer.size, 0)
        self.assertEqual(buffer.read(), b"")
        self.assertRaises(ValueError, buffer.write, b"z")
        buffer.close()
        other.close()
        self.assertEqual(spool.used, 0)

    def test_segments_released_while_draining(self) -> None:
        """
        Disk space comes back segment by segment as the buffer drains, not
        only once it is empty; file reads are at most 64 KiB.
        """
        spool = self.make_spool(10 * MiB, segment_size=100 * KiB)
        buffer = spool.buffer(memory_limit=0)
        body = body_of(350 * KiB)
        self.assertTrue(buffer.write(body))
        self.assertEqual(spool.used, 350 * KiB)
        got = [buffer.read(MiB), buffer.read(MiB)]
        self.assertEqual([len(part) for part in got], [CHUNK, 100 * KiB - CHUNK])
        self.assertEqual(spool.used, 250 * KiB)
        while buffer.size:
            got.append(buffer.read(MiB))
        self.assertEqual(b"".join(got), body)
        self.assertEqual(spool.used, 0)
        buffer.close()

    def test_fifo(self) -> None:
        """
        Interleaved writes and reads of random sizes come out as they went
        in, and the budget is back to zero when all is read.
        """
        spool = self.make_spool(10 * MiB, segment_size=10 * KiB)
        buffer = spool.buffer(memory_limit=3 * KiB)
        rng = random.Random(7)
        written = bytearray()
        read = bytearray()
        for n in range(2000):
            if rng.random() < 0.55:
                data = rng.randbytes(rng.randrange(1, 4 * KiB))
                self.assertTrue(buffer.write(data))
                written += data
            else:
                read += buffer.read(rng.randrange(1, 8 * KiB))
            self.assertEqual(buffer.size, len(written) - len(read))
        while buffer.size:
            read += buffer.read()
        self.assertEqual(bytes(read), bytes(written))
        self.assertEqual(spool.used, 0)
        buffer.close()

    def test_open_clears_leftovers(self) -> None:
        """
        Opening a spool deletes the files left in its folder.
        """
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, "left"), "wb") as f:
            f.write(b"x")
        spool = Spool(path, 100)
        spool.open()
        self.assertEqual(os.listdir(path), [])

    def test_named_files_fallback(self) -> None:
        """
        Without C{O_TMPFILE} the files are made and unlinked at once.
        """
        spool = self.make_spool(1000)
        spool._tmpfile = False
        buffer = spool.buffer(memory_limit=0)
        self.assertTrue(buffer.write(b"abc"))
        self.assertEqual(os.listdir(spool.path), [])
        self.assertEqual(buffer.read(), b"abc")
        buffer.close()

