# -*- test-case-name: tests.test_admin -*-
"""
The admin web site.

    GET  /metrics   Prometheus text format (prometheus-client)
    GET  /status    JSON: listeners with counters, backends with server state
    GET  /history   JSON: the last fifteen minutes, a point every five seconds
    GET  /          the dashboard (admin/dashboard.py): charts and tables that
                    read /status every two seconds and /history every five
    POST /reload    re-read the whole configuration (as SIGHUP does)
    POST /cache/purge
                    JSON {"cache": NAME, "url" | "prefix" | "tag": TEXT}:
                    removes the matching entries, answers {"purged": N}
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_proxy import __version__
from twisted_proxy.stats import BUCKETS, RECENT

from twisted_proxy.admin.dashboard import DASHBOARD  # noqa: E402  (the page)


def _iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class StatusSource:
    """
    What the admin pages read: the proxy service's listeners and backends.
    """

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def listeners(self) -> List[Dict[str, Any]]:
        out = []
        for stats, factory in self.proxy.listener_stats:
            connections = getattr(factory, "connections", ()) or ()
            tunnels = sum(1 for c in connections if getattr(c, "splice", None) is not None)
            out.append(
                {
                    "name": stats.name,
                    "kind": stats.kind,
                    "connections": len(connections),
                    "tunnels": tunnels,
                    "requests": stats.requests,
                    "by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
                    "denied": stats.denied,
                    "errors": stats.errors,
                    "bytes_in": stats.bytes_in,
                    "bytes_out": stats.bytes_out,
                    "latency": stats.latency.snapshot(),
                    "upstream_latency": stats.upstream.snapshot(),
                    "routes": [
                        {
                            "name": r.name,
                            "backend": r.backend,
                            "requests": sum(r.by_class),
                            "by_class": {f"{i}xx": n for i, n in enumerate(r.by_class) if i and (n or i < 6)},
                            "latency": r.latency.snapshot(),
                            "upstream_latency": r.upstream.snapshot(),
                        }
                        for r in stats.routes.values()
                    ],
                }
            )
        return out

    def backends(self) -> Dict[str, Any]:
        return {name: backend.status() for name, backend in self.proxy.backends.items()}

    def backend_details(self) -> Dict[str, Any]:
        return {name: backend.details() for name, backend in self.proxy.backends.items()}

    def access_log_dropped(self) -> int:
        """
        Access log lines dropped since start (a slow reader, failed writes).
        """
        try:
            return int(self.proxy.getServiceNamed("access-log").access_log.dropped)
        except (AttributeError, KeyError):
            return 0

    def caches(self) -> Dict[str, Any]:
        return {name: cache.status() for name, cache in getattr(self.proxy, "caches", {}).items()}

    def status(self) -> Dict[str, Any]:
        return {
            "version": __version__,
            "generation": getattr(self.proxy, "generation", 1),
            "loaded_at": _iso(getattr(self.proxy, "loaded_at", 0.0)),
            "listeners": self.listeners(),
            "backends": self.backends(),
            "caches": self.caches(),
            "access_log_dropped": self.access_log_dropped(),
            "backend_details": self.backend_details(),
            "recent": list(RECENT),
            "time": time.time(),
        }


def prometheus_buckets(snapshot: Dict[str, Any]) -> tuple:
    """
    A histogram snapshot (L{twisted_proxy.stats.Histogram.snapshot}) as
    HistogramMetricFamily's C{(buckets, sum_value)}: cumulative counts per
    upper bound, C{+Inf} last.
    """
    buckets = []
    running = 0
    bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
    for bound, count in zip(bounds, snapshot["counts"]):
        running += count
        buckets.append((bound, running))
    return buckets, snapshot["sum"]


class History:
    """
    The last fifteen minutes, one point every L{INTERVAL} seconds, for the
    dashboard's charts: per listener its request rate, error rate, bytes
    per second, connections and latency quantiles of the last minute; per
    cache its hit rate.
    """

    INTERVAL = 5.0
    POINTS = 180

    def __init__(self, source: Any, clock: Any) -> None:
        self.source = source
        self.clock = clock
        self.points: Deque[Dict[str, Any]] = deque(maxlen=self.POINTS)
        self._last: Optional[Dict[str, Any]] = None
        self._last_time = 0.0

    def sample(self) -> None:
        now = self.clock.seconds()
        status = self.source.status()
        last, elapsed = self._last, now - self._last_time
        point: Dict[str, Any] = {"time": time.time(), "listeners": {}, "caches": {}}
        before = {l["name"]: l for l in (last or {}).get("listeners", ())}
        for item in status.get("listeners", ()):
            name = item["name"]
            old = before.get(name)
            latency = item.get("latency") or {}
            upstream = item.get("upstream_latency") or {}
            entry = {
                "connections": item["connections"],
                "tunnels": item.get("tunnels", 0),
                "p50": latency.get("p50"),
                "p90": latency.get("p90"),
                "p99": latency.get("p99"),
                "upstream_p99": upstream.get("p99"),
            }
            if old is not None and elapsed > 0:
                errors = _server_errors(item) - _server_errors(old)
                entry["rps"] = round((item["requests"] - old["requests"]) / elapsed, 2)
                entry["errors_per_s"] = round(errors / elapsed, 2)
                entry["out_bps"] = round((item["bytes_out"] - old["bytes_out"]) / elapsed, 1)
            point["listeners"][name] = entry
        old_caches = (last or {}).get("caches", {})
        for name, cache in status.get("caches", {}).items():
            old = old_caches.get(name)
            entry = {"entries": cache.get("entries"), "bytes": cache.get("bytes")}
            if old is not None and elapsed > 0:
                hits = cache.get("hits", 0) + cache.get("stale", 0) - old.get("hits", 0) - old.get("stale", 0)
                lookups = hits + cache.get("misses", 0) - old.get("misses", 0)
                entry["hits_per_s"] = round(hits / elapsed, 2)
                entry["hit_ratio"] = round(hits / lookups, 4) if lookups > 0 else None
            point["caches"][name] = entry
        self._last, self._last_time = status, now
        if last is not None:
            self.points.append(point)


def _server_errors(item: Dict[str, Any]) -> int:
    return sum(n for s, n in item.get("by_status", {}).items() if s.startswith("5"))


#: (key in a cache's status, result label)
_CACHE_RESULTS = (
    ("hits", "hit"),
    ("stale", "stale"),
    ("revalidated", "revalidated"),
    ("misses", "miss"),
    ("collapsed", "collapsed"),
    ("bypass", "bypass"),
)


class Collector:
    """
    A prometheus-client collector reading the counters at scrape time.
    """

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        # one snapshot per scrape (a tree of workers sums theirs once)
        status = self.source.status()

        requests = CounterMetricFamily(
            "twisted_proxy_requests", "Requests and tunnels answered", labels=["listener", "status"]
        )
        decisions = CounterMetricFamily(
            "twisted_proxy_decisions", "Requests refused or failed", labels=["listener", "decision"]
        )
        bytes_ = CounterMetricFamily(
            "twisted_proxy_bytes", "Bytes from and to clients", labels=["listener", "direction"]
        )
        connections = GaugeMetricFamily(
            "twisted_proxy_connections", "Open client connections", labels=["listener"]
        )
        for item in status["listeners"]:
            name = item["name"]
            for code, count in item["by_status"].items():
                requests.add_metric([name, code], count)
            decisions.add_metric([name, "deny"], item["denied"])
            decisions.add_metric([name, "error"], item["errors"])
            bytes_.add_metric([name, "in"], item["bytes_in"])
            bytes_.add_metric([name, "out"], item["bytes_out"])
            connections.add_metric([name], item["connections"])
        up = GaugeMetricFamily(
            "twisted_proxy_server_up", "1 when a backend server takes traffic", labels=["backend", "server"]
        )
        in_flight = GaugeMetricFamily(
            "twisted_proxy_server_in_flight", "Requests in flight to a server", labels=["backend", "server"]
        )
        for backend, servers in status["backends"].items():
            for server in servers:
                labels = [backend, server["server"]]
                up.add_metric(labels, 1 if server["up"] and not server["ejected"] else 0)
                in_flight.add_metric(labels, server["in_flight"])
        dropped = CounterMetricFamily(
            "twisted_proxy_access_log_dropped",
            "Access log lines dropped (a slow reader, failed writes)",
            value=status["access_log_dropped"],
        )
        yield from (requests, decisions, bytes_, connections, up, in_flight, dropped)
        yield from self.latency_metrics(status["listeners"])
        yield from self.cache_metrics(status["caches"])

    def latency_metrics(self, listeners: List[Dict[str, Any]]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        total = HistogramMetricFamily(
            "twisted_proxy_request_duration_seconds",
            "Time from a request's head to its response's end, per listener",
            labels=["listener"],
        )
        upstream = HistogramMetricFamily(
            "twisted_proxy_upstream_duration_seconds",
            "Time from a request sent upstream to the response's end, per listener",
            labels=["listener"],
        )
        route_total = HistogramMetricFamily(
            "twisted_proxy_route_duration_seconds",
            "Time from a request's head to its response's end, per route",
            labels=["listener", "route", "backend"],
        )
        route_upstream = HistogramMetricFamily(
            "twisted_proxy_route_upstream_duration_seconds",
            "Time from a request sent upstream to the response's end, per route",
            labels=["listener", "route", "backend"],
        )
        route_requests = CounterMetricFamily(
            "twisted_proxy_route_requests",
            "Requests answered per route, by status class",
            labels=["listener", "route", "backend", "class"],
        )
        for item in listeners:
            name = item["name"]
            for family, key in ((total, "latency"), (upstream, "upstream_latency")):
                if key in item:
                    family.add_metric([name], *prometheus_buckets(item[key]))
            for route in item.get("routes", ()):
                labels = [name, route["name"], route["backend"]]
                route_total.add_metric(labels, *prometheus_buckets(route["latency"]))
                route_upstream.add_metric(labels, *prometheus_buckets(route["upstream_latency"]))
                for klass, count in route["by_class"].items():
                    route_requests.add_metric(labels + [klass], count)
        yield from (total, upstream, route_total, route_upstream, route_requests)

    def cache_metrics(self, caches: Dict[str, Any]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        lookups = CounterMetricFamily(
            "twisted_proxy_cache_requests",
            "Requests a cache answered, by result (hit, stale, revalidated, miss, collapsed, bypass)",
            labels=["cache", "result"],
        )
        entries = GaugeMetricFamily("twisted_proxy_cache_entries", "Entries stored", labels=["cache"])
        size = GaugeMetricFamily("twisted_proxy_cache_bytes", "Body bytes stored on disk", labels=["cache"])
        memory = GaugeMetricFamily(
            "twisted_proxy_cache_memory_bytes", "Body bytes also held in memory", labels=["cache"]
        )
        stored = CounterMetricFamily("twisted_proxy_cache_stored", "Responses stored", labels=["cache"])
        evictions = CounterMetricFamily(
            "twisted_proxy_cache_evictions", "Entries evicted for space", labels=["cache"]
        )
        purged = CounterMetricFamily("twisted_proxy_cache_purged", "Entries purged", labels=["cache"])
        for name, c in caches.items():
            for key, result in _CACHE_RESULTS:
                lookups.add_metric([name, result], c[key])
            entries.add_metric([name], c["entries"])
            size.add_metric([name], c["bytes"])
            memory.add_metric([name], c["memory_bytes"])
            stored.add_metric([name], c["stored"])
            evictions.add_metric([name], c["evictions"])
            purged.add_metric([name], c["purged"])
        yield from (lookups, entries, size, memory, stored, evictions, purged)


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, source: StatusSource) -> None:
        Resource.__init__(self)
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(source))  # type: ignore[arg-type]

    def render_GET(self, request: Any) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)  # type: ignore[no-any-return]


def _json(request: Any, value: Any) -> bytes:
    """
    C{value} as the JSON answer of an admin page (never cached).
    """
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, indent=1).encode("utf-8")


class _Status(Resource):
    isLeaf = True

    def __init__(self, source: StatusSource) -> None:
        Resource.__init__(self)
        self.source = source

    def render_GET(self, request: Any) -> bytes:
        return _json(request, self.source.status())


class _HistoryPage(Resource):
    """
    C{GET /history}: the last fifteen minutes, a point every five seconds
    (see L{History}).
    """

    isLeaf = True

    def __init__(self, history: History) -> None:
        Resource.__init__(self)
        self.history = history

    def render_GET(self, request: Any) -> bytes:
        return _json(request, {"interval": self.history.INTERVAL, "points": list(self.history.points)})


class _Reload(Resource):
    """
    C{POST /reload}: re-read and check the whole configuration file (as
    SIGHUP does): 200 C{{"ok": true, "generation": N}}, or 400 C{{"ok":
    false, "errors": ["FILE: key.path: message", ...]}} and nothing
    changed.
    """

    isLeaf = True

    def __init__(self, proxy: Any) -> None:
        Resource.__init__(self)
        self.proxy = proxy

    def render_POST(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")

        def answer(result: Dict[str, Any]) -> None:
            if not result.get("ok"):
                request.setResponseCode(400)
            request.write(json.dumps(result).encode())
            request.finish()

        def failed(failure: Any) -> None:
            request.setResponseCode(500)
            request.write(json.dumps({"ok": False, "errors": ["reload failed (see the log)"]}).encode())
            request.finish()

        self.proxy.reload().addCallbacks(answer, failed)
        return NOT_DONE_YET


#: the largest purge request body read
MAX_PURGE_BODY = 65536


class _CachePurge(Resource):
    """
    C{POST /cache/purge}: C{{"cache": NAME, "url": URL}} (every variant of
    that URL), C{"prefix": URL} (every URL that starts with it) or
    C{"tag": TAG} (every entry whose tag header named it).
    """

    isLeaf = True

    def __init__(self, proxy: Any) -> None:
        Resource.__init__(self)
        self.proxy = proxy

    def render_POST(self, request: Any) -> Any:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        data = request.content.read(MAX_PURGE_BODY + 1)
        if len(data) > MAX_PURGE_BODY:
            return self.error(request, 413, "request body too large")
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            return self.error(request, 400, "the body must be JSON")
        if not isinstance(body, dict):
            return self.error(request, 400, "the body must be a JSON object")
        caches = getattr(self.proxy, "caches", {})
        name = body.get("cache")
        if not isinstance(name, str):
            return self.error(request, 400, 'name the cache: {"cache": "NAME", ...}')
        cache = caches.get(name)
        if cache is None:
            return self.error(request, 404, f"no cache named {name!r}")
        kinds = [k for k in ("url", "prefix", "tag") if k in body]
        if len(kinds) != 1 or not isinstance(body[kinds[0]], str) or not body[kinds[0]]:
            return self.error(request, 400, 'give one of "url", "prefix" or "tag" (a non-empty string)')
        kind = kinds[0]
        value = body[kind]
        if kind == "url":
            purged = cache.purge_url(value)
        elif kind == "prefix":
            purged = cache.purge_prefix(value)
        else:
            purged = cache.purge_tag(value)
        if isinstance(purged, Deferred):
            # a tree of workers: each purges its own part
            from twisted.web.server import NOT_DONE_YET

            def answer(count: int) -> None:
                request.write(json.dumps({"purged": count}).encode())
                request.finish()

            def failed(failure: Any) -> None:
                request.setResponseCode(500)
                request.write(json.dumps({"error": "purge failed (see the log)"}).encode())
                request.finish()

            purged.addCallbacks(answer, failed)
            return NOT_DONE_YET
        return json.dumps({"purged": purged}).encode()

    @staticmethod
    def error(request: Any, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        return json.dumps({"error": message}).encode()


class _NoIcon(Resource):
    """
    C{GET /favicon.ico}: nothing (204), rather than a 404 in the browser's
    console.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(204)
        return b""


class _Root(Resource):
    def __init__(self) -> None:
        Resource.__init__(self)

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self
        return Resource.getChild(self, path, request)

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return DASHBOARD


def admin_site(proxy: Any) -> Site:
    """
    The admin web site for the proxy service C{proxy}.
    """
    # (a supervisor of workers brings its own: the sum of theirs)
    source = getattr(proxy, "status_source", None) or StatusSource(proxy)
    root = _Root()
    history = getattr(proxy, "history", None)
    if history is not None:
        root.putChild(b"history", _HistoryPage(history))
    root.putChild(b"metrics", _Metrics(source))
    root.putChild(b"favicon.ico", _NoIcon())
    root.putChild(b"status", _Status(source))
    root.putChild(b"reload", _Reload(proxy))
    cache = Resource()
    cache.putChild(b"purge", _CachePurge(proxy))
    root.putChild(b"cache", cache)
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
