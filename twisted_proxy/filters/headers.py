# -*- test-case-name: tests.test_headers -*-
"""
The C{headers} filter type: set, add and remove request headers (before the
request is forwarded) and response headers (before the response goes to the
client).

::

    [filter.stamp]
    type = "headers"
    request = { set = { X-Request-Id = "{request_id}" }, remove = ["X-Debug"] }
    response = { set = { Strict-Transport-Security = "max-age=31536000" },
                 add = { Link = ["</a.css>; rel=preload", "</b.js>; rel=preload"] },
                 remove = ["X-Backend-Version"] }

Each side is applied in this order: C{remove} and the names in C{set} are
deleted (every header of that name, compared case-insensitively), then the
C{set} headers are appended, then the C{add} headers. C{set} values are
strings; C{add} values are a string or a list of strings (one header each).

Values may use C{{client_ip}}, C{{host}}, C{{request_id}}, C{{method}} and
C{{path}} (of the request, on both sides); C{{{} and C{}}} stand for C{{} and
C{}}. Framing and hop-by-hop headers (C{Content-Length},
C{Transfer-Encoding}, C{Connection}, ...) and, on the request side, C{Host}
cannot be set, added or removed: the proxy owns them.

L{remove_headers} is the in-place header removal the other filter types
share.
"""

from __future__ import annotations

import re
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

import attrs
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_proxy.filters import ErrorList, RequestInfo
from twisted_proxy.http.policy import HOP_BY_HOP
from twisted_proxy.interfaces import IRequestFilter, IResponseFilter

__all__ = [
    "HeaderEdits",
    "HeadersFilter",
    "HeadersSpec",
    "PLACEHOLDERS",
    "build",
    "parse",
    "remove_headers",
    "valid_header_name",
]

Headers = List[Tuple[bytes, bytes]]

#: a value as literal bytes and placeholder names (the RequestInfo attribute)
Template = Tuple[Union[bytes, str], ...]

#: the placeholders a value may use: RequestInfo attributes
PLACEHOLDERS: FrozenSet[str] = frozenset({"client_ip", "host", "request_id", "method", "path"})

#: header names the proxy owns in responses (framing and hop-by-hop)
RESPONSE_RESERVED: FrozenSet[bytes] = HOP_BY_HOP | {b"content-length"}
#: and in requests also Host (the proxy sends the route's or the URI's)
REQUEST_RESERVED: FrozenSet[bytes] = RESPONSE_RESERVED | {b"host"}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# control characters other than HTAB are never valid in a field value
_CTL_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_CTL_BYTES = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_SIDE_KEYS = frozenset({"set", "add", "remove"})


def valid_header_name(name: str) -> bool:
    """
    Whether C{name} is a valid HTTP field name (an RFC 9110 token).
    """
    return bool(_TOKEN.match(name))


def remove_headers(headers: Headers, lnames: FrozenSet[bytes]) -> int:
    """
    Delete, in place, every header whose lower-cased name is in C{lnames}.

    @return: how many were removed.
    """
    kept = [item for item in headers if item[0].lower() not in lnames]
    removed = len(headers) - len(kept)
    if removed:
        headers[:] = kept
    return removed


@attrs.frozen
class HeaderEdits:
    """
    The edits of one side (request or response).

    @ivar set: C{(name, template)} pairs replacing every header of the name.
    @ivar add: C{(name, template)} pairs appended.
    @ivar remove: names (as configured) whose headers are deleted.
    """

    set: Tuple[Tuple[bytes, Template], ...] = ()
    add: Tuple[Tuple[bytes, Template], ...] = ()
    remove: Tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@attrs.frozen
class HeadersSpec:
    """
    A parsed C{headers} filter table.
    """

    request: HeaderEdits = HeaderEdits()
    response: HeaderEdits = HeaderEdits()


# --- parsing ---------------------------------------------------------------


def compile_template(text: str, path: str, errors: ErrorList) -> Optional[Template]:
    """
    C{text} as literal parts and placeholder names, or L{None} (with an
    error at C{path}) if it uses an unknown placeholder, has an unmatched
    brace or a control character.
    """
    match = _CTL_TEXT.search(text)
    if match is not None:
        errors.add(path, f"must not contain control characters ({match.group()!r})")
        return None
    parts: List[Union[bytes, str]] = []
    literal: List[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{", i + 1):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i + 1)
            if end < 0:
                errors.add(path, f"{text!r}: unmatched '{{' (write '{{{{' for a brace)")
                return None
            name = text[i + 1 : end]
            if name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
                errors.add(
                    path,
                    f"{text!r}: unknown placeholder {{{name}}} (known: {known};"
                    " write '{{' for a brace)",
                )
                return None
            if literal:
                parts.append("".join(literal).encode("utf-8"))
                literal = []
            parts.append(name)
            i = end + 1
        elif c == "}":
            if text.startswith("}", i + 1):
                literal.append("}")
                i += 2
                continue
            errors.add(path, f"{text!r}: unmatched '}}' (write '}}}}' for a brace)")
            return None
        else:
            literal.append(c)
            i += 1
    if literal or not parts:
        parts.append("".join(literal).encode("utf-8"))
    return tuple(parts)


def _header_name(
    name: str, path: str, reserved: FrozenSet[bytes], side: str, errors: ErrorList
) -> Optional[bytes]:
    if not valid_header_name(name):
        errors.add(path, f"{name!r} is not a valid header name")
        return None
    raw = name.encode("ascii")
    if raw.lower() in reserved:
        errors.add(
            path,
            f"{name} is managed by the proxy and cannot be changed in the {side}"
            " (framing, hop-by-hop and Host headers)",
        )
        return None
    return raw


def _parse_side(
    value: Any, path: str, side: str, errors: ErrorList
) -> HeaderEdits:
    if not isinstance(value, dict):
        errors.add(
            path,
            f"must be a table like {{ set = {{...}}, add = {{...}}, remove = [...] }},"
            f" not {type(value).__name__}",
        )
        return HeaderEdits()
    reserved = REQUEST_RESERVED if side == "request" else RESPONSE_RESERVED
    for key in value:
        if key not in _SIDE_KEYS:
            errors.add(f"{path}.{key}", "unknown key (set, add or remove)")
    owners: Dict[bytes, str] = {}  # lower-cased name -> the key that uses it
    sets: List[Tuple[bytes, Template]] = []
    adds: List[Tuple[bytes, Template]] = []
    removes: List[bytes] = []

    def claim(raw: bytes, key: str, item_path: str) -> bool:
        lname = raw.lower()
        previous = owners.get(lname)
        if previous is None or {previous, key} == {"set", "add"}:
            owners.setdefault(lname, key)
            return True
        if previous == key:
            errors.add(item_path, f"{raw.decode()} is given twice (names are case-insensitive)")
        else:
            errors.add(item_path, f"{raw.decode()} is both in {previous} and in {key}")
        return False

    for key in ("set", "add"):
        if key not in value:
            continue
        table = value[key]
        key_path = f"{path}.{key}"
        if not isinstance(table, dict):
            errors.add(key_path, f"must be a table of header names to values, not {type(table).__name__}")
            continue
        for name, item in table.items():
            item_path = f"{key_path}.{name}"
            raw = _header_name(name, item_path, reserved, side, errors)
            if raw is None or not claim(raw, key, item_path):
                continue
            if key == "add" and isinstance(item, list):
                texts = item
                if not texts:
                    errors.add(item_path, "must not be an empty list")
                    continue
                paths = [f"{item_path}[{i}]" for i in range(len(texts))]
            else:
                texts = [item]
                paths = [item_path]
            for text, text_path in zip(texts, paths):
                if not isinstance(text, str):
                    kinds = "a string or a list of strings" if key == "add" else "a string"
                    errors.add(text_path, f"must be {kinds}, not {type(text).__name__}")
                    continue
                template = compile_template(text, text_path, errors)
                if template is not None:
                    (sets if key == "set" else adds).append((raw, template))
    if "remove" in value:
        items = value["remove"]
        key_path = f"{path}.remove"
        if not isinstance(items, list):
            errors.add(key_path, f"must be a list of header names, not {type(items).__name__}")
        else:
            for i, name in enumerate(items):
                item_path = f"{key_path}[{i}]"
                if not isinstance(name, str):
                    errors.add(item_path, f"must be a string, not {type(name).__name__}")
                    continue
                raw = _header_name(name, item_path, reserved, side, errors)
                if raw is not None and claim(raw, "remove", item_path):
                    removes.append(raw)
    return HeaderEdits(set=tuple(sets), add=tuple(adds), remove=tuple(removes))


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> HeadersSpec:
    """
    Validate a C{[filter.NAME]} table of type C{headers}; report problems to
    C{errors} under C{filter.NAME.key}.
    """
    prefix = f"filter.{name}"
    for key in table:
        if key not in ("request", "response", "type"):
            errors.add(f"{prefix}.{key}", "unknown key (request or response)")
    if "request" not in table and "response" not in table:
        errors.add(prefix, "needs a request or a response table (or both)")
        return HeadersSpec()
    sides: Dict[str, HeaderEdits] = {}
    for side in ("request", "response"):
        if side in table:
            sides[side] = _parse_side(table[side], f"{prefix}.{side}", side, errors)
    return HeadersSpec(**sides)


# --- the live filter -------------------------------------------------------


def _placeholder_value(text: str) -> bytes:
    """
    A placeholder's value as header bytes: Latin-1 (the request's own bytes,
    as the engine decoded them) when possible, else UTF-8; control
    characters are dropped.
    """
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    if _CTL_BYTES.search(raw):
        raw = _CTL_BYTES.sub(b"", raw)
    return raw


def render(template: Template, info: RequestInfo) -> bytes:
    """
    The value of C{template} for the request C{info}.
    """
    return b"".join(
        part if isinstance(part, bytes) else _placeholder_value(getattr(info, part))
        for part in template
    )


class _Editor:
    """
    One side's edits, prepared for the hot path.
    """

    def __init__(self, edits: HeaderEdits) -> None:
        self.drop: FrozenSet[bytes] = frozenset(
            name.lower() for name in edits.remove
        ) | frozenset(name.lower() for name, _ in edits.set)
        self.append: Tuple[Tuple[bytes, Template], ...] = edits.set + edits.add
        self.constant: Optional[List[Tuple[bytes, bytes]]] = None
        if all(len(t) == 1 and isinstance(t[0], bytes) for _, t in self.append):
            self.constant = [(name, t[0]) for name, t in self.append]  # type: ignore[misc]

    def apply(self, headers: Headers, info: RequestInfo) -> None:
        if self.drop:
            remove_headers(headers, self.drop)
        if self.constant is not None:
            headers.extend(self.constant)
        else:
            headers.extend((name, render(template, info)) for name, template in self.append)


@implementer(IRequestFilter, IResponseFilter)
class HeadersFilter:
    """
    The live C{headers} filter; see the module docstring.

    @ivar name: the filter's name.
    @ivar spec: its L{HeadersSpec}.
    """

    def __init__(self, name: str, spec: HeadersSpec) -> None:
        self.name = name
        self.spec = spec
        self._request = _Editor(spec.request) if spec.request else None
        self._response = _Editor(spec.response) if spec.response else None

    def __repr__(self) -> str:
        return f"<HeadersFilter {self.name!r}>"

    def filter_request(self, info: RequestInfo) -> None:
        """
        Edit C{info.headers} in place; never refuses.
        """
        if self._request is not None:
            self._request.apply(info.headers, info)

    def filter_response(self, info: RequestInfo, response: Any) -> None:
        """
        Edit C{response.headers} in place (C{info} is the request, for the
        placeholders).
        """
        if self._response is not None:
            self._response.apply(response.headers, info)


def build(name: str, spec: HeadersSpec, clock: IReactorTime) -> HeadersFilter:
    """
    Make the live filter for C{spec}.
    """
    return HeadersFilter(name, spec)
