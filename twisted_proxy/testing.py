# -*- test-case-name: tests.test_testing -*-
"""
Fakes for people who write filters, balancers and custom listeners, so they
can test them without sockets (as C{treq.testing} does for web clients).

Example, a custom filter::

    from twisted.trial.unittest import SynchronousTestCase
    from twisted_proxy.testing import request_info, run_filter

    class MyFilterTests(SynchronousTestCase):
        def test_denies_admin(self):
            verdict = run_filter(MyFilter("f", {}, None), request_info(path="/admin"))
            self.assertEqual(verdict.status, 403)

A custom listener factory::

    proto, transport = connect_factory(EchoFactory(listener_config("echo"), Clock()))
    proto.dataReceived(b"hi\\n")
    assert transport.value() == b"hi\\n"
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twisted_proxy.filters import Deny, RequestInfo
from twisted_proxy.model import ListenerConfig

__all__ = [
    "Deny",
    "FakeServer",
    "connect_factory",
    "listener_config",
    "request_info",
    "run_filter",
]


def request_info(
    method: str = "GET",
    host: str = "example.com",
    path: str = "/",
    client_ip: str = "127.0.0.1",
    port: int = 80,
    scheme: str = "http",
    headers: Sequence[Tuple[bytes, bytes]] = (),
    listener: str = "test",
    connect: bool = False,
    kind: str = "reverse",
    request_id: str = "",
) -> RequestInfo:
    """
    A L{RequestInfo} as the proxy would hand it to a filter (C{kind} is
    the listener's kind: C{"forward"} or C{"reverse"}).
    """
    return RequestInfo(
        listener,
        client_ip,
        method,
        "" if connect else scheme,
        host,
        port,
        "" if connect else path,
        list(headers),
        connect,
        kind,
        request_id,
    )


def run_filter(flt: Any, info: RequestInfo) -> Optional[Deny]:
    """
    Run C{flt.filter_request(info)} and return its verdict; a Deferred
    verdict must have fired already (use a C{Clock} to make it fire).

    @raise AssertionError: when a Deferred verdict has not fired.
    """
    verdict = flt.filter_request(info)
    if isinstance(verdict, Deferred):
        results: List[Any] = []
        verdict.addBoth(results.append)
        if not results:
            raise AssertionError(f"{flt!r} returned a Deferred that has not fired")
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result  # type: ignore[no-any-return]
    return verdict  # type: ignore[no-any-return]


def listener_config(name: str = "test", kind: str = "custom", **options: Any) -> ListenerConfig:
    """
    A listener's config as a custom factory receives it; C{options} are
    the listener table's own keys.
    """
    return ListenerConfig(
        name=name,
        kind=kind,
        endpoint="tcp:0:interface=127.0.0.1",
        factory="tests:factory" if kind == "custom" else None,
        options=dict(options),
    )


def connect_factory(
    factory: Any, peer: Tuple[str, int] = ("127.0.0.1", 40000)
) -> Tuple[Any, StringTransport]:
    """
    Build a protocol from C{factory} and connect it to a
    L{StringTransport} (what it writes is C{transport.value()}).
    """
    address = IPv4Address("TCP", peer[0], peer[1])
    proto = factory.buildProtocol(address)
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 7007), peerAddress=address
    )
    proto.makeConnection(transport)
    return proto, transport


class FakeServer:
    """
    What a balancer sees of a server: a name, a weight and the number of
    requests in flight.
    """

    def __init__(self, name: str, weight: int = 1, in_flight: int = 0) -> None:
        self.name = name
        self.weight = weight
        self.in_flight = in_flight

    def __repr__(self) -> str:
        return f"<FakeServer {self.name} w={self.weight} in_flight={self.in_flight}>"


def headers_dict(headers: Sequence[Tuple[bytes, bytes]]) -> Mapping[bytes, bytes]:
    """
    Headers as a dict of lower-cased names (the last value wins).
    """
    return {name.lower(): value for name, value in headers}
