# -*- test-case-name: tests.test_poll -*-
"""
The epoll reactor's loop without a logging context per event.

Twisted's C{EPollReactor.doPoll} calls every ready descriptor's
C{doRead}/C{doWrite} through C{log.callWithLogger}, which copies a context
dictionary and makes six Python calls so that a legacy C{log.msg} or
C{log.err} made during the call is prefixed with the protocol's
C{logPrefix()}. The proxy logs with C{twisted.logger}, whose events name
their own namespace; the prefix only ever showed on a traceback Twisted
logs for an exception that escaped a protocol (which still is logged,
with the system C{-}). Measured on this machine with a bare Twisted
responder: 133,000 req/s through C{callWithLogger}, 182,000 without it
(2 us of a request's 7.5).

L{install} replaces the reactor's C{doIteration} with L{fast_poll}: the
same poll, the same C{_doReadOrWrite} (disconnection, errors, C{doRead}
then C{doWrite}), only the context is gone. Other reactors are left
alone.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Optional


def fast_poll(reactor: Any) -> Callable[[Optional[float]], None]:
    """
    C{reactor}'s C{doPoll} without C{log.callWithLogger}.
    """
    poll = reactor._poller.poll
    selectables = reactor._selectables
    do_read_or_write = reactor._doReadOrWrite
    get = selectables.get

    def doPoll(timeout: Optional[float]) -> None:
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = get(fd)
            if selectable is not None:
                do_read_or_write(selectable, fd, event)

    return doPoll


def install(reactor: Any) -> bool:
    """
    Use L{fast_poll} in C{reactor} when it is Twisted's epoll reactor (its
    own class, not a subclass that may poll differently). True when it
    was installed.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # no epoll on this system
        return False
    if type(reactor) is not EPollReactor or reactor.__dict__.get("doIteration") is not None:
        return False
    reactor.doIteration = fast_poll(reactor)  # type: ignore[method-assign]
    return True
