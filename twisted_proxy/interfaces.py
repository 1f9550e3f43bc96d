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
