"""
Tests for reloading the whole configuration (L{ProxyService.reload}, SIGHUP
and the admin listener's C{POST /reload}): a new generation for new
connections and new requests, what runs finishes on the generation it
started with, an invalid file or a listener that cannot bind changes
nothing.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import ClientCreator
from twisted.trial.unittest import TestCase

from twisted_proxy.config import load_config
from twisted_proxy.service import make_service

from .helpers import Harness, RawClient, RunningProxy

CONFIG = """\
[proxy]
access_log = "off"
drain_timeout = 5
{proxy_extra}

{listeners}

[backend.a]
servers = [{{ url = "http://127.0.0.1:{a}" }}]

[backend.b]
servers = [{{ url = "http://127.0.0.1:{b}" }}]

[filter.limit]
type = "rate_limit"
rate = 1000
per = 1
burst = 1000
"""

EDGE = """\
[[listener]]
name = "edge"
kind = "reverse"
endpoint = "{endpoint}"
filters = ["limit"]
  [[listener.route]]
  path = "/"
  backend = "{backend}"
"""


class ReloadTests(TestCase):
    """
    A reload makes a new generation from the whole file, or changes nothing.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.a = self.harness.origin("a")
        self.b = self.harness.origin("b")
        self.path = os.path.abspath(self.mktemp()) + ".toml"

    def write(self, backend: str = "a", endpoint: str = "tcp:0:interface=127.0.0.1", extra: str = "",
              proxy_extra: str = "") -> None:
        listeners = EDGE.format(endpoint=endpoint, backend=backend) + extra
        with open(self.path, "w") as f:
            f.write(CONFIG.format(listeners=listeners, a=self.a.port, b=self.b.port, proxy_extra=proxy_extra))

    def start(self) -> RunningProxy:
        self.write()
        top = make_service(load_config(self.path), self.harness.reactor)
        top.startService()
        running = RunningProxy(top, None)
        self.harness.proxies.append(running)
        return running

    def port(self, running: RunningProxy, name: str = "edge") -> int:
        listener = running.service.listeners[name]
        return int(listener.port.getHost().port)

    @inlineCallbacks
    def client(self, port: int) -> Any:
        client = yield ClientCreator(self.harness.reactor, RawClient, self.harness.tracker).connectTCP(
            "127.0.0.1", port
        )
        self.harness.clients.append(client)
        return client

    @inlineCallbacks
    def get(self, port: int, path: bytes = b"/text/hello") -> Any:
        client = yield self.client(port)
        client.send(b"GET " + path + b" HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n")
        response = yield client.response()
        return response

    @inlineCallbacks
    def test_new_requests_follow_new_routes(self) -> Any:
        """
        After a reload that re-routes everything, new requests go to the
        new backend; the generation counts up; the listening socket stays.
        """
        running = self.start()
        port = self.port(running)
        yield self.get(port)
        self.assertEqual((len(self.a.user_requests()), len(self.b.user_requests())), (1, 0))
        self.write(backend="b")
        result = yield running.service.reload()
        self.assertEqual(result, {"ok": True, "generation": 2})
        self.assertEqual(self.port(running), port)
        yield self.get(port)
        self.assertEqual((len(self.a.user_requests()), len(self.b.user_requests())), (1, 1))

    @inlineCallbacks
    def test_request_in_flight_finishes_on_its_generation(self) -> Any:
        """
        A response still coming when the reload happens completes intact,
        from the backend it started with.
        """
        running = self.start()
        port = self.port(running)
        slow = yield self.client(port)
        slow.send(b"GET /hold HTTP/1.1\r\nHost: site\r\n\r\n")
        yield self.a.next_held()
        self.write(backend="b")
        result = yield running.service.reload()
        self.assertTrue(result["ok"])
        self.a.release(b"the old generation's answer\n")
        response = yield slow.response()
        self.assertEqual(response.body, b"the old generation's answer\n")
        yield self.get(port)
        self.assertEqual(len(self.b.user_requests()), 1)

    @inlineCallbacks
    def test_kept_alive_connection_takes_the_new_generation(self) -> Any:
        """
        The next request on a connection kept alive across the reload uses
        the new generation.
        """
        running = self.start()
        port = self.port(running)
        client = yield self.client(port)
        client.send(b"GET /text/one HTTP/1.1\r\nHost: site\r\n\r\n")
        yield client.response()
        self.write(backend="b")
        yield running.service.reload()
        client.send(b"GET /text/two HTTP/1.1\r\nHost: site\r\n\r\n")
        response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual((len(self.a.user_requests()), len(self.b.user_requests())), (1, 1))

    @inlineCallbacks
    def test_invalid_file_changes_nothing(self) -> Any:
        """
        A file with a mistake: the reload is refused with every problem as
        a FILE: key.path: message line; the old generation keeps serving.
        """
        running = self.start()
        port = self.port(running)
        self.write(backend="b", proxy_extra="bogus = 1")
        result = yield running.service.reload()
        self.assertFalse(result["ok"])
        self.assertEqual(result["errors"], [f"{self.path}: proxy.bogus: unknown key"])
        self.assertEqual(running.service.generation, 1)
        yield self.get(port)
        self.assertEqual((len(self.a.user_requests()), len(self.b.user_requests())), (1, 0))

    @inlineCallbacks
    def test_listener_added_and_removed(self) -> Any:
        """
        An added listener accepts at once; a removed one stops accepting.
        """
        running = self.start()
        old_port = self.port(running)
        second = EDGE.format(endpoint="tcp:0:interface=127.0.0.1", backend="b").replace('"edge"', '"second"')
        with open(self.path, "w") as f:
            f.write(CONFIG.format(listeners=second, a=self.a.port, b=self.b.port, proxy_extra=""))
        result = yield running.service.reload()
        self.assertTrue(result["ok"], result)
        self.assertEqual(sorted(running.service.listeners), ["second"])
        yield self.get(self.port(running, "second"))
        self.assertEqual(len(self.b.user_requests()), 1)
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", old_port)), 0)

    @inlineCallbacks
    def test_unbindable_listener_refuses_the_whole_reload(self) -> Any:
        """
        A new listener whose port is taken: the reload is refused as a whole
        (the re-route that came with it is not applied).
        """
        running = self.start()
        port = self.port(running)
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        extra = EDGE.format(endpoint=f"tcp:{busy}:interface=127.0.0.1", backend="b").replace('"edge"', '"second"')
        self.write(backend="b", extra=extra)
        result = yield running.service.reload()
        self.assertFalse(result["ok"])
        self.assertIn("listener second: cannot listen", result["errors"][0])
        self.assertEqual(running.service.generation, 1)
        self.assertEqual(sorted(running.service.listeners), ["edge"])
        yield self.get(port)
        self.assertEqual((len(self.a.user_requests()), len(self.b.user_requests())), (1, 0))

    @inlineCallbacks
    def test_unchanged_parts_carry_over(self) -> Any:
        """
        Unchanged backends and filters are the same objects after a reload
        (health state, pools, rate-limit buckets); a changed one is new.
        """
        running = self.start()
        top = running.service
        backend_a, backend_b, limit = top.backends["a"], top.backends["b"], top.filters["limit"]
        with open(self.path, "w") as f:
            f.write(
                CONFIG.format(
                    listeners=EDGE.format(endpoint="tcp:0:interface=127.0.0.1", backend="a"),
                    a=self.a.port,
                    b=self.a.port,
                    proxy_extra="",
                )
            )
        result = yield top.reload()
        self.assertTrue(result["ok"])
        self.assertIs(top.backends["a"], backend_a)
        self.assertIsNot(top.backends["b"], backend_b)
        self.assertIs(top.filters["limit"], limit)

    @inlineCallbacks
    def test_admin_reload(self) -> Any:
        """
        POST /reload answers 200 with the generation, or 400 with the
        errors; /status shows the generation.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from twisted_proxy.admin.site import admin_site

        running = self.start()
        site = admin_site(running.service)

        def post() -> Any:
            request = DummyRequest([b"reload"])
            request.method = b"POST"
            d = request.notifyFinish()
            resource = site.getResourceFor(request)
            resource.render(request)
            return d.addCallback(lambda _: (request.responseCode or 200, json.loads(b"".join(request.written))))

        self.write(backend="b")
        code, body = yield post()
        self.assertEqual((code, body), (200, {"ok": True, "generation": 2}))
        self.write(proxy_extra="nope = true")
        code, body = yield post()
        self.assertEqual(code, 400)
        self.assertEqual(body["errors"], [f"{self.path}: proxy.nope: unknown key"])
        request = DummyRequest([b"status"])
        status = json.loads(site.getResourceFor(request).render(request))
        self.assertEqual(status["generation"], 2)


class SignalTests(TestCase):
    """
    What the signals do, called as their handlers call them (on the
    reactor thread): SIGHUP reloads, SIGUSR1 reopens the access log, SIGTERM
    stops gracefully and a second one cuts the drain.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.a = self.harness.origin("a")
        self.b = self.harness.origin("b")
        self.path = os.path.abspath(self.mktemp()) + ".toml"
        self.log_path = os.path.abspath(self.mktemp())

    def write(self, backend: str) -> None:
        with open(self.path, "w") as f:
            f.write(
                CONFIG.format(
                    listeners=EDGE.format(endpoint="tcp:0:interface=127.0.0.1", backend=backend),
                    a=self.a.port,
                    b=self.b.port,
                    proxy_extra="",
                ).replace('access_log = "off"', f'access_log = "{self.log_path}"')
            )

    def start(self) -> RunningProxy:
        self.write("a")
        top = make_service(load_config(self.path), self.harness.reactor)
        top.startService()
        running = RunningProxy(top, self.log_path)
        self.harness.proxies.append(running)
        return running

    @inlineCallbacks
    def test_sighup_reloads(self) -> Any:
        """
        SIGHUP re-reads the file: a new generation.
        """
        running = self.start()
        self.write("b")
        running.service._sighup()
        yield self.harness.wait_for(lambda: running.service.generation == 2)
        self.assertEqual(running.service.config.listeners[0].routes[0].backend, "b")

    @inlineCallbacks
    def test_sigusr1_reopens_the_access_log(self) -> Any:
        """
        SIGUSR1 after the log was renamed: the next lines go to a new file at
        the configured path, the earlier ones stay in the renamed one.
        """
        running = self.start()
        port = running.service.listeners["edge"].port.getHost().port
        client = yield ClientCreator(self.harness.reactor, RawClient, self.harness.tracker).connectTCP(
            "127.0.0.1", port
        )
        self.harness.clients.append(client)
        client.send(b"GET /text/one HTTP/1.1\r\nHost: site\r\n\r\n")
        yield client.response()
        os.rename(self.log_path, self.log_path + ".1")
        running.service._sigusr1()
        client.send(b"GET /text/two HTTP/1.1\r\nHost: site\r\n\r\n")
        yield client.response()
        running.service.getServiceNamed("access-log").access_log.flush()
        with open(self.log_path + ".1") as old, open(self.log_path) as new:
            self.assertEqual([json.loads(line)["url"][-3:] for line in old], ["one"])
            self.assertEqual([json.loads(line)["url"][-3:] for line in new], ["two"])

    def test_stop_signals(self) -> None:
        """
        The first SIGTERM (or SIGINT) stops the reactor (a graceful drain,
        exit status 0); a second one while draining cuts the drain.
        """
        from twisted.internet.defer import Deferred

        running = self.start()
        top = running.service
        stopped = []

        class Reactor:
            def stop(self) -> None:
                stopped.append(True)

        real = top.reactor
        top.reactor = Reactor()
        self.addCleanup(setattr, top, "reactor", real)
        top.stop_signal()
        self.assertEqual(stopped, [True])
        cancelled = []
        draining: Deferred = Deferred(lambda d: cancelled.append(True))
        draining.addErrback(lambda failure: None)
        top.drain_deferred = draining
        self.addCleanup(setattr, top, "drain_deferred", None)
        top.stop_signal()
        self.assertEqual(cancelled, [True])


class TunnelAcrossReloadTests(TestCase):
    """
    A CONNECT tunnel opened before a reload keeps carrying bytes after it,
    untouched, while the listener takes the new generation.
    """

    @inlineCallbacks
    def test_tunnel_survives(self) -> Any:
        """
        Bytes go both ways through a tunnel opened before a reload that
        changes the forward listener (its allowed ports).
        """
        harness = Harness(self)
        echo = harness.echo_server()
        path = os.path.abspath(self.mktemp()) + ".toml"

        def write(ports: str) -> None:
            with open(path, "w") as f:
                f.write(
                    '[proxy]\naccess_log = "off"\n\n[[listener]]\nname = "out"\nkind = "forward"\n'
                    f'endpoint = "tcp:0:interface=127.0.0.1"\nconnect_ports = [{ports}]\n'
                )

        write(str(echo.port))
        top = make_service(load_config(path), harness.reactor)
        top.startService()
        running = RunningProxy(top, None)
        harness.proxies.append(running)
        port = top.listeners["out"].port.getHost().port
        client = yield ClientCreator(harness.reactor, RawClient, harness.tracker).connectTCP("127.0.0.1", port)
        harness.clients.append(client)
        authority = b"127.0.0.1:%d" % echo.port
        client.send(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 200)
        client.send(b"before")
        self.assertEqual((yield client.nbytes(6)), b"before")
        write("443")
        result = yield top.reload()
        self.assertEqual(result, {"ok": True, "generation": 2})
        client.send(b"after the reload")
        self.assertEqual((yield client.nbytes(16)), b"after the reload")


class CacheAcrossReloadTests(TestCase):
    """
    A cache keeps its entries across a reload; a changed table with the same
    folder is the same store with the new settings (never two stores on one
    folder).
    """

    @inlineCallbacks
    def test_cache_kept_and_reconfigured(self) -> Any:
        """
        After a reload that changes the cache's max_size, the cache is the
        same object with the new bound, and its entries are still there.
        """
        harness = Harness(self)
        origin = harness.origin("a")
        folder = os.path.abspath(self.mktemp())
        path = os.path.abspath(self.mktemp()) + ".toml"

        def write(size: str) -> None:
            with open(path, "w") as f:
                f.write(
                    f'[proxy]\naccess_log = "off"\n\n[cache.edge]\npath = "{folder}"\nmax_size = "{size}"\n\n'
                    '[[listener]]\nname = "edge"\nkind = "reverse"\nendpoint = "tcp:0:interface=127.0.0.1"\n'
                    'cache = "edge"\n  [[listener.route]]\n  path = "/"\n  backend = "a"\n\n'
                    f'[backend.a]\nservers = [{{ url = "http://127.0.0.1:{origin.port}" }}]\n'
                )

        write("10MiB")
        top = make_service(load_config(path), harness.reactor)
        top.startService()
        harness.proxies.append(RunningProxy(top, None))
        cache = top.caches["edge"]
        writer = cache.store.begin("k", {"primary": "k", "vary": []})
        writer.write(b"body")
        writer.finish()
        write("20MiB")
        result = yield top.reload()
        self.assertTrue(result["ok"], result)
        self.assertIs(top.caches["edge"], cache)
        self.assertEqual(cache.store.max_size, 20 * 1024 * 1024)
        self.assertIsNotNone(cache.lookup("k"))
