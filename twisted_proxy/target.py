# -*- test-case-name: tests.test_target -*-
"""
Where a request goes: the value type both routers produce
(L{twisted_proxy.forward}, L{twisted_proxy.reverse}) and the engine consumes,
and the parsing of C{host:port} authorities they share.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from twisted_proxy.http.parser import BadRequest


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
        "client_path",
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
        #: the origin-form path as the client asked for it (normalised),
        #: before a route rewrites it or a parent proxy needs absolute form:
        #: what filters see; L{None} when it is C{path}
        self.client_path: Optional[bytes] = None

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

    @property
    def request_path(self) -> bytes:
        """
        The path the client asked for (what filters judge).
        """
        path = self.client_path
        return self.path if path is None else path

    def __repr__(self) -> str:
        via = f" via {self.parent[0]}:{self.parent[1]}" if self.parent else ""
        return f"<Target {self.url}{via}>"


_AUTHORITIES: dict = {}
#: a host name or IPv4 address: RFC 3986's reg-name without percent-escapes
_REG_NAME = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]+\Z")
#: inside brackets: an IPv6 address (ipaddress checks it where it matters)
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+\Z")


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
    if not host or not (_IPV6 if text.startswith("[") else _REG_NAME).match(host):
        raise BadRequest(400, f"invalid authority {text!r}")
    host = host.lower().rstrip(".")
    return host, port


def bracket(host: str) -> str:
    """
    C{host} as it is written in an authority (IPv6 in brackets).
    """
    return f"[{host}]" if ":" in host else host
