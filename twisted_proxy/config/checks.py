# -*- test-case-name: tests.test_config -*-
"""
The value checks every section of the configuration shares: tables,
strings, lists of strings, seconds, integers, sizes, booleans, names, URL
paths, files, folders, IP networks and endpoint strings.

Each check reports a problem as C{(key_path, message)} into the shared
L{ErrorList} and returns L{None} (or an empty value), so that one pass finds
every problem of a file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from fractions import Fraction
from typing import Any, Iterator, List, Mapping, Optional, Tuple

from twisted_proxy.config.endpoints import endpoint_problem
from twisted_proxy.filters import ErrorList
from twisted_proxy.model import IPNetwork

__all__ = [
    "Checks",
    "MAX_SIZE",
    "NAME",
    "SIZE_FORMS",
    "SIZE_UNITS",
    "TOKEN",
    "folder_problem",
    "format_size",
    "is_int",
    "is_number",
    "name_problem",
    "parse_size",
    "type_name",
]

#: RFC 9110 token: header names (and cookie names, RFC 6265).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")

#: A simple name (a C{[cache.NAME]}): a letter, then letters, digits, C{-}
#: and C{_}; at most 64 characters. Written as a bare TOML key, and a token
#: in a C{Cache-Status} header (RFC 9211).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")

#: Size units (matched case-insensitively) and their bytes.
SIZE_UNITS: Mapping[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
#: The accepted forms of a size, for messages.
SIZE_FORMS = (
    "an integer of bytes, or a string of a number and a unit: B, KB, MB, GB, TB"
    " (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), such as"
    " '64KiB', '1.5GiB' or '500 MB'"
)
#: The largest size accepted (a signed 64-bit integer).
MAX_SIZE = 2**63 - 1
_SIZE = re.compile(r"\s*([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+) ?([A-Za-z]*)\s*\Z")
_BINARY_UNITS: Tuple[Tuple[int, str], ...] = (
    (1024**4, "TiB"),
    (1024**3, "GiB"),
    (1024**2, "MiB"),
    (1024, "KiB"),
)


def parse_size(text: str) -> Optional[int]:
    """
    The bytes of a size string (C{"64KiB"}, C{"1.5 GiB"}, C{"500MB"},
    C{"4096"}), rounded down to a whole byte; L{None} if C{text} has no such
    form. A fraction of a plain byte count (C{"1.5B"}) has no such form.
    The result may be negative (C{"-1MiB"}).
    """
    match = _SIZE.match(text)
    if match is None:
        return None
    sign, number, unit = match.groups()
    factor = SIZE_UNITS.get(unit.lower() or "b")
    if factor is None:
        return None
    exact = Fraction(number) * factor
    if exact.denominator != 1 and factor == 1:
        return None
    value = math.floor(exact)
    return -value if sign == "-" else value


def format_size(value: int) -> str:
    """
    C{value} bytes as the largest binary unit dividing it (C{"64MiB"}), or
    as bytes (C{"1000 bytes"}, C{"1 byte"}).
    """
    for factor, unit in _BINARY_UNITS:
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return "1 byte" if value == 1 else f"{value} bytes"


def folder_problem(full: str) -> Optional[str]:
    """
    Why the folder C{full} (absolute) cannot be used or created at start,
    or L{None}: it must be a writable folder, or not exist yet with its
    nearest existing parent a writable folder (no file where a folder is
    needed).
    """
    if os.path.exists(full):
        if os.path.isfile(full):
            return f"{full} is a file, not a folder"
        if not os.path.isdir(full):
            return f"{full} is not a folder"
        if not os.access(full, os.W_OK | os.X_OK):
            return f"folder {full} is not writable"
        return None
    if os.path.lexists(full):
        return f"{full} is a broken symbolic link"
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        if os.path.lexists(parent):
            return f"cannot create {full}: {parent} is a broken symbolic link"
        up = os.path.dirname(parent)
        if up == parent:  # pragma: no cover (the root always exists)
            return f"cannot create {full}"
        parent = up
    if not os.path.isdir(parent):
        return f"cannot create {full}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {full}: folder {parent} is not writable"
    return None


def type_name(value: Any) -> str:
    """
    What a TOML value is, for messages: C{"a string"}, C{"an array"}, ...
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def name_problem(text: str) -> str:
    """
    Why C{text} is not a simple name (see L{NAME}).
    """
    if len(text) > 64:
        return f"{text!r} is longer than 64 characters"
    return (
        f"{text!r} is not a simple name (a letter, then letters, digits,"
        " '-' and '_')"
    )


def is_int(value: Any) -> bool:
    """
    Whether C{value} is a TOML integer (not a boolean).
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """
    Whether C{value} is a TOML integer or float (not a boolean).
    """
    return (is_int(value) or isinstance(value, float)) and not isinstance(value, bool)


class Checks:
    """
    The generic checks, over one document's shared error list; each section
    of the configuration is a subclass.

    @ivar errors: where every problem goes.
    @ivar base_dir: the directory relative file names are resolved against
        (the configuration file's).
    """

    def __init__(self, errors: ErrorList, base_dir: str) -> None:
        self.errors = errors
        self.base_dir = base_dir

    def table(self, value: Any, key: str) -> Optional[Mapping[str, Any]]:
        if not isinstance(value, dict):
            self.errors.add(key, f"must be a table, not {type_name(value)}")
            return None
        return value

    def string(self, value: Any, key: str, allow_empty: bool = False) -> Optional[str]:
        if not isinstance(value, str):
            self.errors.add(key, f"must be a string, not {type_name(value)}")
            return None
        if not allow_empty and not value.strip():
            self.errors.add(key, "must not be empty")
            return None
        return value

    def string_list(self, value: Any, key: str) -> Optional[Iterator[Tuple[str, str]]]:
        """
        The strings of a list as C{(item_key, value)} pairs, reporting an
        item that is not a non-empty string when iteration reaches it (so
        problems come in index order); L{None} if C{value} is not a list.
        """
        if not isinstance(value, list):
            self.errors.add(key, f"must be an array of strings, not {type_name(value)}")
            return None
        return self._strings(value, key)

    def _strings(self, value: List[Any], key: str) -> Iterator[Tuple[str, str]]:
        for i, item in enumerate(value):
            s = self.string(item, f"{key}[{i}]")
            if s is not None:
                yield f"{key}[{i}]", s

    def seconds(self, value: Any, key: str) -> Optional[float]:
        if not is_number(value):
            self.errors.add(key, f"must be a number of seconds, not {type_name(value)}")
            return None
        if not math.isfinite(value) or value <= 0:
            self.errors.add(key, f"must be a number of seconds > 0, not {value!r}")
            return None
        return float(value)

    def integer(self, value: Any, key: str, minimum: int) -> Optional[int]:
        if not is_int(value):
            self.errors.add(key, f"must be an integer, not {type_name(value)}")
            return None
        if value < minimum:
            self.errors.add(key, f"must be an integer >= {minimum}, not {value!r}")
            return None
        return int(value)

    def size(self, value: Any, key: str, minimum: int = 0) -> Optional[int]:
        """
        A number of bytes: an integer, or a string with a unit (see
        L{parse_size}); at least C{minimum}.
        """
        if isinstance(value, str):
            size = parse_size(value)
            if size is None:
                self.errors.add(key, f"{value!r} is not a size; use {SIZE_FORMS}")
                return None
        elif is_int(value):
            size = value
        else:
            self.errors.add(key, f"must be a size ({SIZE_FORMS}), not {type_name(value)}")
            return None
        if size < minimum:
            if minimum == 0:
                self.errors.add(key, f"must not be negative, not {value!r}")
            else:
                self.errors.add(
                    key, f"must be at least {format_size(minimum)}, not {value!r}"
                )
            return None
        if size > MAX_SIZE:
            self.errors.add(key, f"{value!r} is too large (at most {MAX_SIZE} bytes)")
            return None
        return int(size)

    def name(self, value: Any, key: str) -> Optional[str]:
        """
        A simple name (see L{NAME}).
        """
        text = self.string(value, key)
        if text is None:
            return None
        if not NAME.match(text):
            self.errors.add(key, name_problem(text))
            return None
        return text

    def folder(self, value: Any, key: str, default: bool = False) -> Optional[str]:
        """
        A folder named relative to the configuration's folder, usable now
        or creatable at start (see L{folder_problem}); the absolute path.

        @param default: C{value} is the key's default, not the user's.
        """
        text = self.string(value, key)
        if text is None:
            return None
        full = os.path.abspath(os.path.join(self.base_dir, os.path.expanduser(text)))
        problem = folder_problem(full)
        if problem is not None:
            shown = f"{text!r} (the default)" if default else repr(text)
            self.errors.add(key, f"{shown}: {problem}")
            return None
        return full

    def boolean(self, value: Any, key: str) -> Optional[bool]:
        if not isinstance(value, bool):
            self.errors.add(key, f"must be true or false, not {type_name(value)}")
            return None
        return value

    def path_prefix(self, value: Any, key: str) -> Optional[str]:
        """
        A URL path (prefix): starts with C{"/"}, no spaces, no query or
        fragment.
        """
        text = self.string(value, key)
        if text is None:
            return None
        if not text.startswith("/"):
            self.errors.add(key, f"{text!r} must start with '/'")
            return None
        if any(c.isspace() or c in "?#" or ord(c) < 32 or ord(c) == 127 for c in text):
            self.errors.add(key, f"{text!r} must be a path only (no spaces, '?' or '#')")
            return None
        return text

    def file_path(self, value: Any, key: str) -> Optional[str]:
        """
        An existing file, named relative to the configuration's folder;
        the absolute path.
        """
        text = self.string(value, key)
        if text is None:
            return None
        full = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))
        if os.path.isdir(full):
            self.errors.add(key, f"{text!r} is a directory, not a file")
            return None
        if not os.path.exists(full):
            self.errors.add(key, f"file {text!r} not found ({full})")
            return None
        return full

    def networks(self, value: Any, key: str) -> Tuple[IPNetwork, ...]:
        """
        A list of IP networks in CIDR notation (a bare address is its own
        network).
        """
        items = self.string_list(value, key)
        out = []
        for item_key, text in items or ():
            try:
                out.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                self.errors.add(item_key, f"{text!r} is not an IP network (CIDR)")
        return tuple(out)

    def endpoint(self, value: Any, key: str) -> Optional[str]:
        """
        A Twisted server endpoint string, checked without listening.
        """
        if not isinstance(value, str):
            self.errors.add(
                key,
                f"must be a string (a Twisted endpoint such as "
                f"'tcp:3128:interface=127.0.0.1'), not {type_name(value)}",
            )
            return None
        problem = endpoint_problem(value)
        if problem is not None:
            self.errors.add(key, problem)
            return None
        return value
