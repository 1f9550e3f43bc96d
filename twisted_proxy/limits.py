# -*- test-case-name: tests.test_limits -*-
"""
The client connections the process holds, across every listener
(C{[proxy] max_connections}, as nginx's C{worker_connections} and HAProxy's
C{maxconn}), and accepting paused when file descriptors run out.

One L{ConnectionLimiter} serves every listener of a service: HTTP front
connections and raw tcp connections report L{ConnectionLimiter.opened} and
L{ConnectionLimiter.closed} (a dict insert and a pop), and the listening
ports are handed to L{ConnectionLimiter.watch}. The admin listener is not
counted and never paused.

At the limit:
  1. a new connection makes room by shedding (closing) a I{sheddable}
     connection, the oldest first: one idle between keep-alive requests, or
     one that has not sent a complete request head yet (the connection's
     C{sheddable()} says so; tcp connections never are);
  2. when none can be shed, every listening port stops accepting
     (C{stopReading}); new clients wait in the kernel's listen queue
     (C{backlog}). Accepting resumes when the count drops to
     C{resume_below} (1 % below the limit: hysteresis), or at once when a
     connection becomes idle (L{ConnectionLimiter.idle}), which the next
     client then displaces.

Twisted accepts connections in batches (up to C{numberAccepts}, 100 and
growing, per C{doRead} of a listening port), and pausing does not stop a
batch under way: so each batch of a watched port is capped to the room left
under both limits (at least one, which sheds one at the limit).

File descriptors: the limiter keeps an estimate of the descriptors open,
counted exactly (C{/proc/self/fd}) only when the estimate (the last count
plus every connection accepted since, closes ignored) reaches the high mark,
C{RLIMIT_NOFILE} less 1/16 of it. After each accept batch it also probes
the lowest free descriptor (a C{dup} of the listening socket, ~0.4 µs;
POSIX hands out the lowest free number, so every one below it is open),
which fails with C{EMFILE}/C{ENFILE} once none is left (there Twisted's
accept only logs and returns, and the still-readable socket would spin the
reactor). Running short, up to L{FD_SHED} sheddable connections are closed
and accepting pauses for L{FD_PAUSE_FIRST} seconds on the injected clock,
doubling while the shortage lasts, up to L{FD_PAUSE_MAX}.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, Dict, List, Optional

from twisted.application import service
from twisted.logger import Logger

__all__ = [
    "ConnectionLimiter",
    "FD_PAUSE_FIRST",
    "FD_PAUSE_MAX",
    "FD_SHED",
    "count_open_files",
    "lowest_free_fd",
    "open_file_limit",
]

log = Logger()

#: The first pause of accepting when file descriptors run short, seconds.
FD_PAUSE_FIRST = 0.1
#: The pause doubles while the shortage lasts, up to this.
FD_PAUSE_MAX = 1.0
#: Sheddable connections closed at once when file descriptors run short (as
#: nginx drains up to 32 reusable connections).
FD_SHED = 32

_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def open_file_limit() -> Optional[int]:
    """
    The process's soft C{RLIMIT_NOFILE}, or L{None} if there is none.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return int(soft)


def count_open_files() -> Optional[int]:
    """
    How many descriptors the process has open (~0.3 µs each), or L{None}
    where the system cannot say.

    @raise OSError: C{EMFILE}/C{ENFILE}: the listing itself found no free
        descriptor (the process is at its limit).
    """
    for path in _FD_DIRS:
        try:
            # the listing's own descriptor is among them
            return len(os.listdir(path)) - 1
        except OSError as e:
            if e.errno in _OUT_OF_FILES:
                raise
            continue
    return None  # pragma: no cover - neither on Linux nor the BSDs


def lowest_free_fd(port: Any) -> int:
    """
    The descriptor number the next accepted socket would get: every one
    below it is open.

    @raise OSError: C{EMFILE} or C{ENFILE} when no descriptor is free.
    """
    fd = os.dup(port.fileno())
    os.close(fd)
    return fd


class ConnectionLimiter(service.Service):
    """
    The client connections of every listener of a service, and their
    listening ports.

    @ivar connections: the connections held, oldest first (the values are
        unused).
    @ivar full: at the limit with nothing to shed: accepting is paused.
    @ivar files_short: file descriptors ran short: accepting is paused
        (and retried on the clock).
    @ivar paused: the watched ports are not accepting.
    @ivar shed: connections shed so far.
    @ivar fd_used: the estimate of the descriptors open.
    @ivar fd_high: the number of open descriptors that counts as short.
    """

    name = "connection-limiter"

    def __init__(
        self,
        max_connections: int,
        clock: Any,
        file_limit: Callable[[], Optional[int]] = open_file_limit,
        probe: Callable[[Any], int] = lowest_free_fd,
        count_files: Callable[[], Optional[int]] = count_open_files,
    ) -> None:
        self.max_connections = max_connections
        #: connections one wake-up of a listening port accepts at most
        #: (None: Twisted's own, up to 100 and more); a worker of a tree
        #: takes a few at a time, so that a burst is shared with the other
        #: workers woken by the same socket (workers.py)
        self.accept_batch: Optional[int] = None
        #: accepting paused at the limit resumes at this count
        self.resume_below = max_connections - max(1, max_connections // 100)
        self.clock = clock
        self.file_limit = file_limit
        self.probe = probe
        self.count_files = count_files
        self.connections: Dict[Any, None] = {}
        self.ports: List[Any] = []
        self.full = False
        self.files_short = False
        self.paused = False
        self.shed = 0
        self.fd_delay = 0.0
        self.fd_timer: Any = None
        self.fd_high = self._fd_high()
        self.fd_used = 0

    def _fd_high(self) -> int:
        limit = self.file_limit()
        if limit is None:
            return 1 << 62
        return max(limit - max(16, limit // 16), limit // 2)

    # connections

    def opened(self, conn: Any) -> None:
        """
        C{conn} was accepted: count it; at the limit, shed another
        connection or stop accepting.
        """
        connections = self.connections
        connections[conn] = None
        self.fd_used += 1
        if len(connections) >= self.max_connections and not self.paused:
            excess = len(connections) - self.max_connections
            # one more than the excess: whether the next client can get in
            found = self._sheddable(excess + 1, conn)
            for victim in found[:excess]:
                self._shed(victim)
            if len(found) <= excess:
                self.full = True
                log.warn(
                    "{count} client connections (max_connections {limit}) and none idle:"
                    " accepting paused",
                    count=len(connections),
                    limit=self.max_connections,
                )
                self._update()

    def closed(self, conn: Any) -> None:
        """
        C{conn} is gone (shed ones were uncounted already).
        """
        connections = self.connections
        connections.pop(conn, None)
        if self.full and len(connections) <= self.resume_below:
            self.full = False
            log.info(
                "{count} client connections: accepting resumed", count=len(connections)
            )
            self._update()

    def idle(self, conn: Any) -> None:
        """
        C{conn} became sheddable while accepting is paused at the limit:
        accept again, so that a waiting client displaces it.
        """
        if self.full:
            self.full = False
            self._update()

    def _sheddable(self, wanted: int, exclude: Any = None) -> List[Any]:
        """
        Up to C{wanted} sheddable connections, oldest first. The busy ones
        passed over go to the end, so that the next search does not read
        them again (a connection seen busy counts as new from then on).
        """
        found: List[Any] = []
        if wanted <= 0:
            return found
        busy: List[Any] = []
        for conn in self.connections:
            if conn is exclude:
                continue
            if conn.sheddable():
                found.append(conn)
                if len(found) >= wanted:
                    break
            else:
                busy.append(conn)
        connections = self.connections
        for conn in busy:
            del connections[conn]
            connections[conn] = None
        return found

    def _shed(self, conn: Any) -> None:
        del self.connections[conn]
        self.shed += 1
        conn.transport.loseConnection()

    # listening ports

    def watch(self, port: Any) -> None:
        """
        Pause and resume C{port} with the others; cap its accept batches
        and check the descriptors after each.
        """
        self.ports.append(port)
        if self.paused:
            port.stopReading()
        if hasattr(port, "fileno") and hasattr(port, "doRead"):
            accept = port.doRead
            batched = hasattr(port, "numberAccepts")

            def doRead() -> Any:
                if batched:
                    room = self.max_connections - len(self.connections)
                    fd_room = self.fd_high - self.fd_used
                    if fd_room < room:
                        room = fd_room
                    if room < port.numberAccepts:
                        port.numberAccepts = room if room > 1 else 1
                    batch = self.accept_batch
                    if batch is not None and port.numberAccepts > batch:
                        port.numberAccepts = batch
                why = accept()
                self.check_files(port)
                return why

            port.doRead = doRead

    def unwatch(self, port: Any) -> None:
        """
        C{port} stops listening: leave it alone from now on.
        """
        if port in self.ports:
            self.ports.remove(port)
            if "doRead" in getattr(port, "__dict__", {}):
                del port.doRead

    def _update(self) -> None:
        paused = self.full or self.files_short
        if paused == self.paused:
            return
        self.paused = paused
        for port in self.ports:
            if paused:
                port.stopReading()
            else:
                port.startReading()

    # file descriptors

    def check_files(self, port: Any) -> None:
        """
        After an accept batch on C{port}: pause if descriptors run short.
        """
        if self.fd_timer is not None:
            return
        if self._short(port):
            self.files_short = True
            self.fd_delay = FD_PAUSE_FIRST
            self._shed_some()
            log.warn(
                "file descriptors running out ({used} open, {count} client connections):"
                " accepting paused for {delay}s",
                used=self.fd_used,
                count=len(self.connections),
                delay=self.fd_delay,
            )
            self._update()
            self.fd_timer = self.clock.callLater(self.fd_delay, self._retry_files)

    def _short(self, port: Any, recount: bool = False) -> bool:
        """
        Whether descriptors run short: none free, or the estimate at the
        high mark after counting them again.
        """
        try:
            lowest = self.probe(port)
        except OSError as e:
            if e.errno in _OUT_OF_FILES:
                return True
            lowest = 0
        if lowest > self.fd_used:
            self.fd_used = lowest
        if recount or self.fd_used >= self.fd_high:
            try:
                counted = self.count_files()
            except OSError as e:
                if e.errno in _OUT_OF_FILES:
                    # not even the listing had a descriptor: at the limit
                    # (the lowest free number says nothing about the rest)
                    return True
                counted = None
            # where they cannot be counted, the lowest free one is the measure
            self.fd_used = max(counted, lowest) if counted is not None else lowest
        return self.fd_used >= self.fd_high

    def _shed_some(self) -> None:
        for conn in self._sheddable(FD_SHED):
            self._shed(conn)

    def _retry_files(self) -> None:
        self.fd_timer = None
        self.fd_high = self._fd_high()
        probed = [p for p in self.ports if hasattr(p, "fileno")]
        if probed and self._short(probed[0], recount=True):
            self._shed_some()
            self.fd_delay = min(self.fd_delay * 2, FD_PAUSE_MAX)
            self.fd_timer = self.clock.callLater(self.fd_delay, self._retry_files)
            return
        self.files_short = False
        self.fd_delay = 0.0
        log.info(
            "file descriptors available again ({used} open): accepting resumed",
            used=self.fd_used,
        )
        self._update()

    # service

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self.fd_timer is not None:
            if self.fd_timer.active():
                self.fd_timer.cancel()
            self.fd_timer = None
        for port in list(self.ports):
            self.unwatch(port)
