# -*- test-case-name: tests.test_config -*-
"""
The C{[filter.NAME]} tables: a built-in type checks its own table (see
L{twisted_proxy.filters.registry}); a custom filter (C{type =
"package.module:name"}) must be importable and gets its table unchecked.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from twisted_proxy.config.checks import Checks
from twisted_proxy.filters.registry import builtin_type_names, filter_type
from twisted_proxy.loading import load_object
from twisted_proxy.model import FilterConfig

__all__ = ["FilterChecks"]


class FilterChecks(Checks):
    """
    The C{[filter.NAME]} tables.
    """

    def parse_filters(self, tables: Mapping[str, Any]) -> Dict[str, FilterConfig]:
        filters: Dict[str, FilterConfig] = {}
        for name, value in tables.items():
            key = f"filter.{name}"
            table = self.table(value, key)
            if table is None:
                continue
            parsed = self.parse_filter(name, table, key)
            if parsed is not None:
                filters[name] = parsed
        # checks that need the other filters (ip_block watches rate limits)
        types = {
            name: value.get("type")
            for name, value in tables.items()
            if isinstance(value, Mapping) and isinstance(value.get("type"), str)
        }
        for name, fconf in filters.items():
            module = filter_type(fconf.type) if ":" not in fconf.type else None
            cross_check = getattr(module, "check_watch", None)
            if cross_check is not None:
                cross_check(name, fconf.spec, types, self.errors)
        return filters

    def parse_filter(
        self, name: str, table: Mapping[str, Any], key: str
    ) -> Optional[FilterConfig]:
        if "type" not in table:
            self.errors.add(f"{key}.type", "required key is missing")
            return None
        type_name = self.string(table["type"], f"{key}.type")
        if type_name is None:
            return None
        rest = {k: v for k, v in table.items() if k != "type"}
        if ":" in type_name:
            # a custom filter: its table is handed to it unvalidated
            try:
                load_object(type_name)
            except ValueError as e:
                self.errors.add(f"{key}.type", f"cannot load custom filter: {e}")
                return None
            return FilterConfig(name=name, type=type_name, spec=rest)
        try:
            module = filter_type(type_name)
            builtin = ", ".join(builtin_type_names())
        except Exception as e:  # a built-in filter module failed to import
            self.errors.add(f"{key}.type", f"filter types unavailable: {e}")
            return None
        if module is None:
            self.errors.add(
                f"{key}.type",
                f"unknown filter type {type_name!r} (built-in: {builtin}; "
                f"a custom filter is 'package.module:name')",
            )
            return None
        before = len(self.errors)
        try:
            spec = module.parse(name, rest, self.errors, self.base_dir)
        except Exception as e:
            self.errors.add(key, f"cannot check this filter: {type(e).__name__}: {e}")
            return None
        if len(self.errors) > before:
            return None
        return FilterConfig(name=name, type=type_name, spec=spec)
