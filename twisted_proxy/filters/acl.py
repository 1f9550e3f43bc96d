# -*- test-case-name: tests.test_acl -*-
"""
The C{acl} filter type: allow and deny by client address, target domain,
host, path and method, optionally only during a daily time window.

::

    [filter.office-hours]
    type = "acl"
    allow_clients = ["10.0.0.0/8"]       # given = any other client is 403
    deny_clients = ["10.9.0.0/16"]       # checked first
    block_domains = ["facebook.com"]     # a domain blocks its subdomains too
    allow_domains = ["dev.facebook.com"] # exceptions to block_domains
    hosts = ["*.example.com"]            # given = any other host is 403
    paths = ["/api/", "/health"]         # prefixes; given = any other path is 403
    methods = ["GET", "HEAD"]            # given = any other method is 403
    during = "09:00-18:00"               # the filter applies only then (may wrap midnight)
    timezone = "Europe/Berlin"           # of C{during}; default UTC

The checks run in the order above; the first that refuses answers 403.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import zoneinfo
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

import attrs
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_proxy.addresses import AddressMatcher
from twisted_proxy.domains import DomainSet, validate_domain_pattern
from twisted_proxy.filters import Deny, ErrorList, RequestInfo, string_list
from twisted_proxy.interfaces import IRequestFilter

__all__ = ["AclSpec", "AclFilter", "parse", "build"]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_LIST_KEYS = (
    "allow_clients",
    "deny_clients",
    "block_domains",
    "allow_domains",
    "hosts",
    "paths",
    "methods",
)
_KEYS = frozenset(_LIST_KEYS + ("during", "timezone"))
# allow lists: an empty one would refuse everything, which is never meant
_ALLOW_LISTS = frozenset({"allow_clients", "hosts", "paths", "methods"})

_WINDOW = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


@attrs.frozen
class AclSpec:
    """
    A parsed C{acl} filter table.

    @ivar during: the daily window as C{(start, end)} minutes after local
        midnight, start inclusive, end exclusive (C{end} may be 1440, and
        smaller than C{start} for a window across midnight); L{None} = always.
    @ivar timezone: the IANA name the window is read in.
    """

    allow_clients: Tuple[IPNetwork, ...] = ()
    deny_clients: Tuple[IPNetwork, ...] = ()
    block_domains: Tuple[str, ...] = ()
    allow_domains: Tuple[str, ...] = ()
    hosts: Tuple[str, ...] = ()
    paths: Tuple[str, ...] = ()
    methods: Tuple[str, ...] = ()
    during: Optional[Tuple[int, int]] = None
    timezone: str = "UTC"


# --- parsing ---------------------------------------------------------------


_string_list = string_list


def _parse_networks(
    items: List[Tuple[str, str]], errors: ErrorList
) -> Tuple[IPNetwork, ...]:
    networks = []
    for path, text in items:
        try:
            networks.append(ipaddress.ip_network(text.strip()))
        except ValueError as e:
            errors.add(path, f"{text!r} is not a CIDR network: {e}")
    return tuple(networks)


def _parse_domains(items: List[Tuple[str, str]], errors: ErrorList) -> Tuple[str, ...]:
    patterns = []
    for path, text in items:
        problem = validate_domain_pattern(text)
        if problem is None:
            patterns.append(text)
        else:
            errors.add(path, problem)
    return tuple(patterns)


def _parse_paths(items: List[Tuple[str, str]], errors: ErrorList) -> Tuple[str, ...]:
    prefixes = []
    for path, text in items:
        if not text.startswith("/"):
            errors.add(path, f"{text!r} must start with '/'")
        elif any(c.isspace() or ord(c) < 0x20 for c in text):
            errors.add(path, f"{text!r} must not contain spaces or control characters")
        else:
            prefixes.append(text)
    return tuple(prefixes)


def _parse_methods(items: List[Tuple[str, str]], errors: ErrorList) -> Tuple[str, ...]:
    methods = []
    for path, text in items:
        if not _TOKEN.match(text):
            errors.add(path, f"{text!r} is not a valid HTTP method")
        elif text != text.upper():
            errors.add(
                path,
                f"{text!r} must be upper case (methods are case-sensitive:"
                f" {text.upper()!r})",
            )
        else:
            methods.append(text)
    return tuple(methods)


def _parse_during(value: Any, path: str, errors: ErrorList) -> Optional[Tuple[int, int]]:
    if not isinstance(value, str):
        errors.add(
            path, f'must be a string like "09:00-18:00", not {type(value).__name__}'
        )
        return None
    match = _WINDOW.match(value.strip())
    if match is None:
        errors.add(path, f'{value!r} is not of the form "HH:MM-HH:MM"')
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59:
        errors.add(path, f"{value!r}: the start must be between 00:00 and 23:59")
        return None
    if m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        errors.add(path, f"{value!r}: the end must be between 00:00 and 24:00")
        return None
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        errors.add(
            path,
            f"{value!r}: start and end are the same time; for the whole day"
            " leave out during",
        )
        return None
    return (start, end)


def _load_timezone(name: str) -> datetime.tzinfo:
    """
    @raise ValueError: if C{name} is not a known IANA time zone.
    """
    if name == "UTC":
        return datetime.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except Exception:
        raise ValueError(
            f"{name!r} is not a known IANA time zone (like 'Europe/Berlin')"
        ) from None


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> AclSpec:
    """
    Validate a C{[filter.NAME]} table of type C{acl}; report problems to
    C{errors} under C{filter.NAME.key}.
    """
    prefix = f"filter.{name}"
    values: Dict[str, Any] = {}
    for key in table:
        if key not in _KEYS and key != "type":
            errors.add(f"{prefix}.{key}", "unknown key")
    for key in _LIST_KEYS:
        if key not in table:
            continue
        path = f"{prefix}.{key}"
        items = _string_list(table[key], path, errors)
        if items is None:
            continue
        if not items and key in _ALLOW_LISTS:
            errors.add(
                path,
                "must not be empty (it would refuse every request);"
                " leave the key out to allow any",
            )
            continue
        if key in ("allow_clients", "deny_clients"):
            values[key] = _parse_networks(items, errors)
        elif key == "paths":
            values[key] = _parse_paths(items, errors)
        elif key == "methods":
            values[key] = _parse_methods(items, errors)
        else:
            values[key] = _parse_domains(items, errors)
    if "during" in table:
        values["during"] = _parse_during(table["during"], f"{prefix}.during", errors)
    if "timezone" in table:
        tz = table["timezone"]
        path = f"{prefix}.timezone"
        if not isinstance(tz, str):
            errors.add(path, f"must be a string, not {type(tz).__name__}")
        else:
            try:
                _load_timezone(tz)
            except ValueError as e:
                errors.add(path, str(e))
            else:
                values["timezone"] = tz
    return AclSpec(**values)


# --- the live filter -------------------------------------------------------

_ClientMatcher = AddressMatcher


@implementer(IRequestFilter)
class AclFilter:
    """
    The live C{acl} filter; see the module docstring.

    @ivar name: the filter's name.
    @ivar spec: its L{AclSpec}.
    """

    def __init__(self, name: str, spec: AclSpec, clock: IReactorTime) -> None:
        self.name = name
        self.spec = spec
        self._clock = clock
        self._deny_clients = _ClientMatcher(spec.deny_clients) if spec.deny_clients else None
        self._allow_clients = (
            _ClientMatcher(spec.allow_clients) if spec.allow_clients else None
        )
        self._block = DomainSet(spec.block_domains) if spec.block_domains else None
        self._allow_domains = DomainSet(spec.allow_domains)
        self._hosts = DomainSet(spec.hosts) if spec.hosts else None
        self._paths = spec.paths or None
        self._methods: Optional[FrozenSet[str]] = (
            frozenset(spec.methods) if spec.methods else None
        )
        self._window = spec.during
        self._tz = _load_timezone(spec.timezone)
        self._window_minute = -1
        self._window_open = True

    def __repr__(self) -> str:
        return f"<AclFilter {self.name!r}>"

    def _in_window(self) -> bool:
        """
        Whether the clock's current local time is inside C{during}; the
        answer is kept for the rest of the (UTC) minute.
        """
        now = self._clock.seconds()
        minute = int(now // 60)
        if minute == self._window_minute:
            return self._window_open
        assert self._window is not None
        start, end = self._window
        local = datetime.datetime.fromtimestamp(minute * 60, self._tz)
        of_day = local.hour * 60 + local.minute
        if start < end:
            is_open = start <= of_day < end
        else:
            is_open = of_day >= start or of_day < end
        self._window_minute = minute
        self._window_open = is_open
        return is_open

    def _deny(self, message: str) -> Deny:
        return Deny(403, rule=self.name, message=f"{message} by filter {self.name}")

    def filter_request(self, info: RequestInfo) -> Optional[Deny]:
        """
        Refuse C{info} with 403 if a rule says so; see the module docstring.
        """
        if self._window is not None and not self._in_window():
            return None
        if self._deny_clients is not None:
            network = self._deny_clients.match(info.client_ip)
            if network is not None:
                return self._deny(f"denied client {info.client_ip} ({network})")
        if self._allow_clients is not None:
            if self._allow_clients.match(info.client_ip) is None:
                return self._deny(f"client {info.client_ip} not allowed")
        if self._block is not None:
            blocked = self._block.matches(info.host)
            if blocked is not None and self._allow_domains.matches(info.host) is None:
                return self._deny(f"blocked domain {blocked}")
        if self._hosts is not None and self._hosts.matches(info.host) is None:
            return self._deny(f"host {info.host} not allowed")
        if self._paths is not None and not info.connect:
            path = _effective_path(info.path)
            if not path.startswith(self._paths):
                shown = path if len(path) <= 100 else path[:100] + "..."
                return self._deny(f"path {shown} not allowed")
        if self._methods is not None and info.method not in self._methods:
            return self._deny(f"method {info.method} not allowed")
        return None


def _effective_path(target: str) -> str:
    """
    The path part of an origin-form target as the origin will resolve it:
    without the query, and with dot-segments (also percent-encoded ones)
    removed, so C{/api/../admin} cannot pass for C{/api/}.
    """
    path = target.partition("?")[0]
    if "/." not in path and "%" not in path:
        return path
    decoded = re.sub("%2[eE]", ".", path)
    if "/." not in decoded:
        return path
    out: List[str] = []
    segments = decoded.split("/")[1:]
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = "/" if segments and segments[-1] in (".", "..") else ""
    return "/" + "/".join(out) + trailing


def build(name: str, spec: AclSpec, clock: IReactorTime) -> AclFilter:
    """
    Make the live filter for C{spec}.
    """
    return AclFilter(name, spec, clock)
