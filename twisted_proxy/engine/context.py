# -*- test-case-name: tests.test_exchange -*-
"""
What every connection of one HTTP listener shares: settings, the clock,
the pool, the access log, and the listener's stages (its policy and its
origin).
"""

from __future__ import annotations

from typing import Any, FrozenSet, Optional, Sequence

from twisted_proxy.engine.policy import FilterChain, RequestPolicy
from twisted_proxy.engine.upstream import UpstreamOrigin
from twisted_proxy.http import policy
from twisted_proxy.stats import ListenerStats
from twisted_proxy.upstream.pool import Pool


class ListenerContext:
    """
    One HTTP listener's shared state and stages.

    @ivar policy: the first stage (L{RequestPolicy}): client address,
        target, CONNECT ports, filters.
    @ivar origin: where admitted requests get their response: an object
        with C{fetch(exchange, sink)} (L{UpstreamOrigin} by default). This
        is the seam a cache fills: it answers from its store or wraps the
        upstream origin and the response sink.
    """

    def __init__(
        self,
        name: str,
        reactor: Any,
        settings: Any,
        pool: Pool,
        access_log: Any,
        router: Any,
        filters: Sequence[Any] = (),
        allow_clients: Sequence[Any] = (),
        anonymity: str = policy.ANONYMOUS,
        connect_ports: FrozenSet[int] = frozenset([443]),
        allow_all: bool = False,
        kind: str = "forward",
        origin: Optional[Any] = None,
        spool: Optional[Any] = None,
        response_buffer: int = 0,
        request_buffer: int = 0,
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.settings = settings
        self.pool = pool
        self.access_log = access_log
        self.router = router
        self.anonymity = anonymity
        self.add_via = getattr(router, "add_via", anonymity != policy.ELITE)
        self.kind = kind
        self.stats = ListenerStats(name, kind)
        self.stats.timing = settings.latency_histograms
        self.hide: FrozenSet[bytes] = getattr(router, "hide", frozenset())
        self.skip = policy.response_skip(self.hide)
        self.policy = RequestPolicy(
            router, filters, allow_clients, allow_all, connect_ports, kind, name
        )
        self.policy.direct_ends = pool.direct_ends
        if hasattr(router, "via_token"):
            # the requests this listener forwards carry its own Via mark
            router.via_token = policy.request_via(self.policy.via_mark)
        self.origin = origin if origin is not None else UpstreamOrigin()
        #: the process's spool (twisted_proxy.cache.store.Spool) when some
        #: listener or route buffers bodies, and this listener's limits
        #: (a route's own, when set, win: engine/buffer.py)
        self.spool = spool
        self.response_buffer = response_buffer
        self.request_buffer = request_buffer
        # the front timer never sleeps longer than the shortest timeout, so
        # a new deadline is never earlier than the scheduled wake-up
        self.timer_step = min(
            settings.header_timeout,
            settings.idle_timeout,
            settings.first_byte_timeout,
            settings.filter_timeout,
        )

    @property
    def filters(self) -> Sequence[Any]:
        return self.policy.filters

    def chain(self, route_filters: Any) -> FilterChain:
        return self.policy.chain(route_filters)

    def client_allowed(self, client_ip: str) -> bool:
        return self.policy.client_allowed(client_ip)
