"""
Tests for L{twisted_proxy.cache.rules}: the shared cache's RFC 9111 rules,
read as their specification.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.cache.rules import (
    MAX_DELTA,
    STALE_REVALIDATE,
    USE,
    USE_STALE,
    VALIDATE,
    Verdict,
    byte_range,
    cache_control,
    cache_status,
    current_age,
    decide,
    delta_seconds,
    format_date,
    freshness_lifetime,
    header,
    header_list,
    initial_age,
    invalidated_urls,
    merge_not_modified,
    not_modified,
    parse_date,
    stale_if_error,
    storable,
    validators,
    vary_key,
    vary_names,
)

Headers = List[Tuple[bytes, bytes]]

#: Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date.
T0 = 784111777.0
DAY = 86400.0


def http_date(t: float) -> bytes:
    """
    C{t} as an IMF-fixdate.
    """
    return format_date(t)


def cc(*directives: str) -> Tuple[bytes, bytes]:
    """
    A Cache-Control field with these directives.
    """
    return (b"Cache-Control", ", ".join(directives).encode("ascii"))


def response(*fields: Tuple[bytes, bytes], date: Optional[float] = T0) -> Headers:
    """
    Response fields with a C{Date} of C{date} (none if L{None}) first.
    """
    headers: Headers = []
    if date is not None:
        headers.append((b"Date", http_date(date)))
    headers.extend(fields)
    return headers


def verdict(
    request: Headers,
    resp: Headers,
    now: float,
    status: int = 200,
    request_time: float = T0,
    response_time: float = T0,
) -> Verdict:
    """
    L{decide} for a response requested and received at C{T0}.
    """
    return decide(request, status, resp, request_time, response_time, now)


class HeaderTests(SynchronousTestCase):
    """
    L{header} and L{header_list} read fields by lower-case name.
    """

    def test_header_first_value_any_case(self) -> None:
        """
        L{header} returns the value of the first field with that name,
        whatever the letter case of the name, as received.
        """
        headers = [(b"X-A", b"1"), (b"ETAG", b' "x" '), (b"etag", b'"y"')]
        self.assertEqual(header(headers, b"etag"), b' "x" ')
        self.assertEqual(header(headers, b"x-a"), b"1")

    def test_header_absent(self) -> None:
        """
        L{header} returns L{None} for a name not present, and C{b""} for a
        present empty field.
        """
        headers = [(b"X-Empty", b"")]
        self.assertIsNone(header(headers, b"etag"))
        self.assertEqual(header(headers, b"x-empty"), b"")

    def test_header_list_members_of_all_fields(self) -> None:
        """
        L{header_list} returns the comma-separated members of every field of
        that name, in order, stripped, with empty members dropped.
        """
        headers = [
            (b"Vary", b" Accept-Encoding ,, Accept "),
            (b"Other", b"x"),
            (b"vary", b"Cookie,"),
            (b"VARY", b""),
        ]
        self.assertEqual(
            header_list(headers, b"vary"), [b"Accept-Encoding", b"Accept", b"Cookie"]
        )

    def test_header_list_quoted_commas(self) -> None:
        """
        A comma inside a quoted string does not split a member; an escaped
        quote does not end the string.
        """
        headers = [(b"X", b'a="1, 2", b="x\\", y", c')]
        self.assertEqual(header_list(headers, b"x"), [b'a="1, 2"', b'b="x\\", y"', b"c"])

    def test_header_list_absent(self) -> None:
        """
        L{header_list} returns an empty list when there is no such field.
        """
        self.assertEqual(header_list([(b"A", b"b")], b"vary"), [])


class CacheControlTests(SynchronousTestCase):
    """
    L{cache_control} merges all Cache-Control fields into a dictionary.
    """

    def test_directives(self) -> None:
        """
        Directive names are lower-cased; a directive without argument maps
        to L{None}, one with an argument to its text.
        """
        self.assertEqual(
            cache_control([(b"Cache-Control", b"Public, MAX-AGE=60, no-transform")]),
            {"public": None, "max-age": "60", "no-transform": None},
        )

    def test_fields_merged(self) -> None:
        """
        Several Cache-Control fields (any name case) are read as one list;
        other fields are ignored.
        """
        headers = [
            (b"cache-control", b"max-age=5"),
            (b"Pragma", b"no-cache"),
            (b"CACHE-CONTROL", b"must-revalidate"),
        ]
        self.assertEqual(cache_control(headers), {"max-age": "5", "must-revalidate": None})

    def test_first_occurrence_wins(self) -> None:
        """
        A repeated directive keeps its first argument, within a field and
        across fields (RFC 9111 §4.2.1).
        """
        headers = [
            (b"Cache-Control", b"max-age=10, max-age=99"),
            (b"Cache-Control", b"MAX-AGE=1, s-maxage=3"),
            (b"Cache-Control", b"s-maxage=4"),
        ]
        self.assertEqual(cache_control(headers), {"max-age": "10", "s-maxage": "3"})

    def test_quoted_arguments(self) -> None:
        """
        A quoted-string argument is unquoted, may contain commas and
        escaped characters, and is accepted for any directive
        (C{max-age="60"} is C{"60"}).
        """
        headers = [
            (
                b"Cache-Control",
                b'private="Set-Cookie, X-Token", max-age="60", ext="a\\"b\\\\c", no-cache',
            )
        ]
        self.assertEqual(
            cache_control(headers),
            {
                "private": "Set-Cookie, X-Token",
                "max-age": "60",
                "ext": 'a"b\\c',
                "no-cache": None,
            },
        )

    def test_whitespace(self) -> None:
        """
        Whitespace around members, names and arguments is ignored.
        """
        self.assertEqual(
            cache_control([(b"Cache-Control", b"  max-age = 60 ,\tpublic\t")]),
            {"max-age": "60", "public": None},
        )

    def test_empty_argument(self) -> None:
        """
        C{max-age=} has the empty argument C{""}, which differs from no
        argument.
        """
        self.assertEqual(cache_control([(b"Cache-Control", b"max-age=")]), {"max-age": ""})

    def test_junk_never_raises(self) -> None:
        """
        Junk gives junk directives or none, never an exception: empty
        members and members without a name are skipped, an unterminated
        quoted string ends at the end of the field, and bytes outside ASCII
        are read as Latin-1.
        """
        self.assertEqual(cache_control([(b"Cache-Control", b",, ,=5, =")]), {})
        self.assertEqual(
            cache_control([(b"Cache-Control", b'a=b=c, d="unterminated, e')]),
            {"a": "b=c", "d": "unterminated, e"},
        )
        self.assertEqual(cache_control([(b"Cache-Control", b"max-age=\xb2")]), {"max-age": "\xb2"})
        self.assertEqual(cache_control([(b"Cache-Control", b"")]), {})
        self.assertEqual(cache_control([]), {})

    def test_text_after_closing_quote_ignored(self) -> None:
        """
        Text between a closing quote and the next comma is ignored.
        """
        self.assertEqual(
            cache_control([(b"Cache-Control", b'x="a" junk, public')]),
            {"x": "a", "public": None},
        )


class DeltaSecondsTests(SynchronousTestCase):
    """
    L{delta_seconds} reads a directive's delta-seconds argument.
    """

    def test_valid(self) -> None:
        """
        A string of digits is its value; leading zeros are allowed.
        """
        self.assertEqual(delta_seconds({"max-age": "60"}, "max-age"), 60)
        self.assertEqual(delta_seconds({"max-age": "0"}, "max-age"), 0)
        self.assertEqual(delta_seconds({"max-age": "007"}, "max-age"), 7)

    def test_absent_or_without_argument(self) -> None:
        """
        An absent directive, or one without argument, has no value.
        """
        self.assertIsNone(delta_seconds({}, "max-age"))
        self.assertIsNone(delta_seconds({"max-age": None}, "max-age"))

    def test_invalid(self) -> None:
        """
        Anything but plain ASCII digits has no value: signs, decimals,
        spaces, empty text, other Unicode digits.
        """
        for text in ["-1", "+5", "1.5", "", "1 0", "abc", "\xb2", "٣", "1e3"]:
            self.assertIsNone(delta_seconds({"max-age": text}, "max-age"), text)

    def test_huge_capped(self) -> None:
        """
        Values beyond 2**31 are read as 2**31 (RFC 9111 §1.2.2), however
        many digits they have.
        """
        self.assertEqual(MAX_DELTA, 2**31)
        self.assertEqual(delta_seconds({"a": "2147483647"}, "a"), 2**31 - 1)
        self.assertEqual(delta_seconds({"a": "2147483648"}, "a"), 2**31)
        self.assertEqual(delta_seconds({"a": "99999999999"}, "a"), 2**31)
        self.assertEqual(delta_seconds({"a": "9" * 10000}, "a"), 2**31)
        self.assertEqual(delta_seconds({"a": "0" * 50 + "12"}, "a"), 12)


class DateTests(SynchronousTestCase):
    """
    L{parse_date} reads the three HTTP-date formats; L{format_date} writes
    IMF-fixdate.
    """

    def test_three_formats(self) -> None:
        """
        IMF-fixdate, RFC 850 and asctime dates of the same instant parse to
        the same time.
        """
        self.assertEqual(parse_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), T0)
        self.assertEqual(parse_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), T0)
        self.assertEqual(parse_date(b"Sun Nov  6 08:49:37 1994"), T0)
        self.assertEqual(parse_date(b"Thu Nov 17 08:49:37 1994"), T0 + 11 * DAY)

    def test_epoch_and_leap_day(self) -> None:
        """
        The epoch is 0; 29 February exists in leap years only.
        """
        self.assertEqual(parse_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), 0.0)
        self.assertEqual(parse_date(b"Sat, 29 Feb 2020 12:00:00 GMT"), 1582977600.0)
        self.assertIsNone(parse_date(b"Tue, 29 Feb 2022 12:00:00 GMT"))
        self.assertEqual(parse_date(b"Tue, 29 Feb 2000 00:00:00 GMT"), 951782400.0)
        self.assertIsNone(parse_date(b"Thu, 29 Feb 1900 00:00:00 GMT"))

    def test_surrounding_space(self) -> None:
        """
        Spaces and tabs around the date are ignored.
        """
        self.assertEqual(parse_date(b"  Sun, 06 Nov 1994 08:49:37 GMT\t"), T0)

    def test_leap_second(self) -> None:
        """
        A leap second (:60) is read as :59.
        """
        self.assertEqual(parse_date(b"Sun, 06 Nov 1994 08:49:60 GMT"), T0 + 22)

    def test_rfc850_year_window(self) -> None:
        """
        An RFC 850 two-digit year is read between 1969 and 2068, as Varnish
        does.
        """
        self.assertEqual(parse_date(b"Wednesday, 01-Jan-69 00:00:00 GMT"), -365 * DAY)
        self.assertEqual(
            parse_date(b"Saturday, 31-Dec-68 00:00:00 GMT"),
            parse_date(b"Sat, 31 Dec 2068 00:00:00 GMT"),
        )
        self.assertEqual(
            parse_date(b"Thursday, 01-Jan-70 00:00:00 GMT"), 0.0
        )

    def test_invalid(self) -> None:
        """
        Anything else is invalid: C{"0"}, the wrong day name, lower-case
        names, other zones, out-of-range fields, ISO 8601, truncated dates.
        """
        for value in [
            b"0",
            b"",
            b"-1",
            b"Mon, 06 Nov 1994 08:49:37 GMT",
            b"sun, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06 nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37 +0000",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 06 Nov 1994 08:49:61 GMT",
            b"Sun, 06 Nov 1994 08-49-37 GMT",
            b"Sun, 31 Nov 1994 08:49:37 GMT",
            b"Sun, 00 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 94 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMTX",
            b"Sun, 06 Nov 1994 08:49:3  GMT",
            b"Sun, 06 Nov +994 08:49:37 GMT",
            b"Monday, 06-Nov-94 08:49:37 GMT",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Sunday, 06 Nov 94 08:49:37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"Sun Nov  6 08:49:37 94",
            b"Mon Nov  6 08:49:37 1994",
            b"1994-11-06T08:49:37",
            b"Sun, 06 Nov 1994",
            b"\xff\xfe, 06 Nov 1994 08:49:37 GMT",
        ]:
            self.assertIsNone(parse_date(value), value)

    def test_format(self) -> None:
        """
        L{format_date} writes an IMF-fixdate, dropping fractions of a second.
        """
        self.assertEqual(format_date(T0), b"Sun, 06 Nov 1994 08:49:37 GMT")
        self.assertEqual(format_date(T0 + 0.999), b"Sun, 06 Nov 1994 08:49:37 GMT")
        self.assertEqual(format_date(0.0), b"Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertEqual(format_date(1582977600.0), b"Sat, 29 Feb 2020 12:00:00 GMT")

    def test_format_clamped(self) -> None:
        """
        Times before 1970 or after 9999 are clamped rather than failing.
        """
        self.assertEqual(format_date(-5.0), b"Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertEqual(format_date(1e300), b"Fri, 31 Dec 9999 23:59:59 GMT")

    def test_round_trip(self) -> None:
        """
        Every formatted date parses back to its time, across decades.
        """
        t = 0.0
        while t < 4102444800.0:  # 2100
            self.assertEqual(parse_date(format_date(t)), t)
            t += 12345678.0


class StorableTests(SynchronousTestCase):
    """
    L{storable} says whether a shared cache may store a response, and if
    not, why (RFC 9111 §3).
    """

    def check(
        self,
        reason: Optional[str],
        resp: Headers,
        request: Optional[Headers] = None,
        status: int = 200,
        method: bytes = b"GET",
    ) -> None:
        """
        L{storable} says C{reason} for this request and response.
        """
        self.assertEqual(storable(method, status, request or [], resp), reason)

    def test_fresh_get_200(self) -> None:
        """
        A GET 200 with max-age is stored.
        """
        self.check(None, response(cc("max-age=60")))

    def test_method(self) -> None:
        """
        Only GET responses are stored: HEAD, POST and others are not, even
        with explicit freshness.
        """
        for method in [b"HEAD", b"POST", b"PUT", b"get"]:
            self.check("method", response(cc("public, max-age=60")), method=method)

    def test_status(self) -> None:
        """
        Non-final statuses, 206, 304 and anything outside 200-599 are never
        stored; other statuses in that range may be.
        """
        fresh = response(cc("max-age=60"))
        for status in [100, 101, 103, 199, 206, 304, 600, 0, 999]:
            self.check("status", fresh, status=status)
        for status in [200, 201, 299, 302, 307, 400, 403, 500, 503, 599]:
            self.check(None, fresh, status=status)

    def test_no_store(self) -> None:
        """
        C{no-store} in the request or the response prevents storing.
        """
        self.check("no-store", response(cc("max-age=60, no-store")))
        self.check("no-store", response(cc("max-age=60")), request=[cc("no-store")])

    def test_must_understand(self) -> None:
        """
        With C{must-understand}, a response's C{no-store} is ignored for a
        status this cache understands (RFC 9111 §5.2.2.3), and a status it
        does not know is not stored; a request's C{no-store} still applies.
        """
        self.check(None, response(cc("must-understand, no-store, max-age=60")))
        self.check(
            "status", response(cc("must-understand, no-store, max-age=60")), status=299
        )
        self.check(
            "no-store",
            response(cc("must-understand, max-age=60")),
            request=[cc("no-store")],
        )

    def test_private(self) -> None:
        """
        C{private} prevents storing in a shared cache, in its qualified form
        too.
        """
        self.check("private", response(cc("private, max-age=60")))
        self.check("private", response(cc('private="Set-Cookie", max-age=60')))

    def test_authorization(self) -> None:
        """
        A response to a request with Authorization is stored only with
        C{must-revalidate}, C{public} or C{s-maxage} (RFC 9111 §3.5);
        C{proxy-revalidate} is not enough.
        """
        request = [(b"Authorization", b"Bearer x")]
        self.check("authorization", response(cc("max-age=60")), request)
        self.check("authorization", response(cc("max-age=60, proxy-revalidate")), request)
        self.check(None, response(cc("max-age=60, must-revalidate")), request)
        self.check(None, response(cc("public, max-age=60")), request)
        self.check(None, response(cc("s-maxage=60")), request)
        self.check(None, response(cc("max-age=60")), [(b"Proxy-Authorization", b"x")])

    def test_set_cookie(self) -> None:
        """
        A response with Set-Cookie is stored only with C{public} or
        C{s-maxage} (the project's choice); C{must-revalidate} does not
        allow it.
        """
        cookie = (b"Set-Cookie", b"id=1")
        self.check("set-cookie", response(cc("max-age=60"), cookie))
        self.check("set-cookie", response(cc("max-age=60, must-revalidate"), cookie))
        self.check(None, response(cc("public, max-age=60"), cookie))
        self.check(None, response(cc("s-maxage=60"), cookie))

    def test_vary_star(self) -> None:
        """
        A response varying on C{*} is never stored; other Vary values are.
        """
        self.check("vary-star", response(cc("max-age=60"), (b"Vary", b"Accept, *")))
        self.check("vary-star", response(cc("max-age=60"), (b"Vary", b"a"), (b"vary", b"*")))
        self.check(None, response(cc("max-age=60"), (b"Vary", b"Accept-Encoding")))

    def test_explicit_freshness_for_any_status(self) -> None:
        """
        A status that is not heuristically cacheable (302, 500) is stored
        only with explicit freshness: C{max-age}, C{s-maxage}, C{Expires}
        or C{public}.
        """
        for status in [302, 307, 500, 503]:
            self.check(
                "not-cacheable", response((b"Last-Modified", http_date(T0 - DAY))), status=status
            )
            self.check(None, response(cc("max-age=60")), status=status)
            self.check(None, response(cc("s-maxage=60")), status=status)
            self.check(None, response((b"Expires", http_date(T0 + 60))), status=status)
            self.check(
                None,
                response(cc("public"), (b"Last-Modified", http_date(T0 - DAY))),
                status=status,
            )

    def test_heuristic_statuses(self) -> None:
        """
        The heuristically cacheable statuses are stored without explicit
        freshness when they have a Last-Modified (giving heuristic
        freshness and a validator).
        """
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]:
            self.check(None, response((b"Last-Modified", http_date(T0 - DAY))), status=status)

    def test_nothing_to_reuse(self) -> None:
        """
        A response with no freshness at all, no validator and no
        stale-while-revalidate or stale-if-error is not stored: it could
        never be reused.
        """
        self.check("not-cacheable", response())
        self.check("not-cacheable", response(cc("max-age=0")))
        self.check("not-cacheable", response((b"Expires", b"0")))
        self.check("not-cacheable", response((b"Expires", http_date(T0 - 1))))
        self.check("not-cacheable", response(cc("max-age=abc")))
        self.check("not-cacheable", response(cc("public")))

    def test_validator_is_enough(self) -> None:
        """
        A response without freshness is stored when it has an ETag or a
        valid Last-Modified, since it can be revalidated.
        """
        self.check(None, response(cc("max-age=0"), (b"ETag", b'"a"')))
        self.check(None, response((b"ETag", b'W/"a"')))
        self.check(None, response(cc("max-age=0"), (b"Last-Modified", http_date(T0))))
        self.check("not-cacheable", response(cc("max-age=0"), (b"Last-Modified", b"yesterday")))

    def test_stale_extensions_are_enough(self) -> None:
        """
        A response without freshness or validator is stored when
        stale-while-revalidate or stale-if-error (greater than 0) lets it
        be served stale, unless stale serving is forbidden.
        """
        self.check(None, response(cc("max-age=0, stale-while-revalidate=30")))
        self.check(None, response(cc("max-age=0, stale-if-error=300")))
        self.check("not-cacheable", response(cc("max-age=0, stale-if-error=0")))
        self.check("not-cacheable", response(cc("max-age=0, stale-if-error=abc")))
        self.check(
            "not-cacheable", response(cc("max-age=0, must-revalidate, stale-if-error=300"))
        )

    def test_no_cache_is_stored(self) -> None:
        """
        C{no-cache} in the response does not prevent storing: it forces
        validation, so it is stored when it has a validator; without one it
        could never be reused.
        """
        self.check(None, response(cc("no-cache, max-age=60"), (b"ETag", b'"a"')))
        self.check(None, response(cc('no-cache="Set-Cookie"'), (b"ETag", b'"a"')))
        self.check("not-cacheable", response(cc("no-cache, max-age=60")))
        self.check("not-cacheable", response(cc("no-cache, max-age=60, stale-if-error=60")))

    def test_request_no_cache_is_stored(self) -> None:
        """
        C{no-cache} and Pragma in the request do not prevent storing the
        response.
        """
        self.check(None, response(cc("max-age=60")), [cc("no-cache"), (b"Pragma", b"no-cache")])

    def test_expires_without_date(self) -> None:
        """
        An Expires without Date is measured from the C{response_time} given;
        without it, such a response needs a validator.
        """
        resp = [(b"Expires", http_date(T0 + 60))]
        self.assertIsNone(storable(b"GET", 200, [], resp, response_time=T0))
        self.assertEqual(storable(b"GET", 200, [], resp, response_time=T0 + 61), "not-cacheable")
        self.assertEqual(storable(b"GET", 200, [], resp), "not-cacheable")

    def test_reason_order(self) -> None:
        """
        Reasons are checked in the documented order: method, status,
        no-store, private, authorization, set-cookie, vary-star.
        """
        everything = response(
            cc("no-store, private"), (b"Set-Cookie", b"a=b"), (b"Vary", b"*")
        )
        auth = [(b"Authorization", b"x")]
        self.assertEqual(storable(b"POST", 206, auth, everything), "method")
        self.assertEqual(storable(b"GET", 206, auth, everything), "status")
        self.assertEqual(storable(b"GET", 200, auth, everything), "no-store")
        private = response(cc("private"), (b"Set-Cookie", b"a=b"), (b"Vary", b"*"))
        self.assertEqual(storable(b"GET", 200, auth, private), "private")
        rest = response((b"Set-Cookie", b"a=b"), (b"Vary", b"*"))
        self.assertEqual(storable(b"GET", 200, auth, rest), "authorization")
        self.assertEqual(storable(b"GET", 200, [], rest), "set-cookie")
        self.assertEqual(storable(b"GET", 200, [], response((b"Vary", b"*"))), "vary-star")


class FreshnessLifetimeTests(SynchronousTestCase):
    """
    L{freshness_lifetime} is a shared cache's freshness lifetime
    (RFC 9111 §4.2.1, §4.2.2).
    """

    def test_s_maxage_overrides_max_age(self) -> None:
        """
        For a shared cache, s-maxage wins over max-age and Expires, even
        when shorter.
        """
        resp = response(cc("max-age=600, s-maxage=60"), (b"Expires", http_date(T0 + 9000)))
        self.assertEqual(freshness_lifetime(200, resp), 60.0)

    def test_max_age_overrides_expires(self) -> None:
        """
        max-age wins over Expires.
        """
        resp = response(cc("max-age=60"), (b"Expires", http_date(T0 + 9000)))
        self.assertEqual(freshness_lifetime(200, resp), 60.0)

    def test_invalid_max_age_is_stale(self) -> None:
        """
        An invalid max-age or s-maxage makes the response stale rather than
        falling back to the next rule (RFC 9111 §4.2.1).
        """
        expires = (b"Expires", http_date(T0 + 9000))
        for value in ["max-age=-1", "max-age=abc", "max-age=1.5", "max-age", "s-maxage=x"]:
            self.assertEqual(freshness_lifetime(200, response(cc(value), expires)), 0.0, value)
        self.assertEqual(
            freshness_lifetime(200, response(cc("s-maxage=x, max-age=60"))), 0.0
        )

    def test_huge_max_age(self) -> None:
        """
        A huge max-age is capped at 2**31 seconds.
        """
        self.assertEqual(freshness_lifetime(200, response(cc("max-age=99999999999999"))), 2.0**31)

    def test_duplicate_max_age(self) -> None:
        """
        Of two max-age directives the first is used.
        """
        resp = response(cc("max-age=30"), cc("max-age=3000"))
        self.assertEqual(freshness_lifetime(200, resp), 30.0)

    def test_quoted_max_age(self) -> None:
        """
        A quoted max-age is accepted.
        """
        self.assertEqual(freshness_lifetime(200, response(cc('max-age="45"'))), 45.0)

    def test_expires_minus_date(self) -> None:
        """
        Without max-age, the lifetime is Expires minus Date.
        """
        resp = response((b"Expires", http_date(T0 + 3600)))
        self.assertEqual(freshness_lifetime(200, resp), 3600.0)

    def test_expires_invalid_or_past(self) -> None:
        """
        An invalid Expires (such as C{"0"}) or one before Date gives 0.
        """
        for value in [b"0", b"-1", b"never", http_date(T0 - 10), http_date(T0)]:
            self.assertEqual(freshness_lifetime(200, response((b"Expires", value))), 0.0, value)

    def test_first_expires(self) -> None:
        """
        Of two Expires fields the first is used.
        """
        resp = response((b"Expires", http_date(T0 + 10)), (b"Expires", http_date(T0 + 999)))
        self.assertEqual(freshness_lifetime(200, resp), 10.0)

    def test_expires_without_date(self) -> None:
        """
        Without a (valid) Date, Expires is measured from the response time;
        without that either, the lifetime is 0.
        """
        resp = [(b"Expires", http_date(T0 + 100))]
        self.assertEqual(freshness_lifetime(200, resp, response_time=T0 + 40), 60.0)
        bad_date = [(b"Date", b"garbage")] + resp
        self.assertEqual(freshness_lifetime(200, bad_date, response_time=T0 + 40), 60.0)
        self.assertEqual(freshness_lifetime(200, resp), 0.0)

    def test_date_preferred_to_response_time(self) -> None:
        """
        A valid Date is used even when a response time is given.
        """
        resp = response((b"Expires", http_date(T0 + 100)))
        self.assertEqual(freshness_lifetime(200, resp, response_time=T0 + 40), 100.0)

    def test_heuristic(self) -> None:
        """
        Without explicit freshness, a heuristically cacheable status gets
        10% of Date minus Last-Modified.
        """
        resp = response((b"Last-Modified", http_date(T0 - 1000)))
        self.assertEqual(freshness_lifetime(200, resp), 100.0)
        self.assertEqual(freshness_lifetime(404, resp), 100.0)
        self.assertEqual(freshness_lifetime(301, resp), 100.0)

    def test_heuristic_capped_at_a_day(self) -> None:
        """
        The heuristic lifetime is at most one day.
        """
        resp = response((b"Last-Modified", http_date(T0 - 365 * DAY)))
        self.assertEqual(freshness_lifetime(200, resp), DAY)

    def test_heuristic_needs_last_modified(self) -> None:
        """
        Without a valid Last-Modified, or with one after Date, there is no
        heuristic lifetime.
        """
        self.assertEqual(freshness_lifetime(200, response()), 0.0)
        self.assertEqual(freshness_lifetime(200, response((b"Last-Modified", b"x"))), 0.0)
        future = response((b"Last-Modified", http_date(T0 + 1000)))
        self.assertEqual(freshness_lifetime(200, future), 0.0)

    def test_heuristic_without_date(self) -> None:
        """
        Without Date the heuristic uses the response time, or gives 0.
        """
        resp = [(b"Last-Modified", http_date(T0 - 1000))]
        self.assertEqual(freshness_lifetime(200, resp, response_time=T0), 100.0)
        self.assertEqual(freshness_lifetime(200, resp), 0.0)

    def test_heuristic_only_for_listed_statuses_or_public(self) -> None:
        """
        Other statuses get no heuristic lifetime, unless the response is
        C{public}.
        """
        lm = (b"Last-Modified", http_date(T0 - 1000))
        for status in [201, 302, 307, 400, 403, 500, 503]:
            self.assertEqual(freshness_lifetime(status, response(lm)), 0.0, status)
            self.assertEqual(freshness_lifetime(status, response(cc("public"), lm)), 100.0)


class AgeTests(SynchronousTestCase):
    """
    L{initial_age} and L{current_age} follow RFC 9111 §4.2.3.
    """

    def test_response_delay(self) -> None:
        """
        Without Age, and with a Date no later than the request, the initial
        age is the response delay.
        """
        resp = response(date=T0)
        self.assertEqual(initial_age(resp, T0, T0 + 2), 2.0)

    def test_age_header(self) -> None:
        """
        The Age field is added to the response delay.
        """
        resp = response((b"Age", b"100"), date=T0)
        self.assertEqual(initial_age(resp, T0, T0 + 2), 102.0)

    def test_apparent_age(self) -> None:
        """
        When Date is further in the past than Age says, the apparent age
        (response time minus Date) wins.
        """
        resp = response((b"Age", b"10"), date=T0 - 500)
        self.assertEqual(initial_age(resp, T0, T0 + 1), 501.0)

    def test_date_in_future(self) -> None:
        """
        A Date after the response time gives an apparent age of 0, never a
        negative one.
        """
        resp = response(date=T0 + 1000)
        self.assertEqual(initial_age(resp, T0, T0), 0.0)

    def test_no_date(self) -> None:
        """
        Without a valid Date, the apparent age is 0.
        """
        self.assertEqual(initial_age([(b"Age", b"7")], T0, T0 + 1), 8.0)
        self.assertEqual(initial_age([(b"Date", b"0")], T0, T0), 0.0)

    def test_invalid_age(self) -> None:
        """
        An Age that is not exactly one non-negative integer (a sign, text, a
        list, a fraction, parameters, a second field) makes the response
        stale (it counts as 2**31); a huge one counts as 2**31; whitespace
        around the number is fine.
        """
        huge = 2.0**31
        for value in (b"-5", b"abc", b"1, 2", b"0, 0", b"7200.0", b"7200;foo=bar", b""):
            self.assertEqual(initial_age(response((b"Age", value)), T0, T0), huge, value)
        self.assertEqual(initial_age(response((b"Age", b" 5 ")), T0, T0), 5.0)
        self.assertEqual(initial_age(response((b"Age", b"9" * 40)), T0, T0), huge)
        self.assertEqual(initial_age(response((b"Age", b"3"), (b"Age", b"3")), T0, T0), huge)

    def test_negative_delay(self) -> None:
        """
        A response time before the request time counts as no delay.
        """
        self.assertEqual(initial_age(response(date=T0 - 5), T0, T0 - 5), 0.0)

    def test_current_age(self) -> None:
        """
        The current age is the initial age plus the time resident in the
        cache; a clock before the response time adds nothing.
        """
        self.assertEqual(current_age(10.0, T0, T0 + 50), 60.0)
        self.assertEqual(current_age(10.0, T0, T0 - 50), 10.0)


class DecideTests(SynchronousTestCase):
    """
    L{decide} says whether a stored response can answer a request now.
    """

    def test_fresh(self) -> None:
        """
        A fresh response is used; the verdict carries the whole age and the
        remaining lifetime.
        """
        v = verdict([], response(cc("max-age=60")), now=T0 + 10.7)
        self.assertEqual(v.action, USE)
        self.assertEqual(v.age, 10)
        self.assertAlmostEqual(v.ttl, 49.3)

    def test_verdict_value(self) -> None:
        """
        Verdicts compare by value.
        """
        self.assertEqual(
            verdict([], response(cc("max-age=60")), now=T0 + 10), Verdict(USE, 10, 50.0)
        )

    def test_stale(self) -> None:
        """
        A stale response goes to the origin; its ttl is negative.
        """
        v = verdict([], response(cc("max-age=60")), now=T0 + 100)
        self.assertEqual(v, Verdict(VALIDATE, 100, -40.0))

    def test_exactly_expired_is_stale(self) -> None:
        """
        At an age equal to the lifetime the response is stale.
        """
        self.assertEqual(verdict([], response(cc("max-age=60")), now=T0 + 60).action, VALIDATE)
        self.assertEqual(verdict([], response(cc("max-age=60")), now=T0 + 59.9).action, USE)

    def test_age_header_counts(self) -> None:
        """
        The Age the response arrived with counts against its lifetime.
        """
        resp = response(cc("max-age=60"), (b"Age", b"50"))
        self.assertEqual(verdict([], resp, now=T0 + 5), Verdict(USE, 55, 5.0))
        self.assertEqual(verdict([], resp, now=T0 + 11).action, VALIDATE)

    def test_response_delay_counts(self) -> None:
        """
        The time between request and response counts into the age.
        """
        resp = response(cc("max-age=60"), date=T0 + 30)
        v = decide([], 200, resp, T0, T0 + 30, T0 + 40)
        self.assertEqual(v, Verdict(USE, 40, 20.0))

    def test_s_maxage(self) -> None:
        """
        s-maxage, not max-age, sets the lifetime in a shared cache.
        """
        resp = response(cc("max-age=600, s-maxage=60"))
        self.assertEqual(verdict([], resp, now=T0 + 100).action, VALIDATE)
        resp = response(cc("max-age=6, s-maxage=60"))
        self.assertEqual(verdict([], resp, now=T0 + 30).action, USE)

    def test_heuristic(self) -> None:
        """
        A response with only Last-Modified is fresh for its heuristic
        lifetime.
        """
        resp = response((b"Last-Modified", http_date(T0 - 1000)))
        self.assertEqual(verdict([], resp, now=T0 + 99).action, USE)
        self.assertEqual(verdict([], resp, now=T0 + 101).action, VALIDATE)

    def test_response_no_cache(self) -> None:
        """
        A response with no-cache, qualified or not, is always validated.
        """
        for directive in ["no-cache", 'no-cache="Set-Cookie"']:
            resp = response(cc("max-age=600", directive))
            self.assertEqual(verdict([], resp, now=T0 + 1).action, VALIDATE)
            self.assertEqual(verdict([cc("max-stale")], resp, now=T0 + 1).action, VALIDATE)

    def test_request_no_cache(self) -> None:
        """
        A request with no-cache is validated however fresh the response.
        """
        resp = response(cc("max-age=600"))
        self.assertEqual(verdict([cc("no-cache")], resp, now=T0 + 1).action, VALIDATE)

    def test_pragma_no_cache(self) -> None:
        """
        Pragma: no-cache acts as no-cache when the request has no
        Cache-Control field, and is ignored when it has one.
        """
        resp = response(cc("max-age=600"))
        self.assertEqual(verdict([(b"Pragma", b"no-cache")], resp, now=T0 + 1).action, VALIDATE)
        self.assertEqual(verdict([(b"Pragma", b"x, NO-CACHE")], resp, now=T0 + 1).action, VALIDATE)
        ignored = [(b"Pragma", b"no-cache"), cc("max-stale")]
        self.assertEqual(verdict(ignored, resp, now=T0 + 1).action, USE)
        self.assertEqual(verdict([(b"Pragma", b"other")], resp, now=T0 + 1).action, USE)

    def test_request_max_age(self) -> None:
        """
        A request max-age=N rejects a response older than N seconds, fresh
        or not.
        """
        resp = response(cc("max-age=600"))
        self.assertEqual(verdict([cc("max-age=30")], resp, now=T0 + 30).action, USE)
        self.assertEqual(verdict([cc("max-age=30")], resp, now=T0 + 31).action, VALIDATE)
        self.assertEqual(verdict([cc("max-age=0")], resp, now=T0 + 1).action, VALIDATE)

    def test_request_max_age_invalid(self) -> None:
        """
        A request max-age with an invalid argument is read as max-age=0.
        """
        resp = response(cc("max-age=600"))
        self.assertEqual(verdict([cc("max-age=x")], resp, now=T0 + 1).action, VALIDATE)
        self.assertEqual(verdict([cc("max-age")], resp, now=T0 + 1).action, VALIDATE)

    def test_request_min_fresh(self) -> None:
        """
        A request min-fresh=N wants at least N seconds of freshness left;
        an invalid argument is never satisfied.
        """
        resp = response(cc("max-age=60"))
        self.assertEqual(verdict([cc("min-fresh=20")], resp, now=T0 + 40).action, USE)
        self.assertEqual(verdict([cc("min-fresh=20")], resp, now=T0 + 41).action, VALIDATE)
        self.assertEqual(verdict([cc("min-fresh=x")], resp, now=T0 + 1).action, VALIDATE)

    def test_max_stale_without_value(self) -> None:
        """
        A request max-stale without argument accepts a response stale by
        any amount.
        """
        resp = response(cc("max-age=60"))
        v = verdict([cc("max-stale")], resp, now=T0 + 10 * DAY)
        self.assertEqual(v.action, USE_STALE)
        self.assertEqual(v.ttl, 60 - 10 * DAY)
        self.assertEqual(verdict([cc("max-stale")], resp, now=T0 + 1).action, USE)

    def test_max_stale_with_value(self) -> None:
        """
        max-stale=N accepts a response stale by at most N seconds.
        """
        resp = response(cc("max-age=60"))
        self.assertEqual(verdict([cc("max-stale=30")], resp, now=T0 + 90).action, USE_STALE)
        self.assertEqual(verdict([cc("max-stale=30")], resp, now=T0 + 91).action, VALIDATE)

    def test_max_stale_invalid(self) -> None:
        """
        A max-stale with an invalid argument allows nothing stale.
        """
        resp = response(cc("max-age=60"))
        self.assertEqual(verdict([cc("max-stale=x")], resp, now=T0 + 61).action, VALIDATE)

    def test_max_stale_with_max_age(self) -> None:
        """
        A request with both max-age and max-stale accepts a stale response
        no older than max-age.
        """
        resp = response(cc("max-age=60"))
        request = [cc("max-age=100, max-stale")]
        self.assertEqual(verdict(request, resp, now=T0 + 90).action, USE_STALE)
        self.assertEqual(verdict(request, resp, now=T0 + 101).action, VALIDATE)

    def test_revalidation_required(self) -> None:
        """
        must-revalidate, proxy-revalidate and s-maxage forbid serving a
        stale response, whatever the request's max-stale or the response's
        stale-while-revalidate say; a fresh one is still used.
        """
        for directive in ["must-revalidate", "proxy-revalidate", "s-maxage=60"]:
            resp = response(cc("max-age=60, stale-while-revalidate=600", directive))
            self.assertEqual(verdict([cc("max-stale")], resp, now=T0 + 61).action, VALIDATE)
            self.assertEqual(verdict([], resp, now=T0 + 61).action, VALIDATE)
            self.assertEqual(verdict([], resp, now=T0 + 1).action, USE)

    def test_stale_while_revalidate(self) -> None:
        """
        Within the response's stale-while-revalidate window, a stale
        response is served while it is revalidated; beyond it, it is not.
        """
        resp = response(cc("max-age=60, stale-while-revalidate=30"))
        self.assertEqual(verdict([], resp, now=T0 + 30).action, USE)
        self.assertEqual(verdict([], resp, now=T0 + 60).action, STALE_REVALIDATE)
        v = verdict([], resp, now=T0 + 90)
        self.assertEqual(v, Verdict(STALE_REVALIDATE, 90, -30.0))
        self.assertEqual(verdict([], resp, now=T0 + 91).action, VALIDATE)

    def test_stale_while_revalidate_invalid(self) -> None:
        """
        An invalid stale-while-revalidate allows nothing.
        """
        resp = response(cc("max-age=60, stale-while-revalidate=x"))
        self.assertEqual(verdict([], resp, now=T0 + 61).action, VALIDATE)

    def test_stale_while_revalidate_request_forbids(self) -> None:
        """
        A request with no-cache, max-age or min-fresh does not accept a
        response served under stale-while-revalidate.
        """
        resp = response(cc("max-age=60, stale-while-revalidate=30"))
        for request in ["no-cache", "max-age=1000", "min-fresh=0"]:
            self.assertEqual(verdict([cc(request)], resp, now=T0 + 70).action, VALIDATE, request)

    def test_max_stale_takes_precedence(self) -> None:
        """
        When the request's max-stale allows the staleness, the response is
        simply used stale, not revalidated in the background.
        """
        resp = response(cc("max-age=60, stale-while-revalidate=30"))
        self.assertEqual(verdict([cc("max-stale=20")], resp, now=T0 + 70).action, USE_STALE)
        self.assertEqual(
            verdict([cc("max-stale=5")], resp, now=T0 + 70).action, STALE_REVALIDATE
        )

    def test_no_freshness(self) -> None:
        """
        A response with no freshness information is validated at once.
        """
        resp = response((b"ETag", b'"a"'))
        self.assertEqual(verdict([], resp, now=T0), Verdict(VALIDATE, 0, 0.0))

    def test_only_if_cached_not_decided(self) -> None:
        """
        only-if-cached changes nothing here: the caller answers 504 when
        the verdict is to go to the origin.
        """
        resp = response(cc("max-age=60"))
        self.assertEqual(verdict([cc("only-if-cached")], resp, now=T0 + 1).action, USE)
        self.assertEqual(verdict([cc("only-if-cached")], resp, now=T0 + 61).action, VALIDATE)


class StaleIfErrorTests(SynchronousTestCase):
    """
    L{stale_if_error} says whether a stale response may stand in for a
    failed origin (RFC 5861 §4 within RFC 9111 §4.2.4).
    """

    def test_response_directive(self) -> None:
        """
        The response's stale-if-error=N allows a response stale by at most
        N seconds.
        """
        resp = response(cc("max-age=60, stale-if-error=300"))
        self.assertTrue(stale_if_error([], resp, 300))
        self.assertFalse(stale_if_error([], resp, 301))

    def test_request_directive(self) -> None:
        """
        The request's stale-if-error=N allows it for that request alone.
        """
        resp = response(cc("max-age=60"))
        self.assertTrue(stale_if_error([cc("stale-if-error=100")], resp, 100))
        self.assertFalse(stale_if_error([cc("stale-if-error=100")], resp, 101))
        self.assertFalse(stale_if_error([], resp, 1))

    def test_request_overrides_response(self) -> None:
        """
        A valid request stale-if-error decides over the response's, in
        either direction; an invalid one is ignored.
        """
        resp = response(cc("max-age=60, stale-if-error=300"))
        self.assertFalse(stale_if_error([cc("stale-if-error=10")], resp, 20))
        self.assertTrue(stale_if_error([cc("stale-if-error=1000")], resp, 900))
        self.assertTrue(stale_if_error([cc("stale-if-error=x")], resp, 200))

    def test_max_stale(self) -> None:
        """
        A request max-stale that covers the staleness allows it too.
        """
        resp = response(cc("max-age=60"))
        self.assertTrue(stale_if_error([cc("max-stale")], resp, 5000))
        self.assertTrue(stale_if_error([cc("max-stale=50")], resp, 50))
        self.assertFalse(stale_if_error([cc("max-stale=50")], resp, 51))

    def test_forbidden_by_response(self) -> None:
        """
        must-revalidate, proxy-revalidate, s-maxage and no-cache in the
        response forbid it, whatever the request says.
        """
        for directive in ["must-revalidate", "proxy-revalidate", "s-maxage=60", "no-cache"]:
            resp = response(cc("max-age=60, stale-if-error=300", directive))
            request = [cc("stale-if-error=300, max-stale")]
            self.assertFalse(stale_if_error(request, resp, 1), directive)

    def test_request_preferences_do_not_forbid(self) -> None:
        """
        The request's no-cache or max-age do not outweigh the origin's
        stale-if-error once the origin has failed.
        """
        resp = response(cc("max-age=60, stale-if-error=300"))
        self.assertTrue(stale_if_error([cc("no-cache")], resp, 10))
        self.assertTrue(stale_if_error([cc("max-age=0")], resp, 10))

    def test_invalid_or_absent(self) -> None:
        """
        Without a valid stale-if-error nothing is allowed.
        """
        self.assertFalse(stale_if_error([], response(cc("stale-if-error")), 0))
        self.assertFalse(stale_if_error([], response(cc("stale-if-error=-1")), 0))
        self.assertFalse(stale_if_error([], response(), 0))


class VaryTests(SynchronousTestCase):
    """
    L{vary_names} and L{vary_key} select a response's variant.
    """

    def test_names(self) -> None:
        """
        Vary names are lower-cased, deduplicated and sorted, over all Vary
        fields.
        """
        resp = [
            (b"Vary", b"Accept-Encoding, User-Agent"),
            (b"vary", b"accept-encoding ,Accept"),
        ]
        self.assertEqual(vary_names(resp), ("accept", "accept-encoding", "user-agent"))

    def test_no_vary(self) -> None:
        """
        No Vary, or an empty one, is the empty tuple.
        """
        self.assertEqual(vary_names([]), ())
        self.assertEqual(vary_names([(b"Vary", b"")]), ())

    def test_star(self) -> None:
        """
        A C{*} member anywhere gives L{None}.
        """
        self.assertIsNone(vary_names([(b"Vary", b"Accept"), (b"Vary", b" * ")]))

    def test_key_equal_for_equivalent_requests(self) -> None:
        """
        Header order, name case, whitespace around commas and split versus
        joined fields do not make a new variant.
        """
        names = ("accept", "accept-language")
        one = [
            (b"Accept", b"text/html, application/json"),
            (b"Accept-Language", b"en,fr"),
        ]
        two = [
            (b"ACCEPT-LANGUAGE", b"en ,  fr"),
            (b"Host", b"x"),
            (b"accept", b"text/html"),
            (b"Accept", b"application/json"),
        ]
        three = [
            (b"Accept-Language", b"en,,fr,"),
            (b"Accept", b"text/html,application/json"),
        ]
        self.assertEqual(vary_key(names, one), vary_key(names, two))
        self.assertEqual(vary_key(names, one), vary_key(names, three))

    def test_key_member_order_matters(self) -> None:
        """
        Members in another order make another variant.
        """
        names = ("accept-encoding",)
        self.assertNotEqual(
            vary_key(names, [(b"Accept-Encoding", b"gzip, br")]),
            vary_key(names, [(b"Accept-Encoding", b"br, gzip")]),
        )

    def test_key_value_case(self) -> None:
        """
        Values are lower-cased for Accept-Encoding only.
        """
        self.assertEqual(
            vary_key(("accept-encoding",), [(b"Accept-Encoding", b"GZIP")]),
            vary_key(("accept-encoding",), [(b"Accept-Encoding", b"gzip")]),
        )
        self.assertNotEqual(
            vary_key(("x-user",), [(b"X-User", b"Bob")]),
            vary_key(("x-user",), [(b"X-User", b"bob")]),
        )

    def test_key_absent_differs_from_empty(self) -> None:
        """
        A request without the field differs from one with an empty field.
        """
        names = ("cookie",)
        self.assertNotEqual(vary_key(names, []), vary_key(names, [(b"Cookie", b"")]))
        self.assertEqual(
            vary_key(names, [(b"Cookie", b"")]), vary_key(names, [(b"Cookie", b" , ")])
        )

    def test_key_distinguishes_values(self) -> None:
        """
        Different values, or the same value under another name, give
        different keys.
        """
        names = ("a", "b")
        self.assertNotEqual(
            vary_key(names, [(b"A", b"1")]), vary_key(names, [(b"B", b"1")])
        )
        self.assertNotEqual(
            vary_key(names, [(b"A", b"1"), (b"B", b"2")]),
            vary_key(names, [(b"A", b"1"), (b"B", b"3")]),
        )

    def test_key_ignores_other_fields(self) -> None:
        """
        Fields not named by Vary do not matter; without names the key is
        empty.
        """
        names = ("accept",)
        self.assertEqual(
            vary_key(names, [(b"Accept", b"a"), (b"Cookie", b"1")]),
            vary_key(names, [(b"Cookie", b"2"), (b"Accept", b"a")]),
        )
        self.assertEqual(vary_key((), [(b"Accept", b"a")]), "")

    def test_key_quoted_commas(self) -> None:
        """
        Commas inside quoted strings are part of a member.
        """
        names = ("x",)
        self.assertNotEqual(
            vary_key(names, [(b"X", b'a="1, 2"')]), vary_key(names, [(b"X", b'a="1,2"')])
        )

    def test_key_format(self) -> None:
        """
        The key has a line per name: C{name:value}, or C{name} when absent.
        """
        self.assertEqual(
            vary_key(("accept", "cookie"), [(b"Accept", b"a , b")]), "accept:a,b\ncookie"
        )


class ValidatorsTests(SynchronousTestCase):
    """
    L{validators} gives the conditional fields that revalidate a stored
    response.
    """

    def test_both(self) -> None:
        """
        An ETag gives If-None-Match (weak tags too) and a Last-Modified gives
        If-Modified-Since, in that order.
        """
        lm = http_date(T0 - DAY)
        resp = response((b"Last-Modified", lm), (b"etag", b' W/"v1" '))
        self.assertEqual(
            validators(resp), [(b"If-None-Match", b'W/"v1"'), (b"If-Modified-Since", lm)]
        )

    def test_none(self) -> None:
        """
        Without validators there is nothing; an invalid Last-Modified or an
        empty ETag is not used.
        """
        self.assertEqual(validators(response()), [])
        self.assertEqual(
            validators(response((b"Last-Modified", b"0"), (b"ETag", b""))), []
        )


class MergeNotModifiedTests(SynchronousTestCase):
    """
    L{merge_not_modified} updates stored fields from a 304
    (RFC 9111 §3.2, §4.3.4).
    """

    def test_body_fields_kept(self) -> None:
        """
        Content-Encoding, Content-MD5, Content-Range and ETag describe the
        stored body: a 304 never changes them (cache-tests' update304).
        """
        stored = [
            (b"ETag", b'"a"'),
            (b"Content-Encoding", b"gzip"),
            (b"Content-MD5", b"x"),
            (b"Content-Range", b"bytes 0-1/2"),
        ]
        new = [
            (b"ETag", b'"b"'),
            (b"Content-Encoding", b"br"),
            (b"Content-MD5", b"y"),
            (b"Content-Range", b"bytes 0-1/3"),
        ]
        self.assertEqual(merge_not_modified(stored, new), stored)

    def test_replace_and_append(self) -> None:
        """
        A 304 field replaces every stored field of its name in the place of
        the first; new names are appended in the 304's order; other stored
        fields are kept in order.
        """
        stored = [
            (b"Date", b"old"),
            (b"Cache-Control", b"max-age=60"),
            (b"X-A", b"1"),
            (b"cache-control", b"public"),
            (b"ETag", b'"v1"'),
        ]
        new = [
            (b"ETag", b'"v1"'),
            (b"Date", b"new"),
            (b"X-New", b"n"),
            (b"CACHE-CONTROL", b"max-age=120"),
            (b"Cache-Control", b"public"),
        ]
        self.assertEqual(
            merge_not_modified(stored, new),
            [
                (b"Date", b"new"),
                (b"CACHE-CONTROL", b"max-age=120"),
                (b"Cache-Control", b"public"),
                (b"X-A", b"1"),
                (b"ETag", b'"v1"'),
                (b"X-New", b"n"),
            ],
        )

    def test_content_length_and_hop_by_hop_kept(self) -> None:
        """
        Content-Length and hop-by-hop fields come from the stored response,
        never from the 304.
        """
        stored = [(b"Content-Length", b"1234"), (b"Content-Type", b"text/plain")]
        new = [
            (b"Content-Length", b"0"),
            (b"Connection", b"close"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"h2c"),
            (b"Content-Type", b"text/html"),
        ]
        self.assertEqual(
            merge_not_modified(stored, new),
            [(b"Content-Length", b"1234"), (b"Content-Type", b"text/html")],
        )

    def test_connection_named_fields_kept(self) -> None:
        """
        Fields the 304's Connection names are hop-by-hop too.
        """
        stored = [(b"X-Hop", b"stored")]
        new = [(b"Connection", b"X-Hop, close"), (b"X-Hop", b"new")]
        self.assertEqual(merge_not_modified(stored, new), [(b"X-Hop", b"stored")])

    def test_age(self) -> None:
        """
        The stored Age is dropped: it described the old exchange; the
        304's Age replaces it like any other field.
        """
        stored = [(b"Age", b"500"), (b"X", b"1")]
        self.assertEqual(merge_not_modified(stored, []), [(b"X", b"1")])
        self.assertEqual(
            merge_not_modified(stored, [(b"Age", b"3")]), [(b"Age", b"3"), (b"X", b"1")]
        )

    def test_nothing_new(self) -> None:
        """
        An empty 304 leaves the stored fields as they were.
        """
        stored = [(b"A", b"1"), (b"B", b"2"), (b"A", b"3")]
        self.assertEqual(merge_not_modified(stored, []), stored)


class NotModifiedTests(SynchronousTestCase):
    """
    L{not_modified} says whether the client's conditional request is
    answered with a 304 from the stored response.
    """

    etagged = response((b"ETag", b'"v1"'), (b"Last-Modified", http_date(T0 - DAY)))

    def test_if_none_match(self) -> None:
        """
        If-None-Match matching the ETag gives a 304; another tag does not.
        """
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b'"v1"')], self.etagged))
        self.assertFalse(not_modified(b"GET", [(b"If-None-Match", b'"v2"')], self.etagged))

    def test_weak_comparison(self) -> None:
        """
        If-None-Match uses weak comparison: W/ on either side is ignored.
        """
        weak = response((b"ETag", b'W/"v1"'))
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b'"v1"')], weak))
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b'W/"v1"')], weak))
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b'W/"v1"')], self.etagged))
        self.assertFalse(not_modified(b"GET", [(b"If-None-Match", b'W/"v2"')], weak))

    def test_list(self) -> None:
        """
        Any tag of an If-None-Match list, over several fields, may match; a
        comma inside a tag does not split it.
        """
        request = [(b"If-None-Match", b'"a", W/"b" ,"v1"')]
        self.assertTrue(not_modified(b"GET", request, self.etagged))
        request = [(b"If-None-Match", b'"a"'), (b"If-None-Match", b'"v1"')]
        self.assertTrue(not_modified(b"GET", request, self.etagged))
        comma = response((b"ETag", b'"x,y"'))
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b'"a", "x,y"')], comma))
        self.assertFalse(not_modified(b"GET", [(b"If-None-Match", b'"x", "y"')], comma))

    def test_star(self) -> None:
        """
        If-None-Match: * matches any stored response, with or without ETag.
        """
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b"*")], self.etagged))
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b" * ")], response()))

    def test_no_etag(self) -> None:
        """
        Without a stored ETag, no tag matches.
        """
        self.assertFalse(not_modified(b"GET", [(b"If-None-Match", b'"v1"')], response()))

    def test_unquoted_tags(self) -> None:
        """
        Unquoted tags, as some servers send, are compared as they are.
        """
        bare = response((b"ETag", b"abc"))
        self.assertTrue(not_modified(b"GET", [(b"If-None-Match", b"x, abc")], bare))

    def test_if_none_match_overrides_if_modified_since(self) -> None:
        """
        When If-None-Match is present, If-Modified-Since is ignored
        (RFC 9110 §13.2.2), even if it alone would give a 304.
        """
        request = [
            (b"If-None-Match", b'"v2"'),
            (b"If-Modified-Since", http_date(T0)),
        ]
        self.assertFalse(not_modified(b"GET", request, self.etagged))

    def test_if_modified_since(self) -> None:
        """
        If-Modified-Since gives a 304 when Last-Modified is not later.
        """
        same = http_date(T0 - DAY)
        self.assertTrue(not_modified(b"GET", [(b"If-Modified-Since", same)], self.etagged))
        later = http_date(T0)
        self.assertTrue(not_modified(b"GET", [(b"If-Modified-Since", later)], self.etagged))
        self.assertFalse(
            not_modified(b"GET", [(b"If-Modified-Since", http_date(T0 - DAY - 1))], self.etagged)
        )

    def test_if_modified_since_other_formats(self) -> None:
        """
        If-Modified-Since may use the obsolete date formats.
        """
        request = [(b"If-Modified-Since", b"Sun Nov  6 08:49:37 1994")]
        self.assertTrue(not_modified(b"GET", request, self.etagged))

    def test_if_modified_since_invalid(self) -> None:
        """
        An invalid If-Modified-Since is ignored; so is an invalid
        Last-Modified, which cannot be compared.
        """
        junk = [(b"If-Modified-Since", b"yesterday")]
        self.assertFalse(not_modified(b"GET", junk, self.etagged))
        bad = response((b"Last-Modified", b"0"))
        self.assertFalse(not_modified(b"GET", [(b"If-Modified-Since", http_date(T0))], bad))

    def test_if_modified_since_uses_date(self) -> None:
        """
        Without Last-Modified, the stored Date is compared (RFC 9111 §4.3.2);
        without either there is no 304.
        """
        self.assertTrue(not_modified(b"GET", [(b"If-Modified-Since", http_date(T0))], response()))
        self.assertFalse(
            not_modified(b"GET", [(b"If-Modified-Since", http_date(T0 - 1))], response())
        )
        self.assertFalse(
            not_modified(b"GET", [(b"If-Modified-Since", http_date(T0))], response(date=None))
        )

    def test_methods(self) -> None:
        """
        Only GET and HEAD are answered with a 304.
        """
        request = [(b"If-None-Match", b"*")]
        self.assertTrue(not_modified(b"HEAD", request, self.etagged))
        for method in [b"POST", b"PUT", b"DELETE", b"OPTIONS"]:
            self.assertFalse(not_modified(method, request, self.etagged))

    def test_unconditional(self) -> None:
        """
        A request without conditions is never answered with a 304.
        """
        self.assertFalse(not_modified(b"GET", [], self.etagged))

    def test_only_2xx(self) -> None:
        """
        Preconditions apply only when the stored response is 2xx: a stored
        404 is not a representation that exists.
        """
        request = [(b"If-None-Match", b"*")]
        self.assertTrue(not_modified(b"GET", request, self.etagged, status=204))
        self.assertFalse(not_modified(b"GET", request, self.etagged, status=404))
        self.assertFalse(not_modified(b"GET", request, self.etagged, status=301))


class InvalidatedUrlsTests(SynchronousTestCase):
    """
    L{invalidated_urls} lists what an unsafe request invalidates
    (RFC 9111 §4.4).
    """

    url = "http://example.com/a/b?c=1"

    def test_unsafe_success(self) -> None:
        """
        A successful or redirected unsafe request invalidates its URL.
        """
        for method in [b"POST", b"PUT", b"DELETE", b"PATCH", b"PROPFIND"]:
            for status in [200, 201, 204, 301, 303, 399]:
                self.assertEqual(invalidated_urls(method, status, self.url, []), [self.url])

    def test_safe_methods(self) -> None:
        """
        GET, HEAD, OPTIONS and TRACE invalidate nothing.
        """
        for method in [b"GET", b"HEAD", b"OPTIONS", b"TRACE"]:
            self.assertEqual(invalidated_urls(method, 200, self.url, []), [])

    def test_errors(self) -> None:
        """
        An error or informational status invalidates nothing.
        """
        for status in [100, 400, 404, 500, 503]:
            self.assertEqual(invalidated_urls(b"POST", status, self.url, []), [])

    def test_location_and_content_location(self) -> None:
        """
        Location and Content-Location of the same origin, relative or
        absolute, are invalidated too, after the request URL.
        """
        resp = [(b"Location", b"../x"), (b"Content-Location", b"http://example.com/y#frag")]
        self.assertEqual(
            invalidated_urls(b"POST", 201, self.url, resp),
            [self.url, "http://example.com/x", "http://example.com/y"],
        )

    def test_other_origin_ignored(self) -> None:
        """
        URLs of another scheme, host or port are not invalidated.
        """
        for location in [
            b"https://example.com/x",
            b"http://other.example/x",
            b"http://example.com:8080/x",
            b"//evil.example/x",
        ]:
            self.assertEqual(
                invalidated_urls(b"PUT", 200, self.url, [(b"Location", location)]),
                [self.url],
                location,
            )

    def test_default_ports_and_case(self) -> None:
        """
        An explicit default port and another letter case are the same
        origin, and are written as the request URL spells its origin.
        """
        resp = [(b"Location", b"HTTP://EXAMPLE.com:80/z")]
        self.assertEqual(
            invalidated_urls(b"POST", 200, self.url, resp), [self.url, "http://example.com/z"]
        )
        secure = "https://example.com:443/a"
        self.assertEqual(
            invalidated_urls(b"POST", 200, secure, [(b"Location", b"https://example.com/b")]),
            [secure, "https://example.com:443/b"],
        )

    def test_no_duplicates(self) -> None:
        """
        A Location equal to the request URL is not listed twice, and an
        empty path is written as C{/}.
        """
        resp = [
            (b"Location", b"/a/b?c=1"),
            (b"Content-Location", b"http://example.com"),
        ]
        self.assertEqual(
            invalidated_urls(b"DELETE", 200, self.url, resp), [self.url, "http://example.com/"]
        )

    def test_junk_locations(self) -> None:
        """
        Unparseable or empty locations are skipped.
        """
        resp = [(b"Location", b"http://example.com:99999/x"), (b"Content-Location", b" ")]
        self.assertEqual(invalidated_urls(b"POST", 200, self.url, resp), [self.url])


class ByteRangeTests(SynchronousTestCase):
    """
    L{byte_range} answers a Range request from a complete stored 200
    (RFC 9110 §14).
    """

    stored = response(
        (b"ETag", b'"v1"'), (b"Last-Modified", http_date(T0 - DAY)), date=T0
    )

    def range(
        self, *fields: Tuple[bytes, bytes], size: int = 1000, method: bytes = b"GET"
    ) -> object:
        """
        L{byte_range} for a request with C{fields} and the stored response.
        """
        return byte_range(method, list(fields), self.stored, size)

    def test_forms(self) -> None:
        """
        C{a-b}, C{a-} and C{-suffix} give inclusive first and last
        positions.
        """
        self.assertEqual(self.range((b"Range", b"bytes=0-499")), (0, 499))
        self.assertEqual(self.range((b"Range", b"bytes=500-")), (500, 999))
        self.assertEqual(self.range((b"Range", b"bytes=-100")), (900, 999))
        self.assertEqual(self.range((b"Range", b"bytes=7-7")), (7, 7))

    def test_clipped(self) -> None:
        """
        A last position beyond the end, or a suffix longer than the body,
        is clipped to the body.
        """
        self.assertEqual(self.range((b"Range", b"bytes=900-5000")), (900, 999))
        self.assertEqual(self.range((b"Range", b"bytes=-5000")), (0, 999))
        self.assertEqual(self.range((b"Range", b"bytes=0-" + b"9" * 100)), (0, 999))
        self.assertEqual(self.range((b"Range", b"bytes=-" + b"9" * 100)), (0, 999))

    def test_unit_and_whitespace(self) -> None:
        """
        The unit is case-insensitive; whitespace around the range and
        empty list members are tolerated.
        """
        self.assertEqual(self.range((b"range", b"Bytes= 1-2 ,")), (1, 2))

    def test_unsatisfiable(self) -> None:
        """
        A range starting at or after the end, a zero-length suffix, or any
        range of an empty body is unsatisfiable.
        """
        self.assertEqual(self.range((b"Range", b"bytes=1000-")), "unsatisfiable")
        self.assertEqual(self.range((b"Range", b"bytes=1000-2000")), "unsatisfiable")
        self.assertEqual(self.range((b"Range", b"bytes=" + b"9" * 100 + b"-")), "unsatisfiable")
        self.assertEqual(self.range((b"Range", b"bytes=-0")), "unsatisfiable")
        self.assertEqual(self.range((b"Range", b"bytes=0-"), size=0), "unsatisfiable")
        self.assertEqual(self.range((b"Range", b"bytes=-5"), size=0), "unsatisfiable")

    def test_whole(self) -> None:
        """
        The whole 200 is served without Range, for another method, for
        several ranges or Range fields, another unit, or an invalid range.
        """
        self.assertIsNone(self.range())
        self.assertIsNone(self.range((b"Range", b"bytes=0-1"), method=b"HEAD"))
        self.assertIsNone(self.range((b"Range", b"bytes=0-1"), method=b"POST"))
        self.assertIsNone(self.range((b"Range", b"bytes=0-1,5-6")))
        self.assertIsNone(self.range((b"Range", b"bytes=0-1"), (b"Range", b"bytes=2-3")))
        for spec in [
            b"items=0-1",
            b"bytes 0-1",
            b"bytes=",
            b"bytes=5-1",
            b"bytes=a-b",
            b"bytes=1",
            b"bytes=-",
            b"bytes=--1",
            b"bytes=1-2-3",
            b"bytes=+1-2",
            b"bytes=1 - 2",
            b"0-1",
        ]:
            self.assertIsNone(self.range((b"Range", spec)), spec)

    def test_if_range_etag(self) -> None:
        """
        An If-Range entity-tag must equal the ETag by strong comparison:
        a weak tag on either side never matches.
        """
        rng = (b"Range", b"bytes=0-9")
        self.assertEqual(self.range(rng, (b"If-Range", b'"v1"')), (0, 9))
        self.assertIsNone(self.range(rng, (b"If-Range", b'"v2"')))
        self.assertIsNone(self.range(rng, (b"If-Range", b'W/"v1"')))
        weak = response((b"ETag", b'W/"v1"'))
        self.assertIsNone(byte_range(b"GET", [rng, (b"If-Range", b'W/"v1"')], weak, 100))
        self.assertIsNone(byte_range(b"GET", [rng, (b"If-Range", b'"v1"')], weak, 100))
        self.assertIsNone(byte_range(b"GET", [rng, (b"If-Range", b'"v1"')], response(), 100))

    def test_if_range_date(self) -> None:
        """
        An If-Range date must equal Last-Modified exactly (in any date
        format), and Last-Modified must be strong: at least a second before
        Date.
        """
        rng = (b"Range", b"bytes=0-9")
        lm = http_date(T0 - DAY)
        self.assertEqual(self.range(rng, (b"If-Range", lm)), (0, 9))
        self.assertEqual(self.range(rng, (b"If-Range", b"Sat Nov  5 08:49:37 1994")), (0, 9))
        self.assertIsNone(self.range(rng, (b"If-Range", http_date(T0))))
        self.assertIsNone(self.range(rng, (b"If-Range", http_date(T0 - DAY - 1))))
        weak = response((b"Last-Modified", http_date(T0)), date=T0 + 0.5)
        self.assertIsNone(byte_range(b"GET", [rng, (b"If-Range", http_date(T0))], weak, 100))
        strong = response((b"Last-Modified", http_date(T0)), date=T0 + 1)
        self.assertEqual(
            byte_range(b"GET", [rng, (b"If-Range", http_date(T0))], strong, 100), (0, 9)
        )
        no_date = response((b"Last-Modified", http_date(T0)), date=None)
        self.assertIsNone(byte_range(b"GET", [rng, (b"If-Range", http_date(T0))], no_date, 100))

    def test_if_range_invalid(self) -> None:
        """
        An If-Range that is neither an entity-tag nor a date never matches.
        """
        self.assertIsNone(self.range((b"Range", b"bytes=0-9"), (b"If-Range", b"yesterday")))

    def test_if_range_without_range(self) -> None:
        """
        If-Range alone changes nothing.
        """
        self.assertIsNone(self.range((b"If-Range", b'"v1"')))


class CacheStatusTests(SynchronousTestCase):
    """
    L{cache_status} writes an RFC 9211 Cache-Status field value.
    """

    def test_hit(self) -> None:
        """
        A hit with its ttl.
        """
        self.assertEqual(cache_status("edge", True, ttl=42.9), b"edge; hit; ttl=42")

    def test_negative_ttl(self) -> None:
        """
        The ttl of a stale response is negative, rounded down.
        """
        self.assertEqual(cache_status("edge", True, ttl=-0.5), b"edge; hit; ttl=-1")
        self.assertEqual(cache_status("edge", True, ttl=-30.0), b"edge; hit; ttl=-30")

    def test_forwarded(self) -> None:
        """
        fwd, fwd-status, stored and detail appear in that order.
        """
        self.assertEqual(
            cache_status("edge", False, fwd="uri-miss", stored=True), b"edge; fwd=uri-miss; stored"
        )
        self.assertEqual(
            cache_status("edge", False, fwd="stale", fwd_status=304),
            b"edge; fwd=stale; fwd-status=304",
        )
        self.assertEqual(cache_status("edge", False, fwd="bypass"), b"edge; fwd=bypass")
        self.assertEqual(
            cache_status("edge", False, fwd="miss", detail="no-store"),
            b"edge; fwd=miss; detail=no-store",
        )
        self.assertEqual(
            cache_status("edge", False, fwd="miss", fwd_status=200, ttl=60, stored=True),
            b"edge; fwd=miss; fwd-status=200; ttl=60; stored",
        )

    def test_strings(self) -> None:
        """
        A cache name or detail that is not a token is written as an
        escaped string; characters outside printable ASCII become C{?}.
        """
        self.assertEqual(
            cache_status("my cache", False, fwd="miss", detail='say "hi"\\ é'),
            b'"my cache"; fwd=miss; detail="say \\"hi\\"\\\\ ?"',
        )
        self.assertEqual(cache_status("", True), b'""; hit')
        self.assertEqual(cache_status("proxy.example:8080/x", True), b"proxy.example:8080/x; hit")
        self.assertEqual(cache_status("1cache", True), b'"1cache"; hit')

    def test_name_only(self) -> None:
        """
        With neither hit nor fwd, only the name is written.
        """
        self.assertEqual(cache_status("edge", False), b"edge")

    def test_huge_ttl(self) -> None:
        """
        ttl is bounded to an RFC 8941 integer; NaN is left out.
        """
        self.assertEqual(
            cache_status("c", True, ttl=float("inf")), b"c; hit; ttl=999999999999999"
        )
        self.assertEqual(cache_status("c", True, ttl=float("nan")), b"c; hit")
