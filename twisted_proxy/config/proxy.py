# -*- test-case-name: tests.test_config -*-
"""
The process-wide tables: C{[proxy]} (timeouts, sizes, the access log, the
spool) and C{[admin]} (the admin listener's endpoint).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

from twisted_proxy.config.checks import Checks
from twisted_proxy.model import AdminConfig, ProxySettings

__all__ = [
    "DEFAULT_SPOOL_PATH",
    "MIN_FIELD_SIZE",
    "MIN_HEAD_SIZE",
    "MIN_HEADER_COUNT",
    "PROXY_SECONDS",
    "ProxyChecks",
]

#: The C{[proxy]} keys that are a number of seconds.
PROXY_SECONDS: Tuple[str, ...] = (
    "connect_timeout",
    "idle_timeout",
    "header_timeout",
    "first_byte_timeout",
    "filter_timeout",
    "tunnel_idle_timeout",
    "pool_idle_timeout",
    "drain_timeout",
)
#: The smallest C{max_head_size} accepted.
MIN_HEAD_SIZE = 1024
#: The smallest C{max_field_size} accepted (a cookie or a token needs room).
MIN_FIELD_SIZE = 256
#: The smallest C{max_header_count} accepted (ordinary responses carry a
#: dozen or more).
MIN_HEADER_COUNT = 16
#: C{spool_path} when absent, relative to the configuration file's folder.
DEFAULT_SPOOL_PATH = "spool"


class ProxyChecks(Checks):
    """
    The C{[proxy]} and C{[admin]} tables.
    """

    def parse_proxy(self, table: Mapping[str, Any]) -> ProxySettings:
        """
        The settings of a C{[proxy]} table (C{{}} when the file has none:
        the spool folder's default is checked all the same).
        """
        values: Dict[str, Any] = {}
        for name, value in table.items():
            key = f"proxy.{name}"
            result: Any = None
            if name in PROXY_SECONDS:
                result = self.seconds(value, key)
            elif name == "max_head_size":
                result = self.integer(value, key, MIN_HEAD_SIZE)
            elif name == "max_field_size":
                result = self.integer(value, key, MIN_FIELD_SIZE)
            elif name == "max_header_count":
                result = self.integer(value, key, MIN_HEADER_COUNT)
            elif name == "pool_max_idle":
                result = self.integer(value, key, 0)
            elif name == "pool_max_idle_total":
                result = self.integer(value, key, 1)
            elif name == "max_connections":
                result = self.integer(value, key, 1)
            elif name == "workers":
                result = self.workers(value, key)
            elif name == "latency_histograms":
                result = self.boolean(value, key)
            elif name == "access_log":
                result = self.access_log(value, key)
            elif name == "spool_path":
                result = self.folder(value, key)
            elif name == "spool_max":
                result = self.size(value, key, 0)
            else:
                self.errors.add(key, "unknown key")
            if result is not None:
                values[name] = result
        if "spool_path" not in table:
            spool = self.folder(DEFAULT_SPOOL_PATH, "proxy.spool_path", default=True)
            if spool is not None:
                values["spool_path"] = spool
        return ProxySettings(**values)

    def workers(self, value: Any, key: str) -> Optional[int]:
        """
        A number of worker processes (at least 1), or C{"auto"}: one per
        CPU this process may run on.
        """
        if value == "auto":
            return auto_workers()
        if isinstance(value, str):
            self.errors.add(key, f'must be an integer >= 1 or "auto", not {value!r}')
            return None
        return self.integer(value, key, 1)

    def access_log(self, value: Any, key: str) -> Optional[str]:
        """
        C{"-"} (stdout), C{"off"}, or a file in an existing directory (the
        absolute path).
        """
        text = self.string(value, key)
        if text is None:
            return None
        if text in ("-", "off"):
            return text
        full = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))
        directory = os.path.dirname(full)
        if os.path.isdir(full):
            self.errors.add(key, f"{text!r} is a directory (use a file path, '-' or 'off')")
            return None
        if not os.path.isdir(directory):
            self.errors.add(key, f"directory {directory!r} does not exist")
            return None
        return full

    def parse_admin(self, table: Mapping[str, Any]) -> Optional[AdminConfig]:
        endpoint = None
        for name, value in table.items():
            if name == "endpoint":
                endpoint = self.endpoint(value, "admin.endpoint")
            else:
                self.errors.add(f"admin.{name}", "unknown key")
        if "endpoint" not in table:
            self.errors.add("admin.endpoint", "required key is missing")
        if endpoint is None:
            return None
        return AdminConfig(endpoint=endpoint)


def auto_workers() -> int:
    """
    C{workers = "auto"}: the CPUs this process may run on.
    """
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
