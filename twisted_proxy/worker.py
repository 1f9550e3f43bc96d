# -*- test-case-name: tests.test_workers -*-
"""
C{python -m twisted_proxy.worker}: one worker of a process tree, started by
the supervisor (twisted_proxy/workers.py), never by hand.

It loads the configuration file as the supervisor did (its share of the
caches and the spool: L{twisted_proxy.workers.worker_config}), adopts the
listening sockets it inherited, and runs the same service a single process
runs. Its standard input and descriptor 3 are the channel to the
supervisor: once a second it sends its status; it answers C{reload} and
C{purge}; its in-memory rate limits ask the supervisor for tokens. When
the supervisor goes away (its standard input closes), it drains and
exits. Signals are a single process's (SIGHUP reloads, SIGUSR1 reopens
the access log, SIGTERM drains).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twisted_proxy.worker", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--listeners", default="{}", help="JSON: {listener: [descriptor, address family]}")
    args = parser.parse_args(argv)

    try:
        from twisted.internet import epollreactor

        epollreactor.install()
    except Exception:  # pragma: no cover (no epoll, or a reactor already)
        pass
    from twisted.internet import reactor
    from twisted.internet.protocol import Protocol
    from twisted.internet.stdio import StandardIO
    from twisted.internet.task import LoopingCall
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

    from twisted_proxy import poll
    from twisted_proxy.admin.site import StatusSource
    from twisted_proxy.config import ConfigError, load_config
    from twisted_proxy.filters import rate_limit
    from twisted_proxy.service import make_service
    from twisted_proxy.tap import _raise_fd_limit
    from twisted_proxy.workers import ACCEPT_BATCH, STATUS_INTERVAL, Channel, worker_config

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    log = Logger(namespace="twisted_proxy.worker")
    index, count = args.index, args.count

    def transform(config: Any) -> Any:
        return worker_config(config, index, count)

    try:
        config = transform(load_config(args.config))
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return 1
    inherited: Dict[str, Tuple[int, int]] = {
        name: (int(fd), int(family)) for name, (fd, family) in json.loads(args.listeners).items()
    }

    class ToSupervisor(Protocol):
        def dataReceived(self, data: bytes) -> None:
            channel.data_received(data)

        def connectionLost(self, reason: Any = None) -> None:
            channel.lost()
            if not stopping[0]:
                log.info("the supervisor is gone: draining")
                stopping[0] = True
                try:
                    reactor.stop()  # type: ignore[attr-defined]
                except Exception:
                    pass

    stopping = [False]
    pipe = ToSupervisor()

    def write(data: bytes) -> None:
        if pipe.transport is not None:
            pipe.transport.write(data)

    top: Any = None

    def do_reload(message: dict) -> Any:
        return top.reload()

    def do_purge(message: dict) -> Any:
        cache = top.caches.get(message.get("cache"))
        if cache is None:
            return 0
        kind = message.get("kind")
        value = message.get("value", "")
        if kind == "url":
            return cache.purge_url(value)
        if kind == "prefix":
            return cache.purge_prefix(value)
        return cache.purge_tag(value)

    channel = Channel(write, {"reload": do_reload, "purge": do_purge}, reactor)
    StandardIO(pipe, stdin=0, stdout=3, reactor=reactor)  # type: ignore[call-arg]
    rate_limit.TREE = channel
    _raise_fd_limit()
    top = make_service(config, reactor, inherited=inherited)
    top.config_transform = transform
    # a burst of connections is shared with the other workers
    top.limiter.accept_batch = ACCEPT_BATCH
    source = StatusSource(top)

    def send_status() -> None:
        times = os.times()
        channel.send(
            {"op": "status", "pid": os.getpid(), "status": source.status(), "cpu_seconds": times.user + times.system}
        )

    status_loop = LoopingCall(send_status)
    status_loop.clock = reactor

    def started() -> None:
        import gc

        top.startService()
        status_loop.start(STATUS_INTERVAL)
        gc.freeze()

    def stopped() -> Any:
        stopping[0] = True
        if status_loop.running:
            status_loop.stop()
        return top.stopService()

    poll.install(reactor)
    top.privilegedStartService()
    reactor.callWhenRunning(started)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", stopped)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 1 if top.failures else 0


if __name__ == "__main__":
    sys.exit(main())
