"""
Tests for L{twisted_proxy.upstream.balancer}.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, List, Optional, Sequence

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_proxy.interfaces import IBalancer
from twisted_proxy.testing import FakeServer
from twisted_proxy.upstream.balancer import (
    BALANCERS,
    ConsistentHash,
    LeastConn,
    RandomTwo,
    RoundRobin,
    make_balancer,
)


@implementer(IBalancer)
class MyBalancer:
    """
    A custom balancer as a user would write one: always the last candidate.
    """

    def __init__(self, servers: Sequence[Any]) -> None:
        self.servers = list(servers)

    def pick(self, candidates: Sequence[Any], key: bytes = b"") -> Optional[Any]:
        return candidates[-1] if candidates else None


def names(servers: Sequence[Any]) -> List[str]:
    return [s.name for s in servers]


def pick(balancer: Any, candidates: Sequence[Any], key: bytes = b"") -> Any:
    """
    C{balancer.pick}, which must choose a server.
    """
    server = balancer.pick(candidates, key)
    assert server is not None
    return server


def picks(balancer: Any, candidates: Sequence[Any], count: int, key: bytes = b"") -> List[str]:
    return [balancer.pick(candidates, key).name for _ in range(count)]


def longest_run(sequence: Sequence[str]) -> int:
    best = run = 0
    previous = None
    for item in sequence:
        run = run + 1 if item == previous else 1
        previous = item
        best = max(best, run)
    return best


class InterfaceTests(SynchronousTestCase):
    """
    Every built-in balancer provides L{IBalancer}.
    """

    def test_builtins_provide_ibalancer(self) -> None:
        """
        Each built-in balancer, made by name, provides L{IBalancer}.
        """
        servers = [FakeServer("a"), FakeServer("b")]
        for name in BALANCERS:
            balancer = make_balancer(name, servers, random.Random(1))
            self.assertTrue(verifyObject(IBalancer, balancer), name)

    def test_classes_provide_ibalancer(self) -> None:
        """
        The balancer classes, built directly, provide L{IBalancer}.
        """
        servers = [FakeServer("a")]
        for cls in (RoundRobin, LeastConn, RandomTwo, ConsistentHash):
            self.assertTrue(verifyObject(IBalancer, cls(servers)), cls)

    def test_empty_candidates(self) -> None:
        """
        Every built-in balancer answers L{None} when there is no candidate.
        """
        servers = [FakeServer("a")]
        for name in BALANCERS:
            self.assertIsNone(make_balancer(name, servers, random.Random(1)).pick([], b"k"), name)

    def test_single_candidate(self) -> None:
        """
        Every built-in balancer picks the only candidate there is.
        """
        a, b = FakeServer("a"), FakeServer("b", in_flight=5)
        for name in BALANCERS:
            balancer = make_balancer(name, [a, b], random.Random(1))
            self.assertIs(balancer.pick([b], b"k"), b, name)


class MakeBalancerTests(SynchronousTestCase):
    """
    L{make_balancer} builds balancers by built-in name or dotted path.
    """

    def test_builtin_names(self) -> None:
        """
        The built-in names map to their classes.
        """
        servers = [FakeServer("a")]
        self.assertIsInstance(make_balancer("round_robin", servers), RoundRobin)
        self.assertIsInstance(make_balancer("least_conn", servers), LeastConn)
        self.assertIsInstance(make_balancer("random_two", servers), RandomTwo)
        self.assertIsInstance(make_balancer("hash", servers), ConsistentHash)

    def test_rng_is_passed(self) -> None:
        """
        The injected random generator is the one C{random_two} uses.
        """
        rng = random.Random(3)
        balancer = make_balancer("random_two", [FakeServer("a")], rng)
        self.assertIs(balancer.rng, rng)

    def test_custom_dotted_path(self) -> None:
        """
        A dotted path names a callable that gets the server list and returns
        an L{IBalancer}.
        """
        servers = [FakeServer("a"), FakeServer("b")]
        balancer = make_balancer("tests.test_balancer:MyBalancer", servers)
        self.assertIsInstance(balancer, MyBalancer)
        self.assertTrue(verifyObject(IBalancer, balancer))
        self.assertEqual(balancer.servers, servers)
        self.assertIs(balancer.pick(servers, b""), servers[1])

    def test_custom_unknown(self) -> None:
        """
        A dotted path that does not resolve is a L{ValueError} naming it.
        """
        error = self.assertRaises(
            ValueError, make_balancer, "tests.test_balancer:NoSuchBalancer", []
        )
        self.assertIn("NoSuchBalancer", str(error))


class RoundRobinTests(SynchronousTestCase):
    """
    L{RoundRobin} is nginx's smooth weighted round-robin.
    """

    def test_equal_weights_alternate(self) -> None:
        """
        Servers of equal weight take turns in order.
        """
        servers = [FakeServer("a"), FakeServer("b"), FakeServer("c")]
        balancer = RoundRobin(servers)
        self.assertEqual(picks(balancer, servers, 6), list("abcabc"))

    def test_weights_three_to_one(self) -> None:
        """
        Weights 3:1 give the smooth sequence C{a a b a}, repeated: a share
        of exactly 3:1 in every cycle of four.
        """
        servers = [FakeServer("a", 3), FakeServer("b", 1)]
        balancer = RoundRobin(servers)
        self.assertEqual(picks(balancer, servers, 8), list("aabaaaba"))

    def test_weights_five_one_one(self) -> None:
        """
        Weights 5:1:1 give nginx's sequence C{a a b a c a a}: the light
        servers are spread out: the heavy one never takes all five of its
        turns in a row (at most four, across the cycle boundary).
        """
        servers = [FakeServer("a", 5), FakeServer("b", 1), FakeServer("c", 1)]
        balancer = RoundRobin(servers)
        sequence = picks(balancer, servers, 14)
        self.assertEqual(sequence, list("aabacaa") * 2)
        self.assertLessEqual(longest_run(sequence), 4)
        self.assertEqual(Counter(sequence), {"a": 10, "b": 2, "c": 2})

    def test_share_is_exact_over_cycle(self) -> None:
        """
        Over any whole number of cycles each server gets exactly its weight.
        """
        servers = [FakeServer("a", 4), FakeServer("b", 2), FakeServer("c", 1)]
        balancer = RoundRobin(servers)
        self.assertEqual(Counter(picks(balancer, servers, 70)), {"a": 40, "b": 20, "c": 10})

    def test_subset_of_candidates(self) -> None:
        """
        Only candidates are picked; a server left out (down) gets nothing
        and the rest share by weight.
        """
        a, b, c = FakeServer("a", 2), FakeServer("b", 1), FakeServer("c", 1)
        balancer = RoundRobin([a, b, c])
        sequence = picks(balancer, [a, c], 9)
        self.assertNotIn("b", sequence)
        self.assertEqual(Counter(sequence), {"a": 6, "c": 3})

    def test_ignores_load(self) -> None:
        """
        Round-robin does not look at in-flight counts.
        """
        servers = [FakeServer("a", in_flight=100), FakeServer("b")]
        balancer = RoundRobin(servers)
        self.assertEqual(picks(balancer, servers, 4), list("abab"))


class LeastConnTests(SynchronousTestCase):
    """
    L{LeastConn} picks the fewest in-flight requests per unit of weight.
    """

    def test_fewest_in_flight(self) -> None:
        """
        The server with the fewest requests in flight wins.
        """
        a, b, c = FakeServer("a", in_flight=3), FakeServer("b", in_flight=1), FakeServer("c", in_flight=2)
        balancer = LeastConn([a, b, c])
        for _ in range(5):
            self.assertIs(balancer.pick([a, b, c], b""), b)

    def test_weighted_load(self) -> None:
        """
        Load is in-flight divided by weight: 4 on weight 4 beats 2 on
        weight 1.
        """
        a, b = FakeServer("a", weight=4, in_flight=4), FakeServer("b", weight=1, in_flight=2)
        balancer = LeastConn([a, b])
        self.assertIs(balancer.pick([a, b], b""), a)

    def test_ties_rotate(self) -> None:
        """
        Among equally loaded servers the choice rotates, so idle servers
        share requests evenly.
        """
        servers = [FakeServer("a"), FakeServer("b"), FakeServer("c")]
        balancer = LeastConn(servers)
        sequence = picks(balancer, servers, 9)
        self.assertEqual(Counter(sequence), {"a": 3, "b": 3, "c": 3})
        self.assertEqual(longest_run(sequence), 1)

    def test_follows_in_flight(self) -> None:
        """
        As in-flight counts change, so does the choice (the balancer reads
        them at each pick).
        """
        servers = [FakeServer("a"), FakeServer("b")]
        balancer = LeastConn(servers)
        chosen = []
        for _ in range(6):
            server = pick(balancer, servers)
            server.in_flight += 1
            chosen.append(server)
        self.assertEqual([s.in_flight for s in servers], [3, 3])
        chosen[0].in_flight -= 1
        self.assertIs(balancer.pick(servers, b""), chosen[0])

    def test_only_candidates(self) -> None:
        """
        A less loaded server that is not a candidate is never picked.
        """
        a, b = FakeServer("a", in_flight=0), FakeServer("b", in_flight=9)
        balancer = LeastConn([a, b])
        for _ in range(4):
            self.assertIs(balancer.pick([b], b""), b)


class RandomTwoTests(SynchronousTestCase):
    """
    L{RandomTwo}: two servers drawn at random (by weight), the less loaded
    wins.
    """

    def test_deterministic_with_seed(self) -> None:
        """
        With the same seed, the same sequence of choices.
        """
        servers = [FakeServer(n) for n in "abcd"]
        one = picks(RandomTwo(servers, random.Random(7)), servers, 50)
        two = picks(RandomTwo(servers, random.Random(7)), servers, 50)
        self.assertEqual(one, two)

    def test_two_servers_less_loaded_always(self) -> None:
        """
        With two candidates both are always drawn, so the less loaded one
        always wins.
        """
        a, b = FakeServer("a", in_flight=5), FakeServer("b", in_flight=1)
        balancer = RandomTwo([a, b], random.Random(1))
        self.assertEqual(set(picks(balancer, [a, b], 50)), {"b"})

    def test_favours_less_loaded(self) -> None:
        """
        The busiest of several servers is picked only when it is drawn with
        itself (never, since the second draw excludes the first), and the
        least loaded is picked most often.
        """
        servers = [FakeServer("idle", in_flight=0), FakeServer("mid", in_flight=5),
                   FakeServer("busy", in_flight=10)]
        balancer = RandomTwo(servers, random.Random(42))
        counts = Counter(picks(balancer, servers, 3000))
        self.assertEqual(counts["busy"], 0)
        # idle wins whenever it is drawn: 2 pairs of 3
        self.assertGreater(counts["idle"], 1800)
        self.assertGreater(counts["mid"], 700)

    def test_equal_load_spreads(self) -> None:
        """
        With equal loads every server is picked, roughly evenly.
        """
        servers = [FakeServer(n) for n in "abcd"]
        balancer = RandomTwo(servers, random.Random(5))
        counts = Counter(picks(balancer, servers, 4000))
        self.assertEqual(set(counts), set("abcd"))
        for name in "abcd":
            self.assertTrue(800 < counts[name] < 1200, counts)

    def test_weights_bias_draws(self) -> None:
        """
        Draws follow weights: with equal load, a heavier server is picked
        more often.
        """
        servers = [FakeServer("heavy", weight=5), FakeServer("a"), FakeServer("b")]
        balancer = RandomTwo(servers, random.Random(9))
        counts = Counter(picks(balancer, servers, 3000))
        self.assertGreater(counts["heavy"], counts["a"] + counts["b"])

    def test_never_outside_candidates(self) -> None:
        """
        Only candidates are ever picked, however idle the others are.
        """
        servers = [FakeServer(n, in_flight=i + 1) for i, n in enumerate("abcdef")]
        idle = FakeServer("idle", in_flight=0)
        balancer = RandomTwo(servers + [idle], random.Random(11))
        candidates = servers[1:4]
        seen = set(picks(balancer, candidates, 500))
        self.assertTrue(seen <= {"b", "c", "d"}, seen)


class ConsistentHashTests(SynchronousTestCase):
    """
    L{ConsistentHash}: a key keeps its server; losing a server moves only
    its own keys.
    """

    def setUp(self) -> None:
        self.servers = [FakeServer(f"http://10.0.0.{i}:80") for i in range(1, 6)]
        self.balancer = ConsistentHash(self.servers)
        self.keys = [b"client-%d" % i for i in range(1000)]

    def test_same_key_same_server(self) -> None:
        """
        The same key always maps to the same server, also on a new balancer
        built from the same servers.
        """
        other = ConsistentHash(self.servers)
        for key in self.keys[:100]:
            first = self.balancer.pick(self.servers, key)
            self.assertIs(self.balancer.pick(self.servers, key), first)
            self.assertIs(other.pick(self.servers, key), first)

    def test_ignores_load(self) -> None:
        """
        The in-flight count does not move a key.
        """
        key = b"sticky"
        first = pick(self.balancer, self.servers, key)
        first.in_flight = 1000
        self.assertIs(self.balancer.pick(self.servers, key), first)

    def test_keys_spread(self) -> None:
        """
        Keys spread over every server.
        """
        counts = Counter(pick(self.balancer, self.servers, k).name for k in self.keys)
        self.assertEqual(len(counts), 5)
        for count in counts.values():
            self.assertTrue(100 < count < 320, counts)

    def test_losing_a_server_moves_only_its_keys(self) -> None:
        """
        When a server stops being a candidate, only the keys it had move;
        every other key keeps its server.
        """
        before = {k: self.balancer.pick(self.servers, k) for k in self.keys}
        gone = self.servers[2]
        remaining = [s for s in self.servers if s is not gone]
        moved = 0
        for key in self.keys:
            after = self.balancer.pick(remaining, key)
            self.assertIsNot(after, gone)
            if before[key] is gone:
                moved += 1
            else:
                self.assertIs(after, before[key], key)
        self.assertGreater(moved, 0)

    def test_server_comes_back(self) -> None:
        """
        When the server is a candidate again its keys return to it.
        """
        before = {k: self.balancer.pick(self.servers, k) for k in self.keys}
        remaining = self.servers[1:]
        for key in self.keys:
            self.balancer.pick(remaining, key)
        for key in self.keys:
            self.assertIs(self.balancer.pick(self.servers, key), before[key])

    def test_weights_roughly_proportional(self) -> None:
        """
        A server of weight 3 gets about three times the keys of a server
        of weight 1.
        """
        heavy, light = FakeServer("heavy", weight=3), FakeServer("light", weight=1)
        balancer = ConsistentHash([heavy, light])
        keys = [b"k%d" % i for i in range(4000)]
        counts = Counter(pick(balancer, [heavy, light], k).name for k in keys)
        ratio = counts["heavy"] / counts["light"]
        self.assertTrue(2.2 < ratio < 4.0, counts)

    def test_unknown_candidate_still_usable(self) -> None:
        """
        A candidate the ring does not know (not in the initial list) is
        still picked rather than nothing, and consistently.
        """
        stranger = FakeServer("stranger")
        self.assertIs(self.balancer.pick([stranger], b"k1"), stranger)
        other = FakeServer("other")
        first = self.balancer.pick([stranger, other], b"k1")
        self.assertIs(self.balancer.pick([stranger, other], b"k1"), first)

    def test_empty_key(self) -> None:
        """
        An empty key still yields a candidate.
        """
        self.assertIn(self.balancer.pick(self.servers, b""), self.servers)
