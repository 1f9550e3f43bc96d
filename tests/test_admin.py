"""
Tests for the admin listener (L{twisted_proxy.admin.site}) and the engine's
counters (L{twisted_proxy.stats}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_proxy.admin.site import admin_site
from twisted_proxy.config import parse_config
from twisted_proxy.service import make_service
from twisted_proxy.stats import ListenerStats

CONFIG = {
    "proxy": {"access_log": "off"},
    "admin": {"endpoint": "tcp:0:interface=127.0.0.1"},
    "listener": [
        {"name": "out", "kind": "forward", "endpoint": "tcp:0:interface=127.0.0.1"},
        {
            "name": "edge",
            "kind": "reverse",
            "endpoint": "tcp:0:interface=127.0.0.1",
            "route": [{"path": "/", "backend": "web"}],
        },
    ],
    "backend": {"web": {"servers": [{"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:10", "backup": True}]}},
}


def render(site: Any, path: bytes, method: bytes = b"GET") -> bytes:
    request = DummyRequest(path.strip(b"/").split(b"/") if path != b"/" else [b""])
    request.method = method
    resource = site.getResourceFor(request)
    body = resource.render(request)
    if isinstance(body, bytes):
        request.write(body)
    return b"".join(request.written)


class StatsTests(SynchronousTestCase):
    def test_record(self) -> None:
        """
        Each finished request counts by status, bytes and decision.
        """
        stats = ListenerStats("l", "forward")
        stats.record(200, 10, 20, "allow")
        stats.record(403, 0, 5, "deny")
        stats.record(502, 0, 5, "error")
        self.assertEqual(stats.requests, 3)
        self.assertEqual(stats.by_status, {200: 1, 403: 1, 502: 1})
        self.assertEqual((stats.bytes_in, stats.bytes_out), (10, 30))
        self.assertEqual((stats.denied, stats.errors), (1, 1))


class AdminSiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        config = parse_config(CONFIG, "admin.toml", ".")
        self.proxy = make_service(config, MemoryReactorClock())
        self.site = admin_site(self.proxy)
        self.proxy.listener_stats[0][0].record(200, 1, 2, "allow")

    def test_config_adds_admin_listener(self) -> None:
        """
        An [admin] table adds a listener named admin.
        """
        names = [s.name for s in self.proxy]
        self.assertIn("admin", names)

    def test_status(self) -> None:
        """
        /status is JSON with each listener's counters and each backend's
        servers.
        """
        status = json.loads(render(self.site, b"/status"))
        listeners = {item["name"]: item for item in status["listeners"]}
        self.assertEqual(set(listeners), {"out", "edge"})
        self.assertEqual(listeners["out"]["requests"], 1)
        servers = status["backends"]["web"]
        self.assertEqual([s["server"] for s in servers], ["http://127.0.0.1:9", "http://127.0.0.1:10"])
        self.assertTrue(servers[1]["backup"])

    def test_metrics(self) -> None:
        """
        /metrics is the Prometheus text format with request counters and
        server states.
        """
        text = render(self.site, b"/metrics").decode()
        self.assertIn('twisted_proxy_requests_total{listener="out",status="200"} 1.0', text)
        self.assertIn('twisted_proxy_server_up{backend="web",server="http://127.0.0.1:9"} 1.0', text)

    def test_access_log_dropped(self) -> None:
        """
        /status and /metrics report the access log lines dropped so far.
        """
        self.proxy.getServiceNamed("access-log").access_log.dropped = 7
        status = json.loads(render(self.site, b"/status"))
        self.assertEqual(status["access_log_dropped"], 7)
        text = render(self.site, b"/metrics").decode()
        self.assertIn("twisted_proxy_access_log_dropped_total 7.0", text)

    def test_dashboard(self) -> None:
        """
        / is an HTML page that reads /status.
        """
        page = render(self.site, b"/")
        self.assertIn(b"<title>twisted-proxy</title>", page)
        self.assertIn(b'fetch("status"', page)
        self.assertIn(b'fetch("history"', page)
        # self-contained: nothing loaded from elsewhere
        self.assertNotIn(b"http://", page.replace(b"http://www.w3.org", b""))
        self.assertNotIn(b"https://", page)
        self.assertNotIn(b"<script src", page)
        # the browser's icon request is not a 404 in its console
        request = DummyRequest([b"favicon.ico"])
        resource = self.site.getResourceFor(request)
        self.assertEqual(resource.render(request), b"")
        self.assertEqual(request.responseCode, 204)

    def test_latency(self) -> None:
        """
        /status gives each listener's and route's latency quantiles over
        the last minute and the upstream's apart; /metrics the same as
        Prometheus histograms (parsed by prometheus_client).
        """
        from prometheus_client.parser import text_string_to_metric_families

        class Route:
            name = "api"
            backend = type("B", (), {"name": "web"})()

        stats = self.proxy.listener_stats[1][0]
        for ms in (1, 2, 3, 400):
            stats.done(200, 0, 10, "allow", ms / 1000.0, ms / 2000.0, Route())
        stats.done(503, 0, 10, "error", 0.002, 0.0, None)
        status = json.loads(render(self.site, b"/status"))
        edge = {item["name"]: item for item in status["listeners"]}["edge"]
        self.assertEqual(edge["latency"]["count"], 5)
        self.assertEqual(edge["upstream_latency"]["count"], 4)
        self.assertTrue(1.0 <= edge["latency"]["p50"] <= 2.5, edge["latency"])
        self.assertTrue(250 <= edge["latency"]["p99"] <= 500, edge["latency"])
        [route] = edge["routes"]
        self.assertEqual((route["name"], route["backend"], route["requests"]), ("api", "web", 4))
        self.assertEqual(route["by_class"]["2xx"], 4)
        families = {f.name: f for f in text_string_to_metric_families(render(self.site, b"/metrics").decode())}
        histogram = families["twisted_proxy_request_duration_seconds"]
        self.assertEqual(histogram.type, "histogram")
        samples = {(s.name, s.labels.get("listener"), s.labels.get("le")): s.value for s in histogram.samples}
        self.assertEqual(samples[("twisted_proxy_request_duration_seconds_count", "edge", None)], 5)
        self.assertEqual(samples[("twisted_proxy_request_duration_seconds_bucket", "edge", "+Inf")], 5)
        self.assertEqual(samples[("twisted_proxy_request_duration_seconds_bucket", "edge", "0.0025")], 3)
        routes = families["twisted_proxy_route_upstream_duration_seconds"]
        labels = {tuple(sorted(s.labels.items())) for s in routes.samples if s.name.endswith("_count")}
        self.assertEqual(labels, {(("backend", "web"), ("listener", "edge"), ("route", "api"))})

    def test_history(self) -> None:
        """
        /history has a point every five seconds: per listener its request
        rate and latency, per cache its hit rate.
        """
        history = self.proxy.history
        clock = history.clock
        history.sample()
        stats = self.proxy.listener_stats[0][0]
        for _ in range(50):
            stats.done(200, 0, 100, "allow", 0.001, 0.0, None)
        clock.advance(5)
        history.sample()
        page = json.loads(render(self.site, b"/history"))
        self.assertEqual(page["interval"], 5.0)
        [point] = page["points"]
        out = point["listeners"]["out"]
        self.assertEqual(out["rps"], 10.0)
        self.assertEqual(out["out_bps"], 1000.0)
        self.assertIsNotNone(out["p99"])

    def test_recent_and_backends(self) -> None:
        """
        /status lists the last denials and errors, and each backend's
        queue, last picks and server state changes (time, why).
        """
        from twisted_proxy.stats import RECENT, note_refusal

        RECENT.clear()
        self.addCleanup(RECENT.clear)
        note_refusal(1.0, "edge", "192.0.2.7", "GET", "http://x/admin", 403, "deny", "acl")
        backend = self.proxy.backends["web"]
        backend.set_up(backend.servers[0], False, "status 503")
        status = json.loads(render(self.site, b"/status"))
        self.assertEqual(status["recent"][-1]["rule"], "acl")
        details = status["backend_details"]["web"]
        self.assertEqual(details["queue"], 0)
        self.assertEqual(details["events"][-1]["state"], "down")
        self.assertEqual(details["events"][-1]["why"], "status 503")
        self.assertEqual(status["backends"]["web"][0]["why"], "status 503")


def purge(site: Any, body: bytes) -> Any:
    """
    POST /cache/purge with C{body}: (response code, decoded JSON).
    """
    from io import BytesIO

    request = DummyRequest([b"cache", b"purge"])
    request.method = b"POST"
    request.content = BytesIO(body)
    resource = site.getResourceFor(request)
    result = resource.render(request)
    return request.responseCode or 200, json.loads(result)


class CacheAdminTests(SynchronousTestCase):
    """
    The admin listener's cache endpoints: /status and /metrics per cache,
    POST /cache/purge by url, prefix and tag.
    """

    def setUp(self) -> None:
        config = dict(CONFIG, cache={"edge": {"path": self.mktemp(), "max_size": "10MiB"}})
        config["listener"] = [dict(CONFIG["listener"][1], cache="edge")]  # type: ignore[index]
        self.proxy = make_service(parse_config(config, "admin.toml", "."), MemoryReactorClock())
        self.cache = self.proxy.caches["edge"]
        self.cache.open()
        self.addCleanup(self.cache.close)
        self.site = admin_site(self.proxy)
        for path, tags in (("/a", ["t1"]), ("/static/b", ["t1", "t2"]), ("/static/c", [])):
            primary = f"http://example.com:80{path}"
            writer = self.cache.store.begin(primary, {"primary": primary, "vary": [], "tags": tags})
            writer.write(b"body")
            writer.finish()
            self.cache.stored(primary, primary, ())

    def test_status(self) -> None:
        """
        /status lists each cache with its entries, bytes and counters.
        """
        status = json.loads(render(self.site, b"/status"))
        edge = status["caches"]["edge"]
        self.assertEqual((edge["entries"], edge["bytes"], edge["stored"]), (3, 12, 3))
        self.assertEqual(edge["hit_ratio"], 0.0)

    def test_metrics(self) -> None:
        """
        /metrics carries the caches' entries, bytes and results as
        Prometheus series labelled by cache.
        """
        from prometheus_client.parser import text_string_to_metric_families

        text = render(self.site, b"/metrics").decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.assertEqual(samples[("twisted_proxy_cache_entries", (("cache", "edge"),))], 3)
        self.assertEqual(samples[("twisted_proxy_cache_bytes", (("cache", "edge"),))], 12)
        self.assertEqual(
            samples[("twisted_proxy_cache_requests_total", (("cache", "edge"), ("result", "bypass")))], 0
        )

    def test_purge_url(self) -> None:
        """
        A purge by URL removes that URL (written in any equivalent form).
        """
        self.assertEqual(purge(self.site, b'{"cache": "edge", "url": "http://EXAMPLE.com/a"}'), (200, {"purged": 1}))
        self.assertIsNone(self.cache.lookup("http://example.com:80/a"))
        self.assertEqual(self.cache.store.entries, 2)

    def test_purge_prefix(self) -> None:
        """
        A purge by prefix removes every URL under it.
        """
        self.assertEqual(
            purge(self.site, b'{"cache": "edge", "prefix": "http://example.com/static/"}'), (200, {"purged": 2})
        )
        self.assertEqual(self.cache.store.entries, 1)

    def test_purge_tag(self) -> None:
        """
        A purge by tag removes the entries its tag header named.
        """
        self.assertEqual(purge(self.site, b'{"cache": "edge", "tag": "t1"}'), (200, {"purged": 2}))
        self.assertEqual(purge(self.site, b'{"cache": "edge", "tag": "t2"}'), (200, {"purged": 0}))
        self.assertEqual(self.cache.store.entries, 1)

    def test_purge_errors(self) -> None:
        """
        A body that is not JSON, names no cache, an unknown cache, or not
        exactly one of url/prefix/tag is refused with a message.
        """
        self.assertEqual(purge(self.site, b"nope")[0], 400)
        self.assertEqual(purge(self.site, b'{"url": "http://example.com/a"}')[0], 400)
        self.assertEqual(purge(self.site, b'{"cache": "other", "url": "http://example.com/a"}')[0], 404)
        self.assertEqual(purge(self.site, b'{"cache": "edge"}')[0], 400)
        self.assertEqual(purge(self.site, b'{"cache": "edge", "url": "x", "tag": "y"}')[0], 400)
        self.assertEqual(purge(self.site, b"x" * 70000)[0], 413)
        self.assertEqual(self.cache.store.entries, 3)
