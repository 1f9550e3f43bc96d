"""
Tests for L{twisted_proxy.examples}: the example extensions work as the
README says.
"""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.examples.echo import Echo, EchoFactory
from twisted_proxy.loading import load_object
from twisted_proxy.testing import connect_factory, listener_config


class EchoTests(SynchronousTestCase):
    """
    L{EchoFactory}: a custom listener echoing lines, greeting first.
    """

    def connect(self, **options: Any) -> Tuple[Any, StringTransport]:
        factory = EchoFactory(listener_config("echo", "custom", **options), Clock())
        return connect_factory(factory)

    def test_named_in_config(self) -> None:
        """
        The dotted path the README gives loads the factory.
        """
        self.assertIs(load_object("twisted_proxy.examples.echo:EchoFactory"), EchoFactory)

    def test_greeting(self) -> None:
        """
        The C{greeting} key of the listener's table is sent on connect.
        """
        proto, transport = self.connect(greeting="hello")
        self.assertIsInstance(proto, Echo)
        self.assertEqual(transport.value(), b"hello\n")

    def test_greeting_utf8(self) -> None:
        """
        A non-ASCII greeting is sent as UTF-8.
        """
        _, transport = self.connect(greeting="grüß dich")
        self.assertEqual(transport.value(), "grüß dich\n".encode("utf-8"))

    def test_no_greeting(self) -> None:
        """
        Without a greeting nothing is sent until a line arrives.
        """
        _, transport = self.connect()
        self.assertEqual(transport.value(), b"")

    def test_echo(self) -> None:
        """
        Each line comes back; a CRLF line comes back with LF; a partial
        line waits for its end.
        """
        proto, transport = self.connect()
        proto.dataReceived(b"one\ntwo\r\nthr")
        self.assertEqual(transport.value(), b"one\ntwo\n")
        proto.dataReceived(b"ee\n")
        self.assertEqual(transport.value(), b"one\ntwo\nthree\n")
        self.assertFalse(transport.disconnecting)

    def test_quit(self) -> None:
        """
        C{quit} closes the connection, without echoing it; lines after it in
        the same read are not answered.
        """
        proto, transport = self.connect(greeting="hi")
        proto.dataReceived(b"a\nquit\r\nb\n")
        self.assertEqual(transport.value(), b"hi\na\n")
        self.assertTrue(transport.disconnecting)

    def test_too_long_line(self) -> None:
        """
        A line longer than C{MAX_LENGTH} closes the connection.
        """
        proto, transport = self.connect()
        proto.dataReceived(b"x" * (Echo.MAX_LENGTH + 1))
        self.assertTrue(transport.disconnecting)
