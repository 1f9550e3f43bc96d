# -*- test-case-name: tests.test_workers -*-
"""
Workers: every core serving, one process tree (C{[proxy] workers = N}).

With C{workers} above 1, the twistd process is a supervisor that serves no
request itself:

- It binds every listener (so a listening socket lives as long as the
  supervisor: a worker that dies never makes a port refuse connections),
  stops accepting on it, and starts N worker processes
  (C{python -m twisted_proxy.worker}) that inherit the sockets and adopt
  them; the kernel spreads new connections over the workers accepting.
- A worker that exits is replaced (at once, then with a growing pause if
  it keeps dying within a second of starting).
- SIGHUP (and the admin C{POST /reload}) checks the file, then each worker
  reloads it as a single process would (its unchanged backends, filters
  and caches kept); when the listeners themselves changed (added, removed,
  moved) or the number of workers did, a new set of workers starts on the
  new sockets and the old ones drain (as nginx replaces its workers).
  SIGUSR1 reaches every worker (each reopens its access-log file, opened
  in append mode: whole lines, one file). SIGTERM drains every worker,
  then the supervisor exits 0; a second SIGTERM or SIGINT cuts the drains.
- The admin listener is the supervisor's: C{/status} and C{/metrics}
  report the sum of every worker's counters (each worker sends its own
  once a second), C{workers} lists them; C{POST /cache/purge} reaches
  every worker.
- A C{rate_limit} with in-memory buckets keeps them in the supervisor:
  each worker asks it for a token, so the rate holds for the whole tree
  (with C{backend = "redis://..."} the workers ask Redis, as before).
- What stays per worker: each caches into its own sub-folder of a cache's
  C{path} (C{worker-I}) with C{max_size} and C{memory} divided by N (two
  stores never share a folder), and spools into its own sub-folder of
  C{spool_path} with C{spool_max} divided by N; each runs the health
  checks of its backends (a server's state is needed at once by every
  request of that worker; the probes are one small request per C{interval}
  per server per worker).

The supervisor and a worker talk in JSON lines: the supervisor writes to
the worker's standard input, the worker writes to its descriptor 3 (see
L{Channel}); the worker's log (its standard error) is relayed into the
supervisor's, a line at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.model import Config
from twisted_proxy.stats import RECENT_SIZE, quantiles

log = Logger()

#: the longest JSON line either side accepts (a status of many listeners)
MAX_LINE = 16 * 1024 * 1024
#: how often a worker sends its status
STATUS_INTERVAL = 1.0
#: the first inherited listening socket's descriptor number in a worker
FIRST_FD = 10
#: connections a worker accepts per wake-up of a shared listening socket
ACCEPT_BATCH = 4
#: a worker that dies this soon after starting is replaced after a pause
QUICK_DEATH = 1.0
#: the longest pause before replacing a worker that keeps dying
MAX_RESPAWN_DELAY = 10.0


class ChannelClosed(Exception):
    """
    The other side of a L{Channel} is gone.
    """


class Channel:
    """
    JSON lines between a supervisor and a worker, both ways: C{send} a
    message, or C{ask} one and get a Deferred of the answer; an incoming
    message C{{"op": NAME, ...}} goes to C{handlers[NAME]}, whose result
    (or Deferred's) answers it when it was asked (it carries C{"ask": ID};
    the answer is C{{"re": ID, "result": ...}} or C{{"re": ID, "error":
    ...}}).
    """

    def __init__(
        self, write: Callable[[bytes], None], handlers: Dict[str, Callable[[dict], Any]], clock: Any
    ) -> None:
        self.write = write
        self.handlers = handlers
        self.clock = clock
        self._buffer = b""
        self._next = 1
        #: asks awaiting an answer: id -> (Deferred, timeout call)
        self._pending: Dict[int, Tuple[defer.Deferred, Any]] = {}
        self.closed = False

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE:
            log.error("worker channel: a line longer than {limit} bytes; dropped", limit=MAX_LINE)
            self._buffer = b""
        for line in lines:
            if line:
                self.line_received(line)

    def line_received(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.error("worker channel: not JSON: {line!r}", line=line[:200])
            return
        if not isinstance(message, dict):
            return
        if "re" in message:
            entry = self._pending.pop(message["re"], None)
            if entry is None:
                return  # answered too late: already timed out
            d, call = entry
            if call is not None and call.active():
                call.cancel()
            if "error" in message:
                d.errback(Failure(RuntimeError(message["error"])))
            else:
                d.callback(message.get("result"))
            return
        handler = self.handlers.get(message.get("op", ""))
        ask = message.get("ask")
        if handler is None:
            if ask is not None:
                self.send({"re": ask, "error": f"unknown operation {message.get('op')!r}"})
            return
        try:
            result = handler(message)
        except Exception as e:
            log.failure("worker channel: {op} failed", op=message.get("op"))
            if ask is not None:
                self.send({"re": ask, "error": str(e) or type(e).__name__})
            return
        if ask is None:
            return
        if isinstance(result, defer.Deferred):
            result.addCallbacks(
                lambda value: self.send({"re": ask, "result": value}),
                lambda failure: self.send({"re": ask, "error": failure.getErrorMessage()}),
            )
        else:
            self.send({"re": ask, "result": result})

    def send(self, message: dict) -> None:
        if self.closed:
            return
        self.write(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")

    def ask(self, message: dict, timeout: Optional[float] = None) -> defer.Deferred:
        """
        Send C{message} and wait for its answer (at most C{timeout}
        seconds: then a L{defer.TimeoutError}).
        """
        if self.closed:
            return defer.fail(ChannelClosed())
        ident = self._next
        self._next += 1
        d: defer.Deferred = defer.Deferred()
        call = None
        if timeout is not None:
            call = self.clock.callLater(timeout, self._timed_out, ident)
        self._pending[ident] = (d, call)
        self.send(dict(message, ask=ident))
        return d

    def _timed_out(self, ident: int) -> None:
        entry = self._pending.pop(ident, None)
        if entry is not None:
            entry[0].errback(Failure(defer.TimeoutError()))

    def lost(self) -> None:
        """
        The other side is gone: every pending ask fails.
        """
        self.closed = True
        pending, self._pending = self._pending, {}
        for d, call in pending.values():
            if call is not None and call.active():
                call.cancel()
            d.errback(Failure(ChannelClosed()))


# what the workers report, summed


def merge_status(reports: List[dict], workers: List[dict], generation: int, loaded_at: str) -> dict:
    """
    The status of the whole tree from each worker's own (the shape of
    L{twisted_proxy.admin.site.StatusSource.status}, plus C{workers}).
    Counters and gauges are summed; a server is up when every worker sees
    it up and ejected when any does.
    """
    from twisted_proxy import __version__

    listeners: Dict[str, dict] = {}
    order: List[str] = []
    backends: Dict[str, Dict[str, dict]] = {}
    caches: Dict[str, dict] = {}
    details: Dict[str, dict] = {}
    recent: List[dict] = []
    now = 0.0
    dropped = 0
    for report in reports:
        for item in report.get("listeners", ()):
            name = item["name"]
            merged = listeners.get(name)
            if merged is None:
                merged = listeners[name] = json.loads(json.dumps(item))
                order.append(name)
                continue
            for key in ("connections", "tunnels", "requests", "denied", "errors", "bytes_in", "bytes_out"):
                merged[key] = merged.get(key, 0) + item.get(key, 0)
            by_status = merged["by_status"]
            for status, count in item.get("by_status", {}).items():
                by_status[status] = by_status.get(status, 0) + count
            for key in ("latency", "upstream_latency"):
                if key in item:
                    merged[key] = _add_histograms(merged.get(key), item[key])
            routes = {r["name"]: r for r in merged.setdefault("routes", [])}
            for route in item.get("routes", ()):
                have = routes.get(route["name"])
                if have is None:
                    merged["routes"].append(json.loads(json.dumps(route)))
                    continue
                have["requests"] += route["requests"]
                for klass, count in route["by_class"].items():
                    have["by_class"][klass] = have["by_class"].get(klass, 0) + count
                for key in ("latency", "upstream_latency"):
                    have[key] = _add_histograms(have.get(key), route[key])
        for bname, servers in report.get("backends", {}).items():
            merged_servers = backends.setdefault(bname, {})
            for server in servers:
                sname = server["server"]
                have = merged_servers.get(sname)
                if have is None:
                    merged_servers[sname] = dict(server)
                    continue
                have["up"] = have["up"] and server["up"]
                have["ejected"] = have["ejected"] or server["ejected"]
                have["in_flight"] = have["in_flight"] + server["in_flight"]
        for cname, cache in report.get("caches", {}).items():
            have = caches.get(cname)
            if have is None:
                caches[cname] = dict(cache)
                continue
            for key, value in cache.items():
                if key != "hit_ratio" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    have[key] = have.get(key, 0) + value
        dropped += report.get("access_log_dropped", 0)
        for bname, info in report.get("backend_details", {}).items():
            have = details.get(bname)
            if have is None:
                details[bname] = dict(info, picks=list(info.get("picks", ())), events=list(info.get("events", ())))
                continue
            have["queue"] = have.get("queue", 0) + info.get("queue", 0)
            have["queue_refused"] = have.get("queue_refused", 0) + info.get("queue_refused", 0)
            have["picks"] = (have["picks"] + list(info.get("picks", ())))[-20:]
            have["events"] = sorted(have["events"] + list(info.get("events", ())), key=lambda e: e["time"])[-50:]
        recent.extend(report.get("recent", ()))
        now = max(now, report.get("time", 0.0))
    for cache in caches.values():
        lookups = cache.get("hits", 0) + cache.get("stale", 0) + cache.get("misses", 0) + cache.get("revalidated", 0)
        cache["hit_ratio"] = round((cache.get("hits", 0) + cache.get("stale", 0)) / lookups, 4) if lookups else 0.0
    return {
        "version": __version__,
        "generation": generation,
        "loaded_at": loaded_at,
        "listeners": [listeners[name] for name in order],
        "backends": {name: list(servers.values()) for name, servers in backends.items()},
        "caches": caches,
        "access_log_dropped": dropped,
        "backend_details": details,
        "recent": sorted(recent, key=lambda r: r["time"])[-RECENT_SIZE:],
        "time": now,
        "workers": workers,
    }


def _add_histograms(a: Optional[dict], b: dict) -> dict:
    """
    Two histogram snapshots added up (their quantiles from the sum).
    """
    if a is None:
        return dict(b)
    counts = [x + y for x, y in zip(a["counts"], b["counts"])]
    recent = [x + y for x, y in zip(a["recent"], b["recent"])]
    return {"counts": counts, "sum": round(a["sum"] + b["sum"], 6), "recent": recent, **quantiles(recent)}


class TreeSource:
    """
    What the supervisor's admin pages read (as
    L{twisted_proxy.admin.site.StatusSource} reads a single process).
    """

    def __init__(self, supervisor: "Supervisor") -> None:
        self.supervisor = supervisor

    def status(self) -> dict:
        sup = self.supervisor
        from twisted_proxy.admin.site import _iso

        reports = [w.status for w in sup.serving() if w.status is not None]
        return merge_status(reports, sup.worker_list(), sup.generation, _iso(sup.loaded_at))


class TreeCache:
    """
    A named cache as the supervisor's admin sees it: a purge reaches every
    worker's part; the answer is the sum purged.
    """

    def __init__(self, supervisor: "Supervisor", name: str) -> None:
        self.supervisor = supervisor
        self.name = name

    def _purge(self, kind: str, value: str) -> defer.Deferred:
        return self.supervisor.ask_all({"op": "purge", "cache": self.name, "kind": kind, "value": value}).addCallback(
            lambda results: sum(r for r in results if isinstance(r, int))
        )

    def purge_url(self, url: str) -> defer.Deferred:
        return self._purge("url", url)

    def purge_prefix(self, prefix: str) -> defer.Deferred:
        return self._purge("prefix", prefix)

    def purge_tag(self, tag: str) -> defer.Deferred:
        return self._purge("tag", tag)


# a worker's share of the configuration


def worker_config(config: Config, index: int, count: int) -> Config:
    """
    C{config} as worker C{index} of C{count} runs it: no admin listener
    (the supervisor's), each cache in its own sub-folder with C{max_size}
    and C{memory} divided, the spool in its own sub-folder with
    C{spool_max} divided.
    """
    part = f"worker-{index}"
    caches = {
        name: attrs.evolve(
            c,
            path=os.path.join(c.path, part),
            max_size=max(1, c.max_size // count),
            memory=c.memory // count,
        )
        for name, c in config.caches.items()
    }
    proxy = config.proxy
    proxy = attrs.evolve(proxy, spool_max=proxy.spool_max // count)
    if proxy.spool_path is not None:
        proxy = attrs.evolve(proxy, spool_path=os.path.join(proxy.spool_path, part))
    return attrs.evolve(config, admin=None, caches=caches, proxy=proxy)


def _binding(config: Config) -> List[Tuple[str, str, Optional[int]]]:
    """
    What the sockets of C{config}'s listeners are: a reload that changes it
    needs new workers.
    """
    return [(l.name, l.endpoint, l.backlog) for l in config.listeners]


class _NoServe(Factory):
    """
    The factory of the supervisor's own ports (which never accept).
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> Optional[Protocol]:
        return None


class WorkerProcess(ProcessProtocol):
    """
    One worker, seen from the supervisor.
    """

    def __init__(self, supervisor: "Supervisor", index: int, generation: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.generation = generation
        self.started = supervisor.reactor.seconds()
        self.pid: Optional[int] = None
        #: the last status it sent (None before the first)
        self.status: Optional[dict] = None
        self.status_time = 0.0
        self.retiring = False
        self.ended: defer.Deferred = defer.Deferred()
        self.exit_code: Optional[int] = None
        self._log_buffer = b""
        self.channel = Channel(self._write, supervisor.handlers(self), supervisor.reactor)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.writeToChild(0, data)

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 3:
            self.channel.data_received(data)
        else:
            buffer = self._log_buffer + data
            lines = buffer.split(b"\n")
            self._log_buffer = lines.pop()[-65536:]
            for line in lines:
                if line:
                    log.info(
                        "worker {index}: {line}",
                        index=self.index,
                        line=line.decode("utf-8", "replace").rstrip(),
                    )

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == 3:
            self.channel.lost()

    def processEnded(self, reason: Failure) -> None:
        self.channel.lost()
        value = reason.value
        if isinstance(value, ProcessDone):
            self.exit_code = 0
        elif isinstance(value, ProcessTerminated):
            self.exit_code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        self.supervisor.worker_ended(self)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        if self.transport is not None and self.exit_code is None:
            try:
                self.transport.signalProcess(name)
            except Exception:
                pass

    def describe(self) -> dict:
        from twisted_proxy.admin.site import _iso

        status = self.status or {}
        return {
            "index": self.index,
            "pid": self.pid,
            "started": _iso(self.started),
            "generation": status.get("generation"),
            "config_generation": self.generation,
            "retiring": self.retiring,
            "cpu_seconds": status.get("cpu_seconds"),
            "connections": sum(l.get("connections", 0) for l in status.get("listeners", ())),
            "requests": sum(l.get("requests", 0) for l in status.get("listeners", ())),
        }


class Supervisor(service.MultiService):
    """
    The twistd process of a tree of workers (see the module docstring).
    """

    def __init__(self, config: Config, reactor: Any, spawn: Optional[Callable[..., Any]] = None) -> None:
        service.MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        #: how a worker process is started (reactor.spawnProcess's signature)
        self.spawn = spawn or reactor.spawnProcess
        #: listener name -> ListenerService holding the socket
        self.ports: Dict[str, Any] = {}
        self.workers: List[WorkerProcess] = []
        self.generation = 1
        self.loaded_at = time.time()
        self.stopping = False
        self.stop_requested = False
        self.reloading = False
        self.restarts = 0
        #: index -> (quick deaths in a row)
        self._deaths: Dict[int, int] = {}
        self.limits: Dict[str, Any] = {}
        self.status_source = TreeSource(self)
        self.caches = {name: TreeCache(self, name) for name in config.caches}
        self.failures: List[str] = []
        self.build_limits(config)

    @property
    def count(self) -> int:
        return self.config.proxy.workers

    # listening sockets

    def bind(self, config: Config) -> defer.Deferred:
        """
        Bind the listeners of C{config} that have no socket yet (and close
        those it removed or moved): a Deferred firing with the error
        messages (none: all bound).
        """
        from twisted_proxy.service import ListenerService

        wanted = {name: (endpoint, backlog) for name, endpoint, backlog in _binding(config)}
        for name in list(self.ports):
            svc = self.ports[name]
            if wanted.get(name) != (svc.endpoint_description, svc.backlog):
                self.ports.pop(name).stop_accepting()
        waits = []
        new = []
        for lconf in config.listeners:
            if lconf.name in self.ports:
                continue
            svc = ListenerService(
                lconf.name, lconf.endpoint, _NoServe(), self.reactor, self.listener_failed, backlog=lconf.backlog
            )
            new.append(svc)
            waits.append(svc.bind())

        def bound(results: List[Any]) -> List[str]:
            problems = [r for r in results if isinstance(r, str)]
            if problems:
                for svc in new:
                    svc.stop_accepting()
                return problems
            for svc in new:
                # held open, never accepting: the workers accept
                svc.port.stopReading()
                self.ports[str(svc.name)] = svc
            return []

        return defer.gatherResults(waits, consumeErrors=True).addCallback(bound)

    def inherited(self) -> Tuple[Dict[int, int], Dict[str, List[int]]]:
        """
        (childFDs entries, {listener: [child descriptor, family]}) for a
        worker started now.
        """
        fds: Dict[int, int] = {}
        listeners: Dict[str, List[int]] = {}
        for i, (name, svc) in enumerate(sorted(self.ports.items())):
            port = svc.port
            child = FIRST_FD + i
            fds[child] = port.fileno()
            listeners[name] = [child, int(port.addressFamily)]
        return fds, listeners

    # workers

    def start_worker(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(self, index, self.generation)
        fds, listeners = self.inherited()
        child_fds: Dict[int, Any] = {0: "w", 1: 1, 2: "r", 3: "r"}
        child_fds.update(fds)
        args = [
            sys.executable,
            "-m",
            "twisted_proxy.worker",
            "--config",
            self.config.path,
            "--index",
            str(index),
            "--count",
            str(self.count),
            "--listeners",
            json.dumps(listeners),
        ]
        env = dict(os.environ)
        # the worker imports this very package, wherever it was loaded from
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.spawn(worker, sys.executable, args, env=env, childFDs=child_fds)
        self.workers.append(worker)
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)
        return worker

    def serving(self) -> List[WorkerProcess]:
        return [w for w in self.workers if not w.retiring and w.exit_code is None]

    def worker_list(self) -> List[dict]:
        return [w.describe() for w in self.workers if w.exit_code is None]

    def worker_ended(self, worker: WorkerProcess) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        if self.stopping or worker.retiring:
            log.info("worker {index} (pid {pid}) exited ({code})", index=worker.index, pid=worker.pid, code=worker.exit_code)
            return
        self.restarts += 1
        quick = self.reactor.seconds() - worker.started < QUICK_DEATH
        deaths = self._deaths.get(worker.index, 0) + 1 if quick else 0
        self._deaths[worker.index] = deaths
        delay = min(MAX_RESPAWN_DELAY, 0.1 * (2 ** deaths)) if deaths else 0.0
        log.warn(
            "worker {index} (pid {pid}) died ({code}); replaced in {delay:.1f}s",
            index=worker.index,
            pid=worker.pid,
            code=worker.exit_code,
            delay=delay,
        )
        self.reactor.callLater(delay, self._replace, worker.index)

    def _replace(self, index: int) -> None:
        if self.stopping or any(w.index == index and not w.retiring for w in self.workers):
            return
        self.start_worker(index)

    def handlers(self, worker: WorkerProcess) -> Dict[str, Callable[[dict], Any]]:
        def status(message: dict) -> None:
            worker.status = message.get("status")
            worker.status_time = self.reactor.seconds()
            if worker.status is not None:
                worker.status["cpu_seconds"] = message.get("cpu_seconds")
                worker.status["generation"] = worker.status.get("generation")
            self._deaths.pop(worker.index, None)

        def take(message: dict) -> Any:
            limiter = self.limits.get(message.get("filter", ""))
            if limiter is None:
                return None  # not a limit any more (a reload): allowed
            return limiter.take(str(message.get("key", "")))

        return {"status": status, "take": take}

    def ask_all(self, message: dict, timeout: float = 10.0) -> defer.Deferred:
        """
        Ask every serving worker; a Deferred of their answers (a failed
        one: its Failure).
        """
        asks = [w.channel.ask(message, timeout) for w in self.serving()]
        return defer.DeferredList(asks, consumeErrors=True).addCallback(
            lambda results: [value for ok, value in results]
        )

    # rate limits kept here for the whole tree

    def build_limits(self, config: Config) -> None:
        from twisted_proxy.filters.rate_limit import RateLimitFilter

        limits = {}
        for name, fconf in config.filters.items():
            if fconf.type != "rate_limit" or getattr(fconf.spec, "backend", None) is not None:
                continue
            old = self.limits.get(name)
            if old is not None and old.spec == fconf.spec:
                limits[name] = old  # its buckets carry over
            else:
                limits[name] = RateLimitFilter(name, fconf.spec, self.reactor)
        self.limits = limits

    # the service

    def privilegedStartService(self) -> None:
        # bound before twistd drops privileges; a failure stops the process
        self.bind(self.config).addCallback(self._bound_at_start)
        service.MultiService.privilegedStartService(self)

    def _bound_at_start(self, problems: List[str]) -> None:
        for message in problems:
            self.listener_failed(message)

    def listener_failed(self, message: str) -> None:
        """
        A listener could not bind: say so and stop with status 1 (as a
        single process does).
        """
        from twisted_proxy.service import listener_failed

        listener_failed(self, message)

    def startService(self) -> None:
        service.MultiService.startService(self)
        if self.failures:
            return
        for index in range(self.count):
            self.start_worker(index)
        from twisted_proxy.service import install_signals

        install_signals(self)

    def stopService(self) -> Any:
        """
        Every worker drains (SIGTERM) and exits; then the sockets close. A
        worker still running C{drain_timeout} + 10 seconds later is killed.
        """
        self.stopping = True
        service.MultiService.stopService(self)
        waits = []
        for worker in list(self.workers):
            worker.signal("TERM")
            waits.append(worker.ended)
        kill = self.reactor.callLater(self.config.proxy.drain_timeout + 10.0, self._kill_all)

        def done(_: Any) -> None:
            if kill.active():
                kill.cancel()
            from twisted_proxy.service import remove_signals

            remove_signals(self)
            for svc in self.ports.values():
                svc.stop_accepting()
            self.ports = {}

        return defer.DeferredList(waits).addCallback(done)

    def _kill_all(self) -> None:
        for worker in list(self.workers):
            log.warn("worker {index} (pid {pid}) still running: killed", index=worker.index, pid=worker.pid)
            worker.signal("KILL")

    # signals (the same handlers as a single process's: service.install_signals)

    def _sighup(self) -> None:
        log.info("SIGHUP: reloading the configuration")
        self.reload()

    def _sigusr1(self) -> None:
        log.info("SIGUSR1: every worker reopens its access log")
        for worker in self.workers:
            worker.signal("USR1")

    def stop_signal(self) -> None:
        if self.stop_requested:
            log.info("second signal: the workers cut their drains")
            for worker in self.workers:
                worker.signal("TERM")
            return
        self.stop_requested = True
        log.info("stop requested: the workers drain for up to {seconds}s", seconds=self.config.proxy.drain_timeout)
        try:
            self.reactor.stop()
        except Exception:
            pass

    # reload

    def reload(self) -> defer.Deferred:
        """
        Check the file; then every worker reloads it, or (listeners or the
        number of workers changed) new workers replace them. A Deferred of
        C{{"ok": ..., "generation": N}} or C{{"ok": False, "errors":
        [...]}}, as a single process answers.
        """
        from twisted_proxy.config import ConfigError, load_config

        if self.reloading:
            return defer.succeed({"ok": False, "errors": ["a reload is already in progress"]})
        try:
            config = load_config(self.config.path)
        except ConfigError as e:
            for line in e.lines():
                log.error("reload refused: {error}", error=line)
            return defer.succeed({"ok": False, "errors": e.lines()})
        self.reloading = True
        old = self.config
        if _binding(config) != _binding(old) or config.proxy.workers != old.proxy.workers:
            d = self._replace_workers(config)
        else:
            d = self._reload_workers(config)

        def done(result: dict) -> dict:
            self.reloading = False
            return result

        return d.addBoth(done)

    def _commit(self, config: Config) -> None:
        self.config = config
        self.generation += 1
        self.loaded_at = time.time()
        self.build_limits(config)
        self.caches = {name: TreeCache(self, name) for name in config.caches}
        if config.admin != getattr(self, "_admin_config", config.admin):
            log.warn("reload: a changed [admin] table takes effect at the next start")

    def _reload_workers(self, config: Config) -> defer.Deferred:
        def answered(results: List[Any]) -> dict:
            errors: List[str] = []
            for result in results:
                if isinstance(result, Failure):
                    errors.append(f"a worker did not reload: {result.getErrorMessage()}")
                elif isinstance(result, dict) and not result.get("ok"):
                    errors.extend(e for e in result.get("errors", []) if e not in errors)
            if errors:
                for line in errors:
                    log.error("reload refused: {error}", error=line)
                return {"ok": False, "errors": errors}
            self._commit(config)
            for worker in self.workers:
                worker.generation = self.generation
            return {"ok": True, "generation": self.generation}

        return self.ask_all({"op": "reload"}, timeout=60.0).addCallback(answered)

    def _replace_workers(self, config: Config) -> defer.Deferred:
        def bound(problems: List[str]) -> dict:
            if problems:
                for line in problems:
                    log.error("reload refused: {error}", error=line)
                return {"ok": False, "errors": problems}
            old = list(self.workers)
            self._commit(config)
            for worker in old:
                worker.retiring = True
            for index in range(self.count):
                self.start_worker(index)
            for worker in old:
                worker.signal("TERM")
            log.info(
                "reload: {count} new workers on the new listeners; the {old} old ones drain",
                count=self.count,
                old=len(old),
            )
            return {"ok": True, "generation": self.generation}

        return self.bind(config).addCallback(bound)


def make_supervisor(config: Config, reactor: Any) -> Supervisor:
    """
    The supervisor of C{config.proxy.workers} workers, with the admin
    listener when configured.
    """
    from twisted_proxy.service import ListenerService

    top = Supervisor(config, reactor)
    top._admin_config = config.admin  # type: ignore[attr-defined]
    if config.admin is not None:
        from twisted_proxy.admin.site import History, admin_site
        from twisted_proxy.service import timer

        top.history = History(top.status_source, reactor)  # type: ignore[attr-defined]
        timer(History.INTERVAL, top.history.sample, reactor).setServiceParent(top)  # type: ignore[attr-defined]

        ListenerService("admin", config.admin.endpoint, admin_site(top), reactor, top.listener_failed).setServiceParent(top)
    return top
