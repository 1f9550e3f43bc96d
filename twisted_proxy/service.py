# -*- test-case-name: tests.test_service -*-
"""
A L{Config} made into running services: one per listener, the access log,
and the upstream pool.

A listener that cannot bind (or whose TLS certificates cannot be loaded)
stops the process with exit status 1 and one clear line on standard error,
never a running process with a listener missing.

SIGHUP re-reads the certificates of every TLS listener
(L{ProxyService.reload_certificates}); new handshakes use them, established
connections keep theirs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import weakref
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple

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
from twisted_proxy.model import Config, ListenerConfig, TLSConfig
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
        #: the listener's L{twisted_proxy.tls.ServerTLS}, once listening
        self.tls_server: Any = None
        self.port: Any = None
        self._started = False

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        self._listen()

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
            factory = wrap_server_factory(self.tls_server, factory, self.reactor)
        try:
            description = self.endpoint_description
            if self.backlog is not None:
                description = with_backlog(description, self.backlog)
            endpoint = endpoints.serverFromString(self.reactor, description)
            d = endpoint.listen(factory)
        except Exception as e:
            self._failed(Failure(e))
            return
        d.addCallbacks(self._listening, self._failed)

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

    def __init__(self, filters: dict) -> None:
        self.filters = filters

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

    def __init__(self, caches: dict) -> None:
        self.caches = caches

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

    def startService(self) -> None:
        service.MultiService.startService(self)
        self._install_sighup()

    def stopService(self) -> Any:
        self._remove_sighup()
        return service.MultiService.stopService(self)

    # certificates

    def _install_sighup(self) -> None:
        """
        SIGHUP reloads certificates: only under a real reactor, from the
        main thread (signal handlers can only be set there); the handler
        hands the work to the reactor thread.
        """
        from twisted.internet.base import ReactorBase

        if not hasattr(signal, "SIGHUP") or not isinstance(self.reactor, ReactorBase):
            return
        if threading.current_thread() is not threading.main_thread():
            return
        _sighup_services.add(self)
        _sighup_handler.install()

    def _remove_sighup(self) -> None:
        _sighup_services.discard(self)
        if not _sighup_services:
            _sighup_handler.remove()

    def _sighup(self) -> None:
        log.info("SIGHUP: reloading certificates")
        self.reload_certificates()

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
        """
        A listener could not bind: say so and stop the process with status 1.
        """
        self.failures.append(message)
        log.critical("{message}", message=message)
        try:
            sys.__stderr__.write(f"twisted-proxy: {message}\n")  # type: ignore[union-attr]
            sys.__stderr__.flush()  # type: ignore[union-attr]
        except Exception:
            pass
        exit_process = getattr(self, "exit_process", None)
        if exit_process is not None:
            exit_process(1)
            return
        if self.reactor.running:
            self.reactor.callLater(0, _hard_exit, self.reactor)
        else:
            self.reactor.callWhenRunning(_hard_exit, self.reactor)

    def listening(self, port: Any) -> None:
        address = port.getHost()
        host = getattr(address, "host", None)
        number = getattr(address, "port", None)
        if host is not None and number is not None:
            if host in ("0.0.0.0", "::"):
                self.own_addresses.add(("*", number))
            self.own_addresses.add((host, number))


class _SighupHandler:
    """
    The process's SIGHUP handler while any L{ProxyService} runs under a
    real reactor (one handler for all of them; the previous one comes back
    when the last stops).
    """

    installed = False
    previous: Any = None

    def install(self) -> None:
        if self.installed:
            return
        try:
            self.previous = signal.signal(signal.SIGHUP, self.on_sighup)
        except (ValueError, OSError):  # pragma: no cover
            return
        self.installed = True

    def remove(self) -> None:
        if not self.installed:
            return
        self.installed = False
        previous, self.previous = self.previous, None
        try:
            signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass

    def on_sighup(self, signum: int, frame: Any) -> None:
        # a signal handler runs between two bytecodes of the main thread:
        # the reload itself waits for the reactor
        for top in list(_sighup_services):
            top.reactor.callFromThread(top._sighup)


_sighup_services: "weakref.WeakSet[ProxyService]" = weakref.WeakSet()
_sighup_handler = _SighupHandler()


def _hard_exit(reactor: Any) -> None:
    """
    Stop with exit status 1 (twistd has no other way to return one).
    """
    try:
        reactor.stop()
    except Exception:
        pass
    os._exit(1)


def build_filters(config: Config, reactor: Any) -> dict:
    """
    Live filter objects for every C{[filter.NAME]} table.
    """
    import inspect

    from twisted_proxy.filters.events import Events

    built = {}
    bus = Events()  # rate limits and ip_block of this service talk here only
    for name, fconf in config.filters.items():
        module = filter_type(fconf.type)
        if module is not None:
            if "bus" in inspect.signature(module.build).parameters:
                built[name] = module.build(name, fconf.spec, reactor, bus=bus)
            else:
                built[name] = module.build(name, fconf.spec, reactor)
        else:
            factory = load_object(fconf.type)
            built[name] = factory(name, fconf.spec, reactor)
    return built


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
            HealthChecker(backend, bconf.health, reactor).setServiceParent(parent)
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


def make_service(config: Config, reactor: Any) -> ProxyService:
    """
    Everything C{config} describes, as one service for twistd.
    """
    top = ProxyService(config, reactor)
    settings = config.proxy
    try:
        access_log = open_access_log(settings.access_log, reactor)
    except OSError as e:
        raise SystemExit(f"{config.path}: proxy.access_log: cannot open: {e}")
    AccessLogService(access_log).setServiceParent(top)
    pool = Pool(
        reactor,
        max_idle=settings.pool_max_idle,
        idle_timeout=settings.pool_idle_timeout,
        connect_timeout=settings.connect_timeout,
        max_head_size=settings.max_head_size,
        max_field_size=settings.max_field_size,
        max_header_count=settings.max_header_count,
    )
    PoolService(pool).setServiceParent(top)
    filters = build_filters(config, reactor)
    FiltersService(filters).setServiceParent(top)
    backends = build_backends(config, reactor, top)
    top.backends = backends
    caches = build_caches(config, reactor)
    top.caches = caches
    CachesService(caches).setServiceParent(top)
    spool = build_spool(config)
    if spool is not None:
        SpoolService(spool).setServiceParent(top)
    # stops after the listeners (a MultiService stops its children last first)
    limiter = ConnectionLimiter(settings.max_connections, reactor)
    limiter.setServiceParent(top)
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
        ListenerService(
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
        ).setServiceParent(top)
    if config.admin is not None:
        from twisted_proxy.admin.site import admin_site

        ListenerService(
            "admin",
            config.admin.endpoint,
            admin_site(top),
            reactor,
            top.listener_failed,
        ).setServiceParent(top)
    return top
