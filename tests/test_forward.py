"""
Tests for L{twisted_proxy.forward}.
"""

from __future__ import annotations

from typing import Optional, Sequence, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.forward import ForwardRouter
from twisted_proxy.target import Target, parse_authority
from twisted_proxy.http.parser import BadRequest, RequestHead


def head(target: bytes, method: bytes = b"GET") -> RequestHead:
    return RequestHead(method, target, b"1.1", [(b"Host", b"ignored")], b"ignored")


def route(
    target: bytes,
    method: bytes = b"GET",
    parents: Sequence[Tuple[Sequence[str], str, int]] = (),
    own: Optional[Set[Tuple[str, int]]] = None,
) -> Target:
    return ForwardRouter(parents, own).route(head(target, method))


class AbsoluteURITests(SynchronousTestCase):
    """
    A forward proxy's requests carry absolute http:// URIs; the router
    splits them into where to connect and what to send.
    """

    def test_plain(self) -> None:
        """
        Host, default port 80, authority for Host, origin-form path with the
        query, and the URL as received for the log.
        """
        target = route(b"http://example.com/a/b?c=d")
        self.assertEqual(target.host, "example.com")
        self.assertEqual(target.port, 80)
        self.assertEqual(target.authority, b"example.com")
        self.assertEqual(target.path, b"/a/b?c=d")
        self.assertEqual(target.url, "http://example.com/a/b?c=d")
        self.assertEqual(target.scheme, "http")
        self.assertFalse(target.connect)
        self.assertIsNone(target.parent)
        self.assertEqual(target.address, ("example.com", 80))

    def test_explicit_port(self) -> None:
        """
        An explicit port is used and kept in the authority.
        """
        target = route(b"http://example.com:8080/x")
        self.assertEqual(target.port, 8080)
        self.assertEqual(target.authority, b"example.com:8080")
        self.assertEqual(target.address, ("example.com", 8080))

    def test_explicit_default_port(self) -> None:
        """
        An explicit C{:80} is dropped from the authority sent as Host.
        """
        target = route(b"http://example.com:80/x")
        self.assertEqual(target.port, 80)
        self.assertEqual(target.authority, b"example.com")

    def test_no_path(self) -> None:
        """
        A URI without a path gets C{/}.
        """
        self.assertEqual(route(b"http://example.com").path, b"/")
        self.assertEqual(route(b"http://example.com:8080").path, b"/")

    def test_query_without_path(self) -> None:
        """
        C{http://h?q} is sent as C{/?q}.
        """
        target = route(b"http://example.com?q=1&r=2")
        self.assertEqual(target.path, b"/?q=1&r=2")
        self.assertEqual(target.authority, b"example.com")
        self.assertEqual(route(b"http://example.com:81?q").path, b"/?q")

    def test_fragment_dropped(self) -> None:
        """
        A fragment is never sent to the origin.
        """
        self.assertEqual(route(b"http://example.com/p?q#frag").path, b"/p?q")
        self.assertEqual(route(b"http://example.com/p#frag").path, b"/p")
        self.assertEqual(route(b"http://example.com/#frag").path, b"/")
        self.assertEqual(route(b"http://example.com?q#frag").path, b"/?q")

    def test_path_kept_verbatim(self) -> None:
        """
        The path and query are sent byte for byte (no normalisation of
        percent-escapes, double slashes or dot segments).
        """
        raw = b"/a%2Fb//c/../d?x=%20&y"
        self.assertEqual(route(b"http://example.com" + raw).path, raw)

    def test_ipv6(self) -> None:
        """
        A bracketed IPv6 literal: host without brackets, authority with
        them.
        """
        target = route(b"http://[::1]:8080/x")
        self.assertEqual(target.host, "::1")
        self.assertEqual(target.port, 8080)
        self.assertEqual(target.authority, b"[::1]:8080")
        self.assertEqual(target.path, b"/x")
        target = route(b"http://[2001:DB8::1]/")
        self.assertEqual(target.host, "2001:db8::1")
        self.assertEqual(target.port, 80)
        self.assertEqual(target.authority, b"[2001:DB8::1]")

    def test_uppercase_scheme_and_host(self) -> None:
        """
        Scheme and host are case-insensitive: the host is lower-cased for
        connecting; the path keeps its case.
        """
        target = route(b"HTTP://EXAMPLE.COM/Path")
        self.assertEqual(target.host, "example.com")
        self.assertEqual(target.path, b"/Path")
        self.assertEqual(route(b"Http://Example.Com:8080/").host, "example.com")

    def test_trailing_dot(self) -> None:
        """
        A fully-qualified host's trailing dot is dropped for connecting.
        """
        self.assertEqual(route(b"http://example.com./x").host, "example.com")

    def refused(self, target: bytes, method: bytes = b"GET", **kw: object) -> BadRequest:
        error = self.assertRaises(BadRequest, route, target, method, **kw)
        self.assertEqual(error.status, 400)
        return error

    def test_userinfo_refused(self) -> None:
        """
        Credentials in the URI are refused rather than forwarded.
        """
        self.refused(b"http://user:pass@example.com/")
        self.refused(b"http://user@example.com/")

    def test_https_refused(self) -> None:
        """
        An https:// URI is refused with a message pointing to CONNECT.
        """
        error = self.refused(b"https://example.com/")
        self.assertIn("CONNECT", error.message)
        self.refused(b"HTTPS://example.com/")

    def test_origin_form_refused(self) -> None:
        """
        Origin-form, asterisk-form and other schemes are refused: this is a
        proxy.
        """
        for target in (b"/index.html", b"*", b"ftp://example.com/", b"example.com/"):
            error = self.refused(target)
            self.assertIn("absolute", error.message)

    def test_bad_ports_refused(self) -> None:
        """
        Port 0, ports above 65535, non-numeric and empty ports are refused.
        """
        for target in (
            b"http://example.com:0/",
            b"http://example.com:70000/",
            b"http://example.com:abc/",
            b"http://example.com:/x",
        ):
            self.refused(target)

    def test_no_host_refused(self) -> None:
        """
        A URI without a host is refused.
        """
        self.refused(b"http:///path")

    def test_invalid_hosts_refused(self) -> None:
        """
        Hosts with spaces, percent-escapes or backslashes are refused.
        """
        for target in (b"http://a b/", b"http://h%41/", b"http://h\\@evil/"):
            self.refused(target)


class ConnectTests(SynchronousTestCase):
    """
    CONNECT's target is an authority, C{host:port}.
    """

    def test_valid(self) -> None:
        """
        C{host:port}: a tunnel target with no path of its own; the log shows
        the authority.
        """
        target = route(b"example.com:443", b"CONNECT")
        self.assertTrue(target.connect)
        self.assertEqual(target.host, "example.com")
        self.assertEqual(target.port, 443)
        self.assertEqual(target.authority, b"example.com:443")
        self.assertEqual(target.path, b"example.com:443")
        self.assertEqual(target.url, "example.com:443")
        self.assertEqual(target.address, ("example.com", 443))

    def test_case(self) -> None:
        """
        The host is lower-cased.
        """
        self.assertEqual(route(b"EXAMPLE.com:443", b"CONNECT").host, "example.com")

    def test_ipv6(self) -> None:
        """
        A bracketed IPv6 authority; the log shows it bracketed.
        """
        target = route(b"[2001:db8::1]:443", b"CONNECT")
        self.assertEqual(target.host, "2001:db8::1")
        self.assertEqual(target.port, 443)
        self.assertEqual(target.url, "[2001:db8::1]:443")

    def refused(self, authority: bytes) -> None:
        error = self.assertRaises(BadRequest, route, authority, b"CONNECT")
        self.assertEqual(error.status, 400)

    def test_missing_port(self) -> None:
        """
        CONNECT has no default port: one must be given.
        """
        self.refused(b"example.com")
        self.refused(b"example.com:")
        self.refused(b"[::1]")

    def test_bad_port(self) -> None:
        """
        Ports 0, 70000, C{abc} and signed ports are refused.
        """
        for authority in (
            b"example.com:0",
            b"example.com:70000",
            b"example.com:abc",
            b"example.com:+443",
            b"example.com:-1",
            b"example.com:4430000",
        ):
            self.refused(authority)

    def test_bad_authorities(self) -> None:
        """
        Unbracketed IPv6, a missing host, paths, userinfo and junk after the
        bracket are refused.
        """
        for authority in (
            b"::1:443",
            b":443",
            b"example.com:443/path",
            b"user@example.com:443",
            b"[::1]x:443",
            b"[::1:443",
            b"http://example.com:443",
            b"\xff:443",
        ):
            self.refused(authority)


class ParseAuthorityTests(SynchronousTestCase):
    """
    L{parse_authority} splits C{host[:port]}.
    """

    def test_default_port(self) -> None:
        """
        Without a port the default is used, when there is one.
        """
        self.assertEqual(parse_authority(b"Example.COM", 80), ("example.com", 80))
        self.assertRaises(BadRequest, parse_authority, b"example.com", None)

    def test_ports(self) -> None:
        """
        The lowest and highest ports are accepted.
        """
        self.assertEqual(parse_authority(b"h:1", None), ("h", 1))
        self.assertEqual(parse_authority(b"h:65535", None), ("h", 65535))
        self.assertRaises(BadRequest, parse_authority, b"h:65536", None)

    def test_empty(self) -> None:
        """
        An empty authority is refused.
        """
        self.assertRaises(BadRequest, parse_authority, b"", 80)


class ParentTests(SynchronousTestCase):
    """
    Requests for some domains go through a parent proxy.
    """

    PARENTS = [
        (["example.jp"], "parent.local", 3129),
        (["*.wild.jp"], "wild-parent.local", 8080),
        (["other.jp", "example.jp"], "never-used.local", 1),
    ]

    def test_apex_and_subdomains(self) -> None:
        """
        C{"example.jp"} sends the apex and every subdomain to the parent.
        """
        for url in (b"http://example.jp/", b"http://www.example.jp/", b"http://a.b.example.jp/"):
            target = route(url, parents=self.PARENTS)
            self.assertEqual(target.parent, ("parent.local", 3129), url)
            self.assertEqual(target.address, ("parent.local", 3129))

    def test_wildcard(self) -> None:
        """
        C{"*.wild.jp"} matches subdomains only; the apex goes direct.
        """
        self.assertEqual(
            route(b"http://a.wild.jp/", parents=self.PARENTS).parent, ("wild-parent.local", 8080)
        )
        self.assertEqual(
            route(b"http://x.y.wild.jp/", parents=self.PARENTS).parent,
            ("wild-parent.local", 8080),
        )
        target = route(b"http://wild.jp/", parents=self.PARENTS)
        self.assertIsNone(target.parent)
        self.assertEqual(target.address, ("wild.jp", 80))

    def test_first_match_wins(self) -> None:
        """
        The first parent whose domains match is used.
        """
        self.assertEqual(
            route(b"http://example.jp/", parents=self.PARENTS).parent, ("parent.local", 3129)
        )
        self.assertEqual(
            route(b"http://other.jp/", parents=self.PARENTS).parent, ("never-used.local", 1)
        )

    def test_no_match_direct(self) -> None:
        """
        Other hosts (including look-alikes) go direct with origin-form
        paths.
        """
        for url in (b"http://example.com/x", b"http://notexample.jp/x"):
            target = route(url, parents=self.PARENTS)
            self.assertIsNone(target.parent)
            self.assertEqual(target.path, b"/x")

    def test_absolute_form_kept_for_parent(self) -> None:
        """
        Through a parent the request keeps the absolute form (RFC 9112
        section 3.2.2): scheme, authority (with a non-default port), path
        and query; still without fragment.
        """
        target = route(b"http://www.example.jp:8080/a?b#c", parents=self.PARENTS)
        self.assertEqual(target.path, b"http://www.example.jp:8080/a?b")
        self.assertEqual(target.authority, b"www.example.jp:8080")
        target = route(b"http://example.jp?q", parents=self.PARENTS)
        self.assertEqual(target.path, b"http://example.jp/?q")

    def test_connect_through_parent(self) -> None:
        """
        CONNECT to a parent's domain goes through that parent; its path stays
        the authority.
        """
        target = route(b"www.example.jp:443", b"CONNECT", parents=self.PARENTS)
        self.assertEqual(target.parent, ("parent.local", 3129))
        self.assertEqual(target.path, b"www.example.jp:443")
        self.assertTrue(target.connect)

    def test_parent_for(self) -> None:
        """
        L{ForwardRouter.parent_for} answers for a bare host name.
        """
        router = ForwardRouter(self.PARENTS)
        self.assertEqual(router.parent_for("www.example.jp"), ("parent.local", 3129))
        self.assertIsNone(router.parent_for("example.org"))

    def test_repr(self) -> None:
        """
        The repr names the URL and the parent.
        """
        target = route(b"http://example.jp/", parents=self.PARENTS)
        self.assertIn("http://example.jp/", repr(target))
        self.assertIn("parent.local:3129", repr(target))


class LoopTests(SynchronousTestCase):
    """
    A request addressed to a forward listener of the proxy itself would
    loop forever: refused with 508 before anything is connected.
    """

    OWN = {("127.0.0.1", 3128), ("10.0.0.5", 3128)}

    def loops(self, target: bytes, method: bytes = b"GET") -> None:
        error = self.assertRaises(BadRequest, route, target, method, own=set(self.OWN))
        self.assertEqual(error.status, 508)
        self.assertIn("loop", error.message)

    def test_exact_address(self) -> None:
        """
        A listening address and port is refused, absolute URI or CONNECT.
        """
        self.loops(b"http://127.0.0.1:3128/")
        self.loops(b"http://10.0.0.5:3128/")
        self.loops(b"127.0.0.1:3128", b"CONNECT")

    def test_other_local_names(self) -> None:
        """
        Any local name for this machine on a listening port is refused:
        localhost, other loopback addresses, IPv6 loopback, the
        unspecified addresses.
        """
        for host in (b"localhost", b"LOCALHOST", b"127.0.0.2", b"[::1]", b"0.0.0.0", b"[::]"):
            self.loops(b"http://" + host + b":3128/")

    def test_other_loopback_spellings(self) -> None:
        """
        Loopback spelled in the other forms the resolver accepts (decimal,
        hexadecimal, short dotted, IPv4-mapped IPv6) is refused too.
        """
        for host in (
            b"2130706433",
            b"0x7f000001",
            b"127.1",
            b"0",
            b"[::ffff:127.0.0.1]",
        ):
            self.loops(b"http://" + host + b":3128/")

    def test_other_ports_and_hosts_allowed(self) -> None:
        """
        The same hosts on other ports, and other hosts on the proxy's port,
        are ordinary targets.
        """
        own = set(self.OWN)
        self.assertEqual(route(b"http://127.0.0.1:3129/", own=own).port, 3129)
        self.assertEqual(route(b"http://localhost:8080/", own=own).host, "localhost")
        self.assertEqual(route(b"http://example.com:3128/", own=own).port, 3128)
        self.assertEqual(route(b"http://10.0.0.6:3128/", own=own).host, "10.0.0.6")

    def test_no_own_addresses(self) -> None:
        """
        Without known own addresses nothing is refused for looping.
        """
        self.assertEqual(route(b"http://127.0.0.1:3128/").port, 3128)
