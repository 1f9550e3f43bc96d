# -*- test-case-name: tests.test_config_cache -*-
"""
The C{[cache.NAME]} tables: shared HTTP caches (RFC 9111) that forward and
reverse listeners and reverse routes name with C{cache = "NAME"}.

Each cache has its own folder (C{path}, default C{"cache/NAME"} next to the
configuration file; created at start), size bounds (C{max_size},
C{memory}, C{max_object_size}), the time collapsed misses wait
(C{lock_timeout}), the hosts it serves (C{domains}, C{bypass_domains}) and
the header tagging entries for purge (C{tag_header}).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from twisted_proxy.config.checks import NAME, TOKEN, Checks, format_size, name_problem
from twisted_proxy.domains import normalize_domain_pattern, validate_domain_pattern
from twisted_proxy.model import CACHE_MAX_OBJECT_SIZE, CACHE_MAX_SIZE, CacheConfig, MiB

__all__ = ["CACHE_KEYS", "MIN_CACHE_SIZE", "CacheChecks", "folders_overlap"]

#: The keys of a C{[cache.NAME]} table (all optional).
CACHE_KEYS: Tuple[str, ...] = (
    "path",
    "max_size",
    "memory",
    "max_object_size",
    "lock_timeout",
    "domains",
    "bypass_domains",
    "tag_header",
)
#: The smallest C{max_size} accepted.
MIN_CACHE_SIZE = 1 * MiB


def folders_overlap(one: str, other: str) -> bool:
    """
    Whether two absolute folders are the same or one is inside the other
    (after resolving symbolic links).
    """
    a, b = os.path.realpath(one), os.path.realpath(other)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(
        a.rstrip(os.sep) + os.sep
    )


class CacheChecks(Checks):
    """
    The C{[cache.NAME]} tables.
    """

    def parse_caches(self, tables: Mapping[str, Any]) -> Dict[str, CacheConfig]:
        caches: Dict[str, CacheConfig] = {}
        folders: List[Tuple[str, str]] = []  # (key, absolute folder)
        for name, value in tables.items():
            key = f"cache.{name}"
            table = self.table(value, key)
            if table is None:
                continue
            parsed = self.parse_cache(name, table, key)
            if parsed is None:
                continue
            path_key = f"{key}.path"
            for other_key, other in folders:
                if folders_overlap(parsed.path, other):
                    self.errors.add(
                        path_key,
                        f"{parsed.path} overlaps {other_key} ({other});"
                        " each cache needs a folder of its own",
                    )
                    break
            else:
                folders.append((path_key, parsed.path))
                caches[name] = parsed
        return caches

    def parse_cache(
        self, name: str, table: Mapping[str, Any], key: str
    ) -> Optional[CacheConfig]:
        before = len(self.errors)
        name_ok = NAME.match(name) is not None
        if not name_ok:
            self.errors.add(key, f"cache name {name_problem(name)}")
        values: Dict[str, Any] = {}
        for item_name, item in table.items():
            item_key = f"{key}.{item_name}"
            result: Any = None
            if item_name == "path":
                result = self.folder(item, item_key)
            elif item_name == "max_size":
                result = self.size(item, item_key, MIN_CACHE_SIZE)
            elif item_name == "memory":
                result = self.size(item, item_key, 0)
            elif item_name == "max_object_size":
                result = self.size(item, item_key, 1)
            elif item_name == "lock_timeout":
                result = self.seconds(item, item_key)
            elif item_name in ("domains", "bypass_domains"):
                result = self.domain_patterns(item, item_key)
            elif item_name == "tag_header":
                result = self.header_name(item, item_key)
            else:
                self.errors.add(item_key, "unknown key")
                continue
            if result is not None:
                values[item_name] = result
        if "path" not in table and name_ok:
            values["path"] = self.folder(f"cache/{name}", f"{key}.path", default=True)
        max_size: int = values.get("max_size", CACHE_MAX_SIZE)
        max_object_size: Optional[int] = values.get("max_object_size")
        if "max_object_size" not in table:
            # the default, bounded by a smaller max_size
            values["max_object_size"] = min(max_size, CACHE_MAX_OBJECT_SIZE)
        elif (
            max_object_size is not None
            and ("max_size" in values or "max_size" not in table)
            and max_object_size > max_size
        ):
            self.errors.add(
                f"{key}.max_object_size",
                f"must not be larger than max_size ({format_size(max_size)}),"
                f" not {table['max_object_size']!r}",
            )
        if len(self.errors) > before:
            return None
        return CacheConfig(name=name, **values)

    def domain_patterns(self, value: Any, key: str) -> Optional[Tuple[str, ...]]:
        """
        A list (may be empty) of domain patterns, normalized (lower case,
        no trailing dot, IDNA).
        """
        items = self.string_list(value, key)
        if items is None:
            return None
        out = []
        for item_key, pattern in items:
            problem = validate_domain_pattern(pattern)
            if problem is not None:
                self.errors.add(item_key, problem)
            else:
                out.append(normalize_domain_pattern(pattern))
        return tuple(out)

    def header_name(self, value: Any, key: str) -> Optional[str]:
        """
        One HTTP header name, as written.
        """
        text = self.string(value, key)
        if text is None:
            return None
        if not TOKEN.match(text):
            self.errors.add(key, f"{text!r} is not a valid header name")
            return None
        return text
