"""
Integration tests for the reverse proxy: real sockets on 127.0.0.1, a
reverse listener in front of in-process origins (L{tests.helpers.Origin})
and WebSocket servers (L{tests.helpers.WsOrigin}), byte-exact raw clients.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Generator, List, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import (
    WSPROTO_MISSING,
    Harness,
    Origin,
    OriginProtocol,
    OriginRequest,
    RawClient,
    Response,
    RunningProxy,
    WsClient,
    WsOrigin,
    pattern,
    servers,
)
from tests.test_integration_forward import smuggling_corpus

if WSPROTO_MISSING is None:
    from wsproto.events import BytesMessage, CloseConnection, TextMessage

Gen = Generator[Deferred, Any, Any]

#: health checks that notice a failing status within a few tenths of a
#: second (the timeout is generous so that a loaded machine does not make the
#: healthy server flap)
FAST_HEALTH = {"path": "/health", "interval": 0.1, "timeout": 1, "rise": 1, "fall": 1}
#: health checks whose probe timeout fires soon (two missed probes in a row
#: take a server down, for the same reason)
HANG_HEALTH = {"path": "/health", "interval": 0.1, "timeout": 0.2, "rise": 1, "fall": 2}


def request(
    path: bytes,
    host: Optional[bytes] = b"site.test",
    extra: bytes = b"",
    method: bytes = b"GET",
) -> bytes:
    """
    An HTTP/1.1 request head (origin-form unless C{path} is absolute).
    """
    head = method + b" " + path + b" HTTP/1.1\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    return head + extra + b"\r\n"


def served_by(response: Response) -> str:
    """
    The name of the origin that answered a catch-all echo.
    """
    return (response.header(b"x-origin") or b"").decode("ascii")


class ReverseCase(TestCase):
    """
    Each test gets a L{Harness}.
    """

    timeout = 15

    def setUp(self) -> None:
        self.h = Harness(self)

    def origins(self, *names: str) -> List[Origin]:
        """
        Named origins that echo any path (see L{served_by}).
        """
        made = []
        for name in names:
            origin = self.h.origin(name)
            origin.catch_all = True
            made.append(origin)
        return made

    def balanced(
        self,
        origins: List[Any],
        listener: Optional[Dict[str, Any]] = None,
        proxy: Optional[Dict[str, Any]] = None,
        access_log: bool = False,
        server_options: Optional[List[Dict[str, Any]]] = None,
        **backend: Any,
    ) -> RunningProxy:
        """
        A reverse listener whose only route goes to one backend C{"pool"}
        of C{origins}; C{backend} adds keys to its table.
        """
        entries = servers(*origins)
        for entry, options in zip(entries, server_options or []):
            entry.update(options)
        table: Dict[str, Any] = {"servers": entries}
        table.update(backend)
        return self.h.reverse(
            [{"path": "/", "backend": "pool"}],
            {"pool": table},
            listener,
            proxy,
            access_log,
        )

    def backend(self, proxy: RunningProxy, name: str = "pool") -> Any:
        return proxy.service.backends[name]

    def assert_no_in_flight(self, proxy: RunningProxy) -> None:
        """
        No server of any backend counts a request in flight (none leaked).
        """
        for name, backend in proxy.service.backends.items():
            self.assertEqual([s.in_flight for s in backend.servers], [0] * len(backend.servers), name)

    @inlineCallbacks
    def fetch(
        self,
        proxy: RunningProxy,
        path: bytes,
        host: Optional[bytes] = b"site.test",
        extra: bytes = b"",
        method: bytes = b"GET",
        body: bytes = b"",
    ) -> Gen:
        """
        One request on a new connection; the response.
        """
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(path, host, extra, method) + body)
        response: Response = yield client.response(method)
        client.transport.loseConnection()
        yield client.closed()
        return response

    @inlineCallbacks
    def fetch_many(self, proxy: RunningProxy, count: int, path: bytes = b"/who") -> Gen:
        """
        C{count} GETs one after the other on one keep-alive connection;
        the names of the origins that answered, in order.
        """
        client: RawClient = yield self.h.client(proxy.port)
        names = []
        for _ in range(count):
            client.send(request(path))
            response: Response = yield client.response()
            self.assertEqual(response.status, 200, response.body)
            names.append(served_by(response))
        client.transport.loseConnection()
        yield client.closed()
        return names


class RoutingTests(ReverseCase):
    """
    Requests reach the backend their host and path choose, with the path
    and Host the route says.
    """

    def setUp(self) -> None:
        ReverseCase.setUp(self)
        self.a, self.b, self.c = self.origins("a", "b", "c")
        self.proxy = self.h.reverse(
            [
                {"host": "api.test", "backend": "a"},
                {"host": "*.apps.test", "backend": "b"},
                {"path": "/", "backend": "c"},
                {"path": "/svc/", "backend": "a", "strip_prefix": True},
                {"path": "/svc/v1/", "backend": "b", "rewrite_prefix": "/v2/"},
                {"path": "/raw/", "backend": "b", "preserve_host": False},
            ],
            {
                "a": {"servers": servers(self.a)},
                "b": {"servers": servers(self.b)},
                "c": {"servers": servers(self.c)},
            },
        )

    @inlineCallbacks
    def route(self, path: bytes, host: bytes = b"site.test") -> Gen:
        """
        The origin name and what it saw, for one request.
        """
        response = yield self.fetch(self.proxy, path, host)
        self.assertEqual(response.status, 200, response.body)
        return served_by(response), response.echo()

    @inlineCallbacks
    def test_exact_host(self) -> Gen:
        """
        A route with an exact host takes that host's requests, whatever
        the port in the Host header and the letter case.
        """
        for host in (b"api.test", b"API.Test", b"api.test:8080"):
            name, echoed = yield self.route(b"/users?id=7", host)
            self.assertEqual(name, "a", host)
            self.assertEqual(echoed.target, "/users?id=7")
            self.assertEqual(echoed.values(b"host"), [host])

    @inlineCallbacks
    def test_wildcard_host(self) -> Gen:
        """
        C{*.apps.test} takes subdomains at any depth but not the apex,
        which falls through to the any-host route.
        """
        for host in (b"one.apps.test", b"deep.two.apps.test"):
            name, _ = yield self.route(b"/", host)
            self.assertEqual(name, "b", host)
        name, _ = yield self.route(b"/", b"apps.test")
        self.assertEqual(name, "c")

    @inlineCallbacks
    def test_longest_prefix(self) -> Gen:
        """
        The longest matching path prefix wins, also over a route with a
        more specific host; a prefix matches only whole (C{/svc/} does not
        take C{/svc} or C{/svcx}).
        """
        name, echoed = yield self.route(b"/svc/v1/users")
        self.assertEqual((name, echoed.target), ("b", "/v2/users"))
        name, echoed = yield self.route(b"/svc/users")
        self.assertEqual((name, echoed.target), ("a", "/users"))
        name, echoed = yield self.route(b"/svc/v1/users", b"api.test")
        self.assertEqual((name, echoed.target), ("b", "/v2/users"))
        for path in (b"/svc", b"/svcx/users"):
            name, echoed = yield self.route(path)
            self.assertEqual((name, echoed.target), ("c", path.decode()))

    @inlineCallbacks
    def test_strip_prefix(self) -> Gen:
        """
        strip_prefix removes the route's path before forwarding; the
        query is kept and the result always starts with a slash.
        """
        name, echoed = yield self.route(b"/svc/users/1?x=1&y=2")
        self.assertEqual((name, echoed.target), ("a", "/users/1?x=1&y=2"))
        name, echoed = yield self.route(b"/svc/")
        self.assertEqual((name, echoed.target), ("a", "/"))

    @inlineCallbacks
    def test_rewrite_prefix(self) -> Gen:
        """
        rewrite_prefix replaces the route's path with its own.
        """
        name, echoed = yield self.route(b"/svc/v1/?q=a%20b")
        self.assertEqual((name, echoed.target), ("b", "/v2/?q=a%20b"))

    @inlineCallbacks
    def test_normalised_before_routing(self) -> Gen:
        """
        Dot segments and encoded unreserved characters are resolved before
        the match: C{/public/../svc/x} and C{/%73vc/x} are C{/svc/x}.
        """
        for path in (b"/public/../svc/x", b"/%73vc/x"):
            name, echoed = yield self.route(path)
            self.assertEqual((name, echoed.target), ("a", "/x"), path)

    @inlineCallbacks
    def test_preserve_host(self) -> Gen:
        """
        By default the backend sees the client's Host; with
        preserve_host = false it sees the server's host:port. Either way
        X-Forwarded-Host carries the client's.
        """
        _, echoed = yield self.route(b"/page", b"www.site.test")
        self.assertEqual(echoed.values(b"host"), [b"www.site.test"])
        name, echoed = yield self.route(b"/raw/page", b"www.site.test")
        self.assertEqual(name, "b")
        self.assertEqual(echoed.target, "/raw/page")
        self.assertEqual(echoed.values(b"host"), [self.b.url_base[7:].encode()])
        self.assertEqual(echoed.values(b"x-forwarded-host"), [b"www.site.test"])

    @inlineCallbacks
    def test_absolute_form(self) -> Gen:
        """
        An absolute-form request is routed by its URI's authority (not the
        Host header) and only to configured backends: a URI naming an
        origin's own address still goes where the routes say.
        """
        client: RawClient = yield self.h.client(self.proxy.port)
        client.send(request(b"http://api.test/echo?q=1", b"other.test"))
        response: Response = yield client.response()
        self.assertEqual(served_by(response), "a")
        self.assertEqual(response.echo().target, "/echo?q=1")
        b_address = self.b.url_base.encode()
        client.send(request(b_address + b"/direct", b_address[7:]))
        response = yield client.response()
        self.assertEqual(served_by(response), "c")
        self.assertEqual(response.echo().target, "/direct")
        self.assertEqual(self.b.requests, [])

    @inlineCallbacks
    def test_connect_refused(self) -> Gen:
        """
        CONNECT on a reverse listener is a 405 and reaches no backend.
        """
        client: RawClient = yield self.h.client(self.proxy.port)
        client.send(request(b"api.test:443", b"api.test:443", method=b"CONNECT"))
        response: Response = yield client.response(b"CONNECT")
        self.assertEqual(response.status, 405)
        for origin in (self.a, self.b, self.c):
            self.assertEqual(origin.connections_made, 0)


class NoRouteTests(ReverseCase):
    """
    A request no route matches.
    """

    @inlineCallbacks
    def test_no_route(self) -> Gen:
        """
        A host no route names is a 404 (also for an absolute URI naming an
        origin's address: never an open proxy); the connection stays usable.
        """
        (a,) = self.origins("a")
        proxy = self.h.reverse(
            [{"host": "api.test", "backend": "a"}], {"a": {"servers": servers(a)}}
        )
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/page", b"unknown.test"))
        response: Response = yield client.response()
        self.assertEqual(response.status, 404)
        client.send(request(a.url_base.encode() + b"/page", a.url_base[7:].encode()))
        response = yield client.response()
        self.assertEqual(response.status, 404)
        client.send(request(b"/page", b"api.test"))
        response = yield client.response()
        self.assertEqual((response.status, served_by(response)), (200, "a"))
        self.assertEqual([r.target for r in a.requests], [b"/page"])


class HeaderTests(ReverseCase):
    """
    The forwarding headers the backend sees and the response headers the
    client does not.
    """

    CLIENT = (
        b"X-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: public.example\r\n"
        b"Forwarded: for=10.0.0.1;proto=https\r\n"
    )

    @inlineCallbacks
    def echoed(self, **listener: Any) -> Gen:
        (a,) = self.origins("a")
        proxy = self.balanced([a], listener=listener)
        response = yield self.fetch(proxy, b"/echo", b"site.test", self.CLIENT)
        self.assertEqual(response.status, 200)
        return response.echo()

    @inlineCallbacks
    def test_untrusted_client(self) -> Gen:
        """
        A client outside trusted_proxies has its forwarding headers
        replaced: X-Forwarded-For is its own address, X-Forwarded-Proto and
        X-Forwarded-Host say how it reached the proxy, and no Forwarded is
        sent unless enabled; Via names the proxy.
        """
        echoed = yield self.echoed()
        self.assertEqual(echoed.values(b"x-forwarded-for"), [b"127.0.0.1"])
        self.assertEqual(echoed.values(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(echoed.values(b"x-forwarded-host"), [b"site.test"])
        self.assertEqual(echoed.values(b"forwarded"), [])
        [via] = echoed.values(b"via")
        self.assertIn(b"twisted-proxy", via)

    @inlineCallbacks
    def test_trusted_proxy(self) -> Gen:
        """
        A client in trusted_proxies has its X-Forwarded-For appended to and
        its X-Forwarded-Proto and X-Forwarded-Host kept.
        """
        echoed = yield self.echoed(trusted_proxies=["127.0.0.0/8"])
        self.assertEqual(echoed.values(b"x-forwarded-for"), [b"10.0.0.1, 127.0.0.1"])
        self.assertEqual(echoed.values(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(echoed.values(b"x-forwarded-host"), [b"public.example"])
        # a trusted proxy's own Forwarded goes on unchanged
        self.assertEqual(echoed.values(b"forwarded"), [b"for=10.0.0.1;proto=https"])

    @inlineCallbacks
    def test_forwarded_untrusted(self) -> Gen:
        """
        With forwarded = true an RFC 7239 Forwarded element describes the
        client; an untrusted client's own Forwarded is dropped.
        """
        echoed = yield self.echoed(forwarded=True)
        self.assertEqual(
            echoed.values(b"forwarded"), [b'for=127.0.0.1;proto=http;host="site.test"']
        )

    @inlineCallbacks
    def test_forwarded_trusted(self) -> Gen:
        """
        A trusted client's Forwarded is kept and the proxy's element
        appended.
        """
        echoed = yield self.echoed(forwarded=True, trusted_proxies=["127.0.0.1/32"])
        self.assertEqual(
            echoed.values(b"forwarded"),
            [b'for=10.0.0.1;proto=https, for=127.0.0.1;proto=http;host="site.test"'],
        )

    @inlineCallbacks
    def test_hide_headers_default(self) -> Gen:
        """
        By default Server and X-Powered-By are removed from responses;
        other headers pass.
        """
        (a,) = self.origins("a")
        proxy = self.balanced([a])
        response = yield self.fetch(
            proxy, b"/with-headers?Server=nginx&X-Powered-By=PHP&X-Kept=yes"
        )
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header(b"server"))
        self.assertIsNone(response.header(b"x-powered-by"))
        self.assertEqual(response.header(b"x-kept"), b"yes")

    @inlineCallbacks
    def test_hide_headers_configured(self) -> Gen:
        """
        hide_headers replaces the default list: the named headers go, Server
        and X-Powered-By stay.
        """
        (a,) = self.origins("a")
        proxy = self.balanced([a], listener={"hide_headers": ["X-Internal"]})
        response = yield self.fetch(
            proxy, b"/with-headers?Server=nginx&X-Powered-By=PHP&X-Internal=secret"
        )
        self.assertEqual(response.header(b"server"), b"nginx")
        self.assertEqual(response.header(b"x-powered-by"), b"PHP")
        self.assertIsNone(response.header(b"x-internal"))


class BalancingTests(ReverseCase):
    """
    How requests are shared among the servers of a backend.
    """

    @inlineCallbacks
    def test_round_robin_weights(self) -> Gen:
        """
        round_robin with weights 3:1 sends 6 of 8 requests to the first
        server and 2 to the second, interleaved (a a b a), not in bursts.
        """
        a, b = self.origins("a", "b")
        proxy = self.balanced([a, b], server_options=[{"weight": 3}, {"weight": 1}])
        names = yield self.fetch_many(proxy, 8)
        self.assertEqual("".join(names), "aabaaaba")
        self.assertEqual((len(a.requests), len(b.requests)), (6, 2))

    @inlineCallbacks
    def test_least_conn(self) -> Gen:
        """
        least_conn sends every request to the idle server while the other
        holds a slow one.
        """
        a, b = self.origins("a", "b")
        proxy = self.balanced([a, b], balance="least_conn")
        slow: RawClient = yield self.h.client(proxy.port)
        slow.send(request(b"/hold"))
        yield self.h.wait_for(lambda: a.held or b.held)
        busy, idle = (a, b) if a.held else (b, a)
        names = yield self.fetch_many(proxy, 4)
        self.assertEqual(names, [idle.name] * 4)
        busy.release(b"slow done\n")
        response: Response = yield slow.response()
        self.assertEqual((response.status, response.body), (200, b"slow done\n"))
        self.assertEqual(self.backend(proxy).status()[0]["in_flight"], 0)

    @inlineCallbacks
    def test_hash_header_sticky(self) -> Gen:
        """
        hash on a header keeps each key's requests on one server.
        """
        a, b = self.origins("a", "b")
        proxy = self.balanced([a, b], balance="hash", hash_key="header:X-User")
        client: RawClient = yield self.h.client(proxy.port)
        seen: Dict[bytes, List[str]] = {}
        for _ in range(3):
            for user in (b"alice", b"bob", b"carol", b"dave", b"erin"):
                client.send(request(b"/who", extra=b"X-User: " + user + b"\r\n"))
                response: Response = yield client.response()
                seen.setdefault(user, []).append(served_by(response))
        for user, names in seen.items():
            self.assertEqual(len(set(names)), 1, (user, names))


class HealthTests(ReverseCase):
    """
    Active health checks take servers out and bring them back.
    """

    def up(self, proxy: RunningProxy, index: int) -> bool:
        return bool(self.backend(proxy).servers[index].up)

    @inlineCallbacks
    def test_failing_health_check(self) -> Gen:
        """
        A server whose /health answers 500 stops receiving traffic; once it
        answers 200 again it gets its share back. Probes are not in the
        access log.
        """
        a, b = self.origins("a", "b")
        proxy = self.balanced([a, b], access_log=True, health=FAST_HEALTH)
        yield self.h.wait_for(lambda: len([r for r in a.requests if r.path == "/health"]) >= 1)
        a.health_status = 500
        yield self.h.wait_for(lambda: not self.up(proxy, 0))
        names = yield self.fetch_many(proxy, 4)
        self.assertEqual(names, ["b"] * 4)
        a.health_status = 200
        yield self.h.wait_for(lambda: self.up(proxy, 0))
        names = yield self.fetch_many(proxy, 4)
        self.assertEqual(sorted(names), ["a", "a", "b", "b"])
        lines = proxy.access_log()
        self.assertEqual(len(lines), 8)
        self.assertEqual({line["url"] for line in lines}, {"http://site.test/who"})

    @inlineCallbacks
    def test_hanging_health_check(self) -> Gen:
        """
        A probe that gets no answer within the timeout counts as a failure.
        """
        a, b = self.origins("a", "b")
        proxy = self.balanced([a, b], health=HANG_HEALTH)
        hanging = [True]

        def swallow(proto: OriginProtocol, req: OriginRequest, keep_alive: bool) -> bool:
            if req.path == "/health" and hanging[0]:
                proto.dead = True
                return True
            return False

        a.handler = swallow
        yield self.h.wait_for(lambda: not self.up(proxy, 0))
        names = yield self.fetch_many(proxy, 3)
        self.assertEqual(names, ["b"] * 3)
        hanging[0] = False
        yield self.h.wait_for(lambda: self.up(proxy, 0))


class PassiveHealthTests(ReverseCase):
    """
    Failed connections eject servers; requests go elsewhere.
    """

    @inlineCallbacks
    def test_dead_server(self) -> Gen:
        """
        A server that refuses connections costs the request nothing (it is
        retried on the other server) and, with max_fails = 1, is ejected:
        later requests go straight to the live server.
        """
        dead = self.h.dead_port()
        (live,) = self.origins("live")

        class Dead:
            port = dead

        proxy = self.balanced([Dead, live], access_log=True, max_fails=1)
        names = yield self.fetch_many(proxy, 4)
        self.assertEqual(names, ["live"] * 4)
        dead_status, live_status = self.backend(proxy).status()
        self.assertTrue(dead_status["ejected"])
        self.assertFalse(live_status["ejected"])
        self.assertEqual(
            [line["upstream"] for line in proxy.access_log()],
            [f"127.0.0.1:{live.port}"] * 4,
        )

    @inlineCallbacks
    def test_all_servers_down(self) -> Gen:
        """
        When every server refuses, the request is a 502; once all are
        ejected, requests get 503 with Retry-After (fail_timeout).
        """
        ports = [self.h.dead_port(), self.h.dead_port()]
        dead = [type("Dead", (), {"port": p}) for p in ports]
        proxy = self.balanced(dead, max_fails=1, fail_timeout=7)
        response = yield self.fetch(proxy, b"/page")
        self.assertEqual(response.status, 502)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/page"))
        response = yield client.response()
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header(b"retry-after"), b"7")
        self.assert_no_in_flight(proxy)
        # a 503 leaves the connection usable
        client.send(request(b"/page"))
        response = yield client.response()
        self.assertEqual(response.status, 503)


def drop(proto: OriginProtocol, req: OriginRequest, keep_alive: bool) -> bool:
    """
    An origin handler: close the connection without an answer.
    """
    proto.dead = True
    proto.transport.loseConnection()
    return True


class RetryTests(ReverseCase):
    """
    Which failed requests are tried again on another server.
    """

    @inlineCallbacks
    def test_idempotent_retried(self) -> Gen:
        """
        A GET whose server closes without a response is retried on another
        server.
        """
        a, b = self.origins("a", "b")
        a.handler = drop
        proxy = self.balanced([a, b])
        response = yield self.fetch(proxy, b"/echo")
        self.assertEqual((response.status, served_by(response)), (200, "b"))
        self.assertEqual(len(a.requests), 1)
        self.assert_no_in_flight(proxy)

    @inlineCallbacks
    def test_idempotent_body_replayed(self) -> Gen:
        """
        A PUT (idempotent) whose server closes without a response is sent
        again, body included, to another server.
        """
        a, b = self.origins("a", "b")
        a.handler = drop
        proxy = self.balanced([a, b])
        body = os.urandom(3000)
        response = yield self.fetch(
            proxy, b"/echo", extra=b"Content-Length: 3000\r\n", method=b"PUT", body=body
        )
        self.assertEqual((response.status, served_by(response)), (200, "b"))
        self.assertEqual(response.body, body)
        self.assertEqual([r.body for r in a.requests], [body])

    @inlineCallbacks
    def test_refused_post_retried(self) -> Gen:
        """
        A POST that could not connect to its server (nothing was sent) is
        tried on another server, body intact, chunked or not.
        """
        port = self.h.dead_port()
        (live,) = self.origins("live")
        proxy = self.balanced([type("Dead", (), {"port": port}), live], max_fails=0)
        body = os.urandom(20000)
        client: RawClient = yield self.h.client(proxy.port)
        for framing in (b"Content-Length: 20000\r\n", b"Transfer-Encoding: chunked\r\n"):
            data = body if framing.startswith(b"Content") else b"%x\r\n%s\r\n0\r\n\r\n" % (
                len(body),
                body,
            )
            client.send(request(b"/echo", extra=framing, method=b"POST") + data)
            response: Response = yield client.response()
            self.assertEqual((response.status, served_by(response)), (200, "live"))
            self.assertEqual(response.body, body)
        self.assert_no_in_flight(proxy)

    @inlineCallbacks
    def test_post_not_retried(self) -> Gen:
        """
        A POST whose body reached a server that closed without a response
        is a 502: it is never sent again.
        """
        a, b = self.origins("a", "b")
        a.handler = drop
        proxy = self.balanced([a, b])
        response = yield self.fetch(
            proxy, b"/echo", extra=b"Content-Length: 5\r\n", method=b"POST", body=b"hello"
        )
        self.assertEqual(response.status, 502)
        self.assertEqual([r.body for r in a.requests], [b"hello"])
        self.assertEqual(b.requests, [])
        self.assert_no_in_flight(proxy)

    @inlineCallbacks
    def test_retry_budget(self) -> Gen:
        """
        With retries = 0 a failed GET is not tried elsewhere.
        """
        a, b = self.origins("a", "b")
        a.handler = drop
        proxy = self.balanced([a, b], retries=0)
        response = yield self.fetch(proxy, b"/echo")
        self.assertEqual(response.status, 502)
        self.assertEqual(b.requests, [])


class BrokenBackendTests(ReverseCase):
    """
    A server that dies while it answers.
    """

    @inlineCallbacks
    def killed_mid_response(self, head_and_some: bytes) -> Gen:
        a, b = self.origins("a", "b")

        def start_then_hang(proto: OriginProtocol, req: OriginRequest, keep_alive: bool) -> bool:
            if req.path != "/big":
                return False
            proto.dead = True
            proto.transport.write(head_and_some)
            return True

        a.handler = start_then_hang
        proxy = self.balanced([a, b], max_fails=1)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/big"))
        head = yield client.until(b"\r\n\r\n")
        yield self.h.wait_for(lambda: client.buffer)
        yield self.h.kill(a)
        rest = yield client.closed()
        # the proxy never pretends the response was complete
        for _ in range(2):
            response = yield self.fetch(proxy, b"/after")
            self.assertEqual((response.status, served_by(response)), (200, "b"))
        self.assert_no_in_flight(proxy)
        return head, rest

    @inlineCallbacks
    def test_content_length(self) -> Gen:
        """
        The client of a Content-Length response cut short sees the
        connection close before the announced length; the next requests go
        to the healthy server and succeed.
        """
        head, rest = yield self.killed_mid_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 1000
        )
        self.assertIn(b"Content-Length: 100000", head)
        self.assertEqual(rest, b"y" * 1000)

    @inlineCallbacks
    def test_chunked(self) -> Gen:
        """
        The client of a chunked response cut short sees the connection
        close without the last chunk.
        """
        head, rest = yield self.killed_mid_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        self.assertIn(b"chunked", head.lower())
        self.assertEqual(rest, b"5\r\nhello\r\n")


class LimitTests(ReverseCase):
    """
    The head limits and the check of the bytes in hand, over a real
    socket: what is refused never reaches the origin.
    """

    def setUp(self) -> None:
        ReverseCase.setUp(self)
        [self.origin] = self.origins("a")

        def many_headers(proto: OriginProtocol, req: OriginRequest, keep_alive: bool) -> bool:
            if req.path != "/many-headers":
                return False
            fields = [(b"X-H%d" % i, b"v") for i in range(200)]
            proto.send(req, keep_alive, b"body\n", headers=fields)
            return True

        self.origin.handler = many_headers
        self.proxy = self.balanced([self.origin])

    @inlineCallbacks
    def refused(self, data: bytes, status: int) -> Gen:
        """
        Send C{data} in one write: it gets C{status} and a closed
        connection, and the origin never sees a connection.
        """
        client: RawClient = yield self.h.client(self.proxy.port)
        client.send(data + request(b"/smuggled"))
        response: Response = yield client.response()
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.header(b"connection"), b"close")
        rest = yield client.closed()
        self.assertEqual(rest, b"")
        self.assertEqual(self.origin.requests, [])
        self.assertEqual(self.origin.connections_made, 0)

    @inlineCallbacks
    def test_header_field_too_large(self) -> Gen:
        """
        A request with a 9 KiB header field (beyond the default
        max_field_size, within max_head_size) gets 431.
        """
        yield self.refused(request(b"/big", extra=b"X-Big: " + b"b" * 9216 + b"\r\n"), 431)

    @inlineCallbacks
    def test_too_many_header_fields(self) -> Gen:
        """
        A request with 101 header fields gets 431.
        """
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100))
        yield self.refused(request(b"/many", extra=fields), 431)

    @inlineCallbacks
    def test_malformed_chunk_with_its_head(self) -> Gen:
        """
        A head and a malformed chunked body in one write get 400; the head
        is never forwarded.
        """
        yield self.refused(
            request(b"/upload", extra=b"Transfer-Encoding: chunked\r\n", method=b"POST")
            + b"5\r\nhello\r\n0x5\r\nworld\r\n0\r\n\r\n",
            400,
        )

    @inlineCallbacks
    def test_response_with_too_many_headers(self) -> Gen:
        """
        An origin response with 200 header fields is invalid: the client
        gets 502, and the proxy goes on serving.
        """
        response = yield self.fetch(self.proxy, b"/many-headers")
        self.assertEqual(response.status, 502)
        self.assertNotIn(b"X-H1", b"".join(n for n, _ in response.headers))
        response = yield self.fetch(self.proxy, b"/fine")
        self.assertEqual(response.status, 200)


class MalformedRequestTests(ReverseCase):
    """
    The smuggling corpus of the forward tests (L{smuggling_corpus}) through
    a reverse listener.
    """

    @inlineCallbacks
    def test_corpus(self) -> Gen:
        """
        Every sample gets its 4xx (505 for an unknown version) and a closed
        connection, and the origin never sees anything: no request, not
        even a connection.
        """
        [origin] = self.origins("a")
        proxy = self.balanced([origin])
        for name, data, statuses in smuggling_corpus(b"/echo", b"site.test"):
            client: RawClient = yield self.h.client(proxy.port)
            client.send(data + request(b"/smuggled"))
            response: Response = yield client.response()
            self.assertIn(response.status, statuses, name)
            self.assertEqual(response.header(b"connection"), b"close", name)
            rest = yield client.closed()
            self.assertEqual(rest, b"", name)
            self.assertEqual(origin.requests, [], name)
            self.assertEqual(origin.connections_made, 0, name)


class QueueTests(ReverseCase):
    """
    max_connections and queue_timeout.
    """

    @inlineCallbacks
    def hold_one(self, queue_timeout: float) -> Gen:
        (a,) = self.origins("a")
        proxy = self.balanced(
            [a], server_options=[{"max_connections": 1}], queue_timeout=queue_timeout
        )
        first: RawClient = yield self.h.client(proxy.port)
        first.send(request(b"/hold"))
        yield a.next_held()
        second: RawClient = yield self.h.client(proxy.port)
        second.send(request(b"/echo"))
        backend = self.backend(proxy)
        yield self.h.wait_for(lambda: backend.waiters)
        return a, proxy, first, second

    @inlineCallbacks
    def test_waits_for_a_slot(self) -> Gen:
        """
        A request for a server at max_connections waits and is sent when
        the server's request in flight has finished.
        """
        a, proxy, first, second = yield self.hold_one(5)
        self.assertEqual([r.path for r in a.requests], ["/hold"])
        a.release()
        response: Response = yield first.response()
        self.assertEqual(response.status, 200)
        response = yield second.response()
        self.assertEqual((response.status, response.echo().target), (200, "/echo"))
        return second

    @inlineCallbacks
    def test_usable_after_waiting(self) -> Gen:
        """
        A connection whose request waited for a slot serves its next
        request.
        """
        second = yield self.test_waits_for_a_slot()
        second.send(request(b"/again"))
        response = yield second.response()
        self.assertEqual((response.status, response.echo().target), (200, "/again"))


    @inlineCallbacks
    def test_queue_timeout(self) -> Gen:
        """
        A request that waits longer than queue_timeout gets 503 with
        Retry-After; the request holding the slot is not disturbed.
        """
        a, proxy, first, second = yield self.hold_one(0.2)
        response: Response = yield second.response()
        self.assertEqual(response.status, 503)
        self.assertIsNotNone(response.header(b"retry-after"))
        a.release()
        response = yield first.response()
        self.assertEqual(response.status, 200)
        self.assertEqual([r.path for r in a.requests], ["/hold"])
        return second

    @inlineCallbacks
    def test_usable_after_queue_timeout(self) -> Gen:
        """
        A connection whose request timed out in the queue (503) serves its
        next request.
        """
        second = yield self.test_queue_timeout()
        second.send(request(b"/again"))
        response = yield second.response()
        self.assertEqual((response.status, response.echo().target), (200, "/again"))



class WebSocketCase(ReverseCase):
    """
    WebSocket handshakes and frames (wsproto on both ends) through the
    proxy.
    """

    skip = WSPROTO_MISSING

    @inlineCallbacks
    def exchange_messages(self, ws: WsClient) -> Gen:
        """
        Text and binary messages, small and large, go both ways.
        """
        ws.send_text("hello, websocket")
        event = yield ws.event()
        self.assertIsInstance(event, TextMessage)
        self.assertEqual(event.data, "hello, websocket")
        blob = os.urandom(200000)
        ws.send_bytes(blob)
        event = yield ws.event()
        self.assertIsInstance(event, BytesMessage)
        self.assertEqual(hashlib.sha256(event.data).digest(), hashlib.sha256(blob).digest())
        ws.send_text("ü" * 1000)
        event = yield ws.event()
        self.assertEqual(event.data, "ü" * 1000)

    @inlineCallbacks
    def close_from_client(self, ws: WsClient, origin: WsOrigin) -> Gen:
        """
        The client's close frame reaches the origin, the origin's answer
        reaches the client, and both TCP connections close.
        """
        ws.send(CloseConnection(code=1000, reason="done"))
        event = yield ws.event()
        self.assertIsInstance(event, CloseConnection)
        self.assertEqual(event.code, 1000)
        yield ws.raw.closed()
        self.assertEqual(origin.closes, [(1000, "done")])
        yield self.h.wait_for(lambda: not origin.connections)


class ReverseWebSocketTests(WebSocketCase):
    """
    WebSocket through a reverse listener.
    """

    def setUp(self) -> None:
        WebSocketCase.setUp(self)
        self.ws_origin = self.h.ws_origin("ws")
        (self.web,) = self.origins("web")
        self.proxy = self.h.reverse(
            [
                {"path": "/ws/", "backend": "ws", "strip_prefix": True},
                {"path": "/", "backend": "web"},
            ],
            {"ws": {"servers": servers(self.ws_origin)}, "web": {"servers": servers(self.web)}},
            access_log=True,
        )

    @inlineCallbacks
    def connect(self, target: str) -> Gen:
        raw: RawClient = yield self.h.client(self.proxy.port)
        ws = WsClient(raw)
        response = yield ws.connect("chat.test", target)
        return ws, response

    @inlineCallbacks
    def test_messages_and_close(self) -> Gen:
        """
        The 101 is relayed, messages go both ways through the splice, the
        close handshake crosses, both connections close, and the access log
        has one line with status 101.
        """
        ws, response = yield self.connect("/ws/chat")
        self.assertEqual(response.status, 101)
        self.assertEqual((response.header(b"upgrade") or b"").lower(), b"websocket")
        [handshake] = self.ws_origin.handshakes
        self.assertEqual(handshake.target, "/chat")
        self.assertEqual(handshake.host, "chat.test")
        yield self.exchange_messages(ws)
        yield self.close_from_client(ws, self.ws_origin)
        yield self.h.wait_for(lambda: self.proxy.access_log())
        [line] = self.proxy.access_log()
        self.assertEqual((line["method"], line["status"]), ("GET", 101))
        self.assertEqual(line["upstream"], f"127.0.0.1:{self.ws_origin.port}")
        self.assert_no_in_flight(self.proxy)

    @inlineCallbacks
    def test_close_from_origin(self) -> Gen:
        """
        A close started by the origin reaches the client; the client's
        answer reaches the origin, and the connections close.
        """
        ws, response = yield self.connect("/ws/chat")
        self.assertEqual(response.status, 101)
        ws.send_text("close please")
        event = yield ws.event()
        self.assertIsInstance(event, CloseConnection)
        self.assertEqual((event.code, event.reason), (1001, "going away"))
        ws.send(event.response())
        yield ws.raw.closed()
        yield self.h.wait_for(lambda: not self.ws_origin.connections)
        self.assertEqual(self.ws_origin.closes, [(1001, "going away")])

    @inlineCallbacks
    def test_refused_upgrade(self) -> Gen:
        """
        An origin that answers an upgrade with 403 leaves the client's
        connection in HTTP: the next request on it is served normally.
        """
        ws, response = yield self.connect("/ws/reject")
        self.assertEqual(response.status, 403)
        self.assertEqual(response.body, b"no websocket here\n")
        ws.raw.send(request(b"/plain"))
        response = yield ws.raw.response()
        self.assertEqual((response.status, served_by(response)), (200, "web"))
        self.assertEqual(response.echo().target, "/plain")


class ForwardWebSocketTests(WebSocketCase):
    """
    WebSocket through a forward listener (absolute-form upgrade request).
    """

    @inlineCallbacks
    def connect(self, proxy: RunningProxy, origin: WsOrigin, target: str) -> Gen:
        raw: RawClient = yield self.h.client(proxy.port)
        ws = WsClient(raw)
        authority = origin.authority.decode()
        response = yield ws.connect(
            authority, target, f"http://{authority}{target}".encode()
        )
        return ws, response

    @inlineCallbacks
    def test_messages_and_close(self) -> Gen:
        """
        Through a forward proxy: the 101, messages both ways, the close
        handshake and both connections closing.
        """
        origin = self.h.ws_origin()
        proxy = self.h.proxy()
        ws, response = yield self.connect(proxy, origin, "/chat?room=1")
        self.assertEqual(response.status, 101)
        [handshake] = origin.handshakes
        self.assertEqual(handshake.target, "/chat?room=1")
        yield self.exchange_messages(ws)
        yield self.close_from_client(ws, origin)

    @inlineCallbacks
    def test_refused_upgrade(self) -> Gen:
        """
        Through a forward proxy, a refused upgrade leaves the connection
        usable for a normal request.
        """
        origin = self.h.ws_origin()
        web = self.h.origin()
        proxy = self.h.proxy()
        ws, response = yield self.connect(proxy, origin, "/reject")
        self.assertEqual(response.status, 403)
        ws.raw.send(request(web.url("/text/fine"), web.authority))
        response = yield ws.raw.response()
        self.assertEqual((response.status, response.body), (200, b"fine"))


class BigBodyTests(ReverseCase):
    """
    Large bodies cross a reverse listener intact in both directions.
    """

    SIZE = 8 << 20

    @inlineCallbacks
    def test_upload_chunked_download_content_length(self) -> Gen:
        """
        An 8 MB chunked upload reaches the backend intact, and its echo (a
        Content-Length response) reaches the client intact.
        """
        (a,) = self.origins("a")
        proxy = self.balanced([a])
        body = os.urandom(self.SIZE)
        client: RawClient = yield self.h.client(proxy.port)
        client.send(request(b"/echo", extra=b"Transfer-Encoding: chunked\r\n", method=b"POST"))
        step = 65536 + 17
        for pos in range(0, len(body), step):
            piece = body[pos : pos + step]
            client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        client.send(b"0\r\n\r\n")
        response: Response = yield client.response()
        self.assertEqual(response.status, 200)
        self.assertFalse(response.chunked)
        self.assertEqual(response.header(b"content-length"), b"%d" % self.SIZE)
        self.assertEqual(hashlib.sha256(a.requests[0].body).digest(), hashlib.sha256(body).digest())
        self.assertEqual(hashlib.sha256(response.body).digest(), hashlib.sha256(body).digest())

    @inlineCallbacks
    def test_download_chunked(self) -> Gen:
        """
        An 8 MB chunked response reaches the client intact.
        """
        (a,) = self.origins("a")
        proxy = self.balanced([a])
        response = yield self.fetch(proxy, b"/chunked?size=%d&chunk=65536" % self.SIZE)
        self.assertEqual(response.status, 200)
        self.assertTrue(response.chunked)
        self.assertEqual(
            hashlib.sha256(response.body).digest(),
            hashlib.sha256(pattern(0, self.SIZE)).digest(),
        )
