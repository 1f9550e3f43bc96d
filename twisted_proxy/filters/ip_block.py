# -*- test-case-name: tests.test_ip_block -*-
"""
The C{ip_block} filter type: refuse listed clients, and clients that a
rate limit had to refuse too often, for a while.

::

    [filter.block]
    type = "ip_block"
    block_clients = ["203.0.113.0/24"]   # always 403
    watch = ["per-ip"]                   # rate_limit filters whose refusals count
    threshold = 10                       # refusals within ...      (default 10)
    window = 60                          # ... this many seconds    (default 60)
    block_for = 600                      # block that long, seconds (default 600)
    max_clients = 10000                  # clients tracked at most  (default 10000)

A client that the watched rate limits refused C{threshold} times within
C{window} seconds (by any of them, counted together) is refused with 403 by
this filter for C{block_for} seconds. Put this filter I{before} the rate
limits it watches in a listener's or route's C{filters}, so a blocked
client costs no rate limit work; refusals of a client already blocked do
not extend its block. Blocking and unblocking are logged as structured
C{twisted.logger} events (fields C{filter}, C{client}, C{action} =
C{"blocked"} or C{"unblocked"}, and C{watched}, C{count}, C{until} or
C{reason}).

The counts come from the process's event bus
(L{twisted_proxy.filters.events}): the watched filters must be C{rate_limit}
filters of the same configuration, which one filter's table cannot check;
L{check_watch} does it over the whole configuration (a name that is no
rate limit would simply never count anything). With a Redis rate limit,
the refusals each proxy makes are counted by that proxy's own C{ip_block}.

Memory: per client a list of at most C{threshold} refusal times, kept for
clients refused within the last C{window} seconds and at most
C{max_clients} of them (the least recently refused is forgotten first);
at most C{max_clients} blocks (the oldest ends early if more are needed).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.addresses import AddressMatcher as _ClientMatcher
from twisted_proxy.filters import string_list as _strings
from twisted_proxy.filters.events import Events, events
from twisted_proxy.interfaces import IRequestFilter

__all__ = ["IpBlockSpec", "IpBlockFilter", "parse", "build", "check_watch"]

log = Logger()

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_KEYS = frozenset(
    {"block_clients", "watch", "threshold", "window", "block_for", "max_clients"}
)
#: the most refusals a threshold may count (memory per client)
MAX_THRESHOLD = 10000


@attrs.frozen
class IpBlockSpec:
    """
    A parsed C{ip_block} filter table.
    """

    block_clients: Tuple[IPNetwork, ...] = ()
    watch: Tuple[str, ...] = ()
    threshold: int = 10
    window: float = 60.0
    block_for: float = 600.0
    max_clients: int = 10000


# --- parsing ---------------------------------------------------------------


def _seconds(value: Any, path: str, errors: ErrorList) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.add(path, f"must be a number of seconds, not {type(value).__name__}")
        return None
    if not value > 0 or value == float("inf"):
        errors.add(path, f"must be a positive number of seconds, not {value!r}")
        return None
    return float(value)


def _whole(
    value: Any, path: str, errors: ErrorList, maximum: Optional[int] = None
) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, f"must be a whole number, not {type(value).__name__}")
        return None
    if value < 1:
        errors.add(path, f"must be at least 1, not {value}")
        return None
    if maximum is not None and value > maximum:
        errors.add(path, f"must be at most {maximum}, not {value}")
        return None
    return value


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> IpBlockSpec:
    """
    Validate a C{[filter.NAME]} table of type C{ip_block}; report problems
    to C{errors} under C{filter.NAME.key}.
    """
    prefix = f"filter.{name}"
    values: Dict[str, Any] = {}
    for key in table:
        if key not in _KEYS and key != "type":
            errors.add(f"{prefix}.{key}", "unknown key")
    if "block_clients" in table:
        items = _strings(table["block_clients"], f"{prefix}.block_clients", errors)
        if items is not None:
            networks = []
            for path, text in items:
                try:
                    networks.append(ipaddress.ip_network(text.strip()))
                except ValueError as e:
                    errors.add(path, f"{text!r} is not a CIDR network: {e}")
            values["block_clients"] = tuple(networks)
    if "watch" in table:
        items = _strings(table["watch"], f"{prefix}.watch", errors)
        if items is not None:
            names = []
            for path, text in items:
                if not text:
                    errors.add(path, "must be the name of a rate_limit filter, not empty")
                elif text == name:
                    errors.add(path, "a filter cannot watch itself")
                elif text not in names:
                    names.append(text)
            values["watch"] = tuple(names)
    if "threshold" in table:
        threshold = _whole(table["threshold"], f"{prefix}.threshold", errors, MAX_THRESHOLD)
        if threshold is not None:
            values["threshold"] = threshold
    for key in ("window", "block_for"):
        if key in table:
            seconds = _seconds(table[key], f"{prefix}.{key}", errors)
            if seconds is not None:
                values[key] = seconds
    if "max_clients" in table:
        max_clients = _whole(table["max_clients"], f"{prefix}.max_clients", errors)
        if max_clients is not None:
            values["max_clients"] = max_clients
    if not table.get("block_clients") and not table.get("watch"):
        errors.add(
            prefix,
            "give block_clients, watch (rate_limit filter names), or both;"
            " without either the filter does nothing",
        )
    return IpBlockSpec(**values)


def check_watch(
    name: str, spec: IpBlockSpec, filter_types: Mapping[str, str], errors: ErrorList
) -> None:
    """
    Check, with the whole configuration at hand, that every name in
    C{spec.watch} is a C{rate_limit} filter.

    @param filter_types: every C{[filter.NAME]}'s type, by name.
    """
    for i, watched in enumerate(spec.watch):
        path = f"filter.{name}.watch[{i}]"
        if watched not in filter_types:
            errors.add(path, f"unknown filter {watched!r}")
        elif filter_types[watched] != "rate_limit":
            errors.add(
                path,
                f"{watched!r} is a {filter_types[watched]!r} filter; only"
                " rate_limit filters report refusals",
            )


# --- the live filter -------------------------------------------------------


@implementer(IRequestFilter)
class IpBlockFilter:
    """
    The live C{ip_block} filter; see the module docstring.

    @ivar name: the filter's name.
    @ivar spec: its L{IpBlockSpec}.
    """

    def __init__(
        self, name: str, spec: IpBlockSpec, clock: IReactorTime, bus: Events = events
    ) -> None:
        self.name = name
        self.spec = spec
        self._clock = clock
        self._bus = bus
        self._static = _ClientMatcher(spec.block_clients) if spec.block_clients else None
        #: client -> times of its recent refusals (oldest first), least
        #: recently refused client first
        self._counts: "OrderedDict[str, List[float]]" = OrderedDict()
        #: client -> (blocked until, watched filter); oldest block first,
        #: which is also the earliest to end (block_for is fixed)
        self._blocked: "OrderedDict[str, Tuple[float, str]]" = OrderedDict()
        self._timer: Optional[IDelayedCall] = None
        self._subscriptions: List[Tuple[str, Callable[[str], None]]] = []
        for watched in spec.watch:
            callback = functools.partial(self.limited, watched)
            bus.subscribe(watched, callback)
            self._subscriptions.append((watched, callback))

    def __repr__(self) -> str:
        return f"<IpBlockFilter {self.name!r}>"

    def blocked(self) -> Dict[str, float]:
        """
        The clients blocked now, with the time each block ends.
        """
        now = self._clock.seconds()
        return {ip: until for ip, (until, _) in self._blocked.items() if until > now}

    def close(self) -> None:
        """
        Stop watching the rate limits and cancel the unblock timer; blocks
        and counts are forgotten.
        """
        for watched, callback in self._subscriptions:
            self._bus.unsubscribe(watched, callback)
        self._subscriptions = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._blocked.clear()
        self._counts.clear()

    # requests

    def filter_request(self, info: RequestInfo) -> Optional[Deny]:
        """
        Refuse a listed or blocked client with 403.
        """
        ip = info.client_ip
        if self._static is not None:
            network = self._static.match(ip)
            if network is not None:
                return Deny(
                    403,
                    rule=self.name,
                    message=f"client {ip} is blocked ({network}) by filter {self.name}",
                )
        if self._blocked:
            entry = self._blocked.get(ip)
            if entry is not None:
                now = self._clock.seconds()
                if entry[0] > now:
                    left = max(1, int(entry[0] - now + 0.999))
                    return Deny(
                        403,
                        rule=self.name,
                        message=(
                            f"client {ip} is blocked by filter {self.name} for"
                            f" {left} s more (too many requests refused by {entry[1]})"
                        ),
                    )
                self._expire(now)
        return None

    # refusals reported by the watched rate limits

    def limited(self, watched: str, client_ip: str) -> None:
        """
        The rate limit C{watched} refused C{client_ip}: count it, and block
        the client once it reaches C{threshold} within C{window}.
        """
        if client_ip in self._blocked:
            return
        now = self._clock.seconds()
        counts = self._counts
        horizon = now - self.spec.window
        times = counts.get(client_ip)
        if times is None:
            self._forget_idle(horizon)
            if len(counts) >= self.spec.max_clients:
                counts.popitem(last=False)
            times = counts[client_ip] = []
        else:
            counts.move_to_end(client_ip)
            while times and times[0] <= horizon:
                del times[0]
        times.append(now)
        if len(times) >= self.spec.threshold:
            del counts[client_ip]
            self._block(client_ip, watched, now, len(times))

    def _forget_idle(self, horizon: float) -> None:
        """
        Drop the counts of clients last refused before C{horizon}, least
        recently refused first.
        """
        counts = self._counts
        while counts:
            ip = next(iter(counts))
            if counts[ip][-1] > horizon:
                break
            del counts[ip]

    def _block(self, ip: str, watched: str, now: float, count: int) -> None:
        blocked = self._blocked
        if len(blocked) >= self.spec.max_clients:
            early, (until, by) = blocked.popitem(last=False)
            self._log_unblock(early, by, "max_clients blocks reached")
        until = now + self.spec.block_for
        blocked[ip] = (until, watched)
        log.info(
            "ip_block {filter}: blocked {client} for {block_for:g} s after {count}"
            " refusals by {watched} within {window:g} s",
            action="blocked",
            filter=self.name,
            client=ip,
            block_for=self.spec.block_for,
            count=count,
            watched=watched,
            window=self.spec.window,
            until=until,
        )
        if self._timer is None:
            self._timer = self._clock.callLater(self.spec.block_for, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._expire(self._clock.seconds())

    def _expire(self, now: float) -> None:
        """
        End every block that is over, and schedule the next end.
        """
        blocked = self._blocked
        while blocked:
            ip = next(iter(blocked))
            until, by = blocked[ip]
            if until > now:
                break
            del blocked[ip]
            self._log_unblock(ip, by, "block_for elapsed")
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if blocked:
            first_until = next(iter(blocked.values()))[0]
            self._timer = self._clock.callLater(max(0.0, first_until - now), self._timer_fired)

    def _log_unblock(self, ip: str, watched: str, reason: str) -> None:
        log.info(
            "ip_block {filter}: unblocked {client} ({reason})",
            action="unblocked",
            filter=self.name,
            client=ip,
            watched=watched,
            reason=reason,
        )


def build(
    name: str, spec: IpBlockSpec, clock: IReactorTime, bus: Optional[Events] = None
) -> IpBlockFilter:
    """
    Make the live filter for C{spec}; it subscribes to C{bus} (the
    service's; the process's by default) for the watched rate limits.
    """
    return IpBlockFilter(name, spec, clock, events if bus is None else bus)
