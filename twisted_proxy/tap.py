# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd proxy} command: options and service construction.

This is the only module that resolves the global reactor, and only inside
L{makeService}, so that importing it (as twistd does while scanning plugins)
never installs a reactor.
"""

from __future__ import annotations

import sys
from typing import Optional

from twisted.application.service import IService
from twisted.python import usage

from twisted_proxy.config import ConfigError, default_config, load_config


class Options(usage.Options):
    """
    Options of C{twistd proxy}. The configuration is loaded and validated in
    L{postOptions}, before twistd writes a pidfile; the resulting
    L{twisted_proxy.model.Config} is stored under C{"config_obj"}.
    """

    synopsis = "[--config FILE] [--check]"
    longdesc = (
        "A forward and reverse proxy. Without --config, a forward proxy on "
        "127.0.0.1:3128 for loopback clients. --check validates the "
        "configuration and exits: 0 when it is valid, 1 with one "
        "'FILE: key.path: message' line per problem on stderr."
    )
    optParameters = [
        ["config", "c", None, "The TOML configuration file."],
    ]
    optFlags = [
        ["check", None, "Validate the configuration and exit."],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.toml")})

    def postOptions(self) -> None:
        path: Optional[str] = self["config"]
        try:
            config = default_config() if path is None else load_config(path)
        except ConfigError as e:
            for line in e.lines():
                print(line, file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(1)
        self["config_obj"] = config
        if self["check"]:
            print(f"{config.path}: ok", file=sys.stdout)
            sys.stdout.flush()
            raise SystemExit(0)


def makeService(options: Options) -> IService:
    """
    Build the proxy service from validated options.
    """
    import gc

    from twisted.internet import reactor

    from twisted_proxy import poll
    from twisted_proxy.service import make_service

    _raise_fd_limit()
    config = options["config_obj"]
    if config.proxy.workers > 1:
        # a supervisor of worker processes, serving nothing itself
        from twisted_proxy.workers import make_supervisor

        return make_supervisor(config, reactor)
    service = make_service(config, reactor)
    # the epoll loop without a logging context per event (poll.py)
    poll.install(reactor)
    # once running, the long-lived objects made at start-up (modules,
    # config, listeners) are left out of every later garbage collection
    reactor.callWhenRunning(gc.freeze)
    return service


def _raise_fd_limit() -> None:
    """
    A proxy holds two sockets per request or tunnel: raise the soft limit
    on open files to the hard one (as nginx's worker_rlimit_nofile does).
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass
