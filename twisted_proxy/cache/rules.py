# -*- test-case-name: tests.test_cache_rules -*-
"""
The rules of a shared HTTP cache (RFC 9111, RFC 5861, RFC 9211, and the
conditional and range parts of RFC 9110), as pure functions.

Nothing here does I/O, reads a clock or keeps state: headers are lists of
C{(name, value)} byte tuples as received (names in any case, a name possibly
repeated), methods are bytes, statuses ints, times plain floats (seconds
since the epoch) passed in by the caller, URLs absolute C{str}.  The cache
engine asks these functions, per request:

    - L{storable}: may this response be stored at all, and if not, why;
    - L{decide}: may this stored response be reused for this request
      (L{USE}, L{USE_STALE}, L{STALE_REVALIDATE} or L{VALIDATE});
    - L{stale_if_error}: may a stale response stand in for a failed origin;
    - L{vary_names} and L{vary_key}: which variant the request selects;
    - L{validators}, L{merge_not_modified}: revalidation;
    - L{not_modified}, L{byte_range}: answering the client's own conditional
      and range requests from a stored response;
    - L{invalidated_urls}: what an unsafe request invalidates;
    - L{cache_status}: the RFC 9211 C{Cache-Status} field value.

Everything is written for the hot path: Cache-Control is parsed in one
split of each field (a slower quote-aware scan only when a field holds a
double quote), dates by fixed positions rather than C{email.utils}, and the
only regular expression is compiled at import.

Where the RFCs leave a choice, this module chooses as follows (following
Varnish or Apache Traffic Server, "ATS", where the two differ, as noted).

Parsing
=======
    - Duplicate Cache-Control directives: the first occurrence wins, across
      all Cache-Control fields (RFC 9111 §4.2.1 allows first-wins or
      "stale").  The first C{Expires}, C{Date}, C{Age} and C{Last-Modified}
      field is used likewise.
    - Directive arguments are accepted as token or quoted-string for every
      directive (RFC 9111 §5.2 "recipients ought to accept both forms"), so
      C{max-age="60"} is 60.
    - C{delta-seconds} is digits only: C{"-1"}, C{"+5"}, C{"1.5"}, C{""} are
      invalid.  A value over 2**31 is taken as 2**31 (RFC 9111 §1.2.2).
    - Invalid freshness information makes a response stale (RFC 9111 §4.2.1
      "caches are encouraged to consider [it] stale"): an invalid
      C{s-maxage} or C{max-age} gives a lifetime of 0 (it does not fall back
      to C{Expires}), as does an invalid C{Expires} (such as C{"0"}, RFC 9111
      §5.3).
    - Dates (L{parse_date}) are parsed as Varnish's C{VTIM_parse} does: the
      three RFC 9110 §5.6.7 formats exactly, case-sensitive names, C{GMT}
      required, the day name checked against the date, a leap second (:60)
      read as :59, surrounding spaces allowed.  RFC 850's two-digit year is
      read in the window 1969-2068 (Varnish), not "relative to now" as RFC
      9110 §5.6.7 asks: this module has no clock.  Anything else (numeric
      zones, ISO 8601, C{"0"}) is invalid.
    - List fields (L{header_list}, L{vary_key}) are split on commas outside
      quoted strings.
    - Invalid request directives are read as their most restrictive value:
      a request C{max-age} or C{min-fresh} with an invalid argument makes the
      request go to the origin; a C{max-stale} with an invalid argument, or a
      C{stale-if-error} with one, is ignored (no stale response allowed).

Storing (L{storable})
=====================
    - Only GET responses are stored.  Statuses 200-599 are stored except 206
      (this cache stores only complete responses) and 304 (a 304 updates a
      stored response, RFC 9111 §4.3.4; it is never stored as the response).
      With C{must-understand} (RFC 9111 §5.2.2.3) the status must be one
      defined by RFC 9110, and then the response's C{no-store} is ignored.
    - C{private} refuses storage even in its qualified form
      C{private="field"} (which RFC 9111 §5.2.2.7 would let a cache store
      without those fields): as Varnish's built-in VCL does.
    - C{Set-Cookie} refuses storage unless the response has C{public} or
      C{s-maxage}: the project's choice.  Varnish never stores such a
      response by default; ATS stores them except for text content types.
      Either way a cookie must not reach another user unless the origin said
      the response is shareable.
    - C{Authorization} in the request: RFC 9111 §3.5 exactly
      (C{must-revalidate}, C{public} or C{s-maxage} allow storage;
      C{proxy-revalidate} does not).
    - A response that can never be reused is not stored ("not-cacheable"):
      no explicit freshness and a status that is not heuristically cacheable
      (RFC 9111 §3), or no freshness at all and no validator and no usable
      C{stale-while-revalidate}/C{stale-if-error} (greater than 0, and stale
      serving not forbidden by C{must-revalidate}, C{proxy-revalidate},
      C{s-maxage} or C{no-cache}).  A response with C{no-cache} counts as
      having no freshness here (it must be validated before every use), so it
      is stored only when it carries a validator.

Freshness and age
=================
    - Shared cache: C{s-maxage}, else C{max-age}, else C{Expires - Date}
      (C{Date} absent: the response time; neither: 0), else a heuristic.
    - Heuristic (RFC 9111 §4.2.2): 10% of C{Date - Last-Modified}, at most
      one day, with no minimum; only for the heuristically cacheable
      statuses (200 203 204 300 301 308 404 405 410 414 501) or with
      C{public}.  This is ATS's C{heuristic_lm_factor} (0.10) and
      C{heuristic_max_lifetime} (86400); ATS's one-hour minimum is not
      followed (a response changed a minute ago is cached for six seconds,
      not an hour).  Varnish has no Last-Modified heuristic (a fixed
      C{default_ttl}).
    - Age is RFC 9111 §4.2.3's C{corrected_initial_age}; an invalid C{Age}
      counts as 0, a missing C{Date} gives an apparent age of 0, and a
      response delay or resident time that would be negative (a clock step)
      counts as 0.
    - A response is fresh while its lifetime exceeds its age (ttl > 0);
      at ttl == 0 it is stale.

Reuse (L{decide})
=================
    - Pragma: no-cache is honoured only when the request has no
      Cache-Control field at all (RFC 9111 §5.4).
    - A qualified C{no-cache="field"} in the response is treated as
      unqualified: always validate (allowed by RFC 9111 §5.2.2.4, which only
      permits reuse without the listed fields).
    - A request C{max-age} or C{min-fresh} means the client does not want a
      stale response (RFC 9111 §5.2.1.1, §5.2.1.3): it disables
      C{stale-while-revalidate}, though not a C{max-stale} the same request
      carries.
    - C{must-revalidate}, C{proxy-revalidate} and C{s-maxage} forbid every
      stale reuse, C{max-stale} included (RFC 9111 §5.2.2.2, §5.2.2.8,
      §5.2.2.10, §4.2.4).

stale-if-error (L{stale_if_error})
==================================
    RFC 5861 §4 lets C{stale-if-error} serve a stale response "regardless of
    other freshness information"; RFC 9111 §4.2.4 (the later, normative
    text) forbids stale responses when an explicit directive prohibits
    them.  So: never with C{must-revalidate}, C{proxy-revalidate},
    C{s-maxage} or C{no-cache} in the response.  Otherwise a request
    C{max-stale} that covers the staleness allows it; then the request's own
    C{stale-if-error=N}, when valid, decides for this request (it overrides
    the response's value in either direction, RFC 5861 §4 "its scope of
    application is the request it appears in"); else the response's
    C{stale-if-error=N}.  Other request directives (C{no-cache},
    C{max-age}) are preferences that the origin's explicit permission
    outweighs when the origin has failed, as in Varnish's grace and nginx's
    C{proxy_cache_use_stale}.

Variants (L{vary_key})
======================
    Per name: every field's list members, stripped, joined with C{","};
    header order, name case, whitespace around commas and split versus
    joined fields make no new variant; member order does.  Values are
    lower-cased for C{Accept-Encoding} only.  An absent field differs from
    an empty one.  Whitespace inside a member (C{"text/html; q=0.5"}) is
    kept as received.

Revalidation (L{merge_not_modified})
====================================
    The 304's fields replace the stored fields of the same name, in the
    position of the first stored one; new names are appended.  Kept from
    the stored response: C{Content-Length}, the hop-by-hop fields and the
    fields the 304's own C{Connection} names.  The stored C{Age} is dropped
    (it described the old exchange); the 304's C{Age}, if any, is kept.

Conditional and range requests
==============================
    - L{not_modified} takes an optional C{status} (default 200): RFC 9110
      §13.2.1 evaluates preconditions only when the response would be 2xx,
      so a stored 404 never answers C{If-None-Match: *} with a 304.
      C{If-Modified-Since} with no C{Last-Modified} compares against C{Date}
      (RFC 9111 §4.3.2); an invalid C{Last-Modified} cannot be compared.
    - L{byte_range} serves the whole 200 for several ranges (RFC 9110 §14.2
      allows ignoring Range), for several Range fields, and whenever the
      Range field is invalid.  An If-Range date matches only a
      C{Last-Modified} at least one second before the stored C{Date}
      (RFC 9110 §8.8.2.2, §13.1.5); dates are compared after parsing.

Invalidation (L{invalidated_urls})
==================================
    Same-origin Location and Content-Location URLs are returned with the
    request URL's scheme and authority spelling (so C{HTTP://Example.COM:80/x}
    becomes C{http://example.com/x} when the request was for
    C{http://example.com/...}), an empty path as C{/}, without fragment, and
    without duplicates.
"""

from __future__ import annotations

import math
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urljoin, urlsplit

import attrs

from twisted_proxy.http.policy import HOP_BY_HOP as _HOP_BY_HOP

__all__ = [
    "Headers",
    "CacheControl",
    "Verdict",
    "USE",
    "USE_STALE",
    "STALE_REVALIDATE",
    "VALIDATE",
    "cache_control",
    "delta_seconds",
    "parse_date",
    "format_date",
    "header",
    "header_list",
    "storable",
    "freshness_lifetime",
    "initial_age",
    "current_age",
    "decide",
    "stale_if_error",
    "vary_names",
    "vary_key",
    "validators",
    "merge_not_modified",
    "not_modified",
    "invalidated_urls",
    "byte_range",
    "cache_status",
]

Headers = Sequence[Tuple[bytes, bytes]]
CacheControl = Dict[str, Optional[str]]

USE = "use"
USE_STALE = "use-stale"
STALE_REVALIDATE = "stale-while-revalidate"
VALIDATE = "validate"

#: RFC 9111 §1.2.2: the largest delta-seconds a cache has to represent.
MAX_DELTA = 2**31

#: Heuristic freshness: this fraction of (Date - Last-Modified) ...
HEURISTIC_FRACTION = 0.1
#: ... at most this many seconds.
HEURISTIC_MAX = 86400.0

#: RFC 9110 §15.1: statuses that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])

#: Final statuses defined by RFC 9110, which this cache "understands" for
#: C{must-understand} (less 206 and 304, which it never stores).
UNDERSTOOD_STATUSES = frozenset(
    [200, 201, 202, 203, 204, 205]
    + [300, 301, 302, 303, 305, 307, 308]
    + list(range(400, 418))
    + [421, 422, 426]
    + list(range(500, 506))
)

#: Hop-by-hop fields (RFC 9110 §7.6.1, and a proxy's credentials), kept
#: from the stored response on a 304: the engine's own set
HOP_BY_HOP = _HOP_BY_HOP

_SAFE_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# Fields that a 304 never overrides in the stored response: framing, and
# the fields that describe the stored body itself (its coding, digest,
# range and entity tag), as cache-tests requires and Traffic Server does.
_NOT_MERGED = HOP_BY_HOP | frozenset(
    [b"content-length", b"content-encoding", b"content-md5", b"content-range", b"etag"]
)

# Response directives that forbid serving a stale response.
_NO_STALE = ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache")

_MONTHS = {
    b"Jan": 1,
    b"Feb": 2,
    b"Mar": 3,
    b"Apr": 4,
    b"May": 5,
    b"Jun": 6,
    b"Jul": 7,
    b"Aug": 8,
    b"Sep": 9,
    b"Oct": 10,
    b"Nov": 11,
    b"Dec": 12,
}
_MONTH_NAMES = (
    *("", "Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    *("Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
)
# Sunday is 0, as in Varnish; 1970-01-01 was a Thursday (4).
_DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_DAYS = {name.encode("ascii"): i for i, name in enumerate(_DAY_NAMES)}
_LONG_DAYS = {
    b"Sunday": 0,
    b"Monday": 1,
    b"Tuesday": 2,
    b"Wednesday": 3,
    b"Thursday": 4,
    b"Friday": 5,
    b"Saturday": 6,
}
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The largest time format_date writes: 9999-12-31T23:59:59Z.
_MAX_DATE = 253402300799

# RFC 8941 sf-token: ( ALPHA / "*" ) *( tchar / ":" / "/" )
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*\Z")
_SF_INTEGER_MAX = 999_999_999_999_999


@attrs.frozen
class Verdict:
    """
    What L{decide} says to do with a stored response.

    @ivar action: one of L{USE}, L{USE_STALE}, L{STALE_REVALIDATE},
        L{VALIDATE}.
    @ivar age: the current age in whole seconds (rounded down), for the
        C{Age} field.
    @ivar ttl: freshness lifetime minus current age, in seconds: positive
        while fresh, zero or negative once stale.
    """

    action: str
    age: int
    ttl: float


# -- fields -----------------------------------------------------------------


def header(headers: Headers, lname: bytes) -> Optional[bytes]:
    """
    The value of the first field named C{lname}, as received.

    @param lname: the field name, lower-case.
    @return: the value, or L{None} when there is no such field.
    """
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None


def _split_members(value: bytes, out: List[bytes]) -> None:
    """
    Append the members of a comma-separated list field value to C{out},
    stripped, empty members dropped; commas inside quoted strings do not
    split.
    """
    if b'"' not in value:
        for member in value.split(b","):
            member = member.strip(b" \t")
            if member:
                out.append(member)
        return
    start = 0
    quoted = False
    escaped = False
    for i, c in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # "
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x2C:  # ,
            member = value[start:i].strip(b" \t")
            if member:
                out.append(member)
            start = i + 1
    member = value[start:].strip(b" \t")
    if member:
        out.append(member)


def header_list(headers: Headers, lname: bytes) -> List[bytes]:
    """
    The members of the comma-separated list field C{lname}, over all its
    fields in order: stripped, empty members dropped, commas inside quoted
    strings not splitting.

    @param lname: the field name, lower-case.
    """
    out: List[bytes] = []
    for name, value in headers:
        if name.lower() == lname:
            _split_members(value, out)
    return out


def _has(headers: Headers, lname: bytes) -> bool:
    for name, _ in headers:
        if name.lower() == lname:
            return True
    return False


# -- Cache-Control ----------------------------------------------------------


def _unquote(arg: str) -> str:
    """
    The content of the quoted-string at the start of C{arg} (which begins
    with a double quote), backslash escapes resolved; whatever follows the
    closing quote is ignored, and a missing closing quote ends it at the end.
    """
    if "\\" not in arg:
        end = arg.find('"', 1)
        return arg[1:] if end == -1 else arg[1:end]
    chars: List[str] = []
    i = 1
    n = len(arg)
    while i < n:
        c = arg[i]
        if c == "\\" and i + 1 < n:
            i += 1
            c = arg[i]
        elif c == '"':
            break
        chars.append(c)
        i += 1
    return "".join(chars)


def cache_control(headers: Headers) -> CacheControl:
    """
    The directives of all the Cache-Control fields of C{headers}.

    Names are lower-cased; an argument is unquoted when it is a
    quoted-string, and is L{None} when the directive has none (C{""} when it
    has an empty one, C{max-age=}).  The first occurrence of a directive
    wins.  Junk never raises: empty members are skipped, a member without a
    name is dropped, anything else is kept as it parses.
    """
    result: CacheControl = {}
    for name, value in headers:
        if len(name) != 13 or name.lower() != b"cache-control":
            continue
        members: List[bytes]
        if b'"' in value:
            members = []
            _split_members(value, members)
        else:
            members = value.split(b",")
        for member in members:
            key, eq, arg = member.partition(b"=")
            directive = key.strip(b" \t").lower().decode("latin-1")
            if not directive or directive in result:
                continue
            if not eq:
                result[directive] = None
                continue
            text = arg.strip(b" \t").decode("latin-1")
            if text[:1] == '"':
                text = _unquote(text)
            result[directive] = text
    return result


def _delta(text: Optional[str]) -> Optional[int]:
    if text is None or not text.isdigit() or not text.isascii():
        return None
    if len(text) > 10:
        text = text.lstrip("0")
        if len(text) > 10:
            return MAX_DELTA
    return min(int(text or "0"), MAX_DELTA)


def delta_seconds(cc: CacheControl, name: str) -> Optional[int]:
    """
    The delta-seconds argument of directive C{name} in C{cc}.

    @return: the non-negative integer, at most 2**31 (RFC 9111 §1.2.2); or
        L{None} when the directive is absent, has no argument, or its
        argument is not a plain string of digits.
    """
    return _delta(cc.get(name))


# -- dates ------------------------------------------------------------------


def _days_from_civil(year: int, month: int, day: int) -> int:
    """
    Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    algorithm).
    """
    if month <= 2:
        year -= 1
    era = year // 400
    yoe = year - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _epoch(
    weekday: int, day: bytes, month: Optional[int], year: int, clock: bytes
) -> Optional[float]:
    """
    Seconds since the epoch of the validated date parts, or L{None}.
    """
    if month is None or not day.isdigit() or len(clock) != 8:
        return None
    if clock[2] != 0x3A or clock[5] != 0x3A:  # :
        return None
    hh, mm, ss = clock[0:2], clock[3:5], clock[6:8]
    if not (hh.isdigit() and mm.isdigit() and ss.isdigit()):
        return None
    d, h, m, s = int(day), int(hh), int(mm), int(ss)
    if h > 23 or m > 59 or s > 60 or d < 1 or d > _DAYS_IN_MONTH[month]:
        return None
    if month == 2 and d == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return None
    if s == 60:  # a leap second
        s = 59
    days = _days_from_civil(year, month, d)
    if (days + 4) % 7 != weekday:
        return None
    return float(days * 86400 + h * 3600 + m * 60 + s)


def parse_date(value: bytes) -> Optional[float]:
    """
    Parse an HTTP-date (RFC 9110 §5.6.7) in any of its three formats::

        Sun, 06 Nov 1994 08:49:37 GMT    IMF-fixdate
        Sunday, 06-Nov-94 08:49:37 GMT   RFC 850 (years 1969-2068)
        Sun Nov  6 08:49:37 1994         asctime

    Names are case-sensitive and the day name must match the date, as in
    Varnish; surrounding spaces are allowed.

    @return: seconds since the epoch, or L{None} for anything else.
    """
    v = value.strip(b" \t")
    n = len(v)
    if n == 29:
        # Sun, 06 Nov 1994 08:49:37 GMT
        weekday = _DAYS.get(v[0:3])
        if weekday is None or v[3:5] != b", " or v[25:] != b" GMT":
            return None
        if v[7] != 0x20 or v[11] != 0x20 or v[16] != 0x20:
            return None
        year = v[12:16]
        if not year.isdigit():
            return None
        return _epoch(weekday, v[5:7], _MONTHS.get(v[8:11]), int(year), v[17:25])
    if n == 24:
        # Sun Nov  6 08:49:37 1994
        weekday = _DAYS.get(v[0:3])
        if weekday is None or v[3] != 0x20 or v[7] != 0x20 or v[10] != 0x20:
            return None
        if v[19] != 0x20:
            return None
        day = v[8:10]
        if day[0] == 0x20:
            day = b"0" + day[1:]
        year = v[20:24]
        if not year.isdigit():
            return None
        return _epoch(weekday, day, _MONTHS.get(v[4:7]), int(year), v[11:19])
    comma = v.find(b",")
    if comma < 6:
        return None
    # Sunday, 06-Nov-94 08:49:37 GMT
    weekday = _LONG_DAYS.get(v[:comma])
    rest = v[comma + 1 :]
    if weekday is None or len(rest) != 23 or rest[19:] != b" GMT":
        return None
    if rest[0] != 0x20 or rest[3] != 0x2D or rest[7] != 0x2D or rest[10] != 0x20:
        return None
    yy = rest[8:10]
    if not yy.isdigit():
        return None
    full_year = 1900 + int(yy)
    if full_year < 1969:
        full_year += 100
    return _epoch(weekday, rest[1:3], _MONTHS.get(rest[4:7]), full_year, rest[11:19])


def format_date(t: float) -> bytes:
    """
    Format C{t} (seconds since the epoch, rounded down) as an IMF-fixdate,
    C{b"Sun, 06 Nov 1994 08:49:37 GMT"}.  Times before 1970 or after 9999
    are clamped to those years.
    """
    seconds = int(math.floor(min(max(t, 0.0), float(_MAX_DATE))))
    tm = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAY_NAMES[(tm.tm_wday + 1) % 7].encode("ascii"),
        tm.tm_mday,
        _MONTH_NAMES[tm.tm_mon].encode("ascii"),
        tm.tm_year,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    )


def _date(headers: Headers, lname: bytes) -> Optional[float]:
    value = header(headers, lname)
    return None if value is None else parse_date(value)


# -- storing and freshness --------------------------------------------------


def _lifetime(
    status: int,
    headers: Headers,
    cc: CacheControl,
    response_time: Optional[float],
) -> float:
    """
    L{freshness_lifetime} with the response's Cache-Control already parsed.
    """
    if "s-maxage" in cc:
        value = _delta(cc["s-maxage"])
        return 0.0 if value is None else float(value)
    if "max-age" in cc:
        value = _delta(cc["max-age"])
        return 0.0 if value is None else float(value)
    expires = header(headers, b"expires")
    if expires is not None:
        expiry = parse_date(expires)
        if expiry is None:
            return 0.0
        date = _date(headers, b"date")
        if date is None:
            date = response_time
            if date is None:
                return 0.0
        return max(0.0, expiry - date)
    if status in HEURISTIC_STATUSES or "public" in cc:
        modified = _date(headers, b"last-modified")
        if modified is None:
            return 0.0
        date = _date(headers, b"date")
        if date is None:
            date = response_time
            if date is None:
                return 0.0
        return min(HEURISTIC_MAX, max(0.0, (date - modified) * HEURISTIC_FRACTION))
    return 0.0


def freshness_lifetime(
    status: int, response_headers: Headers, response_time: Optional[float] = None
) -> float:
    """
    A shared cache's freshness lifetime of a response, in seconds
    (RFC 9111 §4.2.1, §4.2.2).

    C{s-maxage}, else C{max-age}, else C{Expires} minus C{Date} (invalid
    C{Expires}, or one before C{Date}: 0); else, for a heuristically
    cacheable status or with C{public}, 10% of C{Date} minus
    C{Last-Modified}, at most a day; else 0.  An invalid C{s-maxage} or
    C{max-age} gives 0.

    @param response_time: when the response was received; stands in for a
        missing or invalid C{Date}.  Without either, C{Expires} and the
        heuristic give 0.
    """
    return _lifetime(status, response_headers, cache_control(response_headers), response_time)


def _stale_allowed(cc: CacheControl) -> bool:
    """
    Whether the response's directives allow serving it stale at all.
    """
    for directive in _NO_STALE:
        if directive in cc:
            return False
    return True


def storable(
    method: bytes,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    response_time: Optional[float] = None,
) -> Optional[str]:
    """
    Whether a shared cache may store this response (RFC 9111 §3, §3.5).

    @param response_time: when the response was received, for an
        C{Expires} without C{Date} (see L{freshness_lifetime}).
    @return: L{None} when it may; else why not, one of C{"method"},
        C{"status"}, C{"no-store"}, C{"private"}, C{"authorization"},
        C{"set-cookie"}, C{"vary-star"}, C{"not-cacheable"}, checked in that
        order.
    """
    if method != b"GET":
        return "method"
    if status < 200 or status > 599 or status == 206 or status == 304:
        return "status"
    response_cc = cache_control(response_headers)
    must_understand = "must-understand" in response_cc
    if must_understand and status not in UNDERSTOOD_STATUSES:
        return "status"
    if "no-store" in response_cc and not must_understand:
        return "no-store"
    if "no-store" in cache_control(request_headers):
        return "no-store"
    if "private" in response_cc:
        return "private"
    public = "public" in response_cc
    shared_max_age = "s-maxage" in response_cc
    if (
        not (public or shared_max_age or "must-revalidate" in response_cc)
        and _has(request_headers, b"authorization")
    ):
        return "authorization"
    if not (public or shared_max_age) and _has(response_headers, b"set-cookie"):
        return "set-cookie"
    if vary_names(response_headers) is None:
        return "vary-star"
    explicit = (
        public
        or shared_max_age
        or "max-age" in response_cc
        or _has(response_headers, b"expires")
    )
    if not explicit and status not in HEURISTIC_STATUSES:
        return "not-cacheable"
    if _has(response_headers, b"etag") or _date(response_headers, b"last-modified") is not None:
        return None
    if "no-cache" in response_cc:
        return "not-cacheable"
    if _lifetime(status, response_headers, response_cc, response_time) > 0:
        return None
    if _stale_allowed(response_cc) and (
        (_delta(response_cc.get("stale-while-revalidate")) or 0) > 0
        or (_delta(response_cc.get("stale-if-error")) or 0) > 0
    ):
        return None
    return "not-cacheable"


def initial_age(response_headers: Headers, request_time: float, response_time: float) -> float:
    """
    RFC 9111 §4.2.3's C{corrected_initial_age}: the larger of the apparent
    age (C{response_time - Date}, 0 without a valid C{Date}) and the C{Age}
    field plus the response delay (C{response_time - request_time}).  An
    C{Age} that is not exactly one non-negative integer (a list, a second
    field, a sign, a fraction, parameters) counts as L{MAX_DELTA}: the
    response is stale (what cache-tests expects of a careful cache);
    negative intervals count as 0.
    """
    age_value = 0
    seen = False
    for name, value in response_headers:
        if len(name) == 3 and name.lower() == b"age":
            value = value.strip(b" \t")
            if seen or not value.isdigit():
                age_value = MAX_DELTA
                break
            seen = True
            age_value = min(int(value), MAX_DELTA)
    date = _date(response_headers, b"date")
    apparent = 0.0 if date is None else max(0.0, response_time - date)
    corrected = age_value + max(0.0, response_time - request_time)
    return max(apparent, corrected)


def current_age(initial: float, response_time: float, now: float) -> float:
    """
    RFC 9111 §4.2.3's C{current_age}: the initial age plus the time the
    response has been resident in the cache (0 if C{now} is before
    C{response_time}).
    """
    return initial + max(0.0, now - response_time)


# -- reuse ------------------------------------------------------------------


def decide(
    request_headers: Headers,
    status: int,
    response_headers: Headers,
    request_time: float,
    response_time: float,
    now: float,
) -> Verdict:
    """
    Whether a stored response can answer this request now (RFC 9111 §4,
    §4.2.4, §5.2; RFC 5861 §3).

    In order:
        1. the request's C{no-cache} (or C{Pragma: no-cache} when it has no
           Cache-Control field), or the response's C{no-cache}: L{VALIDATE};
        2. the request's C{max-age=N} when the age is over N, or its
           C{min-fresh=N} when the ttl is under N: L{VALIDATE};
        3. fresh (ttl > 0): L{USE};
        4. stale, with C{must-revalidate}, C{proxy-revalidate} or
           C{s-maxage}: L{VALIDATE};
        5. stale by no more than the request's C{max-stale} (any amount
           without argument): L{USE_STALE};
        6. stale by no more than the response's C{stale-while-revalidate},
           and the request has neither C{max-age} nor C{min-fresh}:
           L{STALE_REVALIDATE};
        7. else L{VALIDATE}.

    C{only-if-cached} is for the caller: it answers 504 instead of going to
    the origin.

    @param request_time: when the stored response was requested from the
        origin.
    @param response_time: when it was received.
    @param now: the current time.
    """
    request_cc = cache_control(request_headers)
    response_cc = cache_control(response_headers)
    lifetime = _lifetime(status, response_headers, response_cc, response_time)
    initial = initial_age(response_headers, request_time, response_time)
    age = current_age(initial, response_time, now)
    ttl = lifetime - age
    whole_age = int(age)

    if "no-cache" in request_cc or "no-cache" in response_cc:
        return Verdict(VALIDATE, whole_age, ttl)
    if not request_cc and b"no-cache" in _pragma(request_headers):
        return Verdict(VALIDATE, whole_age, ttl)
    client_wants_fresh = False
    if "max-age" in request_cc:
        client_wants_fresh = True
        max_age = _delta(request_cc["max-age"])
        if age > (0 if max_age is None else max_age):
            return Verdict(VALIDATE, whole_age, ttl)
    if "min-fresh" in request_cc:
        client_wants_fresh = True
        min_fresh = _delta(request_cc["min-fresh"])
        if min_fresh is None or ttl < min_fresh:
            return Verdict(VALIDATE, whole_age, ttl)
    if ttl > 0:
        return Verdict(USE, whole_age, ttl)
    if (
        "must-revalidate" in response_cc
        or "proxy-revalidate" in response_cc
        or "s-maxage" in response_cc
    ):
        return Verdict(VALIDATE, whole_age, ttl)
    stale_by = -ttl
    if "max-stale" in request_cc:
        argument = request_cc["max-stale"]
        if argument is None:
            return Verdict(USE_STALE, whole_age, ttl)
        max_stale = _delta(argument)
        if max_stale is not None and stale_by <= max_stale:
            return Verdict(USE_STALE, whole_age, ttl)
    if not client_wants_fresh:
        window = _delta(response_cc.get("stale-while-revalidate"))
        if window is not None and stale_by <= window:
            return Verdict(STALE_REVALIDATE, whole_age, ttl)
    return Verdict(VALIDATE, whole_age, ttl)


def _pragma(request_headers: Headers) -> List[bytes]:
    """
    The lower-cased members of the request's Pragma fields, or nothing when
    it has a Cache-Control field (RFC 9111 §5.4).
    """
    pragma: List[bytes] = []
    for name, value in request_headers:
        lname = name.lower()
        if lname == b"cache-control":
            return []
        if lname == b"pragma":
            _split_members(value.lower(), pragma)
    return pragma


def stale_if_error(request_headers: Headers, response_headers: Headers, stale_by: float) -> bool:
    """
    Whether a response stale by C{stale_by} seconds may answer the request
    when the origin cannot be reached or answers 500, 502, 503 or 504
    (RFC 5861 §4, within RFC 9111 §4.2.4).

    Never when the response has C{must-revalidate}, C{proxy-revalidate},
    C{s-maxage} or C{no-cache}.  Otherwise yes when the request's
    C{max-stale} covers C{stale_by}; else the request's own
    C{stale-if-error=N}, when valid, decides (C{stale_by <= N}); else the
    response's C{stale-if-error=N}.
    """
    response_cc = cache_control(response_headers)
    if not _stale_allowed(response_cc):
        return False
    request_cc = cache_control(request_headers)
    if "max-stale" in request_cc:
        argument = request_cc["max-stale"]
        if argument is None:
            return True
        max_stale = _delta(argument)
        if max_stale is not None and stale_by <= max_stale:
            return True
    limit = _delta(request_cc.get("stale-if-error"))
    if limit is None:
        limit = _delta(response_cc.get("stale-if-error"))
        if limit is None:
            return False
    return stale_by <= limit


# -- variants ---------------------------------------------------------------


def vary_names(response_headers: Headers) -> Optional[Tuple[str, ...]]:
    """
    The field names listed by the response's Vary fields: lower-cased,
    deduplicated, sorted; C{()} without Vary; L{None} when one is C{"*"}
    (the response can never be selected, RFC 9111 §4.1).
    """
    names = set()
    for member in header_list(response_headers, b"vary"):
        name = member.decode("latin-1").lower()
        if name == "*":
            return None
        names.add(name)
    return tuple(sorted(names))


def vary_key(names: Tuple[str, ...], request_headers: Headers) -> str:
    """
    A string identifying the request's values of the fields C{names} (from
    L{vary_names}), equal for two requests that select the same variant.

    Each name gives a line C{"name:value"}, where the value is every field's
    list members, stripped, joined with C{","} (lower-cased for
    C{accept-encoding}); a name the request lacks gives a line C{"name"}.
    """
    if not names:
        return ""
    wanted: Dict[bytes, List[bytes]] = {name.encode("latin-1"): [] for name in names}
    for field_name, field_value in request_headers:
        found = wanted.get(field_name.lower())
        if found is not None:
            found.append(field_value)
    lines: List[str] = []
    for name in names:
        values = wanted[name.encode("latin-1")]
        if not values:
            lines.append(name)
            continue
        members: List[bytes] = []
        for value in values:
            _split_members(value, members)
        joined = b",".join(members).decode("latin-1")
        if name == "accept-encoding":
            joined = joined.lower()
        lines.append(name + ":" + joined)
    return "\n".join(lines)


# -- validation -------------------------------------------------------------


def validators(response_headers: Headers) -> List[Tuple[bytes, bytes]]:
    """
    The conditional fields that revalidate a stored response
    (RFC 9111 §4.3.1): C{If-None-Match} with its C{ETag}, then
    C{If-Modified-Since} with its C{Last-Modified} when that is a valid
    date.
    """
    out: List[Tuple[bytes, bytes]] = []
    etag = header(response_headers, b"etag")
    if etag is not None:
        etag = etag.strip(b" \t")
        if etag:
            out.append((b"If-None-Match", etag))
    modified = header(response_headers, b"last-modified")
    if modified is not None and parse_date(modified) is not None:
        out.append((b"If-Modified-Since", modified.strip(b" \t")))
    return out


def merge_not_modified(
    stored_headers: Headers, new_headers: Headers
) -> List[Tuple[bytes, bytes]]:
    """
    The stored response's fields updated by a 304 (RFC 9111 §3.2, §4.3.4).

    Every field of the 304 replaces all stored fields of the same name,
    at the place of the first; names the stored response lacks are
    appended in the 304's order.  C{Content-Length}, the hop-by-hop fields
    and the fields named by the 304's C{Connection} are not taken from the
    304.  The stored C{Age} is dropped.
    """
    excluded = set(_NOT_MERGED)
    for name, value in new_headers:
        if name.lower() == b"connection":
            for member in value.lower().split(b","):
                excluded.add(member.strip(b" \t"))
    replacements: Dict[bytes, List[Tuple[bytes, bytes]]] = {}
    for name, value in new_headers:
        lname = name.lower()
        if lname not in excluded:
            replacements.setdefault(lname, []).append((name, value))
    merged: List[Tuple[bytes, bytes]] = []
    placed = set()
    for name, value in stored_headers:
        lname = name.lower()
        fields = replacements.get(lname)
        if fields is not None:
            if lname not in placed:
                merged.extend(fields)
                placed.add(lname)
        elif lname != b"age":
            merged.append((name, value))
    for lname, fields in replacements.items():
        if lname not in placed:
            merged.extend(fields)
    return merged


def _opaque(etag: bytes) -> bytes:
    """
    The opaque-tag of an entity-tag, without its weakness indicator.
    """
    etag = etag.strip(b" \t")
    return etag[2:] if etag[:2] == b"W/" else etag


def _entity_tags(value: bytes, out: List[bytes]) -> bool:
    """
    Append the opaque-tags of an If-None-Match field value to C{out}
    (without C{W/}).  Commas inside a quoted tag do not split; an unquoted
    member is taken whole.

    @return: whether the value, or one of its members, is C{"*"}.
    """
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c in b" \t,":
            i += 1
            continue
        start = i
        if value[i : i + 3] == b'W/"':
            i += 2
        if value[i] == 0x22:
            end = value.find(b'"', i + 1)
            end = n if end == -1 else end + 1
            out.append(value[i:end])
            comma = value.find(b",", end)
            i = n if comma == -1 else comma + 1
            continue
        comma = value.find(b",", i)
        end = n if comma == -1 else comma
        member = value[start:end].strip(b" \t")
        if member == b"*":
            return True
        out.append(_opaque(member))
        i = end + 1
    return False


def not_modified(
    method: bytes, request_headers: Headers, response_headers: Headers, status: int = 200
) -> bool:
    """
    Whether the client's own conditional request is answered with a 304
    from this stored response (RFC 9110 §13.1.2, §13.1.3, §13.2.2;
    RFC 9111 §4.3.2).

    Only GET and HEAD, only for a 2xx C{status}.  With If-None-Match:
    yes when it is C{"*"} or one of its tags weakly matches the ETag
    (If-Modified-Since is then ignored).  Else with a valid
    If-Modified-Since: yes when C{Last-Modified} (C{Date} when there is no
    Last-Modified) is not later.
    """
    if method != b"GET" and method != b"HEAD":
        return False
    if status < 200 or status > 299:
        return False
    tags: List[bytes] = []
    conditional = False
    for name, value in request_headers:
        if name.lower() == b"if-none-match":
            conditional = True
            if _entity_tags(value, tags):
                return True
    if conditional:
        etag = header(response_headers, b"etag")
        if etag is None:
            return False
        return _opaque(etag) in tags
    since = header(request_headers, b"if-modified-since")
    if since is None:
        return False
    since_time = parse_date(since)
    if since_time is None:
        return False
    modified = header(response_headers, b"last-modified")
    if modified is None:
        modified = header(response_headers, b"date")
        if modified is None:
            return False
    modified_time = parse_date(modified)
    return modified_time is not None and modified_time <= since_time


# -- invalidation -----------------------------------------------------------


def _origin(url: str) -> Optional[Tuple[str, str, int]]:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not scheme or not host:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    return (scheme, host, port)


def invalidated_urls(
    method: bytes, status: int, request_url: str, response_headers: Headers
) -> List[str]:
    """
    The URLs whose stored responses an unsafe request invalidates
    (RFC 9111 §4.4).

    For a method other than GET, HEAD, OPTIONS and TRACE answered with a 2xx
    or 3xx: C{request_url}, then the C{Location} and C{Content-Location}
    URLs (resolved against C{request_url}) that have its origin (scheme,
    host, port, default ports normalised), spelled with its scheme and
    authority, without fragment.  Otherwise nothing.
    """
    if method in _SAFE_METHODS or status < 200 or status > 399:
        return []
    urls = [request_url]
    origin = _origin(request_url)
    if origin is None:
        return urls
    base = urlsplit(request_url)
    prefix = base.scheme + "://" + base.netloc
    for lname in (b"location", b"content-location"):
        value = header(response_headers, lname)
        if value is None:
            continue
        text = value.strip(b" \t").decode("latin-1")
        if not text:
            continue
        try:
            resolved = urljoin(request_url, text)
        except ValueError:
            continue
        if _origin(resolved) != origin:
            continue
        parts = urlsplit(resolved)
        url = prefix + (parts.path or "/") + ("?" + parts.query if parts.query else "")
        if url not in urls:
            urls.append(url)
    return urls


# -- ranges -----------------------------------------------------------------


def _position(digits: bytes) -> Optional[int]:
    """
    A byte position: ASCII digits, however many; L{None} otherwise.
    """
    if not digits.isdigit():
        return None
    if len(digits) > 18:
        digits = digits.lstrip(b"0")
        if len(digits) > 18:
            return 10**18
    return int(digits or b"0")


def _if_range_matches(if_range: bytes, response_headers: Headers) -> bool:
    """
    RFC 9110 §13.1.5: an entity-tag matches the ETag by strong comparison;
    a date matches a strong C{Last-Modified} (one second or more before
    C{Date}) exactly.
    """
    if_range = if_range.strip(b" \t")
    if if_range[:1] == b'"' or if_range[:2] == b"W/":
        if if_range[:2] == b"W/":
            return False
        etag = header(response_headers, b"etag")
        return etag is not None and etag.strip(b" \t") == if_range
    when = parse_date(if_range)
    if when is None:
        return False
    modified = _date(response_headers, b"last-modified")
    if modified is None or modified != when:
        return False
    date = _date(response_headers, b"date")
    return date is not None and date >= modified + 1


def byte_range(
    method: bytes, request_headers: Headers, response_headers: Headers, size: int
) -> Union[None, Tuple[int, int], str]:
    """
    How to answer a Range request from a complete stored 200 of C{size}
    bytes (RFC 9110 §14).

    @return: L{None} to send the whole 200: not GET, no Range, an If-Range
        that does not match, several ranges or Range fields, a unit other
        than C{bytes}, or an invalid Range.  C{(first, last)}, inclusive,
        for one satisfiable range C{bytes=a-b}, C{bytes=a-} or
        C{bytes=-suffix}, C{last} clipped to C{size - 1}.
        C{"unsatisfiable"} when the range starts at or beyond C{size}, or
        is a suffix of 0 bytes or of an empty body: answer 416 with
        C{Content-Range: bytes */size}.
    """
    if method != b"GET":
        return None
    spec: Optional[bytes] = None
    for name, value in request_headers:
        if name.lower() == b"range":
            if spec is not None:
                return None
            spec = value
    if spec is None:
        return None
    if_range = header(request_headers, b"if-range")
    if if_range is not None and not _if_range_matches(if_range, response_headers):
        return None
    unit, equals, ranges = spec.partition(b"=")
    if not equals or unit.strip(b" \t").lower() != b"bytes":
        return None
    members: List[bytes] = []
    _split_members(ranges, members)
    if len(members) != 1:
        return None
    first_text, dash, last_text = members[0].partition(b"-")
    if not dash:
        return None
    if not first_text:
        suffix = _position(last_text)
        if suffix is None:
            return None
        if suffix == 0 or size <= 0:
            return "unsatisfiable"
        return (max(0, size - suffix), size - 1)
    first = _position(first_text)
    if first is None:
        return None
    last: Optional[int] = None
    if last_text:
        last = _position(last_text)
        if last is None or last < first:
            return None
    if first >= size:
        return "unsatisfiable"
    return (first, size - 1 if last is None else min(last, size - 1))


# -- Cache-Status -----------------------------------------------------------


def _sf_item(text: str) -> str:
    """
    C{text} as an RFC 8941 bare item: a token when it is one, else a
    string (characters outside printable ASCII become C{"?"}).
    """
    if _SF_TOKEN.match(text):
        return text
    chars = []
    for c in text:
        if c == "\\" or c == '"':
            chars.append("\\" + c)
        elif " " <= c <= "~":
            chars.append(c)
        else:
            chars.append("?")
    return '"' + "".join(chars) + '"'


def cache_status(
    cache_name: str,
    hit: bool,
    fwd: Optional[str] = None,
    fwd_status: Optional[int] = None,
    ttl: Optional[float] = None,
    stored: bool = False,
    detail: Optional[str] = None,
) -> bytes:
    """
    An RFC 9211 C{Cache-Status} field value for one cache, parameters in
    this order: C{hit}, C{fwd}, C{fwd-status}, C{ttl} (rounded down, may be
    negative), C{stored}, C{detail}::

        b"edge; hit; ttl=42"
        b"edge; fwd=uri-miss; stored"
        b"edge; fwd=stale; fwd-status=304"
        b"edge; fwd=miss; detail=no-store"

    Names and values that are not RFC 8941 tokens are written as strings.
    The caller keeps C{hit} and C{fwd} apart: both are written if given.
    """
    parts = [_sf_item(cache_name)]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append("fwd=" + _sf_item(fwd))
    if fwd_status is not None:
        parts.append("fwd-status=%d" % fwd_status)
    if ttl is not None and ttl == ttl:  # NaN is no ttl
        bounded = min(max(ttl, -_SF_INTEGER_MAX), _SF_INTEGER_MAX)
        parts.append("ttl=%d" % math.floor(bounded))
    if stored:
        parts.append("stored")
    if detail is not None:
        parts.append("detail=" + _sf_item(detail))
    return "; ".join(parts).encode("ascii")
