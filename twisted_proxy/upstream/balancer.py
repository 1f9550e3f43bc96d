# -*- test-case-name: tests.test_balancer -*-
"""
Balancers: which of a backend's available servers gets the next request.

Each implements L{IBalancer}; they are pure (no clock, no sockets) and get
their randomness injected, so their distributions are exact in tests.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from typing import Any, Callable, Dict, List, Optional, Sequence

from zope.interface import implementer

from twisted_proxy.interfaces import IBalancer


def _load(server: Any) -> float:
    return server.in_flight / server.weight


@implementer(IBalancer)
class RoundRobin:
    """
    Smooth weighted round-robin, as nginx does it: weights 3:1 give
    C{a a b a} interleaved, never bursts of one server.
    """

    def __init__(self, servers: Sequence[Any], rng: Optional[random.Random] = None) -> None:
        self.current: Dict[int, int] = {id(s): 0 for s in servers}

    def pick(self, candidates: Sequence[Any], key: bytes = b"") -> Optional[Any]:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        current = self.current
        total = 0
        best = None
        best_weight = 0
        for server in candidates:
            sid = id(server)
            weight = current.get(sid, 0) + server.weight
            current[sid] = weight
            total += server.weight
            if best is None or weight > best_weight:
                best = server
                best_weight = weight
        current[id(best)] = best_weight - total
        return best


@implementer(IBalancer)
class LeastConn:
    """
    The server with the fewest in-flight requests per unit of weight; ties
    go round-robin.
    """

    def __init__(self, servers: Sequence[Any], rng: Optional[random.Random] = None) -> None:
        self.turn = 0

    def pick(self, candidates: Sequence[Any], key: bytes = b"") -> Optional[Any]:
        count = len(candidates)
        if not count:
            return None
        self.turn = (self.turn + 1) % count
        best = None
        best_load = 0.0
        for i in range(count):
            server = candidates[(self.turn + i) % count]
            load = server.in_flight / server.weight
            if best is None or load < best_load:
                best = server
                best_load = load
        return best


@implementer(IBalancer)
class RandomTwo:
    """
    The power of two choices: two servers at random (weighted), the less
    loaded wins.
    """

    def __init__(self, servers: Sequence[Any], rng: Optional[random.Random] = None) -> None:
        self.rng = rng or random.Random()

    def _weighted(self, candidates: Sequence[Any]) -> Any:
        total = 0
        for server in candidates:
            total += server.weight
        point = self.rng.random() * total
        for server in candidates:
            point -= server.weight
            if point < 0:
                return server
        return candidates[-1]

    def pick(self, candidates: Sequence[Any], key: bytes = b"") -> Optional[Any]:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        first = self._weighted(candidates)
        rest = [s for s in candidates if s is not first]
        second = self._weighted(rest)
        return first if _load(first) <= _load(second) else second


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@implementer(IBalancer)
class ConsistentHash:
    """
    A consistent hash ring (160 points per unit of weight) over every
    server: a key keeps its server while that server is available, and
    losing a server moves only the keys it had.
    """

    POINTS = 160

    def __init__(self, servers: Sequence[Any], rng: Optional[random.Random] = None) -> None:
        ring = []
        for server in servers:
            name = server.name.encode("utf-8")
            for i in range(self.POINTS * server.weight):
                ring.append((_point(name + b"#%d" % i), server))
        ring.sort(key=lambda item: item[0])
        self.points = [p for p, _ in ring]
        self.owners = [s for _, s in ring]

    def pick(self, candidates: Sequence[Any], key: bytes = b"") -> Optional[Any]:
        if not candidates:
            return None
        allowed = set(map(id, candidates))
        owners = self.owners
        count = len(owners)
        if not count:
            return candidates[0]
        start = bisect.bisect(self.points, _point(key)) % count
        for i in range(count):
            server = owners[(start + i) % count]
            if id(server) in allowed:
                return server
        # a candidate unknown to the ring (should not happen): stay usable
        return candidates[_point(key) % len(candidates)]


BALANCERS: Dict[str, Callable[..., Any]] = {
    "round_robin": RoundRobin,
    "least_conn": LeastConn,
    "random_two": RandomTwo,
    "hash": ConsistentHash,
}


def make_balancer(
    name: str, servers: Sequence[Any], rng: Optional[random.Random] = None
) -> Any:
    """
    The balancer named C{name} (built in, or a dotted path to a callable
    taking the server list and returning an L{IBalancer}).
    """
    factory = BALANCERS.get(name)
    if factory is not None:
        return factory(servers, rng)
    from twisted_proxy.loading import load_object

    custom = load_object(name)
    return custom(servers)


def servers_list(servers: Sequence[Any]) -> List[Any]:
    return list(servers)
