# -*- test-case-name: tests.test_interfaces -*-
"""
The public extension API of twisted-proxy.

Each seam is a small zope interface. Custom implementations are named in the
configuration by dotted path (C{package.module:name}).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IRequestFilter(Interface):
    """
    A policy step run for each request (and each CONNECT) before the proxy
    picks an upstream.
    """

    name = Attribute("The filter's name from its C{[filter.NAME]} table.")

    def filter_request(request):  # type: ignore[no-untyped-def]
        """
        Judge one request.

        @param request: a L{twisted_proxy.filters.RequestInfo}; a filter may
            change its C{headers} list to alter what is forwarded.
        @return: L{None} to continue, a L{twisted_proxy.filters.Deny} to
            answer the client instead, or a Deferred firing with either.
        """


class IResponseFilter(Interface):
    """
    A policy step run on each response head before it goes to the client.
    """

    def filter_response(request, response):  # type: ignore[no-untyped-def]
        """
        Inspect or alter a response head (C{response.headers} is a mutable
        list of C{(name, value)} byte pairs). Returns L{None}.
        """


class IBalancer(Interface):
    """
    Chooses a server of a backend for each request.

    A custom balancer is named in C{[backend.X] balance = "pkg.mod:Name"}:
    C{Name(servers)} is called once with the backend's servers (objects
    with C{name}, C{weight}, C{in_flight}) and returns an C{IBalancer}.
    """

    def pick(candidates, key):  # type: ignore[no-untyped-def]
        """
        One of C{candidates} (the servers available now, never empty when
        called by the proxy), or L{None}.

        @param key: the request's hash key (client address, header or cookie
            value) as bytes; C{b""} when the backend has no use for it.
        """


class IHealthProbe(Interface):
    """
    One active health check of one server.
    """

    def probe(server):  # type: ignore[no-untyped-def]
        """
        Check C{server}; return a Deferred firing with C{True} when healthy
        (failing or firing C{False} otherwise). The caller applies the
        timeout and survives any exception.
        """


class IBodyTransform(Interface):
    """
    A filter that rewrites whole bodies (the C{transform} filter). Only such
    a filter makes the proxy buffer a body, and only up to C{max_body}
    bytes: a larger request body gets 413, a larger response body 502.
    Every other request keeps streaming.
    """

    max_body = Attribute("The largest body, in bytes, this filter buffers.")

    def wants_request(request):  # type: ignore[no-untyped-def]
        """
        Whether to buffer and transform this request's body (called before
        any body byte is read, with the head's C{request.headers}).
        """

    def transform_request(request, body):  # type: ignore[no-untyped-def]
        """
        The new request body (bytes). C{request.headers} may be changed;
        the proxy sets C{Content-Length} itself. Raise
        L{twisted_proxy.filters.BadBody} to refuse the client's body (400
        with its message); any other exception is a logged 500.
        """

    def wants_response(request, response):  # type: ignore[no-untyped-def]
        """
        Whether to buffer and transform this response's body
        (C{response.status}, C{response.headers}).
        """

    def transform_response(request, response, body):  # type: ignore[no-untyped-def]
        """
        The new response body (bytes); C{response.headers} may be changed;
        the proxy sets C{Content-Length} itself.
        """
