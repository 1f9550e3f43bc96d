"""
Tests for L{twisted_proxy.interfaces}: every built-in provider of an
extension interface (filters, balancers, health probes) really provides the
interfaces it declares, and the interfaces demand what their documentation
says.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import random
from typing import Any, Dict, Iterator, List, Set, Tuple

import bcrypt
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementedBy, implementer, providedBy
from zope.interface.interface import Method
from zope.interface.exceptions import BrokenImplementation, BrokenMethodImplementation, Invalid
from zope.interface.verify import verifyObject

import twisted_proxy
from twisted_proxy import interfaces
from twisted_proxy.filters import ErrorList
from twisted_proxy.filters.registry import builtin_type_names, filter_type
from twisted_proxy.filters.events import Events
from twisted_proxy.interfaces import (
    IBalancer,
    IBodyTransform,
    IHealthProbe,
    IRequestFilter,
    IResponseFilter,
)
from twisted_proxy.model import BackendConfig, HealthConfig, ServerConfig
from twisted_proxy.testing import FakeServer
from twisted_proxy.upstream.backend import Backend
from twisted_proxy.upstream.balancer import BALANCERS, make_balancer
from twisted_proxy.upstream.health import HealthChecker, HTTPProbe, TCPProbe

#: the extension interfaces of the public API
EXTENSION_INTERFACES = (IRequestFilter, IResponseFilter, IBalancer, IHealthProbe, IBodyTransform)

#: the smallest table each built-in filter type accepts ("htpasswd" is
#: written by the test)
MINIMAL_TABLES: Dict[str, Dict[str, Any]] = {
    "acl": {},
    "basic_auth": {"htpasswd": "users.htpasswd"},
    "headers": {"request": {"remove": ["X-Debug"]}},
    "ip_block": {"watch": ["per-ip"]},
    "jwt": {"algorithms": ["HS256"], "secret": "a-test-secret-of-at-least-32-bytes!"},
    "rate_limit": {"rate": 1, "per": 1},
    "transform": {"request": "twisted_proxy.examples.transforms:v1_to_v2"},
}

#: other tables of a type that build another class
VARIANT_TABLES: List[Tuple[str, Dict[str, Any]]] = [
    # shared buckets: nothing is connected before the first request
    ("rate_limit", {"rate": 1, "per": 1, "backend": "redis://127.0.0.1:1/0"}),
    ("ip_block", {"block_clients": ["192.0.2.0/24"]}),
    ("headers", {"response": {"set": {"X-Frame-Options": "DENY"}}}),
    ("transform", {"response": "twisted_proxy.examples.transforms:v2_to_v1"}),
]


def declared(obj: Any) -> List[Any]:
    """
    The extension interfaces C{obj} declares it provides.
    """
    return [i for i in providedBy(obj).flattened() if i in EXTENSION_INTERFACES]


def all_modules() -> Iterator[Any]:
    """
    Every module of the C{twisted_proxy} package.
    """
    path = os.path.dirname(twisted_proxy.__file__)
    for info in pkgutil.walk_packages([path], "twisted_proxy."):
        yield importlib.import_module(info.name)


class FilterProviderTests(SynchronousTestCase):
    """
    The built-in filter types make filters that provide what they declare.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode("ascii")
        with open(os.path.join(self.folder, "users.htpasswd"), "w") as f:
            f.write(f"alice:{hashed}\n")

    def build(self, type_name: str, table: Dict[str, Any], name: str = "f") -> Any:
        """
        Parse C{table} as the config does and build the live filter as the
        service does.
        """
        module: Any = filter_type(type_name)
        self.assertIsNotNone(module, type_name)
        errors = ErrorList()
        spec = module.parse(name, table, errors, self.folder)
        self.assertEqual(errors.items, [], type_name)
        if "bus" in inspect.signature(module.build).parameters:
            flt = module.build(name, spec, self.reactor, bus=Events())
        else:
            flt = module.build(name, spec, self.reactor)
        close = getattr(flt, "close", None)
        if close is not None:
            self.addCleanup(close)
        return flt

    def verify(self, flt: Any) -> List[Any]:
        """
        Verify C{flt} against every extension interface it declares; those
        interfaces.
        """
        provided = declared(flt)
        self.assertIn(IRequestFilter, provided, flt)
        for interface in provided:
            self.assertTrue(verifyObject(interface, flt), (flt, interface))
        return provided

    def test_every_builtin_type_covered(self) -> None:
        """
        This module has a smallest table for every built-in filter type
        (a new type must be added here).
        """
        self.assertEqual(sorted(MINIMAL_TABLES), sorted(builtin_type_names()))

    def test_builtin_filters(self) -> None:
        """
        A filter of each built-in type, built from its smallest table,
        provides L{IRequestFilter} (and every other interface it declares)
        and is named after its table.
        """
        for type_name, table in sorted(MINIMAL_TABLES.items()):
            flt = self.build(type_name, table, name=f"my-{type_name}")
            self.verify(flt)
            self.assertEqual(flt.name, f"my-{type_name}")

    def test_variants(self) -> None:
        """
        The other shapes a type can take (Redis buckets, response-only
        edits) provide what they declare too.
        """
        for type_name, table in VARIANT_TABLES:
            self.verify(self.build(type_name, table))
        self.assertEqual(self.reactor.tcpClients, [])

    def test_worker_rate_limit(self) -> None:
        """
        In a worker (a tree's channel set), an in-memory rate limit is the
        one asking the supervisor, and provides what it declares.
        """
        from twisted_proxy.filters import rate_limit

        self.patch(rate_limit, "TREE", object())
        flt = self.build("rate_limit", MINIMAL_TABLES["rate_limit"])
        self.assertIsInstance(flt, rate_limit.TreeRateLimitFilter)
        self.verify(flt)

    def test_response_filters(self) -> None:
        """
        The C{headers} filter is the built-in L{IResponseFilter}; the
        C{transform} filter the built-in L{IBodyTransform}.
        """
        headers = self.build("headers", MINIMAL_TABLES["headers"])
        self.assertIn(IResponseFilter, self.verify(headers))
        transform = self.build("transform", MINIMAL_TABLES["transform"])
        self.assertIn(IBodyTransform, self.verify(transform))
        self.assertIsInstance(transform.max_body, int)

    def test_service_builds_providers(self) -> None:
        """
        The filters the service builds from a parsed configuration provide
        L{IRequestFilter}.
        """
        from twisted_proxy.config import parse_config
        from twisted_proxy.service import build_filters

        filters = {
            f"f-{type_name}": dict(table, type=type_name)
            for type_name, table in MINIMAL_TABLES.items()
        }
        # ip_block watches a rate_limit of the same file
        filters["f-ip_block"]["watch"] = ["f-rate_limit"]
        config = parse_config(
            {
                "proxy": {"access_log": "off"},
                "listener": [
                    {
                        "name": "out",
                        "kind": "forward",
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "filters": sorted(filters),
                    }
                ],
                "filter": filters,
            },
            "interfaces.toml",
            self.folder,
        )
        built = build_filters(config, self.reactor)
        for flt in built.values():
            close = getattr(flt, "close", None)
            if close is not None:
                self.addCleanup(close)
        self.assertEqual(sorted(built), sorted(filters))
        for flt in built.values():
            self.verify(flt)


class BalancerProviderTests(SynchronousTestCase):
    """
    The built-in balancers provide L{IBalancer}.
    """

    def test_by_name(self) -> None:
        """
        Each balancer a config can name, made for a one-server backend,
        provides L{IBalancer} and picks that server.
        """
        only = FakeServer("only")
        for name in BALANCERS:
            balancer = make_balancer(name, [only], random.Random(7))
            self.assertTrue(verifyObject(IBalancer, balancer), name)
            self.assertIs(balancer.pick([only], b""), only)

    def test_backend_balancers(self) -> None:
        """
        The balancers a L{Backend} makes for its primary and backup servers
        provide L{IBalancer}, even with no backup server.
        """
        server = ServerConfig(url="http://127.0.0.1:5001", scheme="http", host="127.0.0.1", port=5001)
        for name in BALANCERS:
            backend = Backend(
                BackendConfig(name="api", servers=(server,), balance=name), MemoryReactorClock()
            )
            self.assertTrue(verifyObject(IBalancer, backend.balancer), name)
            self.assertTrue(verifyObject(IBalancer, backend.backup_balancer), name)


class HealthProbeProviderTests(SynchronousTestCase):
    """
    The built-in health probes provide L{IHealthProbe}.
    """

    def test_probes(self) -> None:
        """
        The HTTP probe and the TCP connect probe provide L{IHealthProbe};
        building them connects nothing.
        """
        reactor = MemoryReactorClock()
        for probe in (
            HTTPProbe(reactor, HealthConfig(path="/health")),
            TCPProbe(reactor, HealthConfig()),
        ):
            self.assertTrue(verifyObject(IHealthProbe, probe), probe)
        self.assertEqual(reactor.tcpClients, [])

    def test_checker_default_probes(self) -> None:
        """
        The probe a health checker picks by itself (HTTP with a C{path},
        TCP without) provides L{IHealthProbe}.
        """
        reactor = MemoryReactorClock()
        server = ServerConfig(url="http://127.0.0.1:5001", scheme="http", host="127.0.0.1", port=5001)
        for health, kind in ((HealthConfig(path="/health"), HTTPProbe), (HealthConfig(), TCPProbe)):
            backend = Backend(BackendConfig(name="api", servers=(server,), health=health), reactor)
            checker = HealthChecker(backend, health, reactor)
            self.assertIsInstance(checker.probe, kind)
            self.assertTrue(verifyObject(IHealthProbe, checker.probe))
        self.assertEqual(reactor.tcpClients, [])


class CompletenessTests(SynchronousTestCase):
    """
    No provider in the package escapes these tests.
    """

    def test_every_provider_is_verified(self) -> None:
        """
        Every class of the package declaring an extension interface is one
        whose instances the tests above verify.
        """
        covered = {
            "AclFilter",
            "BasicAuthFilter",
            "HeadersFilter",
            "IpBlockFilter",
            "JwtFilter",
            "RateLimitFilter",
            "RedisRateLimitFilter",
            "TreeRateLimitFilter",
            "TransformFilter",
            "RoundRobin",
            "LeastConn",
            "RandomTwo",
            "ConsistentHash",
            "HTTPProbe",
            "TCPProbe",
        }
        found: Set[str] = set()
        for module in all_modules():
            for name, obj in vars(module).items():
                if not inspect.isclass(obj) or obj.__module__ != module.__name__:
                    continue
                if any(i in EXTENSION_INTERFACES for i in implementedBy(obj).flattened()):
                    found.add(name)
        self.assertEqual(found, covered)


class InterfaceContractTests(SynchronousTestCase):
    """
    The interfaces demand what custom extensions must supply.
    """

    def test_small(self) -> None:
        """
        The filter, balancer and probe interfaces are one method each.
        """
        for interface in (IRequestFilter, IResponseFilter, IBalancer, IHealthProbe):
            methods = [n for n in interface.names() if isinstance(interface[n], Method)]
            self.assertEqual(len(methods), 1, interface)

    def test_request_filter_needs_name(self) -> None:
        """
        A request filter without a C{name} does not provide
        L{IRequestFilter}.
        """

        @implementer(IRequestFilter)
        class Nameless:  # type: ignore[misc]
            def filter_request(self, request: Any) -> None:
                return None

        self.assertRaises(BrokenImplementation, verifyObject, IRequestFilter, Nameless())

    def test_request_filter_signature(self) -> None:
        """
        C{filter_request} takes the request: a method taking nothing does
        not provide L{IRequestFilter}.
        """

        @implementer(IRequestFilter)
        class NoArgument:
            name = "f"

            def filter_request(self) -> None:  # type: ignore[override]
                return None

        self.assertRaises(BrokenMethodImplementation, verifyObject, IRequestFilter, NoArgument())

    def test_custom_balancer(self) -> None:
        """
        A custom balancer as the interface documents it (C{pick(candidates,
        key)}) provides L{IBalancer}; one without C{pick} does not.
        """

        @implementer(IBalancer)
        class First:
            def pick(self, candidates: Any, key: bytes) -> Any:
                return candidates[0] if candidates else None

        @implementer(IBalancer)
        class Broken:  # type: ignore[misc]
            pass

        self.assertTrue(verifyObject(IBalancer, First()))
        self.assertRaises(Invalid, verifyObject, IBalancer, Broken())

    def test_body_transform_needs_max_body(self) -> None:
        """
        A body transform must say how much it buffers (C{max_body}).
        """

        @implementer(IBodyTransform)
        class Unbounded:  # type: ignore[misc]
            def wants_request(self, request: Any) -> bool:
                return False

            def transform_request(self, request: Any, body: bytes) -> bytes:
                return body

            def wants_response(self, request: Any, response: Any) -> bool:
                return False

            def transform_response(self, request: Any, response: Any, body: bytes) -> bytes:
                return body

        self.assertRaises(BrokenImplementation, verifyObject, IBodyTransform, Unbounded())
        bounded = Unbounded()
        bounded.max_body = 1024  # type: ignore[attr-defined]
        self.assertTrue(verifyObject(IBodyTransform, bounded))

    def test_interfaces_module(self) -> None:
        """
        The module exports exactly the documented extension interfaces.
        """
        exported = {
            name
            for name, value in vars(interfaces).items()
            if isinstance(value, type(Interface)) and value is not Interface
        }
        self.assertEqual(exported, {i.__name__ for i in EXTENSION_INTERFACES})
