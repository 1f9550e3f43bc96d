# -*- test-case-name: tests.test_engine_policy -*-
"""
The first stage of an exchange: may this request go anywhere, and where?

L{RequestPolicy} (one per listener) checks the client's address against
C{allow_clients}, asks the listener's router for the target, checks
CONNECT ports, and runs the filter chain (listener filters, then the
route's). Its verdict is one call back into the exchange:
C{admitted()} to go on, or C{respond(...)} with the proxy's own answer.

A filter may answer with a Deferred; the client's reading is paused
meanwhile, and the front's timer waits for it for C{filter_timeout} (503
beyond). A filter that raises, fails or gives a verdict that is not a
L{Deny} is a bug of that filter: a logged 500.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.addresses import AddressMatcher
from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.engine.timers import FILTER
from twisted_proxy.flow import FILTERING
from twisted_proxy.http import policy
from twisted_proxy.http.parser import BadRequest

log = Logger()



class FilterChain:
    """
    A listener's filters followed by a route's, sorted once by what they
    do (not per request).

    @ivar request: every filter, in order (their C{filter_request}).
    @ivar response: C{(filter, filter_response)} for those with a
        response side.
    @ivar transform: the first body transform, or L{None}.
    """

    __slots__ = ("request", "response", "transform")

    def __init__(self, filters: Sequence[Any]) -> None:
        self.request = tuple(filters)
        self.response = tuple(
            (flt, flt.filter_response)
            for flt in self.request
            if getattr(flt, "filter_response", None) is not None
        )
        self.transform = next(
            (
                flt
                for flt in self.request
                if hasattr(flt, "transform_request") or hasattr(flt, "transform_response")
            ),
            None,
        )


def filter_name(flt: Any) -> str:
    return getattr(flt, "name", "") or repr(flt)


class RequestPolicy:
    """
    One listener's admission of requests: client address, target, CONNECT
    ports, filters.
    """

    def __init__(
        self,
        router: Any,
        filters: Sequence[Any] = (),
        allow_clients: Sequence[Any] = (),
        allow_all: bool = False,
        connect_ports: Any = frozenset([443]),
        kind: str = "forward",
        name: str = "",
    ) -> None:
        self.router = router
        self.filters = tuple(filters)
        self.allow_all = allow_all
        self.connect_ports = frozenset(connect_ports)
        self.kind = kind
        self.forward = kind == "forward"
        self.name = name
        #: this listener's mark in the Via of the requests it forwards
        self.via_mark = policy.listener_mark()
        #: the local ends of the proxy's own direct connections (the pool's)
        self.direct_ends: Any = frozenset()
        self._allowed = AddressMatcher(tuple(allow_clients))
        self._chains: Dict[int, Tuple[Any, FilterChain]] = {}

    def client_allowed(self, client_ip: str) -> bool:
        """
        Whether C{client_ip} is within the listener's C{allow_clients}.
        """
        if self.allow_all:
            return True
        return self._allowed.match(client_ip) is not None

    def chain(self, route_filters: Tuple[Any, ...]) -> FilterChain:
        """
        The listener's filters then C{route_filters} (a route's tuple, the
        same object for every request of that route), built once.
        """
        found = self._chains.get(id(route_filters))
        if found is None or found[0] is not route_filters:
            found = (route_filters, FilterChain(self.filters + route_filters))
            self._chains[id(route_filters)] = found
        return found[1]

    def admit(self, ex: Any) -> None:
        """
        Decide on C{ex}: C{ex.admitted()} or C{ex.respond(...)}, now or
        once a filter's Deferred fires.
        """
        front = ex.front
        if not front.allowed:
            ex.respond(403, "client address not allowed", "deny", "listener.allow_clients")
            return
        looped = ex.head.looped
        peer_end = front.peer_end
        if peer_end is not None:
            # a forward listener's connection, not checked yet: is it one
            # the proxy opened itself to an "origin" that was this listener
            # (a wildcard bind, a name of this machine)?
            if peer_end in self.direct_ends:
                looped = self.via_mark
            else:
                front.peer_end = None  # a client: never checked again
        if looped is not None and self.via_mark in looped:
            # or the request carries this listener's Via mark: it went
            # round (maybe through other proxies) and would for ever
            ex.respond(508, "this request would loop through the proxy", "deny", "loop")
            return
        try:
            target = self.router.route(ex.head)
        except BadRequest as e:
            # a router may answer by itself (a redirect: decision and headers)
            ex.respond(
                e.status, e.message, getattr(e, "decision", "error"), "", getattr(e, "headers", ())
            )
            return
        ex.target = target
        if target.connect and target.port not in self.connect_ports:
            ex.respond(
                403, f"CONNECT to port {target.port} is not allowed", "deny", "listener.connect_ports"
            )
            return
        if not target.filters and not self.filters:
            ex.admitted()
            return
        chain = self.chain(target.filters)
        if chain.request:
            ex.chain = chain
            ex.info = self.request_info(ex)
            self.run(ex, 0)
        else:
            ex.admitted()

    def request_info(self, ex: Any) -> RequestInfo:
        """
        What filters see of C{ex}: the request as the client sent it (the
        path before any route rewrite).
        """
        target = ex.target
        return RequestInfo(
            self.name,
            ex.front.client_ip,
            ex.head.method.decode("latin-1"),
            "" if target.connect else target.scheme,
            target.host,
            target.port,
            "" if target.connect else target.request_path.decode("latin-1"),
            ex.head.headers,
            target.connect,
            self.kind,
        )

    def run(self, ex: Any, index: int) -> None:
        """
        Run C{ex}'s filters from C{index} on.
        """
        filters = ex.chain.request
        info = ex.info
        while index < len(filters):
            flt = filters[index]
            index += 1
            try:
                verdict = flt.filter_request(info)
            except Exception:
                log.failure("filter {name} failed", name=filter_name(flt))
                ex.respond(500, "request filter failed", "error", getattr(flt, "name", ""))
                return
            if isinstance(verdict, Deferred):
                self._wait(ex, flt, verdict, index)
                return
            if verdict is not None:
                self.denied(ex, flt, verdict)
                return
        ex.admitted(ex.chain)

    def _wait(self, ex: Any, flt: Any, verdict: Deferred, index: int) -> None:
        """
        Pause the client until C{flt}'s Deferred verdict comes (or the
        front's timer gives up on it).
        """
        front = ex.front
        front.gate.pause(FILTERING)
        front.set_timer(FILTER, front.ctx.settings.filter_timeout)
        ex.waiting_on = getattr(flt, "name", "")

        def resumed(result: Any) -> None:
            front.gate.resume(FILTERING)
            if ex.finished:
                return
            ex.waiting_on = None
            ex.progress()
            if result is not None:
                self.denied(ex, flt, result)
            else:
                self.run(ex, index)

        def failed(failure: Failure) -> None:
            front.gate.resume(FILTERING)
            log.failure("filter {name} failed", failure, name=filter_name(flt))
            if ex.finished:
                return
            ex.waiting_on = None
            ex.respond(500, "request filter failed", "error", getattr(flt, "name", ""))

        verdict.addCallbacks(resumed, failed)

    def denied(self, ex: Any, flt: Any, verdict: Optional[Any]) -> None:
        if isinstance(verdict, Deny):
            ex.respond(verdict.status, verdict.message, "deny", verdict.rule, verdict.headers)
        else:
            log.error(
                "filter {name} gave an invalid verdict {verdict!r}",
                name=filter_name(flt),
                verdict=verdict,
            )
            ex.respond(500, "request filter gave an invalid verdict", "error", getattr(flt, "name", ""))
