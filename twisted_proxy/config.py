# -*- test-case-name: tests.test_config -*-
"""
TOML configuration file to frozen L{twisted_proxy.model} objects.

Every problem is collected (never only the first) as a C{(key_path,
message)} pair, where C{key_path} is the TOML path of the offending value
(C{listener[1].endpoint}, C{proxy.connect_timeout},
C{filter.office-hours.during}); L{ConfigError.lines} renders them as
C{"FILE: key.path: message"}, the format of C{twistd proxy --check}.

No configuration mistake ever surfaces as a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from twisted_proxy.filters import ErrorList, builtin_type_names, filter_type, load_object
from twisted_proxy.model import (
    DEFAULT_ALLOW_CLIENTS,
    AdminConfig,
    Config,
    FilterConfig,
    IPNetwork,
    ListenerConfig,
    ParentProxy,
    ProxySettings,
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
NOT_YET_SUPPORTED_KINDS: Tuple[str, ...] = ("reverse", "tcp")
ANONYMITY_LEVELS: Tuple[str, ...] = ("transparent", "anonymous", "elite")

_LISTENER_COMMON_KEYS: Tuple[str, ...] = ("name", "kind", "endpoint")
_FORWARD_KEYS: Tuple[str, ...] = (
    "allow_clients",
    "anonymity",
    "connect_ports",
    "filters",
    "parents",
)
_PARENT_KEYS: Tuple[str, ...] = ("domains", "proxy")

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
        listeners: List[ListenerConfig] = []
        # listeners may name filters defined further down the file
        raw_filters = doc.get("filter")
        filter_names = list(raw_filters) if isinstance(raw_filters, dict) else []
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
            elif name == "listener":
                listeners = self.parse_listeners(value, filter_names)
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
        )

    def parse_listeners(self, raw: Any, filter_names: Sequence[str]) -> List[ListenerConfig]:
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
            listener = self.parse_listener(table, key, filter_names)
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
        self, table: Mapping[str, Any], key: str, filter_names: Sequence[str]
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
            elif raw_kind in NOT_YET_SUPPORTED_KINDS:
                kind_problem = f"kind {raw_kind!r} is not supported yet"
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
            elif kind == "forward":
                if name in _FORWARD_KEYS:
                    values[name] = self.forward_value(name, value, item_key, filter_names)
                else:
                    self.errors.add(item_key, "unknown key")
            elif kind == "custom":
                if name == "factory":
                    values["factory"] = self.factory(value, item_key)
                else:
                    # handed to the factory unvalidated
                    options[name] = value
        required = _LISTENER_COMMON_KEYS + (("factory",) if kind == "custom" else ())
        for name in required:
            if name not in table:
                self.errors.add(f"{key}.{name}", "required key is missing")
        if len(self.errors) > before or kind is None:
            return None
        if kind == "forward" and "allow_clients" not in values:
            values["allow_clients"] = self.networks(
                list(DEFAULT_ALLOW_CLIENTS), f"{key}.allow_clients"
            )
        if kind == "custom":
            values["options"] = options
        return ListenerConfig(kind=kind, **values)

    def forward_value(
        self, name: str, value: Any, key: str, filter_names: Sequence[str]
    ) -> Any:
        """
        The validated value of a forward listener's key C{name}.
        """
        if name == "allow_clients":
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
            return self.filter_refs(value, key, filter_names)
        assert name == "parents", name
        return self.parents(value, key)

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
