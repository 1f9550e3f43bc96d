"""
Tests of L{twisted_proxy.target}: the value both routers produce, and
authority parsing.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.http.parser import BadRequest
from twisted_proxy.target import Target, bracket, parse_authority


class TargetTests(SynchronousTestCase):
    def test_address_direct_or_parent(self) -> None:
        """
        A target's address is its origin, or its parent proxy when it has
        one.
        """
        target = Target("example.com", 80, b"example.com", b"/", "http://example.com/")
        self.assertEqual(target.address, ("example.com", 80))
        target.parent = ("127.0.0.1", 3129)
        self.assertEqual(target.address, ("127.0.0.1", 3129))

    def test_request_path(self) -> None:
        """
        The path filters see is the client's, even when the path sent is
        rewritten.
        """
        target = Target("h", 80, b"h", b"/users", "http://h/api/users")
        self.assertEqual(target.request_path, b"/users")
        target.client_path = b"/api/users"
        self.assertEqual(target.request_path, b"/api/users")
        self.assertEqual(target.path, b"/users")

    def test_url_decoded_lazily(self) -> None:
        """
        The access log's URL may be given as bytes pieces and is decoded
        when asked for.
        """
        target = Target("h", 80, b"h", b"/", (b"http", b"://", b"h", b"/a"))
        self.assertEqual(target.url, "http://h/a")


class AuthorityTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """
        host, host:port and [v6]:port are split; the default port fills in.
        """
        self.assertEqual(parse_authority(b"Example.COM.", 80), ("example.com", 80))
        self.assertEqual(parse_authority(b"h:8080", 80), ("h", 8080))
        self.assertEqual(parse_authority(b"[::1]:443", None), ("::1", 443))

    def test_invalid(self) -> None:
        """
        Missing ports (without a default), bad ports and stray characters
        are 400s.
        """
        for raw, default in [(b"h", None), (b"h:0", 80), (b"h:99999", 80), (b"a b", 80),
                             (b"user@h", 80), (b"[::1", 80), (b"", 80)]:
            with self.assertRaises(BadRequest) as caught:
                parse_authority(raw, default)
            self.assertEqual(caught.exception.status, 400)

    def test_bracket(self) -> None:
        """
        IPv6 hosts are written in brackets, others as they are.
        """
        self.assertEqual(bracket("::1"), "[::1]")
        self.assertEqual(bracket("example.com"), "example.com")
