"""
Tests for L{twisted_proxy.filters} (what a filter sees and says, and the
helpers filter types check their tables with), the registry of built-in
filter types L{twisted_proxy.filters.registry}, and
L{twisted_proxy.loading.load_object}.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import attrs
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.filters import (
    Deny,
    ErrorList,
    RequestInfo,
    new_request_id,
    string_list,
)
from twisted_proxy.filters.registry import BUILTIN_TYPES, builtin_type_names, filter_type
from twisted_proxy.loading import load_object

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Loaded by dotted path in the tests below.
LOADED = object()


class Outer:
    """
    A class whose attribute is loaded by a dotted path with a dotted name.
    """

    inner = "the inner attribute"


def request(**kwargs: object) -> RequestInfo:
    """
    A L{RequestInfo} for a GET of C{http://example.com:80/a?b} from
    127.0.0.1, with C{kwargs} overriding the optional arguments.
    """
    return RequestInfo(
        "edge",
        "127.0.0.1",
        "GET",
        "http",
        "example.com",
        80,
        "/a?b",
        [(b"host", b"example.com")],
        **kwargs,  # type: ignore[arg-type]
    )


class DenyTests(SynchronousTestCase):
    """
    L{Deny}: a filter's refusal.
    """

    def test_defaults(self) -> None:
        """
        Only the status and the rule are required; the message is empty and
        there are no extra headers.
        """
        deny = Deny(403, "office-hours")
        self.assertEqual(deny.status, 403)
        self.assertEqual(deny.rule, "office-hours")
        self.assertEqual(deny.message, "")
        self.assertEqual(deny.headers, ())

    def test_frozen(self) -> None:
        """
        A verdict cannot be changed once made.
        """
        deny = Deny(429, "per-ip", "slow down")
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            deny.status = 200  # type: ignore[misc]

    def test_equality(self) -> None:
        """
        Two verdicts with the same fields are equal, and hash alike.
        """
        headers = ((b"retry-after", b"5"),)
        self.assertEqual(Deny(429, "r", "m", headers), Deny(429, "r", "m", headers))
        self.assertEqual(hash(Deny(403, "r")), hash(Deny(403, "r")))
        self.assertNotEqual(Deny(403, "r"), Deny(401, "r"))


class RequestInfoTests(SynchronousTestCase):
    """
    L{RequestInfo}: what a filter sees of a request.
    """

    def test_fields(self) -> None:
        """
        The constructor's arguments are the attributes, the header list
        being the very list given (a filter may change it).
        """
        headers = [(b"host", b"example.com")]
        info = RequestInfo(
            "edge", "10.0.0.1", "POST", "https", "example.com", 443, "/x", headers
        )
        self.assertEqual(
            (info.listener, info.client_ip, info.method, info.scheme),
            ("edge", "10.0.0.1", "POST", "https"),
        )
        self.assertEqual((info.host, info.port, info.path), ("example.com", 443, "/x"))
        self.assertIs(info.headers, headers)

    def test_defaults(self) -> None:
        """
        By default a request is not a CONNECT, comes to a reverse listener
        and has no claims yet.
        """
        info = request()
        self.assertFalse(info.connect)
        self.assertEqual(info.kind, "reverse")
        self.assertEqual(info.claims, {})

    def test_claims_per_request(self) -> None:
        """
        Each request has its own claims dictionary.
        """
        first, second = request(), request()
        first.claims["sub"] = "alice"
        self.assertEqual(second.claims, {})

    def test_request_id_given(self) -> None:
        """
        A given request id is kept.
        """
        self.assertEqual(request(request_id="abc-1").request_id, "abc-1")

    def test_request_id_generated(self) -> None:
        """
        Without one, each request gets a new id.
        """
        ids = {request().request_id for _ in range(100)}
        self.assertEqual(len(ids), 100)
        self.assertNotIn("", ids)

    def test_no_other_attributes(self) -> None:
        """
        A request has slots only: a misspelt attribute is an error, not a
        silent new field.
        """
        info = request()
        with self.assertRaises(AttributeError):
            info.hots = "example.org"  # type: ignore[attr-defined]

    def test_repr(self) -> None:
        """
        The representation shows the method, the target and the client.
        """
        self.assertEqual(
            repr(request()), "<RequestInfo GET http://example.com:80/a?b from 127.0.0.1>"
        )


class NewRequestIdTests(SynchronousTestCase):
    """
    L{new_request_id}: unique ids within a process.
    """

    def test_unique(self) -> None:
        """
        Successive ids differ.
        """
        ids = [new_request_id() for _ in range(1000)]
        self.assertEqual(len(set(ids)), 1000)

    def test_process_prefix(self) -> None:
        """
        Every id of a process starts with the same random prefix, then a
        dash and a hexadecimal counter.
        """
        first, second = new_request_id(), new_request_id()
        prefix, _, counter = first.partition("-")
        self.assertEqual(second.partition("-")[0], prefix)
        self.assertEqual(len(prefix), 8)
        int(prefix, 16)
        self.assertEqual(int(second.partition("-")[2], 16), int(counter, 16) + 1)


class ErrorListTests(SynchronousTestCase):
    """
    L{ErrorList}: the problems of a configuration, in the order found.
    """

    def test_empty(self) -> None:
        """
        A new list is empty and false.
        """
        errors = ErrorList()
        self.assertFalse(errors)
        self.assertEqual(len(errors), 0)
        self.assertEqual(errors.items, [])

    def test_add(self) -> None:
        """
        Each problem is kept as a C{(key_path, message)} pair, in the order
        added, duplicates included; a list with problems is true.
        """
        errors = ErrorList()
        errors.add("filter.a.rate", "must be a number")
        errors.add("filter.a.per", "required key is missing")
        errors.add("filter.a.rate", "must be a number")
        self.assertTrue(errors)
        self.assertEqual(len(errors), 3)
        self.assertEqual(
            errors.items,
            [
                ("filter.a.rate", "must be a number"),
                ("filter.a.per", "required key is missing"),
                ("filter.a.rate", "must be a number"),
            ],
        )


class StringListTests(SynchronousTestCase):
    """
    L{string_list}: a list-of-strings key of a filter table.
    """

    def test_strings(self) -> None:
        """
        A list of strings comes back as C{(item_key, string)} pairs, with
        no error.
        """
        errors = ErrorList()
        self.assertEqual(
            string_list(["a", "", "c"], "filter.f.hosts", errors),
            [("filter.f.hosts[0]", "a"), ("filter.f.hosts[1]", ""), ("filter.f.hosts[2]", "c")],
        )
        self.assertFalse(errors)

    def test_empty(self) -> None:
        """
        An empty list is an empty list, not an error.
        """
        errors = ErrorList()
        self.assertEqual(string_list([], "filter.f.hosts", errors), [])
        self.assertFalse(errors)

    def test_not_a_list(self) -> None:
        """
        A value that is not a list is one error naming its Python type.
        """
        errors = ErrorList()
        self.assertIsNone(string_list("a", "filter.f.hosts", errors))
        self.assertEqual(
            errors.items, [("filter.f.hosts", "must be a list of strings, not str")]
        )

    def test_bad_items(self) -> None:
        """
        Every item that is not a string is reported under its own key, and
        the whole list is refused.
        """
        errors = ErrorList()
        self.assertIsNone(string_list(["a", 1, None], "filter.f.paths", errors))
        self.assertEqual(
            errors.items,
            [
                ("filter.f.paths[1]", "must be a string, not int"),
                ("filter.f.paths[2]", "must be a string, not NoneType"),
            ],
        )


class RegistryTests(SynchronousTestCase):
    """
    L{twisted_proxy.filters.registry}: the built-in filter types by name.
    """

    def test_names(self) -> None:
        """
        The built-in types are acl, basic_auth, headers, ip_block, jwt,
        rate_limit and transform, listed sorted.
        """
        self.assertEqual(
            list(builtin_type_names()),
            ["acl", "basic_auth", "headers", "ip_block", "jwt", "rate_limit", "transform"],
        )

    def test_modules(self) -> None:
        """
        Each built-in type is the module of its name, which has the
        C{parse} and C{build} functions of a filter type.
        """
        for name in builtin_type_names():
            module = filter_type(name)
            assert module is not None
            self.assertIsInstance(module, types.ModuleType)
            self.assertEqual(module.__name__, BUILTIN_TYPES[name])
            self.assertTrue(callable(module.parse), name)
            self.assertTrue(callable(module.build), name)

    def test_jwt_module(self) -> None:
        """
        The C{jwt} type lives in C{jwt_auth} (not to shadow the PyJWT
        package).
        """
        module = filter_type("jwt")
        assert module is not None
        self.assertEqual(module.__name__, "twisted_proxy.filters.jwt_auth")

    def test_unknown(self) -> None:
        """
        A name that is no built-in type, including a custom filter's
        dotted path and a module attribute's name, is L{None}.
        """
        for name in ("nope", "", "ACL", "events", "twisted_proxy.filters.acl:build", "__name__"):
            self.assertIsNone(filter_type(name), name)

    def test_lazy(self) -> None:
        """
        Importing the filters package and the registry, and listing the
        names, imports no filter module; asking for one type imports that
        type's module only. (In a new interpreter, whose modules are not
        shared with the other tests.)
        """
        script = (
            "import sys\n"
            "import twisted_proxy.filters\n"
            "from twisted_proxy.filters import registry\n"
            "registry.builtin_type_names()\n"
            "def loaded():\n"
            "    return sorted(m for m in sys.modules if m.startswith('twisted_proxy.filters.'))\n"
            "print(loaded())\n"
            "registry.filter_type('acl')\n"
            "print(loaded())\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        before, after = result.stdout.splitlines()
        self.assertEqual(before, "['twisted_proxy.filters.registry']")
        self.assertEqual(
            after, "['twisted_proxy.filters.acl', 'twisted_proxy.filters.registry']"
        )


class LoadObjectTests(SynchronousTestCase):
    """
    L{load_object}: an object named C{"package.module:name"}.
    """

    def test_colon(self) -> None:
        """
        C{"package.module:name"} is the attribute C{name} of that module.
        """
        self.assertIs(load_object("tests.test_filters:LOADED"), LOADED)

    def test_dots_only(self) -> None:
        """
        Without a colon, the last dotted part is the name.
        """
        self.assertIs(load_object("tests.test_filters.LOADED"), LOADED)
        self.assertIs(load_object("os.path.join"), os.path.join)

    def test_dotted_name(self) -> None:
        """
        After the colon, a dotted name follows attributes.
        """
        self.assertEqual(load_object("tests.test_filters:Outer.inner"), "the inner attribute")

    def test_not_dotted(self) -> None:
        """
        A path without a module part or without a name is refused with the
        expected form.
        """
        for dotted in ("nodots", ":name", "module:", ""):
            with self.assertRaises(ValueError) as caught:
                load_object(dotted)
            self.assertEqual(
                str(caught.exception), f"{dotted!r} is not of the form 'package.module:name'"
            )

    def test_no_module(self) -> None:
        """
        A module that cannot be imported is named, with the import error.
        """
        with self.assertRaises(ValueError) as caught:
            load_object("no_such_module_here.sub:name")
        self.assertEqual(
            str(caught.exception),
            "cannot import 'no_such_module_here.sub': No module named 'no_such_module_here'",
        )

    def test_module_fails(self) -> None:
        """
        A module whose import raises is reported the same way, with the
        exception's message.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "tp_broken_module.py"), "w") as f:
            f.write("raise RuntimeError('boom')\n")
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(sys.modules.pop, "tp_broken_module", None)
        with self.assertRaises(ValueError) as caught:
            load_object("tp_broken_module:name")
        self.assertEqual(str(caught.exception), "cannot import 'tp_broken_module': boom")

    def test_no_attribute(self) -> None:
        """
        A missing name, or a missing part of a dotted name, names the module
        and the whole name.
        """
        for name in ("NOPE", "Outer.nope", "LOADED.x"):
            with self.assertRaises(ValueError) as caught:
                load_object(f"tests.test_filters:{name}")
            self.assertEqual(
                str(caught.exception), f"module 'tests.test_filters' has no {name!r}"
            )
