"""
Tests for L{twisted_proxy.http.parser}.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.http.parser import (
    BadRequest,
    BadResponse,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
)


class RecordingSink:
    """
    Records what a L{RequestParser} or L{ResponseParser} reports, in order.
    """

    def __init__(self) -> None:
        self.events: List[Tuple[object, ...]] = []
        self.heads: List[RequestHead] = []
        self.responses: List[ResponseHead] = []

    # request sink

    def request_head(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.method, head.target))

    def request_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def request_end(self) -> None:
        self.events.append(("end",))

    # response sink

    def response_head(self, head: ResponseHead) -> None:
        self.responses.append(head)
        self.events.append(("head", head.status))

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def response_end(self) -> None:
        self.events.append(("end",))

    # views

    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "body")  # type: ignore[misc]

    def kinds(self) -> List[object]:
        return [e[0] for e in self.events]


def request_parser(
    max_head_size: int = 65536, max_field_size: int = 8192, max_header_count: int = 100
) -> Tuple[RequestParser, RecordingSink]:
    sink = RecordingSink()
    return RequestParser(sink, max_head_size, max_field_size, max_header_count), sink


def response_parser(
    no_body: bool = False,
    max_head_size: int = 65536,
    max_field_size: int = 8192,
    max_header_count: int = 100,
) -> Tuple[ResponseParser, RecordingSink]:
    sink = RecordingSink()
    parser = ResponseParser(sink, max_head_size, max_field_size, max_header_count)
    parser.expect(no_body)
    return parser, sink


def with_fields(count: int, size: int = 10) -> bytes:
    """
    C{count} distinct header field lines, each of C{size} bytes of name
    and value.
    """
    return b"".join(b"X-%04d: %s\r\n" % (i, b"v" * (size - 6)) for i in range(count))


CHUNKED_POST = (
    b"POST /upload HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5\r\nhello\r\n"
    b"1;name=value\r\n \r\n"
    b"a\r\n0123456789\r\n"
    b"0\r\n"
    b"\r\n"
)
CHUNKED_POST_BODY = b"hello 0123456789"


class RequestHeadTests(SynchronousTestCase):
    """
    L{RequestParser} reports each request head with what the proxy needs to
    know about it.
    """

    def test_simple_get(self) -> None:
        """
        A GET without a body is reported as a head then an end; the head
        carries the method, target, version, headers as received, the Host
        value, and says there is no body.
        """
        parser, sink = request_parser()
        result = parser.feed(
            b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Custom: Value\r\n\r\n"
        )
        self.assertIsNone(result)
        self.assertEqual(sink.kinds(), ["head", "end"])
        [head] = sink.heads
        self.assertEqual(head.method, b"GET")
        self.assertEqual(head.target, b"/a?b=c")
        self.assertEqual(head.version, b"1.1")
        self.assertEqual(head.host, b"example.com")
        self.assertEqual(
            head.headers, [(b"Host", b"example.com"), (b"X-Custom", b"Value")]
        )
        self.assertEqual(head.framing, 0)
        self.assertFalse(head.expect_continue)
        self.assertIsNone(head.upgrade)
        self.assertTrue(head.keep_alive)

    def test_header_case_kept(self) -> None:
        """
        Header names keep the case they were sent in; C{host} is found
        whatever its case.
        """
        parser, sink = request_parser()
        parser.feed(b"GET / HTTP/1.1\r\nhOsT: example.com\r\nx-LOWER: v\r\n\r\n")
        [head] = sink.heads
        self.assertEqual(head.host, b"example.com")
        self.assertEqual(head.headers, [(b"hOsT", b"example.com"), (b"x-LOWER", b"v")])

    def test_absolute_form_target(self) -> None:
        """
        An absolute-form target (what clients send to a forward proxy) is
        reported as received.
        """
        parser, sink = request_parser()
        parser.feed(b"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(sink.heads[0].target, b"http://example.com/x?y")

    def test_http10_without_host(self) -> None:
        """
        HTTP/1.0 does not require Host: the head is accepted with
        C{host=None}.
        """
        parser, sink = request_parser()
        parser.feed(b"GET / HTTP/1.0\r\n\r\n")
        [head] = sink.heads
        self.assertEqual(head.version, b"1.0")
        self.assertIsNone(head.host)

    def test_leading_empty_lines_ignored(self) -> None:
        """
        An empty line before the request line (RFC 9112 section 2.2 allows
        ignoring at least one) does not break parsing.
        """
        parser, sink = request_parser()
        parser.feed(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_head_split_across_feeds(self) -> None:
        """
        A head that arrives in pieces is reported once, when complete;
        C{in_head} is true while it is incomplete and false after.
        """
        parser, sink = request_parser()
        self.assertFalse(parser.in_head)
        parser.feed(b"GET / HT")
        self.assertTrue(parser.in_head)
        parser.feed(b"TP/1.1\r\nHost: exa")
        self.assertTrue(parser.in_head)
        self.assertEqual(sink.events, [])
        parser.feed(b"mple.com\r\n\r\n")
        self.assertFalse(parser.in_head)
        self.assertEqual(sink.heads[0].host, b"example.com")
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_head_fed_one_byte_at_a_time(self) -> None:
        """
        A head fed one byte at a time is reported exactly as if it came in
        one piece.
        """
        data = b"GET /path HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
        parser, sink = request_parser()
        for i in range(len(data)):
            self.assertIsNone(parser.feed(data[i : i + 1]))
        [head] = sink.heads
        self.assertEqual(head.target, b"/path")
        self.assertEqual(head.headers, [(b"Host", b"example.com"), (b"Accept", b"*/*")])
        self.assertEqual(sink.kinds(), ["head", "end"])


class KeepAliveTests(SynchronousTestCase):
    """
    C{keep_alive} follows the version default and the C{Connection} header.
    """

    def keep_alive(self, data: bytes) -> bool:
        parser, sink = request_parser()
        parser.feed(data)
        return sink.heads[0].keep_alive

    def test_http11_default(self) -> None:
        """
        HTTP/1.1 keeps the connection open by default.
        """
        self.assertTrue(self.keep_alive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))

    def test_http11_close(self) -> None:
        """
        HTTP/1.1 with C{Connection: close} does not.
        """
        self.assertFalse(
            self.keep_alive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        )

    def test_http10_default(self) -> None:
        """
        HTTP/1.0 closes by default.
        """
        self.assertFalse(self.keep_alive(b"GET / HTTP/1.0\r\n\r\n"))

    def test_http10_keep_alive(self) -> None:
        """
        HTTP/1.0 with C{Connection: keep-alive} keeps the connection open.
        """
        self.assertTrue(
            self.keep_alive(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        )


class RequestBodyTests(SynchronousTestCase):
    """
    Request bodies are reported piece by piece and end with C{request_end}.
    """

    def test_content_length_body(self) -> None:
        """
        A C{Content-Length} body is reported as body pieces then an end;
        the head says C{framing=1}.
        """
        parser, sink = request_parser()
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(sink.heads[0].framing, 1)
        self.assertEqual(sink.events[1:], [("body", b"hello"), ("end",)])

    def test_content_length_zero(self) -> None:
        """
        C{Content-Length: 0} means no body: C{framing=0}, and the end
        follows the head at once.
        """
        parser, sink = request_parser()
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(sink.heads[0].framing, 0)
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_content_length_body_byte_by_byte(self) -> None:
        """
        A body fed one byte at a time reassembles to the bytes sent; the
        end is reported only after the last one.
        """
        body = b"0123456789abcdef"
        parser, sink = request_parser()
        parser.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 16\r\n\r\n")
        for i in range(len(body)):
            self.assertNotIn(("end",), sink.events)
            parser.feed(body[i : i + 1])
        self.assertEqual(sink.body(), body)
        self.assertEqual(sink.events[-1], ("end",))

    def test_content_length_head_reported_before_body(self) -> None:
        """
        The head is reported as soon as it is complete, before any body
        byte has arrived.
        """
        parser, sink = request_parser()
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(sink.kinds(), ["head"])
        parser.feed(b"abc")
        self.assertEqual(sink.kinds(), ["head", "body", "end"])

    def test_chunked_body(self) -> None:
        """
        A chunked body is reported de-chunked (chunk extensions dropped);
        the head says C{framing=2}.
        """
        parser, sink = request_parser()
        parser.feed(CHUNKED_POST)
        self.assertEqual(sink.heads[0].framing, 2)
        self.assertEqual(sink.body(), CHUNKED_POST_BODY)
        self.assertEqual(sink.kinds()[0], "head")
        self.assertEqual(sink.events[-1], ("end",))
        self.assertEqual(sink.kinds().count("end"), 1)

    def test_chunked_with_trailers(self) -> None:
        """
        Trailer fields after the last chunk are consumed; the message ends
        after them and the next request parses normally.
        """
        parser, sink = request_parser()
        parser.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(
            sink.events,
            [
                ("head", b"POST", b"/"),
                ("body", b"abc"),
                ("end",),
                ("head", b"GET", b"/next"),
                ("end",),
            ],
        )

    def test_trailers_never_join_the_head(self) -> None:
        """
        Trailer fields are not header fields: in the same read as the head,
        or in a later one, they never appear in the reported head (where
        they would be forwarded as headers).
        """
        data = (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Forwarded-For: 10.0.0.1\r\nX-Trailer: yes\r\n\r\n"
        )
        for cut in (len(data), data.index(b"3\r\n")):
            parser, sink = request_parser()
            parser.feed(data[:cut])
            parser.feed(data[cut:])
            self.assertEqual(sink.kinds(), ["head", "body", "end"], cut)
            self.assertEqual(
                sink.heads[0].headers,
                [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")],
                cut,
            )

    def test_trailers_bounded(self) -> None:
        """
        Trailer fields are bounded like header fields: too many of them, or
        one too large, is 431.
        """
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        for trailers in (with_fields(11), b"X-Big: " + b"t" * 200 + b"\r\n"):
            parser, sink = request_parser(max_field_size=100, max_header_count=10)
            parser.feed(head)
            error = self.assertRaises(
                BadRequest, parser.feed, b"1\r\na\r\n0\r\n" + trailers + b"\r\n"
            )
            self.assertEqual(error.status, 431)

    def test_chunked_split_at_every_boundary(self) -> None:
        """
        Wherever a chunked request is split in two, the same head, body
        bytes and single end are reported.
        """
        for cut in range(1, len(CHUNKED_POST)):
            parser, sink = request_parser()
            parser.feed(CHUNKED_POST[:cut])
            parser.feed(CHUNKED_POST[cut:])
            self.assertEqual(len(sink.heads), 1, cut)
            self.assertEqual(sink.body(), CHUNKED_POST_BODY, cut)
            self.assertEqual(sink.kinds().count("end"), 1, cut)
            self.assertEqual(sink.events[-1], ("end",), cut)

    def test_chunked_byte_by_byte(self) -> None:
        """
        A chunked request fed one byte at a time reassembles to the same
        body, with exactly one head and one end.
        """
        parser, sink = request_parser()
        for i in range(len(CHUNKED_POST)):
            self.assertIsNone(parser.feed(CHUNKED_POST[i : i + 1]))
        self.assertEqual(len(sink.heads), 1)
        self.assertEqual(sink.body(), CHUNKED_POST_BODY)
        self.assertEqual(sink.kinds().count("end"), 1)
        self.assertEqual(sink.events[-1], ("end",))


class PipeliningTests(SynchronousTestCase):
    """
    llhttp cannot pause: every request in one read is reported inside one
    C{feed}, in order.
    """

    def test_pipelined_requests_in_one_feed(self) -> None:
        """
        Three pipelined requests (one with a body) in one read are all
        reported, heads, bodies and ends in order.
        """
        parser, sink = request_parser()
        parser.feed(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(
            sink.events,
            [
                ("head", b"GET", b"/1"),
                ("end",),
                ("head", b"POST", b"/2"),
                ("body", b"abc"),
                ("end",),
                ("head", b"GET", b"/3"),
                ("end",),
            ],
        )

    def test_pipelined_partial_second_head(self) -> None:
        """
        A read holding one request and the start of the next reports the
        first; the second is reported when the rest arrives.
        """
        parser, sink = request_parser()
        parser.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHo")
        self.assertEqual(sink.events, [("head", b"GET", b"/1"), ("end",)])
        self.assertTrue(parser.in_head)
        parser.feed(b"st: a\r\n\r\n")
        self.assertEqual(sink.events[2:], [("head", b"GET", b"/2"), ("end",)])

    def test_large_body_then_partial_head_is_not_too_large(self) -> None:
        """
        The head-size bound counts only the head: a read holding a body
        larger than C{max_head_size} followed by the start of the next
        request is not refused with 431.
        """
        parser, sink = request_parser(max_head_size=1024)
        parser.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n"
            + b"x" * 5000
            + b"GET /next HTTP/1.1\r\nHost: a\r\n"
        )
        self.assertEqual(sink.body(), b"x" * 5000)
        parser.feed(b"\r\n")
        self.assertEqual(sink.events[-2:], [("head", b"GET", b"/next"), ("end",)])


class HeldEventsTests(SynchronousTestCase):
    """
    The bytes already in hand are validated before anything goes on: what
    one read produces reaches the sink only once llhttp has accepted the
    whole read, in order; when it rejects the read, only the requests that
    were complete before the fault are reported.
    """

    BAD_CHUNKED = (
        b"POST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0x5\r\nworld\r\n0\r\n\r\n"
    )

    def test_malformed_chunk_with_its_head(self) -> None:
        """
        A head and a malformed chunked body in one read: the sink sees
        nothing (not the head, not the good first chunk) and C{feed} raises
        L{BadRequest} 400.
        """
        parser, sink = request_parser()
        error = self.assertRaises(BadRequest, parser.feed, self.BAD_CHUNKED)
        self.assertEqual(error.status, 400)
        self.assertEqual(sink.events, [])

    def test_whole_request_before_malformed_one(self) -> None:
        """
        A whole pipelined request before a malformed one in the same read is
        reported (head, body, end); nothing of the malformed one is.
        """
        parser, sink = request_parser()
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
            + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
            + self.BAD_CHUNKED,
        )
        self.assertEqual(error.status, 400)
        self.assertEqual(
            sink.events,
            [
                ("head", b"POST", b"/1"),
                ("body", b"ok"),
                ("end",),
                ("head", b"GET", b"/2"),
                ("end",),
            ],
        )

    def test_refused_head_after_whole_request(self) -> None:
        """
        A request refused by the adapter (HTTP/1.1 without Host) after a
        whole one in the same read: the whole one is reported, then the
        refusal is raised.
        """
        parser, sink = request_parser()
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nAccept: */*\r\n\r\n",
        )
        self.assertEqual(error.status, 400)
        self.assertEqual(sink.events, [("head", b"GET", b"/1"), ("end",)])

    def test_oversized_partial_head_after_whole_request(self) -> None:
        """
        A whole request followed in the same read by the start of a head
        already beyond C{max_head_size}: the whole one is reported, then
        431 is raised.
        """
        parser, sink = request_parser(max_head_size=1024)
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n" + with_fields(60, 30),
        )
        self.assertEqual(error.status, 431)
        self.assertEqual(sink.events, [("head", b"GET", b"/1"), ("end",)])

    def test_split_reads_deliver_as_before(self) -> None:
        """
        A head alone in its read is reported when that read is fed; a
        malformed chunk in a later read then raises 400 (the sink has the
        head, the good chunk of that read is not reported).
        """
        parser, sink = request_parser()
        end = self.BAD_CHUNKED.index(b"\r\n\r\n") + 4
        self.assertIsNone(parser.feed(self.BAD_CHUNKED[:end]))
        self.assertEqual(sink.events, [("head", b"POST", b"/bad")])
        error = self.assertRaises(BadRequest, parser.feed, self.BAD_CHUNKED[end:])
        self.assertEqual(error.status, 400)
        self.assertEqual(sink.events, [("head", b"POST", b"/bad")])

    def test_good_chunks_reported_per_read(self) -> None:
        """
        Each read's chunks are reported once that read is accepted, in
        order, as they came.
        """
        parser, sink = request_parser()
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        self.assertEqual(sink.events, [("head", b"POST", b"/"), ("body", b"abc")])
        parser.feed(b"2\r\nde\r\n1\r\nf\r\n")
        self.assertEqual(sink.events[2:], [("body", b"de"), ("body", b"f")])
        parser.feed(b"0\r\n\r\n")
        self.assertEqual(sink.events[4:], [("end",)])

    def test_chunked_reported_after_the_read(self) -> None:
        """
        A chunked request (whose body could turn out malformed) is reported
        only after llhttp has taken the whole read: by then the parser has
        seen every byte of it (the next head is under way). A request
        without a chunked body cannot be malformed later and is reported at
        once.
        """
        parser = RequestParser(None)
        states: List[bool] = []

        class Sink(RecordingSink):
            def request_head(self, head: RequestHead) -> None:
                states.append(parser.in_head)
                RecordingSink.request_head(self, head)

        parser.sink = sink = Sink()
        parser.feed(
            b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHo"
        )
        self.assertEqual(states, [True])
        self.assertEqual(sink.events, [("head", b"POST", b"/1"), ("end",)])
        parser.feed(b"st: a\r\n\r\nGET /3 HTTP/1.1\r\nHo")
        self.assertEqual(states, [True, False])

    def test_upgrade_delivers_then_returns_rest(self) -> None:
        """
        A whole request and an Upgrade request in one read: both are
        reported in order and the bytes after the upgrade head returned.
        """
        parser, sink = request_parser()
        rest = parser.feed(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"\x81\x00"
        )
        self.assertEqual(rest, b"\x81\x00")
        self.assertEqual(
            sink.events,
            [("head", b"GET", b"/1"), ("end",), ("head", b"GET", b"/ws"), ("end",)],
        )

    def test_sink_refusal_stops_delivery(self) -> None:
        """
        A sink that raises L{BadRequest} for a request makes C{feed} raise
        it; the requests after it in the read are not reported (the
        connection is refused: the front closes it).
        """
        parser = RequestParser(None)

        class Sink(RecordingSink):
            def request_head(self, head: RequestHead) -> None:
                RecordingSink.request_head(self, head)
                if head.target == b"/no":
                    raise BadRequest(403, "no")

        parser.sink = sink = Sink()
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET /no HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(error.status, 403)
        self.assertEqual(sink.events, [("head", b"GET", b"/no")])


class ExpectTests(SynchronousTestCase):
    """
    C{Expect: 100-continue} is flagged; any other expectation is refused.
    """

    def test_expect_continue(self) -> None:
        """
        C{Expect: 100-continue} (any case) sets C{expect_continue}; the head
        is reported before the body is sent.
        """
        for value in (b"100-continue", b"100-Continue", b" 100-CONTINUE "):
            parser, sink = request_parser()
            parser.feed(
                b"POST / HTTP/1.1\r\nHost: a\r\nExpect: "
                + value
                + b"\r\nContent-Length: 3\r\n\r\n"
            )
            self.assertTrue(sink.heads[0].expect_continue, value)
            self.assertEqual(sink.kinds(), ["head"])

    def test_other_expectation_refused(self) -> None:
        """
        Any other expectation is answered with 417 before the head is
        reported.
        """
        parser, sink = request_parser()
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\n",
        )
        self.assertEqual(error.status, 417)
        self.assertEqual(sink.events, [])


class UpgradeAndConnectTests(SynchronousTestCase):
    """
    After a CONNECT or Upgrade head, what follows is not HTTP: C{feed}
    returns it.
    """

    def test_connect_returns_rest(self) -> None:
        """
        C{feed} returns the bytes after a CONNECT head; the head and the end
        of the (bodiless) request are reported.
        """
        parser, sink = request_parser()
        rest = parser.feed(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
            b"\x16\x03\x01\x00\xa5 client hello"
        )
        self.assertEqual(rest, b"\x16\x03\x01\x00\xa5 client hello")
        self.assertEqual(sink.events, [("head", b"CONNECT", b"example.com:443"), ("end",)])
        self.assertEqual(sink.heads[0].framing, 0)

    def test_connect_nothing_after(self) -> None:
        """
        With nothing after the CONNECT head, C{feed} returns C{b""} (not
        L{None}): the caller still learns the tunnel head is complete.
        """
        parser, sink = request_parser()
        rest = parser.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        self.assertEqual(rest, b"")

    def test_connect_head_in_pieces(self) -> None:
        """
        A CONNECT head in pieces: C{feed} returns L{None} until the head is
        complete, then the bytes after it.
        """
        parser, sink = request_parser()
        self.assertIsNone(parser.feed(b"CONNECT example.com:443 HTTP/1.1\r\n"))
        self.assertIsNone(parser.feed(b"Host: example.com:443\r\n"))
        self.assertEqual(parser.feed(b"\r\nTLS"), b"TLS")

    def test_websocket_upgrade(self) -> None:
        """
        A request with C{Connection: Upgrade} and C{Upgrade: websocket} has
        C{upgrade=b"websocket"}; C{feed} returns the bytes after its head.
        """
        parser, sink = request_parser()
        rest = parser.feed(
            b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x05frame"
        )
        self.assertEqual(rest, b"\x81\x05frame")
        [head] = sink.heads
        self.assertEqual(head.upgrade, b"websocket")
        self.assertEqual(head.framing, 0)
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_upgrade_without_connection_option(self) -> None:
        """
        C{Upgrade} without the C{upgrade} connection option is no upgrade
        request: C{upgrade} is L{None} and what follows is parsed as HTTP.
        """
        parser, sink = request_parser()
        rest = parser.feed(
            b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertIsNone(rest)
        self.assertIsNone(sink.heads[0].upgrade)
        self.assertEqual(sink.heads[1].target, b"/next")

    def test_reset_after_refused_upgrade(self) -> None:
        """
        After an upgrade head, L{RequestParser.reset} lets the bytes that
        followed be parsed as the next request.
        """
        parser, sink = request_parser()
        rest = parser.feed(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        assert rest is not None
        parser.reset()
        self.assertIsNone(parser.feed(rest))
        self.assertEqual(
            sink.events,
            [("head", b"GET", b"/ws"), ("end",), ("head", b"GET", b"/next"), ("end",)],
        )


class HeadSizeTests(SynchronousTestCase):
    """
    Heads larger than C{max_head_size} are refused with 431, however they
    arrive.
    """

    def test_many_headers(self) -> None:
        """
        A head made of many headers, in one read, beyond the bound is 431.
        """
        parser, sink = request_parser(max_head_size=1024)
        headers = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * 20) for i in range(100))
        error = self.assertRaises(
            BadRequest, parser.feed, b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n"
        )
        self.assertEqual(error.status, 431)
        self.assertEqual(sink.events, [])

    def test_many_headers_in_pieces(self) -> None:
        """
        The same head arriving one header per read is refused too.
        """
        parser, sink = request_parser(max_head_size=1024)
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")

        def feed_all() -> None:
            for i in range(100):
                parser.feed(b"X-Header-%d: %s\r\n" % (i, b"v" * 20))

        error = self.assertRaises(BadRequest, feed_all)
        self.assertEqual(error.status, 431)

    def test_one_huge_header_line_in_pieces(self) -> None:
        """
        One header line that never ends, fed in pieces, is refused once the
        bytes received for the head pass the bound (llhttp would buffer it
        without calling back).
        """
        parser, sink = request_parser(max_head_size=4096)
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Huge: ")
        fed = 0
        with self.assertRaises(BadRequest) as caught:
            while fed < 100000:
                parser.feed(b"a" * 500)
                fed += 500
        self.assertEqual(caught.exception.status, 431)
        self.assertLessEqual(fed, 4096)
        self.assertEqual(sink.events, [])

    def test_long_target(self) -> None:
        """
        A request target longer than the bound is 431.
        """
        parser, sink = request_parser(max_head_size=1024)
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(error.status, 431)

    def test_head_within_bound(self) -> None:
        """
        A head just under the bound, in pieces, is accepted.
        """
        parser, sink = request_parser(max_head_size=1024)
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 900 + b"\r\n\r\n"
        self.assertLess(len(head), 1024)
        for i in range(0, len(head), 100):
            parser.feed(head[i : i + 100])
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_bound_restarts_for_each_request(self) -> None:
        """
        The bound applies per head: many requests, each under it, are
        accepted however many bytes they add up to.
        """
        parser, sink = request_parser(max_head_size=256)
        request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 150 + b"\r\n\r\n"
        for _ in range(20):
            parser.feed(request[:100])
            parser.feed(request[100:])
        self.assertEqual(len(sink.heads), 20)


class FieldLimitTests(SynchronousTestCase):
    """
    A request with a header field beyond C{max_field_size} bytes (name and
    value) or more than C{max_header_count} header fields is refused with
    431 before its head is reported.
    """

    def test_defaults(self) -> None:
        """
        By default a head may have 32768 bytes, a field 8192 and a head 100
        fields (nginx's figures).
        """
        parser = RequestParser(RecordingSink())
        self.assertEqual(
            (parser.max_head_size, parser.max_field_size, parser.max_header_count),
            (32768, 8192, 100),
        )
        response = ResponseParser(RecordingSink())
        self.assertEqual(
            (response.max_head_size, response.max_field_size, response.max_header_count),
            (32768, 8192, 100),
        )

    def test_field_too_large(self) -> None:
        """
        One field of 9 KiB (under the head bound) is 431 "header field too
        large" with the default limits; nothing is reported.
        """
        parser, sink = request_parser()
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9216 + b"\r\n\r\n",
        )
        self.assertEqual((error.status, error.message), (431, "header field too large"))
        self.assertEqual(sink.events, [])

    def test_field_size_bound_is_inclusive(self) -> None:
        """
        A field of exactly C{max_field_size} bytes of name and value is
        accepted; one byte more is 431.
        """
        parser, sink = request_parser(max_field_size=256)
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 251 + b"\r\n\r\n")
        self.assertEqual(sink.kinds(), ["head", "end"])
        parser, sink = request_parser(max_field_size=256)
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 252 + b"\r\n\r\n",
        )
        self.assertEqual(error.status, 431)

    def test_field_too_large_in_pieces(self) -> None:
        """
        A field that grows beyond the bound over several reads is refused
        when it is complete, before the head is reported.
        """
        parser, sink = request_parser(max_field_size=256)
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(3):
            parser.feed(b"b" * 100)
        error = self.assertRaises(BadRequest, parser.feed, b"\r\n\r\n")
        self.assertEqual(error.status, 431)
        self.assertEqual(sink.events, [])

    def test_too_many_fields(self) -> None:
        """
        101 header fields (Host included) are 431 "too many header fields"
        with the default limits, however small; 100 are accepted.
        """
        parser, sink = request_parser()
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + with_fields(99) + b"\r\n")
        self.assertEqual(len(sink.heads[0].headers), 100)
        parser, sink = request_parser()
        error = self.assertRaises(
            BadRequest,
            parser.feed,
            b"GET / HTTP/1.1\r\nHost: a\r\n" + with_fields(100) + b"\r\n",
        )
        self.assertEqual((error.status, error.message), (431, "too many header fields"))
        self.assertEqual(sink.events, [])

    def test_ten_thousand_fields(self) -> None:
        """
        10,000 small header fields, one read or one field per read, are
        refused with 431.
        """
        fields = with_fields(10000)
        parser, sink = request_parser()
        error = self.assertRaises(
            BadRequest, parser.feed, b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
        )
        self.assertEqual(error.status, 431)
        parser, sink = request_parser()
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")

        def feed_all() -> None:
            for i in range(0, len(fields), 12):
                parser.feed(fields[i : i + 12])

        error = self.assertRaises(BadRequest, feed_all)
        self.assertEqual(error.status, 431)
        self.assertEqual(sink.events, [])

    def test_count_restarts_for_each_request(self) -> None:
        """
        The count is per head: pipelined requests each under it are all
        accepted.
        """
        parser, sink = request_parser(max_header_count=10)
        request = b"GET / HTTP/1.1\r\nHost: a\r\n" + with_fields(9) + b"\r\n"
        parser.feed(request * 5)
        self.assertEqual(len(sink.heads), 5)


class MalformedRequestTests(SynchronousTestCase):
    """
    The smuggling and malformed-request corpus: each is refused with
    L{BadRequest}, and nothing of it is reported to the sink (not even a
    head that precedes a fault in its body, when both are in one read).
    """

    def refused(self, data: bytes, status: int = 400) -> BadRequest:
        parser, sink = request_parser()
        error = self.assertRaises(BadRequest, parser.feed, data)
        self.assertEqual(error.status, status, error.message)
        self.assertIsInstance(error.message, str)
        self.assertTrue(error.message)
        self.assertEqual(sink.events, [])
        return error

    def test_content_length_and_transfer_encoding(self) -> None:
        """
        CL+TE in either order is refused (the classic smuggling vector).
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n"
        )

    def test_duplicate_content_length_same_value(self) -> None:
        """
        Two C{Content-Length} headers are refused even with equal values.
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
        )

    def test_duplicate_content_length_different_values(self) -> None:
        """
        Two C{Content-Length} headers with different values are refused.
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        )

    def test_content_length_list(self) -> None:
        """
        A comma-separated C{Content-Length} list is refused.
        """
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello")

    def test_signed_content_length(self) -> None:
        """
        C{+5} and C{-5} are not valid Content-Length values.
        """
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello")

    def test_hex_prefixed_chunk_size(self) -> None:
        """
        A C{0x}-prefixed chunk size is refused; in the same read as its
        head, the head is not reported either.
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0x5\r\nhello\r\n0\r\n\r\n"
        )

    def test_chunk_size_with_garbage(self) -> None:
        """
        A chunk size followed by garbage is refused.
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5zz\r\nhello\r\n0\r\n\r\n"
        )

    def test_transfer_encoding_not_ending_in_chunked(self) -> None:
        """
        A request whose final transfer coding is not chunked has no
        determinable length and is refused with 400.
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
        )

    def test_duplicate_transfer_encoding(self) -> None:
        """
        Two C{Transfer-Encoding: chunked} headers (chunked applied twice)
        are refused.
        """
        self.refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )

    def test_other_transfer_codings(self) -> None:
        """
        Transfer codings other than chunked alone (gzip, identity, or gzip
        before chunked) are answered with 501 before the head is reported:
        the proxy relays bodies re-chunked and would lose the other coding.
        """
        for te in (b"gzip", b"identity", b"gzip, chunked", b"deflate,chunked"):
            self.refused(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + te
                + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                status=501,
            )

    def test_chunked_any_case(self) -> None:
        """
        C{chunked} is matched case-insensitively.
        """
        parser, sink = request_parser()
        parser.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(sink.heads[0].framing, 2)
        self.assertEqual(sink.body(), b"abc")

    def test_obs_fold(self) -> None:
        """
        A header continued on the next line (obs-fold) is refused.
        """
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n")

    def test_bare_lf(self) -> None:
        """
        Bare LF line endings are refused, in the request line or a header.
        """
        self.refused(b"GET / HTTP/1.1\nHost: a\n\n")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n")

    def test_bare_cr(self) -> None:
        """
        Bare CR line endings are refused.
        """
        self.refused(b"GET / HTTP/1.1\rHost: a\r\r")

    def test_nul_in_header(self) -> None:
        """
        A NUL byte in a header value is refused.
        """
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n")

    def test_http11_without_host(self) -> None:
        """
        An HTTP/1.1 request without Host is 400 (llhttp accepts it; the
        adapter does not).
        """
        error = self.refused(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
        self.assertIn("Host", error.message)

    def test_two_host_headers(self) -> None:
        """
        Two Host headers are 400, whether equal or different.
        """
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")

    def test_transfer_encoding_in_http10(self) -> None:
        """
        Transfer-Encoding in an HTTP/1.0 request is 400 (an HTTP/1.0
        recipient would not dechunk it).
        """
        self.refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_http12(self) -> None:
        """
        HTTP/1.2 is refused.
        """
        self.refused(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")

    def test_http20(self) -> None:
        """
        An HTTP/2.0 request line is answered with 505.
        """
        self.refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", status=505)

    def test_http09_style_line(self) -> None:
        """
        An HTTP/0.9-style request line (no version) is answered with 505;
        until its line ends, nothing is reported.
        """
        parser, sink = request_parser()
        self.assertIsNone(parser.feed(b"GET /\r\n"))
        self.assertEqual(sink.events, [])
        self.refused(b"GET /\r\n\r\n", status=505)

    def test_space_before_colon(self) -> None:
        """
        Whitespace between a header name and the colon is refused, for Host
        as for any header.
        """
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n")
        self.refused(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello")

    def test_invalid_header_names(self) -> None:
        """
        A tab inside a header name, or an empty name, is refused.
        """
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX\tA: b\r\n\r\n")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n")

    def test_bad_methods_and_targets(self) -> None:
        """
        A lower-case or invalid method, a space inside the target, or a
        lower-case protocol name is refused.
        """
        self.refused(b"get / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.refused(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.refused(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n")
        self.refused(b"GET / http/1.1\r\nHost: a\r\n\r\n")

    def test_malformed_message_prefix(self) -> None:
        """
        llhttp's own errors become 400 with a message saying the request is
        malformed.
        """
        error = self.refused(b"GET / HTTP/1.1\nHost: a\n\n")
        self.assertTrue(error.message.startswith("malformed request: "), error.message)

    def test_error_after_good_request(self) -> None:
        """
        A good request followed by garbage in the same read: the good one is
        reported whole, then L{BadRequest} is raised.
        """
        parser, sink = request_parser()
        self.assertRaises(
            BadRequest, parser.feed, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP\r\n\r\n"
        )
        self.assertEqual(sink.events, [("head", b"GET", b"/"), ("end",)])


class ResponseParserTests(SynchronousTestCase):
    """
    L{ResponseParser} frames upstream responses, including those llhttp
    cannot frame alone.
    """

    def test_content_length(self) -> None:
        """
        A C{Content-Length} response: head with status, reason, version,
        headers, keep-alive and C{framing=1}, then the body, then the end.
        """
        parser, sink = response_parser()
        self.assertIsNone(
            parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
        )
        [head] = sink.responses
        self.assertEqual(head.status, 200)
        self.assertEqual(head.reason, b"OK")
        self.assertEqual(head.version, b"1.1")
        self.assertEqual(head.headers, [(b"Content-Length", b"5"), (b"X-A", b"b")])
        self.assertTrue(head.keep_alive)
        self.assertEqual(head.framing, 1)
        self.assertEqual(sink.events, [("head", 200), ("body", b"hello"), ("end",)])
        self.assertTrue(parser.done)
        self.assertFalse(parser.extra)

    def test_started_and_done(self) -> None:
        """
        C{started} turns true with the first byte of a response and C{done}
        when it is complete.
        """
        parser, sink = response_parser()
        self.assertFalse(parser.started)
        self.assertFalse(parser.done)
        parser.feed(b"HTTP/1.1 2")
        self.assertTrue(parser.started)
        self.assertFalse(parser.done)
        parser.feed(b"00 OK\r\nContent-Length: 2\r\n\r\nh")
        self.assertFalse(parser.done)
        parser.feed(b"i")
        self.assertTrue(parser.done)

    def test_reason_empty(self) -> None:
        """
        A status line without a reason phrase is accepted.
        """
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(sink.responses[0].reason, b"")
        self.assertTrue(parser.done)

    def test_keep_alive(self) -> None:
        """
        C{keep_alive} follows the version and C{Connection}.
        """
        cases = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        ]
        for data, expected in cases:
            parser, sink = response_parser()
            parser.feed(data)
            self.assertEqual(sink.responses[0].keep_alive, expected, data)
        parser, sink = response_parser()
        parser.feed(cases[2][0])
        self.assertEqual(sink.responses[0].version, b"1.0")

    def test_chunked(self) -> None:
        """
        A chunked response is reported de-chunked with C{framing=2}.
        """
        parser, sink = response_parser()
        parser.feed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        self.assertEqual(sink.responses[0].framing, 2)
        self.assertEqual(sink.body(), b"hello world")
        self.assertEqual(sink.events[-1], ("end",))
        self.assertTrue(parser.done)

    def test_chunked_split_at_every_boundary(self) -> None:
        """
        Wherever a chunked response is split, the same body is reported with
        one head and one end.
        """
        data = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
        )
        for cut in range(1, len(data)):
            parser, sink = response_parser()
            parser.feed(data[:cut])
            parser.feed(data[cut:])
            self.assertEqual(sink.body(), b"hello world", cut)
            self.assertEqual(sink.kinds().count("head"), 1, cut)
            self.assertEqual(sink.kinds().count("end"), 1, cut)
            self.assertTrue(parser.done, cut)

    def test_content_length_byte_by_byte(self) -> None:
        """
        A response fed one byte at a time is reported the same as in one
        piece.
        """
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
        parser, sink = response_parser()
        for i in range(len(data)):
            parser.feed(data[i : i + 1])
        self.assertEqual(sink.body(), b"0123456789")
        self.assertEqual(sink.kinds().count("end"), 1)

    def test_close_delimited(self) -> None:
        """
        Without Content-Length or chunked coding the body runs until the
        connection closes: C{framing=3}, C{framing_until_close()} is true
        once the head is in, and the parser never ends the message itself.
        """
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 200 OK\r\nServer: x")
        self.assertFalse(parser.framing_until_close())
        parser.feed(b"\r\n\r\nhello ")
        parser.feed(b"world")
        self.assertEqual(sink.responses[0].framing, 3)
        self.assertTrue(parser.framing_until_close())
        self.assertEqual(sink.body(), b"hello world")
        self.assertNotIn(("end",), sink.events)
        self.assertFalse(parser.done)

    def test_framing_until_close_false_for_framed(self) -> None:
        """
        C{framing_until_close()} is false for Content-Length and chunked
        responses.
        """
        for data in (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
        ):
            parser, sink = response_parser()
            parser.feed(data)
            self.assertFalse(parser.framing_until_close(), data)

    def test_transfer_encoding_not_ending_in_chunked(self) -> None:
        """
        A response whose final transfer coding is not chunked is delimited
        by the close (RFC 9112 section 6.3), and says so: C{framing=3}.
        """
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc")
        self.assertEqual(sink.responses[0].framing, 3)
        self.assertTrue(parser.framing_until_close())
        self.assertEqual(sink.body(), b"abc")
        self.assertFalse(parser.done)

    def test_transfer_encoding_ending_in_chunked(self) -> None:
        """
        C{gzip, chunked} (in one header or two) is chunked: C{framing=2}.
        """
        for te in (
            b"Transfer-Encoding: gzip, chunked\r\n",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        ):
            parser, sink = response_parser()
            parser.feed(b"HTTP/1.1 200 OK\r\n" + te + b"\r\n3\r\nabc\r\n0\r\n\r\n")
            self.assertEqual(sink.responses[0].framing, 2, te)
            self.assertEqual(sink.body(), b"abc")
            self.assertTrue(parser.done)

    def test_head_request(self) -> None:
        """
        The answer to HEAD (C{no_body=True}) ends with its head even though
        it announces a body: C{framing=0}, end reported, C{done}.
        """
        parser, sink = response_parser(no_body=True)
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        self.assertEqual(sink.events, [("head", 200), ("end",)])
        self.assertEqual(sink.responses[0].framing, 0)
        self.assertTrue(parser.done)
        self.assertFalse(parser.extra)

    def test_head_request_chunked(self) -> None:
        """
        The answer to HEAD announcing chunked coding ends with its head too.
        """
        parser, sink = response_parser(no_body=True)
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(sink.events, [("head", 200), ("end",)])
        self.assertTrue(parser.done)

    def test_head_then_next_response(self) -> None:
        """
        After a HEAD response, the next response (on a fresh C{expect})
        parses correctly, although llhttp expected the announced body.
        """
        parser, sink = response_parser(no_body=True)
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        parser.expect(False)
        self.assertFalse(parser.done)
        parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(
            sink.events,
            [("head", 200), ("end",), ("head", 201), ("body", b"hi"), ("end",)],
        )
        self.assertTrue(parser.done)
        self.assertFalse(parser.extra)

    def test_head_response_with_body_bytes(self) -> None:
        """
        Bytes after a HEAD response (a server that sent the body anyway) are
        not reported; C{extra} says the connection cannot be reused.
        """
        parser, sink = response_parser(no_body=True)
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(sink.events, [("head", 200), ("end",)])
        self.assertTrue(parser.extra)

    def test_no_body_statuses(self) -> None:
        """
        204 and 304 end with their head, even with a Content-Length.
        """
        for data in (
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        ):
            parser, sink = response_parser()
            parser.feed(data)
            self.assertEqual(sink.kinds(), ["head", "end"], data)
            self.assertEqual(sink.responses[0].framing, 0)
            self.assertTrue(parser.done)
            self.assertFalse(parser.framing_until_close())

    def test_interim_swallowed(self) -> None:
        """
        A 100 Continue before the final response is not reported; the
        final one is.
        """
        parser, sink = response_parser()
        parser.feed(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        )
        self.assertEqual(sink.events, [("head", 200), ("body", b"hi"), ("end",)])
        self.assertTrue(parser.done)

    def test_interim_in_separate_reads(self) -> None:
        """
        A 100 Continue in a read of its own leaves the parser waiting (not
        done, not started) for the final response.
        """
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(sink.events, [])
        self.assertFalse(parser.done)
        self.assertFalse(parser.started)
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(sink.events, [("head", 200), ("body", b"hi"), ("end",)])

    def test_several_interim(self) -> None:
        """
        Several 1xx (103 Early Hints with headers, then 100) are all
        swallowed; the final head carries only its own headers.
        """
        parser, sink = response_parser()
        parser.feed(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(sink.events, [("head", 200), ("end",)])
        self.assertEqual(sink.responses[0].headers, [(b"Content-Length", b"0")])

    def test_interim_then_partial_head_size(self) -> None:
        """
        The head-size bound counts the final head only, not the interim
        response read with it.
        """
        parser, sink = response_parser(max_head_size=200)
        parser.feed(
            b"HTTP/1.1 100 Continue\r\nX-Pad: " + b"p" * 170 + b"\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nX-A: b"
        )
        parser.feed(b"\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(sink.events, [("head", 200), ("end",)])

    def test_switching_protocols(self) -> None:
        """
        A 101 is reported (no end) and C{feed} returns the upgraded
        protocol's first bytes.
        """
        parser, sink = response_parser()
        rest = parser.feed(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n\x81\x02hi"
        )
        self.assertEqual(rest, b"\x81\x02hi")
        self.assertEqual(sink.events, [("head", 101)])
        self.assertTrue(parser.done)

    def test_switching_protocols_nothing_after(self) -> None:
        """
        With nothing after the 101 head, C{feed} returns C{b""}.
        """
        parser, sink = response_parser()
        rest = parser.feed(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        self.assertEqual(rest, b"")

    def test_switching_protocols_without_connection_upgrade(self) -> None:
        """
        A 101 without the C{upgrade} connection option is L{BadResponse}
        (llhttp would silently drop the bytes that follow), and is not
        reported.
        """
        parser, sink = response_parser()
        self.assertRaises(
            BadResponse,
            parser.feed,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
        )
        self.assertEqual(sink.events, [])

    def test_garbage(self) -> None:
        """
        Bytes that are not an HTTP/1.x response raise L{BadResponse}.
        """
        for data in (
            b"<html>hello</html>\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        ):
            parser, sink = response_parser()
            self.assertRaises(BadResponse, parser.feed, data)
            self.assertEqual(sink.events, [], data)

    def test_smuggling_responses(self) -> None:
        """
        CL+TE, duplicate and signed Content-Length in a response raise
        L{BadResponse}.
        """
        for data in (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        ):
            parser, sink = response_parser()
            self.assertRaises(BadResponse, parser.feed, data)

    def test_bad_chunk_size(self) -> None:
        """
        A C{0x} chunk size in a response raises L{BadResponse} after the
        head was reported.
        """
        parser, sink = response_parser()
        self.assertRaises(
            BadResponse,
            parser.feed,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n",
        )
        self.assertEqual(sink.events, [("head", 200)])

    def test_head_too_large_in_pieces(self) -> None:
        """
        A response head that grows past C{max_head_size} over several reads
        raises L{BadResponse}.
        """
        parser, sink = response_parser(max_head_size=4096)
        parser.feed(b"HTTP/1.1 200 OK\r\nX-Huge: ")
        with self.assertRaises(BadResponse):
            for _ in range(100):
                parser.feed(b"a" * 500)
        self.assertEqual(sink.events, [])

    def test_head_too_large_in_one_read(self) -> None:
        """
        A complete response head larger than C{max_head_size} arriving in
        one read raises L{BadResponse} too.
        """
        parser, sink = response_parser(max_head_size=1024)
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(50))
        error = self.assertRaises(
            BadResponse,
            parser.feed,
            b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 0\r\n\r\n",
        )
        self.assertIn("too large", str(error))
        self.assertEqual(sink.events, [])

    def test_reuse_across_responses(self) -> None:
        """
        One parser serves a keep-alive connection: Content-Length, 204,
        chunked, HEAD and Content-Length responses in turn, each after
        C{expect}, are each reported whole.
        """
        sink = RecordingSink()
        parser = ResponseParser(sink)
        exchanges = [
            (False, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
            (False, b"HTTP/1.1 204 No Content\r\n\r\n"),
            (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n"),
            (True, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (True, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
            (False, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nc"),
            (False, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd"),
        ]
        for no_body, data in exchanges:
            parser.expect(no_body)
            self.assertFalse(parser.done)
            self.assertIsNone(parser.feed(data))
            self.assertTrue(parser.done, data)
            self.assertFalse(parser.extra, data)
        self.assertEqual(
            sink.events,
            [
                ("head", 200), ("body", b"a"), ("end",),
                ("head", 204), ("end",),
                ("head", 200), ("body", b"b"), ("end",),
                ("head", 200), ("end",),
                ("head", 200), ("end",),
                ("head", 404), ("body", b"c"), ("end",),
                ("head", 200), ("body", b"d"), ("end",),
            ],
        )  # fmt: skip

    def test_sink_can_change_between_responses(self) -> None:
        """
        Each response goes to the sink set before its C{expect} (a pooled
        connection serves several exchanges).
        """
        first, second = RecordingSink(), RecordingSink()
        parser = ResponseParser(first)
        parser.expect(False)
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        parser.sink = second
        parser.expect(False)
        parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nb")
        self.assertEqual(first.events, [("head", 200), ("body", b"a"), ("end",)])
        self.assertEqual(second.events, [("head", 201), ("body", b"b"), ("end",)])

    def test_unsolicited_second_response(self) -> None:
        """
        A second response arriving before the next C{expect} is not
        reported; C{extra} marks the connection as not reusable.
        """
        parser, sink = response_parser()
        parser.feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
        )
        self.assertEqual(sink.events, [("head", 200), ("body", b"a"), ("end",)])
        self.assertTrue(parser.extra)



class ResponseLimitTests(SynchronousTestCase):
    """
    A response from upstream with a header field beyond C{max_field_size}
    or more than C{max_header_count} fields is invalid (L{BadResponse}, the
    proxy answers 502).
    """

    def test_field_too_large(self) -> None:
        """
        One response field beyond the bound raises L{BadResponse}; nothing
        is reported.
        """
        parser, sink = response_parser()
        error = self.assertRaises(
            BadResponse,
            parser.feed,
            b"HTTP/1.1 200 OK\r\nSet-Cookie: " + b"c" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
        )
        self.assertIn("field too large", str(error))
        self.assertEqual(sink.events, [])

    def test_too_many_fields(self) -> None:
        """
        200 response fields raise L{BadResponse}; 100 are accepted.
        """
        parser, sink = response_parser()
        error = self.assertRaises(
            BadResponse,
            parser.feed,
            b"HTTP/1.1 200 OK\r\n" + with_fields(200) + b"Content-Length: 0\r\n\r\n",
        )
        self.assertIn("too many", str(error))
        self.assertEqual(sink.events, [])
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 200 OK\r\n" + with_fields(99) + b"Content-Length: 0\r\n\r\n")
        self.assertEqual(len(sink.responses[0].headers), 100)
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_limits_configurable(self) -> None:
        """
        The limits are the parser's arguments.
        """
        parser, sink = response_parser(max_field_size=256, max_header_count=16)
        self.assertRaises(
            BadResponse, parser.feed, b"HTTP/1.1 204 No Content\r\n" + with_fields(17) + b"\r\n"
        )
        parser, sink = response_parser(max_field_size=256, max_header_count=16)
        self.assertRaises(
            BadResponse,
            parser.feed,
            b"HTTP/1.1 204 No Content\r\nX-A: " + b"a" * 300 + b"\r\n\r\n",
        )

    def test_interim_response_bounded(self) -> None:
        """
        An interim (1xx) response is bounded too.
        """
        parser, sink = response_parser()
        self.assertRaises(
            BadResponse, parser.feed, b"HTTP/1.1 103 Early Hints\r\n" + with_fields(101) + b"\r\n"
        )

    def test_trailers_never_join_the_head(self) -> None:
        """
        Response trailer fields are bounded but never added to the reported
        head's fields (which stay parallel to its C{lnames}).
        """
        parser, sink = response_parser()
        parser.feed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\na\r\n0\r\nX-Trailer: yes\r\n\r\n"
        )
        [head] = sink.responses
        self.assertEqual(head.headers, [(b"Transfer-Encoding", b"chunked")])
        self.assertEqual(head.lnames, [b"transfer-encoding"])
        self.assertEqual(sink.kinds(), ["head", "body", "end"])
        parser, sink = response_parser(max_header_count=16)
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertRaises(BadResponse, parser.feed, b"0\r\n" + with_fields(17) + b"\r\n")

    def test_unsolicited_message_absorbed(self) -> None:
        """
        After a complete response, an unsolicited one with too many fields
        does not undo it: the connection is only marked not reusable.
        """
        parser, sink = response_parser()
        parser.feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
            b"HTTP/1.1 200 OK\r\n" + with_fields(200) + b"\r\n"
        )
        self.assertEqual(sink.events, [("head", 200), ("body", b"a"), ("end",)])
        self.assertTrue(parser.extra)


class BodyHandOverTests(SynchronousTestCase):
    """
    Content-Length bodies that span reads go past llhttp after the first
    read (no copy, no callback); what follows them is parsed afresh.
    """

    def test_request_body_then_pipelined_request(self) -> None:
        """
        A Content-Length body split over reads arrives whole, and a request
        in the same read as its last bytes is parsed normally.
        """
        parser, sink = request_parser()
        parser.feed(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n012")
        self.assertEqual(parser.remaining, 7)
        parser.feed(b"3456")
        parser.feed(b"789GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(sink.body(), b"0123456789")
        self.assertEqual(
            [e for e in sink.events if e[0] != "body"],
            [("head", b"POST", b"/a"), ("end",), ("head", b"GET", b"/b"), ("end",)],
        )
        self.assertEqual(parser.remaining, 0)

    def test_request_body_exact_end(self) -> None:
        """
        A read ending exactly at the end of the body ends the request; the
        next read starts a new one.
        """
        parser, sink = request_parser()
        parser.feed(b"PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
        parser.feed(b"cd")
        parser.feed(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(sink.body(), b"abcd")
        self.assertEqual(sink.kinds().count("end"), 2)

    def test_response_body_hand_over(self) -> None:
        """
        A response's Content-Length body split over reads arrives whole and
        ends the message; bytes after it mark the connection unusable.
        """
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        parser.hand_over()
        self.assertEqual(parser.remaining, 4)
        parser.feed(b"cd")
        self.assertFalse(parser.done)
        parser.feed(b"efXYZ")
        self.assertTrue(parser.done)
        self.assertTrue(parser.extra)
        self.assertEqual(sink.body(), b"abcdef")
        self.assertEqual(sink.kinds()[-1], "end")

    def test_next_response_after_hand_over(self) -> None:
        """
        After a handed-over body, the next response is parsed by a fresh
        llhttp parser.
        """
        parser, sink = response_parser()
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        parser.hand_over()
        parser.feed(b"cd")
        parser.expect(False)
        parser.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual([r.status for r in sink.responses], [200, 204])
        self.assertTrue(parser.done)


class CallbackBugTests(SynchronousTestCase):
    """
    An exception raised by a sink (a bug of ours) surfaces as itself: never
    turned into a 400 or a 502 that blames the peer, nor swallowed.
    """

    def test_request_sink_bug(self) -> None:
        """
        A request sink raising in C{request_head} makes C{feed} raise that
        exception, not L{BadRequest}.
        """

        class Sink:
            def request_head(self, head: object) -> None:
                raise KeyError("bug")

        parser = RequestParser(Sink())
        self.assertRaises(KeyError, parser.feed, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_request_parser_bug(self) -> None:
        """
        An exception of the parser's own callbacks (not L{BadRequest})
        makes C{feed} raise it, not a 400.
        """

        class Buggy(RequestParser):
            def on_url(self, url: bytes) -> None:
                raise KeyError("bug")

        parser = Buggy(RecordingSink())
        self.assertRaises(KeyError, parser.feed, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_request_sink_bug_in_later_event(self) -> None:
        """
        A sink raising in C{request_end} (after the head was delivered)
        makes C{feed} raise that exception.
        """

        class Sink(RecordingSink):
            def request_end(self) -> None:
                raise ZeroDivisionError()

        parser = RequestParser(Sink())
        self.assertRaises(
            ZeroDivisionError, parser.feed, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )

    def test_response_sink_bug_after_message(self) -> None:
        """
        A response sink raising in C{response_end} (after the message is
        complete) makes C{feed} raise it, not swallow it as extra bytes.
        """

        class Sink:
            def response_head(self, head: object) -> None:
                pass

            def response_body(self, data: bytes) -> None:
                pass

            def response_end(self) -> None:
                raise ValueError("bug")

        parser = ResponseParser(Sink())
        parser.expect(False)
        self.assertRaises(
            ValueError, parser.feed, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )


class NoLlhttp:
    """
    Stands for llhttp in a parser that must not use it (a remembered head
    is replayed without it).
    """

    def feed_data(self, data: bytes) -> None:
        raise AssertionError(f"llhttp was used for {data!r}")


GET = b"GET /memo HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
OK = (
    b"HTTP/1.1 200 OK\r\nServer: origin\r\nContent-Length: 5\r\n"
    b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n"
)


class HeadMemoTests(SynchronousTestCase):
    """
    A head whose exact bytes were parsed before (by a parser of the same
    class under the same limits) is replayed from the memo, with the same
    events as llhttp's, without llhttp.
    """

    def setUp(self) -> None:
        from twisted_proxy.http import parser as module

        self.module = module
        self.patch(module, "_memos", {})

    def learn_request(self, data: bytes) -> None:
        """
        Parse C{data} twice (a head is remembered the second time it is
        seen).
        """
        for _ in range(2):
            request_parser()[0].feed(data)

    def learn_response(self, data: bytes) -> None:
        for _ in range(2):
            response_parser()[0].feed(data)

    def replayed_request(self, data: bytes, **limits: int) -> Tuple[RequestParser, RecordingSink]:
        parser, sink = request_parser(**limits)
        real, parser._parser = parser._parser, NoLlhttp()
        parser.feed(data)
        parser._parser = real
        return parser, sink

    def test_request_replayed(self) -> None:
        """
        A keep-alive request without a body, seen once, is reported the
        second time without llhttp: the same head, fresh lists.
        """
        request_parser()[0].feed(GET)
        first, sink1 = request_parser()
        first.feed(GET)
        _, sink2 = self.replayed_request(GET)
        self.assertEqual(sink1.events, sink2.events)
        one, two = sink1.heads[0], sink2.heads[0]
        for name in RequestHead.__slots__:
            if name != "served":
                self.assertEqual(getattr(one, name), getattr(two, name), name)
        self.assertIsNone(one.served)
        self.assertEqual(two.served[:2], (tuple(one.headers), None))
        self.assertIsNot(one.headers, two.headers)
        two.headers.append((b"X", b"y"))
        _, sink3 = self.replayed_request(GET)
        self.assertEqual(sink3.heads[0].headers, one.headers)

    def test_request_tokens_and_via(self) -> None:
        """
        The Connection options and a looped Via are replayed too.
        """
        from twisted_proxy.http.policy import VIA_PREFIX

        data = (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Opt\r\n"
            b"Via: 1.1 " + VIA_PREFIX + b"x\r\n\r\n"
        )
        self.learn_request(data)
        _, sink = self.replayed_request(data)
        head = sink.heads[0]
        self.assertEqual(head.tokens, {b"keep-alive", b"x-opt"})
        self.assertIn(VIA_PREFIX, head.looped)

    def test_pipelined_replays(self) -> None:
        """
        Remembered requests pipelined in one read are each replayed, and
        a request not remembered after them goes through llhttp.
        """
        self.learn_request(GET)
        parser, sink = request_parser()
        parser.feed(GET + GET + b"GET /new HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        self.assertEqual(
            sink.events,
            [("head", b"GET", b"/memo"), ("end",)] * 2
            + [("head", b"GET", b"/new"), ("end",), ("head", b"GET", b"/memo"), ("end",)],
        )
        # (what llhttp parsed began with /new: seen once, under its own
        # bytes, never under those of two heads)
        (memo,) = self.module._memos.values()
        self.assertEqual([key.count(b"\r\n\r\n") for key in memo if key is not None], [1])
        request_parser()[0].feed(b"GET /new HTTP/1.1\r\nHost: a\r\n\r\n")
        _, sink = self.replayed_request(b"GET /new HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(sink.kinds(), ["head", "end"])

    def test_replay_then_partial_head(self) -> None:
        """
        A replayed request followed by the start of another: the rest is
        parsed by llhttp when it comes.
        """
        self.learn_request(GET)
        parser, sink = request_parser()
        parser.feed(GET + b"GET /b HTTP/1.1\r\nHo")
        self.assertTrue(parser.in_head)
        parser.feed(b"st: a\r\n\r\n")
        self.assertEqual([e for e in sink.events if e[0] == "head"], [("head", b"GET", b"/memo"), ("head", b"GET", b"/b")])

    def test_requests_not_remembered(self) -> None:
        """
        Heads that change llhttp's state (a body, an upgrade, CONNECT),
        that need more than the head (Expect), or that do not begin their
        read are parsed every time.
        """
        for data in [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ]:
            self.learn_request(data)
        self.assertEqual(self.module._memos, {(RequestParser, (65536, 8192, 100)): {}})

    def test_empty_lines_first(self) -> None:
        """
        A read starting with empty lines (which llhttp skips) is not
        remembered under its first blank line, nor replayed from it.
        """
        self.learn_request(b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        parser, sink = request_parser()
        parser.feed(b"\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(sink.events, [("head", b"GET", b"/y"), ("end",)])

    def test_after_connection_close(self) -> None:
        """
        After a request that ends the connection, llhttp refuses what
        follows: a remembered head is not replayed past it.
        """
        self.learn_request(GET)
        parser, sink = request_parser()
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertRaises(BadRequest, parser.feed, GET)
        self.assertEqual(len(sink.heads), 1)

    def test_connection_close_replayed(self) -> None:
        """
        A request that ends the connection is replayed too, and what
        follows it is treated as llhttp treats it: empty lines ignored,
        anything else refused with llhttp's own words.
        """
        close = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        parser, sink = request_parser()
        parser.feed(close)
        parser.feed(b"\r\n")
        llhttp = self.assertRaises(BadRequest, parser.feed, b"\r\nGET")
        request_parser()[0].feed(close)
        parser, sink = self.replayed_request(close)
        self.assertFalse(sink.heads[0].keep_alive)
        self.assertEqual(sink.kinds(), ["head", "end"])
        parser.feed(b"\r\n\r\n")
        error = self.assertRaises(BadRequest, parser.feed, b"\r\nGET")
        self.assertEqual((error.status, error.message), (llhttp.status, llhttp.message))
        # in the same read as the replayed head
        parser, sink = request_parser()
        parser._parser = NoLlhttp()
        error = self.assertRaises(BadRequest, parser.feed, close + GET)
        self.assertEqual(error.message, llhttp.message)
        self.assertEqual(sink.kinds(), ["head", "end"])
        # HTTP/1.0 without keep-alive
        self.learn_request(b"GET / HTTP/1.0\r\n\r\n")
        parser, sink = self.replayed_request(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(sink.heads[0].version, b"1.0")
        self.assertRaises(BadRequest, parser.feed, b"GET / HTTP/1.0\r\n\r\n")

    def test_close_after_body(self) -> None:
        """
        After a request with Connection: close whose body spanned reads,
        what follows is refused too.
        """
        parser, sink = request_parser()
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 4\r\n\r\nab")
        parser.feed(b"cd")
        self.assertEqual(sink.body(), b"abcd")
        self.assertRaises(BadRequest, parser.feed, GET)

    def test_limits_have_their_own_memo(self) -> None:
        """
        A head accepted under generous limits is still refused by a parser
        with smaller ones.
        """
        self.learn_request(GET)
        parser, _ = request_parser(max_header_count=1)
        error = self.assertRaises(BadRequest, parser.feed, GET)
        self.assertEqual(error.status, 431)

    def test_subclass_has_its_own_memo(self) -> None:
        """
        A subclass (which may parse differently) never replays the heads
        its base class remembered.
        """
        self.learn_request(GET)
        seen = []

        class Counting(RequestParser):
            def on_url(self, url: bytes) -> None:
                seen.append(url)
                RequestParser.on_url(self, url)

        Counting(RecordingSink()).feed(GET)
        self.assertEqual(seen, [b"/memo"])

    def test_bounded(self) -> None:
        """
        A full memo starts over.
        """
        self.patch(self.module, "MEMO_ENTRIES", 2)
        sizes = []
        for i in range(5):
            self.learn_request(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            (memo,) = self.module._memos.values()
            sizes.append(len([key for key in memo if key is not None]))
        self.assertEqual(sizes, [1, 2, 1, 2, 1])

    def test_seen_twice(self) -> None:
        """
        A head is remembered the second time it is seen, not the first:
        traffic that never repeats builds no entries.
        """
        for i in range(100):
            request_parser()[0].feed(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        (memo,) = self.module._memos.values()
        self.assertEqual([key for key in memo if key is not None], [])
        request_parser()[0].feed(b"GET /7 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual([key for key in memo if key is not None], [b"GET /7 HTTP/1.1\r\nHost: a\r\n\r\n"])

    def test_pause_after_misses(self) -> None:
        """
        A connection whose heads keep being new stops looking them up for
        MISS_PAUSE reads, then looks again.
        """
        self.learn_request(GET)
        parser, sink = request_parser()
        for i in range(self.module.MISS_STREAK):
            parser.feed(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        self.assertEqual(parser._pause, self.module.MISS_PAUSE)
        real = parser._parser
        for _ in range(self.module.MISS_PAUSE):
            # llhttp parses: a remembered head is not looked up meanwhile
            parser._parser = real
            parser.feed(GET)
        self.assertEqual(parser._pause, 0)
        parser._parser = NoLlhttp()
        parser.feed(GET)
        self.assertEqual(len(sink.heads), self.module.MISS_STREAK + self.module.MISS_PAUSE + 1)

    def test_response_pause_after_misses(self) -> None:
        """
        The same for responses on an upstream connection.
        """
        self.learn_response(OK + b"hello")
        parser, sink = response_parser()
        for i in range(self.module.MISS_STREAK):
            parser.expect(False)
            parser.feed(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % i)
        self.assertEqual(parser._pause, self.module.MISS_PAUSE)
        for _ in range(self.module.MISS_PAUSE):
            parser.expect(False)
            parser.feed(OK + b"hello")
        parser.expect(False)
        parser._parser = NoLlhttp()
        parser.feed(OK + b"hello")
        self.assertEqual(len(sink.responses), self.module.MISS_STREAK + self.module.MISS_PAUSE + 1)

    def replayed_response(self, *reads: bytes, no_body: bool = False) -> Tuple[ResponseParser, RecordingSink]:
        parser, sink = response_parser(no_body)
        real, parser._parser = parser._parser, NoLlhttp()
        for data in reads:
            parser.feed(data)
            parser.hand_over()
        parser._parser = real
        return parser, sink

    def test_response_replayed(self) -> None:
        """
        A keep-alive response with a Content-Length body, seen once, is
        reported the second time without llhttp: the same head, fresh
        lists, its body and end.
        """
        response_parser()[0].feed(OK + b"hello")
        first, sink1 = response_parser()
        first.feed(OK + b"hello")
        parser, sink2 = self.replayed_response(OK + b"hello")
        self.assertEqual(sink1.events, sink2.events)
        self.assertEqual(sink2.events, [("head", 200), ("body", b"hello"), ("end",)])
        one, two = sink1.responses[0], sink2.responses[0]
        for name in ResponseHead.__slots__:
            if name != "served":
                self.assertEqual(getattr(one, name), getattr(two, name), name)
        self.assertIsNone(one.served)
        self.assertEqual(two.served[:2], (tuple(one.headers), one.tokens))
        self.assertEqual(two.tokens, {b"keep-alive", b"x-hop"})
        self.assertIsNot(one.headers, two.headers)
        self.assertIsNot(one.lnames, two.lnames)
        self.assertTrue(parser.done)
        self.assertFalse(parser.extra)

    def test_response_body_over_reads(self) -> None:
        """
        A replayed head whose body continues in later reads: the rest goes
        past llhttp as usual, and the next response is parsed afresh.
        """
        self.learn_response(OK + b"hello")
        parser, sink = self.replayed_response(OK + b"he", b"l", b"lo")
        self.assertEqual(sink.body(), b"hello")
        self.assertEqual(sink.kinds()[-1], "end")
        self.assertTrue(parser.done)
        parser.expect(False)
        parser.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual([r.status for r in sink.responses], [200, 204])

    def test_response_head_alone(self) -> None:
        """
        A replayed head with none of its body in the read.
        """
        self.learn_response(OK)
        parser, sink = self.replayed_response(OK, b"hello")
        self.assertEqual(sink.events, [("head", 200), ("body", b"hello"), ("end",)])

    def test_response_extra_bytes(self) -> None:
        """
        Bytes after a replayed response mark the connection unusable.
        """
        self.learn_response(OK + b"hello")
        parser, sink = self.replayed_response(OK + b"helloHTTP/1.1 200 OK\r\n")
        self.assertEqual(sink.body(), b"hello")
        self.assertTrue(parser.done)
        self.assertTrue(parser.extra)

    def test_empty_response_body(self) -> None:
        """
        Content-Length: 0 is replayed as a head and an end.
        """
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        self.learn_response(data)
        parser, sink = self.replayed_response(data)
        self.assertEqual(sink.events, [("head", 200), ("end",)])
        self.assertTrue(parser.done)

    def test_responses_not_remembered(self) -> None:
        """
        Responses without a Content-Length body, ending the connection,
        switching protocols, interim, to HEAD, or not at the start of
        their read are parsed every time.
        """
        for data, no_body in [
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
            (b"HTTP/1.1 204 No Content\r\n\r\n", False),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", False),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", False),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True),
            (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", False),
            (b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        ]:
            parser = response_parser(no_body)[0]
            try:
                parser.feed(data)
            except Exception:
                pass
        self.assertEqual(self.module._memos, {(ResponseParser, (65536, 8192, 100)): {}})

    def test_interim_then_final(self) -> None:
        """
        A 100 Continue and the final response in one read: the final head
        is not remembered under the interim one's bytes; alone in a later
        read it is.
        """
        interim = b"HTTP/1.1 100 Continue\r\n\r\n"
        parser, sink = response_parser()
        parser.feed(interim + OK + b"hello")
        self.assertEqual(sink.events, [("head", 200), ("body", b"hello"), ("end",)])
        self.assertEqual(self.module._memos, {(ResponseParser, (65536, 8192, 100)): {}})
        for _ in range(2):
            parser, sink = response_parser()
            parser.feed(interim)
            parser.feed(OK + b"hello")
        _, sink = self.replayed_response(OK + b"hello")
        self.assertEqual(sink.events, [("head", 200), ("body", b"hello"), ("end",)])

    def test_response_limits(self) -> None:
        """
        A response head remembered under generous limits is still refused
        by a parser with smaller ones.
        """
        self.learn_response(OK + b"hello")
        parser, _ = response_parser(max_header_count=2)
        self.assertRaises(BadResponse, parser.feed, OK + b"hello")
