# -*- test-case-name: tests.test_filters -*-
"""
The built-in filter types, by the name a C{[filter.NAME]} table's C{type}
gives.

A filter type is a module with two functions::

    parse(name, table, errors, base_dir) -> spec
        Validate the C{[filter.NAME]} table (without its C{type} key),
        reporting every problem with C{errors.add("filter.NAME.key", msg)},
        and return a frozen spec object.

    build(name, spec, clock) -> IRequestFilter
        Make the live filter; C{clock} is an C{IReactorTime}.

and optionally C{check_watch(name, spec, filter_types, errors)}, a check
that needs the types of the other filters (see
L{twisted_proxy.filters.ip_block}).

Each module is imported when its type is first asked for, so that a
configuration without, say, a C{jwt} filter never imports the JWT library.
A custom filter (C{"package.module:name"}) is not in this registry: it is
loaded with L{twisted_proxy.loading.load_object}.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Mapping, Optional, Sequence

__all__ = ["BUILTIN_TYPES", "builtin_type_names", "filter_type"]

#: The built-in filter types: type name -> the module implementing it.
BUILTIN_TYPES: Mapping[str, str] = {
    "acl": "twisted_proxy.filters.acl",
    "rate_limit": "twisted_proxy.filters.rate_limit",
    "ip_block": "twisted_proxy.filters.ip_block",
    "basic_auth": "twisted_proxy.filters.basic_auth",
    "jwt": "twisted_proxy.filters.jwt_auth",
    "headers": "twisted_proxy.filters.headers",
    "transform": "twisted_proxy.filters.transform",
}


def filter_type(name: str) -> Optional[ModuleType]:
    """
    The module implementing the built-in filter type C{name}, or L{None} if
    there is no such type.

    @raise Exception: whatever importing that module raises (a missing
        dependency).
    """
    module_name = BUILTIN_TYPES.get(name)
    if module_name is None:
        return None
    return importlib.import_module(module_name)


def builtin_type_names() -> Sequence[str]:
    """
    The names of the built-in filter types, sorted.
    """
    return sorted(BUILTIN_TYPES)
