# -*- test-case-name: tests.test_config -*-
"""
The value checks every section of the configuration shares: tables,
strings, lists of strings, seconds, integers, booleans, URL paths, files,
IP networks and endpoint strings.

Each check reports a problem as C{(key_path, message)} into the shared
L{ErrorList} and returns L{None} (or an empty value), so that one pass finds
every problem of a file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any, Iterator, List, Mapping, Optional, Tuple

from twisted_proxy.config.endpoints import endpoint_problem
from twisted_proxy.filters import ErrorList
from twisted_proxy.model import IPNetwork

__all__ = ["Checks", "TOKEN", "is_int", "is_number", "type_name"]

#: RFC 9110 token: header names (and cookie names, RFC 6265).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


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
