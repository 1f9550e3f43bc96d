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
    """

    __slots__ = ("counts", "sum", "window", "slot")

    def __init__(self) -> None:
        size = len(BUCKETS) + 1
        self.counts = [0] * size
        self.sum = 0.0
        self.window = [[0] * size for _ in range(SLOTS)]
        self.slot = 0

    def record(self, seconds: float) -> None:
        i = bisect_left(BUCKETS, seconds)
        self.counts[i] += 1
        self.sum += seconds
        self.window[self.slot][i] += 1

    def rotate(self) -> None:
        """
        Ten seconds passed: the oldest slot is forgotten and reused.
        """
        slot = (self.slot + 1) % SLOTS
        counts = self.window[slot]
        for i in range(len(counts)):
            counts[i] = 0
        self.slot = slot

    def recent(self) -> List[int]:
        """
        The counts per bucket over the last minute.
        """
        return [sum(column) for column in zip(*self.window)]

    def snapshot(self) -> Dict[str, Any]:
        """
        What the admin reads (and a supervisor adds up): the counts since
        start, their sum, the last minute's counts and its quantiles.
        """
        recent = self.recent()
        return {
            "counts": list(self.counts),
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
    One route's requests (by status class), bytes and latency.
    """

    __slots__ = ("name", "backend", "by_class", "bytes_out", "latency", "upstream")

    def __init__(self, name: str, backend: str) -> None:
        self.name = name
        self.backend = backend
        #: requests answered 1xx .. 5xx (index 1 .. 5; 0: no status)
        self.by_class = [0] * 6
        self.bytes_out = 0
        self.latency = Histogram()
        self.upstream = Histogram()


class ListenerStats:
    """
    One listener's counters.
    """

    __slots__ = (
        "name", "kind", "by_status", "bytes_in", "bytes_out", "denied", "errors", "latency", "upstream", "routes",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.by_status: Dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.denied = 0
        self.errors = 0
        #: the whole exchange, from its head to its end
        self.latency = Histogram()
        #: the upstream's part: from the request sent to the response's end
        self.upstream = Histogram()
        #: per route (reverse listeners), by route name
        self.routes: Dict[str, RouteStats] = {}

    def record(self, status: int, bytes_in: int, bytes_out: int, decision: str) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        if decision == "deny":
            self.denied += 1
        elif decision == "error":
            self.errors += 1

    def timed(self, seconds: float, upstream: float, route: Any, status: int, bytes_out: int) -> None:
        """
        An exchange's durations (C{upstream} 0: it did not go upstream),
        for the listener and its C{route} (if any).
        """
        # (Histogram.record inline: one bisect serves the listener's and
        # the route's histograms)
        i = bisect_left(BUCKETS, seconds)
        latency = self.latency
        latency.counts[i] += 1
        latency.sum += seconds
        latency.window[latency.slot][i] += 1
        if upstream:
            j = bisect_left(BUCKETS, upstream)
            h = self.upstream
            h.counts[j] += 1
            h.sum += upstream
            h.window[h.slot][j] += 1
        if route is not None:
            rstats = self.routes.get(route.name)
            if rstats is None:
                rstats = self.routes[route.name] = RouteStats(route.name, getattr(route.backend, "name", ""))
            rstats.by_class[status // 100 if 100 <= status < 600 else 0] += 1
            rstats.bytes_out += bytes_out
            h = rstats.latency
            h.counts[i] += 1
            h.sum += seconds
            h.window[h.slot][i] += 1
            if upstream:
                h = rstats.upstream
                h.counts[j] += 1
                h.sum += upstream
                h.window[h.slot][j] += 1

    def rotate(self) -> None:
        self.latency.rotate()
        self.upstream.rotate()
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
