# -*- test-case-name: tests.test_drain -*-
"""
The graceful drain of listeners' client connections, for a stop (SIGTERM)
or a listener removed by a reload.

L{drain} asks every connection of the given factories to finish
(C{drain()} on each: L{twisted_proxy.engine.front.FrontProtocol.drain},
L{twisted_proxy.tcp.TcpFrontProtocol.drain}): idle ones close at once,
exchanges and tunnels in progress run to their end. Its Deferred fires
when the last of them is gone, or after C{timeout} seconds, when what is
left is aborted. Cancelling the Deferred (a second SIGTERM, SIGINT) aborts
everything left at once.

Stop accepting first (C{stopListening}): a connection accepted after the
call is not drained.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Protocol, Set

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["Drainable", "drain"]

log = Logger()


class Drainable(Protocol):
    """
    A client connection that can be drained.
    """

    transport: Any

    def drain(self, gone: Optional[Callable[[Any], None]] = None) -> None:
        """
        Finish what is in progress, start nothing new, then close; call
        C{gone} with the connection once it is gone (at once if it is).
        """


def drain(factories: Iterable[Any], clock: IReactorTime, timeout: float) -> "Deferred[int]":
    """
    Drain the client connections of C{factories} (each with a
    C{connections} set of L{Drainable}s).

    @param clock: the timeout's clock.
    @param timeout: seconds the connections have to finish (C{[proxy]
        drain_timeout}); then what is left is aborted.
    @return: a Deferred firing with the number of connections that had to
        be cut (0 when all finished); it never fails. Its C{cancel()}
        aborts every connection left at once and fires it (with that
        number). One log event says how many finished and how many were
        cut.
    """
    return _Drain(factories, clock, timeout).deferred


def _listener_names(factories: List[Any]) -> str:
    names = []
    for factory in factories:
        ctx = getattr(factory, "context", None) or getattr(factory, "ctx", None)
        name = getattr(ctx, "name", None)
        if isinstance(name, str):
            names.append(name)
    return ", ".join(names) or "listeners"


class _Drain:
    """
    One drain in progress: the connections not gone yet, and the timer.
    """

    def __init__(self, factories: Iterable[Any], clock: IReactorTime, timeout: float) -> None:
        factories = list(factories)
        self.clock = clock
        self.started = clock.seconds()
        self.listeners = _listener_names(factories)
        self.pending: Set[Any] = set()
        for factory in factories:
            self.pending.update(factory.connections)
        self.total = len(self.pending)
        self.finished = 0
        self.done = False
        self.asking = True
        self.timer: Any = None
        self.deferred: Deferred[int] = Deferred(self._cancel)
        for conn in list(self.pending):
            try:
                conn.drain(self._gone)
            except Exception:
                # left to the timeout, which aborts it
                log.failure("draining a connection of {listeners}", listeners=self.listeners)
        self.asking = False
        if self.pending:
            self.timer = clock.callLater(max(timeout, 0.0), self._expired)
        else:
            self._fire(0, "finished")

    def _gone(self, conn: Any) -> None:
        pending = self.pending
        if conn not in pending:
            return  # already counted as cut
        pending.discard(conn)
        self.finished += 1
        if not pending and not self.asking and not self.done:
            self._fire(0, "finished")

    def _abort_left(self) -> int:
        """
        Abort every connection not gone yet; how many there were.
        """
        left = list(self.pending)
        self.pending.clear()
        for conn in left:
            transport = getattr(conn, "transport", None)
            if transport is None:
                continue
            abort = getattr(transport, "abortConnection", None)
            try:
                if abort is not None:
                    abort()
                else:
                    transport.loseConnection()
            except Exception:
                log.failure("aborting a connection of {listeners}", listeners=self.listeners)
        return len(left)

    def _expired(self) -> None:
        self.timer = None
        if not self.done:
            self._fire(self._abort_left(), "drain_timeout")

    def _cancel(self, deferred: "Deferred[int]") -> None:
        if not self.done:
            self._fire(self._abort_left(), "cancelled")

    def _fire(self, cut: int, why: str) -> None:
        self.done = True
        timer = self.timer
        self.timer = None
        if timer is not None and timer.active():
            timer.cancel()
        fields = dict(
            listeners=self.listeners,
            total=self.total,
            finished=self.finished,
            cut=cut,
            why=why,
            seconds=round(self.clock.seconds() - self.started, 3),
        )
        if cut:
            log.warn(
                "drain of {listeners} ({why} after {seconds}s): {finished} of {total}"
                " connections finished, {cut} cut",
                **fields,
            )
        else:
            log.info(
                "drain of {listeners} done after {seconds}s: {finished} of {total}"
                " connections finished, {cut} cut",
                **fields,
            )
        self.deferred.callback(cut)


def notify_gone(conn: Any) -> None:
    """
    Tell whoever drains C{conn} (its C{gone_callbacks}) that it is gone: a
    connection's C{connectionLost} calls this last.
    """
    callbacks = conn.gone_callbacks
    if callbacks:
        conn.gone_callbacks = ()
        for gone in callbacks:
            gone(conn)


def register_gone(conn: Any, gone: Optional[Callable[[Any], None]]) -> bool:
    """
    Add C{gone} to C{conn}'s C{gone_callbacks}; when C{conn} is already
    gone, call it at once and answer False (nothing left to drain).
    """
    if conn.lost:
        if gone is not None:
            gone(conn)
        return False
    if gone is not None:
        conn.gone_callbacks += (gone,)
    return True
