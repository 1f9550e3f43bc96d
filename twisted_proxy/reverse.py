# -*- test-case-name: tests.test_reverse -*-
"""
Target choice for reverse listeners: routes (host and path prefix) to
backends.

Pure: no sockets, no clock. A route's host is exact or C{*.example.com}
(subdomains at any depth, not the apex) or absent (any host); its path is a
prefix. The longest matching prefix wins; on a tie the more specific host
wins (exact, then the longest wildcard, then any host). An absolute-form
request is routed by its URI's authority (RFC 9112 §3.2.2), to configured
backends only, so a reverse listener is never an open proxy; CONNECT is
refused with 405.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted_proxy.addresses import AddressMatcher
from twisted_proxy.http import policy
from twisted_proxy.http.parser import BadRequest, RequestHead
from twisted_proxy.target import Target, parse_authority

#: routing decisions remembered per (request target, Host): a client asks
#: for the same few URLs again and again, and a decision is a pure function
#: of them (the table is rebuilt on reload). Forgotten all at once when full.
MEMO_SIZE = 4096
#: longer targets are routed each time (bounds the memory held)
MEMO_TARGET = 512


class Route:
    """
    A compiled C{[[listener.route]]}.
    """

    __slots__ = (
        "host",
        "path",
        "backend",
        "filters",
        "strip_prefix",
        "rewrite_prefix",
        "preserve_host",
        "name",
        "cache",
        "response_buffer",
        "request_buffer",
        "stats",
    )

    def __init__(
        self,
        backend: Any,
        host: Optional[str] = None,
        path: str = "/",
        filters: Sequence[Any] = (),
        strip_prefix: bool = False,
        rewrite_prefix: Optional[str] = None,
        preserve_host: bool = True,
        name: str = "",
    ) -> None:
        self.backend = backend
        self.host = host.lower().rstrip(".") if host else None
        self.path = path.encode("utf-8")
        self.filters = tuple(filters)
        self.strip_prefix = strip_prefix
        self.rewrite_prefix = rewrite_prefix.encode("utf-8") if rewrite_prefix is not None else None
        self.preserve_host = preserve_host
        self.name = name or f"{host or '*'}{path}"
        #: the route's cache (a twisted_proxy.cache.shared.SharedCache),
        #: False for none, or None: as the listener
        self.cache: Any = None
        #: bytes; None: the listener's (engine/buffer.py)
        self.response_buffer: Optional[int] = None
        #: its L{twisted_proxy.stats.RouteStats}, once a request took it
        #: (kept by the listener's stats across reloads, by route name)
        self.stats: Any = None
        self.request_buffer: Optional[int] = None

    def rewrite(self, path: bytes) -> bytes:
        """
        The path the backend gets for C{path} (which this route matched).
        """
        if self.rewrite_prefix is not None:
            return self.rewrite_prefix + path[len(self.path):]
        if self.strip_prefix:
            rest = path[len(self.path):]
            if not rest.startswith(b"/"):
                rest = b"/" + rest
            return rest
        return path

    def __repr__(self) -> str:
        return f"<Route {self.name} -> {getattr(self.backend, 'name', self.backend)}>"


class RoutingTable:
    """
    Routes indexed by host: exact hosts in a dict, wildcards by suffix,
    then the routes for any host.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self.exact: Dict[str, List[Route]] = {}
        self.wildcard: Dict[str, List[Route]] = {}
        self.any: List[Route] = []
        for route in routes:
            if route.host is None:
                group = self.any
            elif route.host.startswith("*."):
                group = self.wildcard.setdefault(route.host[2:], [])
            else:
                group = self.exact.setdefault(route.host, [])
            group.append(route)
        for group in [self.any, *self.exact.values(), *self.wildcard.values()]:
            group.sort(key=lambda r: len(r.path), reverse=True)

    def _groups(self, host: str) -> List[List[Route]]:
        exact = self.exact.get(host)
        if not self.wildcard:
            # the usual table: no wildcard hosts
            if exact:
                return [exact, self.any] if self.any else [exact]
            return [self.any]
        groups = []
        if exact:
            groups.append(exact)
        if self.wildcard:
            labels = host.split(".")
            # the longest proper suffix first: the most specific wildcard
            for i in range(1, len(labels)):
                group = self.wildcard.get(".".join(labels[i:]))
                if group:
                    groups.append(group)
        if self.any:
            groups.append(self.any)
        return groups

    def match(self, host: str, path: bytes) -> Optional[Route]:
        """
        The route for C{host} (lower case, no port) and C{path}.
        """
        best: Optional[Route] = None
        best_len = -1
        for group in self._groups(host):
            for route in group:
                plen = len(route.path)
                if plen <= best_len:
                    break
                if path.startswith(route.path):
                    best = route
                    best_len = plen
                    break
        return best


_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _decode_unreserved(path: bytes) -> bytes:
    """
    Decode percent-encoded unreserved characters (RFC 3986 §6.2.2.2: they
    mean the same decoded), so C{/%61dmin} is C{/admin} to the routes as it
    is to the backend. Reserved ones (C{%2F}, C{%3F}, ...) stay encoded.
    """
    pieces = path.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece) >= 2 and piece[0] in _HEX and piece[1] in _HEX:
            char = int(piece[:2], 16)
            if char in _UNRESERVED:
                out.append(bytes((char,)) + piece[2:])
                continue
        out.append(b"%" + piece)
    return b"".join(out)


def normalize_path(path: bytes) -> bytes:
    """
    Decode percent-encoded unreserved characters and resolve C{.} and C{..}
    segments (also percent-encoded) so that a route prefix (and the filters
    on it) cannot be sidestepped with C{/public/../admin} or C{/%61dmin}.
    The query is kept as is.
    """
    query = b""
    q = path.find(b"?")
    if q >= 0:
        path, query = path[:q], path[q:]
    if b"%" in path:
        path = _decode_unreserved(path)
    if b"/." not in path:
        return path + query
    segments = path.split(b"/")
    out: List[bytes] = []
    for segment in segments[1:]:
        if segment == b".":
            continue
        if segment == b"..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = segments[-1] in (b".", b"..")
    result = b"/" + b"/".join(out)
    if trailing and not result.endswith(b"/"):
        result += b"/"
    return result + query


class ReverseRouter:
    """
    Chooses the route (and so the backend) of requests on a reverse
    listener, and writes the head the backend gets.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        trusted_proxies: Sequence[Any] = (),
        hide_headers: Sequence[str] = ("Server", "X-Powered-By"),
        forwarded: bool = False,
        add_via: bool = True,
        scheme: str = "http",
        default_port: int = 80,
        strip_headers: Sequence[str] = (),
    ) -> None:
        self.table = RoutingTable(routes)
        self.trusted_proxies = tuple(trusted_proxies)
        self.hide = frozenset(h.lower().encode("latin-1") for h in hide_headers)
        self.forwarded = forwarded
        self.add_via = add_via
        self.scheme = scheme
        self.bscheme = scheme.encode("ascii")
        self.default_port = default_port
        self.strip = frozenset(h.lower().encode("latin-1") for h in strip_headers)
        #: the Via entry of the requests it forwards (its listener's mark)
        self.via_token = policy.request_via(policy.listener_mark())
        self._trusted = AddressMatcher(self.trusted_proxies)
        #: (target, Host) -> what route() decided (see MEMO_SIZE)
        self._routes: Dict[Tuple[bytes, Optional[bytes]], tuple] = {}

    def is_trusted(self, client_ip: str) -> bool:
        """
        Whether C{client_ip} is one of the C{trusted_proxies}.
        """
        return self._trusted.match(client_ip) is not None

    def route(self, head: RequestHead) -> Target:
        """
        The target of C{head}: a route and its backend (the server is
        chosen later, per attempt).

        @raise BadRequest: 405 for CONNECT, 404 when no route matches, 400
            for a malformed target.
        """
        if head.method == b"CONNECT":
            raise BadRequest(405, "CONNECT is not allowed here")
        raw = head.target
        key = (raw, head.host)
        found = self._routes.get(key)
        if found is None:
            found = self._route(raw, head)
            if len(raw) <= MEMO_TARGET and raw != b"*":
                routes = self._routes
                if len(routes) >= MEMO_SIZE:
                    routes.clear()
                routes[key] = found
        host, port, authority, path, sent, route = found
        target = Target(
            host,
            port,
            authority or b"",
            sent,
            (self.bscheme, b"://", authority or b"", path),
            scheme=self.scheme,
        )
        if sent is not path:
            # filters judge what the client asked for, not the rewrite
            target.client_path = path
        target.route = route
        target.backend = route.backend
        target.filters = route.filters
        return target

    def _route(self, raw: bytes, head: RequestHead) -> tuple:
        """
        What L{route} decides for a request target and Host (the same for
        every request that has them): C{(host, port, authority, path,
        sent, route)}.
        """
        if raw.startswith(b"/"):
            authority = head.host
            path = raw
        elif raw[:7].lower() == b"http://" or raw[:8].lower() == b"https://":
            start = raw.find(b"//") + 2
            slash = raw.find(b"/", start)
            question = raw.find(b"?", start)
            ends = [i for i in (slash, question) if i >= 0]
            end = min(ends) if ends else len(raw)
            authority = raw[start:end]
            if not authority:
                # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid
                raise BadRequest(400, "invalid request target")
            path = raw[end:] if slash == end else b"/" + raw[end:]
        elif raw == b"*" and head.method == b"OPTIONS":
            authority = head.host
            path = b"*"
        else:
            raise BadRequest(400, "invalid request target")
        if b"#" in path:
            path = path[: path.find(b"#")] or b"/"
        if authority:
            host, port = parse_authority(authority, self.default_port)
        else:
            host, port = "", self.default_port
        if path != b"*":
            path = normalize_path(path)
        route = self.table.match(host, path if path != b"*" else b"/")
        if route is None:
            raise BadRequest(404, "no route for this host and path")
        sent = route.rewrite(path) if path != b"*" else path
        return host, port, authority, path, sent, route

    def request_head(
        self, head: RequestHead, target: Target, client_ip: str, server: Any
    ) -> bytes:
        route = target.route
        if route.preserve_host and target.authority:
            host = target.authority
        else:
            host = server.label.encode("ascii")
        return policy.reverse_request_head(
            head.method,
            target.path,
            head.headers,
            host,
            target.authority or None,
            client_ip,
            self.bscheme,
            self.is_trusted(client_ip),
            head.framing,
            self.add_via,
            self.forwarded,
            head.upgrade,
            head.expect_continue,
            self.strip,
            head.tokens,
            self.via_token,
        )
