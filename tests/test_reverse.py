"""
Tests for L{twisted_proxy.reverse}.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Optional, Sequence, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.http import policy
from twisted_proxy.http.parser import BadRequest, RequestHead
from twisted_proxy import reverse
from twisted_proxy.reverse import ReverseRouter, Route, RoutingTable, normalize_path

Headers = List[Tuple[bytes, bytes]]


class FakeBackend:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<FakeBackend {self.name}>"


class FakeServer:
    """
    What L{ReverseRouter.request_head} needs of a server: its label.
    """

    def __init__(self, label: str = "10.0.0.9:8080") -> None:
        self.label = label


def route(
    backend: str, host: Optional[str] = None, path: str = "/", **options: Any
) -> Route:
    return Route(FakeBackend(backend), host, path, **options)


def head(
    target: bytes = b"/",
    host: Optional[bytes] = b"example.com",
    method: bytes = b"GET",
    headers: Sequence[Tuple[bytes, bytes]] = (),
    version: bytes = b"1.1",
    framing: int = 0,
    upgrade: Optional[bytes] = None,
    expect_continue: bool = False,
) -> RequestHead:
    all_headers: Headers = []
    if host is not None:
        all_headers.append((b"Host", host))
    all_headers.extend(headers)
    return RequestHead(
        method, target, version, all_headers, host, True, framing, expect_continue, upgrade
    )


def parse_head(data: bytes) -> Tuple[bytes, Headers]:
    """
    The request line and headers of a serialised head.
    """
    assert data.endswith(b"\r\n\r\n"), data
    lines = data[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers.append((name, value))
    return lines[0], headers


def values(headers: Headers, name: bytes) -> List[bytes]:
    return [v for n, v in headers if n.lower() == name.lower()]


class RoutingTableTests(SynchronousTestCase):
    """
    L{RoutingTable.match}: the longest path prefix wins; on a tie, exact
    host over wildcard over any host.
    """

    def match(self, table: RoutingTable, host: str, path: bytes) -> Optional[str]:
        found = table.match(host, path)
        return None if found is None else found.backend.name

    def test_longest_prefix(self) -> None:
        """
        Of several matching prefixes, the longest wins, whatever the order
        of the routes.
        """
        table = RoutingTable(
            [route("root", path="/"), route("api-v1", path="/api/v1/"), route("api", path="/api/")]
        )
        self.assertEqual(self.match(table, "x", b"/api/v1/users"), "api-v1")
        self.assertEqual(self.match(table, "x", b"/api/v2/users"), "api")
        self.assertEqual(self.match(table, "x", b"/index.html"), "root")

    def test_tie_exact_over_wildcard_over_any(self) -> None:
        """
        With the same prefix, an exact host beats a wildcard, which beats
        any host.
        """
        table = RoutingTable(
            [
                route("any", path="/api/"),
                route("wild", "*.example.com", "/api/"),
                route("exact", "api.example.com", "/api/"),
            ]
        )
        self.assertEqual(self.match(table, "api.example.com", b"/api/x"), "exact")
        self.assertEqual(self.match(table, "www.example.com", b"/api/x"), "wild")
        self.assertEqual(self.match(table, "other.org", b"/api/x"), "any")

    def test_longer_prefix_beats_specific_host(self) -> None:
        """
        The prefix length decides first: an any-host route with a longer
        prefix beats an exact host with a shorter one.
        """
        table = RoutingTable(
            [route("exact", "api.example.com", "/"), route("any", path="/static/")]
        )
        self.assertEqual(self.match(table, "api.example.com", b"/static/a.css"), "any")
        self.assertEqual(self.match(table, "api.example.com", b"/other"), "exact")

    def test_most_specific_wildcard(self) -> None:
        """
        Of two wildcards matching a host, the longer suffix wins a tie.
        """
        table = RoutingTable(
            [route("broad", "*.example.com"), route("narrow", "*.eu.example.com")]
        )
        self.assertEqual(self.match(table, "a.eu.example.com", b"/"), "narrow")
        self.assertEqual(self.match(table, "a.us.example.com", b"/"), "broad")

    def test_wildcard_depth(self) -> None:
        """
        C{*.example.com} matches subdomains at any depth, but not the apex
        nor a name that merely ends the same.
        """
        table = RoutingTable([route("wild", "*.example.com")])
        self.assertEqual(self.match(table, "a.example.com", b"/"), "wild")
        self.assertEqual(self.match(table, "a.b.example.com", b"/"), "wild")
        self.assertIsNone(self.match(table, "example.com", b"/"))
        self.assertIsNone(self.match(table, "badexample.com", b"/"))

    def test_exact_host_only(self) -> None:
        """
        An exact host matches only itself, not its subdomains.
        """
        table = RoutingTable([route("exact", "example.com")])
        self.assertEqual(self.match(table, "example.com", b"/"), "exact")
        self.assertIsNone(self.match(table, "www.example.com", b"/"))

    def test_route_host_normalised(self) -> None:
        """
        A route's host is lower-cased and loses a trailing dot.
        """
        table = RoutingTable([route("exact", "API.Example.com.")])
        self.assertEqual(self.match(table, "api.example.com", b"/"), "exact")

    def test_no_match(self) -> None:
        """
        No route for the host and path: L{None}.
        """
        table = RoutingTable([route("api", "api.example.com", "/api/")])
        self.assertIsNone(self.match(table, "api.example.com", b"/web"))
        self.assertIsNone(self.match(table, "web.example.com", b"/api/x"))
        self.assertIsNone(self.match(RoutingTable([]), "x", b"/"))

    def test_falls_back_to_shorter(self) -> None:
        """
        A specific host whose only route does not match falls back to
        another group's matching route.
        """
        table = RoutingTable([route("exact", "a.example.com", "/api/"), route("any")])
        self.assertEqual(self.match(table, "a.example.com", b"/web"), "any")


class NormalizePathTests(SynchronousTestCase):
    """
    L{normalize_path} resolves dot segments so a prefix cannot be
    sidestepped.
    """

    def test_plain_unchanged(self) -> None:
        """
        A path without dot segments is returned as is.
        """
        self.assertEqual(normalize_path(b"/a/b.html?x=../y"), b"/a/b.html?x=../y")
        self.assertEqual(normalize_path(b"/.well-known/x"), b"/.well-known/x")

    def test_dot_dot(self) -> None:
        """
        C{..} removes the segment before it.
        """
        self.assertEqual(normalize_path(b"/public/../admin"), b"/admin")
        self.assertEqual(normalize_path(b"/a/b/../../c"), b"/c")

    def test_dot(self) -> None:
        """
        C{.} segments vanish.
        """
        self.assertEqual(normalize_path(b"/a/./b/."), b"/a/b/")

    def test_above_root(self) -> None:
        """
        C{..} cannot climb above the root.
        """
        self.assertEqual(normalize_path(b"/../../etc/passwd"), b"/etc/passwd")
        self.assertEqual(normalize_path(b"/.."), b"/")

    def test_percent_encoded(self) -> None:
        """
        C{%2e} (either case, alone or mixed with dots) is a dot.
        """
        self.assertEqual(normalize_path(b"/public/%2e%2e/admin"), b"/admin")
        self.assertEqual(normalize_path(b"/public/%2E%2E/admin"), b"/admin")
        self.assertEqual(normalize_path(b"/public/.%2e/admin"), b"/admin")
        self.assertEqual(normalize_path(b"/a/%2e/b"), b"/a/b")

    def test_unreserved_decoded(self) -> None:
        """
        Percent-encoded unreserved characters are decoded (they mean the
        same), so C{/%61dmin} is C{/admin}; reserved ones, and malformed
        escapes, stay as they are.
        """
        self.assertEqual(normalize_path(b"/%61dmin/%7Euser"), b"/admin/~user")
        self.assertEqual(normalize_path(b"/a%2Fb%3f%25%20c"), b"/a%2Fb%3f%25%20c")
        self.assertEqual(normalize_path(b"/a%2/b%zz%"), b"/a%2/b%zz%")
        self.assertEqual(normalize_path(b"/%2541"), b"/%2541")
        self.assertEqual(normalize_path(b"/x?q=%61"), b"/x?q=%61")

    def test_trailing_dot_segments(self) -> None:
        """
        A trailing C{.} or C{..} leaves a directory: the result ends in a
        slash.
        """
        self.assertEqual(normalize_path(b"/a/b/.."), b"/a/")
        self.assertEqual(normalize_path(b"/a/b/."), b"/a/b/")
        self.assertEqual(normalize_path(b"/a/%2e%2e"), b"/")

    def test_query_untouched(self) -> None:
        """
        The query is kept byte for byte, dot segments in it included.
        """
        self.assertEqual(
            normalize_path(b"/public/../admin?next=/a/../b&x=%2e%2e"),
            b"/admin?next=/a/../b&x=%2e%2e",
        )

    def test_other_segments_kept(self) -> None:
        """
        Names that only contain dots among other characters, and empty
        segments, are kept.
        """
        self.assertEqual(normalize_path(b"/a/.../b/..c/./"), b"/a/.../b/..c/")
        self.assertEqual(normalize_path(b"/a//b/./c"), b"/a//b/c")


class RouteRewriteTests(SynchronousTestCase):
    """
    L{Route.rewrite}: the path the backend gets.
    """

    def test_unchanged(self) -> None:
        """
        Without strip or rewrite, the path is forwarded as is.
        """
        self.assertEqual(route("b", path="/api/").rewrite(b"/api/users"), b"/api/users")

    def test_strip_prefix(self) -> None:
        """
        C{strip_prefix} removes the route's prefix, keeping a leading slash.
        """
        r = route("b", path="/api", strip_prefix=True)
        self.assertEqual(r.rewrite(b"/api/users"), b"/users")
        self.assertEqual(r.rewrite(b"/api"), b"/")
        self.assertEqual(r.rewrite(b"/api?x=1"), b"/?x=1")
        r = route("b", path="/api/", strip_prefix=True)
        self.assertEqual(r.rewrite(b"/api/users"), b"/users")
        self.assertEqual(r.rewrite(b"/api/"), b"/")

    def test_rewrite_prefix(self) -> None:
        """
        C{rewrite_prefix} replaces the route's prefix.
        """
        r = route("b", path="/api/", rewrite_prefix="/v2/")
        self.assertEqual(r.rewrite(b"/api/users?id=3"), b"/v2/users?id=3")
        self.assertEqual(r.rewrite(b"/api/"), b"/v2/")


class RouteTests(SynchronousTestCase):
    """
    L{ReverseRouter.route}: the target of a request on a reverse listener.
    """

    def setUp(self) -> None:
        self.router = ReverseRouter(
            [
                route("api", "api.example.com", "/api/", strip_prefix=True),
                route("v2", "api.example.com", "/old/", rewrite_prefix="/v2/"),
                route("web", "*.example.com"),
                route("admin", path="/admin"),
            ]
        )

    def test_origin_form(self) -> None:
        """
        An origin-form request is routed by its Host header; the target
        keeps the Host authority and has the rewritten path.
        """
        target = self.router.route(head(b"/api/users?id=1", b"API.example.com:8080"))
        self.assertEqual(target.backend.name, "api")
        self.assertIs(target.backend, target.route.backend)
        self.assertEqual(target.host, "api.example.com")
        self.assertEqual(target.port, 8080)
        self.assertEqual(target.authority, b"API.example.com:8080")
        self.assertEqual(target.path, b"/users?id=1")
        self.assertEqual(target.url, "http://API.example.com:8080/api/users?id=1")
        self.assertFalse(target.connect)

    def test_default_port(self) -> None:
        """
        Without a port in Host, the listener's default port.
        """
        target = self.router.route(head(b"/", b"www.example.com"))
        self.assertEqual((target.host, target.port), ("www.example.com", 80))

    def test_filters_from_route(self) -> None:
        """
        The target carries its route's filters.
        """
        flt = object()
        router = ReverseRouter([route("b", filters=[flt])])
        self.assertEqual(router.route(head(b"/")).filters, (flt,))

    def test_rewrite_prefix(self) -> None:
        """
        A route's C{rewrite_prefix} applies to the target path.
        """
        target = self.router.route(head(b"/old/thing", b"api.example.com"))
        self.assertEqual(target.path, b"/v2/thing")

    def test_absolute_form(self) -> None:
        """
        An absolute-form request is routed by its URI's authority, not the
        Host header.
        """
        target = self.router.route(
            head(b"http://api.example.com/api/users", b"something.else")
        )
        self.assertEqual(target.backend.name, "api")
        self.assertEqual(target.authority, b"api.example.com")
        self.assertEqual(target.path, b"/users")

    def test_absolute_form_without_path(self) -> None:
        """
        An absolute URI without a path means C{/}; its query is kept.
        """
        target = self.router.route(head(b"HTTP://www.example.com"))
        self.assertEqual(target.path, b"/")
        target = self.router.route(head(b"https://www.example.com?q=1"))
        self.assertEqual(target.path, b"/?q=1")

    def test_absolute_form_only_configured(self) -> None:
        """
        An absolute-form request for a host no route serves is refused (404):
        a reverse listener is not an open proxy.
        """
        router = ReverseRouter([route("api", "api.example.com")])
        error = self.assertRaises(
            BadRequest, router.route, head(b"http://evil.org/", b"api.example.com")
        )
        self.assertEqual(error.status, 404)

    def test_absolute_form_bad_authority(self) -> None:
        """
        An absolute URI with user info is a 400.
        """
        error = self.assertRaises(
            BadRequest, self.router.route, head(b"http://user@www.example.com/")
        )
        self.assertEqual(error.status, 400)

    def test_absolute_form_empty_host(self) -> None:
        """
        An absolute URI with an empty host (C{http:///admin}) is a 400, not
        a request for any-host routes that ignores the Host header.
        """
        for target in (b"http:///admin", b"http://?x=1", b"https://"):
            error = self.assertRaises(
                BadRequest, self.router.route, head(target, b"api.example.com")
            )
            self.assertEqual(error.status, 400, target)

    def test_connect_405(self) -> None:
        """
        CONNECT is refused with 405.
        """
        error = self.assertRaises(
            BadRequest, self.router.route, head(b"www.example.com:443", method=b"CONNECT")
        )
        self.assertEqual(error.status, 405)

    def test_no_route_404(self) -> None:
        """
        A request no route matches is a 404.
        """
        error = self.assertRaises(BadRequest, self.router.route, head(b"/", b"other.org"))
        self.assertEqual(error.status, 404)

    def test_invalid_target_400(self) -> None:
        """
        A target neither origin-form nor absolute-form is a 400.
        """
        for target in (b"www.example.com", b"ftp://www.example.com/", b"*"):
            error = self.assertRaises(BadRequest, self.router.route, head(target))
            self.assertEqual(error.status, 400, target)

    def test_options_asterisk(self) -> None:
        """
        C{OPTIONS *} is routed by Host as if for C{/} and forwarded as C{*}.
        """
        target = self.router.route(head(b"*", b"www.example.com", method=b"OPTIONS"))
        self.assertEqual(target.backend.name, "web")
        self.assertEqual(target.path, b"*")

    def test_remembered(self) -> None:
        """
        A target and Host routed before are not routed again, but every
        request gets a target of its own, equal to the first.
        """
        first = self.router.route(head(b"/api/x?q=1", b"api.example.com"))
        calls: List[bytes] = []
        original = self.router._route

        def counting(raw: bytes, h: RequestHead) -> tuple:
            calls.append(raw)
            return original(raw, h)

        self.router._route = counting  # type: ignore[method-assign]
        second = self.router.route(head(b"/api/x?q=1", b"api.example.com"))
        self.assertEqual(calls, [])
        self.assertIsNot(second, first)
        self.assertEqual((second.backend.name, second.path, second.host), ("api", b"/x?q=1", "api.example.com"))
        # another Host is another decision
        other = self.router.route(head(b"/api/x?q=1", b"www.example.com"))
        self.assertEqual(other.backend.name, "web")
        self.assertEqual(calls, [b"/api/x?q=1"])

    def test_memo_bounded(self) -> None:
        """
        The memo forgets everything when full; long targets, C{*} and
        refused requests are never kept.
        """
        self.patch(reverse, "MEMO_SIZE", 3)
        for i in range(3):
            self.router.route(head(b"/p%d" % i, b"www.example.com"))
        self.assertEqual(len(self.router._routes), 3)
        self.router.route(head(b"/p3", b"www.example.com"))
        self.assertEqual(len(self.router._routes), 1)
        self.router.route(head(b"/" + b"x" * reverse.MEMO_TARGET, b"www.example.com"))
        self.router.route(head(b"*", b"www.example.com", method=b"OPTIONS"))
        self.assertRaises(BadRequest, self.router.route, head(b"/x", b"other.org"))
        self.assertEqual(len(self.router._routes), 1)
        # OPTIONS * does not let a GET * through
        error = self.assertRaises(BadRequest, self.router.route, head(b"*", b"www.example.com"))
        self.assertEqual(error.status, 400)

    def test_no_host(self) -> None:
        """
        An HTTP/1.0 request without Host matches only any-host routes.
        """
        target = self.router.route(head(b"/admin/x", None, version=b"1.0"))
        self.assertEqual(target.backend.name, "admin")
        self.assertEqual(target.authority, b"")
        error = self.assertRaises(BadRequest, self.router.route, head(b"/x", None, version=b"1.0"))
        self.assertEqual(error.status, 404)

    def test_normalised_before_routing(self) -> None:
        """
        Dot segments are resolved before routing: C{/public/../admin} goes
        to the C{/admin} route, with the normalised path.
        """
        target = self.router.route(head(b"/public/../admin/x", b"other.org"))
        self.assertEqual(target.backend.name, "admin")
        self.assertEqual(target.path, b"/admin/x")
        target = self.router.route(head(b"/api/%2e%2e/admin", b"other.org"))
        self.assertEqual(target.path, b"/admin")

    def test_encoded_prefix_still_routed(self) -> None:
        """
        A percent-encoded prefix (C{/%61dmin}) reaches the route (and the
        filters) of the prefix it spells.
        """
        target = self.router.route(head(b"/%61%64min/x", b"other.org"))
        self.assertEqual(target.backend.name, "admin")
        self.assertEqual(target.path, b"/admin/x")

    def test_cannot_escape_route_prefix(self) -> None:
        """
        C{/api/../secret} is not served by the C{/api/} route.
        """
        target = self.router.route(head(b"/api/../secret", b"api.example.com"))
        self.assertEqual(target.backend.name, "web")
        self.assertEqual(target.path, b"/secret")

    def test_query_preserved(self) -> None:
        """
        The query goes to the backend unchanged, through normalisation and
        prefix stripping.
        """
        target = self.router.route(head(b"/api/./users?a=1&b=/../x", b"api.example.com"))
        self.assertEqual(target.path, b"/users?a=1&b=/../x")

    def test_fragment_dropped(self) -> None:
        """
        A fragment (which clients should not send) is not forwarded.
        """
        target = self.router.route(head(b"/api/users#top", b"api.example.com"))
        self.assertEqual(target.path, b"/users")


class TrustTests(SynchronousTestCase):
    """
    L{ReverseRouter.is_trusted}: whether a client is a trusted proxy.
    """

    def test_trusted(self) -> None:
        """
        Addresses in C{trusted_proxies} are trusted, IPv4-mapped IPv6 too;
        others and garbage are not.
        """
        router = ReverseRouter(
            [route("b")],
            trusted_proxies=[ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")],
        )
        self.assertTrue(router.is_trusted("10.1.2.3"))
        self.assertTrue(router.is_trusted("::ffff:10.1.2.3"))
        self.assertTrue(router.is_trusted("fd00::1"))
        self.assertFalse(router.is_trusted("192.168.1.1"))
        self.assertFalse(router.is_trusted("not an address"))
        # cached answers stay right
        self.assertTrue(router.is_trusted("10.1.2.3"))
        self.assertFalse(router.is_trusted("192.168.1.1"))

    def test_none_trusted_by_default(self) -> None:
        """
        Without C{trusted_proxies}, nobody is trusted.
        """
        self.assertFalse(ReverseRouter([route("b")]).is_trusted("127.0.0.1"))


class RequestHeadTests(SynchronousTestCase):
    """
    L{ReverseRouter.request_head}: the head the backend gets.
    """

    def build(
        self,
        request: RequestHead,
        client_ip: str = "203.0.113.7",
        server: Optional[FakeServer] = None,
        routes: Optional[List[Route]] = None,
        **options: Any,
    ) -> Tuple[bytes, Headers]:
        router = ReverseRouter(routes or [route("b", strip_prefix=False)], **options)
        target = router.route(request)
        data = router.request_head(request, target, client_ip, server or FakeServer())
        return parse_head(data)

    def test_request_line(self) -> None:
        """
        The request line has the rewritten path and HTTP/1.1.
        """
        line, _ = self.build(
            head(b"/api/x?y=1", method=b"POST", version=b"1.0"),
            routes=[route("b", path="/api/", strip_prefix=True)],
        )
        self.assertEqual(line, b"POST /x?y=1 HTTP/1.1")

    def test_preserve_host(self) -> None:
        """
        By default the backend sees the client's Host.
        """
        _, headers = self.build(head(b"/", b"www.example.com:8080"))
        self.assertEqual(values(headers, b"host"), [b"www.example.com:8080"])
        self.assertEqual(headers[0], (b"Host", b"www.example.com:8080"))

    def test_preserve_host_absolute_form(self) -> None:
        """
        For an absolute-form request, the Host sent is the URI's authority.
        """
        _, headers = self.build(head(b"http://www.example.com/x", b"ignored.example"))
        self.assertEqual(values(headers, b"host"), [b"www.example.com"])

    def test_preserve_host_false(self) -> None:
        """
        With C{preserve_host = false} the backend sees its own C{host:port}.
        """
        _, headers = self.build(
            head(b"/", b"www.example.com"),
            server=FakeServer("[::1]:5001"),
            routes=[route("b", preserve_host=False)],
        )
        self.assertEqual(values(headers, b"host"), [b"[::1]:5001"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [b"www.example.com"])

    def test_no_client_host(self) -> None:
        """
        A request without Host gets the server's label and no
        C{X-Forwarded-Host}.
        """
        _, headers = self.build(head(b"/", None, version=b"1.0"))
        self.assertEqual(values(headers, b"host"), [b"10.0.0.9:8080"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [])

    def test_forwarding_headers(self) -> None:
        """
        The backend learns the client address, scheme and Host.
        """
        _, headers = self.build(head(b"/", b"www.example.com"))
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"203.0.113.7"])
        self.assertEqual(values(headers, b"x-forwarded-proto"), [b"http"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [b"www.example.com"])
        self.assertEqual(values(headers, b"forwarded"), [])

    def test_scheme(self) -> None:
        """
        A TLS listener's router says C{https}.
        """
        _, headers = self.build(head(b"/"), scheme="https", default_port=443)
        self.assertEqual(values(headers, b"x-forwarded-proto"), [b"https"])

    def test_untrusted_client_headers_replaced(self) -> None:
        """
        An untrusted client's forwarding headers are dropped: it cannot
        forge its address, scheme or host.
        """
        _, headers = self.build(
            head(
                b"/",
                headers=[
                    (b"X-Forwarded-For", b"1.2.3.4"),
                    (b"X-Forwarded-Proto", b"https"),
                    (b"X-Forwarded-Host", b"forged.example"),
                    (b"X-Real-IP", b"1.2.3.4"),
                    (b"Forwarded", b"for=1.2.3.4"),
                ],
            ),
            trusted_proxies=[ipaddress.ip_network("10.0.0.0/8")],
        )
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"203.0.113.7"])
        self.assertEqual(values(headers, b"x-forwarded-proto"), [b"http"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [b"example.com"])
        self.assertEqual(values(headers, b"x-real-ip"), [])
        self.assertEqual(values(headers, b"forwarded"), [])

    def test_trusted_client_headers_extended(self) -> None:
        """
        A trusted proxy's C{X-Forwarded-For} is kept and the client's
        address appended; its proto and host are kept.
        """
        _, headers = self.build(
            head(
                b"/",
                headers=[
                    (b"X-Forwarded-For", b"1.2.3.4, 5.6.7.8"),
                    (b"X-Forwarded-Proto", b"https"),
                    (b"X-Forwarded-Host", b"public.example"),
                ],
            ),
            client_ip="10.0.0.2",
            trusted_proxies=[ipaddress.ip_network("10.0.0.0/8")],
        )
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"1.2.3.4, 5.6.7.8, 10.0.0.2"])
        self.assertEqual(values(headers, b"x-forwarded-proto"), [b"https"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [b"public.example"])

    def test_trusted_several_xff_headers(self) -> None:
        """
        Several C{X-Forwarded-For} headers from a trusted proxy are joined
        in order into one.
        """
        _, headers = self.build(
            head(b"/", headers=[(b"X-Forwarded-For", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]),
            client_ip="10.0.0.2",
            trusted_proxies=[ipaddress.ip_network("10.0.0.0/8")],
        )
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"1.1.1.1, 2.2.2.2, 10.0.0.2"])

    def test_forwarded_header(self) -> None:
        """
        With C{forwarded}, an RFC 7239 element is added.
        """
        _, headers = self.build(head(b"/", b"www.example.com"), forwarded=True)
        self.assertEqual(
            values(headers, b"forwarded"), [b'for=203.0.113.7;proto=http;host="www.example.com"']
        )

    def test_forwarded_ipv6_quoted(self) -> None:
        """
        An IPv6 client is a quoted, bracketed node in C{Forwarded}.
        """
        _, headers = self.build(head(b"/", b"www.example.com"), client_ip="2001:db8::1",
                                forwarded=True)
        self.assertEqual(
            values(headers, b"forwarded"),
            [b'for="[2001:db8::1]";proto=http;host="www.example.com"'],
        )
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"2001:db8::1"])

    def test_forwarded_trusted_appended(self) -> None:
        """
        A trusted proxy's C{Forwarded} is kept and our element appended.
        """
        _, headers = self.build(
            head(b"/", headers=[(b"Forwarded", b"for=1.2.3.4")]),
            client_ip="10.0.0.2",
            forwarded=True,
            trusted_proxies=[ipaddress.ip_network("10.0.0.0/8")],
        )
        self.assertEqual(
            values(headers, b"forwarded"),
            [b'for=1.2.3.4, for=10.0.0.2;proto=http;host="example.com"'],
        )

    def test_via(self) -> None:
        """
        C{Via} names the proxy, after any the client sent.
        """
        _, headers = self.build(head(b"/", headers=[(b"Via", b"1.0 other")]))
        [via] = values(headers, b"via")
        self.assertTrue(via.startswith(b"1.0 other, 1.1 " + policy.VIA_PREFIX), via)

    def test_elite_no_via(self) -> None:
        """
        Without C{add_via} (elite), the proxy adds no C{Via}.
        """
        _, headers = self.build(head(b"/"), add_via=False)
        self.assertEqual(values(headers, b"via"), [])

    def test_hop_by_hop_removed(self) -> None:
        """
        Hop-by-hop headers, and headers named in C{Connection}, are not
        forwarded; end-to-end headers are, in order.
        """
        _, headers = self.build(
            head(
                b"/",
                headers=[
                    (b"Connection", b"keep-alive, X-Secret"),
                    (b"Keep-Alive", b"timeout=5"),
                    (b"X-Secret", b"s"),
                    (b"TE", b"trailers"),
                    (b"Trailer", b"X-T"),
                    (b"Proxy-Authorization", b"Basic eDp5"),
                    (b"Proxy-Connection", b"keep-alive"),
                    (b"Accept", b"*/*"),
                    (b"User-Agent", b"test"),
                ],
            )
        )
        names = [n.lower() for n, _ in headers]
        for gone in (b"connection", b"keep-alive", b"x-secret", b"te", b"trailer",
                     b"proxy-authorization", b"proxy-connection"):
            self.assertNotIn(gone, names)
        self.assertEqual(names[:3], [b"host", b"accept", b"user-agent"])

    def test_body_framing(self) -> None:
        """
        A Content-Length body keeps its length; a chunked one is sent
        chunked.
        """
        _, headers = self.build(
            head(b"/", method=b"POST", headers=[(b"Content-Length", b"5")], framing=1)
        )
        self.assertEqual(values(headers, b"content-length"), [b"5"])
        _, headers = self.build(
            head(b"/", method=b"POST", headers=[(b"Transfer-Encoding", b"chunked")], framing=2)
        )
        self.assertEqual(values(headers, b"transfer-encoding"), [b"chunked"])
        self.assertEqual(values(headers, b"content-length"), [])

    def test_content_length_named_in_connection(self) -> None:
        """
        C{Content-Length} is kept even when C{Connection} names it: the
        body is relayed as received, so its framing goes with it.
        """
        _, headers = self.build(
            head(
                b"/",
                method=b"POST",
                headers=[(b"Connection", b"Content-Length"), (b"Content-Length", b"5")],
                framing=1,
            )
        )
        self.assertEqual(values(headers, b"content-length"), [b"5"])

    def test_upgrade(self) -> None:
        """
        An upgrade request keeps its C{Upgrade} with C{Connection: Upgrade}.
        """
        _, headers = self.build(
            head(
                b"/",
                headers=[(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
                upgrade=b"websocket",
            )
        )
        self.assertEqual(values(headers, b"upgrade"), [b"websocket"])
        self.assertEqual(values(headers, b"connection"), [b"Upgrade"])

    def test_expect_dropped(self) -> None:
        """
        C{Expect: 100-continue} is not forwarded (the proxy answers it).
        """
        _, headers = self.build(
            head(b"/", method=b"POST", headers=[(b"Expect", b"100-continue"),
                                               (b"Content-Length", b"3")],
                 framing=1, expect_continue=True)
        )
        self.assertEqual(values(headers, b"expect"), [])

    def test_strip_headers(self) -> None:
        """
        Headers in C{strip_headers} (set by the proxy itself) are removed
        from client input.
        """
        _, headers = self.build(
            head(b"/", headers=[(b"X-User", b"forged"), (b"X-Other", b"ok")]),
            strip_headers=["X-User"],
        )
        self.assertEqual(values(headers, b"x-user"), [])
        self.assertEqual(values(headers, b"x-other"), [b"ok"])
