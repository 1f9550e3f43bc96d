# -*- test-case-name: tests.test_filters -*-
"""
The filter chain and the registry of filter types.

A filter type is a module with two functions::

    parse(name, table, errors, base_dir) -> spec
        Validate the C{[filter.NAME]} table (without its C{type} key),
        reporting every problem with C{errors.add("filter.NAME.key", msg)},
        and return a frozen spec object.

    build(name, spec, clock) -> IRequestFilter
        Make the live filter; C{clock} is an C{IReactorTime}.
"""

from __future__ import annotations

import importlib
import itertools
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attrs


@attrs.frozen
class Deny:
    """
    A filter's verdict that the request is answered by the proxy itself.

    @ivar status: the HTTP status (403, 407, 429, ...).
    @ivar rule: what refused it, for the access log (the filter's name).
    @ivar message: a short human-readable reason for the response body.
    @ivar headers: extra response headers as C{(name, value)} byte pairs.
    """

    status: int
    rule: str
    message: str = ""
    headers: Tuple[Tuple[bytes, bytes], ...] = ()


class RequestInfo:
    """
    What a filter sees of a request.

    @ivar listener: the listener's name.
    @ivar client_ip: the client's address as text.
    @ivar method: the method as text (C{"GET"}, C{"CONNECT"}).
    @ivar scheme: C{"http"} or C{"https"} (for CONNECT, C{""}).
    @ivar host: the target host, lower case, without port.
    @ivar port: the target port.
    @ivar path: the origin-form target (path and query), C{""} for CONNECT.
    @ivar headers: the request's header list, C{(name, value)} bytes,
        mutable.
    @ivar connect: true for a CONNECT tunnel request.
    @ivar kind: the listener's kind: C{"forward"} (authentication is
        C{Proxy-Authorization}/407), C{"reverse"} (C{Authorization}/401) or
        C{"tcp"}.
    @ivar request_id: a short unique id for this request (for logs and
        C{{request_id}} header placeholders).
    @ivar claims: what an authentication filter learnt about the client
        (the verified JWT claims, C{{"user": name}} after basic auth), for
        the filters after it (e.g. a rate limit keyed by a claim).
    """

    __slots__ = (
        "listener",
        "client_ip",
        "method",
        "scheme",
        "host",
        "port",
        "path",
        "headers",
        "connect",
        "kind",
        "request_id",
        "claims",
    )

    def __init__(
        self,
        listener: str,
        client_ip: str,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        headers: List[Tuple[bytes, bytes]],
        connect: bool = False,
        kind: str = "reverse",
        request_id: str = "",
    ) -> None:
        self.listener = listener
        self.client_ip = client_ip
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.headers = headers
        self.connect = connect
        self.kind = kind
        self.request_id = request_id or new_request_id()
        self.claims: Dict[str, Any] = {}

    def __repr__(self) -> str:
        return (
            f"<RequestInfo {self.method} {self.scheme}://{self.host}:{self.port}"
            f"{self.path} from {self.client_ip}>"
        )


_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


def new_request_id() -> str:
    """
    A request id unique within this process and unlikely to repeat across
    processes: a random per-process prefix and a counter.
    """
    return f"{_prefix}-{next(_ids):x}"


class ErrorList:
    """
    Collects configuration problems as C{(key_path, message)} pairs.
    """

    def __init__(self) -> None:
        self.items: List[Tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)


def string_list(
    value: Any, path: str, errors: ErrorList
) -> Optional[List[Tuple[str, str]]]:
    """
    C{value} as a list of C{(key_path, string)} pairs, or L{None} (with an
    error) if it is not a list of strings.
    """
    if not isinstance(value, list):
        errors.add(path, f"must be a list of strings, not {type(value).__name__}")
        return None
    items = []
    ok = True
    for i, item in enumerate(value):
        if not isinstance(item, str):
            errors.add(f"{path}[{i}]", f"must be a string, not {type(item).__name__}")
            ok = False
        else:
            items.append((f"{path}[{i}]", item))
    return items if ok else None


def _builtin_types() -> Dict[str, Any]:
    from twisted_proxy.filters import acl

    return {
        "acl": acl,
        "rate_limit": importlib.import_module("twisted_proxy.filters.rate_limit"),
        "ip_block": importlib.import_module("twisted_proxy.filters.ip_block"),
        "basic_auth": importlib.import_module("twisted_proxy.filters.basic_auth"),
        "jwt": importlib.import_module("twisted_proxy.filters.jwt_auth"),
        "headers": importlib.import_module("twisted_proxy.filters.headers"),
        "transform": importlib.import_module("twisted_proxy.filters.transform"),
    }


def filter_type(name: str) -> Optional[Any]:
    """
    The module implementing the built-in filter type C{name}, or L{None}.
    """
    return _builtin_types().get(name)


def builtin_type_names() -> Sequence[str]:
    return sorted(_builtin_types())


def load_object(dotted: str) -> Any:
    """
    Import C{"package.module:name"} (or C{"package.module.name"}).

    @raise ValueError: with a readable message if it cannot be loaded.
    """
    if ":" in dotted:
        module_name, _, attr = dotted.partition(":")
    else:
        module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{dotted!r} is not of the form 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ValueError(f"cannot import {module_name!r}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attr!r}") from None
    return obj


Verdict = Optional[Deny]
FilterCallable = Callable[[RequestInfo], Any]
