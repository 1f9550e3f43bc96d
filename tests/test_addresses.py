"""
Tests for L{twisted_proxy.addresses}.
"""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.addresses import AddressMatcher


def matcher(*networks: str) -> AddressMatcher:
    return AddressMatcher([ipaddress.ip_network(n) for n in networks])


class AddressMatcherTests(SynchronousTestCase):
    def test_match_names_the_network(self) -> None:
        """
        The first network containing the address is named; others give None.
        """
        m = matcher("10.0.0.0/8", "127.0.0.0/8", "::1/128")
        self.assertEqual(m.match("127.0.0.5"), "127.0.0.0/8")
        self.assertEqual(m.match("::1"), "::1/128")
        self.assertIsNone(m.match("192.168.1.1"))
        self.assertIn("10.1.2.3", m)
        self.assertNotIn("11.0.0.1", m)

    def test_ipv4_mapped(self) -> None:
        """
        An IPv4 address seen through a dual-stack socket is judged as IPv4.
        """
        self.assertEqual(matcher("127.0.0.0/8").match("::ffff:127.0.0.1"), "127.0.0.0/8")

    def test_not_an_address(self) -> None:
        """
        Text that is not an IP address matches nothing (and is remembered).
        """
        m = matcher("0.0.0.0/0")
        self.assertIsNone(m.match("unix"))
        self.assertIsNone(m.match("unix"))

    def test_empty(self) -> None:
        """
        An empty matcher is false and matches nothing.
        """
        self.assertFalse(matcher())
        self.assertIsNone(matcher().match("127.0.0.1"))
