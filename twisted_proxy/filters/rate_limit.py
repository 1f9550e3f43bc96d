# -*- test-case-name: tests.test_rate_limit -*-
"""
The C{rate_limit} filter type: a token bucket per client, in memory or
shared between proxies through Redis.

::

    [filter.per-ip]
    type = "rate_limit"
    rate = 100                 # required: tokens added ...
    per = 60                   # required: ... every this many seconds (floats OK)
    burst = 100                # bucket size, a whole number >= 1 (default: rate, at least 1)
    key = "client_ip"          # or "header:X-Api-Key", or "claim:sub" (default client_ip)
    max_keys = 100000          # in-memory buckets kept at most (default 100000)
    # backend = "redis://127.0.0.1:6379/0"   # share the buckets between proxies
    # fail_open = true         # Redis unreachable: allow (true, default) or 503 (false)
    # timeout = 0.5            # seconds a Redis call may take (default 0.5)

Each request takes one token from its bucket. A bucket holds at most
C{burst} tokens and gains C{rate} tokens every C{per} seconds, continuously
(one token every C{per / rate} seconds). A request that finds less than one
token is answered C{429 Too Many Requests} with::

    Retry-After: 3                              # whole seconds until a token is back
    RateLimit-Policy: "per-ip";q=100;w=60       # the policy (quota q per window w)
    RateLimit: "per-ip";r=0;t=3                 # remaining quota r, t seconds until it grows

C{RateLimit-Policy} and C{RateLimit} are the two structured fields of the
current IETF draft (draft-ietf-httpapi-ratelimit-headers-10/-11; the older
three fields C{RateLimit-Limit/-Remaining/-Reset} are not sent). The policy
is named after the filter; C{q} is C{rate} and C{w} is C{per} in whole
seconds (a fractional C{per} is scaled: C{rate = 5, per = 0.5} is
advertised as C{q=10;w=1}, C{rate = 0.5, per = 1} as C{q=1;w=2}). Only
the 429 carries them: a request filter cannot add headers to a response
it lets through.

The key:

 - C{client_ip}: the client's address (the TCP peer).
 - C{header:NAME}: the value of the request header C{NAME} (the first one,
   case-insensitive name); a request without it, or with it empty, is
   counted under its client address instead. The client chooses header
   values, so this key only limits clients that cannot change it (a header
   set by a trusted proxy in front, or an API key the next hop checks).
 - C{claim:NAME}: the claim C{NAME} an authentication filter earlier in the
   chain put in C{RequestInfo.claims} (C{sub} of a JWT, C{user} after basic
   auth); missing (or no authentication filter before this one), it is the
   client address. Header and claim values never share a bucket with an
   address. Values longer than 200 characters are hashed.

Each refusal is announced on L{twisted_proxy.filters.events} as
C{events.limited(filter_name, client_ip)} (what C{ip_block} counts).

Memory (in-process buckets): a bucket is one float, the time it will be
full again; a full bucket is the same as no bucket, so expired ones are
dropped, oldest first, as requests come (no timer). At most C{max_keys}
buckets are kept: beyond that the least recently used one is forgotten
(that client starts again with a full bucket).

With C{backend = "redis://[[user]:password@]host[:port][/db]"} the buckets
live in Redis under C{twisted-proxy:rl:<filter name>:<key>}, so every proxy
using that Redis shares them. One atomic Lua script (C{EVALSHA}, loaded
with C{SCRIPT LOAD} on C{NOSCRIPT}) runs the same token bucket on the
Redis server's own clock (C{TIME}), so proxies with skewed clocks agree,
and stores each bucket with an expiry (C{SET ... PX}) at its refill time,
so idle keys vanish. The connection is opened at the first request and
re-opened by itself after a failure. When Redis is unreachable, or a call
fails or takes longer than C{timeout}, C{fail_open = true} lets the request
through and C{false} answers C{503}; during an outage one request at a
time probes Redis while the others get that answer at once. The outage
and the recovery are logged once each.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.events import Events, events
from twisted_proxy.interfaces import IRequestFilter

__all__ = [
    "RateLimitSpec",
    "RedisTarget",
    "RateLimitFilter",
    "RedisRateLimitFilter",
    "REDIS_SCRIPT",
    "parse",
    "build",
]

log = Logger()

_KEYS = frozenset(
    {"rate", "per", "burst", "key", "max_keys", "backend", "fail_open", "timeout"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")

#: tolerance of the bucket arithmetic, seconds (float rounding at the
#: boundaries must not refuse a request that is exactly on time)
_EPSILON = 1e-6
#: header and claim values longer than this are hashed for the key
_MAX_KEY_TEXT = 200
#: how often (at most) expired in-memory buckets are dropped, seconds
_SWEEP_INTERVAL = 1.0
#: expired buckets dropped per sweep at most (the next request goes on)
_SWEEP_BATCH = 10000


@attrs.frozen
class RedisTarget:
    """
    Where the shared buckets live: C{redis://[[user]:password@]host[:port][/db]}.
    """

    host: str
    port: int = 6379
    db: int = 0
    username: Optional[str] = attrs.field(default=None, repr=False)
    password: Optional[str] = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


@attrs.frozen
class RateLimitSpec:
    """
    A parsed C{rate_limit} filter table.

    @ivar rate: tokens added every C{per} seconds.
    @ivar per: seconds.
    @ivar burst: the bucket's size in tokens.
    @ivar key: C{"client_ip"}, C{"header:name"} (name in lower case) or
        C{"claim:NAME"}.
    @ivar max_keys: in-memory buckets kept at most.
    @ivar backend: the Redis server, or L{None} for in-process buckets.
    @ivar fail_open: with Redis unreachable, allow (true) or answer 503.
    @ivar timeout: seconds a Redis call may take.
    """

    rate: float
    per: float
    burst: int
    key: str = "client_ip"
    max_keys: int = 100000
    backend: Optional[RedisTarget] = None
    fail_open: bool = True
    timeout: float = 0.5

    @property
    def interval(self) -> float:
        """
        Seconds per token.
        """
        return self.per / self.rate


# --- parsing ---------------------------------------------------------------


def _positive_number(value: Any, path: str, errors: ErrorList) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.add(path, f"must be a number, not {type(value).__name__}")
        return None
    if not value > 0 or math.isinf(value):
        errors.add(path, f"must be a positive number, not {value!r}")
        return None
    return float(value)


def _whole_number(
    value: Any, path: str, errors: ErrorList, minimum: int = 1
) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, f"must be a whole number, not {type(value).__name__}")
        return None
    if value < minimum:
        errors.add(path, f"must be at least {minimum}, not {value}")
        return None
    return value


def _parse_key(value: Any, path: str, errors: ErrorList) -> Optional[str]:
    if not isinstance(value, str):
        errors.add(path, f"must be a string, not {type(value).__name__}")
        return None
    if value == "client_ip":
        return value
    source, sep, name = value.partition(":")
    if not sep or source not in ("header", "claim"):
        errors.add(
            path,
            f"unknown key {value!r} (expected 'client_ip', 'header:NAME' or"
            " 'claim:NAME')",
        )
        return None
    if source == "header":
        if not _TOKEN.match(name):
            errors.add(path, f"{value!r}: {name!r} is not a valid header name")
            return None
        return f"header:{name.lower()}"
    if not name.strip():
        errors.add(path, f"{value!r}: the claim name is missing")
        return None
    return value


def parse_redis_url(text: str) -> RedisTarget:
    """
    C{redis://[[user]:password@]host[:port][/db]} as a L{RedisTarget}.

    @raise ValueError: with a readable message.
    """
    form = "expected redis://host:port/db"
    if any(c.isspace() for c in text):
        raise ValueError(f"{text!r}: must not contain spaces ({form})")
    parts = urlsplit(text)
    if parts.scheme.lower() != "redis":
        raise ValueError(
            f"{text!r}: the scheme must be redis:// ({form}; rediss:// is not supported)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: no query or fragment allowed ({form})")
    host = parts.hostname
    if not host:
        raise ValueError(f"{text!r}: the host is missing ({form})")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise ValueError(f"{text!r}: the port is empty ({form})")
        port = 6379
    elif not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    path = parts.path
    db = 0
    if path not in ("", "/"):
        digits = path[1:]
        if not digits.isdigit() or not digits.isascii():
            raise ValueError(
                f"{text!r}: the database must be a number like /0, not {path!r}"
            )
        db = int(digits)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return RedisTarget(host=host, port=port, db=db, username=username, password=password)


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> RateLimitSpec:
    """
    Validate a C{[filter.NAME]} table of type C{rate_limit}; report problems
    to C{errors} under C{filter.NAME.key}.
    """
    prefix = f"filter.{name}"
    for key in table:
        if key not in _KEYS and key != "type":
            errors.add(f"{prefix}.{key}", "unknown key")
    rate: Optional[float] = None
    per: Optional[float] = None
    if "rate" not in table:
        errors.add(f"{prefix}.rate", "required key is missing (tokens per `per` seconds)")
    else:
        rate = _positive_number(table["rate"], f"{prefix}.rate", errors)
    if "per" not in table:
        errors.add(
            f"{prefix}.per",
            "required key is missing (the seconds `rate` is counted over, e.g. per = 60)",
        )
    else:
        per = _positive_number(table["per"], f"{prefix}.per", errors)
    values: Dict[str, Any] = {}
    burst: Optional[int] = None
    if "burst" in table:
        burst = _whole_number(table["burst"], f"{prefix}.burst", errors)
    if "key" in table:
        key_text = _parse_key(table["key"], f"{prefix}.key", errors)
        if key_text is not None:
            values["key"] = key_text
    if "max_keys" in table:
        max_keys = _whole_number(table["max_keys"], f"{prefix}.max_keys", errors)
        if max_keys is not None:
            values["max_keys"] = max_keys
    if "backend" in table:
        path = f"{prefix}.backend"
        value = table["backend"]
        if not isinstance(value, str):
            errors.add(
                path,
                "must be a string like 'redis://127.0.0.1:6379/0', not"
                f" {type(value).__name__}",
            )
        else:
            try:
                values["backend"] = parse_redis_url(value.strip())
            except ValueError as e:
                errors.add(path, str(e))
    if "fail_open" in table:
        value = table["fail_open"]
        if not isinstance(value, bool):
            errors.add(f"{prefix}.fail_open", f"must be true or false, not {value!r}")
        else:
            values["fail_open"] = value
    if "timeout" in table:
        timeout = _positive_number(table["timeout"], f"{prefix}.timeout", errors)
        if timeout is not None:
            values["timeout"] = timeout
    if rate is None or per is None:
        # the caller discards the spec when errors were reported
        return RateLimitSpec(rate=1.0, per=1.0, burst=1, **values)
    if burst is None:
        burst = max(1, int(rate))
    return RateLimitSpec(rate=rate, per=per, burst=burst, **values)


# --- the live filters ------------------------------------------------------


def _sf_string(text: str) -> bytes:
    """
    C{text} as a structured-field String (RFC 8941 §3.3.3): printable ASCII
    only (others become C{?}), with C{\\} and C{"} escaped.
    """
    chars = []
    for c in text:
        if c in '\\"':
            chars.append("\\" + c)
        elif " " <= c <= "~":
            chars.append(c)
        else:
            chars.append("?")
    return ('"' + "".join(chars) + '"').encode("ascii")


def _key_text(prefix: str, value: str) -> str:
    if len(value) > _MAX_KEY_TEXT:
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16)
        return prefix + "#" + digest.hexdigest()
    return prefix + value


def _claim_text(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    try:
        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def key_function(key: str) -> Callable[[RequestInfo], str]:
    """
    The function giving a request's bucket key for the spec's C{key}.

    Addresses are used as they are for C{client_ip}; with a header or claim
    key, values are C{"h:"}/C{"c:"} prefixed and a missing one falls back
    to C{"ip:"} + the address, so no client can pick another's bucket.
    """
    if key == "client_ip":
        return _client_ip_key
    source, _, name = key.partition(":")
    if source == "header":
        wanted = name.lower().encode("latin-1")

        def header_key(info: RequestInfo) -> str:
            for hname, value in info.headers:
                if hname.lower() == wanted:
                    if value:
                        return _key_text("h:", value.decode("latin-1"))
                    break
            return "ip:" + info.client_ip

        return header_key

    def claim_key(info: RequestInfo) -> str:
        text = _claim_text(info.claims.get(name))
        if text is None:
            return "ip:" + info.client_ip
        return _key_text("c:", text)

    return claim_key


def _client_ip_key(info: RequestInfo) -> str:
    return info.client_ip


class _Limiter:
    """
    What both filters share: the key, the policy header, the refusal.
    """

    def __init__(
        self, name: str, spec: RateLimitSpec, clock: IReactorTime, bus: Events
    ) -> None:
        self.name = name
        self.spec = spec
        self._clock = clock
        self._bus = bus
        self._key = key_function(spec.key)
        self._interval = spec.interval
        self._capacity = spec.burst * self._interval
        # the draft wants whole numbers: the quota over whole seconds, and a
        # window long enough for at least one token
        window = max(1, round(spec.per))
        quota = int(spec.rate * window / spec.per + _EPSILON)
        if quota < 1:
            window = math.ceil(self._interval - _EPSILON)
            quota = int(spec.rate * window / spec.per + _EPSILON)
        label = _sf_string(name)
        self._label = label
        self._policy = (b"RateLimit-Policy", b"%s;q=%d;w=%d" % (label, quota, window))
        #: the 429 verdicts by Retry-After value (they are immutable)
        self._denials: Dict[int, Deny] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def refuse(self, client_ip: str, wait: float) -> Deny:
        """
        The 429 for a client that must wait C{wait} seconds for a token;
        announces the refusal on the event bus.
        """
        retry = max(1, math.ceil(wait - _EPSILON))
        self._bus.limited(self.name, client_ip)
        deny = self._denials.get(retry)
        if deny is None:
            if len(self._denials) >= 1024:
                self._denials.clear()
            deny = self._denials[retry] = Deny(
                429,
                rule=self.name,
                message=f"too many requests (filter {self.name}); retry in {retry} s",
                headers=(
                    (b"Retry-After", b"%d" % retry),
                    self._policy,
                    (b"RateLimit", b"%s;r=0;t=%d" % (self._label, retry)),
                ),
            )
        return deny


@implementer(IRequestFilter)
class RateLimitFilter(_Limiter):
    """
    The C{rate_limit} filter with buckets in this process; see the module
    docstring.

    A bucket is stored as the time at which it will be full again
    (seconds since the filter was made, on the injected clock): taking a
    token pushes that time C{per / rate} seconds later, and a request is
    refused when that would put it more than C{burst} tokens' worth of
    time ahead. This is the token bucket exactly, in one float.

    @ivar evicted: buckets forgotten because C{max_keys} was reached.
    """

    def __init__(
        self, name: str, spec: RateLimitSpec, clock: IReactorTime, bus: Events = events
    ) -> None:
        super().__init__(name, spec, clock, bus)
        self._buckets: "OrderedDict[str, float]" = OrderedDict()
        self._epoch = clock.seconds()
        self._slack = self._capacity + _EPSILON
        self._max_keys = spec.max_keys
        self._next_sweep = _SWEEP_INTERVAL
        self._next_eviction_log = 0.0
        self.evicted = 0

    def __len__(self) -> int:
        """
        The number of buckets held (clients not at a full bucket).
        """
        return len(self._buckets)

    def tokens(self, key: str) -> float:
        """
        The tokens in the bucket C{key} now (C{burst} for an unknown key).
        """
        now = self._clock.seconds() - self._epoch
        full_at = self._buckets.get(key, now)
        ahead = max(0.0, full_at - now)
        return max(0.0, (self._capacity - ahead) / self._interval)

    def filter_request(self, info: RequestInfo) -> Optional[Deny]:
        """
        Take a token for C{info}'s key, or refuse with 429.
        """
        wait = self.take(self._key(info))
        if wait is not None:
            return self.refuse(info.client_ip, wait)
        return None

    def take(self, key: str) -> Optional[float]:
        """
        Take a token from the bucket C{key}: L{None}, or the seconds until
        one is back when there is none.
        """
        now = self._clock.seconds() - self._epoch
        buckets = self._buckets
        full_at = buckets.get(key)
        if full_at is None:
            if len(buckets) >= self._max_keys:
                self._make_room(now)
            buckets[key] = now + self._interval
        else:
            if full_at < now:
                full_at = now
            new = full_at + self._interval
            buckets.move_to_end(key)
            if new - now > self._slack:
                return new - now - self._capacity
            buckets[key] = new
        if now >= self._next_sweep:
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        """
        Drop full buckets from the least recently used end, stopping at the
        first that is not full (buckets behind it were used later; every
        bucket is full at most C{burst * per / rate} seconds after its last
        use, so none lingers much longer than that).
        """
        buckets = self._buckets
        dropped = 0
        while buckets and dropped < _SWEEP_BATCH:
            key = next(iter(buckets))
            if buckets[key] > now:
                break
            del buckets[key]
            dropped += 1
        self._next_sweep = now if dropped >= _SWEEP_BATCH else now + _SWEEP_INTERVAL

    def _make_room(self, now: float) -> None:
        """
        At C{max_keys}: drop full buckets, or else forget the least recently
        used one.
        """
        self._sweep(now)
        buckets = self._buckets
        if len(buckets) < self._max_keys:
            return
        buckets.popitem(last=False)
        self.evicted += 1
        if now >= self._next_eviction_log:
            self._next_eviction_log = now + 60.0
            log.warn(
                "rate limit {filter}: max_keys ({max_keys}) buckets in use; the least"
                " recently used are forgotten ({evicted} so far)",
                filter=self.name,
                max_keys=self._max_keys,
                evicted=self.evicted,
            )


#: The token bucket in Redis. KEYS[1] is the bucket; ARGV[1] the
#: microseconds per token; ARGV[2] the bucket's size in microseconds (burst
#: times ARGV[1]). The value stored is "T:A": at the server time T (µs) the
#: bucket was A µs short of full (A is kept apart from T so that tiny token
#: intervals keep their precision next to a 16-digit clock); the key expires
#: when the bucket is full. Returns the tokens left (>= 0) when one was
#: taken, or minus the milliseconds until one is back (<= -1): a single
#: integer is the cheapest reply to read.
REDIS_SCRIPT = b"""\
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local ahead = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local t, a = string.match(stored, '^(%d+):(.+)$')
  if t and tonumber(a) then
    local elapsed = now - tonumber(t)
    if elapsed < 0 then elapsed = 0 end
    ahead = tonumber(a) - elapsed
    if ahead < 0 then ahead = 0 end
  end
end
local new = ahead + interval
if new > capacity + 1 then
  return -math.max(1, math.ceil((new - capacity) / 1000))
end
redis.call('SET', KEYS[1], string.format('%.0f:%.17g', now, new), 'PX', math.ceil(new / 1000))
return math.floor((capacity - new) / interval + 0.000001)
"""
_SCRIPT_SHA = hashlib.sha1(REDIS_SCRIPT).hexdigest().encode("ascii")


@implementer(IRequestFilter)
class RedisRateLimitFilter(_Limiter):
    """
    The C{rate_limit} filter with buckets in Redis; see the module docstring.

    @ivar reconnect_initial_delay: seconds before the first reconnection
        attempt after the connection is lost (then growing by e up to
        C{reconnect_max_delay}); set before the first request to change.
    @ivar skipped: requests answered without Redis during outages.
    """

    reconnect_initial_delay = 0.25
    reconnect_max_delay = 5.0

    def __init__(
        self,
        name: str,
        spec: RateLimitSpec,
        reactor: IReactorTime,
        bus: Events = events,
    ) -> None:
        super().__init__(name, spec, reactor, bus)
        assert spec.backend is not None
        self.target = spec.backend
        self._reactor = reactor
        self._prefix = f"twisted-proxy:rl:{name}:".encode("utf-8", "surrogateescape")
        # microseconds, as Lua reads them
        self._args = (
            repr(self._interval * 1e6).encode("ascii"),
            repr(self._capacity * 1e6).encode("ascii"),
        )
        self._factory: Any = None
        self._handler: Any = None
        self._response_error: Any = None
        self._outage_since: Optional[float] = None
        self._probing = False
        self._closed = False
        #: calls in flight, oldest first: [deadline, Deferred, done]; one
        #: timer for the oldest replaces a timer per call
        self._inflight: Deque[List[Any]] = deque()
        self._timer: Optional[IDelayedCall] = None
        self.skipped = 0
        if spec.fail_open:
            self._unavailable: Optional[Deny] = None
        else:
            self._unavailable = Deny(
                503,
                rule=name,
                message=f"rate limit store unavailable (filter {name})",
                headers=((b"Retry-After", b"1"),),
            )

    # the connection

    def _connect(self) -> Any:
        """
        Start the (single, self-reconnecting) Redis connection.
        """
        import txredisapi  # imports the global reactor: only once one is running
        from twisted.internet.endpoints import HostnameEndpoint

        target = self.target
        factory = txredisapi.RedisFactory(
            f"{target.host}:{target.port}",
            target.db or None,
            1,
            isLazy=True,
            handler=txredisapi.ConnectionHandler,
            password=target.password,
            username=target.username,
        )
        factory.initialDelay = self.reconnect_initial_delay
        factory.maxDelay = self.reconnect_max_delay
        connect_timeout = max(1, math.ceil(self.spec.timeout * 4))
        endpoint = HostnameEndpoint(
            self._reactor, target.host, target.port, timeout=connect_timeout
        )
        factory.startConnecting(endpoint)
        self._factory = factory
        self._handler = factory.handler
        self._response_error = txredisapi.ResponseError
        return self._handler

    def connected(self) -> bool:
        """
        Whether a connection to Redis is up now.
        """
        return self._factory is not None and self._factory.size > 0

    def close(self) -> "Deferred[None]":
        """
        Close the connection and stop reconnecting; fires when closed.
        Requests after this get the C{fail_open} answer.
        """
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        factory, self._factory, self._handler = self._factory, None, None
        if factory is None:
            return succeed(None)
        return factory.disconnect()

    # the verdict

    def filter_request(self, info: RequestInfo) -> Any:
        """
        Ask Redis for a token for C{info}'s key: a Deferred firing with
        L{None} or a L{Deny} (never failing); during an outage, the
        C{fail_open} answer at once.
        """
        handler = self._handler
        if handler is None:
            if self._closed:
                return self._unavailable
            handler = self._connect()
        if self._outage_since is not None:
            if self._probing or not self.connected():
                self.skipped += 1
                return self._unavailable
            self._probing = True
        key = self._prefix + self._key(info).encode("utf-8", "surrogateescape")
        pool = self._factory.pool
        if pool and pool[0].connected:
            # straight to the protocol: the handler's way costs a Deferred
            # and a generator more per call
            d = pool[0].execute_command(b"EVALSHA", _SCRIPT_SHA, b"1", key, *self._args)
        else:
            # waits for the connection (up to the timeout)
            d = handler.execute_command(b"EVALSHA", _SCRIPT_SHA, b"1", key, *self._args)
        d.addErrback(self._load_script, handler, key)
        entry = [self._clock.seconds() + self.spec.timeout, d, False]
        self._inflight.append(entry)
        if self._timer is None:
            self._timer = self._clock.callLater(self.spec.timeout, self._expire)
        d.addCallbacks(self._answered, self._failed, (info.client_ip, entry), None, (entry,))
        return d

    def _expire(self) -> None:
        """
        Cancel the calls older than C{timeout} (their requests get the
        C{fail_open} answer), drop the hung connection, and wait for the
        next oldest.
        """
        self._timer = None
        now = self._clock.seconds()
        inflight = self._inflight
        timed_out = False
        while inflight:
            entry = inflight[0]
            if not entry[2]:
                if entry[0] > now:
                    break
                timed_out = True
                entry[1].cancel()
            inflight.popleft()
        if timed_out and self._factory is not None:
            # the factory opens a new connection
            for conn in list(self._factory.pool):
                conn.transport.abortConnection()
        # a cancelled call's callbacks may have made a request, and so a
        # timer, meanwhile: keep one timer only
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if inflight:
            self._timer = self._clock.callLater(max(0.0, inflight[0][0] - now), self._expire)

    def _load_script(self, failure: Failure, handler: Any, key: bytes) -> Any:
        """
        On C{NOSCRIPT} (a restarted or flushed Redis), C{SCRIPT LOAD} and
        try again.
        """
        if not (
            failure.check(self._response_error)
            and str(failure.value).startswith("NOSCRIPT")
        ):
            return failure
        d = handler.execute_command(b"SCRIPT", b"LOAD", REDIS_SCRIPT)
        d.addCallback(
            lambda _: handler.execute_command(b"EVALSHA", _SCRIPT_SHA, b"1", key, *self._args)
        )
        return d

    def _answered(self, result: Any, client_ip: str, entry: List[Any]) -> Optional[Deny]:
        entry[2] = True
        if type(result) is not int:
            return self._failed(Failure(ValueError(f"unexpected reply {result!r}")), entry)
        if self._outage_since is not None:
            self._recovered()
        if result >= 0:
            return None
        return self.refuse(client_ip, -result / 1000.0)

    def _failed(self, failure: Failure, entry: List[Any]) -> Optional[Deny]:
        entry[2] = True
        self._probing = False
        if self._closed:
            return self._unavailable
        if failure.check(CancelledError):
            reason = f"no answer within {self.spec.timeout:g} s"
        else:
            reason = failure.getErrorMessage() or repr(failure.value)
        if self._outage_since is None:
            self._outage_since = self._clock.seconds()
            log.warn(
                "rate limit {filter}: Redis {redis} unavailable ({reason}); requests"
                " are {policy} until it answers again",
                filter=self.name,
                redis=str(self.target),
                reason=reason,
                policy="allowed" if self.spec.fail_open else "refused with 503",
            )
        self.skipped += 1
        return self._unavailable

    def _recovered(self) -> None:
        assert self._outage_since is not None
        duration = self._clock.seconds() - self._outage_since
        self._outage_since = None
        self._probing = False
        log.info(
            "rate limit {filter}: Redis {redis} answers again after {duration:.1f} s;"
            " {skipped} requests were {policy} meanwhile",
            filter=self.name,
            redis=str(self.target),
            duration=duration,
            skipped=self.skipped,
            policy="allowed" if self.spec.fail_open else "refused",
        )
        self.skipped = 0


@implementer(IRequestFilter)
class TreeRateLimitFilter(_Limiter):
    """
    The C{rate_limit} filter of a worker (workers.py): the buckets are the
    supervisor's, one set for the whole process tree; each request asks it
    for a token over the worker's channel. An answer later than
    C{timeout} (a supervisor gone or stuck) is the C{fail_open} one.
    """

    def __init__(
        self, name: str, spec: RateLimitSpec, clock: IReactorTime, bus: Events, channel: Any
    ) -> None:
        super().__init__(name, spec, clock, bus)
        self._channel = channel
        self._unavailable = None if spec.fail_open else Deny(
            503, rule=name, message=f"rate limit {name} unavailable"
        )
        self.failures = 0

    def filter_request(self, info: RequestInfo) -> Any:
        client_ip = info.client_ip
        d = self._channel.ask({"op": "take", "filter": self.name, "key": self._key(info)}, self.spec.timeout)

        def answered(wait: Any) -> Optional[Deny]:
            if isinstance(wait, (int, float)):
                return self.refuse(client_ip, float(wait))
            return None

        def failed(failure: Failure) -> Optional[Deny]:
            self.failures += 1
            return self._unavailable

        return d.addCallbacks(answered, failed)


#: a worker's channel to its supervisor (set by twisted_proxy.worker before
#: the filters are built): in-memory rate limits then ask the supervisor
TREE: Any = None


def build(
    name: str, spec: RateLimitSpec, clock: IReactorTime, bus: Optional[Events] = None
) -> Any:
    """
    Make the live filter for C{spec}: in-memory buckets, or Redis ones when
    C{spec.backend} is set (then C{clock} must be the reactor); in a worker
    (L{TREE} set), the supervisor's buckets. Refusals are announced on
    C{bus} (the service's; the process's by default).
    """
    bus = events if bus is None else bus
    if spec.backend is not None:
        return RedisRateLimitFilter(name, spec, clock, bus)
    if TREE is not None:
        return TreeRateLimitFilter(name, spec, clock, bus, TREE)
    return RateLimitFilter(name, spec, clock, bus)
