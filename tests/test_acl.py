"""
Tests for L{twisted_proxy.filters.acl}.
"""

from __future__ import annotations

import calendar
import ipaddress
from typing import Any, Dict, List, Tuple

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.acl import AclFilter, AclSpec, build, parse
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.interfaces import IRequestFilter


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    """
    The POSIX time of a UTC wall-clock time.
    """
    return float(calendar.timegm((year, month, day, hour, minute, second)))


# Europe/Berlin is UTC+1 (CET) in January and UTC+2 (CEST) in July; neither
# date is near a DST change.
WINTER = (2024, 1, 15)
SUMMER = (2024, 7, 15)


def request(
    host: str = "example.com",
    path: str = "/",
    method: str = "GET",
    client_ip: str = "127.0.0.1",
    connect: bool = False,
) -> RequestInfo:
    return RequestInfo(
        listener="outbound",
        client_ip=client_ip,
        method=method,
        scheme="" if connect else "http",
        host=host,
        port=443 if connect else 80,
        path="" if connect else path,
        headers=[],
        connect=connect,
    )


def parsed(table: Dict[str, Any], name: str = "f") -> Tuple[AclSpec, List[Tuple[str, str]]]:
    errors = ErrorList()
    spec = parse(name, table, errors, "/etc")
    return spec, errors.items


def make(table: Dict[str, Any], name: str = "f", now: float = 0.0) -> Tuple[AclFilter, task.Clock]:
    spec, errors = parsed(table, name)
    assert not errors, errors
    clock = task.Clock()
    clock.advance(now)
    return build(name, spec, clock), clock


class ParseTests(SynchronousTestCase):
    """
    L{parse} turns a C{[filter.NAME]} table into an L{AclSpec}, reporting
    every problem under its TOML key path.
    """

    def test_registered(self) -> None:
        """
        The C{acl} type is a built-in filter type.
        """
        from twisted_proxy.filters import acl

        self.assertIs(filter_type("acl"), acl)

    def test_empty_table(self) -> None:
        """
        Every key is optional.
        """
        spec, errors = parsed({})
        self.assertEqual(errors, [])
        self.assertEqual(spec, AclSpec())

    def test_all_keys(self) -> None:
        """
        Every key is parsed into the spec: networks as network objects,
        the window as minutes after midnight.
        """
        spec, errors = parsed(
            {
                "allow_clients": ["10.0.0.0/8", "::1"],
                "deny_clients": ["10.9.0.0/16"],
                "block_domains": ["facebook.com", "*.twitter.com"],
                "allow_domains": ["dev.facebook.com"],
                "hosts": ["*.example.com"],
                "paths": ["/api/"],
                "methods": ["GET", "HEAD"],
                "during": "09:00-18:30",
                "timezone": "Europe/Berlin",
            }
        )
        self.assertEqual(errors, [])
        self.assertEqual(
            spec,
            AclSpec(
                allow_clients=(
                    ipaddress.ip_network("10.0.0.0/8"),
                    ipaddress.ip_network("::1/128"),
                ),
                deny_clients=(ipaddress.ip_network("10.9.0.0/16"),),
                block_domains=("facebook.com", "*.twitter.com"),
                allow_domains=("dev.facebook.com",),
                hosts=("*.example.com",),
                paths=("/api/",),
                methods=("GET", "HEAD"),
                during=(540, 1110),
                timezone="Europe/Berlin",
            ),
        )

    def test_unknown_key(self) -> None:
        """
        An unknown key is reported at its path.
        """
        _, errors = parsed({"block_domain": ["x.com"], "colour": "red"}, name="office")
        self.assertEqual(
            errors,
            [
                ("filter.office.block_domain", "unknown key"),
                ("filter.office.colour", "unknown key"),
            ],
        )

    def test_list_wrong_type(self) -> None:
        """
        A list key given a scalar says it must be a list of strings.
        """
        _, errors = parsed({"block_domains": "facebook.com", "methods": 3})
        self.assertEqual(
            errors,
            [
                ("filter.f.block_domains", "must be a list of strings, not str"),
                ("filter.f.methods", "must be a list of strings, not int"),
            ],
        )

    def test_list_item_wrong_type(self) -> None:
        """
        A non-string item is reported at its index.
        """
        _, errors = parsed({"deny_clients": ["10.0.0.0/8", 10, ["x"]]})
        self.assertEqual(
            errors,
            [
                ("filter.f.deny_clients[1]", "must be a string, not int"),
                ("filter.f.deny_clients[2]", "must be a string, not list"),
            ],
        )

    def test_bad_networks(self) -> None:
        """
        An item that is not a CIDR network, or has host bits set, is
        reported at its index.
        """
        _, errors = parsed({"allow_clients": ["10.0.0.0/8", "10.0.0.1/8", "nonsense"]})
        self.assertEqual([path for path, _ in errors], ["filter.f.allow_clients[1]", "filter.f.allow_clients[2]"])
        self.assertIn("'10.0.0.1/8' is not a CIDR network", errors[0][1])
        self.assertIn("has host bits set", errors[0][1])
        self.assertIn("'nonsense' is not a CIDR network", errors[1][1])

    def test_bad_domains(self) -> None:
        """
        Invalid domain patterns in C{block_domains}, C{allow_domains} and
        C{hosts} are reported at their index with the pattern's problem.
        """
        _, errors = parsed(
            {
                "block_domains": ["ok.com", "face*book.com"],
                "allow_domains": [""],
                "hosts": ["example.com:8080"],
            }
        )
        self.assertEqual(
            errors,
            [
                ("filter.f.block_domains[1]", "'face*book.com': '*' is only allowed as a leading '*.'"),
                ("filter.f.allow_domains[0]", "must not be empty"),
                ("filter.f.hosts[0]", "'example.com:8080' must not include a port"),
            ],
        )

    def test_bad_paths(self) -> None:
        """
        A path prefix must start with C{/} and contain no spaces.
        """
        _, errors = parsed({"paths": ["/ok", "api/", "/a b"]})
        self.assertEqual(
            errors,
            [
                ("filter.f.paths[1]", "'api/' must start with '/'"),
                ("filter.f.paths[2]", "'/a b' must not contain spaces or control characters"),
            ],
        )

    def test_bad_methods(self) -> None:
        """
        Methods must be upper-case HTTP tokens.
        """
        _, errors = parsed({"methods": ["GET", "post", "GE T"]})
        self.assertEqual(
            errors,
            [
                ("filter.f.methods[1]", "'post' must be upper case (methods are case-sensitive: 'POST')"),
                ("filter.f.methods[2]", "'GE T' is not a valid HTTP method"),
            ],
        )

    def test_empty_allow_lists(self) -> None:
        """
        An empty allow list would refuse everything, so it is an error;
        an empty block list is merely nothing to do.
        """
        _, errors = parsed(
            {
                "allow_clients": [],
                "hosts": [],
                "paths": [],
                "methods": [],
                "deny_clients": [],
                "block_domains": [],
                "allow_domains": [],
            }
        )
        message = "must not be empty (it would refuse every request); leave the key out to allow any"
        self.assertEqual(
            errors,
            [
                ("filter.f.allow_clients", message),
                ("filter.f.hosts", message),
                ("filter.f.paths", message),
                ("filter.f.methods", message),
            ],
        )

    def test_during_forms(self) -> None:
        """
        C{during} accepts C{HH:MM-HH:MM} (a one-digit hour too), with
        C{24:00} as an end and windows that wrap midnight.
        """
        for text, window in [
            ("09:00-18:00", (540, 1080)),
            ("9:00-18:00", (540, 1080)),
            ("22:00-06:00", (1320, 360)),
            ("18:00-24:00", (1080, 1440)),
            ("00:00-24:00", (0, 1440)),
            ("23:59-00:00", (1439, 0)),
        ]:
            spec, errors = parsed({"during": text})
            self.assertEqual(errors, [], text)
            self.assertEqual(spec.during, window, text)

    def test_bad_during(self) -> None:
        """
        Malformed windows, impossible times and empty windows are reported
        at C{filter.NAME.during}.
        """
        cases = {
            "9-17": "'9-17' is not of the form \"HH:MM-HH:MM\"",
            "09:00 to 18:00": "'09:00 to 18:00' is not of the form \"HH:MM-HH:MM\"",
            "24:00-06:00": "'24:00-06:00': the start must be between 00:00 and 23:59",
            "09:60-10:00": "'09:60-10:00': the start must be between 00:00 and 23:59",
            "09:00-24:30": "'09:00-24:30': the end must be between 00:00 and 24:00",
            "09:00-25:00": "'09:00-25:00': the end must be between 00:00 and 24:00",
            "09:00-09:00": "'09:00-09:00': start and end are the same time; for the whole day leave out during",
        }
        for text, message in cases.items():
            _, errors = parsed({"during": text})
            self.assertEqual(errors, [("filter.f.during", message)], text)
        _, errors = parsed({"during": 9})
        self.assertEqual(errors, [("filter.f.during", 'must be a string like "09:00-18:00", not int')])

    def test_bad_timezone(self) -> None:
        """
        A time zone that is not a known IANA name, or not a string, is an
        error at C{filter.NAME.timezone}.
        """
        for name in ["Mars/Olympus_Mons", "", "../../etc/passwd", "Europe"]:
            _, errors = parsed({"timezone": name})
            self.assertEqual(
                errors,
                [("filter.f.timezone", f"{name!r} is not a known IANA time zone (like 'Europe/Berlin')")],
                name,
            )
        _, errors = parsed({"timezone": 1})
        self.assertEqual(errors, [("filter.f.timezone", "must be a string, not int")])

    def test_all_errors_at_once(self) -> None:
        """
        Every problem in the table is reported, not only the first.
        """
        _, errors = parsed(
            {"x": 1, "paths": ["a"], "methods": ["get"], "during": "x", "timezone": "Nowhere"}
        )
        self.assertEqual(
            [path for path, _ in errors],
            ["filter.f.x", "filter.f.paths[0]", "filter.f.methods[0]", "filter.f.during", "filter.f.timezone"],
        )


class RuleTests(SynchronousTestCase):
    """
    L{AclFilter.filter_request} refuses with 403 what its rules say, naming
    the rule and the filter, and lets everything else through.
    """

    def test_interface(self) -> None:
        """
        The built filter provides L{IRequestFilter} and carries its name.
        """
        f, _ = make({"block_domains": ["x.com"]}, name="office-hours")
        self.assertTrue(verifyObject(IRequestFilter, f))
        self.assertEqual(f.name, "office-hours")

    def test_empty_filter_allows(self) -> None:
        """
        A filter with no rules lets every request through.
        """
        f, _ = make({})
        self.assertIsNone(f.filter_request(request()))
        self.assertIsNone(f.filter_request(request(connect=True)))

    def test_block_domains(self) -> None:
        """
        A blocked domain and its subdomains are refused with a message
        naming the pattern and the filter; other domains pass.
        """
        f, _ = make({"block_domains": ["facebook.com", "twitter.com"]}, name="office-hours")
        deny = Deny(403, rule="office-hours", message="blocked domain facebook.com by filter office-hours")
        self.assertEqual(f.filter_request(request(host="facebook.com")), deny)
        self.assertEqual(f.filter_request(request(host="www.facebook.com")), deny)
        self.assertEqual(
            f.filter_request(request(host="api.twitter.com", connect=True)),
            Deny(403, rule="office-hours", message="blocked domain twitter.com by filter office-hours"),
        )
        self.assertIsNone(f.filter_request(request(host="notfacebook.com")))
        self.assertIsNone(f.filter_request(request(host="example.com")))

    def test_allow_domains_are_exceptions(self) -> None:
        """
        A host matching C{allow_domains} passes even if a block pattern
        matches it too.
        """
        f, _ = make({"block_domains": ["facebook.com"], "allow_domains": ["developers.facebook.com"]})
        self.assertIsNone(f.filter_request(request(host="developers.facebook.com")))
        self.assertIsNone(f.filter_request(request(host="api.developers.facebook.com")))
        self.assertIsNotNone(f.filter_request(request(host="www.facebook.com")))

    def test_allow_domains_alone_allow_everything(self) -> None:
        """
        C{allow_domains} only makes exceptions: without C{block_domains}
        it refuses nothing.
        """
        f, _ = make({"allow_domains": ["example.com"]})
        self.assertIsNone(f.filter_request(request(host="other.org")))

    def test_deny_clients(self) -> None:
        """
        A client inside a denied network is refused with a message naming
        the client and the network.
        """
        f, _ = make({"deny_clients": ["10.9.0.0/16", "2001:db8::/32"]})
        self.assertEqual(
            f.filter_request(request(client_ip="10.9.1.2")),
            Deny(403, rule="f", message="denied client 10.9.1.2 (10.9.0.0/16) by filter f"),
        )
        self.assertEqual(
            f.filter_request(request(client_ip="2001:db8::5")),
            Deny(403, rule="f", message="denied client 2001:db8::5 (2001:db8::/32) by filter f"),
        )
        self.assertIsNone(f.filter_request(request(client_ip="10.10.1.2")))
        self.assertIsNone(f.filter_request(request(client_ip="2001:db9::5")))

    def test_allow_clients(self) -> None:
        """
        With C{allow_clients}, a client outside every listed network is
        refused; one inside passes.
        """
        f, _ = make({"allow_clients": ["192.168.0.0/16", "::1"]})
        self.assertIsNone(f.filter_request(request(client_ip="192.168.4.4")))
        self.assertIsNone(f.filter_request(request(client_ip="::1")))
        self.assertEqual(
            f.filter_request(request(client_ip="203.0.113.9")),
            Deny(403, rule="f", message="client 203.0.113.9 not allowed by filter f"),
        )

    def test_ipv4_mapped_client(self) -> None:
        """
        An IPv4 client seen through a dual-stack socket
        (C{::ffff:a.b.c.d}) is judged by its IPv4 address.
        """
        f, _ = make({"deny_clients": ["10.0.0.0/8"]})
        self.assertIsNotNone(f.filter_request(request(client_ip="::ffff:10.1.2.3")))
        self.assertIsNone(f.filter_request(request(client_ip="::ffff:11.1.2.3")))

    def test_client_not_an_address(self) -> None:
        """
        A client that is not an IP address (a UNIX socket peer) is in no
        network: not denied, but not allowed either.
        """
        f, _ = make({"deny_clients": ["0.0.0.0/0"]})
        self.assertIsNone(f.filter_request(request(client_ip="")))
        f, _ = make({"allow_clients": ["0.0.0.0/0"]})
        self.assertIsNotNone(f.filter_request(request(client_ip="unix:/run/x.sock")))

    def test_client_answers_repeat(self) -> None:
        """
        The same client gets the same answer on later requests (the
        per-address cache stays correct, also after it is emptied).
        """
        f, _ = make({"allow_clients": ["10.0.0.0/8"]})
        for i in range(5000):
            self.assertIsNone(f.filter_request(request(client_ip=f"10.0.{i // 256}.{i % 256}")))
        self.assertIsNotNone(f.filter_request(request(client_ip="11.0.0.1")))
        self.assertIsNotNone(f.filter_request(request(client_ip="11.0.0.1")))
        self.assertIsNone(f.filter_request(request(client_ip="10.0.0.1")))

    def test_deny_clients_before_allow_clients(self) -> None:
        """
        A client in both lists is refused, by the deny rule.
        """
        f, _ = make({"allow_clients": ["10.0.0.0/8"], "deny_clients": ["10.9.0.0/16"]})
        deny = f.filter_request(request(client_ip="10.9.0.1"))
        assert deny is not None
        self.assertEqual(deny.message, "denied client 10.9.0.1 (10.9.0.0/16) by filter f")

    def test_rule_order(self) -> None:
        """
        Client rules come before domain rules, which come before hosts,
        paths and methods: the first refusal is the one reported.
        """
        f, _ = make(
            {
                "allow_clients": ["10.0.0.0/8"],
                "block_domains": ["bad.com"],
                "hosts": ["good.com"],
                "paths": ["/ok/"],
                "methods": ["GET"],
            }
        )

        def message(**kw: Any) -> str:
            deny = f.filter_request(request(**kw))
            assert deny is not None
            return deny.message

        everything_wrong = dict(client_ip="1.1.1.1", host="bad.com", path="/no", method="POST")
        self.assertEqual(message(**everything_wrong), "client 1.1.1.1 not allowed by filter f")
        everything_wrong["client_ip"] = "10.0.0.1"
        self.assertEqual(message(**everything_wrong), "blocked domain bad.com by filter f")
        everything_wrong["host"] = "other.com"
        self.assertEqual(message(**everything_wrong), "host other.com not allowed by filter f")
        everything_wrong["host"] = "good.com"
        self.assertEqual(message(**everything_wrong), "path /no not allowed by filter f")
        everything_wrong["path"] = "/ok/x"
        self.assertEqual(message(**everything_wrong), "method POST not allowed by filter f")
        everything_wrong["method"] = "GET"
        self.assertIsNone(f.filter_request(request(**everything_wrong)))

    def test_hosts(self) -> None:
        """
        C{hosts} is an allow list with domain-pattern matching.
        """
        f, _ = make({"hosts": ["*.example.com", "192.0.2.1"]})
        self.assertIsNone(f.filter_request(request(host="api.example.com")))
        self.assertIsNone(f.filter_request(request(host="192.0.2.1")))
        self.assertEqual(
            f.filter_request(request(host="example.com")),
            Deny(403, rule="f", message="host example.com not allowed by filter f"),
        )

    def test_paths(self) -> None:
        """
        C{paths} is an allow list of prefixes of the path; the query is
        not part of the path.
        """
        f, _ = make({"paths": ["/api/", "/health"]})
        self.assertIsNone(f.filter_request(request(path="/api/users?id=1")))
        self.assertIsNone(f.filter_request(request(path="/health")))
        self.assertIsNone(f.filter_request(request(path="/healthz")))
        self.assertEqual(
            f.filter_request(request(path="/admin?next=/api/")),
            Deny(403, rule="f", message="path /admin not allowed by filter f"),
        )
        self.assertIsNotNone(f.filter_request(request(path="/api")))

    def test_paths_dot_segments(self) -> None:
        """
        Dot-segments, plain or percent-encoded, are resolved before the
        prefix check, so they cannot climb out of an allowed prefix; ones
        that stay inside it are fine.
        """
        f, _ = make({"paths": ["/api/"]})
        for path in [
            "/api/../admin",
            "/api/%2e%2e/admin",
            "/api/%2E%2E/admin",
            "/api/.%2e/admin",
            "/api/./../admin",
            "/api/..",
        ]:
            self.assertIsNotNone(f.filter_request(request(path=path)), path)
        for path in ["/api/./users", "/api/v1/../v2/users", "/api/a..b", "/api/.well-known", "/api/x%20y"]:
            self.assertIsNone(f.filter_request(request(path=path)), path)

    def test_long_path_shortened_in_message(self) -> None:
        """
        A long refused path is cut short in the message.
        """
        f, _ = make({"paths": ["/api/"]})
        deny = f.filter_request(request(path="/" + "x" * 500))
        assert deny is not None
        self.assertEqual(deny.message, "path /" + "x" * 99 + "... not allowed by filter f")

    def test_connect_skips_paths(self) -> None:
        """
        A CONNECT request has no path, so C{paths} does not apply to it;
        the other rules still do.
        """
        f, _ = make({"paths": ["/api/"], "hosts": ["example.com"]})
        self.assertIsNone(f.filter_request(request(host="example.com", connect=True)))
        self.assertIsNotNone(f.filter_request(request(host="other.com", connect=True)))

    def test_methods(self) -> None:
        """
        C{methods} is an allow list, compared exactly.
        """
        f, _ = make({"methods": ["GET", "HEAD"]})
        self.assertIsNone(f.filter_request(request(method="HEAD")))
        self.assertEqual(
            f.filter_request(request(method="DELETE")),
            Deny(403, rule="f", message="method DELETE not allowed by filter f"),
        )
        self.assertIsNotNone(f.filter_request(request(method="CONNECT", connect=True)))


class WindowTests(SynchronousTestCase):
    """
    With C{during}, the whole filter applies only inside the daily window,
    read in C{timezone}, following the clock.
    """

    def blocked(self, f: AclFilter) -> bool:
        return f.filter_request(request(host="facebook.com")) is not None

    def office(self, now: float, during: str = "09:00-18:00", tz: str = "Europe/Berlin") -> Tuple[AclFilter, task.Clock]:
        return make({"block_domains": ["facebook.com"], "during": during, "timezone": tz}, now=now)

    def test_berlin_winter(self) -> None:
        """
        In January Berlin is UTC+1: 09:00-18:00 Berlin is 08:00-17:00 UTC,
        start inclusive, end exclusive.
        """
        for (hour, minute), inside in [
            ((7, 59), False),
            ((8, 0), True),
            ((12, 0), True),
            ((16, 59), True),
            ((17, 0), False),
            ((23, 0), False),
        ]:
            f, _ = self.office(utc(*WINTER, hour, minute))
            self.assertEqual(self.blocked(f), inside, (hour, minute))

    def test_berlin_summer(self) -> None:
        """
        In July Berlin is UTC+2: 09:00-18:00 Berlin is 07:00-16:00 UTC.
        """
        for (hour, minute), inside in [
            ((6, 59), False),
            ((7, 0), True),
            ((15, 59), True),
            ((16, 0), False),
        ]:
            f, _ = self.office(utc(*SUMMER, hour, minute))
            self.assertEqual(self.blocked(f), inside, (hour, minute))

    def test_wraps_midnight(self) -> None:
        """
        C{22:00-06:00} Berlin (winter: 21:00-05:00 UTC) covers late evening
        and early morning, across the date change, and not the day.
        """
        for day, (hour, minute), inside in [
            (WINTER, (20, 59), False),
            (WINTER, (21, 0), True),
            (WINTER, (23, 30), True),  # 00:30 Berlin, the next day
            ((2024, 1, 16), (4, 59), True),
            ((2024, 1, 16), (5, 0), False),
            ((2024, 1, 16), (11, 0), False),
        ]:
            f, _ = self.office(utc(*day, hour, minute), during="22:00-06:00")
            self.assertEqual(self.blocked(f), inside, (day, hour, minute))

    def test_end_of_day(self) -> None:
        """
        C{24:00} as the end means up to midnight.
        """
        f, _ = self.office(utc(*WINTER, 22, 59), during="18:00-24:00")  # 23:59 Berlin
        self.assertTrue(self.blocked(f))
        f, _ = self.office(utc(*WINTER, 23, 0), during="18:00-24:00")  # 00:00 Berlin
        self.assertFalse(self.blocked(f))

    def test_default_timezone_is_utc(self) -> None:
        """
        Without C{timezone} the window is read in UTC.
        """
        spec, _ = parsed({"during": "09:00-18:00"})
        self.assertEqual(spec.timezone, "UTC")
        f, _ = make({"block_domains": ["facebook.com"], "during": "09:00-18:00"}, now=utc(*WINTER, 8, 59))
        self.assertFalse(self.blocked(f))
        f, _ = make({"block_domains": ["facebook.com"], "during": "09:00-18:00"}, now=utc(*WINTER, 9, 0))
        self.assertTrue(self.blocked(f))

    def test_zone_without_dst(self) -> None:
        """
        A zone without daylight saving time (Asia/Tokyo, UTC+9 all year)
        gives the same UTC window in winter and summer.
        """
        for day in (WINTER, SUMMER):
            f, _ = self.office(utc(*day, 0, 0), tz="Asia/Tokyo")  # 09:00 Tokyo
            self.assertTrue(self.blocked(f), day)
            f, _ = self.office(utc(*day, 9, 0), tz="Asia/Tokyo")  # 18:00 Tokyo
            self.assertFalse(self.blocked(f), day)

    def test_follows_the_clock(self) -> None:
        """
        As the clock advances the filter starts and stops applying, within
        a minute as well as across minutes.
        """
        f, clock = self.office(utc(*WINTER, 7, 59, 30))
        self.assertFalse(self.blocked(f))
        clock.advance(29)
        self.assertFalse(self.blocked(f))
        clock.advance(1)  # 08:00:00 UTC = 09:00 Berlin
        self.assertTrue(self.blocked(f))
        clock.advance(9 * 3600 - 1)  # 17:59:59 Berlin
        self.assertTrue(self.blocked(f))
        clock.advance(1)
        self.assertFalse(self.blocked(f))
        clock.advance(15 * 3600)  # 09:00 Berlin the next day
        self.assertTrue(self.blocked(f))

    def test_outside_window_nothing_applies(self) -> None:
        """
        Outside the window every rule of the filter is off, client rules
        included.
        """
        f, _ = make(
            {"allow_clients": ["10.0.0.0/8"], "methods": ["GET"], "during": "09:00-18:00"},
            now=utc(*WINTER, 20, 0),
        )
        self.assertIsNone(f.filter_request(request(client_ip="1.1.1.1", method="POST")))
