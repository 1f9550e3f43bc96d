# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd proxy} plugin. Only names the tap module, so scanning plugins
imports nothing heavy and never the reactor.
"""

from twisted.application.service import ServiceMaker

TwistedProxy = ServiceMaker(
    "twisted-proxy",
    "twisted_proxy.tap",
    "A forward and reverse proxy (--config FILE, --check).",
    "proxy",
)
