# -*- test-case-name: tests.test_stats -*-
"""
Counters kept by the engine: plain integers updated on the hot path (no
locks, no metric objects), read by the admin listener when scraped.

Latency is kept in L{Histogram}s with fixed buckets: a request costs one
C{bisect} and three additions. Each histogram keeps its counts since start
(Prometheus' cumulative histogram) and, for the last minute, the counts of
six ten-second slots (L{Histogram.rotate} moves on every ten seconds): the
p50, p90 and p99 shown are those of the last minute, interpolated within a
bucket as Prometheus' C{histogram_quantile} does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

#: upper bounds of the latency buckets, in seconds (the last bucket, +Inf,
#: is implied)
BUCKETS: Tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
#: the slots of the recent window, and their length in seconds
SLOTS = 6
SLOT_SECONDS = 10.0
#: the denials and errors kept for the admin page (see L{RECENT})
RECENT_SIZE = 100


class Histogram:
    """
    Durations in fixed buckets: since start, and over the last minute.

    Only the current ten-second slot is written per duration (C{current}
    and C{sum}); the counts since start are those of the slots plus what
    the slots that left the window held (C{retired}).
    """

    __slots__ = ("current", "sum", "window", "slot", "retired")

    def __init__(self) -> None:
        size = len(BUCKETS) + 1
        self.sum = 0.0
        self.window = [[0] * size for _ in range(SLOTS)]
        self.slot = 0
        self.current = self.window[0]
        self.retired = [0] * size

    def record(self, seconds: float) -> None:
        self.current[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def rotate(self) -> None:
        """
        Ten seconds passed: the oldest slot leaves the window (its counts
        stay in the counts since start) and is reused.
        """
        slot = (self.slot + 1) % SLOTS
        counts = self.window[slot]
        retired = self.retired
        for i, n in enumerate(counts):
            if n:
                retired[i] += n
                counts[i] = 0
        self.slot = slot
        self.current = counts

    def recent(self) -> List[int]:
        """
        The counts per bucket over the last minute.
        """
        return [sum(column) for column in zip(*self.window)]

    @property
    def counts(self) -> List[int]:
        """
        The counts per bucket since start.
        """
        return [r + n for r, n in zip(self.retired, self.recent())]

    def add(self, other: "Histogram") -> "Histogram":
        """
        A new histogram with the counts of both (a listener's from its
        routes').
        """
        total = Histogram()
        total.sum = self.sum + other.sum
        total.retired = [a + b for a, b in zip(self.retired, other.retired)]
        total.window = [[a + b for a, b in zip(x, y)] for x, y in zip(self.window, other.window)]
        return total

    def snapshot(self) -> Dict[str, Any]:
        """
        What the admin reads (and a supervisor adds up): the counts since
        start, their sum, the last minute's counts and its quantiles.
        """
        recent = self.recent()
        return {
            "counts": [r + n for r, n in zip(self.retired, recent)],
            "sum": round(self.sum, 6),
            "recent": recent,
            **quantiles(recent),
        }


def quantile(q: float, counts: Sequence[int]) -> Optional[float]:
    """
    The C{q} quantile (0..1) of the durations counted in C{counts} (per
    bucket of L{BUCKETS}, then +Inf), in seconds, interpolated linearly
    within its bucket; L{None} without durations. In the +Inf bucket, the
    largest finite bound.
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if seen + count >= rank and count:
            if i >= len(BUCKETS):
                return BUCKETS[-1]
            low = BUCKETS[i - 1] if i else 0.0
            high = BUCKETS[i]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return BUCKETS[-1]


def quantiles(counts: Sequence[int]) -> Dict[str, Any]:
    """
    C{p50}, C{p90}, C{p99} in milliseconds (L{None} without durations) and
    C{count} of C{counts}.
    """
    out: Dict[str, Any] = {"count": sum(counts)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        value = quantile(q, counts)
        out[name] = None if value is None else round(value * 1000.0, 3)
    return out


class RouteStats:
    """
    One route's requests (by status class) and latency.
    """

    __slots__ = ("name", "backend", "by_class", "latency", "upstream")

    def __init__(self, name: str, backend: str) -> None:
        self.name = name
        self.backend = backend
        #: requests answered 1xx .. 5xx (index 1 .. 5; 0: no status; a
        #: status is below 1000)
        self.by_class = [0] * 10
        self.latency = Histogram()
        self.upstream = Histogram()


class ListenerStats:
    """
    One listener's counters.

    The durations of the requests a route took are kept by that route
    only; the listener's histograms are its routes' added to its own (the
    requests without a route: forward listeners, refusals) when read.
    """

    __slots__ = (
        "name", "kind", "by_status", "bytes_in", "bytes_out", "denied", "errors", "own_latency", "own_upstream",
        "routes", "timing",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.by_status: Dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.denied = 0
        self.errors = 0
        #: the requests without a route: the whole exchange, from its head
        #: to its end; and the upstream's part, from the request sent to
        #: the response's end
        self.own_latency = Histogram()
        self.own_upstream = Histogram()
        #: per route (reverse listeners), by route name
        self.routes: Dict[str, RouteStats] = {}
        #: durations are counted ([proxy] latency_histograms)
        self.timing = True

    def record(self, status: int, bytes_in: int, bytes_out: int, decision: str) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        if decision == "deny":
            self.denied += 1
        elif decision == "error":
            self.errors += 1

    def done(
        self, status: int, bytes_in: int, bytes_out: int, decision: str, seconds: float, upstream: float, route: Any
    ) -> None:
        """
        An exchange ended: its counters (L{record}) and its durations
        (C{upstream} 0: it did not go upstream), kept by its C{route} if it
        has one.
        """
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        if decision != "allow":
            if decision == "deny":
                self.denied += 1
            elif decision == "error":
                self.errors += 1
        if route is None:
            latency = self.own_latency
            up = self.own_upstream
        else:
            try:
                rstats = route.stats
            except AttributeError:  # a route-like object of a custom router
                rstats = None
            if rstats is None:
                rstats = self.route_stats(route)
            rstats.by_class[status // 100] += 1
            latency = rstats.latency
            up = rstats.upstream
        if not self.timing:
            return
        latency.current[bisect_left(BUCKETS, seconds)] += 1
        latency.sum += seconds
        if upstream:
            up.current[bisect_left(BUCKETS, upstream)] += 1
            up.sum += upstream

    def route_stats(self, route: Any) -> RouteStats:
        """
        The stats of C{route} (by its name: a reload's new route object
        goes on with its predecessor's), remembered on the route.
        """
        backend = getattr(route.backend, "name", "")
        rstats = self.routes.get(route.name)
        if rstats is None:
            rstats = self.routes[route.name] = RouteStats(route.name, backend)
        rstats.backend = backend  # (a reload may have given it another)
        try:
            route.stats = rstats
        except AttributeError:  # a route-like object of a custom router
            pass
        return rstats

    @property
    def latency(self) -> Histogram:
        """
        The listener's whole-exchange durations: its own and its routes'.
        """
        return self._summed(self.own_latency, "latency")

    @property
    def upstream(self) -> Histogram:
        """
        The listener's upstream durations: its own and its routes'.
        """
        return self._summed(self.own_upstream, "upstream")

    def _summed(self, own: Histogram, name: str) -> Histogram:
        total = own
        for rstats in self.routes.values():
            total = total.add(getattr(rstats, name))
        return total

    def rotate(self) -> None:
        self.own_latency.rotate()
        self.own_upstream.rotate()
        for rstats in self.routes.values():
            rstats.latency.rotate()
            rstats.upstream.rotate()

    @property
    def requests(self) -> int:
        return sum(self.by_status.values())


#: the last denials and errors of this process, newest last: dicts with
#: time, listener, client, method, url, status, decision, rule
RECENT: Deque[Dict[str, Any]] = deque(maxlen=RECENT_SIZE)


def note_refusal(
    when: float, listener: str, client: str, method: str, url: str, status: int, decision: str, rule: str
) -> None:
    RECENT.append(
        {
            "time": when,
            "listener": listener,
            "client": client,
            "method": method,
            "url": url[:300],
            "status": status,
            "decision": decision,
            "rule": rule,
        }
    )
