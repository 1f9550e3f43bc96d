# -*- test-case-name: tests.test_filters -*-
"""
Objects the configuration names by dotted path: custom filters, custom
balancers, custom listener factories and body transforms, all written as
C{"package.module:name"}.

This module depends on nothing else of the project, so that any part of it
may load a named object without importing the parts that define the
built-in ones.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_object"]


def load_object(dotted: str) -> Any:
    """
    Import C{"package.module:name"} (or C{"package.module.name"}).

    The part after the colon may itself be dotted (C{"package.module:
    Class.attribute"}).

    @raise ValueError: with a readable message if it cannot be loaded.
    """
    if ":" in dotted:
        module_name, _, attr = dotted.partition(":")
    else:
        module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{dotted!r} is not of the form 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ValueError(f"cannot import {module_name!r}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attr!r}") from None
    return obj
