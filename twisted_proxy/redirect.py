# -*- test-case-name: tests.test_tls -*-
"""
The router of a plain listener with C{redirect_to_https}: every request is
answered by the proxy itself with a 308 to the same URL over https.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from twisted_proxy.http.parser import BadRequest, RequestHead
from twisted_proxy.target import parse_authority


class Redirect(BadRequest):
    """
    A router's answer that is not an error: the proxy responds with
    C{status} and C{headers} itself.
    """

    decision = "allow"

    def __init__(self, status: int, message: str, headers: Sequence[Tuple[bytes, bytes]]) -> None:
        BadRequest.__init__(self, status, message)
        self.headers = tuple(headers)


class RedirectRouter:
    """
    The router of a plain listener with C{redirect_to_https}: every request
    gets a 308 to C{https://host[:port]/path?query} (no port when C{port}
    is 443). CONNECT gets 405.
    """

    add_via = False

    def __init__(self, port: int = 443) -> None:
        self.port = port
        self.suffix = "" if port == 443 else f":{port}"

    def route(self, head: RequestHead) -> Any:
        if head.method == b"CONNECT":
            raise BadRequest(405, "CONNECT is not allowed here")
        raw = head.target
        if raw[:7].lower() == b"http://" or raw[:8].lower() == b"https://":
            start = raw.find(b"//") + 2
            ends = [i for i in (raw.find(b"/", start), raw.find(b"?", start)) if i >= 0]
            end = min(ends) if ends else len(raw)
            authority = raw[start:end]
            path = raw[end:]
            if not path.startswith(b"/"):
                path = b"/" + path
        elif raw.startswith(b"/"):
            authority = head.host or b""
            path = raw
        elif raw == b"*":
            authority = head.host or b""
            path = b"/"
        else:
            raise BadRequest(400, "invalid request target")
        if not authority:
            raise BadRequest(400, "no host to redirect to")
        host, _ = parse_authority(authority, 80)
        if ":" in host:
            host = f"[{host}]"
        location = f"https://{host}{self.suffix}".encode("ascii") + path
        raise Redirect(
            308, "use " + location.decode("latin-1"), ((b"Location", location),)
        )

    def request_head(self, head: RequestHead, target: Any, client_ip: str, server: Any) -> bytes:
        raise AssertionError("a redirecting listener never forwards")  # pragma: no cover
