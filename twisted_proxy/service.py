# -*- test-case-name: tests.test_service -*-
"""
A L{Config} made into running services: one per listener, the access log,
and the upstream pool.

A listener that cannot bind (or whose TLS certificates cannot be loaded)
stops the process with exit status 1 and one clear line on standard error,
never a running process with a listener missing.

SIGHUP (and the admin listener's C{POST /reload}) re-reads the whole
configuration (L{ProxyService.reload}, L{Reload}): a new generation for new
connections and requests, or nothing at all when the file is invalid or a
new listener cannot bind; certificates of TLS listeners are re-read with it.
SIGUSR1 reopens the access log; SIGTERM drains (L{ProxyService.stopService}).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.accesslog import AccessLog, AccessLogService, open_access_log
from twisted_proxy.config.endpoints import with_backlog
from twisted_proxy.engine import FrontFactory, ListenerContext, SubjectFrontFactory
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.redirect import RedirectRouter
from twisted_proxy.limits import ConnectionLimiter
from twisted_proxy.loading import load_object
from twisted_proxy.reverse import ReverseRouter, Route
from twisted_proxy.tcp import TcpContext, TcpFactory
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.health import HealthChecker
from twisted_proxy.model import Config, ListenerConfig, ProxySettings, TLSConfig
from twisted_proxy.upstream.pool import Pool

log = Logger()


class ListenFailed(Exception):
    """
    A listener could not start.
    """


class ListenerService(service.Service):
    """
    Listens on one endpoint with one protocol factory.

    Binding happens in L{privilegedStartService} (before twistd drops
    privileges), synchronously where the endpoint allows it, so that a
    failure is known before the process settles.
    """

    def __init__(
        self,
        name: str,
        endpoint_description: str,
        factory: Any,
        reactor: Any,
        on_failure: Callable[[str], None],
        on_listening: Optional[Callable[[Any], None]] = None,
        tls: Optional[TLSConfig] = None,
        backlog: Optional[int] = None,
        limiter: Optional[ConnectionLimiter] = None,
        inherited: Optional[Tuple[int, int]] = None,
    ) -> None:
        self.setName(name)
        self.endpoint_description = endpoint_description
        self.factory = factory
        self.reactor = reactor
        self.on_failure = on_failure
        self.on_listening = on_listening
        self.tls = tls
        #: the listen queue, added to the endpoint string (see L{with_backlog})
        self.backlog = backlog
        #: pauses this port's accepting with the others (see L{ConnectionLimiter})
        self.limiter = limiter
        #: (file descriptor, address family) of a listening socket this
        #: process inherited (a worker's: see workers.py), adopted instead
        #: of binding the endpoint
        self.inherited = inherited
        #: the listener's L{twisted_proxy.tls.ServerTLS}, once listening
        self.tls_server: Any = None
        self.port: Any = None
        self._started = False

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        if not self._started:
            self._listen()

    def bind(self) -> Any:
        """
        Listen now, for a reload: a Deferred that fires with L{None} once
        listening or with a failure message (str); never stops the process.
        """
        from twisted.internet import defer

        self._started = True
        factory = self.factory
        try:
            if self.tls is not None:
                from twisted_proxy.tls import ServerTLS, wrap_server_factory

                self.tls_server = ServerTLS(self.tls, str(self.name))
                factory = wrap_server_factory(self.tls_server, factory)
            d = self._endpoint_listen(factory)
        except Exception as e:
            return defer.succeed(f"listener {self.name}: cannot listen on {self.endpoint_description}: {e}")

        def failed(failure: Failure) -> str:
            why = getattr(failure.value, "socketError", None) or failure.value
            return f"listener {self.name}: cannot listen on {self.endpoint_description}: {why}"

        return d.addCallbacks(self._listening, failed)

    def stop_accepting(self) -> Any:
        """
        Stop listening, leaving the connections (a reload drains them).
        """
        port, self.port = self.port, None
        if port is None:
            return None
        if self.limiter is not None:
            self.limiter.unwatch(port)
        return port.stopListening()

    def startService(self) -> None:
        service.Service.startService(self)
        if not self._started:
            self._listen()

    def _listen(self) -> None:
        self._started = True
        factory = self.factory
        if self.tls is not None:
            from twisted_proxy.tls import ServerTLS, TLSFileError, wrap_server_factory

            try:
                self.tls_server = ServerTLS(self.tls, str(self.name))
            except TLSFileError as e:
                self.on_failure(f"listener {self.name}: cannot start TLS: tls.{e}")
                return
            factory = wrap_server_factory(self.tls_server, factory)
        try:
            d = self._endpoint_listen(factory)
        except Exception as e:
            self._failed(Failure(e))
            return
        d.addCallbacks(self._listening, self._failed)

    def _endpoint_listen(self, factory: Any) -> Any:
        """
        Listen with C{factory}: on the endpoint, or on the inherited socket.
        """
        from twisted.internet import defer

        if self.inherited is not None:
            fd, family = self.inherited
            self.inherited = None
            try:
                return defer.succeed(self.reactor.adoptStreamPort(fd, family, factory))
            finally:
                # the port holds a duplicate
                os.close(fd)
        description = self.endpoint_description
        if self.backlog is not None:
            description = with_backlog(description, self.backlog)
        return endpoints.serverFromString(self.reactor, description).listen(factory)

    def _listening(self, port: Any) -> None:
        self.port = port
        if self.limiter is not None:
            self.limiter.watch(port)
        if self.on_listening is not None:
            self.on_listening(port)
        address = port.getHost()
        log.info(
            "listener {name} on {address}",
            name=self.name,
            address=f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}",
        )

    def _failed(self, failure: Failure) -> None:
        value = failure.value
        why = getattr(value, "socketError", None) or value
        message = f"listener {self.name}: cannot listen on {self.endpoint_description}: {why}"
        self.on_failure(message)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is not None and self.limiter is not None:
            self.limiter.unwatch(port)
        connections = getattr(self.factory, "connections", ())
        for proto in list(connections):
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.loseConnection()
        if port is not None:
            return port.stopListening()
        return None


class FiltersService(service.Service):
    """
    Closes filters that hold resources (a Redis connection, timers) at
    shutdown.
    """

    def __init__(self, filters: Any) -> None:
        #: a dict of filters, or the proxy service (its current ones)
        self.source = filters

    @property
    def filters(self) -> dict:
        source = self.source
        return source if isinstance(source, dict) else source.filters  # type: ignore[no-any-return]

    def stopService(self) -> Any:
        service.Service.stopService(self)
        from twisted.internet import defer

        waits = []
        for flt in self.filters.values():
            close = getattr(flt, "close", None)
            if close is not None:
                try:
                    result = close()
                except Exception:
                    log.failure("closing filter {name}", name=getattr(flt, "name", ""))
                    continue
                if isinstance(result, defer.Deferred):
                    waits.append(result)
        if waits:
            return defer.gatherResults(waits, consumeErrors=True).addErrback(lambda _: None)
        return None


class PoolService(service.Service):
    """
    Closes the pool's idle connections at shutdown.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.pool.close_idle()


class CachesService(service.Service):
    """
    Opens the named caches (their index comes back from disk) before the
    listeners start, and closes them at shutdown.
    """

    def __init__(self, caches: Any) -> None:
        #: a dict of caches, or the proxy service (its current ones)
        self.source = caches

    @property
    def caches(self) -> dict:
        source = self.source
        return source if isinstance(source, dict) else source.caches  # type: ignore[no-any-return]

    def startService(self) -> None:
        service.Service.startService(self)
        for cache in self.caches.values():
            try:
                cache.open()
            except OSError as e:
                raise SystemExit(f"cache {cache.name}: cannot open {cache.config.path}: {e}")

    def stopService(self) -> None:
        service.Service.stopService(self)
        for cache in self.caches.values():
            cache.close()


class SpoolService(service.Service):
    """
    Opens the spool folder (clearing what a previous run left) when some
    listener or route buffers bodies.
    """

    def __init__(self, spool: Any) -> None:
        self.spool = spool

    def startService(self) -> None:
        service.Service.startService(self)
        try:
            self.spool.open()
        except OSError as e:
            raise SystemExit(f"proxy.spool_path: cannot open {self.spool.path}: {e}")


def build_spool(config: Config) -> Any:
    """
    The process's spool (C{[proxy] spool_path}, C{spool_max}), or L{None}
    when no listener or route buffers anything.
    """
    used = False
    for lconf in config.listeners:
        if lconf.kind not in ("forward", "reverse") or lconf.redirect_to_https is not None:
            continue
        if any(lconf.buffers()) or any(any(r.buffers_for(lconf)) for r in lconf.routes):
            used = True
    if not used:
        return None
    from twisted_proxy.cache.store import Spool

    return Spool(config.proxy.spool_path, config.proxy.spool_max)


def build_caches(config: Config, reactor: Any) -> dict:
    """
    One L{SharedCache} per C{[cache.NAME]}, by name.
    """
    from twisted_proxy.cache.shared import SharedCache

    return {name: SharedCache(cconf, reactor) for name, cconf in config.caches.items()}


def _origin(lconf: ListenerConfig, caches: dict, reactor: Any, routes: Sequence[Any] = ()) -> Any:
    """
    The origin stage of an HTTP listener: a L{CacheOrigin} when it or one
    of its routes has a cache, else the upstream (L{None}: the default).
    """
    listener_cache = caches.get(lconf.cache) if lconf.cache else None
    if listener_cache is None and not any(r.cache for r in routes):
        return None
    from twisted_proxy.cache.origin import CacheOrigin
    from twisted_proxy.engine.upstream import UpstreamOrigin

    return CacheOrigin(UpstreamOrigin(), listener_cache, reactor)


def _same_binding(old: ListenerConfig, new: ListenerConfig) -> bool:
    """
    Whether a listener keeps its listening socket across a reload.
    """
    return (old.endpoint, old.backlog) == (new.endpoint, new.backlog)


class Reload:
    """
    One reload: the new configuration built beside the running one, reusing
    what did not change, then applied at once or not at all.

    - Unchanged backends (equal configuration) are the same objects: health
      state, pools and in-flight counts carry over; unchanged filters keep
      their state (rate-limit buckets); unchanged caches their entries.
    - Every HTTP and tcp listener gets a new context; a listener whose
      endpoint did not change keeps its socket and takes the new context for
      new connections and for each new request on a kept-alive connection;
      exchanges, tunnels and splices already running finish on the context
      they started with, which is released when its last user ends.
    - Added listeners (and those whose endpoint changed) are bound first: if
      one cannot bind, the reload is refused as a whole and nothing changes.
      Removed (and moved) listeners stop accepting and drain their
      connections for C{drain_timeout}.
    """

    def __init__(self, top: "ProxyService", config: Config) -> None:
        self.top = top
        self.config = config
        self.old = top.config
        self.reactor = top.reactor
        #: things to release once the old generation's users are gone
        self.retired: List[Any] = []
        #: the new spool_max of a kept spool
        self.spool_max: Optional[int] = None

    def run(self) -> Any:
        from twisted.internet import defer

        top = self.top
        config = self.config
        errors: List[str] = []
        access_log = top.access_log
        if config.proxy.access_log != self.old.proxy.access_log:
            try:
                access_log = open_access_log(config.proxy.access_log, self.reactor)
            except OSError as e:
                return defer.succeed(self.refuse([f"{config.path}: proxy.access_log: cannot open: {e}"]))
        filters = self.filters()
        backends, health = self.backends(errors)
        if errors:
            return defer.succeed(self.refuse(errors, access_log, filters=filters))
        from twisted_proxy.cache.shared import SharedCache

        caches = {}
        new_caches = {}
        reconfigured = []
        by_path = {c.config.path: c for c in top.caches.values()}
        for name, cconf in config.caches.items():
            cache = by_path.get(cconf.path)
            if cache is not None:
                # the same folder: the same store (two stores must never
                # share one), with the new settings applied at commit
                if cache.config != cconf:
                    reconfigured.append((cache, cconf))
            else:
                cache = new_caches[name] = SharedCache(cconf, self.reactor)
            caches[name] = cache
        spool = build_spool(config)
        if spool is not None and top.spool is not None and spool.path == top.spool.path:
            # one spool per folder: its buffers in flight stay counted (its
            # budget follows spool_max at commit)
            self.spool_max = spool.max_size
            spool = top.spool
        swaps: List[Tuple[Any, Any, ListenerConfig]] = []
        binds: List[Tuple[Any, ListenerConfig]] = []
        old_listeners = {l.name: l for l in self.old.listeners}
        for lconf in config.listeners:
            factory = make_listener_factory(
                lconf,
                config,
                self.reactor,
                top.pool,
                access_log,
                filters,
                top.own_addresses,
                backends,
                caches,
                spool,
            )
            if isinstance(factory, (FrontFactory, TcpFactory)):
                factory.limiter = top.limiter
            existing = top.listeners.get(lconf.name)
            previous = old_listeners.get(lconf.name)
            if existing is not None and previous is not None and _same_binding(previous, lconf):
                swaps.append((existing, factory, lconf))
            else:
                svc = ListenerService(
                    lconf.name,
                    lconf.endpoint,
                    factory,
                    self.reactor,
                    top.listener_failed,
                    top.listening if lconf.kind == "forward" else None,
                    tls=lconf.tls,
                    backlog=lconf.backlog,
                    limiter=top.limiter,
                )
                binds.append((svc, lconf))
        kept = {svc.name for svc, _, _ in swaps}
        removed = [svc for name, svc in top.listeners.items() if name not in kept]

        def bound(results: List[Any]) -> dict:
            problems = [r for r in results if isinstance(r, str)]
            if problems:
                for svc, _ in binds:
                    svc.stop_accepting()
                for line in problems:
                    log.error("reload refused: {error}", error=line)
                return self.refuse(problems, access_log, new_caches, filters)
            for cache, cconf in reconfigured:
                cache.reconfigure(cconf)
            self.commit(access_log, filters, backends, health, caches, new_caches, spool, swaps, binds, removed)
            return {"ok": True, "generation": top.generation}

        # bind every new endpoint first (while the old ones still listen)
        d = defer.gatherResults([svc.bind() for svc, _ in binds], consumeErrors=True)
        return d.addCallback(bound)

    def refuse(
        self, errors: List[str], access_log: Any = None, caches: Any = None, filters: Any = None
    ) -> dict:
        """
        Nothing changes: what this reload built is closed again.
        """
        if access_log is not None and access_log is not self.top.access_log:
            access_log.close()
        kept = {id(f) for f in self.top.filters.values()}
        _release([f for f in (filters or {}).values() if id(f) not in kept])
        for line in errors:
            log.error("reload refused: {error}", error=line)
        return {"ok": False, "errors": errors}

    def filters(self) -> dict:
        top = self.top
        built = {}
        for name, fconf in self.config.filters.items():
            if name in top.filters and self.old.filters.get(name) == fconf:
                built[name] = top.filters[name]
            else:
                built[name] = build_filter(name, fconf, self.reactor, top.bus)
        return built

    def backends(self, errors: List[str]) -> Tuple[dict, dict]:
        top = self.top
        backends = {}
        health = {}
        for name, bconf in self.config.backends.items():
            if name in top.backends and self.old.backends.get(name) == bconf:
                backends[name] = top.backends[name]
                if name in top.health:
                    health[name] = top.health[name]
                continue
            try:
                backend = Backend(bconf, self.reactor)
            except ValueError as e:
                errors.append(f"{self.config.path}: backend.{name}: {e}")
                continue
            backends[name] = backend
            if bconf.health is not None:
                health[name] = HealthChecker(backend, bconf.health, self.reactor)
        return backends, health

    def commit(
        self,
        access_log: Any,
        filters: dict,
        backends: dict,
        health: dict,
        caches: dict,
        new_caches: dict,
        spool: Any,
        swaps: List[Tuple[Any, Any, ListenerConfig]],
        binds: List[Tuple[Any, ListenerConfig]],
        removed: List[Any],
    ) -> None:
        top = self.top
        config = self.config
        settings = config.proxy
        for cache in new_caches.values():
            cache.open()
        if spool is not None and spool is not top.spool:
            spool.open()
        elif spool is not None and self.spool_max is not None:
            spool.max_size = self.spool_max
        # health checkers: the replaced ones stop, the new ones start
        for name, checker in top.health.items():
            if health.get(name) is not checker:
                checker.disownServiceParent()
        for name, checker in health.items():
            if checker.parent is None:
                checker.setServiceParent(top)
        # the pool follows the new settings (its connections stay)
        pool = top.pool
        pool.max_idle = settings.pool_max_idle
        pool.max_total = pool_total(settings)
        pool.idle_timeout = settings.pool_idle_timeout
        pool.connect_timeout = settings.connect_timeout
        pool.max_head_size = settings.max_head_size
        pool.max_field_size = settings.max_field_size
        pool.max_header_count = settings.max_header_count
        limiter = top.limiter
        limiter.max_connections = settings.max_connections
        limiter.resume_below = settings.max_connections - max(1, settings.max_connections // 100)
        stats = {}
        for held, factory in top.listener_stats:
            ctx = getattr(factory, "context", None) or getattr(factory, "ctx", None)
            name = getattr(ctx, "name", None)
            if name is not None:
                stats[name] = held
        top.listener_stats = []
        for svc, factory, lconf in swaps:
            new_ctx = getattr(factory, "context", None) or getattr(factory, "ctx", None)
            old_factory = svc.factory
            if new_ctx is not None and lconf.name in stats:
                new_ctx.stats = stats[lconf.name]
                new_ctx.stats.timing = settings.latency_histograms
            if type(old_factory) is type(factory) and lconf.tls == _listener_conf(self.old, lconf.name).tls:
                # the socket and its factory stay: new connections and new
                # requests take the new context
                if isinstance(old_factory, FrontFactory):
                    old_factory.context = factory.context
                    if isinstance(old_factory, SubjectFrontFactory) and isinstance(factory, SubjectFrontFactory):
                        old_factory.subject_name = factory.subject_name
                elif isinstance(old_factory, TcpFactory):
                    old_factory.ctx = factory.ctx
                else:
                    if svc.port is not None:
                        svc.port.factory = factory
                    svc.factory = factory
                if svc.tls_server is not None:
                    svc.tls_server.reload()
            else:
                # another kind of listener or other TLS on the same socket
                wrapped = factory
                if lconf.tls is not None:
                    from twisted_proxy.tls import ServerTLS, wrap_server_factory

                    svc.tls_server = ServerTLS(lconf.tls, lconf.name)
                    wrapped = wrap_server_factory(svc.tls_server, factory)
                else:
                    svc.tls_server = None
                if svc.port is not None:
                    svc.port.factory = wrapped
                svc.factory = factory
                self.retired.append(old_factory)
            self.track(svc.factory, new_ctx)
        for svc, lconf in binds:
            new_ctx = getattr(svc.factory, "context", None) or getattr(svc.factory, "ctx", None)
            if new_ctx is not None and lconf.name in stats:
                new_ctx.stats = stats[lconf.name]
                new_ctx.stats.timing = settings.latency_histograms
            svc.setServiceParent(top)
            top.listeners[lconf.name] = svc
            self.track(svc.factory, new_ctx)
        for svc in removed:
            del top.listeners[svc.name]
            closed = svc.stop_accepting()
            if closed is not None:
                top.closing_ports.append(closed)
            self.drain_and_forget(svc, settings.drain_timeout)
        # what the new generation no longer uses is released after the drain
        for name, flt in top.filters.items():
            if filters.get(name) is not flt:
                self.retired.append(flt)
        kept = {id(c) for c in caches.values()}
        for cache in top.caches.values():
            if id(cache) not in kept:
                self.retired.append(cache)
        if access_log is not top.access_log:
            self.retired.append(top.access_log)
            service_ = _access_log_service(top)
            if service_ is not None:
                service_.access_log = access_log
        top.retire(self.retired, settings.drain_timeout)
        top.access_log = access_log
        top.filters = filters
        top.backends = backends
        top.health = health
        top.caches = caches
        top.spool = spool
        top.config = config
        top.generation += 1
        top.loaded_at = time.time()
        log.info(
            "configuration reloaded: generation {generation} ({listeners} listeners, "
            "{moved} bound anew, {removed} removed)",
            generation=top.generation,
            listeners=len(config.listeners),
            moved=len(binds),
            removed=len(removed),
        )

    def track(self, factory: Any, ctx: Any) -> None:
        stats = getattr(ctx, "stats", None)
        if stats is not None:
            self.top.listener_stats.append((stats, factory))

    def drain_and_forget(self, svc: Any, timeout: float) -> None:
        """
        A listener that is gone: its connections finish (up to C{timeout}),
        then it leaves the service tree.
        """
        from twisted_proxy.drain import drain

        top = self.top
        top.draining_factories.append(svc.factory)

        def forget(_: Any) -> None:
            if svc.factory in top.draining_factories:
                top.draining_factories.remove(svc.factory)
            if svc.parent is not None:
                svc.disownServiceParent()

        drain([svc.factory], self.reactor, timeout).addBoth(forget)


def _listener_conf(config: Config, name: str) -> ListenerConfig:
    for lconf in config.listeners:
        if lconf.name == name:
            return lconf
    raise KeyError(name)


def _access_log_service(top: Any) -> Any:
    try:
        return top.getServiceNamed("access-log")
    except KeyError:
        return None


def _release(things: List[Any]) -> None:
    """
    Close what an older generation held (its users had C{drain_timeout} to
    finish).
    """
    for thing in things:
        close = getattr(thing, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:
            log.failure("releasing {thing!r} after a reload", thing=thing)


class ProxyService(service.MultiService):
    """
    The whole proxy: what L{make_service} returns.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        service.MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        self.own_addresses: Set[Tuple[str, int]] = set()
        self.backends: dict = {}
        #: the named caches, by name
        self.caches: dict = {}
        #: (ListenerStats, factory) per HTTP or tcp listener, for the admin
        self.listener_stats: List[Tuple[Any, Any]] = []
        self.failures: List[str] = []
        #: the configuration's generation: 1 at start, one more per reload
        self.generation = 1
        self.loaded_at = time.time()
        #: what a reload reuses or replaces (set by make_service)
        self.filters: dict = {}
        self.bus: Any = None
        self.pool: Any = None
        self.access_log: Any = None
        self.limiter: Any = None
        self.spool: Any = None
        self.health: dict = {}
        self.listeners: dict = {}
        self.reloading = False
        #: (DelayedCall, things) an older generation holds until released
        self.retiring: List[Tuple[Any, List[Any]]] = []
        #: factories of removed listeners still draining after a reload
        self.draining_factories: List[Any] = []
        #: the drain of a graceful stop, while it runs
        self.drain_deferred: Any = None
        #: listening ports a reload closed (stopping waits for them)
        self.closing_ports: List[Any] = []
        #: a SIGTERM or SIGINT came (a second one cuts the drain)
        self.stop_requested = False
        #: applied to every configuration loaded (a worker's share of the
        #: caches and the spool: see workers.py)
        self.config_transform: Optional[Callable[[Config], Config]] = None
        #: the admin's fifteen minutes of history (with an admin listener)
        self.history: Any = None

    def startService(self) -> None:
        service.MultiService.startService(self)
        self._install_sighup()

    def stopService(self) -> Any:
        """
        The graceful stop (SIGTERM): every listener stops accepting, the
        connections of the HTTP and tcp listeners drain (exchanges, tunnels
        and splices in progress finish, idle ones close) for up to
        C{drain_timeout}, what is left is cut, then everything stops. A
        second SIGTERM or SIGINT cuts at once (L{cut_drain}).
        """
        from twisted_proxy.drain import drain

        for call, things in self.retiring:
            if call.active():
                call.cancel()
            _release(things)
        self.retiring = []
        from twisted.internet import defer

        factories = []
        closing = list(self.closing_ports)
        self.closing_ports = []
        for listener in list(self.listeners.values()):
            closed = listener.stop_accepting()
            if isinstance(closed, defer.Deferred):
                closing.append(closed)
            factories.append(listener.factory)
        factories.extend(self.draining_factories)
        d = drain(
            [f for f in factories if hasattr(f, "connections")],
            self.reactor,
            self.config.proxy.drain_timeout,
        )
        self.drain_deferred = d

        def stop(_: Any) -> Any:
            self.drain_deferred = None
            # (the signal handlers stay while draining: a second signal cuts)
            self._remove_sighup()
            closing.append(service.MultiService.stopService(self))
            return defer.DeferredList([c for c in closing if isinstance(c, defer.Deferred)], consumeErrors=True)

        return d.addCallback(stop)

    def cut_drain(self) -> None:
        """
        A second SIGTERM or SIGINT: cut what still drains, at once.
        """
        d = self.drain_deferred
        if d is not None:
            log.info("second signal: cutting the connections still draining")
            d.cancel()

    def stop_signal(self) -> None:
        """
        SIGTERM or SIGINT: the first stops the reactor (the graceful drain
        of L{stopService}, then exit status 0: the reactor is stopped, not
        killed by the signal); a second one cuts the drain.
        """
        if self.stop_requested:
            self.cut_drain()
            return
        self.stop_requested = True
        log.info("stop requested: draining for up to {seconds}s", seconds=self.config.proxy.drain_timeout)
        try:
            self.reactor.stop()
        except Exception:
            # (already stopping)
            self.cut_drain()

    # certificates

    def _install_sighup(self) -> None:
        install_signals(self)

    def _remove_sighup(self) -> None:
        remove_signals(self)

    def retire(self, things: List[Any], after: float) -> None:
        """
        Close C{things} (filters, caches, an access log of an older
        generation) once its users had C{after} seconds to finish, or when
        the service stops.
        """
        if not things:
            return
        call = self.reactor.callLater(after, self._release, things)
        self.retiring.append((call, things))

    def _release(self, things: List[Any]) -> None:
        self.retiring = [(c, t) for c, t in self.retiring if t is not things]
        _release(things)

    def _sighup(self) -> None:
        if not os.path.isfile(self.config.path):
            # the embedded default (or a configuration given as data): no
            # file to re-read, the certificates still are
            log.info("SIGHUP: no configuration file; reloading certificates")
            self.reload_certificates()
            return
        log.info("SIGHUP: reloading the configuration")
        self.reload()

    def _sigusr1(self) -> None:
        log.info("SIGUSR1: reopening the access log")
        service_ = _access_log_service(self)
        if service_ is not None:
            service_.reopen()

    # reload

    def reload(self) -> Any:
        """
        Re-read and check the whole configuration file; if it is valid, make
        it the new generation (see L{Reload}). A Deferred firing with
        C{{"ok": True, "generation": N}} or C{{"ok": False, "errors":
        [...]}} (each error also logged); nothing changes on an error.
        """
        from twisted.internet import defer

        from twisted_proxy.config import DEFAULT_PATH, ConfigError, load_config

        if self.reloading:
            return defer.succeed({"ok": False, "errors": ["a reload is already in progress"]})
        if self.config.path == DEFAULT_PATH:
            message = "the embedded default configuration has no file to re-read"
            log.error("reload refused: {why}", why=message)
            return defer.succeed({"ok": False, "errors": [message]})
        try:
            config = load_config(self.config.path)
        except ConfigError as e:
            for line in e.lines():
                log.error("reload refused: {error}", error=line)
            return defer.succeed({"ok": False, "errors": e.lines()})
        if self.config_transform is not None:
            config = self.config_transform(config)
        self.reloading = True

        def done(result: dict) -> dict:
            self.reloading = False
            return result

        def failed(failure: Failure) -> dict:
            self.reloading = False
            log.failure("reload failed", failure)
            return {"ok": False, "errors": [f"{self.config.path}: reload failed: {failure.value}"]}

        return Reload(self, config).run().addCallbacks(done, failed)

    def tls_listeners(self) -> List["ListenerService"]:
        """
        The listeners terminating TLS with their own certificates.
        """
        return [
            s for s in self if isinstance(s, ListenerService) and s.tls_server is not None
        ]

    def reload_certificates(self) -> dict:
        """
        Re-read the certificate, key and CA files of every TLS listener. A
        listener whose new files are broken keeps its old ones (a log event
        says why).

        @return: C{{listener name: reloaded}}.
        """
        results: dict = {}
        for listener in self.tls_listeners():
            results[listener.name] = listener.tls_server.reload()
        if not results:
            log.info("no TLS listener: no certificates to reload")
        return results

    def listener_failed(self, message: str) -> None:
        listener_failed(self, message)

    def rotate_stats(self) -> None:
        """
        Ten seconds passed: every latency histogram's last-minute window
        moves on.
        """
        for stats, _ in self.listener_stats:
            rotate = getattr(stats, "rotate", None)
            if rotate is not None:
                rotate()

    def listening(self, port: Any) -> None:
        address = port.getHost()
        host = getattr(address, "host", None)
        number = getattr(address, "port", None)
        if host is not None and number is not None:
            if host in ("0.0.0.0", "::"):
                self.own_addresses.add(("*", number))
            self.own_addresses.add((host, number))


def listener_failed(top: Any, message: str) -> None:
    """
    A listener of C{top} (a L{ProxyService}, or a supervisor of workers)
    could not bind: say so and stop the process with status 1.
    """
    top.failures.append(message)
    log.critical("{message}", message=message)
    try:
        sys.__stderr__.write(f"twisted-proxy: {message}\n")  # type: ignore[union-attr]
        sys.__stderr__.flush()  # type: ignore[union-attr]
    except Exception:
        pass
    exit_process = getattr(top, "exit_process", None)
    if exit_process is not None:
        exit_process(1)
        return
    reactor = top.reactor
    if reactor.running:
        reactor.callLater(0, _hard_exit, reactor)
    else:
        reactor.callWhenRunning(_hard_exit, reactor)


def install_signals(top: Any) -> None:
    """
    SIGHUP, SIGUSR1, SIGTERM and SIGINT call C{top}'s C{_sighup},
    C{_sigusr1} and C{stop_signal} (a L{ProxyService}, or a supervisor of
    workers): only under a real reactor, from the main thread (signal
    handlers can only be set there); the handler hands the work to the
    reactor thread.
    """
    from twisted.internet.base import ReactorBase

    if not hasattr(signal, "SIGHUP") or not isinstance(top.reactor, ReactorBase):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    _sighup_services.add(top)
    _sighup_handler.install()
    _sigusr1_handler.install()
    # after the reactor's own SIGTERM / SIGINT handlers (installed as it
    # starts running), which ours replace: a graceful stop, exit 0
    top.reactor.callWhenRunning(_sigterm_handler.install)
    top.reactor.callWhenRunning(_sigint_handler.install)


def remove_signals(top: Any) -> None:
    _sighup_services.discard(top)
    if not _sighup_services:
        _sighup_handler.remove()
        _sigusr1_handler.remove()
        _sigterm_handler.remove()
        _sigint_handler.remove()


class _SignalHandler:
    """
    One signal's handler while any L{ProxyService} runs under a real
    reactor (one handler for all of them; the previous one comes back when
    the last stops): it hands C{method} of each service to the reactor
    thread, then calls the previous handler if there was one (twistd's
    SIGUSR1 log rotation under C{--logfile}).
    """

    def __init__(self, signame: str, method: str, chain: bool = False) -> None:
        self.signame = signame
        self.method = method
        self.chain = chain
        self.installed = False
        self.previous: Any = None

    def install(self) -> None:
        signum = getattr(signal, self.signame, None)
        if self.installed or signum is None:
            return
        try:
            self.previous = signal.signal(signum, self.on_signal)
        except (ValueError, OSError):  # pragma: no cover
            return
        self.installed = True

    def remove(self) -> None:
        if not self.installed:
            return
        self.installed = False
        previous, self.previous = self.previous, None
        try:
            signal.signal(getattr(signal, self.signame), previous if previous is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass

    def on_signal(self, signum: int, frame: Any) -> None:
        # a signal handler runs between two bytecodes of the main thread:
        # the work itself waits for the reactor
        for top in list(_sighup_services):
            top.reactor.callFromThread(getattr(top, self.method))
        previous = self.previous
        if self.chain and callable(previous):
            previous(signum, frame)


#: the services the signals reach (ProxyService, workers.Supervisor)
_sighup_services: "weakref.WeakSet[Any]" = weakref.WeakSet()
_sighup_handler = _SignalHandler("SIGHUP", "_sighup")
#: SIGUSR1 reopens the access log (logrotate's postrotate), as nginx -s reopen
_sigusr1_handler = _SignalHandler("SIGUSR1", "_sigusr1", chain=True)
#: SIGTERM / SIGINT: a graceful stop (drain), exit status 0; a second one
#: while draining cuts the drain (see ProxyService.stop_signal)
_sigterm_handler = _SignalHandler("SIGTERM", "stop_signal")
_sigint_handler = _SignalHandler("SIGINT", "stop_signal")


def _hard_exit(reactor: Any) -> None:
    """
    Stop with exit status 1 (twistd has no other way to return one).
    """
    try:
        reactor.stop()
    except Exception:
        pass
    os._exit(1)


def build_filters(config: Config, reactor: Any, bus: Any = None) -> dict:
    """
    Live filter objects for every C{[filter.NAME]} table.
    """
    from twisted_proxy.filters.events import Events

    if bus is None:
        bus = Events()  # rate limits and ip_block of this service talk here only
    return {name: build_filter(name, fconf, reactor, bus) for name, fconf in config.filters.items()}


def build_filter(name: str, fconf: Any, reactor: Any, bus: Any) -> Any:
    """
    One live filter (on the service's event C{bus}).
    """
    import inspect

    module = filter_type(fconf.type)
    if module is not None:
        if "bus" in inspect.signature(module.build).parameters:
            return module.build(name, fconf.spec, reactor, bus=bus)
        return module.build(name, fconf.spec, reactor)
    factory = load_object(fconf.type)
    return factory(name, fconf.spec, reactor)


def build_backends(config: Config, reactor: Any, parent: service.MultiService) -> dict:
    """
    Live backends, with a health checker service each where configured.
    """
    backends = {}
    for name, bconf in config.backends.items():
        try:
            backend = Backend(bconf, reactor)
        except ValueError as e:
            from twisted_proxy.tls import TLSFileError

            if not isinstance(e, TLSFileError):
                raise
            # the files loaded at --check time but not now
            raise SystemExit(f"{config.path}: backend.{name}: cannot load TLS files: {e}")
        backends[name] = backend
        for server in bconf.servers:
            if server.scheme == "https" and not server.verify:
                log.warn(
                    "backend {backend}: server {url} is reached over TLS WITHOUT any"
                    " certificate verification (verify = false): anyone on the path"
                    " can impersonate it",
                    backend=name,
                    url=server.url,
                    tls_event="verify_disabled",
                )
        if bconf.health is not None:
            checker = HealthChecker(backend, bconf.health, reactor)
            checker.setServiceParent(parent)
            health = getattr(parent, "health", None)
            if isinstance(health, dict):
                health[name] = checker
    return backends


def make_listener_factory(
    lconf: ListenerConfig,
    config: Config,
    reactor: Any,
    pool: Pool,
    access_log: AccessLog,
    filters: dict,
    own_addresses: Set[Tuple[str, int]],
    backends: Optional[dict] = None,
    caches: Optional[dict] = None,
    spool: Any = None,
) -> Any:
    """
    The protocol factory for one listener.
    """
    backends = backends or {}
    caches = caches or {}
    if lconf.redirect_to_https is not None and lconf.kind in ("forward", "reverse"):
        return FrontFactory(
            ListenerContext(
                lconf.name,
                reactor,
                config.proxy,
                pool,
                access_log,
                RedirectRouter(lconf.redirect_to_https),
                (),
                lconf.allow_clients,
                lconf.anonymity,
                frozenset(),
                allow_all=lconf.kind == "reverse" and not lconf.allow_clients,
                kind=lconf.kind,
            )
        )
    if lconf.kind == "custom":
        factory_callable = load_object(lconf.factory or "")
        return factory_callable(lconf, reactor)
    if lconf.kind == "tcp":
        tcp_context = TcpContext(
            lconf.name,
            reactor,
            config.proxy,
            pool,
            access_log,
            backends[lconf.backend],
            [filters[name] for name in lconf.filters],
            lconf.allow_clients,
        )
        return TcpFactory(tcp_context)
    if lconf.kind == "reverse":
        routes = []
        for r in lconf.routes:
            route = Route(
                backends[r.backend],
                r.host,
                r.path,
                [filters[name] for name in r.filters],
                r.strip_prefix,
                r.rewrite_prefix,
                r.preserve_host,
            )
            if r.cache is False:
                route.cache = False
            elif isinstance(r.cache, str):
                route.cache = caches[r.cache]
            route.response_buffer = r.response_buffer
            route.request_buffer = r.request_buffer
            routes.append(route)
        https = _is_https(lconf)
        strip: Tuple[str, ...] = ()
        if https and (lconf.tls is None or lconf.tls.client_ca is None):
            # no verified subject here: nobody may claim one
            strip = (lconf.tls.client_subject_header if lconf.tls else "X-Client-Subject",)
        reverse_router = ReverseRouter(
            routes,
            lconf.trusted_proxies,
            lconf.hide_headers,
            lconf.forwarded,
            add_via=lconf.anonymity != "elite",
            scheme="https" if https else "http",
            default_port=443 if https else 80,
            strip_headers=strip,
        )
        return _front_factory(
            lconf,
            ListenerContext(
                lconf.name,
                reactor,
                config.proxy,
                pool,
                access_log,
                reverse_router,
                [filters[name] for name in lconf.filters],
                lconf.allow_clients,
                lconf.anonymity,
                frozenset(),
                allow_all=not lconf.allow_clients,
                kind="reverse",
                origin=_origin(lconf, caches, reactor, routes),
                **_buffers(lconf, spool),
            )
        )
    if lconf.kind != "forward":
        raise ValueError(f"listener kind {lconf.kind!r} is not supported")
    router = ForwardRouter(
        [(p.domains, p.host, p.port) for p in lconf.parents], own_addresses, lconf.anonymity
    )
    context = ListenerContext(
        lconf.name,
        reactor,
        config.proxy,
        pool,
        access_log,
        router,
        [filters[name] for name in lconf.filters],
        lconf.allow_clients,
        lconf.anonymity,
        frozenset(lconf.connect_ports),
        origin=_origin(lconf, caches, reactor),
        **_buffers(lconf, spool),
    )
    return _front_factory(lconf, context)


def _buffers(lconf: ListenerConfig, spool: Any) -> dict:
    """
    The spool and buffer limits of an HTTP listener's context.
    """
    response, request = lconf.buffers()
    return {"spool": spool, "response_buffer": response, "request_buffer": request}


def _is_https(lconf: ListenerConfig) -> bool:
    """
    Whether the listener's clients speak TLS to it (a C{tls} table or an
    C{ssl:} endpoint).
    """
    return lconf.tls is not None or lconf.endpoint.strip().lower().startswith("ssl:")


def _front_factory(lconf: ListenerConfig, context: ListenerContext) -> FrontFactory:
    """
    The front factory of an HTTP listener: one that adds the verified
    client certificate's subject when the listener verifies clients.
    """
    if lconf.tls is not None and lconf.tls.client_ca is not None:
        return SubjectFrontFactory(context, lconf.tls.client_subject_header)
    factory = FrontFactory(context)
    if _is_https(lconf) and lconf.tls is None:
        from twisted_proxy.tls import advertise_alpn

        # an ssl: endpoint: Twisted's TLS asks the factory what ALPN accepts
        advertise_alpn(factory)
    return factory


def pool_total(settings: ProxySettings) -> int:
    """
    The pool's process-wide idle bound: C{pool_max_idle_total}, but at
    most a quarter of the open-file limit (the rest is for clients and
    their upstream connections in use).
    """
    total = settings.pool_max_idle_total
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return total
    if soft != resource.RLIM_INFINITY and soft // 4 < total:
        return max(1, soft // 4)
    return total


def make_service(
    config: Config, reactor: Any, inherited: Optional[Dict[str, Tuple[int, int]]] = None
) -> ProxyService:
    """
    Everything C{config} describes, as one service for twistd.

    @param inherited: listening sockets this process inherited, by
        listener name (a worker's): adopted instead of bound.
    """
    inherited = inherited or {}
    top = ProxyService(config, reactor)
    settings = config.proxy
    try:
        access_log = open_access_log(settings.access_log, reactor)
    except OSError as e:
        raise SystemExit(f"{config.path}: proxy.access_log: cannot open: {e}")
    AccessLogService(access_log).setServiceParent(top)
    top.access_log = access_log
    pool = Pool(
        reactor,
        max_idle=settings.pool_max_idle,
        max_total=pool_total(settings),
        idle_timeout=settings.pool_idle_timeout,
        connect_timeout=settings.connect_timeout,
        max_head_size=settings.max_head_size,
        max_field_size=settings.max_field_size,
        max_header_count=settings.max_header_count,
    )
    PoolService(pool).setServiceParent(top)
    top.pool = pool
    from twisted_proxy.filters.events import Events

    top.bus = Events()
    filters = build_filters(config, reactor, top.bus)
    top.filters = filters
    FiltersService(top).setServiceParent(top)
    backends = build_backends(config, reactor, top)
    top.backends = backends
    caches = build_caches(config, reactor)
    top.caches = caches
    CachesService(top).setServiceParent(top)
    spool = build_spool(config)
    top.spool = spool
    if spool is not None:
        SpoolService(spool).setServiceParent(top)
    # stops after the listeners (a MultiService stops its children last first)
    limiter = ConnectionLimiter(settings.max_connections, reactor)
    limiter.setServiceParent(top)
    top.limiter = limiter
    for lconf in config.listeners:
        factory = make_listener_factory(
            lconf, config, reactor, pool, access_log, filters, top.own_addresses, backends, caches, spool
        )
        if isinstance(factory, (FrontFactory, TcpFactory)):
            factory.limiter = limiter
        stats_holder = getattr(factory, "context", None) or getattr(factory, "ctx", None)
        stats = getattr(stats_holder, "stats", None)
        if stats is not None:
            top.listener_stats.append((stats, factory))
        listener = ListenerService(
            lconf.name,
            lconf.endpoint,
            factory,
            reactor,
            top.listener_failed,
            # a forward listener's own address: requests for it would loop
            top.listening if lconf.kind == "forward" else None,
            tls=lconf.tls,
            backlog=lconf.backlog,
            limiter=limiter,
            inherited=inherited.get(lconf.name),
        )
        listener.setServiceParent(top)
        top.listeners[lconf.name] = listener
    # the last minute's latency window moves on
    from twisted_proxy.stats import SLOT_SECONDS

    timer(SLOT_SECONDS, top.rotate_stats, reactor).setServiceParent(top)
    if config.admin is not None:
        from twisted_proxy.admin.site import History, StatusSource, admin_site

        top.history = History(StatusSource(top), reactor)
        timer(History.INTERVAL, top.history.sample, reactor).setServiceParent(top)
        ListenerService(
            "admin",
            config.admin.endpoint,
            admin_site(top),
            reactor,
            top.listener_failed,
        ).setServiceParent(top)
    return top


def timer(interval: float, call: Callable[[], Any], reactor: Any) -> service.Service:
    """
    A service calling C{call} every C{interval} seconds on C{reactor}
    (a failure is logged, the timer goes on).
    """
    from twisted.application.internet import TimerService

    def safe() -> None:
        try:
            call()
        except Exception:
            log.failure("periodic {name} failed", name=getattr(call, "__name__", repr(call)))

    svc = TimerService(interval, safe)
    svc.clock = reactor
    return svc
