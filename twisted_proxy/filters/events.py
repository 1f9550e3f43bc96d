# -*- test-case-name: tests.test_ip_block -*-
"""
A small in-process event bus between filters: a rate limit announces each
client it refused, an C{ip_block} filter watching it counts them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, DefaultDict, List


class Events:
    """
    Subscribers per filter name.
    """

    def __init__(self) -> None:
        self._subscribers: DefaultDict[str, List[Callable[[str], None]]] = defaultdict(list)

    def subscribe(self, filter_name: str, callback: Callable[[str], None]) -> None:
        """
        Call C{callback(client_ip)} whenever the filter C{filter_name}
        refuses a client for exceeding its limit.
        """
        self._subscribers[filter_name].append(callback)

    def unsubscribe(self, filter_name: str, callback: Callable[[str], None]) -> None:
        subscribers = self._subscribers.get(filter_name)
        if subscribers and callback in subscribers:
            subscribers.remove(callback)

    def limited(self, filter_name: str, client_ip: str) -> None:
        """
        The filter C{filter_name} refused C{client_ip} (429).
        """
        for callback in list(self._subscribers.get(filter_name, ())):
            callback(client_ip)


#: the process's bus; filters built by one service share it
events = Events()
