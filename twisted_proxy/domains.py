# -*- test-case-name: tests.test_domains -*-
"""
Domain patterns: C{block_domains}, C{allow_domains}, C{hosts}, forward
C{parents.domains}, a cache's C{domains} and C{bypass_domains}, and reverse
route C{host}.

Three forms::

    "example.com"      matches example.com and every subdomain (a.b.example.com)
    "*.example.com"    matches every subdomain at any depth, not example.com
    "docs.*"           matches every host whose first label is docs and that
                       has at least one more label (docs.python.org,
                       docs.rs), not docs itself nor a.docs.python.org

An IP literal (C{"192.0.2.1"}, C{"2001:db8::1"}) matches only itself.
Matching is case-insensitive and ignores a trailing dot.

A reverse route's C{host} takes only the first two forms (exact or
C{"*.example.com"}): routes are indexed by host name, and the configuration
refuses C{"docs.*"} there.

A L{DomainSet} answers with one dictionary lookup per label suffix of the
host, plus one for its first label, however many patterns it holds; the
longest (most specific) matching suffix wins, and a first-label pattern
(C{"docs.*"}) answers only when no suffix pattern matches.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, Iterable, Optional, Tuple

__all__ = ["DomainSet", "validate_domain_pattern", "normalize_domain_pattern"]

_DIGITS = frozenset("0123456789")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def _as_ip(text: str) -> Optional[str]:
    """
    The canonical text of C{text} if it is an IP literal (IPv6 may be
    bracketed), else L{None}.
    """
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def _looks_like_ip(host: str) -> bool:
    """
    Whether C{host} is shaped like an IP literal: it has a colon (IPv6) or
    its last label is all digits (IPv4; no top-level domain is numeric).
    """
    if ":" in host:
        return True
    last = host[host.rfind(".") + 1 :]
    return last.isascii() and last.isdigit()


def validate_domain_pattern(pattern: object) -> Optional[str]:
    """
    Check one domain pattern.

    @return: L{None} if C{pattern} is valid, else a message saying what is
        wrong with it.
    """
    if not isinstance(pattern, str):
        return f"must be a string, not {type(pattern).__name__}"
    if not pattern:
        return "must not be empty"
    if any(c.isspace() for c in pattern):
        return f"{pattern!r} must not contain spaces"
    if "/" in pattern:
        return f"{pattern!r} must be a host name, not a URL or a path"
    if ":" in pattern:
        if _as_ip(pattern) is not None:
            return None
        if pattern.count(":") == 1:
            return f"{pattern!r} must not include a port"
        return f"{pattern!r} is not a valid IPv6 address"
    name = pattern
    wildcard = name.startswith("*.")
    if wildcard:
        name = name[2:]
    if name.endswith("."):
        name = name[:-1]
    first_label = name.endswith(".*") and name != ".*"
    if first_label:
        if wildcard:
            return f"{pattern!r}: '*.' and '.*' cannot be combined"
        name = name[:-2]
        if "." in name:
            return (
                f"{pattern!r}: '.*' must follow exactly one label"
                " (like 'docs.*', which matches docs.python.org)"
            )
    if "*" in name:
        return f"{pattern!r}: '*' is only allowed as a leading '*.'"
    if not name:
        return f"{pattern!r} has no domain name"
    if first_label and name.isascii() and name.isdigit():
        return (
            f"{pattern!r}: the label before '.*' is all digits"
            " (an IP address only matches itself)"
        )
    if _looks_like_ip(name):
        if _as_ip(name) is None:
            return (
                f"{pattern!r} is neither a domain name (the last label is"
                " numeric) nor an IP address"
            )
        if wildcard:
            return f"{pattern!r}: a wildcard cannot apply to an IP address"
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return f"{pattern!r} is not a valid internationalized domain name"
    name = name.lower()
    if len(name) > 253:
        return f"{pattern!r} is longer than 253 characters"
    for label in name.split("."):
        if not label:
            return f"{pattern!r} has an empty label"
        if len(label) > 63:
            return f"{pattern!r} has a label longer than 63 characters"
        if not _LABEL.match(label):
            return (
                f"{pattern!r} has an invalid label {label!r} (letters, digits,"
                " '-' and '_' only, no '-' at either end)"
            )
    return None


def normalize_domain_pattern(pattern: str) -> str:
    """
    The canonical form of a valid pattern: lower case, no trailing dot,
    internationalized names in IDNA (punycode) form, IP literals in their
    compressed form.

    @raise ValueError: if the pattern is not valid.
    """
    problem = validate_domain_pattern(pattern)
    if problem is not None:
        raise ValueError(f"invalid domain pattern: {problem}")
    ip = _as_ip(pattern)
    if ip is not None:
        return ip
    prefix = suffix = ""
    name = pattern
    if name.startswith("*."):
        prefix, name = "*.", name[2:]
    if name.endswith("."):
        name = name[:-1]
    if name.endswith(".*"):
        name, suffix = name[:-2], ".*"
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return prefix + name.lower() + suffix


class DomainSet:
    """
    A set of domain patterns, matched against host names.

    @ivar patterns: the patterns as given, in order.
    """

    __slots__ = ("patterns", "_names", "_ips", "_first", "_min_depth", "_max_depth")

    def __init__(self, patterns: Iterable[str]) -> None:
        """
        @raise ValueError: if a pattern is invalid (see
            L{validate_domain_pattern}).
        """
        self.patterns: Tuple[str, ...] = tuple(patterns)
        # suffix -> (pattern matching the suffix itself or None,
        #            pattern matching its subdomains)
        names: Dict[str, Tuple[Optional[str], str]] = {}
        ips: Dict[str, str] = {}
        # first label -> the first pattern "label.*" naming it
        first: Dict[str, str] = {}
        for pattern in self.patterns:
            canonical = normalize_domain_pattern(pattern)
            if canonical.endswith(".*"):
                first.setdefault(canonical[:-2], pattern)
                continue
            if not canonical.startswith("*.") and _looks_like_ip(canonical):
                ips.setdefault(canonical, pattern)
                continue
            if canonical.startswith("*."):
                key, apex = canonical[2:], None
            else:
                key, apex = canonical, pattern
            old = names.get(key)
            if old is None:
                names[key] = (apex, pattern)
            elif old[0] is None and apex is not None:
                # "*.x" came first; "x" adds the apex, the earlier
                # pattern keeps the subdomains.
                names[key] = (apex, old[1])
        self._names = names
        self._ips = ips
        self._first = first
        depths = [key.count(".") + 1 for key in names]
        self._min_depth = min(depths, default=0)
        self._max_depth = max(depths, default=0)

    def matches(self, host: str) -> Optional[str]:
        """
        The pattern (as given) that C{host} matches, the most specific one
        if several do; L{None} if none does.

        @param host: a host name or IP literal, without port.
        """
        if not host:
            return None
        host = host.lower()
        if host[-1] == ".":
            host = host[:-1]
        if ":" in host or (host[-1] in _DIGITS and _looks_like_ip(host)):
            return self._match_ip(host)
        if self._names:
            found = self._match_name(host)
            if found is not None:
                return found
        if self._first:
            dot = host.find(".")
            # one label, then at least one more ("docs.rs", not "docs.")
            if 0 < dot < len(host) - 1:
                return self._first.get(host[:dot])
        return None

    def _match_name(self, host: str) -> Optional[str]:
        """
        The suffix pattern C{host} (lower case, no trailing dot) matches.
        """
        names = self._names
        labels = host.count(".") + 1
        if labels <= self._max_depth:
            entry = names.get(host)
            if entry is not None and entry[0] is not None:
                return entry[0]
        # Proper suffixes, longest first, skipping those with more labels
        # than any pattern or fewer than every pattern.
        count = labels - 1 if labels <= self._max_depth else self._max_depth
        if count < self._min_depth:
            return None
        skip = labels - count
        suffix = host.split(".", skip)[skip]
        while True:
            entry = names.get(suffix)
            if entry is not None:
                return entry[1]
            count -= 1
            if count < self._min_depth:
                return None
            suffix = suffix[suffix.index(".") + 1 :]

    def _match_ip(self, host: str) -> Optional[str]:
        ips = self._ips
        if not ips:
            return None
        found = ips.get(host)
        if found is not None:
            return found
        canonical = _as_ip(host)
        if canonical is None:
            return None
        return ips.get(canonical)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __len__(self) -> int:
        return len(self.patterns)

    def __repr__(self) -> str:
        return f"DomainSet({list(self.patterns)!r})"
