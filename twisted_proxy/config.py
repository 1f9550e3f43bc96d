# -*- test-case-name: tests.test_config -*-
"""
TOML configuration file to frozen L{twisted_proxy.model} objects.

Every problem is collected (never only the first) as a C{(key_path,
message)} pair, where C{key_path} is the TOML path of the offending value
(C{listener[1].endpoint}, C{proxy.connect_timeout},
C{filter.office-hours.during}); L{ConfigError.lines} renders them as
C{"FILE: key.path: message"}, the format of C{twistd proxy --check}.

Cross-references are checked too: a listener or route may only name a
C{[filter.NAME]} or C{[backend.NAME]} that exists (anywhere in the file),
reverse routes need a backend of C{http://}/C{https://} servers and tcp
listeners one of C{tcp://} servers.

No configuration mistake ever surfaces as a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import sys
from typing import (
    AbstractSet,
    Any,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import urlsplit

from twisted_proxy.domains import normalize_domain_pattern, validate_domain_pattern
from twisted_proxy.filters import ErrorList, builtin_type_names, filter_type, load_object
from twisted_proxy.model import (
    DEFAULT_ALLOW_CLIENTS,
    AdminConfig,
    BackendConfig,
    Config,
    FilterConfig,
    HealthConfig,
    IPNetwork,
    ListenerConfig,
    ParentProxy,
    ProxySettings,
    RouteConfig,
    ServerConfig,
    CertificateConfig,
    TLSConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


__all__ = [
    "ConfigError",
    "DEFAULT_PATH",
    "default_config",
    "load_config",
    "parse_config",
]

#: The C{path} of the embedded default configuration.
DEFAULT_PATH = "<default>"

LISTENER_KINDS: Tuple[str, ...] = ("forward", "reverse", "tcp", "custom")
ANONYMITY_LEVELS: Tuple[str, ...] = ("transparent", "anonymous", "elite")
#: The built-in C{balance} names; anything with a C{":"} or C{"."} is the
#: dotted path of a custom balancer.
BALANCERS: Tuple[str, ...] = ("round_robin", "least_conn", "random_two", "hash")
#: Server URL schemes, and the kind of backend each makes.
SERVER_SCHEMES: Mapping[str, str] = {"http": "http", "https": "http", "tcp": "tcp"}

_LISTENER_COMMON_KEYS: Tuple[str, ...] = ("name", "kind", "endpoint")
# the keys each kind of listener takes besides name, kind and endpoint
_KIND_KEYS: Mapping[str, FrozenSet[str]] = {
    "forward": frozenset(
        {
            "allow_clients",
            "anonymity",
            "connect_ports",
            "filters",
            "parents",
            "tls",
            "redirect_to_https",
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
        }
    ),
    "tcp": frozenset({"allow_clients", "filters", "backend"}),
}
# TOML key -> ListenerConfig attribute, where they differ
_LISTENER_ATTRS: Mapping[str, str] = {"route": "routes"}
_PARENT_KEYS: Tuple[str, ...] = ("domains", "proxy")
_SERVER_KEYS: Tuple[str, ...] = ("url", "weight", "max_connections", "backup")
# keys of a server entry that only https:// servers take
_SERVER_TLS_KEYS: Tuple[str, ...] = ("ca", "server_name", "verify", "client_cert", "client_key")
_TLS_KEYS: Tuple[str, ...] = (
    "certificates",
    "min_version",
    "ciphers",
    "client_ca",
    "verify_client",
    "client_subject_header",
)
_HEALTH_KEYS: Tuple[str, ...] = ("path", "interval", "timeout", "rise", "fall", "expect")
# RFC 9110 token: header names (and cookie names, RFC 6265)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")

# [proxy] keys by kind of value
_PROXY_SECONDS: Tuple[str, ...] = (
    "connect_timeout",
    "idle_timeout",
    "header_timeout",
    "first_byte_timeout",
    "tunnel_idle_timeout",
    "pool_idle_timeout",
)
_MIN_HEAD_SIZE = 1024


class ConfigError(Exception):
    """
    A configuration file has one or more problems.

    @ivar errors: C{(key_path, message)} pairs, in the order found.
    @ivar path: the configuration file's name as the user gave it.
    """

    def __init__(self, errors: Sequence[Tuple[str, str]], path: str) -> None:
        self.errors: List[Tuple[str, str]] = list(errors)
        self.path = path
        super().__init__("\n".join(self.lines()))

    def lines(self) -> List[str]:
        """
        One C{"FILE: key.path: message"} line per problem (C{"FILE:
        message"} when a problem concerns the whole file).
        """
        out = []
        for key, message in self.errors:
            if key:
                out.append(f"{self.path}: {key}: {message}")
            else:
                out.append(f"{self.path}: {message}")
        return out


def default_config() -> Config:
    """
    The embedded configuration used when no C{--config} is given: a forward
    proxy named C{"default"} on 127.0.0.1:3128 serving loopback clients only,
    access log on stdout.
    """
    return Config(
        path=DEFAULT_PATH,
        proxy=ProxySettings(access_log="-"),
        admin=None,
        listeners=(
            ListenerConfig(
                name="default",
                kind="forward",
                endpoint="tcp:3128:interface=127.0.0.1",
                allow_clients=tuple(
                    ipaddress.ip_network(c) for c in ("127.0.0.0/8", "::1/128")
                ),
            ),
        ),
        filters={},
    )


def load_config(path: str) -> Config:
    """
    Read and validate the TOML configuration file at C{path}.

    Relative file names inside it are resolved against its directory.

    @raise ConfigError: listing every problem found.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([("file", e.strerror or str(e))], path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([("file", f"not UTF-8 text: {e}")], path) from None
    return parse_config(text, path, os.path.dirname(os.path.abspath(path)))


def parse_config(
    text_or_dict: Union[str, Mapping[str, Any]], path: str, base_dir: str
) -> Config:
    """
    Validate a configuration given as TOML text or as an already parsed
    mapping.

    @param path: the file name used in error lines and stored in the
        L{Config}.
    @param base_dir: the directory relative file names are resolved against.

    @raise ConfigError: listing every problem found.
    """
    if isinstance(text_or_dict, str):
        try:
            doc: Mapping[str, Any] = tomllib.loads(text_or_dict)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([("toml", str(e))], path) from None
    else:
        doc = text_or_dict
    parser = _Parser(base_dir)
    config = parser.parse(doc, path)
    if parser.errors:
        raise ConfigError(parser.errors.items, path)
    assert config is not None
    return config


# --- helpers ---------------------------------------------------------------


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not isinstance(
        value, bool
    )


def _check_systemd(description: str) -> None:
    """
    Check a C{systemd:} endpoint's syntax without looking for the inherited
    descriptors (they exist only when systemd starts the process, not when
    C{--check} runs).
    """
    from twisted.internet.endpoints import _parse

    args, kw = _parse(description)
    unknown = set(kw) - {"domain", "index", "name"}
    if unknown:
        raise ValueError(f"unknown systemd option {sorted(unknown)[0]!r}")
    rest = list(args[1:])
    if "domain" in kw:
        rest.insert(0, kw["domain"])
    if len(rest) != 1:
        raise ValueError("systemd endpoints take one domain, e.g. 'systemd:domain=INET:index=0'")
    domain = rest[0]
    if not hasattr(socket, "AF_" + domain):
        raise ValueError(f"unknown address family {domain!r} (INET, INET6 or UNIX)")
    if ("index" in kw) == ("name" in kw):
        raise ValueError("specify exactly one of descriptor index or name")
    if "index" in kw:
        int(kw["index"])


def _endpoint_problem(description: str) -> Optional[str]:
    """
    Why C{description} is not a valid server endpoint string, or L{None}.

    The endpoint is built against a memory reactor: nothing listens.
    """
    from twisted.internet.endpoints import _parse
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    if not description.strip():
        return "must not be empty"
    prefix = description.split(":", 1)[0].strip().lower()
    try:
        args, kw = _parse(description)
        if prefix in ("tcp", "tcp6", "ssl"):
            port = args[1] if len(args) > 1 else kw.get("port")
            if port is None:
                return f"invalid endpoint {description!r}: no port (e.g. '{prefix}:3128')"
            if not port.strip().isdigit():
                return f"invalid endpoint {description!r}: port {port!r} is not a number"
        elif prefix == "unix":
            address = args[1] if len(args) > 1 else kw.get("address", "")
            if not address.strip():
                return (
                    f"invalid endpoint {description!r}: no socket path "
                    f"(e.g. 'unix:/run/proxy.sock')"
                )
        elif prefix == "systemd":
            _check_systemd(description)
            return None
        endpoint = serverFromString(MemoryReactor(), description)
    except Exception as e:
        reason = str(e) or type(e).__name__
        if isinstance(e, TypeError):
            reason = f"bad arguments for {prefix!r} endpoint: {reason}"
        return f"invalid endpoint {description!r}: {reason}"
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        return f"invalid endpoint {description!r}: port {port} is out of range 0-65535"
    return None


def _domain_problem(domain: str) -> Optional[str]:
    """
    Why C{domain} is not a domain pattern (C{"example.com"} or
    C{"*.example.com"}), or L{None}.
    """
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


def _server_kind(url: Any) -> Optional[str]:
    """
    C{"http"} or C{"tcp"}: the kind of backend a server URL belongs to, or
    L{None} if it has no known scheme (the backend's own check reports it).
    """
    if not isinstance(url, str):
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return SERVER_SCHEMES.get(scheme)


class _Refs:
    """
    What listeners and routes may refer to, read from the raw document
    before validation so that references work whatever the table order.

    @ivar filters: the names of the C{[filter.NAME]} tables.
    @ivar backends: the kinds of each C{[backend.NAME]}'s servers (a set of
        C{"http"} and C{"tcp"}; empty when none could be read).
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        raw_filters = doc.get("filter")
        self.filters: Sequence[str] = list(raw_filters) if isinstance(raw_filters, dict) else []
        self.backends: Dict[str, AbstractSet[str]] = {}
        raw_backends = doc.get("backend")
        if isinstance(raw_backends, dict):
            for name, table in raw_backends.items():
                kinds = set()
                servers = table.get("servers") if isinstance(table, dict) else None
                if isinstance(servers, list):
                    for server in servers:
                        if isinstance(server, dict):
                            kind = _server_kind(server.get("url"))
                            if kind is not None:
                                kinds.add(kind)
                self.backends[name] = kinds


# --- the parser ------------------------------------------------------------


class _Parser:
    """
    One validation pass over a parsed TOML document.
    """

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.errors = ErrorList()

    # generic checks

    def table(self, value: Any, key: str) -> Optional[Mapping[str, Any]]:
        if not isinstance(value, dict):
            self.errors.add(key, f"must be a table, not {_type_name(value)}")
            return None
        return value

    def string(self, value: Any, key: str, allow_empty: bool = False) -> Optional[str]:
        if not isinstance(value, str):
            self.errors.add(key, f"must be a string, not {_type_name(value)}")
            return None
        if not allow_empty and not value.strip():
            self.errors.add(key, "must not be empty")
            return None
        return value

    def string_list(self, value: Any, key: str) -> Optional[Iterator[Tuple[str, str]]]:
        """
        The strings of a list as C{(item_key, value)} pairs, reporting an
        item that is not a non-empty string when iteration reaches it (so
        problems come in index order); L{None} if C{value} is not a list.
        """
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of strings, not {_type_name(value)}")
            return None
        return self._strings(value, key)

    def _strings(self, value: List[Any], key: str) -> Iterator[Tuple[str, str]]:
        for i, item in enumerate(value):
            s = self.string(item, f"{key}[{i}]")
            if s is not None:
                yield f"{key}[{i}]", s

    def seconds(self, value: Any, key: str) -> Optional[float]:
        if not _is_number(value):
            self.errors.add(key, f"must be a number of seconds, not {_type_name(value)}")
            return None
        if not math.isfinite(value) or value <= 0:
            self.errors.add(key, f"must be a number of seconds > 0, not {value!r}")
            return None
        return float(value)

    def integer(self, value: Any, key: str, minimum: int) -> Optional[int]:
        if not _is_int(value):
            self.errors.add(key, f"must be an integer, not {_type_name(value)}")
            return None
        if value < minimum:
            self.errors.add(key, f"must be an integer >= {minimum}, not {value!r}")
            return None
        return int(value)

    def boolean(self, value: Any, key: str) -> Optional[bool]:
        if not isinstance(value, bool):
            self.errors.add(key, f"must be true or false, not {_type_name(value)}")
            return None
        return value

    def path_prefix(self, value: Any, key: str) -> Optional[str]:
        """
        A URL path (prefix): starts with C{"/"}, no spaces, no query or
        fragment.
        """
        text = self.string(value, key)
        if text is None:
            return None
        if not text.startswith("/"):
            self.errors.add(key, f"{text!r} must start with '/'")
            return None
        if any(c.isspace() or c in "?#" or ord(c) < 32 or ord(c) == 127 for c in text):
            self.errors.add(key, f"{text!r} must be a path only (no spaces, '?' or '#')")
            return None
        return text

    def endpoint(self, value: Any, key: str) -> Optional[str]:
        if not isinstance(value, str):
            self.errors.add(
                key,
                f"must be a string (a Twisted endpoint such as "
                f"'tcp:3128:interface=127.0.0.1'), not {_type_name(value)}",
            )
            return None
        problem = _endpoint_problem(value)
        if problem is not None:
            self.errors.add(key, problem)
            return None
        return value

    # the document

    def parse(self, doc: Mapping[str, Any], path: str) -> Optional[Config]:
        proxy = ProxySettings()
        admin = None
        filters: Dict[str, FilterConfig] = {}
        backends: Dict[str, BackendConfig] = {}
        listeners: List[ListenerConfig] = []
        # listeners may name filters and backends defined further down the file
        refs = _Refs(doc)
        for name, value in doc.items():
            if name == "proxy":
                table = self.table(value, "proxy")
                if table is not None:
                    proxy = self.parse_proxy(table)
            elif name == "admin":
                table = self.table(value, "admin")
                if table is not None:
                    admin = self.parse_admin(table)
            elif name == "filter":
                table = self.table(value, "filter")
                if table is not None:
                    filters = self.parse_filters(table)
            elif name == "backend":
                table = self.table(value, "backend")
                if table is not None:
                    backends = self.parse_backends(table)
            elif name == "listener":
                listeners = self.parse_listeners(value, refs)
            else:
                self.errors.add(name, "unknown key")
        if "listener" not in doc:
            self.errors.add("listener", "at least one [[listener]] is required")
        if self.errors:
            return None
        return Config(
            path=path,
            proxy=proxy,
            admin=admin,
            listeners=tuple(listeners),
            filters=filters,
            backends=backends,
        )

    def parse_listeners(self, raw: Any, refs: _Refs) -> List[ListenerConfig]:
        if not isinstance(raw, list):
            self.errors.add(
                "listener", f"must be an array of tables ([[listener]]), not {_type_name(raw)}"
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
            listener = self.parse_listener(table, key, refs)
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

    def parse_proxy(self, table: Mapping[str, Any]) -> ProxySettings:
        values: Dict[str, Any] = {}
        for name, value in table.items():
            key = f"proxy.{name}"
            result: Any = None
            if name in _PROXY_SECONDS:
                result = self.seconds(value, key)
            elif name == "max_head_size":
                result = self.integer(value, key, _MIN_HEAD_SIZE)
            elif name == "pool_max_idle":
                result = self.integer(value, key, 0)
            elif name == "access_log":
                result = self.access_log(value, key)
            else:
                self.errors.add(key, "unknown key")
            if result is not None:
                values[name] = result
        return ProxySettings(**values)

    def access_log(self, value: Any, key: str) -> Optional[str]:
        text = self.string(value, key)
        if text is None:
            return None
        if text in ("-", "off"):
            return text
        full = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))
        directory = os.path.dirname(full)
        if os.path.isdir(full):
            self.errors.add(key, f"{text!r} is a directory (use a file path, '-' or 'off')")
            return None
        if not os.path.isdir(directory):
            self.errors.add(key, f"directory {directory!r} does not exist")
            return None
        return full

    def parse_admin(self, table: Mapping[str, Any]) -> Optional[AdminConfig]:
        endpoint = None
        for name, value in table.items():
            if name == "endpoint":
                endpoint = self.endpoint(value, "admin.endpoint")
            else:
                self.errors.add(f"admin.{name}", "unknown key")
        if "endpoint" not in table:
            self.errors.add("admin.endpoint", "required key is missing")
        if endpoint is None:
            return None
        return AdminConfig(endpoint=endpoint)

    def parse_filters(self, tables: Mapping[str, Any]) -> Dict[str, FilterConfig]:
        filters: Dict[str, FilterConfig] = {}
        for name, value in tables.items():
            key = f"filter.{name}"
            table = self.table(value, key)
            if table is None:
                continue
            parsed = self.parse_filter(name, table, key)
            if parsed is not None:
                filters[name] = parsed
        # checks that need the other filters (ip_block watches rate limits)
        types = {
            name: value.get("type")
            for name, value in tables.items()
            if isinstance(value, Mapping) and isinstance(value.get("type"), str)
        }
        for name, fconf in filters.items():
            module = filter_type(fconf.type) if ":" not in fconf.type else None
            cross_check = getattr(module, "check_watch", None)
            if cross_check is not None:
                cross_check(name, fconf.spec, types, self.errors)
        return filters

    def parse_filter(
        self, name: str, table: Mapping[str, Any], key: str
    ) -> Optional[FilterConfig]:
        if "type" not in table:
            self.errors.add(f"{key}.type", "required key is missing")
            return None
        type_name = self.string(table["type"], f"{key}.type")
        if type_name is None:
            return None
        rest = {k: v for k, v in table.items() if k != "type"}
        if ":" in type_name:
            # a custom filter: its table is handed to it unvalidated
            try:
                load_object(type_name)
            except ValueError as e:
                self.errors.add(f"{key}.type", f"cannot load custom filter: {e}")
                return None
            return FilterConfig(name=name, type=type_name, spec=rest)
        try:
            module = filter_type(type_name)
            builtin = ", ".join(builtin_type_names())
        except Exception as e:  # a built-in filter module failed to import
            self.errors.add(f"{key}.type", f"filter types unavailable: {e}")
            return None
        if module is None:
            self.errors.add(
                f"{key}.type",
                f"unknown filter type {type_name!r} (built-in: {builtin}; "
                f"a custom filter is 'package.module:name')",
            )
            return None
        before = len(self.errors)
        try:
            spec = module.parse(name, rest, self.errors, self.base_dir)
        except Exception as e:
            self.errors.add(key, f"cannot check this filter: {type(e).__name__}: {e}")
            return None
        if len(self.errors) > before:
            return None
        return FilterConfig(name=name, type=type_name, spec=spec)

    def parse_listener(
        self, table: Mapping[str, Any], key: str, refs: _Refs
    ) -> Optional[ListenerConfig]:
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
            elif kind == "custom":
                if name == "factory":
                    values["factory"] = self.factory(value, item_key)
                else:
                    # handed to the factory unvalidated
                    options[name] = value
            elif kind is not None:
                if name in _KIND_KEYS[kind]:
                    attr = _LISTENER_ATTRS.get(name, name)
                    values[attr] = self.listener_value(kind, name, value, item_key, refs)
                else:
                    self.errors.add(item_key, "unknown key")
        required = _LISTENER_COMMON_KEYS + {"custom": ("factory",), "tcp": ("backend",)}.get(
            kind or "", ()
        )
        for name in required:
            if name not in table:
                self.errors.add(f"{key}.{name}", "required key is missing")
        raw_redirect = table.get("redirect_to_https", False)
        redirecting = raw_redirect is True or (
            _is_int(raw_redirect) and 1 <= raw_redirect <= 65535
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
        return ListenerConfig(kind=kind, **values)

    def listener_value(
        self, kind: str, name: str, value: Any, key: str, refs: _Refs
    ) -> Any:
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
            return self.filter_refs(value, key, refs.filters)
        if name == "parents":
            return self.parents(value, key)
        if name == "trusted_proxies":
            return self.networks(value, key)
        if name == "hide_headers":
            return self.header_names(value, key)
        if name == "forwarded":
            return self.boolean(value, key)
        if name == "route":
            return self.routes(value, key, refs)
        if name == "tls":
            return self.tls(value, key)
        if name == "redirect_to_https":
            return self.redirect_to_https(value, key)
        assert name == "backend", name
        return self.backend_ref(value, key, refs, "tcp")

    # TLS

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
        for name in ("route", "filters", "parents"):
            if name in table and name in _KIND_KEYS[kind]:
                self.errors.add(
                    f"{key}.{name}",
                    "not used on a listener with redirect_to_https"
                    " (every request is redirected)",
                )

    def redirect_to_https(self, value: Any, key: str) -> Optional[int]:
        """
        A port (C{8443}), C{true} (443) or C{false} (off).
        """
        if isinstance(value, bool):
            return 443 if value else None
        if not _is_int(value):
            self.errors.add(
                key, f"must be a port number or true/false, not {_type_name(value)}"
            )
            return None
        if not 1 <= value <= 65535:
            self.errors.add(key, f"port {value} is out of range 1-65535")
            return None
        return int(value)

    def file_path(self, value: Any, key: str) -> Optional[str]:
        """
        An existing file, named relative to the configuration's folder;
        the absolute path.
        """
        text = self.string(value, key)
        if text is None:
            return None
        full = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))
        if os.path.isdir(full):
            self.errors.add(key, f"{text!r} is a directory, not a file")
            return None
        if not os.path.exists(full):
            self.errors.add(key, f"file {text!r} not found ({full})")
            return None
        return full

    def tls(self, value: Any, key: str) -> Optional[TLSConfig]:
        """
        A listener's C{tls} table; every file is loaded as the listener
        will load it.
        """
        from twisted_proxy import tls as tlsmod

        table = self.table(value, key)
        if table is None:
            return None
        before = len(self.errors)
        values: Dict[str, Any] = {}
        for name, item in table.items():
            item_key = f"{key}.{name}"
            if name == "certificates":
                values[name] = self.certificates(item, item_key)
            elif name == "min_version":
                if isinstance(item, float):
                    self.errors.add(
                        item_key, f"must be a string (\"1.2\" or \"1.3\"), not a float"
                    )
                    continue
                version = self.string(item, item_key)
                if version is not None and version not in tlsmod.MIN_VERSIONS:
                    self.errors.add(
                        item_key, f"unknown TLS version {version!r} (expected \"1.2\" or \"1.3\")"
                    )
                values[name] = version
            elif name == "ciphers":
                ciphers = self.string(item, item_key)
                if ciphers is not None:
                    try:
                        tlsmod.check_ciphers(ciphers)
                    except tlsmod.TLSFileError as e:
                        self.errors.add(item_key, e.message)
                values[name] = ciphers
            elif name == "client_ca":
                path = self.file_path(item, item_key)
                if path is not None:
                    try:
                        tlsmod.load_ca_file(path)
                    except tlsmod.TLSFileError as e:
                        self.errors.add(item_key, e.message)
                values[name] = path
            elif name == "verify_client":
                mode = self.string(item, item_key)
                if mode is not None and mode not in tlsmod.VERIFY_CLIENT:
                    self.errors.add(
                        item_key,
                        f"unknown verify_client {mode!r} (expected \"required\" or \"optional\")",
                    )
                values[name] = mode
            elif name == "client_subject_header":
                header = self.string(item, item_key)
                if header is not None and not _TOKEN.match(header):
                    self.errors.add(item_key, f"{header!r} is not a valid header name")
                values[name] = header
            else:
                self.errors.add(item_key, "unknown key")
        if "certificates" not in table:
            self.errors.add(f"{key}.certificates", "required key is missing")
        if "client_ca" not in table:
            for name in ("verify_client", "client_subject_header"):
                if name in table:
                    self.errors.add(
                        f"{key}.{name}",
                        "needs client_ca (the CA file client certificates are verified against)",
                    )
        elif "verify_client" not in table:
            values["verify_client"] = "required"
        if len(self.errors) > before:
            return None
        config = TLSConfig(**values)
        try:
            # the contexts exactly as the listener makes them
            tlsmod.ServerTLS(config)
        except tlsmod.TLSFileError as e:
            self.errors.add(f"{key}.{e.where}", e.message)
            return None
        return config

    def certificates(self, value: Any, key: str) -> Tuple[CertificateConfig, ...]:
        from twisted_proxy import tls as tlsmod

        if not isinstance(value, list):
            self.errors.add(
                key,
                f"must be an array of tables ({{ cert = ..., key = ... }}), not {_type_name(value)}",
            )
            return ()
        if not value:
            self.errors.add(key, "must not be empty (the first certificate is the default)")
        out = []
        for i, item in enumerate(value):
            item_key = f"{key}[{i}]"
            table = self.table(item, item_key)
            if table is None:
                continue
            paths: Dict[str, Optional[str]] = {}
            for name, path in table.items():
                if name in ("cert", "key"):
                    paths[name] = self.file_path(path, f"{item_key}.{name}")
                else:
                    self.errors.add(f"{item_key}.{name}", "unknown key")
            for name in ("cert", "key"):
                if name not in table:
                    self.errors.add(f"{item_key}.{name}", "required key is missing")
            cert, private_key = paths.get("cert"), paths.get("key")
            if cert is None or private_key is None:
                continue
            try:
                tlsmod.load_certificate_pair(cert, private_key)
            except tlsmod.TLSFileError as e:
                self.errors.add(f"{item_key}.{e.field}", e.message)
                continue
            out.append(CertificateConfig(cert=cert, key=private_key))
        return tuple(out)

    def server_tls(
        self, scheme: str, tls_values: Mapping[str, Tuple[Any, str]]
    ) -> Dict[str, Any]:
        """
        The TLS keys of a server entry (C{ca}, C{server_name}, C{verify},
        C{client_cert}, C{client_key}): only for https:// servers.
        """
        from twisted_proxy import tls as tlsmod

        out: Dict[str, Any] = {}
        if scheme != "https":
            for name, (_, item_key) in tls_values.items():
                self.errors.add(item_key, f"only for https:// servers (this one is {scheme}://)")
            return out
        for name, (item, item_key) in tls_values.items():
            if name == "verify":
                out[name] = self.boolean(item, item_key)
            elif name == "server_name":
                text = self.string(item, item_key)
                if text is None:
                    continue
                name_text = text.strip().lower().rstrip(".")
                problem = None
                try:
                    ipaddress.ip_address(name_text)
                except ValueError:
                    problem = validate_domain_pattern(name_text)
                    if problem is None and "*" in name_text:
                        problem = f"{text!r}: a server name cannot be a wildcard"
                if problem is not None:
                    self.errors.add(item_key, problem)
                else:
                    out[name] = name_text
            else:
                path = self.file_path(item, item_key)
                if path is None:
                    continue
                if name == "ca":
                    try:
                        tlsmod.load_ca_file(path, "ca")
                    except tlsmod.TLSFileError as e:
                        self.errors.add(item_key, e.message)
                        continue
                out[name] = path
        key_of = {name: item_key for name, (_, item_key) in tls_values.items()}
        for one, other in (("client_cert", "client_key"), ("client_key", "client_cert")):
            if one in tls_values and other not in tls_values:
                stem = key_of[one].rsplit(".", 1)[0]
                self.errors.add(f"{stem}.{other}", f"required with {one}")
        if out.get("client_cert") and out.get("client_key"):
            try:
                tlsmod.load_certificate_pair(out["client_cert"], out["client_key"])
            except tlsmod.TLSFileError as e:
                self.errors.add(key_of["client_" + e.field], e.message)
        if "ca" in out and tls_values.get("verify", (True,))[0] is False:
            self.errors.add(key_of["ca"], "has no effect with verify = false")
        return out

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

    def networks(self, value: Any, key: str) -> Tuple[IPNetwork, ...]:
        items = self.string_list(value, key)
        out = []
        for item_key, text in items or ():
            try:
                out.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                self.errors.add(item_key, f"{text!r} is not an IP network (CIDR)")
        return tuple(out)

    def ports(self, value: Any, key: str) -> Tuple[int, ...]:
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of port numbers, not {_type_name(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            if not _is_int(item):
                self.errors.add(f"{key}[{i}]", f"must be a port number, not {_type_name(item)}")
            elif not 1 <= item <= 65535:
                self.errors.add(f"{key}[{i}]", f"port {item} is out of range 1-65535")
            else:
                out.append(item)
        return tuple(out)

    def filter_refs(
        self, value: Any, key: str, filter_names: Sequence[str]
    ) -> Tuple[str, ...]:
        out = []
        for item_key, name in self.string_list(value, key) or ():
            if name not in filter_names:
                self.errors.add(item_key, f"unknown filter {name!r}")
            else:
                out.append(name)
        return tuple(out)

    def parents(self, value: Any, key: str) -> Tuple[ParentProxy, ...]:
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of tables, not {_type_name(value)}")
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
        for name in _PARENT_KEYS:
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
            problem = _domain_problem(domain)
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

    # reverse listeners

    def header_names(self, value: Any, key: str) -> Tuple[str, ...]:
        """
        A list of HTTP header names (may be empty), as written.
        """
        out = []
        for item_key, name in self.string_list(value, key) or ():
            if not _TOKEN.match(name):
                self.errors.add(item_key, f"{name!r} is not a valid header name")
            else:
                out.append(name)
        return tuple(out)

    def routes(self, value: Any, key: str, refs: _Refs) -> Tuple[RouteConfig, ...]:
        if not isinstance(value, list):
            self.errors.add(
                key,
                f"must be an array of tables ([[listener.route]]), not {_type_name(value)}",
            )
            return ()
        if not value:
            self.errors.add(key, "at least one [[listener.route]] is required")
        out = []
        seen: Dict[Tuple[Optional[str], str], int] = {}
        for i, item in enumerate(value):
            route = self.route(item, f"{key}[{i}]", refs)
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

    def route(self, value: Any, key: str, refs: _Refs) -> Optional[RouteConfig]:
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
                values["backend"] = self.backend_ref(item, item_key, refs, "http")
            elif name == "filters":
                values["filters"] = self.filter_refs(item, item_key, refs.filters)
            elif name in ("strip_prefix", "preserve_host"):
                values[name] = self.boolean(item, item_key)
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
        (lower case, no trailing dot, IDNA).
        """
        host = self.string(value, key)
        if host is None:
            return None
        problem = validate_domain_pattern(host)
        if problem is not None:
            self.errors.add(key, problem)
            return None
        return normalize_domain_pattern(host)

    def backend_ref(self, value: Any, key: str, refs: _Refs, kind: str) -> Optional[str]:
        """
        The name of a C{[backend.NAME]} whose servers suit a reverse route
        (C{kind="http"}) or a tcp listener (C{kind="tcp"}).
        """
        name = self.string(value, key)
        if name is None:
            return None
        if name not in refs.backends:
            self.errors.add(key, f"unknown backend {name!r}")
            return None
        kinds = refs.backends[name]
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

    # backends

    def parse_backends(self, tables: Mapping[str, Any]) -> Dict[str, BackendConfig]:
        backends: Dict[str, BackendConfig] = {}
        for name, value in tables.items():
            key = f"backend.{name}"
            table = self.table(value, key)
            if table is None:
                continue
            parsed = self.parse_backend(name, table, key)
            if parsed is not None:
                backends[name] = parsed
        return backends

    def parse_backend(
        self, name: str, table: Mapping[str, Any], key: str
    ) -> Optional[BackendConfig]:
        before = len(self.errors)
        values: Dict[str, Any] = {}
        for item_name, item in table.items():
            item_key = f"{key}.{item_name}"
            result: Any = None
            if item_name == "servers":
                result = self.servers(item, item_key)
            elif item_name == "balance":
                result = self.balance(item, item_key)
            elif item_name == "hash_key":
                result = self.hash_key(item, item_key)
            elif item_name == "health":
                result = self.health(item, item_key)
            elif item_name in ("retries", "max_fails"):
                result = self.integer(item, item_key, 0)
            elif item_name in ("fail_timeout", "queue_timeout"):
                result = self.seconds(item, item_key)
            else:
                self.errors.add(item_key, "unknown key")
                continue
            values[item_name] = result
        if "servers" not in table:
            self.errors.add(f"{key}.servers", "required key is missing")
        balance = values.get("balance", "round_robin")
        hash_key = values.get("hash_key")
        if hash_key is not None and balance in BALANCERS and balance != "hash":
            self.errors.add(
                f"{key}.hash_key",
                f"only applies to balance = 'hash' (this backend's balance is {balance!r})",
            )
        elif hash_key is not None and hash_key != "client_ip":
            servers = values.get("servers") or ()
            if servers and all(s.scheme == "tcp" for s in servers):
                self.errors.add(
                    f"{key}.hash_key",
                    f"{hash_key!r} needs HTTP; a backend of tcp:// servers"
                    " can only hash on 'client_ip'",
                )
        if len(self.errors) > before:
            return None
        return BackendConfig(name=name, **values)

    def servers(self, value: Any, key: str) -> Tuple[ServerConfig, ...]:
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of tables, not {_type_name(value)}")
            return ()
        if not value:
            self.errors.add(key, "must not be empty")
        out = []
        seen: Dict[Tuple[str, str, int], int] = {}
        first: Optional[Tuple[int, ServerConfig]] = None
        for i, item in enumerate(value):
            server = self.server(item, f"{key}[{i}]")
            if server is None:
                continue
            url_key = f"{key}[{i}].url"
            address = (server.scheme, server.host, server.port)
            kind = SERVER_SCHEMES[server.scheme]
            if first is None:
                first = (i, server)
            elif SERVER_SCHEMES[first[1].scheme] != kind:
                self.errors.add(
                    url_key,
                    f"a backend's servers are all http(s):// or all tcp://"
                    f" ({server.url!r} here, {first[1].url!r} in servers[{first[0]}])",
                )
                continue
            if address in seen:
                self.errors.add(
                    url_key, f"duplicate server {server.url!r} (also servers[{seen[address]}])"
                )
                continue
            seen[address] = i
            out.append(server)
        return tuple(out)

    def server(self, value: Any, key: str) -> Optional[ServerConfig]:
        table = self.table(value, key)
        if table is None:
            return None
        before = len(self.errors)
        values: Dict[str, Any] = {}
        address: Optional[Tuple[str, str, int]] = None
        tls_values: Dict[str, Tuple[Any, str]] = {}
        for name, item in table.items():
            item_key = f"{key}.{name}"
            if name == "url":
                url = self.string(item, item_key)
                if url is not None:
                    values["url"] = url.strip()
                    address = self.server_url(url, item_key)
            elif name in ("weight", "max_connections"):
                values[name] = self.integer(item, item_key, 1)
            elif name == "backup":
                values[name] = self.boolean(item, item_key)
            elif name in _SERVER_TLS_KEYS:
                tls_values[name] = (item, item_key)
            else:
                self.errors.add(item_key, "unknown key")
        if "url" not in table:
            self.errors.add(f"{key}.url", "required key is missing")
        if tls_values and address is not None:
            values.update(self.server_tls(address[0], tls_values))
        if len(self.errors) > before or address is None:
            return None
        scheme, host, port = address
        return ServerConfig(scheme=scheme, host=host, port=port, **values)

    def server_url(self, url: str, key: str) -> Optional[Tuple[str, str, int]]:
        """
        The scheme, host and port of a server URL: C{http://host[:port]}
        (80), C{https://host[:port]} (443) or C{tcp://host:port}.
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as e:
            self.errors.add(key, f"invalid server URL {url!r}: {e}")
            return None
        scheme = parts.scheme.lower()
        if scheme not in SERVER_SCHEMES:
            self.errors.add(
                key,
                f"server URL {url!r} must start with http://, https:// or tcp://",
            )
            return None
        host = parts.hostname
        if not host:
            self.errors.add(key, f"server URL {url!r} has no host")
            return None
        if parts.username is not None or parts.password is not None:
            self.errors.add(key, f"server URL {url!r}: credentials are not supported")
            return None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            self.errors.add(
                key, f"server URL {url!r} must be '{scheme}://host:port' only (no path or query)"
            )
            return None
        problem = validate_domain_pattern(host)
        if problem is None and host.startswith("*"):
            problem = f"{host!r}: a server's host cannot be a wildcard"
        if problem is not None:
            self.errors.add(key, f"server URL {url!r}: {problem}")
            return None
        if port == 0:
            self.errors.add(key, f"server URL {url!r}: port 0 is not valid")
            return None
        if port is None:
            if scheme == "tcp":
                self.errors.add(key, f"server URL {url!r} needs a port ('tcp://host:port')")
                return None
            port = 443 if scheme == "https" else 80
        return scheme, host, port

    def balance(self, value: Any, key: str) -> Optional[str]:
        name = self.string(value, key)
        if name is None:
            return None
        if name in BALANCERS:
            return name
        if ":" not in name and "." not in name:
            self.errors.add(
                key,
                f"unknown balance {name!r} (expected round_robin, least_conn, random_two,"
                f" hash, or a custom balancer 'package.module:Name')",
            )
            return None
        try:
            load_object(name)
        except ValueError as e:
            self.errors.add(key, f"cannot load balancer: {e}")
            return None
        return name

    def hash_key(self, value: Any, key: str) -> Optional[str]:
        """
        C{"client_ip"}, C{"header:NAME"} (stored with NAME in lower case:
        header names are case-insensitive) or C{"cookie:NAME"}.
        """
        text = self.string(value, key)
        if text is None:
            return None
        if text == "client_ip":
            return text
        source, sep, name = text.partition(":")
        if not sep or source not in ("header", "cookie"):
            self.errors.add(
                key,
                f"unknown hash_key {text!r} (expected 'client_ip', 'header:NAME'"
                " or 'cookie:NAME')",
            )
            return None
        if not _TOKEN.match(name):
            self.errors.add(key, f"{text!r}: {name!r} is not a valid {source} name")
            return None
        return f"header:{name.lower()}" if source == "header" else text

    def health(self, value: Any, key: str) -> Optional[HealthConfig]:
        table = self.table(value, key)
        if table is None:
            return None
        before = len(self.errors)
        values: Dict[str, Any] = {}
        for name, item in table.items():
            item_key = f"{key}.{name}"
            if name == "path":
                values[name] = self.path_prefix(item, item_key)
            elif name in ("interval", "timeout"):
                values[name] = self.seconds(item, item_key)
            elif name in ("rise", "fall"):
                values[name] = self.integer(item, item_key, 1)
            elif name == "expect":
                values[name] = self.statuses(item, item_key)
            else:
                self.errors.add(item_key, "unknown key")
        if "expect" in table and "path" not in table:
            self.errors.add(
                f"{key}.expect",
                "needs a path (without one the check is a TCP connect probe, which has"
                " no status)",
            )
        if len(self.errors) > before:
            return None
        return HealthConfig(**values)

    def statuses(self, value: Any, key: str) -> Tuple[int, ...]:
        """
        An HTTP status (100-599) or a list of them.
        """
        if _is_int(value):
            items: List[Tuple[str, Any]] = [(key, value)]
        elif isinstance(value, list):
            items = [(f"{key}[{i}]", item) for i, item in enumerate(value)]
        else:
            self.errors.add(
                key, f"must be a status or an array of statuses, not {_type_name(value)}"
            )
            return ()
        out = []
        for item_key, item in items:
            if not _is_int(item):
                self.errors.add(item_key, f"must be an HTTP status, not {_type_name(item)}")
            elif not 100 <= item <= 599:
                self.errors.add(item_key, f"status {item} is out of range 100-599")
            else:
                out.append(item)
        return tuple(out)
