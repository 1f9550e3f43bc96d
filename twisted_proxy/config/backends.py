# -*- test-case-name: tests.test_config -*-
"""
The C{[backend.NAME]} tables: their servers (C{http://}, C{https://} or
C{tcp://} URLs, with weights, limits and TLS keys), the balancer, the hash
key, the health check, the passive-failure settings and the waiting queue
(C{queue_timeout}, C{queue_size}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from twisted_proxy.config.checks import TOKEN, Checks, is_int, type_name
from twisted_proxy.config.tls import SERVER_TLS_KEYS, TLSChecks
from twisted_proxy.domains import validate_domain_pattern
from twisted_proxy.filters import ErrorList
from twisted_proxy.loading import load_object
from twisted_proxy.model import BackendConfig, HealthConfig, ServerConfig

__all__ = ["BALANCERS", "SERVER_SCHEMES", "BackendChecks", "server_kind"]

#: The built-in C{balance} names; anything with a C{":"} or C{"."} is the
#: dotted path of a custom balancer.
BALANCERS: Tuple[str, ...] = ("round_robin", "least_conn", "random_two", "hash")
#: Server URL schemes, and the kind of backend each makes.
SERVER_SCHEMES: Mapping[str, str] = {"http": "http", "https": "http", "tcp": "tcp"}


def server_kind(url: Any) -> Optional[str]:
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


class BackendChecks(Checks):
    """
    The C{[backend.NAME]} tables.

    @ivar tls_checks: checks the TLS keys of C{https://} server entries.
    """

    def __init__(self, errors: ErrorList, base_dir: str, tls_checks: TLSChecks) -> None:
        super().__init__(errors, base_dir)
        self.tls_checks = tls_checks

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
            elif item_name in ("retries", "max_fails", "queue_size"):
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
            self.errors.add(key, f"must be an array of tables, not {type_name(value)}")
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
            elif name in SERVER_TLS_KEYS:
                tls_values[name] = (item, item_key)
            else:
                self.errors.add(item_key, "unknown key")
        if "url" not in table:
            self.errors.add(f"{key}.url", "required key is missing")
        if tls_values and address is not None:
            values.update(self.tls_checks.server_tls(address[0], tls_values))
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
        if problem is None and "*" in host:
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
        if not TOKEN.match(name):
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
        if is_int(value):
            items: List[Tuple[str, Any]] = [(key, value)]
        elif isinstance(value, list):
            items = [(f"{key}[{i}]", item) for i, item in enumerate(value)]
        else:
            self.errors.add(
                key, f"must be a status or an array of statuses, not {type_name(value)}"
            )
            return ()
        out = []
        for item_key, item in items:
            if not is_int(item):
                self.errors.add(item_key, f"must be an HTTP status, not {type_name(item)}")
            elif not 100 <= item <= 599:
                self.errors.add(item_key, f"status {item} is out of range 100-599")
            else:
                out.append(item)
        return tuple(out)
