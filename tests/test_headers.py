"""
Tests for L{twisted_proxy.filters.headers}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_proxy.filters import ErrorList, RequestInfo
from twisted_proxy.filters.headers import (
    HeaderEdits,
    HeadersFilter,
    HeadersSpec,
    build,
    parse,
    remove_headers,
)
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.http.parser import ResponseHead
from twisted_proxy.interfaces import IRequestFilter, IResponseFilter
from twisted_proxy.testing import request_info, run_filter


def parsed(table: Dict[str, Any], name: str = "h") -> Tuple[HeadersSpec, List[Tuple[str, str]]]:
    errors = ErrorList()
    spec = parse(name, table, errors, "/etc")
    return spec, errors.items


def make(table: Dict[str, Any], name: str = "h") -> HeadersFilter:
    spec, errors = parsed(table, name)
    assert not errors, errors
    return build(name, spec, task.Clock())


def response(headers: List[Tuple[bytes, bytes]], status: int = 200) -> ResponseHead:
    return ResponseHead(status, b"OK", b"1.1", headers, True, 1)


def info_with(headers: List[Tuple[bytes, bytes]], **kw: Any) -> RequestInfo:
    """
    A request whose C{headers} is the very list given (as the engine hands
    its head's list to the filters).
    """
    info = request_info(**kw)
    info.headers = headers
    info.request_id = "abc-1"
    return info


class ParseTests(SynchronousTestCase):
    """
    L{parse} turns a C{headers} table into a L{HeadersSpec}, reporting every
    problem under its TOML key path.
    """

    def test_registered(self) -> None:
        """
        C{headers} is a built-in filter type.
        """
        from twisted_proxy.filters import headers

        self.assertIs(filter_type("headers"), headers)

    def test_all_keys(self) -> None:
        """
        C{set}, C{add} and C{remove} on both sides become byte names and
        templates; an C{add} list gives one header per item.
        """
        spec, errors = parsed(
            {
                "request": {
                    "set": {"X-Request-Id": "{request_id}"},
                    "add": {"X-Tag": ["a", "b"]},
                    "remove": ["X-Debug"],
                },
                "response": {"set": {"X-Frame-Options": "DENY"}},
            }
        )
        self.assertEqual(errors, [])
        self.assertEqual(
            spec,
            HeadersSpec(
                request=HeaderEdits(
                    set=((b"X-Request-Id", ("request_id",)),),
                    add=((b"X-Tag", (b"a",)), (b"X-Tag", (b"b",))),
                    remove=(b"X-Debug",),
                ),
                response=HeaderEdits(set=((b"X-Frame-Options", (b"DENY",)),)),
            ),
        )

    def test_templates(self) -> None:
        """
        A value is split into literal bytes and placeholder names; C{{{}
        and C{}}} are literal braces; an empty value is one empty literal.
        """
        spec, errors = parsed(
            {
                "request": {
                    "set": {
                        "A": "ip={client_ip} host={host}",
                        "B": "{{literal}} {method} {path}",
                        "C": "",
                    }
                }
            }
        )
        self.assertEqual(errors, [])
        self.assertEqual(
            dict(spec.request.set),
            {
                b"A": (b"ip=", "client_ip", b" host=", "host"),
                b"B": (b"{literal} ", "method", b" ", "path"),
                b"C": (b"",),
            },
        )

    def test_nothing_to_do(self) -> None:
        """
        A table with neither C{request} nor C{response} is an error.
        """
        _, errors = parsed({})
        self.assertEqual(errors, [("filter.h", "needs a request or a response table (or both)")])

    def test_unknown_keys(self) -> None:
        """
        Unknown keys at the top and inside a side are reported at their
        path.
        """
        _, errors = parsed({"requests": {}, "response": {"replace": {}}})
        self.assertEqual(
            errors,
            [
                ("filter.h.requests", "unknown key (request or response)"),
                ("filter.h.response.replace", "unknown key (set, add or remove)"),
            ],
        )

    def test_wrong_types(self) -> None:
        """
        A side that is not a table, C{set}/C{add} that are not tables,
        C{remove} that is not a list and values that are not strings are
        reported at their path.
        """
        _, errors = parsed(
            {
                "request": "X-A: b",
                "response": {
                    "set": ["X-A"],
                    "add": {"X-B": 3, "X-C": ["ok", 4], "X-D": []},
                    "remove": "X-E",
                },
            }
        )
        self.assertEqual(
            errors,
            [
                (
                    "filter.h.request",
                    "must be a table like { set = {...}, add = {...}, remove = [...] }, not str",
                ),
                ("filter.h.response.set", "must be a table of header names to values, not list"),
                ("filter.h.response.add.X-B", "must be a string or a list of strings, not int"),
                ("filter.h.response.add.X-C[1]", "must be a string or a list of strings, not int"),
                ("filter.h.response.add.X-D", "must not be an empty list"),
                ("filter.h.response.remove", "must be a list of header names, not str"),
            ],
        )

    def test_set_value_list(self) -> None:
        """
        C{set} takes one string per name (several values are C{add}).
        """
        _, errors = parsed({"request": {"set": {"X-A": ["a", "b"]}}})
        self.assertEqual(errors, [("filter.h.request.set.X-A", "must be a string, not list")])

    def test_bad_names(self) -> None:
        """
        Header names must be HTTP tokens.
        """
        _, errors = parsed(
            {"request": {"set": {"X A": "1"}, "remove": ["X:B", 7]}}
        )
        self.assertEqual(
            errors,
            [
                ("filter.h.request.set.X A", "'X A' is not a valid header name"),
                ("filter.h.request.remove[0]", "'X:B' is not a valid header name"),
                ("filter.h.request.remove[1]", "must be a string, not int"),
            ],
        )

    def test_reserved_request(self) -> None:
        """
        Framing, hop-by-hop and C{Host} request headers cannot be set,
        added or removed, whatever their case.
        """
        _, errors = parsed(
            {
                "request": {
                    "set": {"Content-Length": "0", "host": "x"},
                    "add": {"Transfer-Encoding": "chunked"},
                    "remove": ["Connection", "Upgrade"],
                }
            }
        )
        self.assertEqual(
            [path for path, _ in errors],
            [
                "filter.h.request.set.Content-Length",
                "filter.h.request.set.host",
                "filter.h.request.add.Transfer-Encoding",
                "filter.h.request.remove[0]",
                "filter.h.request.remove[1]",
            ],
        )
        self.assertEqual(
            errors[0][1],
            "Content-Length is managed by the proxy and cannot be changed in the request"
            " (framing, hop-by-hop and Host headers)",
        )

    def test_reserved_response(self) -> None:
        """
        In responses framing and hop-by-hop headers are refused, but
        C{Host} is an ordinary name.
        """
        _, errors = parsed(
            {"response": {"set": {"Content-Length": "1", "Host": "x"}, "remove": ["Keep-Alive"]}}
        )
        self.assertEqual(
            [path for path, _ in errors],
            ["filter.h.response.set.Content-Length", "filter.h.response.remove[0]"],
        )

    def test_unknown_placeholder(self) -> None:
        """
        An unknown placeholder is an error listing the known ones.
        """
        _, errors = parsed({"request": {"set": {"X-A": "{user}"}}})
        self.assertEqual(
            errors,
            [
                (
                    "filter.h.request.set.X-A",
                    "'{user}': unknown placeholder {user} (known: {client_ip}, {host},"
                    " {method}, {path}, {request_id}; write '{{' for a brace)",
                )
            ],
        )

    def test_unmatched_braces(self) -> None:
        """
        A lone C{{} or C{}} is an error saying how to write a brace.
        """
        _, errors = parsed({"request": {"set": {"X-A": "a{b", "X-B": "a}b"}}})
        self.assertEqual(
            errors,
            [
                ("filter.h.request.set.X-A", "'a{b': unmatched '{' (write '{{' for a brace)"),
                ("filter.h.request.set.X-B", "'a}b': unmatched '}' (write '}}' for a brace)"),
            ],
        )

    def test_control_characters(self) -> None:
        """
        A value with CR, LF or another control character (header
        injection) is refused; a tab is fine.
        """
        _, errors = parsed(
            {"request": {"set": {"X-A": "a\r\nEvil: 1", "X-B": "a\tb"}}}
        )
        self.assertEqual(
            errors,
            [("filter.h.request.set.X-A", "must not contain control characters ('\\r')")],
        )

    def test_conflicts(self) -> None:
        """
        A name both set (or added) and removed, or given twice in one key
        in different case, is an error; set and add of one name is fine.
        """
        _, errors = parsed(
            {
                "request": {
                    "set": {"X-A": "1", "x-a": "2", "X-C": "1"},
                    "add": {"X-B": "1", "X-C": "2"},
                    "remove": ["x-b", "X-D", "X-d"],
                }
            }
        )
        self.assertEqual(
            errors,
            [
                ("filter.h.request.set.x-a", "x-a is given twice (names are case-insensitive)"),
                ("filter.h.request.remove[0]", "x-b is both in add and in remove"),
                ("filter.h.request.remove[2]", "X-d is given twice (names are case-insensitive)"),
            ],
        )


class RequestTests(SynchronousTestCase):
    """
    The request side edits C{info.headers} in place and never refuses.
    """

    def test_interfaces(self) -> None:
        """
        The filter is both an C{IRequestFilter} and an C{IResponseFilter}.
        """
        flt = make({"request": {"set": {"X-A": "1"}}})
        self.assertTrue(verifyObject(IRequestFilter, flt))
        self.assertTrue(verifyObject(IResponseFilter, flt))
        self.assertEqual(flt.name, "h")

    def test_set_replaces_every_instance(self) -> None:
        """
        C{set} removes every header of that name, whatever its case, and
        appends one.
        """
        flt = make({"request": {"set": {"X-Env": "prod"}}})
        headers = [(b"x-env", b"a"), (b"Accept", b"*/*"), (b"X-ENV", b"b")]
        info = info_with(headers)
        self.assertIsNone(run_filter(flt, info))
        self.assertIs(info.headers, headers)
        self.assertEqual(headers, [(b"Accept", b"*/*"), (b"X-Env", b"prod")])

    def test_add_appends(self) -> None:
        """
        C{add} keeps existing headers of the name and appends one header
        per value.
        """
        flt = make({"request": {"add": {"X-Tag": ["a", "b"]}}})
        headers = [(b"X-Tag", b"client")]
        run_filter(flt, info_with(headers))
        self.assertEqual(headers, [(b"X-Tag", b"client"), (b"X-Tag", b"a"), (b"X-Tag", b"b")])

    def test_remove(self) -> None:
        """
        C{remove} deletes every header of each name, case-insensitively.
        """
        flt = make({"request": {"remove": ["X-Debug", "Cookie"]}})
        headers = [(b"x-debug", b"1"), (b"Accept", b"*/*"), (b"COOKIE", b"a=b"), (b"X-Debug", b"2")]
        run_filter(flt, info_with(headers))
        self.assertEqual(headers, [(b"Accept", b"*/*")])

    def test_order(self) -> None:
        """
        Removals come first, then the C{set} headers, then the C{add}
        headers.
        """
        flt = make(
            {"request": {"set": {"X-A": "set"}, "add": {"X-A": "added", "X-B": "b"}, "remove": ["X-C"]}}
        )
        headers = [(b"X-A", b"client"), (b"X-C", b"c"), (b"X-B", b"client")]
        run_filter(flt, info_with(headers))
        self.assertEqual(
            headers,
            [(b"X-B", b"client"), (b"X-A", b"set"), (b"X-A", b"added"), (b"X-B", b"b")],
        )

    def test_placeholders(self) -> None:
        """
        Placeholders are replaced by the request's values.
        """
        flt = make(
            {
                "request": {
                    "set": {
                        "X-Client": "{client_ip}",
                        "X-Line": "{method} {host}{path} #{request_id} {{x}}",
                    }
                }
            }
        )
        headers: List[Tuple[bytes, bytes]] = []
        run_filter(
            flt,
            info_with(headers, client_ip="10.1.2.3", method="POST", host="api.example.com", path="/v1?q=1"),
        )
        self.assertEqual(
            headers,
            [
                (b"X-Client", b"10.1.2.3"),
                (b"X-Line", b"POST api.example.com/v1?q=1 #abc-1 {x}"),
            ],
        )

    def test_placeholder_bytes(self) -> None:
        """
        A placeholder value the engine decoded from Latin-1 goes back as
        the same bytes; control characters in it are dropped.
        """
        flt = make({"request": {"set": {"X-Path": "{path}"}}})
        headers: List[Tuple[bytes, bytes]] = []
        run_filter(flt, info_with(headers, path=b"/caf\xc3\xa9\r\n".decode("latin-1")))
        self.assertEqual(headers, [(b"X-Path", b"/caf\xc3\xa9")])

    def test_non_ascii_literal(self) -> None:
        """
        A non-ASCII literal value is sent as UTF-8.
        """
        flt = make({"request": {"set": {"X-Greeting": "grüß"}}})
        headers: List[Tuple[bytes, bytes]] = []
        run_filter(flt, info_with(headers))
        self.assertEqual(headers, [(b"X-Greeting", "grüß".encode("utf-8"))])

    def test_response_only(self) -> None:
        """
        A filter with only a response side leaves requests alone.
        """
        flt = make({"response": {"set": {"X-A": "1"}}})
        headers = [(b"X-A", b"client")]
        self.assertIsNone(run_filter(flt, info_with(headers)))
        self.assertEqual(headers, [(b"X-A", b"client")])


class ResponseTests(SynchronousTestCase):
    """
    The response side edits C{response.headers} in place.
    """

    def test_edits(self) -> None:
        """
        Set, add and remove apply to the response's headers, with the
        request's placeholders.
        """
        flt = make(
            {
                "response": {
                    "set": {"Strict-Transport-Security": "max-age=31536000"},
                    "add": {"X-Served-For": "{client_ip}"},
                    "remove": ["Server"],
                }
            }
        )
        resp = response([(b"server", b"nginx"), (b"Content-Length", b"2"), (b"strict-transport-security", b"x")])
        headers = resp.headers
        flt.filter_response(info_with([], client_ip="192.0.2.7"), resp)
        self.assertIs(resp.headers, headers)
        self.assertEqual(
            headers,
            [
                (b"Content-Length", b"2"),
                (b"Strict-Transport-Security", b"max-age=31536000"),
                (b"X-Served-For", b"192.0.2.7"),
            ],
        )

    def test_request_only(self) -> None:
        """
        A filter with only a request side leaves responses alone.
        """
        flt = make({"request": {"set": {"X-A": "1"}}})
        resp = response([(b"X-A", b"origin")])
        flt.filter_response(info_with([]), resp)
        self.assertEqual(resp.headers, [(b"X-A", b"origin")])


class RemoveHeadersTests(SynchronousTestCase):
    """
    L{remove_headers}, shared by the filter types.
    """

    def test_in_place(self) -> None:
        """
        Matching headers are removed from the same list object, and the
        count is returned.
        """
        headers = [(b"A", b"1"), (b"b", b"2"), (b"a", b"3")]
        self.assertEqual(remove_headers(headers, frozenset({b"a"})), 2)
        self.assertEqual(headers, [(b"b", b"2")])

    def test_nothing_to_remove(self) -> None:
        """
        With no match the list is untouched.
        """
        headers = [(b"A", b"1")]
        self.assertEqual(remove_headers(headers, frozenset({b"z"})), 0)
        self.assertEqual(headers, [(b"A", b"1")])
