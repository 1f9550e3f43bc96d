# -*- test-case-name: tests.test_filters -*-
"""
What a filter sees and says, and the helpers filter types check their
tables with.

A filter sees a L{RequestInfo} and answers L{None} (go on) or a L{Deny} (the
proxy answers the client itself). A filter type's C{parse} reports problems
of its C{[filter.NAME]} table into an L{ErrorList}; L{string_list} reads a
list-of-strings key.

The built-in filter types are listed in L{twisted_proxy.filters.registry};
this module imports none of the filter modules (they import it).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

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


class BadBody(ValueError):
    """
    Raised by a body transform's C{transform_request} to refuse a request
    body the client got wrong (not valid JSON, say): the client gets 400
    with the message. Any other exception of a transform is a bug of that
    transform: a logged 500.
    """


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


Verdict = Optional[Deny]
FilterCallable = Callable[[RequestInfo], Any]
