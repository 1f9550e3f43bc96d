# -*- test-case-name: tests.test_exchange -*-
"""
The HTTP exchange engine shared by forward and reverse listeners.

One L{front.FrontProtocol} per client connection parses requests and runs
one L{exchange.Exchange} per request through the stages:

    policy (policy.py)      allow_clients, router -> Target, CONNECT ports, filters
    request transform       (transform.py) only when a filter rewrites bodies
    origin (ctx.origin)     upstream.py: server choice, pool, retries, passive health
                            (the seam a cache fills: it answers or wraps)
    response stages         transform.py: response filters and transform
    exchange                framing for the client, own answers, tunnel, access log

Forward and reverse listeners differ only in their router.
"""

from twisted_proxy.engine.context import ListenerContext
from twisted_proxy.engine.exchange import Exchange
from twisted_proxy.engine.front import FrontFactory, FrontProtocol, SubjectFrontFactory

__all__ = ["Exchange", "FrontFactory", "FrontProtocol", "ListenerContext", "SubjectFrontFactory"]
