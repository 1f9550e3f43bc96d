# -*- test-case-name: tests.test_forward -*-
"""
Target choice for forward listeners: an absolute URI, a CONNECT authority,
and the parent proxy (if any) that requests for a domain go through.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from typing import Any, Optional, Sequence, Tuple


from twisted_proxy.domains import DomainSet
from twisted_proxy.http import policy
from twisted_proxy.http.parser import BadRequest, RequestHead
from twisted_proxy.target import Target, bracket, parse_authority


#: where the authority of an absolute URI ends
_AUTHORITY_END = re.compile(rb"[/?#]")


class ForwardRouter:
    """
    Chooses the target of requests on a forward listener.

    @param parents: C{(domains, host, port)} triples; the first whose
        domains match a request's host is its parent proxy.
    @param own_addresses: C{(host, port)} pairs the proxy's forward
        listeners listen on (C{"*"} for a wildcard bind); a request for one
        of them, named by a literal address or C{localhost}, would loop and
        is refused (508) before anything is connected. Other names and
        other addresses of this machine are caught once connected (see
        L{twisted_proxy.engine.policy.RequestPolicy}).
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
        # the ports of own_addresses (which the service fills as it binds)
        self._own_ports: frozenset = frozenset()
        self._own_count = 0
        self.anonymity = anonymity
        self.add_via = anonymity != policy.ELITE
        #: the Via entry of the requests it forwards (its listener's mark)
        self.via_token = policy.request_via(policy.listener_mark())

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
            self.via_token,
        )

    def _ports(self, own: set) -> frozenset:
        if len(own) != self._own_count:
            self._own_ports = frozenset(p for _, p in own)
            self._own_count = len(own)
        return self._own_ports

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
                host, port, head.target, head.target, f"{bracket(host)}:{port}", connect=True
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
            # the request line passed llhttp: no spaces or control bytes
            found = _AUTHORITY_END.search(raw, scheme_len)
            if found is None:
                end = len(raw)
                path = b"/"
            else:
                end = found.start()
                path = raw[end:] if raw[end] == 47 else b"/" + raw[end:]  # 47: "/"
                hash_ = path.find(b"#")
                if hash_ >= 0:
                    path = path[:hash_] or b"/"
            authority = raw[scheme_len:end]
            if not authority:
                raise BadRequest(400, "no host in the request URI")
            if b"@" in authority:
                raise BadRequest(400, "credentials in the request URI are not forwarded")
            if authority[-1] == 58:  # 58: ":", an empty port
                raise BadRequest(400, "invalid port in the request URI")
            host, port = parse_authority(authority, 80)
            if port == 80 and authority.endswith(b":80"):
                authority = authority[:-3]
            target = Target(host, port, authority, path, raw)
        own = self.own_addresses
        if own and ((host, port) in own or (port in self._ports(own) and _is_local(host))):
            raise BadRequest(508, "this request would loop through the proxy")
        if self.parents:
            target.parent = self.parent_for(host)
            if target.parent is not None and not target.connect:
                target.client_path = target.path
                target.path = b"http://" + target.authority + target.path
        return target


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

