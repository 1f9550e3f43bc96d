# -*- test-case-name: tests.test_config -*-
"""
One validation pass over a whole parsed TOML document: each top-level
table goes to the checks of its section.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from twisted_proxy.config.backends import BackendChecks
from twisted_proxy.config.caches import CacheChecks, folders_overlap
from twisted_proxy.config.checks import Checks
from twisted_proxy.config.filters import FilterChecks
from twisted_proxy.config.listeners import ListenerChecks, References
from twisted_proxy.config.proxy import ProxyChecks
from twisted_proxy.config.tls import TLSChecks
from twisted_proxy.model import (
    BackendConfig,
    CacheConfig,
    Config,
    FilterConfig,
    ListenerConfig,
    ProxySettings,
)

__all__ = ["DocumentChecks"]


class DocumentChecks(Checks):
    """
    The top level of a configuration: C{[proxy]}, C{[admin]},
    C{[filter.NAME]}, C{[backend.NAME]}, C{[cache.NAME]} and
    C{[[listener]]}; any other key is an error.
    """

    def parse(self, doc: Mapping[str, Any], path: str) -> Optional[Config]:
        """
        The L{Config} of C{doc}, or L{None} if any problem was found (every
        problem is in C{self.errors}).
        """
        errors, base_dir = self.errors, self.base_dir
        tls_checks = TLSChecks(errors, base_dir)
        proxy_checks = ProxyChecks(errors, base_dir)
        filter_checks = FilterChecks(errors, base_dir)
        backend_checks = BackendChecks(errors, base_dir, tls_checks)
        cache_checks = CacheChecks(errors, base_dir)
        # listeners may name filters and backends defined further down the file
        listener_checks = ListenerChecks(
            errors, base_dir, References(errors, base_dir, doc), tls_checks
        )
        proxy: Optional[ProxySettings] = None
        admin = None
        filters: Dict[str, FilterConfig] = {}
        backends: Dict[str, BackendConfig] = {}
        caches: Dict[str, CacheConfig] = {}
        listeners: List[ListenerConfig] = []
        for name, value in doc.items():
            if name == "proxy":
                table = self.table(value, "proxy")
                if table is not None:
                    proxy = proxy_checks.parse_proxy(table)
            elif name == "admin":
                table = self.table(value, "admin")
                if table is not None:
                    admin = proxy_checks.parse_admin(table)
            elif name == "filter":
                table = self.table(value, "filter")
                if table is not None:
                    filters = filter_checks.parse_filters(table)
            elif name == "backend":
                table = self.table(value, "backend")
                if table is not None:
                    backends = backend_checks.parse_backends(table)
            elif name == "cache":
                table = self.table(value, "cache")
                if table is not None:
                    caches = cache_checks.parse_caches(table)
            elif name == "listener":
                listeners = listener_checks.parse_listeners(value)
            else:
                self.errors.add(name, "unknown key")
        if "proxy" not in doc:
            # the defaults, with the spool folder next to the file
            proxy = proxy_checks.parse_proxy({})
        if proxy is not None and all(k != "proxy.spool_path" for k, _ in self.errors.items):
            self.spool_apart(proxy, caches)
        if "listener" not in doc:
            self.errors.add("listener", "at least one [[listener]] is required")
        if self.errors:
            return None
        assert proxy is not None
        return Config(
            path=path,
            proxy=proxy,
            admin=admin,
            listeners=tuple(listeners),
            filters=filters,
            backends=backends,
            caches=caches,
        )

    def spool_apart(self, proxy: ProxySettings, caches: Mapping[str, CacheConfig]) -> None:
        """
        No cache keeps its entries in the spool folder, inside it, or around
        it (the spool holds passing bodies only).
        """
        for name, cache in caches.items():
            if folders_overlap(cache.path, proxy.spool_path):
                self.errors.add(
                    f"cache.{name}.path",
                    f"{cache.path} overlaps proxy.spool_path ({proxy.spool_path});"
                    " a cache needs a folder of its own",
                )
