# -*- test-case-name: tests.test_cache_origin -*-
"""
The cache as the engine's origin stage (C{ctx.origin}).

L{CacheOrigin} takes the place of the upstream origin on a listener that
has a cache (or routes that do) and wraps it. Filters have already run
(a denied request never reaches the cache). For each request:

- not cacheable here (a tunnel, an upgrade, another method than GET or
  HEAD, a body, C{Authorization}, a bypassed domain, a route with
  C{cache = false}): straight upstream (C{Cache-Status: NAME; fwd=bypass});
  an unsafe method that succeeds invalidates its URL (and same-origin
  C{Location}/C{Content-Location}), RFC 9111 §4.4;
- a stored response that may be used (L{rules.decide}): served from the
  store (L{serve}) at the client's pace (L{Pump}), with C{Age}, 304 to the
  client's own conditional request, 206/416 for a C{Range};
- stale and C{stale-while-revalidate} allows: served stale while one
  background revalidation (L{Revalidation}) refreshes it;
- stale otherwise: a conditional request upstream (L{Fill} with the stored
  validators); a 304 refreshes the stored headers and the stored body is
  served; a 5xx or a failure serves the stale one if C{stale-if-error}
  allows;
- not stored: one L{Fill} goes upstream and, when the response may be
  stored, writes it to the store while it streams to its client; the
  misses for the same key that come meanwhile wait on it (request
  collapsing) and read the same bytes as they arrive, each at its own pace;
  one that waits longer than C{lock_timeout} for the head goes upstream by
  itself. A fill that fails mid-body fails its readers (short body,
  connection closed); a partial body is never published.

The RFC decisions are in L{twisted_proxy.cache.rules} (pure), the bytes in
L{twisted_proxy.cache.store}.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_proxy.cache import rules
from twisted_proxy.cache.shared import SharedCache, normalize_url, tags_of
from twisted_proxy.cache.store import Entry, ReadFailed
from twisted_proxy.engine.timers import BODY
from twisted_proxy.flow import Gate
from twisted_proxy.http import policy
from twisted_proxy.http.parser import RequestHead, ResponseHead

log = Logger()

Headers = List[Tuple[bytes, bytes]]

_GET = b"GET"
_HEAD = b"HEAD"
#: what a request header means to a lookup (one dict lookup per field)
SLOW, AUTHORIZATION, CONDITIONAL, RANGE = 1, 2, 4, 8
_REQUEST_FLAGS = {
    b"cache-control": SLOW,
    b"pragma": SLOW,
    b"authorization": AUTHORIZATION,
    b"if-none-match": CONDITIONAL,
    b"if-modified-since": CONDITIONAL,
    b"if-match": CONDITIONAL,
    b"if-unmodified-since": CONDITIONAL,
    b"if-range": CONDITIONAL | RANGE,
    b"range": CONDITIONAL | RANGE,
}
#: flags not known yet (serve() looks)
UNKNOWN = -1
#: request header names that make a request conditional or partial
_CONDITIONALS = frozenset(name for name, flag in _REQUEST_FLAGS.items() if flag & CONDITIONAL)


def request_flags(headers: Headers) -> int:
    """
    What a request's fields mean to the cache (L{SLOW}, L{AUTHORIZATION},
    L{CONDITIONAL}, L{RANGE}): one dictionary lookup per field.
    """
    flags = 0
    get = _REQUEST_FLAGS.get
    for name, _ in headers:
        flags |= get(name.lower(), 0)
    return flags
#: response header names never stored (hop-by-hop, framing, our own)
_NOT_STORED = policy.HOP_BY_HOP | frozenset([b"content-length", b"cache-status", b"surrogate-control"])
#: stored fields a cache's answer replaces with its own
_NOT_SERVED = frozenset([b"age"])
#: the fields of a stored response a 304 to the client carries (RFC 9110 §15.4.5)
_NOT_MODIFIED_FIELDS = frozenset(
    [b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"]
)
#: the statuses after which stale-if-error may serve a stale response
_ERROR_STATUSES = frozenset([500, 502, 503, 504])
#: bytes a pump sends in one reactor turn before letting others run
PUMP_TURN = 256 * 1024
#: bytes asked of a reader at once
READ_SIZE = 65536


class View:
    """
    What a lookup needs of a stored entry, decoded once per entry.
    """

    __slots__ = (
        "entry",
        "status",
        "reason",
        "headers",
        "lnames",
        "request_time",
        "response_time",
        "initial_age",
        "fresh_until",
        "no_cache",
        "length",
        "rule_headers",
        "served",
        "served_lnames",
        "wire",
        "hit_status",
        "tail",
    )

    def __init__(self, entry: Entry) -> None:
        meta = entry.meta
        self.entry = entry
        self.status: int = meta["status"]
        self.reason: bytes = meta["reason"].encode("latin-1")
        self.headers: Headers = [
            (n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["headers"]
        ]
        self.lnames = [n.lower() for n, _ in self.headers]
        #: the stored fields a cached answer carries (not the stored Age)
        self.served = [h for h, ln in zip(self.headers, self.lnames) if ln not in _NOT_SERVED]
        self.served_lnames = [ln for ln in self.lnames if ln not in _NOT_SERVED]
        #: the whole-response head serialised for a listener and a variant
        #: (close, keep-alive), without its last lines (Age, Cache-Status)
        self.wire: dict = {}
        #: (ttl, cache name, Cache-Status value) of the last fresh hit
        self.hit_status: Optional[Tuple[int, bytes, bytes]] = None
        #: (age, Cache-Status value, the head's last lines) of the last
        #: whole response served from memory
        self.tail: Optional[Tuple[int, bytes, bytes]] = None
        self.request_time: float = meta["qt"]
        self.response_time: float = meta["rt"]
        self.initial_age = rules.initial_age(self.headers, self.request_time, self.response_time)
        #: the fields the RFC decisions read (a Surrogate-Control max-age
        #: stands in for Cache-Control and Expires)
        self.rule_headers = self.headers
        surrogate = meta.get("surrogate")
        if isinstance(surrogate, int):
            self.rule_headers = [
                (n, v) for (n, v), ln in zip(self.headers, self.lnames) if ln not in (b"cache-control", b"expires")
            ]
            self.rule_headers.append((b"Cache-Control", b"max-age=%d" % surrogate))
        lifetime = rules.freshness_lifetime(self.status, self.rule_headers, self.response_time)
        #: until when the plain lookup (no request directives) may use it
        self.fresh_until = self.response_time - self.initial_age + lifetime
        self.no_cache = "no-cache" in rules.cache_control(self.rule_headers)
        #: the body's length when known (an entry being written may not know)
        self.length: Optional[int] = meta.get("length")

    def age(self, now: float) -> float:
        # (rules.current_age, inline: once per hit)
        resident = now - self.response_time
        return self.initial_age + resident if resident > 0.0 else self.initial_age


def view_of(cache: SharedCache, entry: Entry) -> View:
    views = cache.views
    view = views.get(entry.key)
    if view is None or view.entry is not entry:
        view = views[entry.key] = View(entry)
        if len(views) > 2 * max(cache.store.entries, 1024):
            # entries evicted or replaced: drop the views that outlived them
            views.clear()
            views[entry.key] = view
    return view


def _add_header(response: ResponseHead, name: bytes, lname: bytes, value: bytes) -> None:
    response.headers.append((name, value))
    if response.lnames is not None:
        response.lnames.append(lname)


class StatusSink:
    """
    A response passed through unchanged but for its C{Cache-Status} (and,
    after an unsafe method, the invalidation it causes).
    """

    __slots__ = ("sink", "status", "invalidate")

    def __init__(self, sink: Any, status: bytes, invalidate: Any = None) -> None:
        self.sink = sink
        self.status = status
        self.invalidate = invalidate

    def response_head(self, response: ResponseHead) -> None:
        _add_header(response, b"Cache-Status", b"cache-status", self.status)
        if self.invalidate is not None:
            self.invalidate(response)
        self.sink.response_head(response)

    def response_body(self, data: bytes) -> None:
        self.sink.response_body(data)

    def response_end(self) -> None:
        self.sink.response_end()


class CacheOrigin:
    """
    The origin stage of a listener with a cache (see the module
    docstring).

    @param upstream: the origin it wraps
        (L{twisted_proxy.engine.upstream.UpstreamOrigin}).
    @param cache: the listener's cache, or L{None} when only some routes
        have one (a route's C{cache} attribute: L{None} as the listener,
        C{False} none, or a L{SharedCache}).
    """

    def __init__(self, upstream: Any, cache: Optional[SharedCache], clock: Any) -> None:
        self.upstream = upstream
        self.cache = cache
        self.clock = clock

    def fetch(self, ex: Any, sink: Any, owner: Any = None) -> None:
        target = ex.target
        cache = self.cache
        route = target.route
        if route is not None and route.cache is not None:
            cache = route.cache or None
        if cache is None:
            if self.cache is None:
                self.upstream.fetch(ex, sink, owner)
            else:
                # a route that says cache = false on a listener with one
                self.bypass(ex, sink, self.cache)
            return
        head = ex.head
        method = head.method
        if target.connect or head.upgrade is not None:
            self.upstream.fetch(ex, sink, owner)
            return
        if method != _GET and method != _HEAD:
            self.bypass(ex, sink, cache, method not in rules._SAFE_METHODS)
            return
        if head.framing != policy.NO_BODY or not cache.applies(target.host):
            self.bypass(ex, sink, cache)
            return
        self.lookup(ex, sink, cache)

    def bypass(self, ex: Any, sink: Any, cache: SharedCache, unsafe: bool = False) -> None:
        """
        Straight upstream, marked C{fwd=bypass}; after an unsafe method
        that succeeds, its URL and the same-origin C{Location} and
        C{Content-Location} are invalidated.
        """
        ex.cache = "bypass"
        cache.counters.bypass += 1
        invalidate = None
        if unsafe:
            url = cache.primary_key(ex.target)

            def invalidate_urls(response: ResponseHead) -> None:
                for u in rules.invalidated_urls(ex.head.method, response.status, url, response.headers):
                    primary = normalize_url(u)
                    if primary is not None:
                        cache.invalidate(primary)

            invalidate = invalidate_urls
        self.upstream.fetch(ex, StatusSink(sink, cache.bname + b"; fwd=bypass", invalidate))

    # lookups

    def lookup(self, ex: Any, sink: Any, cache: SharedCache) -> None:
        head = ex.head
        request_headers = head.headers
        primary = cache.primary_key(ex.target)
        key = cache.full_key(primary, request_headers)
        flags = request_flags(request_headers)
        slow = flags & SLOW
        authorization = flags & AUTHORIZATION
        entry = None if authorization else cache.store.get(key)
        now = self.clock.seconds()
        if entry is None:
            if slow and "only-if-cached" in rules.cache_control(request_headers):
                self.not_cached(ex, cache)
                return
            fwd = b"uri-miss" if primary not in cache.vary else b"vary-miss"
            if authorization:
                fwd = b"bypass"
            fill = cache.fills.get(key)
            if fill is not None and not authorization and not flags & CONDITIONAL:
                fill.wait(ex, sink)
                return
            Fill(self, cache, ex, sink, primary, key, fwd=fwd).start()
            return
        view = view_of(cache, entry)
        if not slow and not view.no_cache and now < view.fresh_until:
            # the usual hit: its Cache-Status changes once a second
            cache.counters.hits += 1
            ex.cache = "hit"
            ttl_s = int(view.fresh_until - now)
            memo = view.hit_status
            if memo is None or memo[0] != ttl_s or memo[1] is not cache.bname:
                memo = view.hit_status = (ttl_s, cache.bname, cache.bname + b"; hit; ttl=%d" % ttl_s)
            serve(ex, sink, cache, view, view.age(now), memo[2], flags=flags)
            return
        verdict = rules.decide(
            request_headers, view.status, view.rule_headers, view.request_time, view.response_time, now
        )
        action = verdict.action
        age = verdict.age
        ttl = verdict.ttl
        if action == rules.USE:
            cache.counters.hits += 1
            ex.cache = "hit"
            serve(ex, sink, cache, view, age, cache.bname + b"; hit; ttl=%d" % int(ttl), flags=flags)
        elif action == rules.USE_STALE:
            cache.counters.stale += 1
            ex.cache = "stale"
            serve(ex, sink, cache, view, age, cache.bname + b"; hit; ttl=%d" % int(ttl), flags=flags)
        elif action == rules.STALE_REVALIDATE:
            cache.counters.stale += 1
            ex.cache = "stale"
            if key not in cache.fills:
                revalidate_in_background(self, cache, ex, primary, key, view)
            serve(
                ex,
                sink,
                cache,
                view,
                age,
                cache.bname + b"; hit; ttl=%d; detail=stale-while-revalidate" % int(ttl),
            )
        else:
            if slow and "only-if-cached" in rules.cache_control(request_headers):
                self.not_cached(ex, cache)
                return
            fill = cache.fills.get(key)
            if fill is not None and not flags & CONDITIONAL:
                fill.wait(ex, sink)
                return
            fwd = b"request" if slow and _request_forces(request_headers) else b"stale"
            Fill(self, cache, ex, sink, primary, key, fwd=fwd, stale=view).start()

    def alone(self, ex: Any, sink: Any, cache: SharedCache, status: bytes) -> None:
        """
        Upstream without storing: a collapsed miss whose fill could not
        serve it (not storable, failed, or C{lock_timeout}).
        """
        ex.cache = "miss"
        cache.counters.misses += 1
        self.upstream.fetch(ex, StatusSink(sink, cache.bname + status))

    def not_cached(self, ex: Any, cache: SharedCache) -> None:
        """
        C{only-if-cached} and nothing usable stored: 504 (RFC 9111 §5.2.1.7).
        """
        ex.cache = "miss"
        cache.counters.misses += 1
        ex.respond(
            504,
            "not in the cache (only-if-cached)",
            "allow",
            "",
            ((b"Cache-Status", cache.bname + b"; fwd=miss; detail=only-if-cached"),),
        )


def _request_forces(headers: Headers) -> bool:
    """
    Whether the request itself asked to go to the origin (C{no-cache},
    C{max-age=0}, C{Pragma: no-cache}).
    """
    cc = rules.cache_control(headers)
    if "no-cache" in cc or cc.get("max-age") == "0":
        return True
    if not cc:
        return any(v.strip().lower() == b"no-cache" for n, v in headers if n.lower() == b"pragma")
    return False


# serving from the store


def serve(
    ex: Any,
    sink: Any,
    cache: SharedCache,
    view: View,
    age: float,
    status_value: bytes,
    entry: Optional[Entry] = None,
    flags: int = UNKNOWN,
    reader: Any = None,
) -> None:
    """
    Answer C{ex} from C{view}'s entry (or C{entry}, an entry still being
    written): a 304 to the client's own conditional request, 206/416 for
    a range of a complete entry, else the whole response; its body read at
    the client's pace (a small complete body at once).

    @param flags: what the request's fields are (L{CONDITIONAL},
        L{RANGE}), when the caller knows.
    """
    if entry is None:
        entry = view.entry
    head = ex.head
    method = head.method
    request_headers = head.headers
    if flags == UNKNOWN:
        flags = request_flags(request_headers)
    if sink is ex and view.status == 200 and not flags & CONDITIONAL and method == _GET:
        body = entry.memory_body()
        if body is not None and len(body) <= READ_SIZE:
            # the usual hit: a small body in memory, a head serialised once
            # per listener and variant
            # (Exchange.head_variant, inline)
            close = ex.close_after or ex.front.read_closed
            variant = (id(ex.ctx), close, head.version == b"1.0" and not close)
            prefix = view.wire.get(variant)
            if prefix is None:
                prefix = view.wire[variant] = _serialise(ex, view, len(body))
            age_s = int(age)
            tail = view.tail
            if tail is None or tail[0] != age_s or tail[1] is not status_value:
                tail = view.tail = (age_s, status_value, b"Age: %d\r\nCache-Status: %s\r\n\r\n" % (age_s, status_value))
            ex.whole_response(200, prefix + tail[2], body)
            return
    headers = list(view.served)
    lnames = list(view.served_lnames)
    status = view.status
    reason = view.reason
    complete = entry.complete
    size = entry.size if complete else view.length
    start = 0
    end: Optional[int] = None
    no_body = method == _HEAD or status in (204, 304) or 100 <= status < 200
    if complete and flags & CONDITIONAL and rules.not_modified(method, request_headers, view.headers):
        status, reason = 304, b"Not Modified"
        keep = [i for i, ln in enumerate(lnames) if ln in _NOT_MODIFIED_FIELDS]
        headers = [headers[i] for i in keep]
        lnames = [lnames[i] for i in keep]
        framing = policy.NO_BODY
        no_body = True
    else:
        found = None
        if complete and status == 200 and flags & RANGE:
            found = rules.byte_range(method, request_headers, view.headers, entry.size)
        if found == "unsatisfiable":
            status, reason = 416, b"Range Not Satisfiable"
            headers.append((b"Content-Range", b"bytes */%d" % entry.size))
            lnames.append(b"content-range")
            headers.append((b"Content-Length", b"0"))
            lnames.append(b"content-length")
            framing = policy.CONTENT_LENGTH
            no_body = True
        elif isinstance(found, tuple):
            first, last = found
            status, reason = 206, b"Partial Content"
            headers.append((b"Content-Range", b"bytes %d-%d/%d" % (first, last, entry.size)))
            lnames.append(b"content-range")
            headers.append((b"Content-Length", b"%d" % (last - first + 1)))
            lnames.append(b"content-length")
            start, end = first, last + 1
            framing = policy.NO_BODY if no_body else policy.CONTENT_LENGTH
        elif size is not None:
            if status not in (204, 304):
                headers.append((b"Content-Length", b"%d" % size))
                lnames.append(b"content-length")
            framing = policy.NO_BODY if no_body else policy.CONTENT_LENGTH
        else:
            framing = policy.NO_BODY if no_body else policy.CHUNKED
    headers.append((b"Age", b"%d" % int(age)))
    lnames.append(b"age")
    headers.append((b"Cache-Status", status_value))
    lnames.append(b"cache-status")
    response = ResponseHead(status, reason, b"1.1", headers, True, framing)
    response.lnames = lnames
    given = reader
    reader = None
    if not (no_body or framing == policy.NO_BODY):
        if given is not None and start == 0 and end is None:
            reader = given
            given = None
        else:
            try:
                # before the head: an entry evicted or failed meanwhile is
                # still a clean error here
                reader = entry.reader(start, end)
            except ReadFailed:
                if given is not None:
                    given.close()
                ex.upstream_failed(502, "the stored response is gone or its fill failed")
                return
    if given is not None:
        given.close()
    own_out = ex.out is None
    if own_out:
        ex.out = []
    remaining = reader.remaining if reader is not None else None
    if reader is not None and complete and remaining is not None and remaining <= READ_SIZE:
        # a small complete body: one read, one send with the head
        try:
            data = reader.read(READ_SIZE)
        except (ReadFailed, OSError) as e:
            reader.close()
            ex.out = None
            ex.upstream_failed(502, f"the stored body could not be read: {e}")
            return
        reader.close()
        sink.response_head(response)
        if data:
            sink.response_body(data)
        sink.response_end()
        ex.flush()
        ex.origin_done()
        return
    sink.response_head(response)
    if reader is None:
        sink.response_end()
        ex.flush()
        ex.origin_done()
        return
    Pump(ex, sink, reader, cache.clock).start()
    if own_out and ex.out is not None:
        ex.flush()


def _serialise(ex: Any, view: View, size: int) -> bytes:
    """
    The head of C{view}'s whole response as C{ex}'s listener sends it, up to
    (not with) its last lines: what L{Exchange.response_head} would write.
    """
    close, keep_alive_header = ex.head_variant()
    ctx = ex.ctx
    data = policy.response_head(
        view.status,
        view.reason,
        view.served + [(b"Content-Length", b"%d" % size)],
        policy.CONTENT_LENGTH,
        ctx.add_via,
        close,
        keep_alive_header,
        None,
        ctx.hide,
        view.served_lnames + [b"content-length"],
        None,
        ctx.skip,
    )
    return data[:-2]  # the blank line comes after Age and Cache-Status


class Pump:
    """
    Feeds a store reader's bytes to an exchange's sink as fast as the
    client takes them: the client's back-pressure pauses it (it is the
    gate of the front's relay while it runs), and it sends at most
    L{PUMP_TURN} bytes per reactor turn. An entry still being written
    wakes it as bytes arrive.
    """

    __slots__ = ("ex", "sink", "reader", "clock", "paused", "call", "closed")

    def __init__(self, ex: Any, sink: Any, reader: Any, clock: Any) -> None:
        self.ex = ex
        self.sink = sink
        self.reader = reader
        self.clock = clock
        self.paused = 0
        self.call: Any = None
        self.closed = False

    def start(self) -> None:
        ex = self.ex
        ex.front.relay.switch(self)
        ex.cleanup = _chain(ex.cleanup, self.close)
        self.reader.on_ready = self.wake
        self.run()

    # the gate interface (the front's relay)

    def pause(self, reason: int) -> None:
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused:
                self.wake()

    def wake(self) -> None:
        if self.call is None and not self.closed:
            self.call = self.clock.callLater(0, self.run)

    def run(self) -> None:
        self.call = None
        ex = self.ex
        if self.closed or ex.finished:
            self.close()
            return
        own_out = ex.out is None
        if own_out:
            ex.out = []
        budget = PUMP_TURN
        reader = self.reader
        sink = self.sink
        while not self.paused:
            try:
                data = reader.read(READ_SIZE)
            except ReadFailed:
                self.close()
                ex.flush()
                ex.upstream_failed(502, "the response being stored failed before its end")
                return
            except OSError as e:
                self.close()
                ex.flush()
                log.error("cache read failed: {error}", error=e)
                ex.upstream_failed(500, f"cache read failed: {e}")
                return
            if data is None:
                self.close()
                sink.response_end()
                ex.flush()
                ex.origin_done()
                return
            if not data:
                break  # the writer is behind: on_ready wakes us
            sink.response_body(data)
            budget -= len(data)
            if budget <= 0:
                self.wake()
                break
        if own_out:
            ex.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.call is not None:
            if self.call.active():
                self.call.cancel()
            self.call = None
        self.reader.on_ready = None
        self.reader.close()
        relay = self.ex.front.relay
        if relay.gate is self:
            relay.switch(None)


def _chain(first: Any, second: Any) -> Any:
    if first is None:
        return second

    def both() -> None:
        first()
        second()

    return both


# misses and revalidations


class Waiter:
    """
    A collapsed miss: an exchange waiting for a fill's response head.
    """

    __slots__ = ("fill", "ex", "sink", "timer")

    def __init__(self, fill: "Fill", ex: Any, sink: Any, timer: Any) -> None:
        self.fill = fill
        self.ex = ex
        self.sink = sink
        self.timer = timer

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        try:
            self.fill.waiters.remove(self)
        except ValueError:
            pass

    def timed_out(self) -> None:
        """
        The fill's head did not come within C{lock_timeout}: go upstream
        alone (nothing stored).
        """
        self.timer = None
        self.cancel()
        ex = self.ex
        if ex.finished:
            return
        ex.cleanup = None
        self.fill.origin.alone(ex, self.sink, self.fill.cache, b"; fwd=uri-miss; detail=lock-timeout")


class Fill:
    """
    One request upstream for a key of the cache: it stores the response
    when it may (while streaming it to its own client), refreshes a stale
    entry on a 304, falls back to the stale entry on an error when
    C{stale-if-error} allows, and serves the misses collapsed on it.

    It is both the upstream's sink and its owner (see
    L{twisted_proxy.engine.upstream.UpstreamOrigin.fetch}).
    """

    def __init__(
        self,
        origin: CacheOrigin,
        cache: SharedCache,
        ex: Any,
        sink: Any,
        primary: str,
        key: str,
        fwd: bytes,
        stale: Optional[View] = None,
        background: bool = False,
    ) -> None:
        self.origin = origin
        #: a revalidation without a client (stale-while-revalidate)
        self.background = background
        self.cache = cache
        self.ex = ex
        self.sink = sink
        self.primary = primary
        self.key = key
        self.fwd = fwd
        self.stale = stale
        self.waiters: List[Waiter] = []
        self.writer: Any = None
        #: what the response turned into: "pass", "store", "revalidated", "stale-error"
        self.mode = "pass"
        self.request_time = 0.0
        self.response: Optional[ResponseHead] = None
        self.client_headers: Headers = ex.head.headers
        self.collapsing = False
        self.done = False
        #: the Vary names of the response (once its head came)
        self.names: Tuple[str, ...] = ()
        #: collapsed readers were given the entry being written
        self.shared = False
        #: the stale entry's body, held open (see start)
        self.pin: Any = None
        #: the body outgrew max_object_size while others read it: written
        #: to its end for them, not kept
        self.publish = True

    def start(self) -> None:
        ex = self.ex
        cache = self.cache
        head = ex.head
        if self.stale is not None:
            validators = rules.validators(self.stale.headers)
            # our own conditional request: the client's conditions (and
            # range) are answered from the refreshed entry
            headers = [(n, v) for n, v in head.headers if n.lower() not in _CONDITIONALS]
            headers.extend(validators)
            head.headers = headers
        if ex.ctx.kind == "reverse":
            # the origin's surrogate says so (a new list: the client's
            # fields stay as they came)
            head.headers = head.headers + [SURROGATE_CAPABILITY]
        if head.method == _GET and (self.stale is not None or not request_flags(self.client_headers) & CONDITIONAL):
            # (a HEAD's answer cannot fill the cache: GETs never wait on it)
            cache.fills[self.key] = self
            self.collapsing = True
        if self.stale is not None:
            # the stale body stays readable until the answer comes, even if
            # the entry is purged or evicted meanwhile
            try:
                self.pin = self.stale.entry.reader()
            except ReadFailed:
                self.pin = None
        ex.cleanup = _chain(ex.cleanup, self.ended)
        self.request_time = self.origin.clock.seconds()
        self.origin.upstream.fetch(ex, self, self)

    def wait(self, ex: Any, sink: Any) -> None:
        """
        C{ex} misses the same key: it waits for this fill's head.
        """
        cache = self.cache
        cache.counters.collapsed += 1
        waiter = Waiter(self, ex, sink, None)
        waiter.timer = cache.clock.callLater(cache.lock_timeout, waiter.timed_out)
        self.waiters.append(waiter)
        ex.cleanup = _chain(ex.cleanup, waiter.cancel)

    # the upstream's sink

    def response_head(self, response: ResponseHead) -> None:
        cache = self.cache
        ex = self.ex
        now = cache.clock.seconds()
        self.response = response
        status = response.status
        stale = self.stale
        if stale is not None:
            if status == 304:
                self.refresh(response, now)
                return
            if status in _ERROR_STATUSES and not self.background and rules.stale_if_error(
                self.client_headers, stale.rule_headers, now - stale.fresh_until
            ):
                self.mode = "stale-error"
                return
        reason = None
        surrogate_no_store, surrogate = False, None
        if ex.ctx.kind == "reverse":
            # a gateway cache is the surrogate Surrogate-Control speaks to;
            # the field goes no further
            surrogate_no_store, surrogate = surrogate_control(response)
        if ex.head.method != _GET:
            reason = "method"
        elif surrogate_no_store:
            reason = "no-store"
        else:
            reason = rules.storable(_GET, status, self.client_headers, response.headers)
            if surrogate is not None and reason in ("no-store", "private", "not-cacheable", "set-cookie"):
                # the origin's word to its surrogates overrides what it tells browsers
                reason = None
            if reason is None and rules.header(self.client_headers, b"range") is not None and stale is None:
                reason = "range"
            if reason is None:
                length = rules.header(response.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > cache.max_object_size:
                    reason = "size"
        names = rules.vary_names(response.headers) if reason is None else ()
        if names is None:
            reason = "vary-star"
        if reason is None:
            assert names is not None
            self.names = names
            key = self.key
            if names != cache.vary.get(self.primary, ()):
                # the variant key depends on the names this response varies on
                key = self.primary if not names else self.primary + "\n" + rules.vary_key(names, self.client_headers)
                if key != self.key and cache.fills.get(self.key) is self:
                    del cache.fills[self.key]
                    self.collapsing = False
                self.key = key
            meta = self.meta(response, now, names)
            if surrogate is not None:
                meta["surrogate"] = surrogate
            try:
                self.writer = cache.store.begin(key, meta)
            except OSError as e:
                log.error("cache {name}: cannot store {url}: {error}", name=cache.name, url=self.primary, error=e)
                self.writer = None
            if self.writer is not None:
                self.mode = "store"
        tail = b"; stored" if self.mode == "store" else (b"; detail=%s" % reason.encode("ascii") if reason else b"")
        if stale is not None:
            value = cache.bname + b"; fwd=%s; fwd-status=%d%s" % (self.fwd, status, tail)
        else:
            value = cache.bname + b"; fwd=%s%s" % (self.fwd, tail)
        if self.fwd == b"bypass":
            cache.counters.bypass += 1
            ex.cache = "bypass"
        else:
            cache.counters.misses += 1
            ex.cache = "miss"
        _add_header(response, b"Cache-Status", b"cache-status", value)
        self.release_waiters()
        self.sink.response_head(response)

    def response_body(self, data: bytes) -> None:
        if self.mode == "store":
            writer = self.writer
            if self.publish and writer.written + len(data) > self.cache.max_object_size:
                # larger than it said (or a chunked body): streamed, not stored
                if self.shared:
                    # collapsed readers read it: written to its end for them
                    self.publish = False
                else:
                    self.mode = "pass"
                    self.writer = None
                    writer.abort()
            if self.writer is not None:
                try:
                    writer.write(data)
                except OSError as e:
                    log.error("cache {name}: write failed: {error}", name=self.cache.name, error=e)
                    self.mode = "pass"
                    self.writer = None
                    writer.abort()
        elif self.mode != "pass":
            return  # a 304 or an error answered from the stale entry
        self.sink.response_body(data)

    def response_end(self) -> None:
        if self.mode == "pass" or self.mode == "store":
            self.sink.response_end()

    # the upstream's owner

    def origin_done(self) -> None:
        cache = self.cache
        ex = self.ex
        mode = self.mode
        self.done = True
        if mode == "store":
            writer = self.writer
            self.writer = None
            entry = writer.finish()
            self.unregister()
            if entry is not None:
                if self.publish:
                    cache.stored(self.primary, self.key, tuple(entry.meta.get("vary") or ()))
                else:
                    # over max_object_size: its readers keep their descriptors
                    cache.store.remove(self.key)
            ex.origin_done()
        elif mode == "revalidated":
            self.unregister()
            cache.counters.revalidated += 1
            ex.cache = "revalidated"
            now = cache.clock.seconds()
            entry = cache.lookup(self.key)
            pin = self.pin
            self.pin = None
            if entry is not None:
                view = view_of(cache, entry)
                self.serve_waiters_from(view)
                if pin is not None:
                    pin.close()
                    pin = None
            else:
                # purged or evicted meanwhile: the stale body (held open)
                # with the headers the 304 refreshed
                view = self.stale_view(now)
                self.serve_waiters_alone()
            if self.background:
                if pin is not None:
                    pin.close()
                ex.origin_done()
                return
            ex.head.headers = self.client_headers
            serve(
                ex,
                self.sink,
                cache,
                view,
                view.age(now),
                cache.bname + b"; fwd=%s; fwd-status=304" % self.fwd,
                reader=pin,
            )
        elif mode == "stale-error":
            self.unregister()
            self.serve_stale("the upstream answered %d" % (self.response.status if self.response else 0))
        else:
            self.unregister()
            ex.origin_done()

    def upstream_failed(self, status: int, message: str, headers: Any = ()) -> None:
        self.done = True
        writer = self.writer
        if writer is not None:
            self.writer = None
            writer.abort()
        self.unregister()
        ex = self.ex
        stale = self.stale
        if stale is not None and not self.background and not ex.response_started and not ex.finished:
            now = self.cache.clock.seconds()
            by = now - stale.fresh_until
            if rules.stale_if_error(self.client_headers, stale.rule_headers, by) or disconnected_stale_ok(
                stale, by
            ):
                log.info("{url}: {why}; serving the stale response", url=ex.url(), why=message)
                self.serve_stale(message)
                return
        self.release_waiters()
        ex.upstream_failed(status, message, headers)

    # helpers

    def refresh(self, response: ResponseHead, now: float) -> None:
        """
        A 304 for the stale entry: its stored headers are refreshed.
        """
        stale = self.stale
        assert stale is not None
        cache = self.cache
        entry = stale.entry
        merged = rules.merge_not_modified(stale.headers, _storable_headers(response))
        cache.views.pop(entry.key, None)
        meta = dict(entry.meta)
        self.refreshed = (merged, now)
        meta["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in merged]
        meta["qt"] = self.request_time
        meta["rt"] = now
        try:
            cache.store.update_meta(entry.key, meta)
        except (OSError, KeyError) as e:
            log.error("cache {name}: cannot refresh {url}: {error}", name=cache.name, url=self.primary, error=e)
        self.mode = "revalidated"

    def stale_view(self, now: float) -> View:
        """
        The stale entry as the 304 refreshed it (for when the entry itself
        is gone): its body through the pinned reader.
        """
        stale = self.stale
        assert stale is not None
        view = View(stale.entry)
        refreshed = getattr(self, "refreshed", None)
        if refreshed is not None:
            merged, response_time = refreshed
            view.headers = merged
            view.lnames = [n.lower() for n, _ in merged]
            view.served = [h for h, ln in zip(merged, view.lnames) if ln not in _NOT_SERVED]
            view.served_lnames = [ln for ln in view.lnames if ln not in _NOT_SERVED]
            view.request_time = self.request_time
            view.response_time = response_time
            view.initial_age = rules.initial_age(merged, self.request_time, response_time)
        return view

    def serve_waiters_alone(self) -> None:
        for waiter in self.take_waiters():
            self.origin.alone(waiter.ex, waiter.sink, self.cache, b"; fwd=uri-miss")

    def serve_stale(self, why: str) -> None:
        stale = self.stale
        assert stale is not None
        ex = self.ex
        cache = self.cache
        if ex.finished:
            return
        cache.counters.stale += 1
        ex.cache = "stale"
        ex.head.headers = self.client_headers
        status = self.response.status if self.response is not None else 0
        value = cache.bname + b"; fwd=stale; detail=stale-if-error"
        if status:
            value = cache.bname + b"; fwd=stale; fwd-status=%d; detail=stale-if-error" % status
        now = cache.clock.seconds()
        self.serve_waiters_from(stale)
        pin = self.pin
        self.pin = None
        serve(ex, self.sink, cache, stale, stale.age(now), value, reader=pin)

    def meta(self, response: ResponseHead, now: float, names: Tuple[str, ...]) -> dict:
        headers = _storable_headers(response)
        length = rules.header(response.headers, b"content-length")
        meta = {
            "primary": self.primary,
            "vary": list(names),
            "status": response.status,
            "reason": response.reason.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers],
            "qt": self.request_time,
            "rt": now,
            "tags": tags_of(headers, self.cache.tag_header),
        }
        if length is not None and length.isdigit() and response.framing == policy.CONTENT_LENGTH:
            meta["length"] = int(length)
        return meta

    def unregister(self) -> None:
        cache = self.cache
        if self.collapsing and cache.fills.get(self.key) is self:
            del cache.fills[self.key]
        self.collapsing = False

    def take_waiters(self) -> List[Waiter]:
        """
        The waiters whose exchange still runs, taken off this fill (their
        lock_timeout cancelled, their exchange's cleanup no longer ours).
        """
        waiters = self.waiters
        self.waiters = []
        live = []
        for waiter in waiters:
            waiter.cancel()
            if not waiter.ex.finished:
                waiter.ex.cleanup = None
                live.append(waiter)
        return live

    def release_waiters(self) -> None:
        """
        The head came: the waiters of this variant read the entry being
        written, the others (or all, when nothing is stored) go upstream by
        themselves.
        """
        waiters = self.take_waiters()
        if not waiters:
            return
        writer = self.writer
        view = View(writer.entry) if writer is not None and self.mode == "store" else None
        for waiter in waiters:
            ex = waiter.ex
            if view is not None and (
                not self.names
                or self.primary + "\n" + rules.vary_key(self.names, ex.head.headers) == self.key
            ):
                self.shared = True
                ex.cache = "miss"
                serve(
                    ex,
                    waiter.sink,
                    self.cache,
                    view,
                    0,
                    self.cache.bname + b"; fwd=uri-miss; collapsed",
                    view.entry,
                )
            else:
                self.origin.alone(ex, waiter.sink, self.cache, b"; fwd=uri-miss")

    def serve_waiters_from(self, view: View) -> None:
        now = self.cache.clock.seconds()
        for waiter in self.take_waiters():
            waiter.ex.cache = "hit"
            serve(
                waiter.ex,
                waiter.sink,
                self.cache,
                view,
                view.age(now),
                self.cache.bname + b"; hit; detail=collapsed",
            )

    def ended(self) -> None:
        """
        The exchange ended (however): a body still being written is
        dropped (never published), the waiters go on by themselves.
        """
        pin = self.pin
        if pin is not None:
            self.pin = None
            pin.close()
        writer = self.writer
        if writer is not None:
            self.writer = None
            writer.abort()
        self.unregister()
        if self.waiters:
            self.release_waiters()


#: the longest freshness a directive may give (RFC 9111 §1.2.2)
_MAX_DELTA = 2**31
#: how long past its freshness a stored response may be served while the
#: origin cannot be reached (Traffic Server's max_stale_age: a week)
MAX_STALE_DISCONNECTED = 7 * 86400.0


#: this surrogate's device token, announced to origins in the
#: Surrogate-Capability request field (W3C Edge Architecture)
DEVICE_TOKEN = b"twisted-proxy"
SURROGATE_CAPABILITY = (b"Surrogate-Capability", DEVICE_TOKEN + b'="Surrogate/1.0"')


def surrogate_control(response: ResponseHead) -> Tuple[bool, Optional[int]]:
    """
    C{(no-store, max-age)} of the response's C{Surrogate-Control} fields
    (W3C Edge Architecture) addressed to every surrogate or to this one
    (C{;twisted-proxy}, the device token of the C{Surrogate-Capability} it
    sends; another C{;target} names another device and is ignored); removes
    the fields from C{response}, as a surrogate does.
    """
    lnames = response.lnames or [n.lower() for n, _ in response.headers]
    if b"surrogate-control" not in lnames:
        return False, None
    no_store = False
    max_age: Optional[int] = None
    kept = []
    kept_names = []
    for (name, value), lname in zip(response.headers, lnames):
        if lname != b"surrogate-control":
            kept.append((name, value))
            kept_names.append(lname)
            continue
        for part in value.split(b","):
            part, _, target = part.strip().partition(b";")
            if not part or (target and target.strip() != DEVICE_TOKEN):
                continue  # (addressed to another device)
            directive, _, argument = part.partition(b"=")
            directive = directive.lower()
            if directive == b"no-store":
                no_store = True
            elif directive == b"max-age" and argument.isdigit() and max_age is None:
                max_age = min(int(argument), _MAX_DELTA)
    response.headers[:] = kept
    if response.lnames is not None:
        response.lnames[:] = kept_names
    return no_store, max_age


def disconnected_stale_ok(view: View, stale_by: float) -> bool:
    """
    Whether C{view} may be served stale because the origin cannot be
    reached (RFC 9111 §4.2.4 allows it "when disconnected"; Traffic
    Server does it up to L{MAX_STALE_DISCONNECTED}, Varnish within grace),
    unless the response forbids stale use.
    """
    if stale_by > MAX_STALE_DISCONNECTED:
        return False
    cc = rules.cache_control(view.rule_headers)
    return not any(d in cc for d in ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage"))


def _storable_headers(response: ResponseHead) -> Headers:
    """
    The end-to-end fields of C{response} (without hop-by-hop fields, those
    its C{Connection} names, framing and the caches' own).
    """
    tokens = response.tokens
    skip = _NOT_STORED | frozenset(tokens) if tokens else _NOT_STORED
    return [(n, v) for n, v in response.headers if n.lower() not in skip]


class _NullTransport:
    """
    The transport of a background exchange: nobody reads its response.
    """

    disconnecting = False
    connected = True

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: Any) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def loseConnection(self) -> None:
        if self.connected:
            self.connected = False
            self.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    abortConnection = loseConnection

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 0)

    getHost = getPeer


def revalidate_in_background(origin: CacheOrigin, cache: SharedCache, ex: Any, primary: str, key: str, view: View) -> None:
    """
    C{stale-while-revalidate}: one conditional request for C{key} on an
    exchange of its own (no client: its response goes nowhere, its access
    log line says C{stale-while-revalidate}), which refreshes the entry on
    a 304 or stores the new response. Timers, retries, pool and passive
    health are the engine's as for any request; the waiting misses of that
    key collapse on it.
    """
    from twisted_proxy.engine.front import FrontProtocol
    from twisted_proxy.engine.exchange import Exchange

    front = FrontProtocol(ex.ctx)
    transport = _NullTransport(front)
    front.transport = transport
    front.gate = Gate(transport)
    front.client_ip = ex.front.client_ip
    front.allowed = True
    # closed once its exchange is done
    front.read_closed = True
    head = ex.head
    bg_head = RequestHead(
        _GET,
        head.target,
        head.version,
        [(n, v) for n, v in head.headers if n.lower() not in _CONDITIONALS],
        head.host,
    )
    bg = Exchange(front, bg_head)
    front.current = bg
    bg.target = ex.target
    bg.request_done = True
    bg.rule = "stale-while-revalidate"
    front.set_timer(BODY, ex.ctx.settings.idle_timeout)
    Fill(origin, cache, bg, bg, primary, key, fwd=b"stale", stale=view, background=True).start()
