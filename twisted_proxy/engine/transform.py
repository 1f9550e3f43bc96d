# -*- test-case-name: tests.test_engine_transform -*-
"""
The filter chain's stages on the bodies: a body transform that rewrites
the request body (L{RequestTransform}), and the response filters and
response transform between the origin and the client
(L{ResponseFilters}).

A transform reads a body whole, up to its C{max_body} (413 for a request
beyond it, 502 for a response), so it is the only place that buffers a
body in memory; everything else streams. A filter or transform that
raises is a logged 500.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.logger import Logger

from twisted_proxy.filters import BadBody
from twisted_proxy.flow import CONNECTING
from twisted_proxy.http import policy

log = Logger()

_FRAMING_NAMES = (b"content-length", b"transfer-encoding")


def _set_length(headers: list, size: int) -> None:
    headers[:] = [(n, v) for n, v in headers if n.lower() not in _FRAMING_NAMES]
    headers.append((b"Content-Length", b"%d" % size))


def request_stage(ex: Any, chain: Any, sink: Any) -> Optional["RequestTransform"]:
    """
    The request body transform for C{ex}, or L{None} when none applies.
    """
    transform = chain.transform
    if (
        transform is None
        or ex.head.framing == policy.NO_BODY
        or not hasattr(transform, "transform_request")
        or not transform.wants_request(ex.info)
    ):
        return None
    return RequestTransform(ex, transform, sink)


def response_stage(ex: Any, chain: Any) -> Any:
    """
    The response sink for C{ex}: L{ResponseFilters} in front of the
    exchange when the chain has response filters or a response
    transform, else the exchange itself.
    """
    transform = chain.transform
    if transform is not None and not hasattr(transform, "transform_response"):
        transform = None
    if not chain.response and transform is None:
        return ex
    return ResponseFilters(ex, chain.response, transform)


class RequestTransform:
    """
    Receives a request body whole (up to the transform's C{max_body}),
    rewrites it, and sends the request on to the origin with the new body
    and a Content-Length.
    """

    __slots__ = ("ex", "flt", "sink", "buffer", "size")

    def __init__(self, ex: Any, flt: Any, sink: Any) -> None:
        self.ex = ex
        self.flt = flt
        self.sink = sink
        self.buffer: Optional[List[bytes]] = []
        self.size = 0

    def start(self) -> None:
        ex = self.ex
        held = ex.take_pending()
        ex.front.gate.resume(CONNECTING)
        if held:
            for data in held:
                self.request_body(data)
        if ex.request_done and not ex.finished:
            self.request_end()

    def request_body(self, data: bytes) -> None:
        if self.buffer is None:
            return
        self.size += len(data)
        flt = self.flt
        if self.size > flt.max_body:
            self.buffer = None
            self.ex.respond(413, f"request body over {flt.max_body} bytes", "deny", flt.name)
            return
        self.buffer.append(data)

    def request_end(self) -> None:
        buffer = self.buffer
        if buffer is None:
            return
        self.buffer = None
        ex = self.ex
        flt = self.flt
        try:
            new = flt.transform_request(ex.info, b"".join(buffer))
        except BadBody as e:
            ex.respond(400, f"request body refused by {flt.name}: {e}", "deny", flt.name)
            return
        except Exception:
            log.failure("transform {name} failed", name=getattr(flt, "name", ""))
            ex.respond(500, "request transform failed", "error", getattr(flt, "name", ""))
            return
        head = ex.head
        _set_length(head.headers, len(new))
        head.framing = policy.CONTENT_LENGTH
        head.tokens = None
        ex.pending = [new] if new else None
        ex.body = None
        ex.forward(self.sink)


class ResponseFilters:
    """
    The response path's filter stage: response filters see (and may
    change) the head; a response transform reads the body whole and
    rewrites it. Then on to the exchange.
    """

    __slots__ = ("ex", "filters", "transform", "response", "buffer", "size", "dropping")

    def __init__(self, ex: Any, filters: Any, transform: Any) -> None:
        self.ex = ex
        self.filters = filters
        self.transform = transform
        self.response: Any = None
        self.buffer: Optional[List[bytes]] = None
        self.size = 0
        #: the exchange was answered otherwise: the rest is dropped
        self.dropping = False

    def response_head(self, response: Any) -> None:
        ex = self.ex
        if response.status == 101:
            ex.response_head(response)
            return
        info = ex.info
        for flt, filter_response in self.filters:
            try:
                filter_response(info, response)
            except Exception:
                log.failure("filter {name} failed", name=getattr(flt, "name", ""))
                self.dropping = True
                ex.upstream_failed(500, "response filter failed")
                return
            response.lnames = None  # headers may have changed
        transform = self.transform
        if (
            transform is not None
            and response.framing != policy.NO_BODY
            and transform.wants_response(info, response)
        ):
            self.response = response
            self.buffer = []
            return
        ex.response_head(response)

    def response_body(self, data: bytes) -> None:
        if self.dropping:
            return
        buffer = self.buffer
        if buffer is None:
            self.ex.response_body(data)
            return
        self.ex.front.touch()  # a held body arriving is progress
        self.size += len(data)
        max_body = self.transform.max_body
        if self.size > max_body:
            self.dropping = True
            self.buffer = None
            self.ex.upstream_failed(
                502, f"response body over {max_body} bytes cannot be transformed"
            )
            return
        buffer.append(data)

    def response_end(self) -> None:
        if self.dropping:
            return
        ex = self.ex
        buffer = self.buffer
        if buffer is None:
            ex.response_end()
            return
        self.buffer = None
        response = self.response
        transform = self.transform
        try:
            body = transform.transform_response(ex.info, response, b"".join(buffer))
        except Exception:
            log.failure("transform {name} failed", name=getattr(transform, "name", ""))
            self.dropping = True
            ex.upstream_failed(500, "response transform failed")
            return
        _set_length(response.headers, len(body))
        response.framing = policy.CONTENT_LENGTH
        response.lnames = None
        response.tokens = None
        ex.response_head(response)
        ex.response_body(body)
        ex.response_end()
