# -*- test-case-name: tests.test_admin -*-
"""
The admin web site.

    GET  /metrics   Prometheus text format (prometheus-client)
    GET  /status    JSON: listeners with counters, backends with server state
    GET  /          a dashboard page that reads /status every two seconds
    POST /reload    re-read TLS certificates (as SIGHUP does)
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_proxy import __version__

DASHBOARD = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>twisted-proxy</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
.up{color:#080}.down{color:#b00}
</style></head><body>
<h1>twisted-proxy</h1>
<h2>Listeners</h2><table id="listeners"></table>
<h2>Backends</h2><table id="backends"></table>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
async function load(){
  const s = await (await fetch('/status')).json();
  let h = '<tr><th>listener</th><th>kind</th><th>connections</th><th>requests</th><th>denied</th><th>errors</th><th>bytes in</th><th>bytes out</th></tr>';
  for (const l of s.listeners) h += `<tr><td>${esc(l.name)}</td><td>${esc(l.kind)}</td><td>${l.connections}</td><td>${l.requests}</td><td>${l.denied}</td><td>${l.errors}</td><td>${l.bytes_in}</td><td>${l.bytes_out}</td></tr>`;
  document.getElementById('listeners').innerHTML = h;
  h = '<tr><th>backend</th><th>server</th><th>state</th><th>in flight</th><th>weight</th></tr>';
  for (const [name, servers] of Object.entries(s.backends)) for (const v of servers)
    h += `<tr><td>${esc(name)}</td><td>${esc(v.server)}</td><td class="${v.up && !v.ejected ? 'up' : 'down'}">${v.up ? (v.ejected ? 'ejected' : 'up') : 'down'}${v.backup ? ' (backup)' : ''}</td><td>${v.in_flight}</td><td>${v.weight}</td></tr>`;
  document.getElementById('backends').innerHTML = h;
}
load(); setInterval(load, 2000);
</script></body></html>
"""


class StatusSource:
    """
    What the admin pages read: the proxy service's listeners and backends.
    """

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def listeners(self) -> List[Dict[str, Any]]:
        out = []
        for stats, factory in self.proxy.listener_stats:
            connections = len(getattr(factory, "connections", ()) or ())
            out.append(
                {
                    "name": stats.name,
                    "kind": stats.kind,
                    "connections": connections,
                    "requests": stats.requests,
                    "by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
                    "denied": stats.denied,
                    "errors": stats.errors,
                    "bytes_in": stats.bytes_in,
                    "bytes_out": stats.bytes_out,
                }
            )
        return out

    def backends(self) -> Dict[str, Any]:
        return {name: backend.status() for name, backend in self.proxy.backends.items()}

    def access_log_dropped(self) -> int:
        """
        Access log lines dropped since start (a slow reader, failed writes).
        """
        try:
            return int(self.proxy.getServiceNamed("access-log").access_log.dropped)
        except (AttributeError, KeyError):
            return 0

    def status(self) -> Dict[str, Any]:
        return {
            "version": __version__,
            "listeners": self.listeners(),
            "backends": self.backends(),
            "access_log_dropped": self.access_log_dropped(),
        }


class Collector:
    """
    A prometheus-client collector reading the counters at scrape time.
    """

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        for item in self.source.listeners():
            name = item["name"]
            for status, count in item["by_status"].items():
                requests.add_metric([name, status], count)
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
        for backend, servers in self.source.backends().items():
            for server in servers:
                labels = [backend, server["server"]]
                up.add_metric(labels, 1 if server["up"] and not server["ejected"] else 0)
                in_flight.add_metric(labels, server["in_flight"])
        dropped = CounterMetricFamily(
            "twisted_proxy_access_log_dropped",
            "Access log lines dropped (a slow reader, failed writes)",
            value=self.source.access_log_dropped(),
        )
        yield from (requests, decisions, bytes_, connections, up, in_flight, dropped)


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


class _Status(Resource):
    isLeaf = True

    def __init__(self, source: StatusSource) -> None:
        Resource.__init__(self)
        self.source = source

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(self.source.status(), indent=1).encode("utf-8")


class _Reload(Resource):
    isLeaf = True

    def __init__(self, proxy: Any) -> None:
        Resource.__init__(self)
        self.proxy = proxy

    def render_POST(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        reload = getattr(self.proxy, "reload_certificates", None)
        if reload is None:
            return json.dumps({"reloaded": False, "why": "no TLS listener"}).encode()
        result = reload()
        return json.dumps({"reloaded": True, "result": result}, default=str).encode()


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
    source = StatusSource(proxy)
    root = _Root()
    root.putChild(b"metrics", _Metrics(source))
    root.putChild(b"status", _Status(source))
    root.putChild(b"reload", _Reload(proxy))
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
