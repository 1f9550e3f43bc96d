"""
Tests for L{twisted_proxy.filters.lru}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.filters.lru import LRU


class LRUTests(SynchronousTestCase):
    """
    L{LRU} keeps the most recently used entries up to its size.
    """

    def test_get_put(self) -> None:
        """
        A value put is got back; a missing key gives L{None}.
        """
        cache: LRU[str, int] = LRU(2)
        cache.put("a", 1)
        self.assertEqual(cache.get("a"), 1)
        self.assertIsNone(cache.get("b"))
        self.assertEqual(len(cache), 1)

    def test_evicts_least_recently_used(self) -> None:
        """
        Beyond its size the entry used longest ago goes; reading an entry
        counts as using it.
        """
        cache: LRU[str, int] = LRU(2)
        cache.put("a", 1)
        cache.put("b", 2)
        cache.get("a")
        cache.put("c", 3)
        self.assertEqual((cache.get("a"), cache.get("b"), cache.get("c")), (1, None, 3))
        self.assertEqual(len(cache), 2)

    def test_put_refreshes(self) -> None:
        """
        Putting an existing key replaces its value and makes it the most
        recently used.
        """
        cache: LRU[str, int] = LRU(2)
        cache.put("a", 1)
        cache.put("b", 2)
        cache.put("a", 10)
        cache.put("c", 3)
        self.assertEqual((cache.get("a"), cache.get("b")), (10, None))
