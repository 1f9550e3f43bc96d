"""
Tests for L{twisted_proxy.filters.transform}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.filters import ErrorList, RequestInfo
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.filters.transform import (
    DEFAULT_MAX_BODY,
    BadBody,
    TransformFilter,
    TransformSpec,
    build,
    parse,
)
from twisted_proxy.http.parser import ResponseHead
from twisted_proxy.interfaces import IBodyTransform, IRequestFilter
from twisted_proxy.testing import request_info, run_filter

JSON = [(b"Content-Type", b"application/json")]


def stamp(payload: Any, request: RequestInfo) -> Any:
    """
    A transform recording what it saw.
    """
    return {"got": payload, "path": request.path}


def not_json(payload: Any, request: RequestInfo) -> Any:
    """
    A transform returning something JSON cannot encode.
    """
    return {1, 2}


NOT_CALLABLE = 42


def parsed(table: Dict[str, Any], name: str = "t") -> Tuple[TransformSpec, List[Tuple[str, str]]]:
    errors = ErrorList()
    spec = parse(name, table, errors, "/etc")
    return spec, errors.items


def make(table: Dict[str, Any], name: str = "t") -> TransformFilter:
    spec, errors = parsed(table, name)
    assert not errors, errors
    return build(name, spec, task.Clock())


def request(headers: Any = JSON, method: str = "POST", path: str = "/users") -> RequestInfo:
    info = request_info(method=method, path=path)
    info.headers = list(headers)
    return info


def response(headers: Any = JSON, status: int = 200) -> ResponseHead:
    return ResponseHead(status, b"OK", b"1.1", list(headers), True, 1)


STAMP = "tests.test_transform:stamp"


class ParseTests(SynchronousTestCase):
    """
    L{parse} loads the functions and checks the limits.
    """

    def test_registered(self) -> None:
        """
        C{transform} is a built-in filter type.
        """
        from twisted_proxy.filters import transform

        self.assertIs(filter_type("transform"), transform)

    def test_defaults(self) -> None:
        """
        C{max_body} defaults to 1 MiB and C{content_types} to JSON; the
        function is loaded.
        """
        spec, errors = parsed({"request": STAMP})
        self.assertEqual(errors, [])
        self.assertEqual(spec.request, STAMP)
        self.assertIs(spec.request_func, stamp)
        self.assertIsNone(spec.response_func)
        self.assertEqual(spec.max_body, DEFAULT_MAX_BODY)
        self.assertEqual(spec.max_body, 1048576)
        self.assertEqual(spec.content_types, ("application/json",))

    def test_all_keys(self) -> None:
        """
        Both functions, C{max_body} and C{content_types} (lower-cased).
        """
        spec, errors = parsed(
            {
                "request": STAMP,
                "response": "twisted_proxy.examples.transforms:v2_to_v1",
                "max_body": 4096,
                "content_types": ["application/json", "Application/Problem+JSON"],
            }
        )
        self.assertEqual(errors, [])
        self.assertEqual(spec.max_body, 4096)
        self.assertEqual(spec.content_types, ("application/json", "application/problem+json"))
        self.assertEqual(spec.response, "twisted_proxy.examples.transforms:v2_to_v1")

    def test_no_function(self) -> None:
        """
        A transform needs at least one function.
        """
        _, errors = parsed({"max_body": 10})
        self.assertEqual(errors, [("filter.t", "needs a request or a response function (or both)")])

    def test_unknown_key(self) -> None:
        """
        Unknown keys are reported at their path.
        """
        _, errors = parsed({"request": STAMP, "max_size": 1})
        self.assertEqual(errors, [("filter.t.max_size", "unknown key")])

    def test_not_importable(self) -> None:
        """
        A function that cannot be imported is an error saying why.
        """
        _, errors = parsed({"request": "no_such_module_xyz:f", "response": "tests.test_transform:nope"})
        self.assertEqual([path for path, _ in errors], ["filter.t.request", "filter.t.response"])
        self.assertIn("cannot import 'no_such_module_xyz'", errors[0][1])
        self.assertIn("has no 'nope'", errors[1][1])

    def test_not_callable(self) -> None:
        """
        An object that is not callable is refused.
        """
        _, errors = parsed({"request": "tests.test_transform:NOT_CALLABLE"})
        self.assertEqual(
            errors,
            [("filter.t.request", "'tests.test_transform:NOT_CALLABLE' is not callable (a int)")],
        )

    def test_not_a_string(self) -> None:
        """
        A function must be named by a string.
        """
        _, errors = parsed({"request": 3})
        self.assertEqual(
            errors, [("filter.t.request", "must be a string 'package.module:function', not int")]
        )

    def test_bad_max_body(self) -> None:
        """
        C{max_body} is a positive integer.
        """
        for value, message in [
            (0, "must be positive, not 0"),
            (-5, "must be positive, not -5"),
            (1.5, "must be an integer (bytes), not float"),
            (True, "must be an integer (bytes), not bool"),
            ("1M", "must be an integer (bytes), not str"),
        ]:
            _, errors = parsed({"request": STAMP, "max_body": value})
            self.assertEqual(errors, [("filter.t.max_body", message)])

    def test_bad_content_types(self) -> None:
        """
        C{content_types} is a non-empty list of bare media types.
        """
        _, errors = parsed({"request": STAMP, "content_types": []})
        self.assertEqual(
            errors, [("filter.t.content_types", "must not be empty (nothing would be transformed)")]
        )
        _, errors = parsed({"request": STAMP, "content_types": "application/json"})
        self.assertEqual(errors, [("filter.t.content_types", "must be a list of media types, not str")])
        _, errors = parsed(
            {"request": STAMP, "content_types": ["json", "application/json; charset=utf-8", 1]}
        )
        self.assertEqual(
            errors,
            [
                ("filter.t.content_types[0]", "'json' is not a media type like 'application/json' (no parameters)"),
                (
                    "filter.t.content_types[1]",
                    "'application/json; charset=utf-8' is not a media type like"
                    " 'application/json' (no parameters)",
                ),
                ("filter.t.content_types[2]", "must be a string, not int"),
            ],
        )


class RequestTests(SynchronousTestCase):
    """
    Request bodies: chosen by content type, decoded, transformed and
    encoded.
    """

    def test_interfaces(self) -> None:
        """
        The filter is an C{IBodyTransform} and an C{IRequestFilter} whose
        C{max_body} is the configured one.
        """
        flt = make({"request": STAMP, "max_body": 100})
        self.assertTrue(verifyObject(IBodyTransform, flt))
        self.assertTrue(verifyObject(IRequestFilter, flt))
        self.assertEqual(flt.max_body, 100)
        self.assertEqual(flt.name, "t")

    def test_filter_request_passes(self) -> None:
        """
        As a request filter it never refuses and, without a response
        function, changes nothing.
        """
        flt = make({"request": STAMP})
        info = request(JSON + [(b"Accept-Encoding", b"gzip")])
        self.assertIsNone(run_filter(flt, info))
        self.assertEqual(info.headers, JSON + [(b"Accept-Encoding", b"gzip")])

    def test_wants_request(self) -> None:
        """
        A request is wanted when its media type (parameters and case
        ignored) is one of C{content_types}.
        """
        flt = make({"request": STAMP, "content_types": ["application/json", "text/x-json"]})
        for headers, wanted in [
            (JSON, True),
            ([(b"content-type", b"Application/JSON; charset=utf-8")], True),
            ([(b"Content-Type", b"text/x-json")], True),
            ([(b"Content-Type", b"text/plain")], False),
            ([], False),
            (JSON + [(b"Content-Encoding", b"gzip")], False),
            (JSON + [(b"Content-Encoding", b"identity")], True),
        ]:
            self.assertEqual(flt.wants_request(request(headers)), wanted, headers)

    def test_not_wanted_without_function(self) -> None:
        """
        Without a request function no request is wanted.
        """
        flt = make({"response": STAMP})
        self.assertFalse(flt.wants_request(request()))

    def test_transform(self) -> None:
        """
        The body is decoded, given with the request to the function, and
        the result encoded as compact UTF-8 JSON.
        """
        flt = make({"request": STAMP})
        body = flt.transform_request(request(path="/u/1"), json.dumps({"name": "Zoë"}).encode())
        self.assertEqual(body, '{"got":{"name":"Zoë"},"path":"/u/1"}'.encode("utf-8"))

    def test_example(self) -> None:
        """
        The shipped example renames C{name} and adds the version.
        """
        flt = make({"request": "twisted_proxy.examples.transforms:v1_to_v2"})
        self.assertEqual(
            flt.transform_request(request(), b'{"name": "Ada", "age": 36}'),
            b'{"full_name":"Ada","age":36,"version":2}',
        )

    def test_empty_body(self) -> None:
        """
        An empty body is left empty (there is nothing to transform).
        """
        flt = make({"request": STAMP})
        self.assertEqual(flt.transform_request(request(), b""), b"")

    def test_invalid_json(self) -> None:
        """
        A body that is not JSON raises L{BadBody}, a C{ValueError}, saying
        so (the proxy answers 400).
        """
        flt = make({"request": STAMP})
        for body in [b"{not json", b"\xff\xfe\x00", b"[" * 100000]:
            e = self.assertRaises(BadBody, flt.transform_request, request(), body)
            self.assertIsInstance(e, ValueError)
            self.assertTrue(str(e).startswith("the request body is not valid JSON: "), str(e))
            self.assertLess(len(str(e)), 300)

    def test_lone_surrogate(self) -> None:
        """
        A string holding a lone surrogate (sent as an escape) is sent back
        escaped, as valid JSON.
        """
        flt = make({"request": "twisted_proxy.examples.transforms:v2_to_v1"})
        body = flt.transform_request(request(), b'{"full_name": "\\ud800"}')
        self.assertEqual(json.loads(body), {"name": "\ud800"})

    def test_function_error_propagates(self) -> None:
        """
        A function returning what JSON cannot encode is the function's bug:
        the error propagates and is not a L{BadBody}.
        """
        flt = make({"request": "tests.test_transform:not_json"})
        e = self.assertRaises(TypeError, flt.transform_request, request(), b"{}")
        self.assertNotIsInstance(e, BadBody)


class ResponseTests(SynchronousTestCase):
    """
    Response bodies: only 2xx JSON bodies not answering HEAD.
    """

    def test_wants_response(self) -> None:
        """
        A 2xx response of a configured media type, without
        C{Content-Encoding}, to a request other than HEAD is wanted.
        """
        flt = make({"response": STAMP})
        get = request(method="GET")
        self.assertTrue(flt.wants_response(get, response()))
        self.assertTrue(flt.wants_response(get, response(status=201)))
        self.assertFalse(flt.wants_response(get, response(status=404)))
        self.assertFalse(flt.wants_response(get, response(status=302)))
        self.assertFalse(flt.wants_response(get, response([(b"Content-Type", b"text/html")])))
        self.assertFalse(flt.wants_response(get, response(JSON + [(b"Content-Encoding", b"br")])))
        self.assertFalse(flt.wants_response(request(method="HEAD"), response()))

    def test_not_wanted_without_function(self) -> None:
        """
        Without a response function no response is wanted.
        """
        flt = make({"request": STAMP})
        self.assertFalse(flt.wants_response(request(), response()))

    def test_accept_encoding_removed(self) -> None:
        """
        With a response function the request's C{Accept-Encoding} is
        removed, so the backend's JSON arrives readable.
        """
        flt = make({"response": STAMP})
        info = request([(b"accept-encoding", b"gzip, br"), (b"Accept", b"*/*")])
        self.assertIsNone(run_filter(flt, info))
        self.assertEqual(info.headers, [(b"Accept", b"*/*")])

    def test_transform(self) -> None:
        """
        The body is decoded, transformed with the request and encoded.
        """
        flt = make({"response": "twisted_proxy.examples.transforms:v2_to_v1"})
        body = flt.transform_response(
            request(), response(), b'[{"full_name": "Ada", "version": 2}, 3]'
        )
        self.assertEqual(body, b'[{"name":"Ada"},3]')

    def test_invalid_json_passes(self) -> None:
        """
        A response body that is not JSON goes through unchanged; the
        problem is logged once per filter.
        """
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        flt = make({"response": STAMP})
        self.assertEqual(flt.transform_response(request(), response(), b"<html>"), b"<html>")
        self.assertEqual(flt.transform_response(request(), response(), b"oops"), b"oops")
        mine = [e for e in events if e.get("filter") == "t"]
        self.assertEqual(len(mine), 1)
        self.assertIn("not valid JSON", mine[0]["log_format"])

    def test_empty_body(self) -> None:
        """
        An empty response body (a 204) is left empty.
        """
        flt = make({"response": STAMP})
        self.assertEqual(flt.transform_response(request(), response(status=204), b""), b"")
