"""
Tests for C{[proxy] drain_timeout} (L{twisted_proxy.config.proxy}): how
long a graceful stop lets exchanges and tunnels finish.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import List

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.config import ConfigError, default_config, parse_config
from twisted_proxy.config.proxy import PROXY_SECONDS
from twisted_proxy.model import Config, ProxySettings

LISTENER = """
[[listener]]
name = "out"
kind = "forward"
endpoint = "tcp:3128:interface=127.0.0.1"
"""


class DrainTimeoutTests(SynchronousTestCase):
    def parse(self, text: str) -> Config:
        base = tempfile.mkdtemp(prefix="twisted-proxy-test-")
        self.addCleanup(shutil.rmtree, base, True)
        return parse_config(text, "p.toml", base)

    def errors(self, text: str) -> List[str]:
        try:
            self.parse(text)
        except ConfigError as e:
            return e.lines()
        raise AssertionError("the configuration was accepted")

    def test_default(self) -> None:
        """
        Without the key a drain lasts at most 30 seconds, in a file and in
        the embedded default configuration.
        """
        self.assertEqual(ProxySettings().drain_timeout, 30.0)
        self.assertEqual(self.parse(LISTENER).proxy.drain_timeout, 30.0)
        self.assertEqual(default_config().proxy.drain_timeout, 30.0)

    def test_seconds(self) -> None:
        """
        The key is a number of seconds like the other timeouts (an integer
        becomes a float).
        """
        self.assertIn("drain_timeout", PROXY_SECONDS)
        config = self.parse("[proxy]\ndrain_timeout = 5\n" + LISTENER)
        self.assertEqual(config.proxy, ProxySettings(drain_timeout=5.0))
        self.assertIsInstance(config.proxy.drain_timeout, float)
        config = self.parse("[proxy]\ndrain_timeout = 0.25\n" + LISTENER)
        self.assertEqual(config.proxy.drain_timeout, 0.25)

    def test_invalid(self) -> None:
        """
        Zero, a negative number, infinity or a string are refused with one
        line each.
        """
        for value, why in [
            ("0", "must be a number of seconds > 0, not 0"),
            ("-1", "must be a number of seconds > 0, not -1"),
            ("inf", "must be a number of seconds > 0, not inf"),
            ('"30"', "must be a number of seconds, not a string"),
        ]:
            self.assertEqual(
                self.errors(f"[proxy]\ndrain_timeout = {value}\n" + LISTENER),
                [f"p.toml: proxy.drain_timeout: {why}"],
            )
