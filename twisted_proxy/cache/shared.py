# -*- test-case-name: tests.test_cache_origin -*-
"""
One named shared cache (C{[cache.NAME]}): its store, its keys, the fills in
progress (request collapsing), purge and its counters.

Keys. The primary key of a request is its URL normalised as
C{scheme://host:port/path?query} (host lower case, port always written), so
C{http://Example.com/a} and C{http://example.com:80/a} are one object. A
response with C{Vary} is stored once per variant: the full key is the
primary key, a newline, and L{rules.vary_key} of the request's values for
the names the latest stored response of that URL varies on (normalised:
header order, name case and whitespace do not make a new variant).

The index of which full keys belong to a primary key (for invalidation and
purge by URL) and the Vary names of each URL are rebuilt from the store's
metadata at start.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from twisted.logger import Logger

from twisted_proxy.cache import rules
from twisted_proxy.cache.store import Entry, Store
from twisted_proxy.domains import DomainSet

log = Logger()

#: the default ports of the schemes a cache sees
DEFAULT_PORTS = {"http": 80, "https": 443}
#: primary keys remembered per (host, port, path, scheme), the memo cleared
#: when it reaches this many (a hit then builds no string)
KEY_MEMO_SIZE = 4096
#: longer paths are not remembered (the memo's memory stays small)
KEY_MEMO_PATH = 512


def normalize_url(url: str) -> Optional[str]:
    """
    C{url} as a primary key (see the module docstring), or L{None} when it
    is not an absolute http(s) URL.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query or url.split("#", 1)[0].endswith("?") else ""
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}{path}{query}"


class Counters:
    """
    What a cache did since start.
    """

    __slots__ = ("hits", "misses", "stale", "revalidated", "collapsed", "bypass", "stored", "purged")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.revalidated = 0
        self.collapsed = 0
        self.bypass = 0
        self.stored = 0
        self.purged = 0


class SharedCache:
    """
    A named cache shared by the listeners and routes that name it.

    @ivar fills: the fills in progress, by full key (a second miss for the
        same key waits on the first: request collapsing).
    """

    def __init__(self, config: Any, clock: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.bname = config.name.encode("latin-1")
        self.clock = clock
        self.store = Store(config.path, config.max_size, config.memory, name=config.name)
        self.max_object_size: int = config.max_object_size
        self.lock_timeout: float = config.lock_timeout
        self.domains = DomainSet(config.domains) if config.domains else None
        self.bypass_domains = DomainSet(config.bypass_domains) if config.bypass_domains else None
        self.tag_header: bytes = config.tag_header.lower().encode("latin-1")
        self.counters = Counters()
        #: primary key -> the Vary names of its latest stored response
        self.vary: Dict[str, Tuple[str, ...]] = {}
        #: primary key -> its full keys in the store
        self.variants: Dict[str, Set[str]] = {}
        self.fills: Dict[str, Any] = {}
        #: full key -> its decoded entry (twisted_proxy.cache.origin.View)
        self.views: Dict[str, Any] = {}
        #: (host, port, path, scheme) -> its primary key (see KEY_MEMO_SIZE)
        self._keys: Dict[tuple, str] = {}
        self.opened = False

    def reconfigure(self, config: Any) -> None:
        """
        A reload changed this cache's table (or its name) but not its
        folder: the same store (its entries and in-flight fills) takes the
        new settings.
        """
        self.config = config
        self.name = config.name
        self.bname = config.name.encode("latin-1")
        self.max_object_size = config.max_object_size
        self.lock_timeout = config.lock_timeout
        self.domains = DomainSet(config.domains) if config.domains else None
        self.bypass_domains = DomainSet(config.bypass_domains) if config.bypass_domains else None
        self.tag_header = config.tag_header.lower().encode("latin-1")
        self.store.resize(config.max_size, config.memory)

    # life

    def open(self) -> None:
        """
        Open the store and rebuild the key index from its metadata.
        """
        self.store.open()
        self.opened = True
        for entry in self.store:
            self._index(entry)
        log.info(
            "cache {name}: {entries} entries, {size} bytes at {path}",
            name=self.name,
            entries=self.store.entries,
            size=self.store.size,
            path=self.config.path,
        )

    def close(self) -> None:
        if self.opened:
            self.opened = False
            self.store.close()

    def _index(self, entry: Entry) -> None:
        meta = entry.meta
        primary = meta.get("primary")
        if not isinstance(primary, str):
            return
        self.variants.setdefault(primary, set()).add(entry.key)
        names = meta.get("vary")
        if isinstance(names, list) and primary not in self.vary:
            self.vary[primary] = tuple(names)

    # keys

    def applies(self, host: str) -> bool:
        """
        Whether requests for C{host} use this cache (C{domains},
        C{bypass_domains}).
        """
        if self.bypass_domains is not None and self.bypass_domains.matches(host):
            return False
        return self.domains is None or bool(self.domains.matches(host))

    def primary_key(self, target: Any) -> str:
        path = target.request_path
        memo = (target.host, target.port, path, target.scheme)
        key = self._keys.get(memo)
        if key is not None:
            return key
        if path[:1] != b"/":
            # a parent proxy's absolute form: the path is in client_path
            path = b"/"
        key = f"{target.scheme}://{_host(target.host)}:{target.port}{path.decode('latin-1')}"
        if len(memo[2]) <= KEY_MEMO_PATH:
            keys = self._keys
            if len(keys) >= KEY_MEMO_SIZE:
                keys.clear()
            keys[memo] = key
        return key

    def full_key(self, primary: str, request_headers: Any) -> str:
        names = self.vary.get(primary)
        if not names:
            return primary
        return primary + "\n" + rules.vary_key(names, request_headers)

    def lookup(self, key: str) -> Optional[Entry]:
        return self.store.get(key)

    def stored(self, primary: str, key: str, names: Tuple[str, ...]) -> None:
        """
        A response for C{key} was published (its URL varies on C{names}).
        """
        self.counters.stored += 1
        if names != self.vary.get(primary, ()):
            # the URL varies on other names now: older variants are unreachable
            old = self.variants.pop(primary, set())
            old.discard(key)
            for k in old:
                self.store.remove(k)
            if names:
                self.vary[primary] = names
            else:
                self.vary.pop(primary, None)
        self.variants.setdefault(primary, set()).add(key)

    # purge and invalidation

    def invalidate(self, primary: str) -> int:
        """
        Remove every stored variant of C{primary}.
        """
        count = 0
        for key in self.variants.pop(primary, ()):
            if self.store.remove(key):
                count += 1
        self.vary.pop(primary, None)
        return count

    def purge_url(self, url: str) -> int:
        primary = normalize_url(url)
        if primary is None:
            return 0
        count = self.invalidate(primary)
        self.counters.purged += count
        return count

    def purge_prefix(self, prefix: str) -> int:
        """
        Remove every entry whose URL starts with C{prefix} (normalised like
        a URL: C{http://host/static/} covers C{http://host:80/static/...};
        C{http://host} every path of that host and port, not another port).
        """
        normal = normalize_url(prefix)
        if normal is None:
            return 0
        count = 0
        for primary in [p for p in self.variants if p.startswith(normal)]:
            count += self.invalidate(primary)
        self.counters.purged += count
        return count

    def purge_tag(self, tag: str) -> int:
        count = 0
        for entry in list(self.store):
            tags = entry.meta.get("tags") or ()
            if tag in tags:
                primary = entry.meta.get("primary")
                if self.store.remove(entry.key):
                    count += 1
                if isinstance(primary, str):
                    keys = self.variants.get(primary)
                    if keys is not None:
                        keys.discard(entry.key)
                        if not keys:
                            del self.variants[primary]
                            self.vary.pop(primary, None)
        self.counters.purged += count
        return count

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.store)

    # reporting

    def status(self) -> Dict[str, Any]:
        c = self.counters
        lookups = c.hits + c.stale + c.misses + c.revalidated
        return {
            "entries": self.store.entries,
            "bytes": self.store.size,
            "memory_bytes": self.store.memory_size,
            "max_size": self.config.max_size,
            "hits": c.hits,
            "misses": c.misses,
            "stale": c.stale,
            "revalidated": c.revalidated,
            "collapsed": c.collapsed,
            "bypass": c.bypass,
            "stored": c.stored,
            "purged": c.purged,
            "evictions": self.store.evictions,
            "hit_ratio": round((c.hits + c.stale) / lookups, 4) if lookups else 0.0,
            "fills_in_progress": len(self.fills),
        }


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def tags_of(headers: List[Tuple[bytes, bytes]], tag_header: bytes) -> List[str]:
    """
    The comma-separated values of the tag header (C{Cache-Tag}) in
    C{headers}.
    """
    return [t.decode("latin-1") for t in rules.header_list(headers, tag_header)]
