# -*- test-case-name: tests.test_config -*-
"""
Endpoint strings (C{listener[N].endpoint}, C{admin.endpoint}): split them
with our own reading of Twisted's grammar, and check them without listening.

The grammar, as C{twisted.internet.endpoints.serverFromString} documents it:
fields are separated by C{":"}; the first names the endpoint type
(C{tcp}, C{tcp6}, C{ssl}, C{unix}, C{systemd}, or a plugin's prefix); a field
containing C{"="} is a keyword argument C{key=value} (split at its first
C{"="}, so the value may contain more), any other field a positional
argument; a backslash makes the character after it literal, so C{"\\:"} and
C{"\\="} neither separate fields nor make a keyword. For example
C{"ssl:443:privateKey=C\\:/key.pem"} is C{["ssl", "443"]} and
C{{"privateKey": "C:/key.pem"}}.
"""

from __future__ import annotations

import socket
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["endpoint_problem", "split_endpoint", "systemd_problem", "with_backlog"]

#: Endpoint types whose first argument is a port number.
_PORT_TYPES: Tuple[str, ...] = ("tcp", "tcp6", "ssl")
#: Endpoint types that take a C{backlog} keyword (the listen queue).
_BACKLOG_TYPES: Tuple[str, ...] = ("tcp", "tcp6", "ssl", "unix")


def split_endpoint(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    The positional and keyword arguments of an endpoint string, the
    endpoint type first among the positional ones: C{"tcp:80:
    interface=127.0.0.1"} is C{(["tcp", "80"], {"interface":
    "127.0.0.1"})}.

    An empty field is an empty positional argument; a keyword given twice
    keeps its last value.

    @raise ValueError: if the string ends with a backslash (which would
        escape nothing).
    """
    args: List[str] = []
    kwargs: Dict[str, str] = {}
    field: List[str] = []
    key: Optional[str] = None

    def end_field() -> None:
        text = "".join(field)
        if key is None:
            args.append(text)
        else:
            kwargs[key] = text

    chars = iter(description)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ValueError("it ends with a backslash, which escapes nothing")
            field.append(escaped)
        elif char == ":":
            end_field()
            field.clear()
            key = None
        elif char == "=" and key is None:
            key = "".join(field)
            field.clear()
        else:
            field.append(char)
    end_field()
    return args, kwargs


#: the C{ssl:} keywords an HTTP listener can serve with the proxy's own TLS
_SSL_PLAIN_KEYS = frozenset(["port", "interface", "backlog", "privateKey", "certKey"])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def ssl_as_tcp(description: str) -> Optional[Tuple[str, str, str]]:
    """
    For an C{ssl:} endpoint string that uses only a port, an interface, a
    backlog and the certificate and key files: the C{tcp:} endpoint string
    and the certificate and key paths, so that the listener speaks the
    proxy's own TLS (SNI, ALPN, the Mozilla intermediate ciphers and groups)
    instead of Twisted's defaults. L{None} for any other string.
    """
    try:
        args, kw = split_endpoint(description)
    except ValueError:
        return None
    if not args or args[0].strip().lower() != "ssl" or not set(kw) <= _SSL_PLAIN_KEYS:
        return None
    if len(args) == 2 and "port" not in kw:
        port = args[1]
    elif len(args) == 1 and "port" in kw:
        port = kw["port"]
    else:
        return None
    key = kw.get("privateKey")
    if not key or not port.isdigit():
        return None
    tcp = "tcp:" + port
    for name in ("interface", "backlog"):
        if name in kw:
            tcp += f":{name}=" + _escape(kw[name])
    return tcp, kw.get("certKey") or key, key


def with_backlog(description: str, backlog: int) -> str:
    """
    C{description} with C{backlog=N} added, for the endpoint types that take
    one (C{tcp}, C{tcp6}, C{ssl}, C{unix}) unless it sets one already; any
    other endpoint string as it is.
    """
    prefix = description.split(":", 1)[0].strip().lower()
    if prefix not in _BACKLOG_TYPES:
        return description
    try:
        _, kw = split_endpoint(description)
    except ValueError:
        return description
    if "backlog" in kw:
        return description
    return f"{description}:backlog={backlog}"


def systemd_problem(args: Sequence[str], kw: Mapping[str, str]) -> Optional[str]:
    """
    Why a C{systemd:} endpoint is not valid, or L{None}.

    Only the syntax is checked, never the inherited descriptors (they exist
    only when systemd starts the process, not when C{--check} runs).

    @param args: the endpoint string's positional arguments, C{"systemd"}
        first, and C{kw} its keyword arguments (see L{split_endpoint}).
    """
    unknown = set(kw) - {"domain", "index", "name"}
    if unknown:
        return f"unknown systemd option {sorted(unknown)[0]!r}"
    rest = list(args[1:])
    if "domain" in kw:
        rest.insert(0, kw["domain"])
    if len(rest) != 1:
        return "systemd endpoints take one domain, e.g. 'systemd:domain=INET:index=0'"
    domain = rest[0]
    if not hasattr(socket, "AF_" + domain):
        return f"unknown address family {domain!r} (INET, INET6 or UNIX)"
    if ("index" in kw) == ("name" in kw):
        return "specify exactly one of descriptor index or name"
    if "index" in kw:
        try:
            int(kw["index"])
        except ValueError as e:
            return str(e)
    return None


def endpoint_problem(description: str) -> Optional[str]:
    """
    Why C{description} is not a valid server endpoint string, or L{None}.

    The endpoint is built against a memory reactor: nothing listens.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    if not description.strip():
        return "must not be empty"
    prefix = description.split(":", 1)[0].strip().lower()
    port: Optional[str] = None
    try:
        args, kw = split_endpoint(description)
        if prefix in _PORT_TYPES:
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
            problem = systemd_problem(args, kw)
            return None if problem is None else f"invalid endpoint {description!r}: {problem}"
        serverFromString(MemoryReactor(), description)
    except Exception as e:
        reason = str(e) or type(e).__name__
        if isinstance(e, TypeError):
            reason = f"bad arguments for {prefix!r} endpoint: {reason}"
        return f"invalid endpoint {description!r}: {reason}"
    # the endpoint accepted the port as a number; it listens on int(port)
    if port is not None and not 0 <= int(port) <= 65535:
        return f"invalid endpoint {description!r}: port {int(port)} is out of range 0-65535"
    return None
