"""
Tests for L{twisted_proxy.stats}: latency histograms and their quantiles.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.stats import BUCKETS, SLOTS, Histogram, quantile, quantiles


class HistogramTests(SynchronousTestCase):
    def test_buckets(self) -> None:
        """
        A duration counts in the first bucket whose bound is at least it;
        beyond the last bound, in +Inf.
        """
        h = Histogram()
        for seconds in (0.0001, 0.0005, 0.0006, 100.0):
            h.record(seconds)
        self.assertEqual(h.counts[0], 2)
        self.assertEqual(h.counts[1], 1)
        self.assertEqual(h.counts[len(BUCKETS)], 1)
        self.assertAlmostEqual(h.sum, 100.0012)

    def test_window(self) -> None:
        """
        The last minute is six ten-second slots: after six rotations a
        duration has left it, but stays in the counts since start.
        """
        h = Histogram()
        h.record(0.001)
        for _ in range(SLOTS - 1):
            h.rotate()
            self.assertEqual(sum(h.recent()), 1)
        h.rotate()
        self.assertEqual(sum(h.recent()), 0)
        self.assertEqual(sum(h.counts), 1)

    def test_quantiles(self) -> None:
        """
        Quantiles are interpolated within their bucket (as Prometheus'
        histogram_quantile), in milliseconds; none without durations.
        """
        counts = [0] * (len(BUCKETS) + 1)
        counts[4] = 100  # (0.005, 0.01]
        self.assertAlmostEqual(quantile(0.5, counts), 0.0075)  # type: ignore[arg-type]
        self.assertAlmostEqual(quantile(0.99, counts), 0.00995)  # type: ignore[arg-type]
        q = quantiles(counts)
        self.assertEqual((q["count"], q["p50"]), (100, 7.5))
        self.assertEqual(quantiles([0] * len(counts)), {"count": 0, "p50": None, "p90": None, "p99": None})
        counts = [0] * (len(BUCKETS) + 1)
        counts[-1] = 3
        self.assertEqual(quantile(0.5, counts), BUCKETS[-1])

    def test_snapshot(self) -> None:
        """
        A snapshot has the counts since start, their sum, the last minute's
        counts and quantiles.
        """
        h = Histogram()
        h.record(0.003)
        snap = h.snapshot()
        self.assertEqual(sum(snap["counts"]), 1)
        self.assertEqual(snap["recent"], snap["counts"])
        self.assertEqual(snap["count"], 1)
        self.assertTrue(2.5 < snap["p50"] <= 5.0)


class TimingOffTests(SynchronousTestCase):
    def test_counters_only(self) -> None:
        """
        With C{latency_histograms = false} an exchange still counts (by
        status, by route and class), its durations do not.
        """
        from twisted_proxy.stats import ListenerStats

        class Route:
            name = "api"
            backend = None

        stats = ListenerStats("edge", "reverse")
        stats.timing = False
        route = Route()
        stats.done(200, 1, 2, "allow", 0.01, 0.005, route)
        stats.done(404, 1, 2, "allow", 0.01, 0.0, None)
        self.assertEqual(stats.by_status, {200: 1, 404: 1})
        self.assertEqual(stats.routes["api"].by_class[2], 1)
        self.assertEqual(sum(stats.latency.counts), 0)
        self.assertEqual(sum(stats.upstream.counts), 0)
        stats.timing = True
        stats.done(200, 1, 2, "allow", 0.01, 0.005, route)
        self.assertEqual(sum(stats.latency.counts), 1)
        self.assertEqual(sum(stats.upstream.counts), 1)
