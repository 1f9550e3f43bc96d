# -*- test-case-name: tests.test_cache_store -*-
"""
A bounded, disk-backed body store with readers that follow a writer, for
the shared HTTP cache (L{Store}) and for response and request buffering
(L{Spool}).

L{Store}: one folder, one process
=================================
Layout::

    path/data/XX/<hex>        body (XX: the first two digits of <hex>)
    path/data/XX/<hex>.meta   JSON metadata; its presence publishes the body
    path/tmp/                 bodies and metadata being written (unique names)

C{<hex>} is the SHA-256 of the key. A body is written under C{tmp/} while
it arrives (L{Store.begin}, L{Writer.write}); L{Writer.finish} publishes it
in this order: the new metadata is written under C{tmp/}, the old metadata
of the key (if any) is unlinked, the body is renamed into place, then the
metadata is renamed into place. The metadata file is the commit point: a
crash at any step leaves either nothing, a temp file (C{tmp/} is emptied
by L{Store.open}) or a body without metadata (deleted by L{Store.open}),
so a partially written body is never served. A process crash cannot leave
a complete-looking but partial body; the files are not C{fsync}ed, so
after a power loss a body of the recorded size may hold zeros (the same
trade nginx and Varnish make).

L{Store.open} rebuilds the index from the metadata files alone: each body
is only C{stat}ed for its size; a missing body or a size that differs from
the recorded one deletes both files. The recency order comes from the
C{"used"} time: the metadata holds the time of its last write and the
metadata file's mtime the time of the last use, refreshed by
L{Store.get} with one C{utime} at most every L{USED_RESOLUTION} seconds
per entry (so the LRU order survives restarts approximately, without a
write per hit).

The index is an C{OrderedDict} (least recently used first) plus totals.
Publishing evicts the least recently used entries until L{Store.size} is
at most C{max_size}; a body bigger than C{max_size} is never published,
and if nobody reads it while it is written it is dropped as soon as it
outgrows C{max_size}. Eviction, removal and replacement unlink files:
readers already attached hold their own descriptors and read on
undisturbed. Only the published bytes are bounded: bodies being written
live in C{tmp/} until they finish.

Readers follow the writer (the request-collapsing case): L{Writer.entry}
is there from L{Store.begin} on, L{Entry.reader} opens its own descriptor
on the temp file, and L{Reader.read} returns what is there now (C{os.pread}
of at most 64 KiB), C{b""} when the writer is behind, L{None} at the end,
or raises L{ReadFailed} when the writer aborted before this reader's end.
L{Writer.write}, L{Writer.finish} and L{Writer.abort} call each attached
reader's C{on_ready} synchronously.

The memory tier keeps the bodies of published entries up to
C{memory_object_max} bytes in a second LRU bounded by C{memory} bytes: a
writer keeps its chunks while the body still fits, and L{Store.get} of a
small entry only on disk reads it in (64 KiB reads of a small file).
Readers of such entries slice the bytes. No other body is ever held whole.

One process owns a folder (L{Store.open} empties C{tmp/}). A consumer
closes every L{Reader} it makes (each holds a descriptor until then;
L{Store.close} closes the rest). L{Entry.reader} raises L{ReadFailed} for
an entry no longer stored, so a consumer makes its reader before it sends
a response head.

All disk work is plain C{os} calls on bounded chunks on the calling
(reactor) thread: page-cache writes and reads of at most 64 KiB, never a
whole body file (except the small bodies of the memory tier). L{Store.open}
and L{Spool.open} scan their folders synchronously: call them at start-up.

L{Spool}: anonymous buffers
===========================
A L{SpoolBuffer} is a FIFO byte buffer: its first C{memory_limit} bytes
stay in memory, the rest goes to unnamed files (C{O_TMPFILE}, or unlinked
at once) under the spool folder, in segments that double from
C{segment_size} (1 MiB) up to L{MAX_SEGMENT_SIZE} (64 MiB), so a large
buffer holds few descriptors. A segment read to its end is closed (or truncated when it is the last one),
so disk space returns to the spool's budget as the buffer drains, not only
when it empties. A write that would take the spool's disk use beyond
C{max_size} takes nothing and answers C{False}: the caller falls back to
back-pressure.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import shutil
import stat
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = [
    "CHUNK",
    "Entry",
    "ReadFailed",
    "Reader",
    "Spool",
    "SpoolBuffer",
    "Store",
    "Writer",
    "key_hash",
]

log = Logger()

CHUNK = 65536
"""The largest read of a body file in one call."""

MEMORY_OBJECT_MAX = 1 << 20
"""The largest default C{memory_object_max}."""

META_MAX = 1 << 20
"""A metadata file bigger than this is taken for garbage at open."""

USED_RESOLUTION = 60.0
"""Seconds between two refreshes of an entry's use time on disk."""

SEGMENT_SIZE = 1 << 20
"""The default size of one spool file segment."""

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_READ_FLAGS = os.O_RDONLY | _O_CLOEXEC | _O_BINARY
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_BINARY
_HEX = frozenset("0123456789abcdef")


class ReadFailed(Exception):
    """
    A body cannot be read to the end asked for: its writer aborted, the
    entry is gone (replaced, removed or evicted before a reader was made),
    the reader was closed, or the file failed. A consumer must end its
    response short (close the connection), never as complete.
    """


def key_hash(key: str) -> str:
    """
    The file name of C{key}'s body: the hex SHA-256 of its UTF-8 form.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _is_hex_name(name: str) -> bool:
    return len(name) == 64 and _HEX.issuperset(name)


def _unlink(path: str) -> bool:
    """
    Unlink C{path}; C{False} when it was not there (or could not go).
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warn("cannot delete {path}: {error}", path=path, error=e.strerror)
        return False
    return True


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]
        offset += written


def _read_small(path: str, limit: int) -> Optional[bytes]:
    """
    The whole of a small file, in reads of at most L{CHUNK} bytes;
    L{None} when it holds more than C{limit} bytes.
    """
    fd = os.open(path, _READ_FLAGS)
    try:
        chunks: List[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(CHUNK, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                return None
    finally:
        os.close(fd)


class Entry:
    """
    A body and its metadata: published (L{Store.get}, always complete) or
    being written (L{Writer.entry}).

    @ivar key: the key.
    @ivar meta: the metadata (JSON-serialisable); the store adds C{"key"},
        C{"size"} and C{"used"} when it publishes.
    @ivar size: body bytes available so far (the final size once complete).
    @ivar complete: the whole body is there.
    @ivar failed: the writer aborted; readers end with L{ReadFailed}.
    """

    def __init__(self, store: Store, key: str, meta: Dict[str, Any], hexname: str) -> None:
        self.key = key
        self.meta = meta
        self.size = 0
        self.complete = False
        self.failed = False
        self._store = store
        self._hex = hexname
        # the body file: the temp file while written, the published file,
        # or None when no new reader can be made
        self._path: Optional[str] = None
        self._body: Optional[bytes] = None
        self._waiting: List[Reader] = []
        self._touched = 0.0

    def __repr__(self) -> str:
        state = "failed" if self.failed else "complete" if self.complete else "writing"
        return f"<Entry {self.key!r} {self.size} bytes {state}>"

    def memory_body(self) -> Optional[bytes]:
        """
        The whole body when the entry is complete and held in memory (the
        memory tier), else L{None}: a hit of a small body needs no reader.
        """
        return self._body if self.complete and not self.failed else None

    def reader(self, offset: int = 0, end: Optional[int] = None) -> Reader:
        """
        A reader of the body from C{offset} to C{end} (exclusive; L{None}:
        to the end of the body, also while it is being written).

        @raise ReadFailed: the writer aborted, or the entry is no longer in
            the store (removed, replaced or evicted), or its file is gone.
        @raise ValueError: a negative offset or an end before the offset.
        """
        if offset < 0 or (end is not None and end < offset):
            raise ValueError(f"bad range {offset}-{end}")
        if self.failed:
            raise ReadFailed(f"the writer of {self.key!r} aborted")
        if self.complete:
            end = self.size if end is None else min(end, self.size)
        body = self._body
        if body is not None:
            return Reader(self, offset, end, None, body)
        path = self._path
        if path is None:
            raise ReadFailed(f"{self.key!r} is no longer stored")
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as e:
            raise ReadFailed(f"cannot open the body of {self.key!r}: {e.strerror}") from e
        reader = Reader(self, offset, end, fd, None)
        if not self.complete:
            self._waiting.append(reader)
        self._store._readers.add(reader)
        return reader

    def _wake(self) -> None:
        for reader in tuple(self._waiting):
            callback = reader.on_ready
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.failure("on_ready of a reader of {key} failed", key=self.key)

    def _settle(self) -> None:
        """
        The writer is done (finished or aborted): wake the readers one last
        time; no further notification will come.
        """
        self._wake()
        self._waiting.clear()


class Reader:
    """
    Reads one entry's body from its own descriptor (or from the bytes of
    the memory tier), never waiting: see L{read}.

    @ivar on_ready: set by the consumer; called synchronously from the
        writer when more bytes, the end or a failure became available.
    """

    def __init__(
        self,
        entry: Entry,
        offset: int,
        end: Optional[int],
        fd: Optional[int],
        body: Optional[bytes],
    ) -> None:
        self.on_ready: Optional[Callable[[], None]] = None
        self._entry = entry
        self._pos = offset
        self._end = end
        self._fd = fd
        self._body = body
        self._ended = False
        self._closed = False

    @property
    def remaining(self) -> Optional[int]:
        """
        Bytes left to the end, when the end is known.
        """
        end = self._end
        if end is None:
            if not self._entry.complete:
                return None
            end = self._entry.size
        return max(0, end - self._pos)

    def read(self, max_bytes: int = CHUNK) -> Optional[bytes]:
        """
        Up to C{max_bytes} (and at most L{CHUNK} from a file) that are
        there now: C{b""} when the writer has not written them yet, L{None}
        at the end.

        @raise ReadFailed: the writer aborted before this reader's end, the
            body file failed, or the reader was closed.
        """
        if self._ended:
            return None
        if self._closed:
            raise ReadFailed("the reader is closed")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        pos = self._pos
        end = self._end
        body = self._body
        if body is not None:
            stop = len(body) if end is None else min(end, len(body))
            if pos >= stop:
                self._end_reached()
                return None
            data = body[pos : min(stop, pos + max_bytes)]
            self._pos = pos + len(data)
            return data
        entry = self._entry
        available = entry.size if end is None else min(end, entry.size)
        if pos < available:
            assert self._fd is not None
            try:
                data = os.pread(self._fd, min(max_bytes, CHUNK, available - pos), pos)
            except OSError as e:
                self.close()
                raise ReadFailed(f"reading {entry.key!r}: {e.strerror}") from e
            if not data:
                self.close()
                raise ReadFailed(f"the body of {entry.key!r} is shorter than recorded")
            self._pos = pos + len(data)
            return data
        if end is not None and pos >= end:
            self._end_reached()
            return None
        if entry.complete:
            if end is not None and end > entry.size:
                self.close()
                raise ReadFailed(f"the body of {entry.key!r} ended before the range")
            self._end_reached()
            return None
        if entry.failed:
            self.close()
            raise ReadFailed(f"the writer of {entry.key!r} aborted")
        return b""

    def _end_reached(self) -> None:
        self.close()
        self._ended = True

    def close(self) -> None:
        """
        Release the descriptor and stop the notifications.
        """
        if self._closed:
            return
        self._closed = True
        self.on_ready = None
        self._body = None
        entry = self._entry
        try:
            entry._waiting.remove(self)
        except ValueError:
            pass
        fd = self._fd
        if fd is not None:
            self._fd = None
            entry._store._readers.discard(self)
            os.close(fd)


_OPEN, _FINISHED, _ABORTED = "open", "finished", "aborted"


class Writer:
    """
    Writes one new body of a key to a temp file; L{finish} publishes it,
    L{abort} drops it.

    @ivar entry: the entry being written: readers may attach at once.
    @ivar written: the body bytes written so far.
    """

    def __init__(self, store: Store, entry: Entry, fd: int, temp: str, keep_memory: bool) -> None:
        self.entry = entry
        self.written = 0
        self._store = store
        self._fd: Optional[int] = fd
        self._temp = temp
        self._chunks: Optional[List[bytes]] = [] if keep_memory else None
        self._state = _OPEN

    def write(self, data: bytes) -> None:
        """
        Append C{data} and wake the readers. Ignored once the writer
        aborted (also on its own: a disk error, or a body outgrowing the
        store's C{max_size} with no reader attached; see C{entry.failed}).

        @raise RuntimeError: after L{finish}.
        """
        if self._state != _OPEN:
            if self._state == _FINISHED:
                raise RuntimeError("write after finish")
            return
        if not data:
            return
        store = self._store
        entry = self.entry
        size = self.written + len(data)
        if size > store.max_size and not entry._waiting:
            log.debug(
                "cache store {name}: {key} is bigger than {max_size} bytes; not stored",
                name=store.name,
                key=entry.key,
                max_size=store.max_size,
            )
            self.abort()
            return
        assert self._fd is not None
        try:
            _write_all(self._fd, data)
        except OSError as e:
            log.error(
                "cache store {name}: writing {key} failed: {error}",
                name=store.name,
                key=entry.key,
                error=e.strerror,
            )
            self.abort()
            return
        self.written = size
        entry.size = size
        chunks = self._chunks
        if chunks is not None:
            if size <= store.memory_object_max:
                chunks.append(bytes(data))
            else:
                self._chunks = None
        entry._wake()

    def finish(self) -> Optional[Entry]:
        """
        The body is complete: publish it (replacing the key's older entry),
        evict to C{max_size} and wake the readers. Readers attached read on
        to the end in any case.

        @return: the published entry, or L{None} when the writer aborted,
            the body is bigger than C{max_size} or the files could not be
            written.
        @raise RuntimeError: when called twice.
        @raise TypeError: the metadata is not JSON-serialisable (nothing
            is published).
        """
        if self._state == _ABORTED:
            return None
        if self._state == _FINISHED:
            raise RuntimeError("finish called twice")
        self._state = _FINISHED
        store = self._store
        entry = self.entry
        store._writers.discard(self)
        self._close_fd()
        chunks, self._chunks = self._chunks, None
        entry.complete = True
        published = False
        try:
            if self.written > store.max_size:
                log.debug(
                    "cache store {name}: {key} is bigger than {max_size} bytes; not stored",
                    name=store.name,
                    key=entry.key,
                    max_size=store.max_size,
                )
            else:
                published = store._publish(entry, self._temp, chunks)
        finally:
            if not published:
                # the readers attached read on from their descriptors
                _unlink(self._temp)
                entry._path = None
            entry._settle()
        return entry if published else None

    def abort(self) -> None:
        """
        Drop the body: the temp file goes, C{entry.failed} is set and the
        readers are woken (to fail once they reach the missing bytes).
        """
        if self._state != _OPEN:
            return
        self._state = _ABORTED
        self._store._writers.discard(self)
        self._close_fd()
        self._chunks = None
        _unlink(self._temp)
        entry = self.entry
        entry.failed = True
        entry._path = None
        entry._settle()

    def _close_fd(self) -> None:
        fd = self._fd
        if fd is not None:
            self._fd = None
            os.close(fd)


class Store:
    """
    Bodies and their metadata in a folder, bounded to C{max_size} bytes,
    least recently used first out. See the module docstring.

    @ivar size: published body bytes on disk.
    @ivar evictions: entries evicted for space so far.
    @ivar memory_size: bytes of bodies held in the memory tier.
    """

    def __init__(
        self,
        path: str,
        max_size: int,
        memory: int = 0,
        memory_object_max: Optional[int] = None,
        name: str = "",
        *,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        self.path = path
        self.max_size = max_size
        self.memory = max(0, memory)
        if memory_object_max is None:
            memory_object_max = min(self.memory // 8, MEMORY_OBJECT_MAX)
        self.memory_object_max = min(memory_object_max, self.memory)
        self.name = name
        self.size = 0
        self.evictions = 0
        self.memory_size = 0
        self._clock = clock
        self._data = os.path.join(path, "data")
        self._tmp = os.path.join(path, "tmp")
        self._index: OrderedDict[str, Entry] = OrderedDict()
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._writers: Set[Writer] = set()
        self._readers: Set[Reader] = set()
        self._serial = itertools.count()
        self._prefix = f"{os.getpid()}.{os.urandom(4).hex()}"
        self._opened = False

    def __repr__(self) -> str:
        return f"<Store {self.name!r} at {self.path!r}: {self.entries} entries, {self.size} bytes>"

    @property
    def entries(self) -> int:
        """
        The number of published entries.
        """
        return len(self._index)

    def __iter__(self) -> Iterator[Entry]:
        """
        The published entries, least recently used first (a snapshot: the
        store may change while it is walked).
        """
        return iter(list(self._index.values()))

    def _now(self) -> float:
        clock = self._clock
        return clock.seconds() if clock is not None else time.time()

    def _paths(self, hexname: str) -> Tuple[str, str]:
        body = os.path.join(self._data, hexname[:2], hexname)
        return body, body + ".meta"

    def _temp_name(self, suffix: str) -> str:
        return os.path.join(self._tmp, f"{self._prefix}.{next(self._serial)}.{suffix}")

    # opening and closing

    def open(self) -> None:
        """
        Create the folders, delete the leftovers of unfinished writes, load
        the index from the metadata files (bodies only C{stat}ed), then
        evict to C{max_size}. Opening again aborts the writers in flight.
        """
        for writer in list(self._writers):
            writer.abort()
        self._reset()
        os.makedirs(self._tmp, exist_ok=True)
        leftovers = self._clear_tmp()
        found: List[Tuple[float, Entry]] = []
        os.makedirs(self._data, exist_ok=True)
        # the 256 sub-folders are made as entries need them (publish)
        existing = set(os.listdir(self._data))
        for number in range(256):
            if f"{number:02x}" not in existing:
                continue
            sub = os.path.join(self._data, f"{number:02x}")
            if not os.path.isdir(sub):
                continue
            prefix = sub[-2:]
            metas: List[str] = []
            bodies: Set[str] = set()
            with os.scandir(sub) as items:
                for item in items:
                    name = item.name
                    if item.is_dir(follow_symlinks=False):
                        continue
                    if not name.startswith(prefix):
                        _unlink(item.path)
                        leftovers += 1
                    elif name.endswith(".meta") and _is_hex_name(name[:-5]):
                        metas.append(name[:-5])
                    elif _is_hex_name(name):
                        bodies.add(name)
                    else:
                        _unlink(item.path)
                        leftovers += 1
            for hexname in metas:
                loaded = self._load(sub, hexname)
                if loaded is None:
                    leftovers += 1
                else:
                    found.append(loaded)
                bodies.discard(hexname)
            for hexname in bodies:
                _unlink(os.path.join(sub, hexname))
                leftovers += 1
        found.sort(key=lambda item: item[0])
        index = self._index
        for _, entry in found:
            index[entry.key] = entry
            self.size += entry.size
        self._opened = True
        evictions = self.evictions
        self._evict()
        log.info(
            "cache store {name} opened at {path}: {entries} entries, {size} bytes;"
            " {leftovers} leftovers deleted, {evicted} evicted",
            name=self.name,
            path=self.path,
            entries=self.entries,
            size=self.size,
            leftovers=leftovers,
            evicted=self.evictions - evictions,
        )

    def _reset(self) -> None:
        for entry in self._index.values():
            entry._path = None
            entry._body = None
        self._index.clear()
        self._memory.clear()
        self.size = 0
        self.memory_size = 0

    def _clear_tmp(self) -> int:
        count = 0
        with os.scandir(self._tmp) as items:
            for item in items:
                if item.is_dir(follow_symlinks=False):
                    shutil.rmtree(item.path, ignore_errors=True)
                else:
                    _unlink(item.path)
                count += 1
        return count

    def _load(self, sub: str, hexname: str) -> Optional[Tuple[float, Entry]]:
        """
        The entry of one metadata file and its use time, or L{None} after
        deleting both files when the metadata is unreadable or the body is
        missing or of another size.
        """
        body_path = os.path.join(sub, hexname)
        meta_path = body_path + ".meta"
        try:
            meta_stat = os.stat(meta_path)
            raw = _read_small(meta_path, META_MAX)
            if raw is None:
                raise ValueError("metadata too big")
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError("metadata is not an object")
            key = meta.get("key")
            size = meta.get("size")
            if not isinstance(key, str) or type(size) is not int or size < 0:
                raise ValueError("no key or size")
            if key_hash(key) != hexname:
                raise ValueError("the key does not match the file name")
            body_stat = os.stat(body_path)
            if not stat.S_ISREG(body_stat.st_mode) or body_stat.st_size != size:
                raise ValueError(f"body of {body_stat.st_size} bytes, {size} recorded")
        except (OSError, ValueError, RecursionError) as e:
            log.warn(
                "cache store {name}: dropping {file}: {why}",
                name=self.name,
                file=meta_path,
                why=getattr(e, "strerror", None) or str(e),
            )
            _unlink(meta_path)
            _unlink(body_path)
            return None
        used = meta.get("used")
        if not isinstance(used, (int, float)):
            used = 0.0
        used = max(float(used), meta_stat.st_mtime)
        entry = Entry(self, key, meta, hexname)
        entry.size = size
        entry.complete = True
        entry._path = body_path
        entry._touched = used
        return used, entry

    def close(self) -> None:
        """
        Abort the writers in flight (their temp files go), close every
        reader's descriptor and forget the index (the files stay).
        """
        for writer in list(self._writers):
            writer.abort()
        for reader in list(self._readers):
            reader.close()
        self._reset()
        self._opened = False

    # the published entries

    def get(self, key: str) -> Optional[Entry]:
        """
        The published entry of C{key}, now the most recently used, or
        L{None}. A small entry only on disk is read into the memory tier.
        """
        entry = self._index.get(key)
        if entry is None:
            return None
        self._index.move_to_end(key)
        now = self._now()
        entry.meta["used"] = now
        if now - entry._touched >= USED_RESOLUTION:
            entry._touched = now
            try:
                os.utime(self._paths(entry._hex)[1], (now, now))
            except OSError:
                pass
        if entry._body is not None:
            self._memory.move_to_end(key)
        elif self.memory_object_max > 0 and entry.size <= self.memory_object_max:
            assert entry._path is not None
            try:
                body = _read_small(entry._path, entry.size)
            except OSError:
                body = None
            if body is None or len(body) != entry.size:
                log.warn(
                    "cache store {name}: the body of {key} is missing or of another size; removed",
                    name=self.name,
                    key=key,
                )
                self.remove(key)
                return None
            self._remember(entry, body)
        return entry

    def update_meta(self, key: str, meta: Dict[str, Any]) -> None:
        """
        Replace the metadata of the published entry of C{key} (a new file
        renamed over the old one); nothing when there is none. The use time
        and recency stay. A disk error is logged and changes nothing.

        @raise TypeError: C{meta} is not JSON-serialisable.
        """
        entry = self._index.get(key)
        if entry is None:
            return
        new = dict(meta)
        used = entry.meta.get("used", entry._touched)
        new.update(key=key, size=entry.size, used=used)
        encoded = json.dumps(new, separators=(",", ":")).encode("utf-8")
        meta_path = self._paths(entry._hex)[1]
        try:
            temp = self._write_meta(encoded, entry._touched)
            try:
                os.rename(temp, meta_path)
            except OSError:
                _unlink(temp)
                raise
        except OSError as e:
            log.error(
                "cache store {name}: updating the metadata of {key} failed: {error}",
                name=self.name,
                key=key,
                error=e.strerror,
            )
            return
        entry.meta = new

    def remove(self, key: str) -> bool:
        """
        Remove the published entry of C{key}; whether there was one.
        Writers in flight for the key are not affected.
        """
        entry = self._index.get(key)
        if entry is None:
            return False
        self._drop(entry)
        self._delete_files(entry._hex)
        return True

    def purge(self, predicate: Callable[[Entry], bool]) -> int:
        """
        Remove every published entry for which C{predicate} is true; how
        many.
        """
        count = 0
        for entry in list(self._index.values()):
            if predicate(entry) and self._index.get(entry.key) is entry:
                self._drop(entry)
                self._delete_files(entry._hex)
                count += 1
        return count

    def _drop(self, entry: Entry) -> None:
        """
        Forget a published entry (the files are the caller's business).
        """
        del self._index[entry.key]
        self.size -= entry.size
        body = entry._body
        if body is not None:
            del self._memory[entry.key]
            self.memory_size -= len(body)
            entry._body = None
        entry._path = None

    def _delete_files(self, hexname: str) -> None:
        body, meta = self._paths(hexname)
        _unlink(meta)
        _unlink(body)

    def resize(self, max_size: int, memory: int) -> None:
        """
        New bounds (a reload changed the cache's table): entries are evicted
        and memory-tier bodies dropped down to them at once.
        """
        self.max_size = max_size
        self.memory = max(0, memory)
        self.memory_object_max = min(min(self.memory // 8, MEMORY_OBJECT_MAX), self.memory)
        self._evict()
        mem = self._memory
        while mem and (self.memory_size > self.memory or self.memory_object_max == 0):
            _, old = mem.popitem(last=False)
            if old._body is not None:
                self.memory_size -= len(old._body)
                old._body = None

    def _evict(self) -> None:
        index = self._index
        while self.size > self.max_size and index:
            victim = next(iter(index.values()))
            self._drop(victim)
            self._delete_files(victim._hex)
            self.evictions += 1
            log.debug(
                "cache store {name} evicted {key} ({size} bytes)",
                name=self.name,
                key=victim.key,
                size=victim.size,
            )

    def _remember(self, entry: Entry, body: bytes) -> None:
        """
        Keep a published entry's body in the memory tier, evicting the
        least recently used bodies there to C{memory} bytes.
        """
        if len(body) > self.memory_object_max:
            return
        entry._body = body
        self._memory[entry.key] = entry
        self.memory_size += len(body)
        memory = self._memory
        while self.memory_size > self.memory and memory:
            _, old = memory.popitem(last=False)
            assert old._body is not None
            self.memory_size -= len(old._body)
            old._body = None

    # writing

    def begin(self, key: str, meta: Dict[str, Any]) -> Writer:
        """
        Start a new body for C{key}; the key's published entry (if any) is
        served until L{Writer.finish} replaces it.

        @param meta: JSON-serialisable metadata, kept (a shallow copy) as
            C{writer.entry.meta}, which may still change until C{finish}.
        @raise RuntimeError: the store is not open.
        """
        if not self._opened:
            raise RuntimeError(f"the cache store {self.name!r} is not open")
        temp = self._temp_name("body")
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
        entry = Entry(self, key, dict(meta), key_hash(key))
        entry._path = temp
        writer = Writer(self, entry, fd, temp, self.memory_object_max > 0)
        self._writers.add(writer)
        return writer

    def _write_meta(self, encoded: bytes, used: float) -> str:
        """
        A metadata temp file holding C{encoded}, its mtime C{used}.
        """
        temp = self._temp_name("meta")
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
        try:
            try:
                _write_all(fd, encoded)
            finally:
                os.close(fd)
            os.utime(temp, (used, used))
        except OSError:
            _unlink(temp)
            raise
        return temp

    def _publish(self, entry: Entry, temp: str, chunks: Optional[List[bytes]]) -> bool:
        """
        Rename the finished body C{temp} and its metadata into place,
        replacing the key's older entry, then evict to C{max_size}.

        @return: whether the entry is published (C{False} after a disk
            error, logged; nothing is left behind).
        """
        now = self._now()
        meta = entry.meta
        meta.update(key=entry.key, size=entry.size, used=now)
        encoded = json.dumps(meta, separators=(",", ":")).encode("utf-8")
        body_path, meta_path = self._paths(entry._hex)
        renamed = False
        try:
            os.makedirs(os.path.dirname(body_path), exist_ok=True)
            meta_temp = self._write_meta(encoded, now)
            try:
                # the old commit point goes first: a crash from here on
                # leaves a body without metadata, deleted at open
                old = self._index.get(entry.key)
                if old is not None:
                    self._drop(old)
                _unlink(meta_path)
                os.rename(temp, body_path)
                renamed = True
                os.rename(meta_temp, meta_path)
            except OSError:
                _unlink(meta_temp)
                if renamed:
                    _unlink(body_path)
                raise
        except OSError as e:
            log.error(
                "cache store {name}: storing {key} failed: {error}",
                name=self.name,
                key=entry.key,
                error=e.strerror,
            )
            return False
        entry._path = body_path
        entry._touched = now
        self._index[entry.key] = entry
        self.size += entry.size
        if chunks is not None:
            self._remember(entry, b"".join(chunks))
        self._evict()
        return True


class _Segment:
    __slots__ = ("fd", "length", "read", "capacity")

    def __init__(self, fd: int, capacity: int) -> None:
        self.fd = fd
        self.length = 0
        self.read = 0
        self.capacity = capacity


#: the largest spool segment: segments double from the spool's
#: C{segment_size} up to this, so that a buffer of a gigabyte holds about
#: twenty descriptors, not a thousand
MAX_SEGMENT_SIZE = 64 << 20


class Spool:
    """
    The folder and the disk budget of the anonymous buffers (L{buffer}).

    @ivar used: bytes of all the buffers' files together.
    """

    def __init__(self, path: str, max_size: int, *, segment_size: int = SEGMENT_SIZE) -> None:
        self.path = path
        self.max_size = max_size
        self.segment_size = max(1, segment_size)
        self.used = 0
        self._serial = itertools.count()
        self._prefix = f"{os.getpid()}.{os.urandom(4).hex()}"
        self._tmpfile = hasattr(os, "O_TMPFILE")

    def __repr__(self) -> str:
        return f"<Spool at {self.path!r}: {self.used} of {self.max_size} bytes>"

    def open(self) -> None:
        """
        Create the folder and delete the files left in it.
        """
        os.makedirs(self.path, exist_ok=True)
        count = 0
        with os.scandir(self.path) as items:
            for item in items:
                if not item.is_dir(follow_symlinks=False):
                    _unlink(item.path)
                    count += 1
        if count:
            log.info("spool {path}: {count} leftovers deleted", path=self.path, count=count)

    def buffer(self, memory_limit: int = CHUNK) -> SpoolBuffer:
        """
        A new empty buffer keeping up to C{memory_limit} bytes in memory.
        """
        return SpoolBuffer(self, memory_limit)

    def _new_file(self) -> int:
        """
        A new unnamed file for reading and writing.
        """
        flags = os.O_RDWR | _O_CLOEXEC | _O_BINARY
        if self._tmpfile:
            try:
                return os.open(self.path, flags | os.O_TMPFILE, 0o600)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._tmpfile = False
        name = os.path.join(self.path, f"{self._prefix}.{next(self._serial)}")
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600)
        os.unlink(name)
        return fd


class SpoolBuffer:
    """
    A FIFO byte buffer: the first C{memory_limit} bytes in memory, the
    rest in file segments under the spool folder, counted in the spool's
    C{used} while they exist.
    """

    def __init__(self, spool: Spool, memory_limit: int) -> None:
        self._spool = spool
        self._limit = max(0, memory_limit)
        self._memory: Deque[bytes] = deque()
        self._memory_size = 0
        self._head = 0
        self._segments: Deque[_Segment] = deque()
        self._file_size = 0
        self._closed = False
        #: the capacity of the next segment (doubling, see MAX_SEGMENT_SIZE)
        self._next_capacity = spool.segment_size

    def __repr__(self) -> str:
        return f"<SpoolBuffer {self._memory_size} bytes in memory, {self._file_size} on disk>"

    @property
    def size(self) -> int:
        """
        The bytes held (not read yet).
        """
        return self._memory_size + self._file_size

    def write(self, data: bytes) -> bool:
        """
        Append C{data}: C{False}, taking nothing, when its part beyond the
        memory limit would take the spool beyond C{max_size} (or the disk
        failed).

        @raise ValueError: the buffer is closed.
        """
        if self._closed:
            raise ValueError("write to a closed buffer")
        size = len(data)
        if not size:
            return True
        to_memory = 0
        if not self._file_size:
            to_memory = min(size, max(0, self._limit - self._memory_size))
        if to_memory < size:
            spool = self._spool
            if spool.used + size - to_memory > spool.max_size:
                return False
            try:
                self._append(memoryview(data)[to_memory:])
            except OSError as e:
                log.error(
                    "spool {path}: writing failed: {error}", path=spool.path, error=e.strerror
                )
                return False
        if to_memory:
            self._memory.append(bytes(data[:to_memory]) if to_memory < size else bytes(data))
            self._memory_size += to_memory
        return True

    def _append(self, data: memoryview) -> None:
        spool = self._spool
        segments = self._segments
        count = len(segments)
        last = segments[-1].length if segments else 0
        try:
            while data:
                if not segments or segments[-1].length >= segments[-1].capacity:
                    capacity = self._next_capacity
                    self._next_capacity = min(MAX_SEGMENT_SIZE, max(capacity, capacity * 2))
                    segments.append(_Segment(spool._new_file(), capacity))
                segment = segments[-1]
                part = data[: segment.capacity - segment.length]
                _pwrite_all(segment.fd, part, segment.length)
                segment.length += len(part)
                spool.used += len(part)
                self._file_size += len(part)
                data = data[len(part) :]
        except OSError:
            # take back what was written
            while len(segments) > count:
                segment = segments.pop()
                self._forget(segment)
            if segments:
                segment = segments[-1]
                taken = segment.length - last
                segment.length = last
                spool.used -= taken
                self._file_size -= taken
                try:
                    os.ftruncate(segment.fd, last)
                except OSError:
                    pass
            raise

    def _forget(self, segment: _Segment) -> None:
        self._spool.used -= segment.length
        self._file_size -= segment.length - segment.read
        os.close(segment.fd)

    def read(self, max_bytes: int = CHUNK) -> bytes:
        """
        Up to C{max_bytes} of the oldest bytes (at most L{CHUNK} from a
        file); C{b""} when empty.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if self._memory_size:
            return self._read_memory(max_bytes)
        if not self._file_size:
            return b""
        segment = self._segments[0]
        want = min(max_bytes, CHUNK, segment.length - segment.read)
        data = os.pread(segment.fd, want, segment.read)
        if not data:
            raise OSError(errno.EIO, "spool file shorter than written")
        segment.read += len(data)
        self._file_size -= len(data)
        if segment.read == segment.length:
            spool = self._spool
            if len(self._segments) > 1:
                self._segments.popleft()
                spool.used -= segment.length
                os.close(segment.fd)
            else:
                # the last one: keep it for the next bytes, empty
                os.ftruncate(segment.fd, 0)
                spool.used -= segment.length
                segment.length = segment.read = 0
        return data

    def _read_memory(self, max_bytes: int) -> bytes:
        memory = self._memory
        parts: List[bytes] = []
        need = max_bytes
        head = self._head
        while need and memory:
            chunk = memory[0]
            available = len(chunk) - head
            if available <= need:
                parts.append(chunk[head:] if head else chunk)
                memory.popleft()
                head = 0
                need -= available
            else:
                parts.append(chunk[head : head + need])
                head += need
                need = 0
        self._head = head
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._memory_size -= len(data)
        return data

    def close(self) -> None:
        """
        Drop the bytes held; the disk goes back to the spool's budget.
        """
        if self._closed:
            return
        self._closed = True
        while self._segments:
            self._forget(self._segments.popleft())
        self._memory.clear()
        self._memory_size = 0
        self._head = 0
