"""
Tests for L{twisted_proxy.filters.basic_auth}.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import bcrypt
from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorThreads
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_proxy.filters import Deny, ErrorList, RequestInfo
from twisted_proxy.filters import basic_auth
from twisted_proxy.filters.basic_auth import (
    MAX_THREADS,
    MAX_WAITING,
    BasicAuthFilter,
    BasicAuthSpec,
    build,
    parse,
)
from twisted_proxy.filters.registry import filter_type
from twisted_proxy.interfaces import IRequestFilter
from twisted_proxy.testing import request_info, run_filter

# cost 4, the minimum, keeps the tests fast; the proxy accepts any cost
ALICE = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()
# as Apache's htpasswd -B writes it
BOB = "$2y$" + bcrypt.hashpw("bücher".encode(), bcrypt.gensalt(4)).decode()[4:]
CAROL = "$2a$" + bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(4)).decode()[4:]


def basic(user: str, password: str, scheme: str = "Basic") -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode("utf-8"))
    return scheme.encode() + b" " + token


def info(
    headers: List[Tuple[bytes, bytes]], kind: str = "reverse", connect: bool = False
) -> RequestInfo:
    """
    A request on a listener of C{kind} whose C{headers} is the very list
    given.
    """
    request = request_info(connect=connect)
    request.headers = headers
    request.kind = kind
    return request


class _Base(SynchronousTestCase):
    def write(self, text: str, name: str = "users.htpasswd") -> str:
        """
        Write an htpasswd file in a fresh folder; return the folder.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)
        return folder

    def parsed(
        self, table: Dict[str, Any], text: Optional[str] = None, name: str = "auth"
    ) -> Tuple[Optional[BasicAuthSpec], List[Tuple[str, str]]]:
        folder = self.write(
            text if text is not None else f"alice:{ALICE}\nbob:{BOB}\ncarol:{CAROL}\n"
        )
        errors = ErrorList()
        spec = parse(name, table, errors, folder)
        return spec, errors.items

    def make(self, realm: Optional[str] = None, **kw: Any) -> BasicAuthFilter:
        table: Dict[str, Any] = {"htpasswd": "users.htpasswd"}
        if realm is not None:
            table["realm"] = realm
        spec, errors = self.parsed(table)
        assert spec is not None and not errors, errors
        if kw:
            return BasicAuthFilter("auth", spec, **kw)
        return build("auth", spec, task.Clock())


class ParseTests(_Base):
    """
    L{parse} reads the htpasswd file and accepts only bcrypt entries.
    """

    def test_registered(self) -> None:
        """
        C{basic_auth} is a built-in filter type.
        """
        self.assertIs(filter_type("basic_auth"), basic_auth)

    def test_users(self) -> None:
        """
        The users and hashes are read (C{$2b$}, C{$2y$} and C{$2a$}); the
        path is made absolute against the config folder; the realm
        defaults to C{twisted-proxy}.
        """
        folder = self.write(f"alice:{ALICE}\nbob:{BOB}\r\ncarol:{CAROL}")
        errors = ErrorList()
        spec = parse("auth", {"htpasswd": "users.htpasswd"}, errors, folder)
        self.assertEqual(errors.items, [])
        assert spec is not None
        self.assertEqual(spec.htpasswd, os.path.join(os.path.abspath(folder), "users.htpasswd"))
        self.assertEqual(spec.realm, "twisted-proxy")
        self.assertEqual(
            spec.users,
            (("alice", ALICE.encode()), ("bob", BOB.encode()), ("carol", CAROL.encode())),
        )

    def test_comments_and_blank_lines(self) -> None:
        """
        Blank lines and C{#} comments are skipped.
        """
        spec, errors = self.parsed(
            {"htpasswd": "users.htpasswd"}, f"# staff\n\nalice:{ALICE}\n   \n"
        )
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual([u for u, _ in spec.users], ["alice"])

    def test_realm(self) -> None:
        """
        C{realm} is printable ASCII without quotes or backslashes.
        """
        spec, errors = self.parsed({"htpasswd": "users.htpasswd", "realm": "Staff only"})
        self.assertEqual(errors, [])
        assert spec is not None
        self.assertEqual(spec.realm, "Staff only")
        for realm in ['a"b', "a\\b", "", "café", 3]:
            _, errors = self.parsed({"htpasswd": "users.htpasswd", "realm": realm})
            self.assertEqual([p for p, _ in errors], ["filter.auth.realm"], realm)

    def test_required(self) -> None:
        """
        C{htpasswd} is required.
        """
        _, errors = self.parsed({"realm": "x"})
        self.assertEqual(errors, [("filter.auth.htpasswd", "required key is missing")])

    def test_unknown_key(self) -> None:
        """
        Unknown keys are reported at their path.
        """
        _, errors = self.parsed({"htpasswd": "users.htpasswd", "users": []})
        self.assertEqual(errors, [("filter.auth.users", "unknown key")])

    def test_unreadable(self) -> None:
        """
        A file that cannot be read is an error naming it and why.
        """
        _, errors = self.parsed({"htpasswd": "missing.htpasswd"})
        self.assertEqual([p for p, _ in errors], ["filter.auth.htpasswd"])
        self.assertIn("cannot read", errors[0][1])
        self.assertIn("missing.htpasswd", errors[0][1])
        self.assertIn("No such file or directory", errors[0][1])

    def test_not_a_string(self) -> None:
        """
        C{htpasswd} must be a file name.
        """
        _, errors = self.parsed({"htpasswd": ["users"]})
        self.assertEqual(errors, [("filter.auth.htpasswd", "must be a file name, not ['users']")])

    def test_not_utf8(self) -> None:
        """
        A file that is not UTF-8 is an error.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "u"), "wb") as f:
            f.write(b"\xffalice:" + ALICE.encode())
        errors = ErrorList()
        parse("auth", {"htpasswd": "u"}, errors, folder)
        self.assertEqual([p for p, _ in errors.items], ["filter.auth.htpasswd"])
        self.assertIn("is not UTF-8 text", errors.items[0][1])

    def test_other_schemes(self) -> None:
        """
        Every non-bcrypt entry is an error naming the file, the line, the
        user and the scheme (never the hash).
        """
        text = "\n".join(
            [
                f"alice:{ALICE}",
                "md5:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/",
                "sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                "des:rqXexS6ZhobKA",
                "plain:secret",
                "sha512:$6$salt$hash",
                "md5crypt:$1$salt$hash",
                "broken:$2y$05$tooShort",
                "odd:$9$x$y",
            ]
        )
        _, errors = self.parsed({"htpasswd": "users.htpasswd"}, text)
        self.assertEqual({p for p, _ in errors}, {"filter.auth.htpasswd"})
        tail = "which is not supported; only bcrypt entries are (htpasswd -B)"
        self.assertEqual(
            [m for _, m in errors],
            [
                f"'users.htpasswd' line 2: user 'md5' has MD5 ($apr1$, htpasswd -m), {tail}",
                f"'users.htpasswd' line 3: user 'sha' has SHA-1 ({{SHA}}, htpasswd -s), {tail}",
                f"'users.htpasswd' line 4: user 'des' has crypt (DES, htpasswd -d), {tail}",
                f"'users.htpasswd' line 5: user 'plain' has a plain-text password (htpasswd -p), {tail}",
                f"'users.htpasswd' line 6: user 'sha512' has SHA-512-crypt ($6$), {tail}",
                f"'users.htpasswd' line 7: user 'md5crypt' has MD5-crypt ($1$), {tail}",
                f"'users.htpasswd' line 8: user 'broken' has a malformed bcrypt hash, {tail}",
                f"'users.htpasswd' line 9: user 'odd' has the unknown scheme $9$, {tail}",
            ],
        )
        self.assertNotIn("secret", " ".join(m for _, m in errors))

    def test_malformed_lines(self) -> None:
        """
        A line without a colon, an empty user name and a user listed twice
        are errors.
        """
        text = f"alice:{ALICE}\njust-a-name\n:{ALICE}\nalice:{ALICE}\n"
        _, errors = self.parsed({"htpasswd": "users.htpasswd"}, text)
        self.assertEqual(
            [m for _, m in errors],
            [
                "'users.htpasswd' line 2: not of the form 'user:hash'",
                "'users.htpasswd' line 3: the user name is empty",
                "'users.htpasswd' line 4: user 'alice' is also on line 1",
            ],
        )

    def test_no_users(self) -> None:
        """
        A file without users would refuse everyone: an error.
        """
        _, errors = self.parsed({"htpasswd": "users.htpasswd"}, "# nobody yet\n")
        self.assertEqual(errors, [("filter.auth.htpasswd", "'users.htpasswd' has no users")])


class VerdictTests(_Base):
    """
    The filter lets users with the right password pass and challenges
    everyone else (passwords checked synchronously, as with a plain clock).
    """

    def test_interface(self) -> None:
        """
        The filter is an C{IRequestFilter} named after its table.
        """
        flt = self.make()
        self.assertTrue(verifyObject(IRequestFilter, flt))
        self.assertEqual(flt.name, "auth")

    def test_missing_reverse(self) -> None:
        """
        Without credentials a reverse listener answers 401 with a
        C{WWW-Authenticate} challenge naming the realm.
        """
        verdict = run_filter(self.make(realm="Staff"), info([]))
        self.assertEqual(
            verdict,
            Deny(
                401,
                "auth",
                "authentication required",
                ((b"WWW-Authenticate", b'Basic realm="Staff", charset="UTF-8"'),),
            ),
        )

    def test_missing_forward(self) -> None:
        """
        On a forward listener the answer is 407 with
        C{Proxy-Authenticate}; an C{Authorization} header (meant for the
        origin) does not count.
        """
        verdict = run_filter(
            self.make(), info([(b"Authorization", basic("alice", "wonderland"))], "forward")
        )
        self.assertEqual(
            verdict,
            Deny(
                407,
                "auth",
                "proxy authentication required",
                ((b"Proxy-Authenticate", b'Basic realm="twisted-proxy", charset="UTF-8"'),),
            ),
        )

    def test_success_reverse(self) -> None:
        """
        The right password passes; the C{Authorization} header is removed
        (the backend never sees the password) and the user becomes a
        claim.
        """
        headers = [(b"authorization", basic("alice", "wonderland")), (b"Accept", b"*/*")]
        request = info(headers)
        self.assertIsNone(run_filter(self.make(), request))
        self.assertEqual(headers, [(b"Accept", b"*/*")])
        self.assertEqual(request.claims, {"user": "alice"})

    def test_success_forward(self) -> None:
        """
        On a forward listener C{Proxy-Authorization} is checked and removed;
        the origin's C{Authorization} stays. CONNECT is no different.
        """
        origin_auth = (b"Authorization", b"Bearer for-the-origin")
        headers = [(b"Proxy-Authorization", basic("alice", "wonderland")), origin_auth]
        request = info(headers, "forward", connect=True)
        self.assertIsNone(run_filter(self.make(), request))
        self.assertEqual(headers, [origin_auth])
        self.assertEqual(request.claims["user"], "alice")

    def test_bcrypt_variants(self) -> None:
        """
        C{$2y$} (Apache) and C{$2a$} entries verify like C{$2b$}; a UTF-8
        password works.
        """
        flt = self.make()
        self.assertIsNone(run_filter(flt, info([(b"Authorization", basic("bob", "bücher"))])))
        self.assertIsNone(run_filter(flt, info([(b"Authorization", basic("carol", "x" * 72))])))

    def test_long_password_truncated(self) -> None:
        """
        Only the first 72 bytes of a password count, as with bcrypt
        everywhere.
        """
        flt = self.make()
        self.assertIsNone(run_filter(flt, info([(b"Authorization", basic("carol", "x" * 80))])))

    def test_wrong_password(self) -> None:
        """
        A wrong password, or an unknown user, is 401 with the challenge
        and the same message either way.
        """
        flt = self.make()
        for user, password in [("alice", "Wonderland"), ("mallory", "wonderland"), ("alice", "")]:
            headers = [(b"Authorization", basic(user, password))]
            verdict = run_filter(flt, info(headers))
            assert verdict is not None
            self.assertEqual((verdict.status, verdict.message), (401, "authentication failed"))
            self.assertEqual(verdict.headers[0][0], b"WWW-Authenticate")
            self.assertEqual(len(headers), 1)

    def test_malformed(self) -> None:
        """
        Another scheme, bad base64, credentials without a colon and
        several credential headers are refused.
        """
        flt = self.make()
        good = basic("alice", "wonderland")
        for headers, message in [
            ([(b"Authorization", basic("alice", "wonderland", "Bearer"))], "authentication required (Basic)"),
            ([(b"Authorization", b"Basic")], "authentication: malformed credentials"),
            ([(b"Authorization", b"Basic !!!notbase64")], "authentication: malformed credentials"),
            ([(b"Authorization", b"Basic " + base64.b64encode(b"alice"))], "authentication: malformed credentials"),
            ([(b"Authorization", b"Basic " + base64.b64encode(b"\xff:x"))], "authentication: malformed credentials"),
            ([(b"Authorization", good), (b"authorization", good)], "authentication: several credentials"),
        ]:
            verdict = run_filter(flt, info(headers))
            assert verdict is not None
            self.assertEqual((verdict.status, verdict.message), (401, message), headers)

    def test_case_insensitive(self) -> None:
        """
        Header name and scheme are case-insensitive; extra spaces are
        tolerated.
        """
        value = b"  bAsIc   " + base64.b64encode(b"alice:wonderland") + b" "
        self.assertIsNone(run_filter(self.make(), info([(b"AUTHORIZATION", value)])))

    def test_utf8_user(self) -> None:
        """
        User names are UTF-8 (RFC 7617 charset).
        """
        hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        folder = self.write(f"zoë:{hashed}\n")
        errors = ErrorList()
        spec = parse("auth", {"htpasswd": "users.htpasswd"}, errors, folder)
        assert spec is not None
        request = info([(b"Authorization", basic("zoë", "pw"))])
        self.assertIsNone(run_filter(build("auth", spec, task.Clock()), request))
        self.assertEqual(request.claims["user"], "zoë")


class CacheTests(_Base):
    """
    Checked credentials are remembered, so bcrypt runs once per
    credentials, never letting a different password through.
    """

    def setUp(self) -> None:
        self.checks: List[Tuple[bytes, bytes]] = []
        real = basic_auth.check_password

        def counting(password: bytes, hashed: bytes) -> bool:
            self.checks.append((password, hashed))
            return real(password, hashed)

        self.patch(basic_auth, "check_password", counting)

    def test_success_remembered(self) -> None:
        """
        The same good credentials again cost no bcrypt check, and still
        strip the header and set the claim.
        """
        flt = self.make()
        for _ in range(3):
            headers = [(b"Authorization", basic("alice", "wonderland"))]
            request = info(headers)
            self.assertIsNone(run_filter(flt, request))
            self.assertEqual(headers, [])
            self.assertEqual(request.claims, {"user": "alice"})
        self.assertEqual(len(self.checks), 1)

    def test_other_password_checked(self) -> None:
        """
        After a user's good password was remembered, a wrong password for
        the same user is checked, and refused.
        """
        flt = self.make()
        run_filter(flt, info([(b"Authorization", basic("alice", "wonderland"))]))
        verdict = run_filter(flt, info([(b"Authorization", basic("alice", "wonderland!"))]))
        assert verdict is not None
        self.assertEqual(verdict.status, 401)
        self.assertEqual(len(self.checks), 2)

    def test_failure_remembered(self) -> None:
        """
        The same wrong credentials again are refused without a check; the
        right password is still accepted afterwards.
        """
        flt = self.make()
        for _ in range(3):
            verdict = run_filter(flt, info([(b"Authorization", basic("alice", "nope"))]))
            assert verdict is not None
            self.assertEqual(verdict.status, 401)
        self.assertEqual(len(self.checks), 1)
        self.assertIsNone(run_filter(flt, info([(b"Authorization", basic("alice", "wonderland"))])))
        self.assertEqual(len(self.checks), 2)

    def test_unknown_user_costs_a_check(self) -> None:
        """
        An unknown user is checked against a real hash, so the answer
        takes as long as for a known one.
        """
        flt = self.make()
        run_filter(flt, info([(b"Authorization", basic("mallory", "x"))]))
        self.assertEqual(self.checks, [(b"x", ALICE.encode())])

    def test_bounded(self) -> None:
        """
        Only the most recently used credentials are remembered.
        """
        flt = self.make(cache_size=2)
        creds = [("alice", "wonderland"), ("bob", "bücher"), ("carol", "x" * 72)]
        for user, password in creds:
            run_filter(flt, info([(b"Authorization", basic(user, password))]))
        self.assertEqual(len(self.checks), 3)
        # bob and carol are remembered, alice was pushed out
        run_filter(flt, info([(b"Authorization", basic("carol", "x" * 72))]))
        run_filter(flt, info([(b"Authorization", basic("bob", "bücher"))]))
        self.assertEqual(len(self.checks), 3)
        self.assertIsNone(run_filter(flt, info([(b"Authorization", basic("alice", "wonderland"))])))
        self.assertEqual(len(self.checks), 4)

    def test_failures_do_not_evict_successes(self) -> None:
        """
        Many wrong passwords do not push good credentials out of memory.
        """
        flt = self.make(cache_size=2)
        run_filter(flt, info([(b"Authorization", basic("alice", "wonderland"))]))
        for i in range(5):
            run_filter(flt, info([(b"Authorization", basic("alice", f"guess{i}"))]))
        self.assertEqual(len(self.checks), 6)
        run_filter(flt, info([(b"Authorization", basic("alice", "wonderland"))]))
        self.assertEqual(len(self.checks), 6)


class FakeThreads:
    """
    A C{run_in_thread} whose "threads" finish when the test says.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[Callable[..., Any], Tuple[Any, ...], Deferred]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        d: "Deferred[Any]" = Deferred()
        self.calls.append((f, args, d))
        return d

    def finish(self, index: int = 0) -> None:
        """
        Run the function of call C{index} now and deliver its result.
        """
        f, args, d = self.calls.pop(index)
        d.callback(f(*args))


class ThreadTests(_Base):
    """
    With a thread runner the first check of credentials runs in a thread:
    the verdict is a Deferred.
    """

    def test_deferred_verdict(self) -> None:
        """
        The verdict fires when the check finishes; then the header is
        removed and the claim set.
        """
        threads = FakeThreads()
        flt = self.make(run_in_thread=threads)
        headers = [(b"Authorization", basic("alice", "wonderland"))]
        request = info(headers)
        d = flt.filter_request(request)
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        self.assertEqual(len(headers), 1)
        threads.finish()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(headers, [])
        self.assertEqual(request.claims, {"user": "alice"})
        # remembered: the next request is answered at once
        self.assertIsNone(flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))])))
        self.assertEqual(threads.calls, [])

    def test_refusal(self) -> None:
        """
        A wrong password's Deferred fires with the 401.
        """
        threads = FakeThreads()
        flt = self.make(run_in_thread=threads)
        d = flt.filter_request(info([(b"Authorization", basic("alice", "x"))]))
        threads.finish()
        verdict = self.successResultOf(d)
        self.assertEqual(verdict.status, 401)

    def test_shared_check(self) -> None:
        """
        Concurrent requests with the same credentials share one check, and
        each gets its own header stripped.
        """
        threads = FakeThreads()
        flt = self.make(run_in_thread=threads)
        requests = [info([(b"Authorization", basic("alice", "wonderland"))]) for _ in range(3)]
        ds = [flt.filter_request(r) for r in requests]
        self.assertEqual(len(threads.calls), 1)
        threads.finish()
        for d, r in zip(ds, requests):
            self.assertIsNone(self.successResultOf(d))
            self.assertEqual(r.headers, [])
            self.assertEqual(r.claims, {"user": "alice"})

    def test_thread_limit(self) -> None:
        """
        At most L{MAX_THREADS} checks run at once; the others wait for a
        thread.
        """
        threads = FakeThreads()
        flt = self.make(run_in_thread=threads)
        ds = [
            flt.filter_request(info([(b"Authorization", basic("alice", f"guess{i}"))]))
            for i in range(MAX_THREADS + 2)
        ]
        self.assertEqual(len(threads.calls), MAX_THREADS)
        threads.finish()
        self.assertEqual(len(threads.calls), MAX_THREADS)
        while threads.calls:
            threads.finish()
        for d in ds:
            self.assertEqual(self.successResultOf(d).status, 401)

    def test_queue_limit(self) -> None:
        """
        Beyond L{MAX_WAITING} queued checks a new one is refused with 503
        and C{Retry-After} rather than piling up; remembered credentials
        still pass.
        """
        threads = FakeThreads()
        flt = self.make(run_in_thread=threads)
        d = flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))]))
        threads.finish()
        self.successResultOf(d)
        for i in range(MAX_THREADS + MAX_WAITING):
            flt.filter_request(info([(b"Authorization", basic("alice", f"guess{i}"))]))
        verdict = flt.filter_request(info([(b"Authorization", basic("bob", "bücher"))]))
        self.assertEqual(
            verdict,
            Deny(503, "auth", "too many authentication checks in progress", ((b"Retry-After", b"1"),)),
        )
        self.assertIsNone(flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))])))

    def test_thread_failure(self) -> None:
        """
        A check that fails in its thread refuses the request, is logged,
        and is not remembered: the next request checks again.
        """
        calls: List[Any] = []

        def broken(f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
            calls.append(args)
            return fail(RuntimeError("thread pool gone"))

        flt = self.make(run_in_thread=broken)
        verdict = self.successResultOf(
            flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))]))
        )
        self.assertEqual(verdict.status, 401)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))]))
        self.assertEqual(len(calls), 2)
        self.flushLoggedErrors(RuntimeError)


@implementer(IReactorThreads)
class ThreadedReactor(task.Clock):
    """
    A clock with a thread pool that runs everything at once.
    """

    class Pool:
        def callInThreadWithCallback(
            self, on_result: Callable[..., Any], f: Callable[..., Any], *args: Any
        ) -> None:
            on_result(True, f(*args))

    def getThreadPool(self) -> Any:
        return self.Pool()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)

    def callInThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)

    def suggestThreadPoolSize(self, size: int) -> None:
        pass


class BuildTests(_Base):
    """
    L{build} checks passwords in the reactor's thread pool when it has one.
    """

    def test_plain_clock_synchronous(self) -> None:
        """
        Given a plain clock, the verdict is immediate.
        """
        flt = self.make()
        self.assertIsNone(flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))])))

    def test_reactor_threads(self) -> None:
        """
        Given a reactor with threads, the first check goes through its
        thread pool (the verdict is a Deferred).
        """
        spec, _ = self.parsed({"htpasswd": "users.htpasswd"})
        assert spec is not None
        flt = build("auth", spec, ThreadedReactor())
        d = flt.filter_request(info([(b"Authorization", basic("alice", "wonderland"))]))
        self.assertIsInstance(d, Deferred)
        self.assertIsNone(self.successResultOf(d))
