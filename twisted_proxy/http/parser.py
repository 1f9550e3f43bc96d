# -*- test-case-name: tests.test_http_parser -*-
"""
The adapter between httptools (llhttp) and the proxy.

llhttp is strict about request smuggling (it rejects CL+TE, duplicate or
signed Content-Length, bad chunk sizes, obs-fold, bare LF, NUL). This adapter
adds what llhttp accepts but a proxy must refuse (HTTP/1.1 without Host,
several Host headers, Transfer-Encoding in HTTP/1.0, versions other than 1.0
and 1.1), bounds heads (their size, the size of one field, the number of
fields), and for responses ends the message itself where llhttp cannot know
there is no body (HEAD, 2xx to CONNECT). A request's events reach the sink
only once llhttp has accepted the whole read they came in.
"""

from __future__ import annotations

import itertools

from typing import AbstractSet, Any, List, Optional, Tuple

from httptools import HttpRequestParser, HttpResponseParser  # type: ignore[attr-defined]
from httptools import HttpParserError, HttpParserUpgrade  # type: ignore[attr-defined]

from twisted_proxy.http.policy import UNKNOWN_TOKENS, VIA_PREFIX

Headers = List[Tuple[bytes, bytes]]


class BadRequest(Exception):
    """
    The client sent something the proxy will not accept; C{status} says what
    answer it gets (400, 431, 505, ...).
    """

    def __init__(self, status: int, message: str) -> None:
        Exception.__init__(self, status, message)
        self.status = status
        self.message = message


#: heads up to this size (bytes, through the blank line) are remembered
MEMO_HEAD_MAX = 4096
#: entries in one memo; a full memo starts over (an origin's Date changes
#: every second: old heads stop coming)
MEMO_ENTRIES = 256

#: a connection whose last heads were all new stops looking them up for a
#: while: so many in a row, then so many reads without looking (traffic
#: that never repeats pays for a lookup one read in nine)
MISS_STREAK = 8
MISS_PAUSE = 64
#: hashes of heads seen once, per memo (a head is remembered when it comes
#: again: see _admit); a full set starts over
SEEN_ENTRIES = 4096

_memos: dict = {}
#: where a memo keeps its set of heads seen once (not bytes: never a key
#: a read could look up)
_SEEN = None


def head_memo(kind: type, limits: Tuple[int, int, int]) -> dict:
    """
    The memo of the heads that parsers of class C{kind} parsed under
    C{limits} (head size, field size, field count): the exact bytes of a
    head that llhttp and these checks accepted, mapped to what they made
    of it. The same bytes parse the same way, so a head seen before (a
    client repeating its request on a keep-alive connection, an origin
    answering for the same resource within the same second) is not parsed
    again: its bytes are compared whole (one hash, in C) instead of going
    through llhttp's per-header callbacks and the checks below. Heads
    parsed under other limits, or by a subclass, have their own memo.
    Only heads that leave llhttp where it was are remembered: messages
    whose body llhttp need not see (a request without a body, whose end of
    the connection, if it asks for one, the parser then enforces itself; a
    keep-alive response with a Content-Length body, which
    L{ResponseParser.feed} takes past llhttp as it does after any first
    read), that switch no protocol, and that begin their read (so that the read's
    bytes up to the first blank line are exactly that head); and only the
    second time they are seen (L{_admit}). Traffic whose heads never
    repeat costs a lookup on some reads only (L{MISS_STREAK}): measured
    with callgrind, +2% instructions per request when every head is new,
    -42% when every head was seen before.
    """
    key = (kind, limits)
    memo = _memos.get(key)
    if memo is None:
        memo = _memos[key] = {}
    return memo


def _admit(memo: dict, key: bytes) -> bool:
    """
    Whether the head C{key} should be remembered now: the second time it
    is seen (a head that never comes again costs one hash in a set of
    numbers, not an entry).
    """
    seen = memo.get(_SEEN)
    if seen is None:
        seen = memo[_SEEN] = set()
    h = hash(key)
    if h in seen:
        seen.discard(h)
        return True
    if len(seen) >= SEEN_ENTRIES:
        seen.clear()
    seen.add(h)
    return False


def _missed(parser: Any) -> None:
    """
    A head that begins C{parser}'s read was not in the memo: after
    L{MISS_STREAK} in a row, the connection stops looking for
    L{MISS_PAUSE} reads.
    """
    parser._streak += 1
    if parser._streak >= MISS_STREAK:
        parser._streak = 0
        parser._pause = MISS_PAUSE


#: serialised forms kept per replayed head (by the serialiser's other inputs)
SERVED_VARIANTS = 8


def keep_served(heads: dict, key: tuple, data: bytes) -> None:
    """
    Keep C{data}, a replayed head serialised for the inputs C{key}, among
    its serialised forms C{heads} (the last item of its C{served}; at most
    L{SERVED_VARIANTS}). A replayed head is serialised from them only while
    nothing (a filter, the cache, the client-subject header) has changed
    it: its tokens are still the C{served} ones and its headers equal the
    C{served} tuple (the callers check that inline: it is on every
    request's path).
    """
    if len(heads) < SERVED_VARIANTS:
        heads[key] = data


def _remember(memo: dict, key: bytes, entry: tuple) -> None:
    if len(memo) > MEMO_ENTRIES:
        seen = memo.get(_SEEN)
        memo.clear()
        if seen is not None:
            memo[_SEEN] = seen
    memo[key] = entry


class RequestHead:
    """
    A parsed request head.

    @ivar method: e.g. C{b"GET"}.
    @ivar target: the request target as received.
    @ivar version: C{b"1.0"} or C{b"1.1"}.
    @ivar headers: C{(name, value)} pairs as received.
    @ivar host: the C{Host} header value, or L{None}.
    @ivar keep_alive: the client wants the connection kept open.
    @ivar framing: 0 no body, 1 Content-Length, 2 chunked.
    @ivar expect_continue: the client sent C{Expect: 100-continue}.
    @ivar upgrade: the C{Upgrade} header value if the client asked to
        switch protocols (llhttp's view: C{Connection: upgrade} and
        C{Upgrade}), else L{None}.
    """

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "host",
        "keep_alive",
        "framing",
        "expect_continue",
        "upgrade",
        "tokens",
        "looped",
        "served",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: Headers,
        host: Optional[bytes] = None,
        keep_alive: bool = True,
        framing: int = 0,
        expect_continue: bool = False,
        upgrade: Optional[bytes] = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.framing = framing
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        #: options named in Connection headers (None: no such header; set
        #: by the parser, unknown for a head made by hand)
        self.tokens: Any = UNKNOWN_TOKENS
        #: the Via value that carries a mark of this process, if any (the
        #: policy stage looks for its listener's own mark in it)
        self.looped: Optional[bytes] = None
        #: for a head replayed from the parser's memo: C{(headers, tokens,
        #: heads)}, the headers and tokens as parsed and the heads already
        #: serialised from them for upstreams, by the serialiser's other
        #: inputs (see UpstreamLeg.upstream_ready); None otherwise
        self.served: Optional[Tuple[tuple, Any, dict]] = None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version.decode()}>"


class RequestParser:
    """
    Feeds bytes from a client to llhttp and reports whole heads, body
    pieces and ends to a sink with the methods C{request_head(head)},
    C{request_body(data)} and C{request_end()}.

    What one read produces reaches the sink only once llhttp has accepted
    the whole read: if it rejects it, only the messages that completed
    before the fault are reported, so nothing of a malformed request (not
    even a head that preceded a bad chunk) is ever acted on.

    L{feed} raises L{BadRequest} for anything the client must be refused
    for, and returns the bytes that follow a CONNECT or Upgrade request
    head (which are not HTTP) or L{None}.

    @ivar max_head_size: bytes of one head (431 beyond).
    @ivar max_field_size: bytes of one header field, name and value (431
        beyond).
    @ivar max_header_count: header fields in one head (431 beyond).
    """

    def __init__(
        self,
        sink: Any,
        max_head_size: int = 32768,
        max_field_size: int = 8192,
        max_header_count: int = 100,
    ) -> None:
        self.sink = sink
        self.max_head_size = max_head_size
        self.max_field_size = max_field_size
        self.max_header_count = max_header_count
        #: a read up to this size holds no head and no field over the limits
        self.small_read = min(max_head_size, max_field_size)
        #: llhttp's parser, made when a read needs it (a head replayed
        #: from the memo does not: see feed)
        self._parser: Any = None
        self._url: List[bytes] = []
        self._headers: Headers = []
        #: where trailer fields go: counted and bounded, never reported
        self._trailers: Headers = []
        #: a chunked request's events in the current read, held for the
        #: sink until llhttp accepts the read (see feed): a RequestHead
        #: (request_head), bytes (request_body), None (request_end)
        self._events: List[Any] = []
        self._holding = False
        #: inside a chunked body: each read of it is held too
        self._chunked = False
        #: how many of _events belong to messages complete in this read
        self._complete = 0
        self.in_head = False
        self._pending = 0
        self._ended = False
        #: the size of the read being parsed
        self._size = 0
        #: Content-Length body bytes still to come past llhttp (see feed)
        self.remaining = 0
        self._length = 0
        self._memo = head_memo(self.__class__, (max_head_size, max_field_size, max_header_count))
        #: the bytes of the head that begins this read, while llhttp parses
        #: it (remembered when it completes, if it may be)
        self._memo_key: Optional[bytes] = None
        #: heads in a row not found in the memo, and reads left during
        #: which this connection does not look (see MISS_STREAK)
        self._streak = 0
        self._pause = 0
        #: the current message keeps the connection open
        self._keep_alive = True
        #: a message that ends the connection has ended: nothing but empty
        #: lines may follow (what llhttp would refuse, refused here for a
        #: replayed message, and for the reads after any)
        self._closed = False

    def reset(self) -> None:
        """
        Start over on a fresh parser (after an upgrade that did not happen).
        """
        self._parser = None
        self._chunked = False
        self._closed = False
        self.in_head = False
        self._pending = 0
        self.remaining = 0
        self._length = 0

    def close(self) -> None:
        """
        The connection is gone: nothing more is fed. llhttp's parser (whose
        callbacks refer back to this one) and the sink are let go, so that
        these objects are freed with the connection instead of waiting for
        the garbage collector.
        """
        self._parser = None
        self.sink = None

    def feed(self, data: bytes) -> Optional[bytes]:
        remaining = self.remaining
        if remaining > 0:
            # the rest of a Content-Length body: nothing in it for llhttp to
            # check, so it goes to the sink as is (no copy, no callback)
            size = len(data)
            if size < remaining:
                self.remaining = remaining - size
                self.sink.request_body(data)
                return None
            self.remaining = 0
            if size == remaining:
                body, data = data, b""
            else:
                body, data = data[:remaining], data[remaining:]
            self.sink.request_body(body)
            # llhttp still counts on that body: the next request gets a
            # fresh parser
            self._parser = None
            self._closed = not self._keep_alive
            self.sink.request_end()
            if not data:
                return None
        if self._closed:
            _after_close(data)
            return None
        key = None
        if self._pause:
            # (this connection's heads have not been seen before lately)
            self._pause -= 1
        elif not self.in_head and not self._chunked:
            # at a message boundary: a head seen before is not parsed again
            while True:
                end = data.find(b"\r\n\r\n") + 4
                if end < 8 or end > MEMO_HEAD_MAX or not 65 <= data[0] <= 90:
                    # (llhttp skips empty lines before a request line: only
                    # a read that starts with the method is its head's key)
                    break
                key = data if end == len(data) else data[:end]
                entry = self._memo.get(key)
                if entry is None:
                    _missed(self)
                    break
                self._streak = 0
                key = None
                self._replay(entry)
                if end == len(data):
                    return None
                data = data[end:]
                if self._closed:
                    _after_close(data)
                    return None
                if self.in_head or self.remaining or self._chunked:
                    # (the sink fed or reset the parser meanwhile)
                    break
        self._memo_key = key
        self._ended = False
        if self._chunked:
            # more of a chunked body: held until the read is accepted
            self._holding = True
            self._complete = 0
        # a complete head inside one read larger than a limit is measured
        # when it completes (on_headers_complete); smaller reads are
        # bounded below
        self._size = len(data)
        try:
            parser = self._parser
            if parser is None:
                parser = self._parser = HttpRequestParser(self)
            parser.feed_data(data)
        except HttpParserUpgrade as e:
            # the upgrade request is complete: its head and end go out
            if self._holding:
                self._deliver(-1)
            offset = e.args[0]
            return data[offset:]
        except HttpParserError as e:
            # of what was held, only the messages complete before the fault
            # go to the sink
            if self._holding:
                self._deliver(self._complete)
            cause = e.__context__
            if cause is not None:
                # raised by a callback: a refusal (BadRequest), or a bug of
                # ours that must surface as itself, never as a 400
                raise cause
            raise BadRequest(400, _describe(e)) from None
        if self.in_head:
            # a head still incomplete after this read: bound its size here,
            # since llhttp buffers a partial header line without telling us
            if self._ended:
                # it began after an earlier message in this read: only
                # what was parsed of it is known to be its own
                self._pending = self._measure()
            else:
                self._pending += len(data)
            if self._pending > self.max_head_size:
                # everything before it was complete
                if self._holding:
                    self._deliver(-1)
                raise BadRequest(431, "request head too large")
        elif self._length > 0:
            # this read ended inside a Content-Length body
            self.remaining = self._length
            self._length = 0
        if self._holding:
            self._deliver(-1)
        return None

    def _replay(self, entry: tuple) -> None:
        """
        Report a remembered head (a request without a body) as llhttp's
        callbacks would.
        """
        method, target, version, headers, host, keep_alive, tokens, looped, served = entry
        head = RequestHead(method, target, version, list(headers), host, keep_alive, 0, False, None)
        head.tokens = tokens
        head.served = served
        if looped is not None:
            head.looped = looped
        self._keep_alive = keep_alive
        self._closed = not keep_alive
        sink = self.sink
        sink.request_head(head)
        sink.request_end()

    def _deliver(self, count: int) -> None:
        """
        Hand the events held in this read to the sink, in order: the first
        C{count} of them, or all for C{-1}; stop holding.
        """
        self._holding = False
        events = self._events
        if not events:
            return
        # a fresh list first: the sink may feed again (or raise)
        self._events = []
        if count >= 0:
            del events[count:]
        sink = self.sink
        for event in events:
            if event is None:
                sink.request_end()
            elif event.__class__ is bytes:
                sink.request_body(event)
            else:
                sink.request_head(event)

    # llhttp callbacks

    def _measure(self) -> int:
        """
        The size of the head parsed so far.
        """
        size = 0
        for piece in self._url:
            size += len(piece)
        for name, value in self._headers:
            size += len(name) + len(value) + 4
        return size

    def on_message_begin(self) -> None:
        self._url = []
        self._headers = []
        self.in_head = True
        self._pending = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # bounded when the head (or the trailer section) is complete: a
        # field can only be too large in a read larger than the limit (or
        # in a head spread over reads): see on_headers_complete
        self._headers.append((name, value))

    def _check_fields(self, fields: Headers, sizes: bool) -> None:
        """
        431 for more than C{max_header_count} fields or (when C{sizes} may
        be over) one field (name and value) over C{max_field_size} bytes.
        """
        if len(fields) > self.max_header_count:
            raise BadRequest(431, "too many header fields")
        if sizes:
            limit = self.max_field_size
            for name, value in fields:
                if len(name) + len(value) > limit:
                    raise BadRequest(431, "header field too large")

    def on_headers_complete(self) -> None:
        self.in_head = False
        # (only the first head of a read can be the one the key is of)
        key, self._memo_key = self._memo_key, None
        size = self._size
        if self._pending:
            # the head began in an earlier read: any of its fields may be long
            self._pending = 0
            self._check_fields(self._headers, True)
        elif len(self._headers) > self.max_header_count or (
            size > self.small_read
            and len(b"".join(_flat(self._headers))) + len(b"".join(self._url)) + 4 * len(self._headers)
            > self.small_read
        ):
            # (the sum runs in C: a large read is mostly a body)
            if size > self.max_head_size and self._measure() > self.max_head_size:
                raise BadRequest(431, "request head too large")
            self._check_fields(self._headers, size > self.max_field_size)
        parser = self._parser
        version = parser.get_http_version()
        if version == "1.1":
            bversion = b"1.1"
        elif version == "1.0":
            bversion = b"1.0"
        else:
            raise BadRequest(505, f"HTTP/{version} is not supported")
        headers = self._headers
        # trailer fields (after a chunked body) are bounded like headers
        # but never join the head
        self._headers = self._trailers  # kept empty (on_message_complete)
        lnames = [name.lower() for name, _ in headers]
        hosts = lnames.count(b"host")
        if hosts != 1:
            if hosts > 1:
                raise BadRequest(400, "several Host headers")
            if bversion == b"1.1":
                raise BadRequest(400, "HTTP/1.1 request without Host")
            host = None
        else:
            host = headers[lnames.index(b"host")][1]
        framing = 0
        expect = False
        upgrade = None
        tokens = None
        looped = None
        if not _SPECIAL_REQUEST_NAMES.isdisjoint(lnames):
            for i, lname in enumerate(lnames):
                if lname not in _SPECIAL_REQUEST_NAMES:
                    continue
                value = headers[i][1]
                if lname == b"content-length":
                    if framing == 0:
                        framing = 1
                elif lname == b"transfer-encoding":
                    if bversion == b"1.0":
                        raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
                    if value.strip().lower() != b"chunked":
                        # the body is relayed re-chunked: any other coding
                        # would be lost on the way (RFC 9112 section 6.1)
                        raise BadRequest(501, "only chunked transfer coding is supported")
                    framing = 2
                elif lname == b"expect":
                    if value.strip().lower() == b"100-continue":
                        expect = True
                    else:
                        raise BadRequest(417, "only 100-continue is expected")
                elif lname == b"upgrade":
                    upgrade = value
                elif lname == b"via":
                    if VIA_PREFIX in value:
                        looped = value
                else:  # connection, proxy-connection
                    if tokens is None:
                        tokens = set()
                    for token in value.split(b","):
                        token = token.strip().lower()
                        if token:
                            tokens.add(token)
            if framing == 1 and _content_length_is_zero(headers):
                framing = 0
        upgrading = parser.should_upgrade()
        if not upgrading:
            upgrade = None
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        if framing == 1 and not upgrading:
            self._length = int(headers[lnames.index(b"content-length")][1])
        keep_alive = parser.should_keep_alive()
        method = parser.get_method()
        head = RequestHead(
            method,
            url,
            bversion,
            headers,
            host,
            keep_alive,
            framing,
            expect,
            upgrade,
        )
        frozen = None if tokens is None else frozenset(tokens)
        head.tokens = frozen
        if looped is not None:
            head.looped = looped
        self._keep_alive = keep_alive
        if (
            key is not None
            and framing == 0
            and not upgrading
            and not expect
            and not self._holding
            and _admit(self._memo, key)
        ):
            # (a head with a body, or one that switches protocols, goes on
            # through llhttp: its state must follow)
            pristine = tuple(headers)
            _remember(
                self._memo,
                key,
                (method, url, bversion, pristine, host, keep_alive, frozen, looped, (pristine, frozen, {})),
            )
        if framing == 2:
            # a chunked body can be malformed: this request (and what
            # follows it in this read) waits until llhttp has accepted the
            # whole read, so that the origin never sees a request whose
            # bytes in hand are bad. Other bodies cannot be malformed.
            self._chunked = True
            if not self._holding:
                self._holding = True
                self._complete = 0
        if self._holding:
            self._events.append(head)
        else:
            self.sink.request_head(head)

    def on_body(self, data: bytes) -> None:
        self._length -= len(data)
        if self._holding:
            self._events.append(data)
        else:
            self.sink.request_body(data)

    def on_message_complete(self) -> None:
        if self._headers:
            # trailer fields: bounded like a head's, never reported
            self._check_fields(self._headers, True)
            del self._headers[:]
        self._ended = True
        self._length = 0
        self._chunked = False
        self._closed = not self._keep_alive
        if self._holding:
            events = self._events
            events.append(None)
            self._complete = len(events)
        else:
            self.sink.request_end()


_flat = itertools.chain.from_iterable


def _after_close(data: bytes) -> None:
    """
    Bytes after a request that ends the connection: empty lines are
    ignored, anything else refused, as llhttp does.
    """
    if data.strip(b"\r\n"):
        raise BadRequest(400, "malformed request: Data after `Connection: close`")

#: Connection values that name no other header (the keep-alive and close
#: options are not header names: Keep-Alive is hop-by-hop anyway)
_PLAIN_CONNECTION = frozenset([b"keep-alive", b"Keep-Alive", b"close", b"Close"])

_SPECIAL_RESPONSE_NAMES = frozenset(
    [b"content-length", b"transfer-encoding", b"connection", b"proxy-connection"]
)

_SPECIAL_REQUEST_NAMES = frozenset(
    [
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        b"connection",
        b"proxy-connection",
        b"via",
    ]
)


def _content_length_is_zero(headers: Headers) -> bool:
    for name, value in headers:
        if name.lower() == b"content-length":
            return value.strip() == b"0"
    return False


def _describe(error: Exception) -> str:
    text = str(error) or error.__class__.__name__
    return "malformed request: " + text


class ResponseHead:
    """
    A parsed response head.
    """

    __slots__ = (
        "status",
        "reason",
        "version",
        "headers",
        "keep_alive",
        "framing",
        "lnames",
        "tokens",
        "served",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: Headers,
        keep_alive: bool,
        framing: int,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.framing = framing
        #: lower-cased names, parallel to headers (None: not computed)
        self.lnames: Optional[List[bytes]] = None
        #: the options named in Connection headers (None: none)
        self.tokens: Optional[AbstractSet[bytes]] = None
        #: for a head replayed from the memo: C{(headers, tokens, heads)},
        #: the headers and tokens as parsed and the heads already
        #: serialised from them for the client, by the serialiser's other
        #: inputs (see Exchange.response_head); None otherwise
        self.served: Optional[Tuple[tuple, Any, dict]] = None


class BadResponse(Exception):
    """
    The upstream sent something that is not a valid HTTP/1.x response.
    """


class ResponseParser:
    """
    Feeds bytes from an upstream to llhttp, reporting to a sink with
    C{response_head(head)}, C{response_body(data)}, C{response_end()}.

    1xx interim responses (other than 101) are swallowed. When the request
    was HEAD (C{no_body}) or the status has no body, the message ends with
    the head, whatever the headers announce.

    L{feed} returns the bytes after a 101 head (the upgraded protocol's
    first bytes) or L{None}; it raises L{BadResponse}, also for a head
    beyond C{max_head_size}, a header field beyond C{max_field_size} bytes
    or more than C{max_header_count} header fields.
    """

    def __init__(
        self,
        sink: Any,
        max_head_size: int = 32768,
        max_field_size: int = 8192,
        max_header_count: int = 100,
    ) -> None:
        self.sink = sink
        self.max_head_size = max_head_size
        self.max_field_size = max_field_size
        self.max_header_count = max_header_count
        #: a read up to this size holds no head and no field over the limits
        self.small_read = min(max_head_size, max_field_size)
        self._parser = HttpResponseParser(self)
        self.no_body = False
        self.done = False
        self.extra = False
        self.started = False
        self._headers: Headers = []
        #: where trailer fields go: counted and bounded, never reported
        self._trailers: Headers = []
        self._reason: List[bytes] = []
        self._interim = False
        self._in_head = False
        self._stale = False
        self._pending = 0
        self._ended = False
        #: the size of the read being parsed
        self._size = 0
        self.framing = 0
        #: Content-Length body bytes still to come once llhttp has handed
        #: over (0: llhttp parses what comes)
        self.remaining = 0
        self._length = 0
        self._memo = head_memo(self.__class__, (max_head_size, max_field_size, max_header_count))
        #: the bytes of the head that begins this read (see RequestParser)
        self._memo_key: Optional[bytes] = None
        self._streak = 0
        self._pause = 0

    def expect(self, no_body: bool) -> None:
        """
        Get ready for the response to a new request.
        """
        self.remaining = 0
        self._length = 0
        if self._stale:
            # llhttp still expects the body the previous head announced
            self._parser = HttpResponseParser(self)
            self._stale = False
        self.no_body = no_body
        self.done = False
        self.extra = False
        self.started = False

    def feed(self, data: bytes) -> Optional[bytes]:
        remaining = self.remaining
        if remaining > 0:
            # the rest of a Content-Length body: llhttp has nothing to check
            # in it, so it goes to the sink as is (no copy, no callback)
            size = len(data)
            if size <= remaining:
                self.remaining = remaining - size
                self.sink.response_body(data)
            else:
                self.remaining = 0
                self.sink.response_body(data[:remaining])
                self.extra = True  # bytes after the response: no reuse
            if self.remaining == 0:
                self.done = True
                self._stale = True
                self.sink.response_end()
            return None
        key = None
        if self.started or self.no_body:
            pass
        elif self._pause:
            # (this connection's heads have not been seen before lately)
            self._pause -= 1
        else:
            # a head seen before is not parsed again (see head_memo)
            end = data.find(b"\r\n\r\n") + 4
            if 8 <= end <= MEMO_HEAD_MAX and data[0] == 72:  # (b"H": no empty line first)
                key = data if end == len(data) else data[:end]
                entry = self._memo.get(key)
                if entry is not None:
                    self._streak = 0
                    self._replay(entry, data, end)
                    return None
                _missed(self)
        self._memo_key = key
        self._ended = False
        self._size = len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            return data[e.args[0]:]
        except HttpParserError as e:
            cause = e.__context__
            if cause is not None:
                # raised by a callback: an invalid response (BadResponse),
                # or a bug of ours that must surface as itself, never as a
                # 502 blamed on the upstream, nor swallowed
                raise cause
            if self.done:
                # bytes after a complete message (HEAD with a body...):
                # the connection cannot be reused, the response stands.
                self.extra = True
                return None
            raise BadResponse(str(e) or e.__class__.__name__) from None
        if self._in_head:
            if self._ended:
                # it began after an interim response in this read
                self._pending = self._measure()
            else:
                self._pending += len(data)
            if self._pending > self.max_head_size:
                raise BadResponse("response head too large")
        return None

    def _replay(self, entry: tuple, data: bytes, end: int) -> None:
        """
        Report a remembered head (a keep-alive response with a
        Content-Length body) and what follows it in C{data} as llhttp's
        callbacks would. llhttp is left where it was, at the start of a
        message.
        """
        status, reason, version, headers, length, lnames, tokens, served = entry
        self.started = True
        self.framing = 1
        head = ResponseHead(status, reason, version, list(headers), True, 1)
        head.lnames = list(lnames)
        head.tokens = tokens
        head.served = served
        self._length = length
        self.sink.response_head(head)
        size = len(data) - end
        extra = size > length
        if size and length:
            body = data[end:] if not extra else data[end : end + length]
            self._length = length - len(body)
            self.sink.response_body(body)
        if not self._length:
            self.done = True
            self.sink.response_end()
            if extra:
                self.extra = True

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True
            self._headers = []  # absorbs what follows; the head was handed on
            return
        self.started = True
        self.framing = 0
        self._headers = []
        self._reason = []
        self._pending = 0
        self._in_head = True

    def _measure(self) -> int:
        size = 0
        for piece in self._reason:
            size += len(piece)
        for name, value in self._headers:
            size += len(name) + len(value) + 4
        return size

    def on_status(self, reason: bytes) -> None:
        self._reason.append(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        # bounded when the head (or the trailer section) is complete (see
        # RequestParser.on_header)
        self._headers.append((name, value))

    def _check_fields(self, fields: Headers, sizes: bool) -> None:
        """
        An invalid response for more than C{max_header_count} fields or
        (when C{sizes} may be over) one field over C{max_field_size} bytes.
        """
        if len(fields) > self.max_header_count:
            raise BadResponse("too many response header fields")
        if sizes:
            limit = self.max_field_size
            for name, value in fields:
                if len(name) + len(value) > limit:
                    raise BadResponse("response header field too large")

    def on_headers_complete(self) -> None:
        if self.done:
            return
        self._in_head = False
        # (only the first head of a read can be the one the key is of)
        key, self._memo_key = self._memo_key, None
        size = self._size
        if self._pending:
            # the head began in an earlier read: any of its fields may be long
            self._check_fields(self._headers, True)
        elif len(self._headers) > self.max_header_count or (
            size > self.small_read
            and len(b"".join(_flat(self._headers))) + len(b"".join(self._reason)) + 4 * len(self._headers)
            > self.small_read
        ):
            # (the sum runs in C: a large read is mostly a body)
            if size > self.max_head_size and self._measure() > self.max_head_size:
                raise BadResponse("response head too large")
            self._check_fields(self._headers, size > self.max_field_size)
        parser = self._parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True
            return
        if status == 101 and not parser.should_upgrade():
            # llhttp would drop what follows the head: the upgraded
            # protocol's first bytes would be lost
            raise BadResponse("101 without Connection: upgrade")
        version = parser.get_http_version()
        bversion = b"1.1" if version == "1.1" else b"1.0"
        headers = self._headers
        # trailer fields (after a chunked body) are bounded like headers
        # but never join the head
        self._headers = self._trailers  # kept empty (on_message_complete)
        lnames = [name.lower() for name, _ in headers]
        # one hash per name (C), instead of a scan of the list per name
        special = _SPECIAL_RESPONSE_NAMES.intersection(lnames)
        framing = 3
        te = None
        tokens: Optional[set] = None
        if special:
            if b"content-length" in special:
                framing = 1
            if b"transfer-encoding" in special:
                for i, lname in enumerate(lnames):
                    if lname == b"transfer-encoding":
                        te = headers[i][1]
            if b"proxy-connection" in special or (
                b"connection" in special
                and (
                    lnames.count(b"connection") > 1
                    or headers[lnames.index(b"connection")][1] not in _PLAIN_CONNECTION
                )
            ):
                tokens = set()
                for i, lname in enumerate(lnames):
                    if lname == b"connection" or lname == b"proxy-connection":
                        value = headers[i][1]
                        if value in _PLAIN_CONNECTION:
                            # the usual "keep-alive" / "close": no header named
                            continue
                        for token in value.split(b","):
                            token = token.strip().lower()
                            if token:
                                tokens.add(token)
                if not tokens:
                    tokens = None
        if te is not None:
            # chunked only if it is the final coding (RFC 9112 §6.3);
            # otherwise llhttp reads the body until the connection closes
            last = te.rsplit(b",", 1)[-1].strip().lower()
            framing = 2 if last == b"chunked" else 3
        if self.no_body or status in (204, 304):
            framing = 0
        reason = self._reason[0] if len(self._reason) == 1 else b"".join(self._reason)
        self.framing = framing
        self._length = -1
        if framing == 1:
            value = headers[lnames.index(b"content-length")][1]
            self._length = int(value)  # llhttp accepted it: digits only
        keep_alive = parser.should_keep_alive()
        head = ResponseHead(status, reason, bversion, headers, keep_alive, framing)
        head.lnames = lnames
        frozen = None if tokens is None else frozenset(tokens)
        head.tokens = frozen
        if key is not None and framing == 1 and keep_alive and status != 101 and _admit(self._memo, key):
            pristine = tuple(headers)
            _remember(
                self._memo,
                key,
                (status, reason, bversion, pristine, self._length, tuple(lnames), frozen, (pristine, frozen, {})),
            )
        self.sink.response_head(head)
        if framing == 0 or status == 101:
            self.done = True
            self._stale = True
            if status != 101:
                self.sink.response_end()

    def framing_until_close(self) -> bool:
        """
        The current response's body ends when the connection closes.
        """
        return self.framing == 3 and not self._in_head

    def on_body(self, data: bytes) -> None:
        if self.done:
            self.extra = True
            return
        if self._length > 0:
            self._length -= len(data)
        self.sink.response_body(data)

    def hand_over(self) -> None:
        """
        After a read that ended inside a Content-Length body, take the rest
        of that body past llhttp (see L{feed}).
        """
        if self._length > 0 and not self.done and not self._in_head and self.started:
            self.remaining = self._length
            self._length = 0

    def on_message_complete(self) -> None:
        if self._headers and not self.done:
            # trailer fields: bounded like a head's, never reported
            self._check_fields(self._headers, True)
            del self._headers[:]
        self._ended = True
        if self._interim:
            self._interim = False
            self.started = False
            return
        if self.done:
            return
        self.done = True
        self.sink.response_end()
