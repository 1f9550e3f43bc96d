# -*- test-case-name: tests.test_examples -*-
"""
A custom listener: a line protocol that echoes each line back, with a
greeting taken from the listener's own table.

    [[listener]]
    name = "echo"
    kind = "custom"
    endpoint = "tcp:7007:interface=127.0.0.1"
    factory = "twisted_proxy.examples.echo:EchoFactory"
    greeting = "hello"          # a key of this listener only
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Echo(LineReceiver):
    transport: Any

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def connectionMade(self) -> None:
        greeting = self.factory.greeting  # type: ignore[attr-defined]
        if greeting:
            self.sendLine(greeting.encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        if line.rstrip(b"\r") == b"quit":
            self.transport.loseConnection()
            return
        self.sendLine(line.rstrip(b"\r"))


class _EchoFactory(Factory):
    protocol = Echo
    noisy = False

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting


def EchoFactory(listener: Any, reactor: Any) -> Factory:
    """
    The factory named in the config: called with the listener's config
    (its own keys are in C{listener.options}) and the reactor.
    """
    return _EchoFactory(str(listener.options.get("greeting", "")))
