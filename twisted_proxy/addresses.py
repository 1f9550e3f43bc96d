# -*- test-case-name: tests.test_addresses -*-
"""
Client addresses against lists of networks (CIDRs): the listener's
C{allow_clients}, C{trusted_proxies}, and the C{acl} and C{ip_block}
filters all ask this one question, per request, so it is answered with
integer masks and remembered per address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Dict, Optional, Sequence, Tuple, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_IPRange = Tuple[int, int, str]  # (network address, mask, network text)


class AddressMatcher:
    """
    Which of a list of networks contains a client address, with the
    answer cached per address (clients repeat).
    """

    _MAX_CACHE = 4096

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._v4: Tuple[_IPRange, ...] = tuple(
            (int(n.network_address), int(n.netmask), str(n))
            for n in networks
            if n.version == 4
        )
        self._v6: Tuple[_IPRange, ...] = tuple(
            (int(n.network_address), int(n.netmask), str(n))
            for n in networks
            if n.version == 6
        )
        self._cache: Dict[str, Optional[str]] = {}

    def match(self, client_ip: str) -> Optional[str]:
        """
        The text of the first network containing C{client_ip}, or L{None}
        (also for text that is not an IP address).
        """
        cache = self._cache
        try:
            return cache[client_ip]
        except KeyError:
            pass
        found = self._lookup(client_ip)
        if len(cache) >= self._MAX_CACHE:
            cache.clear()
        cache[client_ip] = found
        return found

    def _lookup(self, client_ip: str) -> Optional[str]:
        text = client_ip
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            if ":" in text:
                value = int.from_bytes(
                    socket.inet_pton(socket.AF_INET6, text.partition("%")[0]), "big"
                )
                if value >> 32 == 0xFFFF:
                    # IPv4-mapped (a dual-stack socket): judge the IPv4 address
                    value &= 0xFFFFFFFF
                    ranges = self._v4
                else:
                    ranges = self._v6
            else:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
                ranges = self._v4
        except (OSError, ValueError):
            return None
        for network, mask, label in ranges:
            if value & mask == network:
                return label
        return None

    def __contains__(self, client_ip: str) -> bool:
        return self.match(client_ip) is not None

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)
