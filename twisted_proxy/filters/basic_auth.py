# -*- test-case-name: tests.test_basic_auth -*-
"""
The C{basic_auth} filter type: HTTP Basic authentication (RFC 7617) against
an Apache C{htpasswd} file of bcrypt entries.

::

    [filter.staff]
    type = "basic_auth"
    htpasswd = "users.htpasswd"    # relative to the config file's folder
    realm = "staff"                # default "twisted-proxy"

Make the file with Apache's tool: C{htpasswd -cB users.htpasswd alice}
(C{-B} is bcrypt; lines look like C{alice:$2y$05$...}). Any other scheme
(MD5 C{$apr1$}, C{{SHA}}, crypt, plain text) is a configuration error naming
the user, so a weak hash never goes unnoticed. Blank lines and lines
starting with C{#} are ignored. The file is read when the configuration is
loaded.

On a forward listener the credentials come in C{Proxy-Authorization} and a
refusal is C{407} with C{Proxy-Authenticate: Basic realm="..."}; on a
reverse listener they come in C{Authorization} and a refusal is C{401} with
C{WWW-Authenticate}. On success the credential header is removed (the
backend never sees the password) and C{request.claims["user"]} is the user
name, for the filters after it (C{key = "claim:user"} in a rate limit).

bcrypt is deliberately slow (about 70 ms at cost 10, doubling with each
step). So:

 - successful checks are remembered in memory for the 1024 most recently
   used credentials, keyed by a MAC of them (BLAKE2b with a random
   per-process key; never the password itself): a client sending the same
   header again costs a hash and a dictionary lookup, a few microseconds.
   Failed checks are remembered the same way, in a separate table, so a
   retrying client with a wrong password does not cost a bcrypt each time
   and cannot push good entries out. Only the exact credentials checked are
   ever remembered: a different password is always checked again.
 - when C{build} is given the reactor (as the proxy does), the check runs
   in the reactor's thread pool (bcrypt releases the GIL), at most
   L{MAX_THREADS} at once so the pool stays free for DNS lookups, with at
   most L{MAX_WAITING} checks queued; beyond that a request gets 503 with
   C{Retry-After} instead of piling up. Concurrent requests with the same
   credentials share one check. Given only a clock (the tests' C{Clock}),
   the check runs synchronously.
 - an unknown user name is checked against a real entry's hash all the
   same, so response times do not reveal which names exist.

Passwords longer than 72 bytes are truncated to 72 before checking, as
bcrypt (and C{htpasswd}) always did.
"""

from __future__ import annotations

import binascii
import os
import re
from base64 import b64decode
from hashlib import blake2b
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import attrs
import bcrypt
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters.lru import LRU
from twisted_proxy.filters.headers import remove_headers
from twisted_proxy.interfaces import IRequestFilter

__all__ = ["BasicAuthFilter", "BasicAuthSpec", "build", "parse", "read_htpasswd"]

log = Logger()

DEFAULT_REALM = "twisted-proxy"
#: remembered credentials, each of the good and the bad table
CACHE_SIZE = 1024
#: bcrypt checks running at once in the reactor's thread pool
MAX_THREADS = 4
#: bcrypt checks waiting for a thread; beyond this a request gets 503
MAX_WAITING = 64

_KEYS = frozenset({"htpasswd", "realm"})
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}\Z")
_DES_CRYPT = re.compile(r"[./0-9A-Za-z]{13}\Z")
_REALM = re.compile(r"[\x20-\x7e]+\Z")
_CREDENTIALS = {
    name: frozenset((name,)) for name in (b"authorization", b"proxy-authorization")
}

#: run a function in a thread: C{run(f, *args)} returns a Deferred of its result
RunInThread = Callable[..., "Deferred[Any]"]
Verdict = Union[None, Deny, "Deferred[Optional[Deny]]"]


@attrs.frozen
class BasicAuthSpec:
    """
    A parsed C{basic_auth} filter table.

    @ivar htpasswd: the absolute path of the file.
    @ivar realm: the realm of the challenge.
    @ivar users: C{(user, bcrypt hash)} pairs read from the file.
    """

    htpasswd: str
    realm: str = DEFAULT_REALM
    users: Tuple[Tuple[str, bytes], ...] = attrs.field(default=(), repr=False)


# --- parsing ---------------------------------------------------------------


def _scheme(hashed: str) -> str:
    """
    A readable name for the (non-bcrypt) password scheme of C{hashed}.
    """
    if hashed.startswith("$apr1$"):
        return "MD5 ($apr1$, htpasswd -m)"
    if hashed.startswith("{SHA}"):
        return "SHA-1 ({SHA}, htpasswd -s)"
    if hashed.startswith("$1$"):
        return "MD5-crypt ($1$)"
    if hashed.startswith("$5$"):
        return "SHA-256-crypt ($5$)"
    if hashed.startswith("$6$"):
        return "SHA-512-crypt ($6$)"
    if re.match(r"\$2[aby]\$", hashed):
        return "a malformed bcrypt hash"
    if hashed.startswith("$") and hashed.count("$") >= 2:
        return f"the unknown scheme ${hashed.split('$')[1]}$"
    if _DES_CRYPT.match(hashed):
        return "crypt (DES, htpasswd -d)"
    return "a plain-text password (htpasswd -p)"


def read_htpasswd(text: str, shown: str) -> Tuple[List[Tuple[str, bytes]], List[str]]:
    """
    The C{(user, hash)} entries of an htpasswd file's text, and the
    problems found (each naming C{shown} and a line).
    """
    users: List[Tuple[str, bytes]] = []
    problems: List[str] = []
    seen: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        hashed = hashed.strip()
        where = f"{shown} line {number}"
        if not colon:
            problems.append(f"{where}: not of the form 'user:hash'")
            continue
        if not user:
            problems.append(f"{where}: the user name is empty")
            continue
        if user in seen:
            problems.append(f"{where}: user {user!r} is also on line {seen[user]}")
            continue
        seen[user] = number
        if not _BCRYPT.match(hashed):
            problems.append(
                f"{where}: user {user!r} has {_scheme(hashed)}, which is not supported;"
                " only bcrypt entries are (htpasswd -B)"
            )
            continue
        users.append((user, hashed.encode("ascii")))
    if not users and not problems:
        problems.append(f"{shown} has no users")
    return users, problems


def parse(
    name: str, table: Mapping[str, Any], errors: ErrorList, base_dir: str
) -> Optional[BasicAuthSpec]:
    """
    Validate a C{[filter.NAME]} table of type C{basic_auth} and read its
    htpasswd file; report problems to C{errors} under C{filter.NAME.key}.
    """
    prefix = f"filter.{name}"
    for key in table:
        if key not in _KEYS and key != "type":
            errors.add(f"{prefix}.{key}", "unknown key")
    realm = DEFAULT_REALM
    if "realm" in table:
        value = table["realm"]
        path = f"{prefix}.realm"
        if not isinstance(value, str):
            errors.add(path, f"must be a string, not {type(value).__name__}")
        elif not _REALM.match(value) or '"' in value or "\\" in value:
            errors.add(
                path,
                f"{value!r} must be non-empty printable ASCII without '\"' or '\\'",
            )
        else:
            realm = value
    path = f"{prefix}.htpasswd"
    if "htpasswd" not in table:
        errors.add(path, "required key is missing")
        return None
    value = table["htpasswd"]
    if not isinstance(value, str) or not value:
        errors.add(path, f"must be a file name, not {value!r}")
        return None
    full = os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))
    try:
        with open(full, "rb") as f:
            raw = f.read()
    except OSError as e:
        errors.add(path, f"cannot read {full!r}: {e.strerror or e}")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        errors.add(path, f"{full!r} is not UTF-8 text: {e}")
        return None
    users, problems = read_htpasswd(text, repr(value))
    for problem in problems:
        errors.add(path, problem)
    if problems:
        return None
    return BasicAuthSpec(htpasswd=full, realm=realm, users=tuple(users))


# --- the live filter -------------------------------------------------------


def check_password(password: bytes, hashed: bytes) -> bool:
    """
    Whether C{password} matches the bcrypt C{hashed} (run in a thread: it
    takes tens of milliseconds).
    """
    try:
        return bcrypt.checkpw(password[:72], hashed)
    except ValueError:
        return False


@implementer(IRequestFilter)
class BasicAuthFilter:
    """
    The live C{basic_auth} filter; see the module docstring.

    @ivar name: the filter's name.
    @ivar spec: its L{BasicAuthSpec}.
    """

    def __init__(
        self,
        name: str,
        spec: BasicAuthSpec,
        run_in_thread: Optional[RunInThread] = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        """
        @param run_in_thread: C{run(f, *args)} running C{f(*args)} in a
            thread and returning a Deferred of its result; L{None} checks
            passwords synchronously.
        """
        self.name = name
        self.spec = spec
        self._users: Dict[str, bytes] = dict(spec.users)
        # an unknown user is checked against a real hash: the same cost
        self._decoy = spec.users[0][1] if spec.users else bcrypt.hashpw(b"", bcrypt.gensalt(4))
        self._secret = os.urandom(32)
        # the user name, by a MAC of the credentials
        self._good: LRU[bytes, str] = LRU(cache_size)
        self._bad: LRU[bytes, str] = LRU(cache_size)
        self._run = run_in_thread
        self._threads = DeferredSemaphore(MAX_THREADS)
        self._pending: Dict[bytes, List["Deferred[bool]"]] = {}
        realm = spec.realm.encode("ascii")
        challenge = b'Basic realm="' + realm + b'", charset="UTF-8"'
        self._www = ((b"WWW-Authenticate", challenge),)
        self._proxy = ((b"Proxy-Authenticate", challenge),)

    def __repr__(self) -> str:
        return f"<BasicAuthFilter {self.name!r}>"

    def _refuse(self, forward: bool, message: str) -> Deny:
        if forward:
            return Deny(407, self.name, f"proxy {message}", self._proxy)
        return Deny(401, self.name, message, self._www)

    def filter_request(self, info: RequestInfo) -> Verdict:
        """
        Let the request pass if it carries the credentials of a user in the
        file; otherwise answer 401 (reverse) or 407 (forward) with a
        challenge. May return a Deferred (a first check in a thread).
        """
        forward = info.kind == "forward"
        lname = b"proxy-authorization" if forward else b"authorization"
        found: Optional[bytes] = None
        for name, value in info.headers:
            if name.lower() == lname:
                if found is not None:
                    return self._refuse(forward, "authentication: several credentials")
                found = value
        if found is None:
            return self._refuse(forward, "authentication required")
        scheme, _, token = found.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return self._refuse(forward, "authentication required (Basic)")
        token = token.strip()
        key = blake2b(token, key=self._secret, digest_size=32).digest()
        user = self._good.get(key)
        if user is not None:
            self._accept(info, lname, user)
            return None
        if self._bad.get(key) is not None:
            return self._refuse(forward, "authentication failed")
        try:
            user_bytes, colon, password = b64decode(token, validate=True).partition(b":")
            user = user_bytes.decode("utf-8")
        except (binascii.Error, ValueError):
            return self._refuse(forward, "authentication: malformed credentials")
        if not colon:
            return self._refuse(forward, "authentication: malformed credentials")
        hashed = self._users.get(user)
        if self._run is None:
            ok = check_password(password, hashed or self._decoy) and hashed is not None
            self._remember(key, user, ok)
            return self._conclude(ok, info, lname, user, forward)
        mine: "Deferred[bool]" = Deferred()
        verdict = mine.addCallback(self._conclude, info, lname, user, forward)
        waiters = self._pending.get(key)
        if waiters is not None:
            waiters.append(mine)
            return verdict
        if len(self._threads.waiting) >= MAX_WAITING:
            return Deny(
                503,
                self.name,
                "too many authentication checks in progress",
                ((b"Retry-After", b"1"),),
            )
        self._pending[key] = [mine]
        self._threads.run(
            self._run, check_password, password, hashed or self._decoy
        ).addBoth(self._checked, key, user, hashed is not None)
        return verdict

    def _checked(self, result: Union[bool, Failure], key: bytes, user: str, known: bool) -> None:
        """
        A check in a thread finished: remember and tell every request
        waiting for it.
        """
        if isinstance(result, Failure):
            log.failure("basic_auth {filter}: password check failed", result, filter=self.name)
            ok = False
        else:
            ok = result is True and known
            self._remember(key, user, ok)
        for waiter in self._pending.pop(key, ()):
            waiter.callback(ok)

    def _remember(self, key: bytes, user: str, ok: bool) -> None:
        (self._good if ok else self._bad).put(key, user)

    def _conclude(
        self, ok: bool, info: RequestInfo, lname: bytes, user: str, forward: bool
    ) -> Optional[Deny]:
        if ok:
            self._accept(info, lname, user)
            return None
        return self._refuse(forward, "authentication failed")

    def _accept(self, info: RequestInfo, lname: bytes, user: str) -> None:
        remove_headers(info.headers, _CREDENTIALS[lname])
        info.claims["user"] = user


def build(name: str, spec: BasicAuthSpec, clock: IReactorTime) -> BasicAuthFilter:
    """
    Make the live filter for C{spec}. When C{clock} is a reactor with
    threads (it is, in the proxy), password checks run in its thread pool;
    otherwise synchronously.
    """
    run: Optional[RunInThread] = None
    if IReactorThreads.providedBy(clock):
        reactor: Any = clock

        def run(f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
            return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return BasicAuthFilter(name, spec, run)
