# -*- test-case-name: tests.test_forward -*-
"""
Target choice for forward listeners: an absolute URI, a CONNECT authority,
and the parent proxy (if any) that requests for a domain go through.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any, Optional, Sequence, Tuple

from httptools import parse_url  # type: ignore[attr-defined]
from httptools import HttpParserInvalidURLError  # type: ignore[attr-defined]

from twisted_proxy.domains import DomainSet
from twisted_proxy.http import policy
from twisted_proxy.http.parser import BadRequest, RequestHead


class Target:
    """
    Where a request goes.

    @ivar host: the origin host (text, lower case, IPv6 without brackets).
    @ivar port: the origin port.
    @ivar authority: the C{Host} value to send (C{b"host[:port]"}).
    @ivar path: the origin-form target to send (C{b"/..."}); for CONNECT
        the authority.
    @ivar url: the request as the access log shows it.
    @ivar connect: a CONNECT tunnel.
    @ivar parent: C{(host, port)} of the parent proxy to go through, or
        L{None} to go direct.
    """

    __slots__ = (
        "host",
        "port",
        "authority",
        "path",
        "_url",
        "connect",
        "parent",
        "scheme",
        "route",
        "backend",
        "filters",
    )

    def __init__(
        self,
        host: str,
        port: int,
        authority: bytes,
        path: bytes,
        url: Any,
        connect: bool = False,
        parent: Optional[Tuple[str, int]] = None,
        scheme: str = "http",
    ) -> None:
        self.host = host
        self.port = port
        self.authority = authority
        self.path = path
        # text, or the bytes it is made of (decoded when first asked for:
        # only the access log and filters need it)
        self._url = url
        self.connect = connect
        self.parent = parent
        self.scheme = scheme
        self.route: Any = None
        self.backend: Any = None
        self.filters: Tuple[Any, ...] = ()

    @property
    def url(self) -> str:
        """
        The request as the access log shows it.
        """
        url = self._url
        if not isinstance(url, str):
            url = self._url = b"".join(url).decode("latin-1") if isinstance(url, tuple) else url.decode("latin-1")
        return url  # type: ignore[no-any-return]

    @property
    def address(self) -> Tuple[str, int]:
        """
        The address the proxy connects to.
        """
        return self.parent if self.parent is not None else (self.host, self.port)

    def __repr__(self) -> str:
        via = f" via {self.parent[0]}:{self.parent[1]}" if self.parent else ""
        return f"<Target {self.url}{via}>"


def _host_text(raw: bytes) -> str:
    host = raw.decode("ascii", "strict").lower()
    if host.endswith("."):
        host = host[:-1]
    return host


_AUTHORITIES: dict = {}


def parse_authority(authority: bytes, default_port: Optional[int]) -> Tuple[str, int]:
    """
    Split C{host:port} (C{[v6]:port}) into a host and a port (remembering
    the answer for the authorities seen most).

    @raise BadRequest: if it is not a valid authority.
    """
    key = (authority, default_port)
    found = _AUTHORITIES.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    result = _parse_authority(authority, default_port)
    if len(_AUTHORITIES) >= 4096:
        _AUTHORITIES.clear()
    _AUTHORITIES[key] = result
    return result


def _parse_authority(authority: bytes, default_port: Optional[int]) -> Tuple[str, int]:
    try:
        text = authority.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "invalid authority") from None
    if not text or any(c in text for c in " \t/\\@?#"):
        raise BadRequest(400, f"invalid authority {text!r}")
    port: Optional[int]
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadRequest(400, f"invalid authority {text!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadRequest(400, f"invalid authority {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        else:
            port_text = port_text_
            if ":" in host:
                raise BadRequest(400, f"invalid authority {text!r}")
    if port_text is None or port_text == "":
        if default_port is None:
            raise BadRequest(400, f"port missing in {text!r}")
        port = default_port
    else:
        if not port_text.isdigit() or len(port_text) > 5:
            raise BadRequest(400, f"invalid port in {text!r}")
        port = int(port_text)
    if not 0 < port < 65536:
        raise BadRequest(400, f"invalid port in {text!r}")
    if not host:
        raise BadRequest(400, f"invalid authority {text!r}")
    host = host.lower().rstrip(".")
    return host, port


class ForwardRouter:
    """
    Chooses the target of requests on a forward listener.

    @param parents: C{(domains, host, port)} triples; the first whose
        domains match a request's host is its parent proxy.
    @param own_addresses: C{(host, port)} pairs the proxy itself listens
        on; a request for one of them would loop and is refused.
    """

    #: response headers removed (none: a forward proxy hides nothing)
    hide: frozenset = frozenset()

    def __init__(
        self,
        parents: Sequence[Tuple[Sequence[str], str, int]] = (),
        own_addresses: Optional[set] = None,
        anonymity: str = policy.ANONYMOUS,
    ) -> None:
        self.parents = [(DomainSet(domains), host, port) for domains, host, port in parents]
        self.own_addresses = own_addresses if own_addresses is not None else set()
        self.anonymity = anonymity
        self.add_via = anonymity != policy.ELITE

    def request_head(
        self, head: RequestHead, target: Target, client_ip: str, server: Any = None
    ) -> bytes:
        """
        The head sent upstream: origin-form to an origin, absolute-form to a
        parent proxy, with the listener's anonymity applied.
        """
        return policy.request_head(
            head.method,
            target.path,
            head.headers,
            target.authority,
            self.anonymity,
            client_ip,
            head.framing,
            head.upgrade,
            head.expect_continue,
            head.tokens,
        )

    def parent_for(self, host: str) -> Optional[Tuple[str, int]]:
        for domains, phost, pport in self.parents:
            if domains.matches(host):
                return (phost, pport)
        return None

    def route(self, head: RequestHead) -> Target:
        """
        The target of C{head}.

        @raise BadRequest: for a target a forward proxy cannot serve.
        """
        if head.method == b"CONNECT":
            host, port = parse_authority(head.target, None)
            target = Target(
                host, port, head.target, head.target, f"{_bracket(host)}:{port}", connect=True
            )
        else:
            raw = head.target
            lower = raw[:8].lower()
            if lower.startswith(b"http://"):
                scheme_len = 7
            elif lower.startswith(b"https://"):
                raise BadRequest(
                    400, "https:// URLs are not proxied in the clear; use CONNECT"
                )
            else:
                raise BadRequest(
                    400, "this is a proxy: the request target must be an absolute http:// URI"
                )
            try:
                url = parse_url(raw)
            except HttpParserInvalidURLError:
                raise BadRequest(400, "invalid request URI") from None
            if url.userinfo is not None:
                raise BadRequest(400, "credentials in the request URI are not forwarded")
            if not url.host:
                raise BadRequest(400, "no host in the request URI")
            slash = raw.find(b"/", scheme_len)
            question = raw.find(b"?", scheme_len)
            hash_ = raw.find(b"#", scheme_len)
            ends = [i for i in (slash, question, hash_) if i >= 0]
            end = min(ends) if ends else len(raw)
            authority = raw[scheme_len:end]
            host, port = parse_authority(authority, 80)
            if slash == end:
                path = raw[end:]
            else:
                path = b"/" + raw[end:]
            if hash_ >= 0:
                path = path[: path.find(b"#")] or b"/"
            if port == 80 and authority.endswith(b":80"):
                authority = authority[:-3]
            target = Target(host, port, authority, path, raw)
        own = self.own_addresses
        if own and (
            (host, port) in own
            or (any(p == port for _, p in own) and _is_local(host))
        ):
            raise BadRequest(400, "refusing to proxy a request to the proxy itself")
        if self.parents:
            target.parent = self.parent_for(host)
            if target.parent is not None and not target.connect:
                target.path = b"http://" + target.authority + target.path
        return target


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@functools.lru_cache(maxsize=1024)
def _is_local(host: str) -> bool:
    """
    Whether C{host} names this machine: C{localhost}, a loopback or the
    unspecified address, in any spelling the resolver accepts
    (C{2130706433}, C{0x7f.1}, C{::ffff:127.0.0.1}).
    """
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: Any = ipaddress.ip_address(host)
    except ValueError:
        try:
            # the classic inet_aton forms; a parser only, no DNS
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return bool(address.is_loopback or address.is_unspecified)

