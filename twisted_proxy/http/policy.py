# -*- test-case-name: tests.test_http_policy -*-
"""
Header policy: what crosses the proxy in each direction, and how the heads
the proxy sends are serialised.

Headers stay lists of C{(name, value)} byte pairs as received; names keep
their case and are compared lower-cased.
"""

from __future__ import annotations

import secrets

from typing import Any, FrozenSet, Iterable, List, Optional, Sequence, Tuple

Headers = List[Tuple[bytes, bytes]]

#: Removed in both directions (RFC 9110 §7.6.1), plus the proxy-only ones.
HOP_BY_HOP: FrozenSet[bytes] = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    ]
)

#: Headers that say who the client is.
FORWARDING: FrozenSet[bytes] = frozenset(
    [b"x-forwarded-for", b"forwarded", b"x-real-ip", b"x-forwarded-host",
     b"x-forwarded-proto", b"x-forwarded-port", b"client-ip", b"true-client-ip"]
)

#: the Via entry of responses
VIA_TOKEN = b"1.1 twisted-proxy"
#: what every Via mark of this process starts with: requests carry their
#: listener's mark in a comment after the pseudonym (RFC 9110 §7.6.3), so a
#: request that comes back to the listener that sent it is seen as a loop
VIA_PREFIX = b"twisted-proxy (" + secrets.token_hex(4).encode("ascii") + b"."


def listener_mark() -> bytes:
    """
    A new Via mark for one listener of this process.
    """
    return VIA_PREFIX + secrets.token_hex(4).encode("ascii") + b")"


def request_via(mark: bytes) -> bytes:
    """
    The Via entry a listener with C{mark} adds to the requests it forwards.
    """
    return b"1.1 " + mark

TRANSPARENT = "transparent"
ANONYMOUS = "anonymous"
ELITE = "elite"

# framing of a body the proxy sends
NO_BODY = 0
CONTENT_LENGTH = 1
CHUNKED = 2
CLOSE_DELIMITED = 3


def connection_tokens(headers: Iterable[Tuple[bytes, bytes]]) -> FrozenSet[bytes]:
    """
    The lower-cased option names listed in C{Connection} (and the obsolete
    C{Proxy-Connection}) headers.
    """
    tokens = set()
    for name, value in headers:
        lname = name.lower()
        if lname == b"connection" or lname == b"proxy-connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


#: request header names the serialisers must look at (the rest pass as is)
REQUEST_SPECIAL: FrozenSet[bytes] = (
    HOP_BY_HOP | FORWARDING | {b"host", b"content-length", b"via", b"expect"}
)

#: "the caller does not know the Connection options": find them here
UNKNOWN_TOKENS: Any = object()
_COMPUTE = UNKNOWN_TOKENS


def request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[Tuple[bytes, bytes]],
    host: bytes,
    anonymity: str,
    client_ip: str,
    framing: int,
    upgrade: Optional[bytes] = None,
    drop_expect: bool = False,
    tokens: Any = _COMPUTE,
    via_token: bytes = VIA_TOKEN,
) -> bytes:
    """
    Serialise the request head the proxy sends upstream.

    @param target: origin-form (or absolute-form, towards a parent proxy).
    @param host: the C{Host} value to send.
    @param anonymity: L{TRANSPARENT}, L{ANONYMOUS} or L{ELITE}.
    @param framing: L{NO_BODY}, L{CONTENT_LENGTH} (the received
        C{Content-Length} header is kept) or L{CHUNKED}.
    @param upgrade: the C{Upgrade} value to pass through, if any.
    @param drop_expect: remove C{Expect} (the proxy answered 100 itself).
    @param tokens: the options named in C{Connection} headers if the caller
        knows them (the parser does), else they are found here.
    """
    if tokens is _COMPUTE:
        tokens = connection_tokens(headers)
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    append = lines.append
    via, forwarding = _relay_request_headers(headers, tokens, framing, drop_expect, lines)
    xff: List[bytes] = []
    keep_forwarding = anonymity == TRANSPARENT
    if keep_forwarding:
        for lname, name, value in forwarding:
            if lname == b"x-forwarded-for":
                xff.append(value)
            else:
                append(name + b": " + value)
    if anonymity != ELITE:
        via.append(via_token)
        append(b"Via: " + b", ".join(via))
    if keep_forwarding:
        xff.append(client_ip.encode("ascii"))
        append(b"X-Forwarded-For: " + b", ".join(xff))
    return _end_request_head(lines, upgrade, framing)


def _relay_request_headers(
    headers: Sequence[Tuple[bytes, bytes]],
    tokens: Optional[Iterable[bytes]],
    framing: int,
    drop_expect: bool,
    lines: List[bytes],
    strip: FrozenSet[bytes] = frozenset(),
) -> Tuple[List[bytes], List[Tuple[bytes, bytes, bytes]]]:
    """
    Append to C{lines} the client's request headers that pass as they are;
    leave out hop-by-hop ones, those named in C{Connection}, C{Host}, the
    names in C{strip} and (C{drop_expect}) C{Expect}.

    @return: the C{Via} values received, and the forwarding headers
        (C{X-Forwarded-*}, C{Forwarded}, ...) as C{(lname, name, value)} for
        the caller's anonymity or trust policy.
    """
    append = lines.append
    via: List[bytes] = []
    forwarding: List[Tuple[bytes, bytes, bytes]] = []
    special = REQUEST_SPECIAL
    colon = b": ".join  # (one call per field: no intermediate bytes)
    for field in headers:
        name, value = field
        lname = name.lower()
        if (
            lname not in special
            and not (tokens and lname in tokens)
            and not (strip and lname in strip)
        ):
            append(colon(field))
            continue
        if lname in HOP_BY_HOP or lname == b"host":
            continue
        if lname == b"content-length":
            # never removed for being named in Connection: the body is
            # relayed as received, so its framing must go with it
            if framing == CONTENT_LENGTH:
                append(name + b": " + value)
            continue
        if tokens and lname in tokens:
            continue
        if lname == b"via":
            via.append(value)
            continue
        if lname in FORWARDING:
            forwarding.append((lname, name, value))
            continue
        if strip and lname in strip:
            continue
        if drop_expect and lname == b"expect":
            continue
        append(name + b": " + value)
    return via, forwarding


def _end_request_head(lines: List[bytes], upgrade: Optional[bytes], framing: int) -> bytes:
    if upgrade is not None:
        lines.append(b"Connection: Upgrade")
        lines.append(b"Upgrade: " + upgrade)
    if framing == CHUNKED:
        lines.append(b"Transfer-Encoding: chunked")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


#: response header names the serialiser must look at (the rest pass as is)
RESPONSE_SPECIAL: FrozenSet[bytes] = HOP_BY_HOP | {b"via", b"content-length"}


def response_skip(hide: Iterable[bytes] = ()) -> FrozenSet[bytes]:
    """
    The names L{response_head} treats specially, plus C{hide} (lower-cased
    names of further headers to remove); computed once per listener.
    """
    return RESPONSE_SPECIAL | frozenset(hide)


def response_head(
    status: int,
    reason: bytes,
    headers: Sequence[Tuple[bytes, bytes]],
    framing: int,
    add_via: bool,
    close: bool,
    keep_alive_header: bool = False,
    upgrade: Optional[bytes] = None,
    hide: FrozenSet[bytes] = frozenset(),
    lnames: Optional[Sequence[bytes]] = None,
    tokens: Optional[Iterable[bytes]] = None,
    skip: Optional[FrozenSet[bytes]] = None,
) -> bytes:
    """
    Serialise the response head the proxy sends to its client.

    @param framing: how the proxy frames the body it relays:
        L{NO_BODY} and L{CONTENT_LENGTH} keep the received
        C{Content-Length}; L{CHUNKED} adds C{Transfer-Encoding: chunked};
        L{CLOSE_DELIMITED} sends neither.
    @param close: add C{Connection: close}.
    @param keep_alive_header: add C{Connection: keep-alive} (HTTP/1.0
        clients that asked for it).
    @param upgrade: for a 101, the C{Upgrade} value to relay.
    @param hide: lower-cased names of further headers to remove.
    @param lnames: the lower-cased names, parallel to C{headers}, with
        C{tokens} the options named in C{Connection} (the parser has both);
        computed here when absent.
    @param skip: L{response_skip}C{(hide)}, precomputed.
    """
    if lnames is None:
        lnames = [name.lower() for name, _ in headers]
        tokens = connection_tokens(headers)
    if skip is None:
        skip = response_skip(hide)
    if tokens and not HOP_BY_HOP.issuperset(tokens):
        skip = skip | frozenset(tokens)
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    append = lines.append
    via: List[bytes] = []
    colon = b": ".join  # (one call per field: no intermediate bytes)
    for field, lname in zip(headers, lnames):
        if lname in skip:
            if lname == b"content-length":
                # kept even if named in Connection (see request_head)
                if framing == CONTENT_LENGTH or framing == NO_BODY:
                    append(colon(field))
            elif lname == b"via" and lname not in hide:
                via.append(field[1])
            continue
        append(colon(field))
    if add_via:
        via.append(VIA_TOKEN)
    if via:
        append(b"Via: " + b", ".join(via))
    if upgrade is not None:
        append(b"Connection: Upgrade")
        append(b"Upgrade: " + upgrade)
    elif close:
        append(b"Connection: close")
    elif keep_alive_header:
        append(b"Connection: keep-alive")
    if framing == CHUNKED:
        append(b"Transfer-Encoding: chunked")
    append(b"\r\n")
    return b"\r\n".join(lines)


def header_value(headers: Iterable[Tuple[bytes, bytes]], lname: bytes) -> Optional[bytes]:
    """
    The value of the first header named C{lname} (lower case), or L{None}.
    """
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None


def _forwarded_node(client_ip: str) -> bytes:
    if ":" in client_ip:
        return b'"[' + client_ip.encode("ascii") + b']"'
    return client_ip.encode("ascii")


def reverse_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[Tuple[bytes, bytes]],
    host: bytes,
    client_host: Optional[bytes],
    client_ip: str,
    scheme: bytes,
    trusted: bool,
    framing: int,
    add_via: bool,
    forwarded: bool,
    upgrade: Optional[bytes] = None,
    drop_expect: bool = False,
    strip: FrozenSet[bytes] = frozenset(),
    tokens: Any = _COMPUTE,
    via_token: bytes = VIA_TOKEN,
) -> bytes:
    """
    Serialise the request head a reverse proxy sends to a backend.

    C{X-Forwarded-For} gets the client address appended (to what a trusted
    client sent; an untrusted client's forwarding headers are removed
    first), C{X-Forwarded-Proto} and C{X-Forwarded-Host} say how the client
    reached the proxy, and, when C{forwarded}, an RFC 7239 C{Forwarded}
    element is appended too.

    @param host: the C{Host} value to send.
    @param client_host: the C{Host} the client asked for (for
        C{X-Forwarded-Host}).
    @param trusted: the client is a trusted proxy: its forwarding headers
        are kept and extended.
    @param strip: lower-cased names of further client headers to remove
        (headers the proxy sets itself).
    """
    if tokens is _COMPUTE:
        tokens = connection_tokens(headers)
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    append = lines.append
    via, forwarding = _relay_request_headers(headers, tokens, framing, drop_expect, lines, strip)
    xff: List[bytes] = []
    fwd: List[bytes] = []
    proto: Optional[bytes] = None
    xhost: Optional[bytes] = None
    if trusted:
        for lname, name, value in forwarding:
            if lname == b"x-forwarded-for":
                xff.append(value)
            elif lname == b"forwarded":
                fwd.append(value)
            elif lname == b"x-forwarded-proto":
                proto = value
            elif lname == b"x-forwarded-host":
                xhost = value
            else:
                append(name + b": " + value)
    client = client_ip.encode("ascii")
    xff.append(client)
    append(b"X-Forwarded-For: " + b", ".join(xff))
    append(b"X-Forwarded-Proto: " + (proto if proto is not None else scheme))
    if xhost is not None:
        append(b"X-Forwarded-Host: " + xhost)
    elif client_host is not None:
        append(b"X-Forwarded-Host: " + client_host)
    if forwarded:
        element = b"for=" + _forwarded_node(client_ip) + b";proto=" + scheme
        if client_host is not None:
            element += b';host="' + client_host.replace(b'"', b"") + b'"'
        fwd.append(element)
        append(b"Forwarded: " + b", ".join(fwd))
    elif fwd:
        # a trusted proxy's Forwarded goes on as it came
        append(b"Forwarded: " + b", ".join(fwd))
    if add_via:
        via.append(via_token)
    if via:
        append(b"Via: " + b", ".join(via))
    return _end_request_head(lines, upgrade, framing)
