# -*- test-case-name: tests.test_admin -*-
"""
Counters kept by the engine: plain integers updated on the hot path (no
locks, no metric objects), read by the admin listener when scraped.
"""

from __future__ import annotations

from typing import Dict


class ListenerStats:
    """
    One listener's counters.
    """

    __slots__ = ("name", "kind", "by_status", "bytes_in", "bytes_out", "denied", "errors")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.by_status: Dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.denied = 0
        self.errors = 0

    def record(self, status: int, bytes_in: int, bytes_out: int, decision: str) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        if decision == "deny":
            self.denied += 1
        elif decision == "error":
            self.errors += 1

    @property
    def requests(self) -> int:
        return sum(self.by_status.values())
