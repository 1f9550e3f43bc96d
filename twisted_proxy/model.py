# -*- test-case-name: tests.test_config -*-
"""
The configuration as frozen data.

L{twisted_proxy.config} turns a TOML file into these objects (validating as
it goes); everything else only reads them.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping, Optional, Tuple, Union

import attrs

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_ALLOW_CLIENTS: Tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


@attrs.frozen
class ProxySettings:
    """
    The C{[proxy]} table: process-wide settings.
    """

    access_log: str = "-"
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    first_byte_timeout: float = 30.0
    tunnel_idle_timeout: float = 300.0
    max_head_size: int = 65536
    pool_max_idle: int = 32
    pool_idle_timeout: float = 60.0


@attrs.frozen
class AdminConfig:
    """
    The C{[admin]} table.
    """

    endpoint: str


@attrs.frozen
class ParentProxy:
    """
    One entry of a forward listener's C{parents}: requests for C{domains}
    go through the HTTP proxy at C{host}:C{port}.
    """

    domains: Tuple[str, ...]
    host: str
    port: int


@attrs.frozen
class ListenerConfig:
    """
    One C{[[listener]]} table.
    """

    name: str
    kind: str  # forward | reverse | tcp | custom
    endpoint: str
    allow_clients: Tuple[IPNetwork, ...] = ()
    anonymity: str = "anonymous"  # transparent | anonymous | elite
    connect_ports: Tuple[int, ...] = (443,)
    filters: Tuple[str, ...] = ()
    parents: Tuple[ParentProxy, ...] = ()
    factory: Optional[str] = None
    # the raw table of a custom listener, handed to its factory
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class FilterConfig:
    """
    One C{[filter.NAME]} table. C{spec} is what the filter type's parser
    made of the table (see L{twisted_proxy.filters}).
    """

    name: str
    type: str
    spec: Any


@attrs.frozen
class Config:
    """
    A whole configuration file.
    """

    path: str
    proxy: ProxySettings
    admin: Optional[AdminConfig]
    listeners: Tuple[ListenerConfig, ...]
    filters: Mapping[str, FilterConfig] = attrs.field(factory=dict)
