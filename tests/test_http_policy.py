"""
Tests for L{twisted_proxy.http.policy}.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.http import policy
from twisted_proxy.http.policy import (
    ANONYMOUS,
    CHUNKED,
    CLOSE_DELIMITED,
    CONTENT_LENGTH,
    ELITE,
    NO_BODY,
    TRANSPARENT,
    VIA_TOKEN,
    connection_tokens,
    header_value,
)

Headers = List[Tuple[bytes, bytes]]


def split_head(data: bytes) -> Tuple[bytes, Headers]:
    """
    The first line and the header pairs of a serialised head; checks that
    it is terminated by exactly one empty line.
    """
    assert data.endswith(b"\r\n\r\n"), data
    lines = data[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b": ")
        assert sep, line
        headers.append((name, value))
    return lines[0], headers


def names(headers: Headers) -> List[bytes]:
    return [name.lower() for name, _ in headers]


def values(headers: Headers, lname: bytes) -> List[bytes]:
    return [value for name, value in headers if name.lower() == lname]


def request(
    headers: Sequence[Tuple[bytes, bytes]],
    anonymity: str = ANONYMOUS,
    framing: int = NO_BODY,
    method: bytes = b"GET",
    target: bytes = b"/path?q",
    host: bytes = b"origin.example",
    client_ip: str = "192.0.2.7",
    upgrade: Optional[bytes] = None,
    drop_expect: bool = False,
) -> Tuple[bytes, Headers]:
    return split_head(
        policy.request_head(
            method, target, headers, host, anonymity, client_ip, framing, upgrade, drop_expect
        )
    )


def response(
    headers: Sequence[Tuple[bytes, bytes]],
    framing: int = CONTENT_LENGTH,
    add_via: bool = False,
    close: bool = False,
    keep_alive_header: bool = False,
    upgrade: Optional[bytes] = None,
    hide: frozenset = frozenset(),
    status: int = 200,
    reason: bytes = b"OK",
) -> Tuple[bytes, Headers]:
    return split_head(
        policy.response_head(
            status, reason, headers, framing, add_via, close, keep_alive_header, upgrade, hide
        )
    )


HOP_HEADERS: Headers = [
    (b"Connection", b"keep-alive"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Proxy-Connection", b"keep-alive"),
    (b"TE", b"trailers"),
    (b"Trailer", b"X-Checksum"),
    (b"Transfer-Encoding", b"chunked"),
    (b"Upgrade", b"h2c"),
    (b"Proxy-Authorization", b"Basic dXNlcjpwYXNz"),
    (b"Proxy-Authenticate", b'Basic realm="proxy"'),
]


class ConnectionTokensTests(SynchronousTestCase):
    """
    L{connection_tokens} lists the options named in C{Connection}.
    """

    def test_tokens(self) -> None:
        """
        Tokens from every C{Connection} and C{Proxy-Connection} header are
        collected, lower-cased and stripped; empty ones are ignored.
        """
        self.assertEqual(
            connection_tokens(
                [
                    (b"Connection", b"Keep-Alive, X-Secret ,,"),
                    (b"connection", b"close"),
                    (b"Proxy-Connection", b"X-Other"),
                    (b"X-Unrelated", b"x-unrelated"),
                ]
            ),
            frozenset([b"keep-alive", b"x-secret", b"close", b"x-other"]),
        )

    def test_none(self) -> None:
        """
        No C{Connection} header: no tokens.
        """
        self.assertEqual(connection_tokens([(b"Host", b"a")]), frozenset())


class HeaderValueTests(SynchronousTestCase):
    """
    L{header_value} finds the first header of a name.
    """

    def test_first_match_any_case(self) -> None:
        """
        The first header with that name (compared case-insensitively) wins.
        """
        headers = [(b"X-A", b"1"), (b"x-b", b"2"), (b"X-B", b"3")]
        self.assertEqual(header_value(headers, b"x-b"), b"2")

    def test_missing(self) -> None:
        """
        L{None} when absent.
        """
        self.assertIsNone(header_value([(b"X-A", b"1")], b"x-b"))


class RequestHeadTests(SynchronousTestCase):
    """
    L{policy.request_head} serialises what the proxy sends upstream.
    """

    def test_request_line_and_host_first(self) -> None:
        """
        The request line is HTTP/1.1 with the given method and target, the
        first header is Host, and the head ends with one empty line.
        """
        first, headers = request([(b"Accept", b"*/*")])
        self.assertEqual(first, b"GET /path?q HTTP/1.1")
        self.assertEqual(headers[0], (b"Host", b"origin.example"))
        self.assertIn((b"Accept", b"*/*"), headers)

    def test_host_replaced(self) -> None:
        """
        The client's Host headers (any case) are replaced by the given one.
        """
        first, headers = request(
            [(b"host", b"client-said.example"), (b"HOST", b"other.example")],
            host=b"origin.example:8080",
        )
        self.assertEqual(values(headers, b"host"), [b"origin.example:8080"])

    def test_end_to_end_headers_kept_in_order(self) -> None:
        """
        End-to-end headers pass unchanged, in order, with their case.
        """
        sent = [
            (b"Accept", b"text/html"),
            (b"cookie", b"a=1"),
            (b"X-Custom", b"v1"),
            (b"X-Custom", b"v2"),
            (b"Authorization", b"Bearer t"),
        ]
        first, headers = request(sent)
        kept = [h for h in headers if h[0].lower() not in (b"host", b"via")]
        self.assertEqual(kept, sent)

    def test_hop_by_hop_removed(self) -> None:
        """
        The hop-by-hop headers of RFC 9110 section 7.6.1, C{Proxy-Connection},
        C{Proxy-Authorization} and C{Proxy-Authenticate} are never
        forwarded.
        """
        for anonymity in (TRANSPARENT, ANONYMOUS, ELITE):
            first, headers = request(HOP_HEADERS + [(b"Accept", b"*/*")], anonymity)
            present = names(headers)
            for name, _ in HOP_HEADERS:
                self.assertNotIn(name.lower(), present, anonymity)
            self.assertIn(b"accept", present)

    def test_proxy_credentials_never_forwarded(self) -> None:
        """
        C{Proxy-Authorization} and C{Proxy-Connection} are dropped in any
        case spelling.
        """
        first, headers = request(
            [(b"proxy-authorization", b"Basic x"), (b"PROXY-CONNECTION", b"close")],
            TRANSPARENT,
        )
        self.assertNotIn(b"proxy-authorization", names(headers))
        self.assertNotIn(b"proxy-connection", names(headers))

    def test_connection_listed_headers_removed(self) -> None:
        """
        Headers named in C{Connection} or C{Proxy-Connection} are hop-by-hop
        too and are removed.
        """
        first, headers = request(
            [
                (b"Connection", b"X-Hop, x-other"),
                (b"Proxy-Connection", b"X-Legacy"),
                (b"X-Hop", b"1"),
                (b"X-OTHER", b"2"),
                (b"X-Legacy", b"3"),
                (b"X-Kept", b"4"),
            ]
        )
        present = names(headers)
        for name in (b"x-hop", b"x-other", b"x-legacy", b"connection"):
            self.assertNotIn(name, present)
        self.assertIn((b"X-Kept", b"4"), headers)

    def test_connection_cannot_remove_content_length(self) -> None:
        """
        A client listing C{Content-Length} in C{Connection} cannot strip it:
        the body is relayed as sent, so its length goes with it (otherwise
        the body would be read upstream as the next request).
        """
        first, headers = request(
            [(b"Connection", b"Content-Length"), (b"Content-Length", b"5")],
            framing=CONTENT_LENGTH,
            method=b"POST",
        )
        self.assertEqual(values(headers, b"content-length"), [b"5"])

    def test_connection_cannot_remove_host(self) -> None:
        """
        Naming Host in C{Connection} does not remove the Host the proxy
        sets.
        """
        first, headers = request([(b"Connection", b"host")])
        self.assertEqual(values(headers, b"host"), [b"origin.example"])

    def test_content_length_framing(self) -> None:
        """
        With C{CONTENT_LENGTH} framing the received Content-Length is kept
        and no Transfer-Encoding is added.
        """
        first, headers = request(
            [(b"Content-Length", b"42")], framing=CONTENT_LENGTH, method=b"POST"
        )
        self.assertEqual(values(headers, b"content-length"), [b"42"])
        self.assertNotIn(b"transfer-encoding", names(headers))

    def test_chunked_framing(self) -> None:
        """
        With C{CHUNKED} framing exactly one C{Transfer-Encoding: chunked} is
        sent, whatever the client sent, and no Content-Length.
        """
        first, headers = request(
            [(b"Transfer-Encoding", b"gzip, chunked"), (b"Content-Length", b"3")],
            framing=CHUNKED,
            method=b"POST",
        )
        self.assertEqual(values(headers, b"transfer-encoding"), [b"chunked"])
        self.assertNotIn(b"content-length", names(headers))

    def test_no_body_framing(self) -> None:
        """
        With C{NO_BODY} framing neither Content-Length nor
        Transfer-Encoding is sent.
        """
        first, headers = request([(b"Content-Length", b"0")], framing=NO_BODY)
        self.assertNotIn(b"content-length", names(headers))
        self.assertNotIn(b"transfer-encoding", names(headers))

    def test_expect_kept_or_dropped(self) -> None:
        """
        C{Expect} passes unless C{drop_expect} (the proxy answered 100
        itself).
        """
        sent = [(b"Expect", b"100-continue"), (b"Content-Length", b"1")]
        first, headers = request(sent, framing=CONTENT_LENGTH)
        self.assertEqual(values(headers, b"expect"), [b"100-continue"])
        first, headers = request(sent, framing=CONTENT_LENGTH, drop_expect=True)
        self.assertNotIn(b"expect", names(headers))

    def test_upgrade_passed(self) -> None:
        """
        An upgrade is passed as exactly one C{Connection: Upgrade} and one
        C{Upgrade} header, replacing the client's own.
        """
        first, headers = request(
            [
                (b"Connection", b"keep-alive, Upgrade"),
                (b"Upgrade", b"websocket"),
                (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            upgrade=b"websocket",
        )
        self.assertEqual(values(headers, b"connection"), [b"Upgrade"])
        self.assertEqual(values(headers, b"upgrade"), [b"websocket"])
        self.assertIn((b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), headers)

    def test_no_upgrade(self) -> None:
        """
        Without an upgrade, no C{Connection} or C{Upgrade} header is sent
        (HTTP/1.1 upstream connections are persistent by default).
        """
        first, headers = request([(b"Connection", b"close"), (b"Upgrade", b"h2c")])
        self.assertNotIn(b"connection", names(headers))
        self.assertNotIn(b"upgrade", names(headers))


class AnonymityTests(SynchronousTestCase):
    """
    What the origin learns about the client and the proxy, per anonymity
    level.
    """

    FORWARDING: Headers = [
        (b"X-Forwarded-For", b"10.1.1.1"),
        (b"Forwarded", b"for=10.1.1.1"),
        (b"X-Real-IP", b"10.1.1.1"),
        (b"X-Forwarded-Host", b"front.example"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Port", b"443"),
        (b"Client-IP", b"10.1.1.1"),
        (b"True-Client-IP", b"10.1.1.1"),
    ]

    def test_transparent_via(self) -> None:
        """
        Transparent: one C{Via} with this proxy's token added.
        """
        first, headers = request([], TRANSPARENT)
        self.assertEqual(values(headers, b"via"), [VIA_TOKEN])

    def test_anonymous_via(self) -> None:
        """
        Anonymous: C{Via} is sent too (RFC 9110 section 7.6.3 requires it;
        only the client's identity is hidden).
        """
        first, headers = request([], ANONYMOUS)
        self.assertEqual(values(headers, b"via"), [VIA_TOKEN])

    def test_via_appended_to_client_via(self) -> None:
        """
        A client-sent Via (one header or several) is kept and this proxy's
        token appended, as one header, for transparent and anonymous.
        """
        for anonymity in (TRANSPARENT, ANONYMOUS):
            first, headers = request(
                [(b"Via", b"1.0 fred"), (b"via", b"1.1 p.example (Proxy/1.0)")], anonymity
            )
            self.assertEqual(
                values(headers, b"via"),
                [b"1.0 fred, 1.1 p.example (Proxy/1.0), " + VIA_TOKEN],
                anonymity,
            )

    def test_elite_no_via(self) -> None:
        """
        Elite: no C{Via} at all, neither the proxy's own nor one the client
        sent (which would reveal proxying just the same) - the deliberate
        deviation from RFC 9110 that the README states.
        """
        first, headers = request([], ELITE)
        self.assertNotIn(b"via", names(headers))
        first, headers = request([(b"Via", b"1.0 fred")], ELITE)
        self.assertNotIn(b"via", names(headers))

    def test_transparent_x_forwarded_for(self) -> None:
        """
        Transparent: the client's address is sent in C{X-Forwarded-For}.
        """
        first, headers = request([], TRANSPARENT, client_ip="192.0.2.7")
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"192.0.2.7"])

    def test_transparent_x_forwarded_for_appended(self) -> None:
        """
        Transparent: client-sent C{X-Forwarded-For} values are kept and the
        client's address appended, as one header.
        """
        first, headers = request(
            [(b"X-Forwarded-For", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2, 10.0.0.3")],
            TRANSPARENT,
            client_ip="2001:db8::7",
        )
        self.assertEqual(
            values(headers, b"x-forwarded-for"), [b"10.0.0.1, 10.0.0.2, 10.0.0.3, 2001:db8::7"]
        )

    def test_transparent_keeps_other_forwarding(self) -> None:
        """
        Transparent: the other forwarding headers pass unchanged.
        """
        first, headers = request(self.FORWARDING, TRANSPARENT)
        for name, value in self.FORWARDING[1:]:
            self.assertIn((name, value), headers)

    def test_anonymous_and_elite_strip_forwarding(self) -> None:
        """
        Anonymous and elite: every header that could name the client is
        removed and none is added.
        """
        for anonymity in (ANONYMOUS, ELITE):
            first, headers = request(self.FORWARDING, anonymity)
            present = names(headers)
            for name in policy.FORWARDING:
                self.assertNotIn(name, present, (anonymity, name))

    def test_forwarding_names_covered(self) -> None:
        """
        The corpus above covers every name in L{policy.FORWARDING}.
        """
        self.assertEqual(
            frozenset(name.lower() for name, _ in self.FORWARDING), policy.FORWARDING
        )


class ResponseHeadTests(SynchronousTestCase):
    """
    L{policy.response_head} serialises what the proxy sends its client.
    """

    def test_status_line(self) -> None:
        """
        The status line is HTTP/1.1 with the status and reason received.
        """
        first, headers = response([], status=404, reason=b"Not Found")
        self.assertEqual(first, b"HTTP/1.1 404 Not Found")

    def test_end_to_end_headers_kept(self) -> None:
        """
        End-to-end headers pass in order with their case.
        """
        sent = [(b"Content-Type", b"text/plain"), (b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
        first, headers = response(sent, framing=CLOSE_DELIMITED)
        self.assertEqual(headers, sent)

    def test_hop_by_hop_removed(self) -> None:
        """
        Hop-by-hop headers, and those named in C{Connection}, are removed.
        """
        first, headers = response(
            HOP_HEADERS
            + [(b"Connection", b"X-Hop"), (b"X-Hop", b"1"), (b"X-Kept", b"2")],
            framing=CLOSE_DELIMITED,
        )
        present = names(headers)
        for name, _ in HOP_HEADERS:
            self.assertNotIn(name.lower(), present)
        self.assertNotIn(b"x-hop", present)
        self.assertIn((b"X-Kept", b"2"), headers)

    def test_connection_cannot_remove_content_length(self) -> None:
        """
        An origin listing C{Content-Length} in C{Connection} does not get it
        stripped: the client needs it to find the end of the body on a
        persistent connection.
        """
        first, headers = response(
            [(b"Connection", b"Content-Length"), (b"Content-Length", b"5")],
            framing=CONTENT_LENGTH,
        )
        self.assertEqual(values(headers, b"content-length"), [b"5"])

    def test_content_length_framing(self) -> None:
        """
        C{CONTENT_LENGTH} and C{NO_BODY} keep the received Content-Length
        (a HEAD or 304 answer announces the size it would have had).
        """
        for framing in (CONTENT_LENGTH, NO_BODY):
            first, headers = response([(b"Content-Length", b"1234")], framing=framing)
            self.assertEqual(values(headers, b"content-length"), [b"1234"])
            self.assertNotIn(b"transfer-encoding", names(headers))

    def test_chunked_framing(self) -> None:
        """
        C{CHUNKED} sends one C{Transfer-Encoding: chunked} and no
        Content-Length.
        """
        first, headers = response(
            [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")], framing=CHUNKED
        )
        self.assertEqual(values(headers, b"transfer-encoding"), [b"chunked"])
        self.assertNotIn(b"content-length", names(headers))

    def test_close_delimited_framing(self) -> None:
        """
        C{CLOSE_DELIMITED} sends neither Content-Length nor
        Transfer-Encoding.
        """
        first, headers = response(
            [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")],
            framing=CLOSE_DELIMITED,
        )
        self.assertNotIn(b"content-length", names(headers))
        self.assertNotIn(b"transfer-encoding", names(headers))

    def test_connection_close(self) -> None:
        """
        C{close} adds one C{Connection: close}, replacing the origin's own
        Connection header.
        """
        first, headers = response([(b"Connection", b"keep-alive")], close=True)
        self.assertEqual(values(headers, b"connection"), [b"close"])

    def test_keep_alive_header(self) -> None:
        """
        C{keep_alive_header} (an HTTP/1.0 client that asked for it) adds
        C{Connection: keep-alive}.
        """
        first, headers = response([], keep_alive_header=True)
        self.assertEqual(values(headers, b"connection"), [b"keep-alive"])

    def test_close_wins_over_keep_alive(self) -> None:
        """
        With both flags, the connection is announced as closing.
        """
        first, headers = response([], close=True, keep_alive_header=True)
        self.assertEqual(values(headers, b"connection"), [b"close"])

    def test_no_connection_header_by_default(self) -> None:
        """
        Neither flag: no Connection header (HTTP/1.1 persistence).
        """
        first, headers = response([(b"Connection", b"close")])
        self.assertNotIn(b"connection", names(headers))

    def test_switching_protocols(self) -> None:
        """
        A 101 carries exactly C{Connection: Upgrade} and the upgrade's
        C{Upgrade}, even if the connection would otherwise close.
        """
        first, headers = response(
            [
                (b"Connection", b"Upgrade"),
                (b"Upgrade", b"websocket"),
                (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
            framing=NO_BODY,
            close=True,
            upgrade=b"websocket",
            status=101,
            reason=b"Switching Protocols",
        )
        self.assertEqual(first, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(values(headers, b"connection"), [b"Upgrade"])
        self.assertEqual(values(headers, b"upgrade"), [b"websocket"])
        self.assertIn((b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), headers)

    def test_via(self) -> None:
        """
        C{add_via} appends this proxy's token to the origin's Via (as one
        header); without it the origin's Via passes unchanged.
        """
        first, headers = response([], add_via=True)
        self.assertEqual(values(headers, b"via"), [VIA_TOKEN])
        first, headers = response([(b"Via", b"1.1 cdn")], add_via=True)
        self.assertEqual(values(headers, b"via"), [b"1.1 cdn, " + VIA_TOKEN])
        first, headers = response([(b"Via", b"1.1 cdn")], add_via=False)
        self.assertEqual(values(headers, b"via"), [b"1.1 cdn"])
        first, headers = response([], add_via=False)
        self.assertNotIn(b"via", names(headers))

    def test_hide(self) -> None:
        """
        Names in C{hide} (lower case) are removed, whatever their case in
        the response.
        """
        first, headers = response(
            [(b"Server", b"nginx"), (b"x-powered-by", b"PHP"), (b"X-Kept", b"1")],
            hide=frozenset([b"server", b"x-powered-by"]),
        )
        self.assertEqual(headers, [(b"X-Kept", b"1")])


def reverse(
    headers: Sequence[Tuple[bytes, bytes]],
    trusted: bool = False,
    forwarded: bool = False,
    add_via: bool = True,
    framing: int = NO_BODY,
    client_host: Optional[bytes] = b"www.example.com",
    client_ip: str = "192.0.2.7",
    scheme: bytes = b"https",
    upgrade: Optional[bytes] = None,
    drop_expect: bool = False,
    strip: frozenset = frozenset(),
) -> Tuple[bytes, Headers]:
    return split_head(
        policy.reverse_request_head(
            b"GET",
            b"/api/x?y",
            headers,
            b"10.0.0.9:5001",
            client_host,
            client_ip,
            scheme,
            trusted,
            framing,
            add_via,
            forwarded,
            upgrade,
            drop_expect,
            strip,
        )
    )


class ReverseRequestHeadTests(SynchronousTestCase):
    """
    L{policy.reverse_request_head} serialises what a reverse proxy sends a
    backend: the client's identity, added by the proxy, never forged by the
    client.
    """

    SPOOFED: Headers = [
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"Forwarded", b"for=6.6.6.6"),
        (b"X-Real-IP", b"6.6.6.6"),
        (b"X-Forwarded-Host", b"evil.example"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Port", b"1"),
        (b"Client-IP", b"6.6.6.6"),
        (b"True-Client-IP", b"6.6.6.6"),
    ]

    def test_request_line_and_host(self) -> None:
        """
        The request line carries the given target; Host is the given one,
        replacing the client's.
        """
        first, headers = reverse([(b"Host", b"www.example.com"), (b"Accept", b"*/*")])
        self.assertEqual(first, b"GET /api/x?y HTTP/1.1")
        self.assertEqual(values(headers, b"host"), [b"10.0.0.9:5001"])
        self.assertIn((b"Accept", b"*/*"), headers)

    def test_untrusted_client_cannot_forge(self) -> None:
        """
        An untrusted client's forwarding headers are all removed; the proxy
        sets C{X-Forwarded-For} to the client address, C{X-Forwarded-Proto}
        to the scheme the client used and C{X-Forwarded-Host} to the Host it
        asked for.
        """
        first, headers = reverse(self.SPOOFED)
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"192.0.2.7"])
        self.assertEqual(values(headers, b"x-forwarded-proto"), [b"https"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [b"www.example.com"])
        for name in (b"forwarded", b"x-real-ip", b"x-forwarded-port", b"client-ip",
                     b"true-client-ip"):
            self.assertNotIn(name, names(headers))
        self.assertNotIn(b"6.6.6.6", b"".join(v for _, v in headers))

    def test_trusted_client_extended(self) -> None:
        """
        A trusted proxy's C{X-Forwarded-For} is kept and the client address
        appended; its proto and host are kept; other forwarding headers pass.
        """
        first, headers = reverse(self.SPOOFED, trusted=True)
        self.assertEqual(values(headers, b"x-forwarded-for"), [b"6.6.6.6, 192.0.2.7"])
        self.assertEqual(values(headers, b"x-forwarded-proto"), [b"http"])
        self.assertEqual(values(headers, b"x-forwarded-host"), [b"evil.example"])
        self.assertEqual(values(headers, b"x-real-ip"), [b"6.6.6.6"])

    def test_forwarded_element(self) -> None:
        """
        With C{forwarded}, an RFC 7239 element names the client, the scheme
        and the host; an IPv6 client is bracketed and quoted.
        """
        first, headers = reverse([], forwarded=True)
        self.assertEqual(
            values(headers, b"forwarded"), [b'for=192.0.2.7;proto=https;host="www.example.com"']
        )
        first, headers = reverse([], forwarded=True, client_ip="2001:db8::7", client_host=None)
        self.assertEqual(values(headers, b"forwarded"), [b'for="[2001:db8::7]";proto=https'])

    def test_forwarded_appended_for_trusted(self) -> None:
        """
        A trusted proxy's C{Forwarded} is kept and this hop's element
        appended.
        """
        first, headers = reverse([(b"Forwarded", b"for=10.0.0.1")], trusted=True, forwarded=True)
        self.assertEqual(
            values(headers, b"forwarded"),
            [b'for=10.0.0.1, for=192.0.2.7;proto=https;host="www.example.com"'],
        )

    def test_hop_by_hop_removed(self) -> None:
        """
        Hop-by-hop headers and those named in C{Connection} are removed.
        """
        first, headers = reverse(
            HOP_HEADERS + [(b"Connection", b"X-Hop"), (b"X-Hop", b"1"), (b"X-Kept", b"2")]
        )
        present = names(headers)
        for name, _ in HOP_HEADERS:
            self.assertNotIn(name.lower(), present)
        self.assertNotIn(b"x-hop", present)
        self.assertIn((b"X-Kept", b"2"), headers)

    def test_connection_cannot_remove_content_length(self) -> None:
        """
        A client listing C{Content-Length} in C{Connection} cannot strip it
        (the backend would read the body as the next request).
        """
        first, headers = reverse(
            [(b"Connection", b"content-length"), (b"Content-Length", b"5")],
            framing=CONTENT_LENGTH,
        )
        self.assertEqual(values(headers, b"content-length"), [b"5"])

    def test_framing(self) -> None:
        """
        Content-Length is kept for C{CONTENT_LENGTH}; C{CHUNKED} sends one
        C{Transfer-Encoding: chunked}.
        """
        first, headers = reverse([(b"Content-Length", b"5")], framing=CONTENT_LENGTH)
        self.assertEqual(values(headers, b"content-length"), [b"5"])
        first, headers = reverse([(b"Transfer-Encoding", b"chunked")], framing=CHUNKED)
        self.assertEqual(values(headers, b"transfer-encoding"), [b"chunked"])
        self.assertNotIn(b"content-length", names(headers))

    def test_via(self) -> None:
        """
        C{add_via} appends this proxy's token to the client's Via.
        """
        first, headers = reverse([(b"Via", b"1.1 cdn")])
        self.assertEqual(values(headers, b"via"), [b"1.1 cdn, " + VIA_TOKEN])
        first, headers = reverse([], add_via=False)
        self.assertNotIn(b"via", names(headers))

    def test_strip(self) -> None:
        """
        Names in C{strip} (claim headers the proxy sets itself) are removed
        from client input.
        """
        first, headers = reverse(
            [(b"X-User", b"admin"), (b"X-Kept", b"1")], strip=frozenset([b"x-user"])
        )
        self.assertNotIn(b"x-user", names(headers))
        self.assertIn((b"X-Kept", b"1"), headers)

    def test_upgrade_and_expect(self) -> None:
        """
        An upgrade is passed as C{Connection: Upgrade} and C{Upgrade};
        C{Expect} is dropped with C{drop_expect}.
        """
        first, headers = reverse(
            [(b"Expect", b"100-continue"), (b"Upgrade", b"websocket")],
            upgrade=b"websocket",
            drop_expect=True,
        )
        self.assertEqual(values(headers, b"connection"), [b"Upgrade"])
        self.assertEqual(values(headers, b"upgrade"), [b"websocket"])
        self.assertNotIn(b"expect", names(headers))
