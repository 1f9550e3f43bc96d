# -*- test-case-name: tests.test_config -*-
"""
The configuration as frozen data.

L{twisted_proxy.config} turns a TOML file into these objects (validating as
it goes); everything else only reads them.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Mapping, Optional, Tuple, Union

import attrs

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Size units (bytes).
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Defaults of a C{[cache.NAME]}'s sizes.
CACHE_MAX_SIZE = 1 * GiB
CACHE_MEMORY = 64 * MiB
CACHE_MAX_OBJECT_SIZE = 256 * MiB

#: The effective C{(response_buffer, request_buffer)} of each listener kind
#: that leaves them unset.
DEFAULT_BUFFERS: Mapping[str, Tuple[int, int]] = {
    "reverse": (1 * GiB, 1 * MiB),
    "forward": (0, 0),
}

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
    #: a filter's Deferred verdict must come within this (503 beyond)
    filter_timeout: float = 10.0
    tunnel_idle_timeout: float = 300.0
    #: on a graceful stop (SIGTERM) or a listener removed by a reload,
    #: exchanges and tunnels in progress may finish for this long; what is
    #: left then is cut
    drain_timeout: float = 30.0
    #: bytes of a request or response head (431 / 502 beyond)
    max_head_size: int = 32768
    #: bytes of one header field, name and value (431 / 502 beyond)
    max_field_size: int = 8192
    #: header fields in one head (431 / 502 beyond)
    max_header_count: int = 100
    #: idle keep-alive connections kept per origin or server (None: only
    #: the process-wide pool_max_idle_total bounds them)
    pool_max_idle: Optional[int] = None
    #: idle keep-alive connections of the whole process (the one idle the
    #: longest closes to make room); capped at start by a quarter of the
    #: open-file limit
    pool_max_idle_total: int = 4096
    pool_idle_timeout: float = 60.0
    #: client connections the process holds, all listeners together (idle
    #: and header-less ones are shed beyond it, then accepting pauses)
    max_connections: int = 10000
    #: latency histograms per listener and route (admin /status, /metrics)
    latency_histograms: bool = True
    #: worker processes sharing the listeners (1: this process serves);
    #: see twisted_proxy/workers.py
    workers: int = 1
    #: absolute folder of the bodies held on disk (created at start); the
    #: configuration resolves it against the file's folder, the embedded
    #: default and this default against the working folder. Not part of
    #: equality (settings parsed from a file compare equal to
    #: C{ProxySettings()} with the same values wherever the file is): a
    #: reload that compares settings must compare C{spool_path} itself.
    spool_path: str = attrs.field(factory=lambda: os.path.abspath("spool"), eq=False)
    #: bytes of all spooled bodies together; beyond it exchanges fall back
    #: to back-pressure
    spool_max: int = 4 * GiB


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
class RouteConfig:
    """
    One C{[[listener.route]]} table of a reverse listener.

    @ivar host: exact host, C{"*.example.com"} (subdomains at any depth, not
        the apex), or L{None} for any host; lower case, no port.
    @ivar path: path prefix (C{"/"} when absent).
    @ivar backend: the C{[backend.NAME]} requests go to.
    @ivar strip_prefix: remove C{path} from the forwarded path.
    @ivar rewrite_prefix: replace C{path} with this in the forwarded path.
    @ivar preserve_host: the backend sees the client's C{Host} (else the
        server's C{host:port}).
    @ivar cache: L{None}: the listener's cache; C{False}: no cache; a
        string: that C{[cache.NAME]} (see L{cache_for}).
    @ivar response_buffer: bytes; L{None}: the listener's (see
        L{buffers_for}).
    @ivar request_buffer: bytes; L{None}: the listener's.
    """

    backend: str
    host: Optional[str] = None
    path: str = "/"
    filters: Tuple[str, ...] = ()
    strip_prefix: bool = False
    rewrite_prefix: Optional[str] = None
    preserve_host: bool = True
    cache: Union[None, str, bool] = None
    response_buffer: Optional[int] = None
    request_buffer: Optional[int] = None

    def cache_for(self, listener: ListenerConfig) -> Optional[str]:
        """
        The name of the cache this route's requests use on C{listener}, or
        L{None} for none.
        """
        if self.cache is None:
            return listener.cache
        if self.cache is False or self.cache is True:
            return None
        return self.cache

    def buffers_for(self, listener: ListenerConfig) -> Tuple[int, int]:
        """
        The effective C{(response_buffer, request_buffer)} of this route on
        C{listener}.
        """
        response, request = listener.buffers()
        return (
            response if self.response_buffer is None else self.response_buffer,
            request if self.request_buffer is None else self.request_buffer,
        )


@attrs.frozen
class CertificateConfig:
    """
    One entry of a listener's C{tls.certificates}: a PEM certificate file
    (the leaf first, then any intermediates) and its PEM private key file,
    both absolute paths.
    """

    cert: str
    key: str


@attrs.frozen
class TLSConfig:
    """
    A listener's C{tls} table: the listener speaks TLS (the endpoint stays
    a plain C{tcp:} one).

    @ivar certificates: chosen by SNI among the names of each certificate;
        the first is the default (no SNI, or an unknown name).
    @ivar min_version: C{"1.2"} or C{"1.3"}.
    @ivar ciphers: an OpenSSL cipher string for TLS 1.2, or L{None} for the
        forward-secret AEAD default (TLS 1.3 suites are OpenSSL's, all
        AEAD and forward-secret).
    @ivar client_ca: PEM file of the CAs client certificates are verified
        against, or L{None}: no client certificates.
    @ivar verify_client: C{"required"} or C{"optional"} (with C{client_ca}),
        else L{None}.
    @ivar client_subject_header: the request header carrying the verified
        client certificate's subject to the backend (a client-sent one is
        always removed).
    """

    certificates: Tuple[CertificateConfig, ...]
    min_version: str = "1.2"
    ciphers: Optional[str] = None
    client_ca: Optional[str] = None
    verify_client: Optional[str] = None
    client_subject_header: str = "X-Client-Subject"


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
    # reverse listeners
    routes: Tuple[RouteConfig, ...] = ()
    trusted_proxies: Tuple[IPNetwork, ...] = ()
    hide_headers: Tuple[str, ...] = ("Server", "X-Powered-By")
    forwarded: bool = False  # add an RFC 7239 Forwarded header too
    # tcp listeners
    backend: Optional[str] = None
    # forward and reverse listeners
    tls: Optional[TLSConfig] = None
    # a plain listener answering every request with a 308 to https on this port
    redirect_to_https: Optional[int] = None
    # the listen queue (added to the endpoint string unless it has one)
    backlog: int = 1024
    # forward and reverse listeners: the C{[cache.NAME]} requests use
    cache: Optional[str] = None
    # bytes; None = the kind's default (see buffers())
    response_buffer: Optional[int] = None
    request_buffer: Optional[int] = None

    def buffers(self) -> Tuple[int, int]:
        """
        The effective C{(response_buffer, request_buffer)}: the given
        values, else the kind's defaults (reverse 1 GiB and 1 MiB, forward
        and others 0 and 0).
        """
        response, request = DEFAULT_BUFFERS.get(self.kind, (0, 0))
        return (
            response if self.response_buffer is None else self.response_buffer,
            request if self.request_buffer is None else self.request_buffer,
        )


@attrs.frozen
class HealthConfig:
    """
    A backend's active health check.

    @ivar path: HTTP path to GET; L{None} means a TCP connect probe.
    @ivar expect: accepted statuses; empty means any 2xx or 3xx.
    """

    path: Optional[str] = None
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    expect: Tuple[int, ...] = ()


@attrs.frozen
class ServerConfig:
    """
    One entry of a backend's C{servers}.

    @ivar scheme: C{"http"}, C{"https"} or C{"tcp"}.
    @ivar ca: (https) PEM file of the CAs the server's certificate is
        verified against; L{None} means the system's trust store.
    @ivar server_name: (https) the name sent as SNI and verified in the
        server's certificate, instead of C{host}.
    @ivar verify: (https) verify the server's certificate (false: no
        verification at all, logged loudly at start-up).
    @ivar client_cert: (https) PEM certificate (chain) presented to the
        server (mutual TLS), with C{client_key}.
    """

    url: str
    scheme: str
    host: str
    port: int
    weight: int = 1
    max_connections: Optional[int] = None
    backup: bool = False
    ca: Optional[str] = None
    server_name: Optional[str] = None
    verify: bool = True
    client_cert: Optional[str] = None
    client_key: Optional[str] = None


@attrs.frozen
class BackendConfig:
    """
    One C{[backend.NAME]} table.

    @ivar balance: C{round_robin}, C{least_conn}, C{random_two}, C{hash},
        or a dotted path to a custom balancer factory.
    @ivar hash_key: C{"client_ip"}, C{"header:NAME"} or C{"cookie:NAME"}.
    @ivar queue_size: requests that may wait (each up to C{queue_timeout})
        while every up server is at its C{max_connections}; one more is
        answered 503 at once.
    """

    name: str
    servers: Tuple[ServerConfig, ...]
    balance: str = "round_robin"
    hash_key: str = "client_ip"
    health: Optional[HealthConfig] = None
    retries: int = 2
    max_fails: int = 3
    fail_timeout: float = 10.0
    queue_timeout: float = 5.0
    queue_size: int = 1000


@attrs.frozen
class CacheConfig:
    """
    One C{[cache.NAME]} table: a shared HTTP cache (RFC 9111) that
    listeners and routes name.

    @ivar path: its absolute folder (created at start; entries survive
        restarts).
    @ivar max_size: disk bound in bytes; least recently used entries are
        evicted first.
    @ivar memory: bytes of small hot entries also kept in memory (0: none).
    @ivar max_object_size: larger responses are streamed, never stored.
    @ivar lock_timeout: seconds collapsed misses wait for the first fetch
        before fetching themselves.
    @ivar domains: only hosts matching these patterns are cached (empty:
        every host); normalized (see L{twisted_proxy.domains}).
    @ivar bypass_domains: hosts never cached (wins over C{domains}).
    @ivar tag_header: the response header whose comma-separated values tag
        an entry for purge.
    """

    name: str
    path: str
    max_size: int = CACHE_MAX_SIZE
    memory: int = CACHE_MEMORY
    max_object_size: int = CACHE_MAX_OBJECT_SIZE
    lock_timeout: float = 5.0
    domains: Tuple[str, ...] = ()
    bypass_domains: Tuple[str, ...] = ()
    tag_header: str = "Cache-Tag"


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
    backends: Mapping[str, BackendConfig] = attrs.field(factory=dict)
    caches: Mapping[str, CacheConfig] = attrs.field(factory=dict)
