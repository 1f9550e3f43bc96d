# -*- test-case-name: tests.test_transform -*-
"""
The C{transform} filter type: rewrite JSON request and response bodies with
a Python function.

::

    [filter.v1-compat]
    type = "transform"
    request = "twisted_proxy.examples.transforms:v1_to_v2"   # body to the backend
    response = "twisted_proxy.examples.transforms:v2_to_v1"  # body to the client
    max_body = 1048576                                      # bytes (the default)
    content_types = ["application/json"]                    # the default

Each function is called as C{func(payload, request)} with the decoded JSON
value and the L{twisted_proxy.filters.RequestInfo}, and returns the new
value, which is sent as compact UTF-8 JSON (the proxy sets
C{Content-Length}).

Only bodies whose C{Content-Type} (parameters ignored) is in
C{content_types} and that carry no C{Content-Encoding} are transformed; a
response only when its status is 2xx and the request was not C{HEAD}. With a
C{response} function the filter removes C{Accept-Encoding} from the request,
so the backend answers uncompressed and its JSON can be read.

These are the only bodies the proxy buffers, and only up to C{max_body}
bytes (beyond it: 413 for a request, 502 for a response). A request body that
is not valid JSON raises L{BadBody} (the client gets 400); a response body
that is not valid JSON is passed through unchanged (logged once per filter).
An exception in the function itself is a bug of the function: it
propagates (the client gets a 500 or 502).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_proxy.filters import BadBody, ErrorList, RequestInfo
from twisted_proxy.filters.headers import remove_headers
from twisted_proxy.interfaces import IBodyTransform, IRequestFilter
from twisted_proxy.loading import load_object

__all__ = ["BadBody", "TransformFilter", "TransformSpec", "build", "parse"]

log = Logger()

Transform = Callable[[Any, RequestInfo], Any]

DEFAULT_MAX_BODY = 1048576
DEFAULT_CONTENT_TYPES = ("application/json",)

_KEYS = frozenset({"request", "response", "max_body", "content_types"})
_MEDIA_TYPE = re.compile(
    r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z"
)
_NO_ACCEPT_ENCODING: FrozenSet[bytes] = frozenset({b"accept-encoding"})


@attrs.frozen
class TransformSpec:
    """
    A parsed C{transform} filter table.

    @ivar request: the dotted name of the request function, or L{None}.
    @ivar response: the dotted name of the response function, or L{None}.
    @ivar request_func: the request function itself.
    @ivar response_func: the response function itself.
    @ivar max_body: the largest body buffered, in bytes.
    @ivar content_types: lower-cased media types (C{type/subtype}).
    """

    request: Optional[str] = None
    response: Optional[str] = None
    request_func: Optional[Transform] = attrs.field(default=None, repr=False)
    response_func: Optional[Transform] = attrs.field(default=None, repr=False)
    max_body: int = DEFAULT_MAX_BODY
    content_types: Tuple[str, ...] = DEFAULT_CONTENT_TYPES


# --- parsing ---------------------------------------------------------------


def _load_function(value: Any, path: str, errors: ErrorList) -> Optional[Transform]:
    if not isinstance(value, str):
        errors.add(path, f"must be a string 'package.module:function', not {type(value).__name__}")
        return None
    try:
        func = load_object(value)
    except ValueError as e:
        errors.add(path, f"cannot load {value!r}: {e}")
        return None
    if not callable(func):
        errors.add(path, f"{value!r} is not callable (a {type(func).__name__})")
        return None
    return func  # type: ignore[no-any-return]


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> TransformSpec:
    """
    Validate a C{[filter.NAME]} table of type C{transform}; report problems
    to C{errors} under C{filter.NAME.key}. The functions are imported now.
    """
    prefix = f"filter.{name}"
    values: Dict[str, Any] = {}
    for key in table:
        if key not in _KEYS and key != "type":
            errors.add(f"{prefix}.{key}", "unknown key")
    if "request" not in table and "response" not in table:
        errors.add(prefix, "needs a request or a response function (or both)")
    for side in ("request", "response"):
        if side in table:
            func = _load_function(table[side], f"{prefix}.{side}", errors)
            if func is not None:
                values[side] = table[side]
                values[f"{side}_func"] = func
    if "max_body" in table:
        value = table["max_body"]
        path = f"{prefix}.max_body"
        if not isinstance(value, int) or isinstance(value, bool):
            errors.add(path, f"must be an integer (bytes), not {type(value).__name__}")
        elif value <= 0:
            errors.add(path, f"must be positive, not {value}")
        else:
            values["max_body"] = value
    if "content_types" in table:
        value = table["content_types"]
        path = f"{prefix}.content_types"
        if not isinstance(value, list):
            errors.add(path, f"must be a list of media types, not {type(value).__name__}")
        elif not value:
            errors.add(path, "must not be empty (nothing would be transformed)")
        else:
            types = []
            for i, item in enumerate(value):
                item_path = f"{path}[{i}]"
                if not isinstance(item, str):
                    errors.add(item_path, f"must be a string, not {type(item).__name__}")
                elif not _MEDIA_TYPE.match(item.strip()):
                    errors.add(
                        item_path,
                        f"{item!r} is not a media type like 'application/json'"
                        " (no parameters)",
                    )
                else:
                    types.append(item.strip().lower())
            values["content_types"] = tuple(types)
    return TransformSpec(**values)


# --- the live filter -------------------------------------------------------


def _media_type(headers: Any) -> Optional[bytes]:
    """
    The lower-cased media type of the C{Content-Type} header (parameters
    removed), or L{None}; L{None} as well when the body has a
    C{Content-Encoding} other than C{identity} (it cannot be read as JSON).
    """
    found: Optional[bytes] = None
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-type":
            if found is None:
                found = value.partition(b";")[0].strip().lower()
        elif lname == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return None
    return found


def _dump(value: Any) -> bytes:
    """
    C{value} as compact UTF-8 JSON.
    """
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate (from a "\\ud800" escape) has no UTF-8 form
        return json.dumps(value, separators=(",", ":")).encode("ascii")


@implementer(IBodyTransform, IRequestFilter)
class TransformFilter:
    """
    The live C{transform} filter; see the module docstring.

    @ivar name: the filter's name.
    @ivar spec: its L{TransformSpec}.
    @ivar max_body: the largest body it buffers, in bytes.
    """

    def __init__(self, name: str, spec: TransformSpec) -> None:
        self.name = name
        self.spec = spec
        self.max_body = spec.max_body
        self._request = spec.request_func
        self._response = spec.response_func
        self._types: FrozenSet[bytes] = frozenset(t.encode("ascii") for t in spec.content_types)
        self._warned = False

    def __repr__(self) -> str:
        return f"<TransformFilter {self.name!r}>"

    def filter_request(self, info: RequestInfo) -> None:
        """
        Never refuses. With a response function, removes
        C{Accept-Encoding} so the backend's JSON arrives uncompressed.
        """
        if self._response is not None:
            remove_headers(info.headers, _NO_ACCEPT_ENCODING)

    def wants_request(self, info: RequestInfo) -> bool:
        """
        Whether this request's body is to be transformed: there is a
        request function and the body is of one of C{content_types}.
        """
        return self._request is not None and _media_type(info.headers) in self._types

    def transform_request(self, info: RequestInfo, body: bytes) -> bytes:
        """
        The request function's result for the JSON C{body}, as JSON; an
        empty body is left empty.

        @raise BadBody: if C{body} is not valid JSON.
        """
        if not body or self._request is None:
            return body
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadBody(f"the request body is not valid JSON: {_short(e)}") from None
        return _dump(self._request(payload, info))

    def wants_response(self, info: RequestInfo, response: Any) -> bool:
        """
        Whether this response's body is to be transformed: there is a
        response function, the status is 2xx, the request was not C{HEAD}
        and the body is of one of C{content_types}.
        """
        return (
            self._response is not None
            and 200 <= response.status < 300
            and info.method != "HEAD"
            and _media_type(response.headers) in self._types
        )

    def transform_response(self, info: RequestInfo, response: Any, body: bytes) -> bytes:
        """
        The response function's result for the JSON C{body}, as JSON; a
        body that is empty or not valid JSON is returned unchanged.
        """
        if not body or self._response is None:
            return body
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as e:
            if not self._warned:
                self._warned = True
                log.warn(
                    "transform {filter}: a response body is not valid JSON ({problem});"
                    " such bodies are passed through unchanged (logged once)",
                    filter=self.name,
                    problem=_short(e),
                )
            return body
        return _dump(self._response(payload, info))


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def build(name: str, spec: TransformSpec, clock: IReactorTime) -> TransformFilter:
    """
    Make the live filter for C{spec}.
    """
    return TransformFilter(name, spec)
