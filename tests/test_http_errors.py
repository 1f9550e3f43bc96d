"""
Tests for L{twisted_proxy.http.errors}: the responses the proxy writes
itself are complete, short HTTP/1.1 messages.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.http.errors import REASONS, error_response, reason


def split(response: bytes) -> Tuple[bytes, List[Tuple[bytes, bytes]], bytes]:
    """
    The status line, the header fields and the body of C{response}.
    """
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        raise AssertionError(f"no end of head in {response!r}")
    status_line, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b": ")
        if not colon:
            raise AssertionError(f"malformed header line {line!r}")
        headers.append((name, value))
    return status_line, headers, body


def header_map(headers: List[Tuple[bytes, bytes]]) -> Dict[bytes, List[bytes]]:
    found: Dict[bytes, List[bytes]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    return found


class ReasonTests(SynchronousTestCase):
    """
    L{reason}: the reason phrase of a status code.
    """

    def test_known(self) -> None:
        """
        The statuses the proxy answers with have their standard phrases.
        """
        self.assertEqual(reason(200), b"OK")
        self.assertEqual(reason(403), b"Forbidden")
        self.assertEqual(reason(413), b"Content Too Large")
        self.assertEqual(reason(502), b"Bad Gateway")
        self.assertEqual(reason(504), b"Gateway Timeout")

    def test_every_status_of_the_design(self) -> None:
        """
        Every status the design maps failures to has a phrase of its own.
        """
        for status in (308, 400, 401, 403, 404, 407, 408, 413, 429, 431, 500, 502, 503, 504):
            self.assertIn(status, REASONS)
            self.assertNotEqual(reason(status), b"Unknown", status)

    def test_unknown(self) -> None:
        """
        A status without a known phrase gets C{Unknown}.
        """
        self.assertEqual(reason(599), b"Unknown")
        self.assertEqual(reason(299), b"Unknown")


class ErrorResponseTests(SynchronousTestCase):
    """
    L{error_response}: a whole response, head and body.
    """

    def test_status_line(self) -> None:
        """
        The response starts with an HTTP/1.1 status line naming the status
        and its phrase.
        """
        status_line, _, _ = split(error_response(502, "cannot connect"))
        self.assertEqual(status_line, b"HTTP/1.1 502 Bad Gateway")

    def test_body(self) -> None:
        """
        The body is the status line's code and phrase, then the message, one
        line each, as UTF-8 plain text that is never stored by caches.
        """
        _, headers, body = split(error_response(403, "blocked by office-hours"))
        self.assertEqual(body, b"403 Forbidden\nblocked by office-hours\n")
        found = header_map(headers)
        self.assertEqual(found[b"content-type"], [b"text/plain; charset=utf-8"])
        self.assertEqual(found[b"cache-control"], [b"no-store"])

    def test_empty_message(self) -> None:
        """
        Without a message the body is the status line alone.
        """
        _, _, body = split(error_response(404, ""))
        self.assertEqual(body, b"404 Not Found\n")

    def test_content_length_matches_body(self) -> None:
        """
        C{Content-Length} is the body's length in bytes, including for a
        message with non-ASCII characters.
        """
        for message in ("", "short", "x" * 1000, "grüß dich ✓"):
            _, headers, body = split(error_response(400, message))
            [length] = header_map(headers)[b"content-length"]
            self.assertEqual(int(length), len(body), message)
        _, _, body = split(error_response(400, "grüß"))
        self.assertIn("grüß".encode("utf-8"), body)

    def test_unencodable_message(self) -> None:
        """
        A message that is not valid Unicode (a lone surrogate) still makes
        a response whose length is right.
        """
        _, headers, body = split(error_response(400, "bad \udcff byte"))
        [length] = header_map(headers)[b"content-length"]
        self.assertEqual(int(length), len(body))

    def test_keep_alive_by_default(self) -> None:
        """
        Without C{close} the response does not end the connection.
        """
        _, headers, _ = split(error_response(404, "no route"))
        self.assertNotIn(b"connection", header_map(headers))

    def test_close(self) -> None:
        """
        C{close} adds C{Connection: close}, once.
        """
        _, headers, _ = split(error_response(400, "bad request", close=True))
        self.assertEqual(header_map(headers)[b"connection"], [b"close"])

    def test_extra_headers(self) -> None:
        """
        Extra headers are added as given, in order, after the standard ones
        and before C{Connection}.
        """
        extra = [(b"Retry-After", b"5"), (b"WWW-Authenticate", b'Basic realm="x"')]
        _, headers, _ = split(error_response(503, "down", close=True, headers=extra))
        names = [name for name, _ in headers]
        self.assertEqual(headers[-3:-1], extra)
        self.assertEqual(names[-1], b"Connection")
        self.assertEqual(header_map(headers)[b"retry-after"], [b"5"])

    def test_extra_headers_iterable(self) -> None:
        """
        The extra headers may be any iterable of pairs, a generator too.
        """
        pairs = ((name, b"1") for name in (b"X-A", b"X-B"))
        _, headers, _ = split(error_response(429, "slow down", headers=pairs))
        found = header_map(headers)
        self.assertEqual((found[b"x-a"], found[b"x-b"]), ([b"1"], [b"1"]))

    def test_head_only(self) -> None:
        """
        For a HEAD request only the head is written; its C{Content-Length}
        still announces the body a GET would have had.
        """
        full = error_response(404, "no route to /x", close=True)
        head = error_response(404, "no route to /x", close=True, head_only=True)
        self.assertTrue(head.endswith(b"\r\n\r\n"))
        self.assertEqual(head, full[: len(head)])
        _, headers, body = split(head)
        self.assertEqual(body, b"")
        _, _, full_body = split(full)
        [length] = header_map(headers)[b"content-length"]
        self.assertEqual(int(length), len(full_body))

    def test_unknown_status(self) -> None:
        """
        A status without a known phrase is still a well-formed response,
        with C{Unknown} as its phrase.
        """
        status_line, headers, body = split(error_response(599, "odd"))
        self.assertEqual(status_line, b"HTTP/1.1 599 Unknown")
        self.assertEqual(body, b"599 Unknown\nodd\n")
        [length] = header_map(headers)[b"content-length"]
        self.assertEqual(int(length), len(body))

    def test_parses(self) -> None:
        """
        The response is valid HTTP/1.1 for a strict parser (llhttp) and
        carries exactly the body its head announces.
        """
        import httptools

        events: Dict[str, object] = {"body": b""}

        class Sink:
            def on_body(self, data: bytes) -> None:
                events["body"] = events["body"] + data  # type: ignore[operator]

            def on_message_complete(self) -> None:
                events["complete"] = True

        parser = httptools.HttpResponseParser(Sink())
        parser.feed_data(error_response(431, "head too large", close=True))
        self.assertEqual(parser.get_status_code(), 431)
        self.assertTrue(events.get("complete"))
        self.assertEqual(events["body"], b"431 Request Header Fields Too Large\nhead too large\n")
