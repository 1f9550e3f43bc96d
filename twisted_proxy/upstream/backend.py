# -*- test-case-name: tests.test_backend -*-
"""
A backend: its servers, their state, and the choice of one per request.

A server is available when its active health check has it up, passive
health has not ejected it, and it is below its C{max_connections}. Backup
servers are used only when no primary server is up. When every up server is
at its C{max_connections}, requests wait (up to C{queue_timeout}) for a
slot, at most C{queue_size} of them per backend: one more is refused at
once (L{Backend.wait} gives L{None}; the caller answers 503 with
C{Retry-After}); when none is up, the answer is 503 with C{Retry-After}.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from twisted.logger import Logger

from twisted_proxy.model import BackendConfig, ServerConfig
from twisted_proxy.upstream.balancer import make_balancer

log = Logger()

#: L{Backend.choose} result when every up server is at max_connections.
BUSY = "busy"


#: state changes and balancer picks kept per backend for the admin page
EVENTS = 50
PICKS = 20

class Server:
    """
    One server of a backend and its live state.
    """

    __slots__ = (
        "config",
        "name",
        "scheme",
        "host",
        "port",
        "address",
        "weight",
        "max_connections",
        "backup",
        "in_flight",
        "up",
        "ejected_until",
        "fail_times",
        "label",
        "changed_at",
        "why",
    )

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.name = config.url
        self.scheme = config.scheme
        self.host = config.host
        self.port = config.port
        # the pool key: an https server's includes its TLS settings, so
        # plain and TLS connections never mix
        self.address: Tuple[Any, ...] = (config.host, config.port)
        if config.scheme == "https":
            from twisted_proxy.tls import BackendTLS

            self.address = (config.host, config.port, BackendTLS(config))
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.label = f"{host}:{config.port}"
        self.weight = config.weight
        self.max_connections = config.max_connections
        self.backup = config.backup
        self.in_flight = 0
        self.up = True
        self.ejected_until = 0.0
        self.fail_times: List[float] = []
        #: when its state last changed (0: never), and why
        self.changed_at = 0.0
        self.why = ""

    def __repr__(self) -> str:
        return f"<Server {self.name} up={self.up} in_flight={self.in_flight}>"


class Backend:
    """
    The live side of a C{[backend.NAME]} table.
    """

    def __init__(
        self,
        config: BackendConfig,
        clock: Any,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.servers = [Server(s) for s in config.servers]
        self.primaries = [s for s in self.servers if not s.backup]
        self.backups = [s for s in self.servers if s.backup]
        self.balancer = make_balancer(config.balance, self.primaries, rng)
        self.backup_balancer = make_balancer(config.balance, self.backups, rng)
        self.waiters: Deque[Any] = deque()
        #: the last state changes of its servers (dicts: time, server,
        #: state, why), oldest first
        self.events: Deque[Dict[str, Any]] = deque(maxlen=EVENTS)
        #: the servers the balancer picked last, oldest first
        self.picks: Deque[str] = deque(maxlen=PICKS)
        self.retries = config.retries
        self.queue_timeout = config.queue_timeout
        self.queue_size = config.queue_size
        #: requests refused because the queue was full (since start)
        self.queue_refused = 0
        # one warning per episode of a full queue, not one per request
        self._queue_full_warned = False
        hash_key = config.hash_key if config.balance == "hash" else ""
        self.key_kind = ""
        self.key_name = b""
        if hash_key == "client_ip":
            self.key_kind = "client_ip"
        elif hash_key.startswith("header:"):
            self.key_kind = "header"
            self.key_name = hash_key[len("header:"):].strip().lower().encode("latin-1")
        elif hash_key.startswith("cookie:"):
            self.key_kind = "cookie"
            self.key_name = hash_key[len("cookie:"):].strip().encode("latin-1")

    # the request's hash key

    def key_for(self, client_ip: str, headers: Sequence[Tuple[bytes, bytes]]) -> bytes:
        """
        What the hash balancer hashes for this request.
        """
        kind = self.key_kind
        if not kind:
            return b""
        if kind == "client_ip":
            return client_ip.encode("ascii", "replace")
        if kind == "header":
            for name, value in headers:
                if name.lower() == self.key_name:
                    return value
            return client_ip.encode("ascii", "replace")
        for name, value in headers:
            if name.lower() == b"cookie":
                for part in value.split(b";"):
                    cname, _, cvalue = part.strip().partition(b"=")
                    if cname == self.key_name:
                        return cvalue
        return client_ip.encode("ascii", "replace")

    # choosing

    def _usable(self, server: Server, now: float) -> bool:
        return server.up and server.ejected_until <= now

    def choose(self, key: bytes = b"", exclude: Sequence[Server] = ()) -> Any:
        """
        A server for a request: a L{Server}, L{BUSY} (every up server is
        at its limit: wait with L{wait}), or L{None} (none is up).
        """
        now = self.clock.seconds()
        result = self._choose_among(self.primaries, self.balancer, key, exclude, now)
        if result is None and self.backups:
            result = self._choose_among(self.backups, self.backup_balancer, key, exclude, now)
        return result

    def _choose_among(
        self,
        servers: Sequence[Server],
        balancer: Any,
        key: bytes,
        exclude: Sequence[Server],
        now: float,
    ) -> Any:
        candidates = []
        busy = False
        for server in servers:
            if not (server.up and server.ejected_until <= now):
                continue
            if exclude and server in exclude:
                continue
            limit = server.max_connections
            if limit is not None and server.in_flight >= limit:
                busy = True
                continue
            candidates.append(server)
        if not candidates:
            return BUSY if busy else None
        server = balancer.pick(candidates, key)
        if server is None:
            return None
        self.picks.append(server.label)
        return server

    def note(self, server: Server, state: str, why: str, until: Optional[float] = None) -> None:
        """
        C{server} changed state (up, down, ejected C{until} then): remembered
        for the admin page.
        """
        now = self.clock.seconds()
        server.changed_at = now
        server.why = why
        event: Dict[str, Any] = {"time": now, "server": server.name, "state": state, "why": why}
        if until is not None:
            event["until"] = until
        self.events.append(event)

    def acquire(self, server: Server) -> None:
        server.in_flight += 1

    def release(self, server: Server) -> None:
        """
        A request to C{server} is over: wake a waiting request if any.
        """
        server.in_flight -= 1
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.cancelled:
                continue
            waiter.fire()
            return

    def wait(
        self, callback: Callable[[], None], on_timeout: Callable[[], None]
    ) -> Optional["Waiter"]:
        """
        Queue a request until a server has a free slot (then C{callback()}
        runs and should call L{choose} again) or C{queue_timeout} passes
        (then C{on_timeout()}).

        @return: the L{Waiter} (its C{cancel()} takes the request out of the
            queue), or L{None} when C{queue_size} requests already wait:
            the request is not queued and neither callback will run; the
            caller answers 503 with C{Retry-After} at once.
        """
        if len(self.waiters) >= self.queue_size:
            self.queue_refused += 1
            if not self._queue_full_warned:
                self._queue_full_warned = True
                log.warn(
                    "backend {backend}: {size} requests already wait for a server;"
                    " refusing more with 503 until the queue has room",
                    backend=self.name,
                    size=self.queue_size,
                )
            return None
        self._queue_full_warned = False
        waiter = Waiter(self, callback, on_timeout)
        waiter.timer = self.clock.callLater(self.queue_timeout, waiter.expire)
        self.waiters.append(waiter)
        return waiter

    def retry_after(self) -> int:
        """
        Seconds a client should wait when no server is up.
        """
        health = self.config.health
        if health is not None:
            return max(1, int(health.interval * health.rise + 0.999))
        return max(1, int(self.config.fail_timeout + 0.999))

    # passive health

    def report_failure(self, server: Server, why: str) -> None:
        """
        A connection to C{server} was refused, reset or timed out.

        A backend's only server is never ejected (nginx's rule): taking it
        out would turn every request into a 503 for C{fail_timeout}, even
        those it would have answered.
        """
        max_fails = self.config.max_fails
        if max_fails <= 0 or len(self.servers) == 1:
            return
        now = self.clock.seconds()
        window = self.config.fail_timeout
        times = [t for t in server.fail_times if now - t < window]
        times.append(now)
        server.fail_times = times
        if len(times) >= max_fails and server.ejected_until <= now:
            server.ejected_until = now + window
            server.fail_times = []
            self.note(
                server, "ejected", f"{len(times)} failures in {window:g}s (last: {why})", until=server.ejected_until
            )
            log.warn(
                "backend {backend} server {server} ejected for {seconds}s after {fails} "
                "failures (last: {why})",
                backend=self.name,
                server=server.name,
                seconds=window,
                fails=len(times),
                why=why,
            )

    def report_success(self, server: Server) -> None:
        if server.fail_times:
            server.fail_times = []

    # active health

    def set_up(self, server: Server, up: bool, why: str = "") -> None:
        if server.up == up:
            return
        server.up = up
        self.note(server, "up" if up else "down", why or ("health check passed" if up else "health check failed"))
        if up:
            server.ejected_until = 0.0
            server.fail_times = []
            log.info(
                "backend {backend} server {server} is up", backend=self.name, server=server.name
            )
            # waiting requests may go now
            for _ in range(len(self.waiters)):
                waiter = self.waiters.popleft()
                if not waiter.cancelled:
                    waiter.fire()
        else:
            log.warn(
                "backend {backend} server {server} is down: {why}",
                backend=self.name,
                server=server.name,
                why=why,
            )

    def details(self) -> Dict[str, Any]:
        """
        The backend as a whole, for the admin page: its queue, the last
        picks and the last state changes of its servers.
        """
        return {
            "queue": len(self.waiters),
            "queue_size": self.queue_size,
            "queue_refused": self.queue_refused,
            "balance": self.config.balance,
            "picks": list(self.picks),
            "events": list(self.events),
        }

    def status(self) -> List[dict]:
        """
        The servers' state, for the admin status page and logs.
        """
        now = self.clock.seconds()
        return [
            {
                "server": s.name,
                "up": s.up,
                "ejected": s.ejected_until > now,
                "in_flight": s.in_flight,
                "weight": s.weight,
                "backup": s.backup,
                "changed_at": s.changed_at,
                "why": s.why,
            }
            for s in self.servers
        ]


class Waiter:
    """
    A request queued for a free server slot.
    """

    __slots__ = ("backend", "callback", "on_timeout", "timer", "cancelled")

    def __init__(self, backend: Backend, callback: Callable[[], None], on_timeout: Callable[[], None]) -> None:
        self.backend = backend
        self.callback = callback
        self.on_timeout = on_timeout
        self.timer: Any = None
        self.cancelled = False

    def fire(self) -> None:
        self.cancelled = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.callback()

    def expire(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        try:
            self.backend.waiters.remove(self)
        except ValueError:
            pass
        self.on_timeout()

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        try:
            self.backend.waiters.remove(self)
        except ValueError:
            pass
