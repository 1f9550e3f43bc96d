# -*- test-case-name: tests.test_example_transforms -*-
"""
Example body transforms for the C{transform} filter: a v1 API in front of a
v2 backend.

v1 clients send and expect C{{"name": ...}}; the v2 backend wants
C{{"full_name": ..., "version": 2}}. L{v1_to_v2} converts request bodies on
the way in, L{v2_to_v1} converts response bodies on the way out::

    [filter.v1-compat]
    type = "transform"
    request = "twisted_proxy.examples.transforms:v1_to_v2"
    response = "twisted_proxy.examples.transforms:v2_to_v1"

A transform is any callable C{func(payload, request)}: C{payload} is the
decoded JSON value (a dict, list, string, number, bool or None) and
C{request} the L{twisted_proxy.filters.RequestInfo} (C{method}, C{path},
C{host}, C{client_ip}, C{claims}, ...). It returns the new JSON value. It
runs on the reactor thread, so it must be quick and must not block.
"""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["v1_to_v2", "v2_to_v1"]


def _each(payload: Any, convert: Any) -> Any:
    """
    C{convert} applied to an object, or to each object of a list; other
    values are returned as they are.
    """
    if isinstance(payload, dict):
        return convert(payload)
    if isinstance(payload, list):
        return [convert(item) if isinstance(item, dict) else item for item in payload]
    return payload


def _to_v2(obj: Dict[str, Any]) -> Dict[str, Any]:
    out = {("full_name" if key == "name" else key): value for key, value in obj.items()}
    out["version"] = 2
    return out


def _to_v1(obj: Dict[str, Any]) -> Dict[str, Any]:
    return {
        ("name" if key == "full_name" else key): value
        for key, value in obj.items()
        if key != "version"
    }


def v1_to_v2(payload: Any, request: Any) -> Any:
    """
    A v1 request body as v2: C{name} becomes C{full_name} and
    C{"version": 2} is added (to an object, or to each object of a list).

    >>> v1_to_v2({"name": "Ada", "age": 36}, None)
    {'full_name': 'Ada', 'age': 36, 'version': 2}
    """
    return _each(payload, _to_v2)


def v2_to_v1(payload: Any, request: Any) -> Any:
    """
    A v2 response body as v1, the reverse of L{v1_to_v2}: C{full_name}
    becomes C{name} and C{version} is removed.

    >>> v2_to_v1({"full_name": "Ada", "age": 36, "version": 2}, None)
    {'name': 'Ada', 'age': 36}
    """
    return _each(payload, _to_v1)
