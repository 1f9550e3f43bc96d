# -*- test-case-name: tests.test_service -*-
"""
A L{Config} made into running services: one per listener, the access log,
and the upstream pool.

A listener that cannot bind stops the process with exit status 1 and one
clear line on standard error, never a running process with a listener
missing.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List, Optional, Set, Tuple

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.accesslog import AccessLog, AccessLogService, open_access_log
from twisted_proxy.exchange import FrontFactory, ListenerContext
from twisted_proxy.filters import filter_type, load_object
from twisted_proxy.forward import ForwardRouter
from twisted_proxy.reverse import ReverseRouter, Route
from twisted_proxy.tcp import TcpContext, TcpFactory
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.health import HealthChecker
from twisted_proxy.model import Config, ListenerConfig
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
    ) -> None:
        self.setName(name)
        self.endpoint_description = endpoint_description
        self.factory = factory
        self.reactor = reactor
        self.on_failure = on_failure
        self.on_listening = on_listening
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
        try:
            endpoint = endpoints.serverFromString(self.reactor, self.endpoint_description)
            d = endpoint.listen(self.factory)
        except Exception as e:
            self._failed(Failure(e))
            return
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: Any) -> None:
        self.port = port
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
        connections = getattr(self.factory, "connections", ())
        for proto in list(connections):
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.loseConnection()
        if port is not None:
            return port.stopListening()
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
        #: (ListenerStats, factory) per HTTP or tcp listener, for the admin
        self.listener_stats: List[Tuple[Any, Any]] = []
        self.failures: List[str] = []

    def startService(self) -> None:
        service.MultiService.startService(self)

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
    built = {}
    for name, fconf in config.filters.items():
        module = filter_type(fconf.type)
        if module is not None:
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
        backend = Backend(bconf, reactor)
        backends[name] = backend
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
) -> Any:
    """
    The protocol factory for one listener.
    """
    backends = backends or {}
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
        routes = [
            Route(
                backends[r.backend],
                r.host,
                r.path,
                [filters[name] for name in r.filters],
                r.strip_prefix,
                r.rewrite_prefix,
                r.preserve_host,
            )
            for r in lconf.routes
        ]
        reverse_router = ReverseRouter(
            routes,
            lconf.trusted_proxies,
            lconf.hide_headers,
            lconf.forwarded,
            add_via=lconf.anonymity != "elite",
        )
        return FrontFactory(
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
    )
    return FrontFactory(context)


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
    )
    PoolService(pool).setServiceParent(top)
    filters = build_filters(config, reactor)
    backends = build_backends(config, reactor, top)
    top.backends = backends
    for lconf in config.listeners:
        factory = make_listener_factory(
            lconf, config, reactor, pool, access_log, filters, top.own_addresses, backends
        )
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
            top.listening,
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
