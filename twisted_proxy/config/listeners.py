# -*- test-case-name: tests.test_config -*-
"""
The C{[[listener]]} tables: name, kind and endpoint, the keys of each kind
(forward, reverse, tcp; a custom listener's table goes to its factory),
reverse routes (C{[[listener.route]]}) and forward parent proxies.

A listener or route may name a C{[filter.NAME]}, C{[backend.NAME]} or
C{[cache.NAME]} defined anywhere in the file: L{References} reads those
names from the raw document before any table is checked.

Forward and reverse listeners and reverse routes may name a cache
(C{cache}) and bound the bodies the proxy holds for them
(C{response_buffer}, C{request_buffer}); tcp listeners relay bytes and take
none of these.
"""

from __future__ import annotations

import os
from typing import AbstractSet, Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from twisted_proxy.config.backends import server_kind
from twisted_proxy.config.checks import TOKEN, Checks, is_int, type_name
from twisted_proxy.config.endpoints import split_endpoint, ssl_as_tcp
from twisted_proxy.config.tls import TLSChecks
from twisted_proxy.domains import normalize_domain_pattern, validate_domain_pattern
from twisted_proxy.filters import ErrorList
from twisted_proxy.loading import load_object
from twisted_proxy.model import DEFAULT_ALLOW_CLIENTS, ListenerConfig, ParentProxy, RouteConfig

__all__ = [
    "ANONYMITY_LEVELS",
    "LISTENER_KINDS",
    "ListenerChecks",
    "References",
    "RouteChecks",
    "domain_problem",
]

LISTENER_KINDS: Tuple[str, ...] = ("forward", "reverse", "tcp", "custom")
ANONYMITY_LEVELS: Tuple[str, ...] = ("transparent", "anonymous", "elite")

#: The keys every listener has.
LISTENER_COMMON_KEYS: Tuple[str, ...] = ("name", "kind", "endpoint")
#: The keys each kind of listener takes besides name, kind and endpoint.
KIND_KEYS: Mapping[str, FrozenSet[str]] = {
    "forward": frozenset(
        {
            "allow_clients",
            "anonymity",
            "connect_ports",
            "filters",
            "parents",
            "tls",
            "redirect_to_https",
            "cache",
            "response_buffer",
            "request_buffer",
        }
    ),
    "reverse": frozenset(
        {
            "allow_clients",
            "anonymity",
            "filters",
            "trusted_proxies",
            "hide_headers",
            "forwarded",
            "route",
            "tls",
            "redirect_to_https",
            "cache",
            "response_buffer",
            "request_buffer",
        }
    ),
    "tcp": frozenset({"allow_clients", "filters", "backend"}),
}
#: Keys of HTTP listeners a tcp listener refuses, and why.
NOT_ON_TCP: Mapping[str, str] = {
    "cache": "not on a tcp listener (only forward and reverse listeners use a cache)",
    "response_buffer": (
        "not on a tcp listener (only forward and reverse listeners buffer HTTP bodies)"
    ),
    "request_buffer": (
        "not on a tcp listener (only forward and reverse listeners buffer HTTP bodies)"
    ),
}
#: The keys that do nothing on a listener with C{redirect_to_https}.
UNUSED_WHEN_REDIRECTING: Tuple[str, ...] = (
    "route",
    "filters",
    "parents",
    "cache",
    "response_buffer",
    "request_buffer",
)
#: The body buffer keys of listeners and routes.
BUFFER_KEYS: Tuple[str, ...] = ("response_buffer", "request_buffer")
#: TOML key -> L{ListenerConfig} attribute, where they differ.
LISTENER_ATTRS: Mapping[str, str] = {"route": "routes"}
#: The largest C{backlog} accepted.
MAX_BACKLOG = 65535
#: The keys of a C{parents} entry (all required).
PARENT_KEYS: Tuple[str, ...] = ("domains", "proxy")


def domain_problem(domain: str) -> Optional[str]:
    """
    Why C{domain} is not a domain pattern (C{"example.com"},
    C{"*.example.com"} or C{"docs.*"}), or L{None}.
    """
    if domain.rstrip(".").endswith(".*"):
        return validate_domain_pattern(domain)
    name = domain[2:] if domain.startswith("*.") else domain
    name = name.rstrip(".")
    if not name:
        return f"{domain!r} is not a domain name"
    for label in name.split("."):
        if not label or len(label) > 63:
            return f"{domain!r} is not a domain name"
        for ch in label:
            if not (ch.isalnum() or ch in "-_"):
                return f"{domain!r} is not a domain name"
    return None


class References(Checks):
    """
    What listeners and routes may refer to, read from the raw document
    before validation so that references work whatever the table order,
    and the checks of those references.

    @ivar filters: the names of the C{[filter.NAME]} tables.
    @ivar backends: the kinds of each C{[backend.NAME]}'s servers (a set of
        C{"http"} and C{"tcp"}; empty when none could be read).
    @ivar caches: the names of the C{[cache.NAME]} tables.
    """

    def __init__(self, errors: ErrorList, base_dir: str, doc: Mapping[str, Any]) -> None:
        super().__init__(errors, base_dir)
        raw_filters = doc.get("filter")
        self.filters: Sequence[str] = list(raw_filters) if isinstance(raw_filters, dict) else []
        raw_caches = doc.get("cache")
        self.caches: Sequence[str] = list(raw_caches) if isinstance(raw_caches, dict) else []
        self.backends: Dict[str, AbstractSet[str]] = {}
        raw_backends = doc.get("backend")
        if isinstance(raw_backends, dict):
            for name, table in raw_backends.items():
                kinds = set()
                servers = table.get("servers") if isinstance(table, dict) else None
                if isinstance(servers, list):
                    for server in servers:
                        if isinstance(server, dict):
                            kind = server_kind(server.get("url"))
                            if kind is not None:
                                kinds.add(kind)
                self.backends[name] = kinds

    def filter_refs(self, value: Any, key: str) -> Tuple[str, ...]:
        """
        A list of C{[filter.NAME]} names.
        """
        out = []
        for item_key, name in self.string_list(value, key) or ():
            if name not in self.filters:
                self.errors.add(item_key, f"unknown filter {name!r}")
            else:
                out.append(name)
        return tuple(out)

    def cache_ref(self, value: Any, key: str, route: bool = False) -> Any:
        """
        The name of a C{[cache.NAME]}; on a route, C{false} (no cache) too.
        """
        if route and isinstance(value, bool):
            if value:
                self.errors.add(
                    key,
                    "true is not allowed: name a cache (cache = \"NAME\"), or write"
                    " false for no cache; leave the key out to use the listener's",
                )
                return None
            return False
        if not isinstance(value, str):
            expected = "a cache name or false" if route else "a cache name"
            self.errors.add(key, f"must be {expected} (a string), not {type_name(value)}")
            return None
        name = self.string(value, key)
        if name is None:
            return None
        if name not in self.caches:
            self.errors.add(key, f"unknown cache {name!r}")
            return None
        return name

    def backend_ref(self, value: Any, key: str, kind: str) -> Optional[str]:
        """
        The name of a C{[backend.NAME]} whose servers suit a reverse route
        (C{kind="http"}) or a tcp listener (C{kind="tcp"}).
        """
        name = self.string(value, key)
        if name is None:
            return None
        if name not in self.backends:
            self.errors.add(key, f"unknown backend {name!r}")
            return None
        kinds = self.backends[name]
        if kind == "http" and kinds == {"tcp"}:
            self.errors.add(
                key,
                f"backend {name!r} has tcp:// servers; a reverse route needs"
                " http:// or https:// servers",
            )
            return None
        if kind == "tcp" and kinds == {"http"}:
            self.errors.add(
                key,
                f"backend {name!r} has http(s):// servers; a tcp listener needs tcp:// servers",
            )
            return None
        return name


class RouteChecks(Checks):
    """
    A reverse listener's C{[[listener.route]]} tables.

    @ivar refs: the filters and backends a route may name.
    """

    def __init__(self, errors: ErrorList, base_dir: str, refs: References) -> None:
        super().__init__(errors, base_dir)
        self.refs = refs

    def routes(self, value: Any, key: str) -> Tuple[RouteConfig, ...]:
        if not isinstance(value, list):
            self.errors.add(
                key,
                f"must be an array of tables ([[listener.route]]), not {type_name(value)}",
            )
            return ()
        if not value:
            self.errors.add(key, "at least one [[listener.route]] is required")
        out = []
        seen: Dict[Tuple[Optional[str], str], int] = {}
        for i, item in enumerate(value):
            route = self.route(item, f"{key}[{i}]")
            if route is None:
                continue
            where = (route.host, route.path)
            if where in seen:
                host = "any host" if route.host is None else f"host {route.host!r}"
                self.errors.add(
                    f"{key}[{i}]",
                    f"duplicate route ({host}, path {route.path!r}; also route[{seen[where]}])",
                )
            else:
                seen[where] = i
            out.append(route)
        return tuple(out)

    def route(self, value: Any, key: str) -> Optional[RouteConfig]:
        table = self.table(value, key)
        if table is None:
            return None
        before = len(self.errors)
        values: Dict[str, Any] = {}
        for name, item in table.items():
            item_key = f"{key}.{name}"
            if name == "host":
                values["host"] = self.route_host(item, item_key)
            elif name in ("path", "rewrite_prefix"):
                values[name] = self.path_prefix(item, item_key)
            elif name == "backend":
                values["backend"] = self.refs.backend_ref(item, item_key, "http")
            elif name == "filters":
                values["filters"] = self.refs.filter_refs(item, item_key)
            elif name in ("strip_prefix", "preserve_host"):
                values[name] = self.boolean(item, item_key)
            elif name == "cache":
                values["cache"] = self.refs.cache_ref(item, item_key, route=True)
            elif name in BUFFER_KEYS:
                values[name] = self.size(item, item_key, 0)
            else:
                self.errors.add(item_key, "unknown key")
        if "backend" not in table:
            self.errors.add(f"{key}.backend", "required key is missing")
        if table.get("strip_prefix") is True and "rewrite_prefix" in table:
            self.errors.add(
                f"{key}.rewrite_prefix",
                "cannot be combined with strip_prefix = true"
                " (rewrite_prefix already replaces the path prefix)",
            )
        if len(self.errors) > before:
            return None
        return RouteConfig(**values)

    def route_host(self, value: Any, key: str) -> Optional[str]:
        """
        A route's host: exact or C{"*.example.com"}, no port; normalized
        (lower case, no trailing dot, IDNA). Not C{"docs.*"}: routes are
        indexed by host name and its suffixes.
        """
        host = self.string(value, key)
        if host is None:
            return None
        problem = validate_domain_pattern(host)
        if problem is not None:
            self.errors.add(key, problem)
            return None
        canonical = normalize_domain_pattern(host)
        if canonical.endswith(".*"):
            self.errors.add(
                key,
                f"{host!r}: a route's host is exact or '*.example.com';"
                " a first-label pattern like 'docs.*' is for domain lists only",
            )
            return None
        return canonical


class ListenerChecks(Checks):
    """
    The C{[[listener]]} tables.

    @ivar refs: the filters and backends a listener may name.
    @ivar tls_checks: checks a listener's C{tls} table.
    @ivar route_checks: checks a reverse listener's routes.
    """

    def __init__(
        self, errors: ErrorList, base_dir: str, refs: References, tls_checks: TLSChecks
    ) -> None:
        super().__init__(errors, base_dir)
        self.refs = refs
        self.tls_checks = tls_checks
        self.route_checks = RouteChecks(errors, base_dir, refs)

    def parse_listeners(self, raw: Any) -> List[ListenerConfig]:
        if not isinstance(raw, list):
            self.errors.add(
                "listener", f"must be an array of tables ([[listener]]), not {type_name(raw)}"
            )
            return []
        if not raw:
            self.errors.add("listener", "at least one [[listener]] is required")
        listeners = []
        seen: Dict[str, int] = {}
        for i, item in enumerate(raw):
            key = f"listener[{i}]"
            table = self.table(item, key)
            if table is None:
                continue
            listener = self.parse_listener(table, key)
            name = table.get("name")
            if isinstance(name, str) and name:
                if name in seen:
                    self.errors.add(
                        f"{key}.name",
                        f"duplicate listener name {name!r} (also listener[{seen[name]}])",
                    )
                else:
                    seen[name] = i
            if listener is not None:
                listeners.append(listener)
        return listeners

    def parse_listener(self, table: Mapping[str, Any], key: str) -> Optional[ListenerConfig]:
        before = len(self.errors)
        kind: Optional[str] = None
        kind_problem: Optional[str] = None
        raw_kind = table.get("kind")
        if isinstance(raw_kind, str):
            if raw_kind not in LISTENER_KINDS:
                kind_problem = (
                    f"unknown kind {raw_kind!r} (expected forward, reverse, tcp or custom)"
                )
            else:
                kind = raw_kind
        values: Dict[str, Any] = {}
        options: Dict[str, Any] = {}
        for name, value in table.items():
            item_key = f"{key}.{name}"
            if name == "kind":
                if kind_problem is not None:
                    self.errors.add(item_key, kind_problem)
                elif kind is None:
                    self.string(value, item_key)
            elif name == "name":
                values["name"] = self.string(value, item_key)
            elif name == "endpoint":
                values["endpoint"] = self.endpoint(value, item_key)
            elif name == "backlog":
                values["backlog"] = self.backlog(value, item_key, table.get("endpoint"))
            elif kind == "custom":
                if name == "factory":
                    values["factory"] = self.factory(value, item_key)
                else:
                    # handed to the factory unvalidated
                    options[name] = value
            elif kind is not None:
                if name in KIND_KEYS[kind]:
                    attr = LISTENER_ATTRS.get(name, name)
                    values[attr] = self.listener_value(kind, name, value, item_key)
                elif kind == "tcp" and name in NOT_ON_TCP:
                    self.errors.add(item_key, NOT_ON_TCP[name])
                else:
                    self.errors.add(item_key, "unknown key")
        required = LISTENER_COMMON_KEYS + {"custom": ("factory",), "tcp": ("backend",)}.get(
            kind or "", ()
        )
        for name in required:
            if name not in table:
                self.errors.add(f"{key}.{name}", "required key is missing")
        raw_redirect = table.get("redirect_to_https", False)
        redirecting = raw_redirect is True or (
            is_int(raw_redirect) and 1 <= raw_redirect <= 65535
        )
        if kind == "reverse" and "route" not in table and not redirecting:
            self.errors.add(f"{key}.route", "at least one [[listener.route]] is required")
        if kind in ("forward", "reverse"):
            self.tls_listener_rules(table, key, kind, redirecting)
        if len(self.errors) > before or kind is None:
            return None
        if kind == "forward" and "allow_clients" not in values:
            values["allow_clients"] = self.networks(
                list(DEFAULT_ALLOW_CLIENTS), f"{key}.allow_clients"
            )
        if kind == "custom":
            values["options"] = options
        if kind in ("forward", "reverse") and "tls" not in values:
            self.ssl_endpoint_as_tls(values, f"{key}.endpoint")
            if len(self.errors) > before:
                return None
        return ListenerConfig(kind=kind, **values)

    def ssl_endpoint_as_tls(self, values: Dict[str, Any], key: str) -> None:
        """
        An HTTP listener on a plain C{ssl:} endpoint (port, interface,
        backlog, C{privateKey}, C{certKey}) listens on C{tcp:} with the
        proxy's own TLS, so that the same protocols, ciphers and groups
        apply as with a C{tls} table. The files are as Twisted reads them:
        relative to the working folder.
        """
        endpoint = values.get("endpoint")
        if not isinstance(endpoint, str):
            return
        plain = ssl_as_tcp(endpoint)
        if plain is None:
            return
        tcp, cert, private_key = plain
        tls = self.tls_checks.listener_tls(
            {"certificates": [{"cert": os.path.abspath(cert), "key": os.path.abspath(private_key)}]},
            key,
        )
        if tls is not None:
            values["endpoint"] = tcp
            values["tls"] = tls

    def listener_value(self, kind: str, name: str, value: Any, key: str) -> Any:
        """
        The validated value of the key C{name} of a forward, reverse or tcp
        listener.
        """
        if name == "allow_clients":
            if kind != "forward" and value == []:
                # absent means any client; an empty list would mean none
                self.errors.add(
                    key,
                    "must not be empty (it would refuse every client);"
                    " leave the key out to allow any",
                )
                return ()
            return self.networks(value, key)
        if name == "anonymity":
            level = self.string(value, key)
            if level is not None and level not in ANONYMITY_LEVELS:
                self.errors.add(
                    key,
                    f"unknown anonymity {level!r} (expected transparent, anonymous or elite)",
                )
            return level
        if name == "connect_ports":
            return self.ports(value, key)
        if name == "filters":
            return self.refs.filter_refs(value, key)
        if name == "parents":
            return self.parents(value, key)
        if name == "trusted_proxies":
            return self.networks(value, key)
        if name == "hide_headers":
            return self.header_names(value, key)
        if name == "forwarded":
            return self.boolean(value, key)
        if name == "route":
            return self.route_checks.routes(value, key)
        if name == "tls":
            return self.tls_checks.listener_tls(value, key)
        if name == "redirect_to_https":
            return self.redirect_to_https(value, key)
        if name == "cache":
            return self.refs.cache_ref(value, key)
        if name in BUFFER_KEYS:
            return self.size(value, key, 0)
        assert name == "backend", name
        return self.refs.backend_ref(value, key, "tcp")

    def tls_listener_rules(
        self, table: Mapping[str, Any], key: str, kind: str, redirecting: bool
    ) -> None:
        """
        How C{tls}, C{redirect_to_https} and the endpoint go together.
        """
        endpoint = table.get("endpoint")
        ssl_endpoint = isinstance(endpoint, str) and endpoint.strip().lower().startswith("ssl:")
        if "tls" in table and ssl_endpoint:
            self.errors.add(
                f"{key}.tls",
                "cannot be combined with an ssl: endpoint (use a tcp: endpoint with tls,"
                " or an ssl: endpoint alone)",
            )
        if not redirecting:
            return
        if "tls" in table or ssl_endpoint:
            self.errors.add(
                f"{key}.redirect_to_https",
                "only on a plain listener (this one speaks TLS itself)",
            )
        for name in UNUSED_WHEN_REDIRECTING:
            if name in table and name in KIND_KEYS[kind]:
                self.errors.add(
                    f"{key}.{name}",
                    "not used on a listener with redirect_to_https"
                    " (every request is redirected)",
                )

    def backlog(self, value: Any, key: str, endpoint: Any) -> Optional[int]:
        """
        The listen queue: an integer from 1 to 65535 (the kernel caps it at
        C{net.core.somaxconn}), not also given in the endpoint string.
        """
        if not is_int(value):
            self.errors.add(key, f"must be an integer, not {type_name(value)}")
            return None
        if not 1 <= value <= MAX_BACKLOG:
            self.errors.add(key, f"must be an integer from 1 to {MAX_BACKLOG}, not {value!r}")
            return None
        if isinstance(endpoint, str):
            try:
                given = split_endpoint(endpoint)[1].get("backlog")
            except ValueError:
                given = None  # the endpoint's own error says why
            if given is not None:
                self.errors.add(
                    key, f"the endpoint sets backlog={given} already (keep one of the two)"
                )
                return None
        return int(value)

    def redirect_to_https(self, value: Any, key: str) -> Optional[int]:
        """
        A port (C{8443}), C{true} (443) or C{false} (off).
        """
        if isinstance(value, bool):
            return 443 if value else None
        if not is_int(value):
            self.errors.add(
                key, f"must be a port number or true/false, not {type_name(value)}"
            )
            return None
        if not 1 <= value <= 65535:
            self.errors.add(key, f"port {value} is out of range 1-65535")
            return None
        return int(value)

    def factory(self, value: Any, key: str) -> Optional[str]:
        """
        A custom listener's factory: the dotted path of an importable
        callable.
        """
        dotted = self.string(value, key)
        if dotted is None:
            return None
        try:
            factory = load_object(dotted)
        except ValueError as e:
            self.errors.add(key, f"cannot load factory: {e}")
            return None
        if not callable(factory):
            self.errors.add(key, f"{dotted!r} is not callable")
            return None
        return dotted

    def ports(self, value: Any, key: str) -> Tuple[int, ...]:
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of port numbers, not {type_name(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            if not is_int(item):
                self.errors.add(f"{key}[{i}]", f"must be a port number, not {type_name(item)}")
            elif not 1 <= item <= 65535:
                self.errors.add(f"{key}[{i}]", f"port {item} is out of range 1-65535")
            else:
                out.append(item)
        return tuple(out)

    def parents(self, value: Any, key: str) -> Tuple[ParentProxy, ...]:
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of tables, not {type_name(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            parent = self.parent(item, f"{key}[{i}]")
            if parent is not None:
                out.append(parent)
        return tuple(out)

    def parent(self, value: Any, key: str) -> Optional[ParentProxy]:
        table = self.table(value, key)
        if table is None:
            return None
        before = len(self.errors)
        domains: List[str] = []
        address: Optional[Tuple[str, int]] = None
        for name, item in table.items():
            item_key = f"{key}.{name}"
            if name == "domains":
                domains = self.domains(item, item_key)
            elif name == "proxy":
                url = self.string(item, item_key)
                if url is not None:
                    address = self.parent_url(url, item_key)
            else:
                self.errors.add(item_key, "unknown key")
        for name in PARENT_KEYS:
            if name not in table:
                self.errors.add(f"{key}.{name}", "required key is missing")
        if len(self.errors) > before or address is None:
            return None
        return ParentProxy(domains=tuple(domains), host=address[0], port=address[1])

    def domains(self, value: Any, key: str) -> List[str]:
        """
        A non-empty list of domain patterns, lower-cased.
        """
        items = self.string_list(value, key)
        if items is None:
            return []
        if not value:
            self.errors.add(key, "must not be empty")
        out = []
        for item_key, domain in items:
            problem = domain_problem(domain)
            if problem is not None:
                self.errors.add(item_key, problem)
            else:
                out.append(domain.lower().rstrip("."))
        return out

    def parent_url(self, url: str, key: str) -> Optional[Tuple[str, int]]:
        """
        The host and port of a parent proxy URL C{"http://host[:port]"}
        (port 80 when absent).
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as e:
            self.errors.add(key, f"invalid proxy URL {url!r}: {e}")
            return None
        if parts.scheme.lower() != "http":
            self.errors.add(
                key, f"proxy URL {url!r} must use the http scheme ('http://host:port')"
            )
            return None
        if not parts.hostname:
            self.errors.add(key, f"proxy URL {url!r} has no host")
            return None
        if parts.username is not None or parts.password is not None:
            self.errors.add(key, f"proxy URL {url!r}: credentials are not supported")
            return None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            self.errors.add(key, f"proxy URL {url!r} must be 'http://host:port' only")
            return None
        if port == 0:
            self.errors.add(key, f"proxy URL {url!r}: port 0 is not valid")
            return None
        return parts.hostname, 80 if port is None else port

    def header_names(self, value: Any, key: str) -> Tuple[str, ...]:
        """
        A list of HTTP header names (may be empty), as written.
        """
        out = []
        for item_key, name in self.string_list(value, key) or ():
            if not TOKEN.match(name):
                self.errors.add(item_key, f"{name!r} is not a valid header name")
            else:
                out.append(name)
        return tuple(out)
